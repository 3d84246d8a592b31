"""Subscriber queues: where the thread that reads the socket leaves events for consumers.

A :class:`SubscriberQueue` is a ``queue.Queue`` whose producer never blocks. When a
bounded queue is full, the offending event is dropped and an overflow marker takes
one extra slot behind the events already queued; later drops are counted into the
same marker until the consumer reaches it. The consumer therefore always learns of a
loss, as an ``ERROR`` event with ``data["error"] == "subscriber queue overflow"``,
before it sees any event that came after the loss. (The official SDK pushes its
overflow error into the very queue that is full, so it is always lost.)

Closing appends an end marker regardless of capacity, so a blocked consumer always
wakes. No thread lives here; the module only guards its deque with the queue's mutex.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Collection, Dict, List, Optional, Sequence, Set

from ._protocol import OVERFLOW_ERROR
from .events import SessionEvent, SessionEventType

if TYPE_CHECKING:  # the loop's idea of what it wakes at the end of a round
    from ._ioloop import Waker

__all__ = ["SubscriberQueue", "Ended", "SLICE"]

#: Longest single wait on the main thread. Waits there are cut into slices of at most
#: this length so that Ctrl-C gets through on every platform (on Windows an untimed
#: lock wait cannot be interrupted, and ``_thread.interrupt_main`` interrupts no wait
#: anywhere). Other threads never get KeyboardInterrupt, so they sleep until woken:
#: a thousand web-server threads idle in ``listen()`` would otherwise wake four
#: thousand times a second for nothing.
SLICE = 0.25


class Ended(Exception):
    """Raised by :meth:`SubscriberQueue.take` once the queue has been closed.

    ``error`` is the ERROR event announcing an unexpected loss, or ``None`` for an
    orderly close.
    """

    def __init__(self, error: Optional[SessionEvent]) -> None:
        super().__init__("subscriber closed")
        self.error = error


class _Overflow:
    """Stands in the queue for the events dropped since the consumer last caught up."""

    __slots__ = ("session_id", "count", "types")

    def __init__(self, event: SessionEvent) -> None:
        self.session_id = event.session_id
        self.count = 0
        self.types: Dict[SessionEventType, int] = {}
        self.add(event)

    def add(self, event: SessionEvent) -> None:
        # Keyed by the member, not its .value (an enum property: the slow part of a
        # drop, and every event of a callbacks-only session overflows the backlog).
        self.count += 1
        key = event.type
        self.types[key] = self.types.get(key, 0) + 1

    def to_event(self) -> SessionEvent:
        return SessionEvent(
            SessionEventType.ERROR,
            self.session_id,
            data={
                "error": OVERFLOW_ERROR,
                "dropped_count": self.count,
                "dropped_event_types": {kind.value: n for kind, n in self.types.items()},
                "dropped_event_type": next(iter(self.types)).value,
            },
        )


class _End:
    __slots__ = ("error",)

    def __init__(self, error: Optional[SessionEvent]) -> None:
        self.error = error


class SubscriberQueue(queue.Queue):  # type: ignore[type-arg]
    """One consumer's events; ``maxsize <= 0`` is unbounded.

    ``event_types`` filters on the producer side, so events the consumer does not
    want never take up space.
    """

    def __init__(
        self, maxsize: int = 0, event_types: Optional[Collection[SessionEventType]] = None
    ) -> None:
        super().__init__(maxsize=0)  # bounds are enforced by offer(), never by put()
        self.limit = maxsize if maxsize > 0 else 0
        self.types = frozenset(event_types) if event_types else None
        self.closed = False
        self.overflows = 0
        # Consumers blocked in a wait on ``not_empty`` (guarded by ``mutex``): a
        # producer notifies only when there is one. Condition.notify() costs as much
        # as the rest of an offer even when nobody waits.
        self._sleepers = 0
        # Set without any lock by an iterator's __del__ (which may run inside the
        # garbage collector on any thread); the producer prunes such queues.
        self.abandoned = False

    def offer(self, event: SessionEvent, *, force: bool = False) -> bool:
        """Queue ``event`` without blocking; return False if it was dropped.

        ``force`` bypasses the filter and the bound (for errors every consumer must see).
        """
        if not force and self.types is not None and event.type not in self.types:
            return True
        with self.mutex:
            if self.closed:
                return False
            items = self.queue
            if not force and self.limit and len(items) >= self.limit:
                if self._drop_locked(event):
                    self.not_empty.notify()
                return False
            items.append(event)
            if self._sleepers:
                self.not_empty.notify()
            return True

    def offer_many(
        self, events: Sequence[SessionEvent], wakes: Optional[Set[Waker]] = None
    ) -> int:
        """:meth:`offer` each event, in order, under one lock and with at most one
        wake-up; return how many were dropped (all of them once closed).

        With ``wakes`` (the I/O thread's set for its current round), the wake-up is
        left to whoever calls :meth:`wake` on the set's members later."""
        if self.types is not None:
            types = self.types
            events = [event for event in events if event.type in types]
        if not events:
            return 0
        with self.mutex:
            if self.closed:
                return len(events)
            items = self.queue
            limit = self.limit
            dropped = 0
            if not limit:
                items.extend(events)
            else:
                for event in events:
                    if len(items) < limit:
                        items.append(event)
                        continue
                    dropped += 1
                    self._drop_locked(event)
            if self._sleepers or dropped:
                if wakes is None:
                    self.not_empty.notify()
                else:
                    wakes.add(self)
            return dropped

    def wake(self) -> None:
        """Wake the consumer if it is waiting (a wake-up :meth:`offer_many` deferred)."""
        with self.mutex:
            if self._sleepers:
                self.not_empty.notify()

    def _drop_locked(self, event: SessionEvent) -> bool:
        """Count a dropped event into the trailing overflow marker, adding one if the
        consumer has caught up since the last loss; True when a marker was added."""
        items = self.queue
        last = items[-1] if items else None
        if isinstance(last, _Overflow):
            last.add(event)
            return False
        items.append(_Overflow(event))
        self.overflows += 1
        return True

    def close(self, error: Optional[SessionEvent] = None) -> None:
        """End the stream: queue ``error`` (if any) and the end marker; wake the consumer."""
        with self.mutex:
            if self.closed:
                return
            self.closed = True
            self.queue.append(_End(error))
            self.not_empty.notify_all()

    def take(self, deadline: Optional[float]) -> SessionEvent:
        """Block until the next event; ``deadline`` is a ``time.monotonic()`` value.

        Raises :class:`Ended` after the end marker (it stays, so every later call
        raises too) and ``queue.Empty`` when the deadline passes.
        """
        return self._unwrap(self._pop(deadline, sliced=True))

    def wait(self, deadline: Optional[float], *, sliced: bool = True) -> None:
        """Block until something is queued (an event or the end marker), taking
        nothing; raise ``queue.Empty`` when ``deadline`` passes. ``sliced`` wakes up
        every ``SLICE`` on the main thread so that Ctrl-C is seen promptly; the
        library's background threads pass ``False``."""
        with self.mutex:
            items = self.queue
            if items:
                return
            main = threading.current_thread() is threading.main_thread()
            piece = SLICE if sliced and main else None
            self._sleepers += 1
            try:
                while not items:
                    if deadline is None:
                        self.not_empty.wait(piece)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    self.not_empty.wait(remaining if piece is None else min(piece, remaining))
            finally:
                self._sleepers -= 1

    def take_now(self, most: Optional[int] = None) -> List[SessionEvent]:
        """What is queued, oldest first (at most ``most`` events), without waiting:
        ``[]`` when nothing is.

        Stops before the end marker, so the call after the last events raises
        :class:`Ended`; overflow markers become their ERROR events as in :meth:`take`.
        A consumer that keeps the batch in a private buffer pays one lock round trip
        per batch instead of per event.
        """
        if not self.queue:  # a racy peek is fine: only this consumer takes items
            return []
        events: List[SessionEvent] = []
        room = -1 if most is None else most
        with self.mutex:
            items = self.queue
            while room and items and not isinstance(items[0], _End):
                item = items.popleft()
                events.append(item if type(item) is SessionEvent else self._unwrap(item))
                room -= 1
            end = items.popleft() if not events and items and isinstance(items[0], _End) else None
        if end is not None:
            self._unwrap(end)  # outside the lock: raises Ended and puts a marker back
        return events

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """``queue.Queue.get``, on the same wait as :meth:`take` (no ``not_full`` notify:
        producers here never wait for space)."""
        if not block:
            timeout = 0.0
        elif timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return self._pop(None if timeout is None else time.monotonic() + timeout, sliced=False)

    def _pop(self, deadline: Optional[float], *, sliced: bool) -> Any:
        """Remove the oldest item, waiting until ``deadline`` (None: no limit); raise
        ``queue.Empty`` when nothing came in time. The common case, something
        queued, reads no clock and waits for nothing."""
        while True:
            with self.mutex:
                if self.queue:
                    return self.queue.popleft()
            self.wait(deadline, sliced=sliced)

    def _unwrap(self, item: Any) -> SessionEvent:
        if type(item) is SessionEvent:
            return item
        if isinstance(item, _End):
            with self.mutex:
                # Keep the marker for the next call; the error is reported only once.
                self.queue.appendleft(_End(None))
                self.not_empty.notify()
            raise Ended(item.error)
        if isinstance(item, _Overflow):
            return item.to_event()
        event: SessionEvent = item
        return event

    def drain(self) -> List[Any]:
        """Remove and return every queued item (markers included), for a hand-over."""
        with self.mutex:
            items = list(self.queue)
            self.queue.clear()
            return items

    def give(self, items: List[Any]) -> None:
        """Queue items taken from another queue's :meth:`drain`, in order."""
        for item in items:
            if isinstance(item, _Overflow):
                self.offer(item.to_event(), force=True)
            elif isinstance(item, SessionEvent):
                self.offer(item)

    def clear(self) -> None:
        """Forget everything queued."""
        with self.mutex:
            self.queue.clear()
