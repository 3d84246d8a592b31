"""Fan-out: the session's listeners, its backlog, and the iterator ``listen()`` returns.

The I/O thread publishes each read's events here in one lock hold. Every
:meth:`Session.listen` iterator has its own :class:`SubscriberQueue`; events that arrive
while no iterator is open wait in a bounded backlog for the next ``listen()``, and a
new turn clears it so an earlier turn is never replayed into a later one. A full
bounded queue drops the offending event and its consumer gets an overflow ``ERROR``
before anything later (see :mod:`._subscribers`). Callbacks get the same events
through their own sink (:mod:`._callbacks`).

Consumers only ever wait on their own queue; they never read a socket.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, FrozenSet, Iterator, List, Optional, Set, Tuple

from ._deadline import Deadline
from ._subscribers import Ended, SubscriberQueue, _End, _Overflow
from .errors import SessionTimeoutError
from .events import SessionEvent, SessionEventType

if TYPE_CHECKING:  # the loop's idea of what it wakes at the end of a round
    from ._ioloop import Waker

__all__ = ["FanOut", "Listener"]

logger = logging.getLogger(__name__)

_PONG = SessionEventType.PONG


class FanOut:
    """The listeners and backlog of one session.

    ``lock`` is the session's lock: every method named ``*_locked`` is called with it
    held (the session routes replies and events under the same hold). Nothing here
    blocks or runs user code.
    """

    def __init__(self, lock: threading.Lock, backlog: int) -> None:
        self.lock = lock
        self.listeners: Tuple[SubscriberQueue, ...] = ()
        self.backlog = SubscriberQueue(backlog)
        #: Also gets every event (the callbacks' mailbox), or None.
        self.extra: Optional[Callable[[List[SessionEvent]], None]] = None

    def subscribe_locked(self, subscriber: SubscriberQueue, *, fresh: bool) -> None:
        """Register ``subscriber``; it starts with the backlog, or (``fresh``) clears it."""
        if fresh:
            self.backlog.clear()
        else:
            subscriber.give(self.backlog.drain())
        self.listeners = self.listeners + (subscriber,)

    def hand_over_locked(self, subscriber: SubscriberQueue) -> bool:
        """After the link died: give ``subscriber`` what nobody took, then end it."""
        if not self.backlog.qsize():
            return False
        subscriber.give(self.backlog.drain())
        subscriber.close()
        return True

    def remove_locked(self, subscriber: SubscriberQueue) -> None:
        self.listeners = tuple(q for q in self.listeners if q is not subscriber)

    def publish_locked(
        self, events: List[SessionEvent], wakes: Optional[Set[Waker]] = None
    ) -> None:
        """Offer ``events`` to every consumer, in order; never blocks. ``wakes``: see
        :meth:`SubscriberQueue.offer_many` (the backlog has no consumer to wake)."""
        extra = self.extra
        if extra is not None:
            extra(events)
        listeners = self.listeners
        if listeners:
            for subscriber in listeners:
                if subscriber.abandoned:
                    self.listeners = tuple(q for q in self.listeners if not q.abandoned)
                elif subscriber.offer_many(events, wakes):
                    logger.debug("a listener queue is full; events were dropped")
        else:
            kept = [e for e in events if e.type is not _PONG]
            if kept:
                self.backlog.offer_many(kept)

    def announce_locked(self, error: SessionEvent) -> None:
        """Every consumer must see ``error``, full queue or not."""
        for subscriber in self.listeners:
            subscriber.offer(error, force=True)
        if not self.listeners:
            self.backlog.offer(error, force=True)

    def end_locked(self, error: Optional[SessionEvent]) -> None:
        """End every listener (after ``error``, if any); keep ``error`` for a late one."""
        listeners, self.listeners = self.listeners, ()
        for subscriber in listeners:
            subscriber.close(error)
        if error is None:
            self.backlog.clear()
        elif not listeners:
            self.backlog.offer(error, force=True)

    def clear_backlog_locked(self) -> None:
        self.backlog.clear()


class Listener(Iterator[SessionEvent]):
    """The iterator returned by :meth:`Session.listen`; also a context manager.

    ``next()`` takes the oldest event straight from this listener's queue and removes
    it in the same frame that returns it, with no call in between, so a Ctrl-C never
    lands between taking an event and handing it over: nothing is lost or repeated.
    It waits (sliced, so Ctrl-C gets through) only when the queue is empty.
    """

    def __init__(
        self,
        fanout: FanOut,
        queue_: SubscriberQueue,
        timeout: Optional[float],
        pid: Optional[int] = None,
    ) -> None:
        self._fanout: Optional[FanOut] = fanout
        self._queue = queue_
        self._items = queue_.queue
        self._timeout = timeout
        self._pid = os.getpid() if pid is None else pid
        self._done = False

    def __iter__(self) -> Listener:
        return self

    def __next__(self) -> SessionEvent:
        items = self._items
        while True:
            if self._done:
                raise StopIteration
            if items:
                item = items[0]
                if type(item) is SessionEvent:
                    del items[0]  # a statement, not a call: see the class docstring
                    return item
                try:
                    return self._take_marker()
                except Ended as end:
                    if end.error is not None:
                        return end.error
                    self._finish()
                    raise StopIteration from None
            try:
                self._queue.wait(Deadline(self._timeout).when)
            except queue.Empty:
                raise SessionTimeoutError(
                    f"no event arrived within {self._timeout}s"
                ) from None

    def pull(self, deadline: Optional[float]) -> SessionEvent:
        """The next event, waiting until ``deadline`` (monotonic; None: no limit).

        Raises :class:`Ended` at the end and ``queue.Empty`` when the deadline passes.
        For the library's turn loops (which report the end themselves).
        """
        items = self._items
        while True:
            if items:
                item = items[0]
                if type(item) is SessionEvent:
                    del items[0]
                    return item
                return self._take_marker()
            self._queue.wait(deadline)

    def _take_marker(self) -> SessionEvent:
        """The head is an overflow or end marker: convert it (under the queue's lock,
        so a producer cannot add to an overflow marker that was just taken)."""
        queue_ = self._queue
        with queue_.mutex:
            item = self._items[0]
            if isinstance(item, _Overflow):
                event = item.to_event()
                del self._items[0]
                return event
            if isinstance(item, _End):
                error, item.error = item.error, None  # reported once; the marker stays
                raise Ended(error)
            del self._items[0]
            result: SessionEvent = item
            return result

    def close(self) -> None:
        """Unsubscribe now; further iteration stops."""
        self._finish()

    def _finish(self) -> None:
        self._done = True
        fanout, self._fanout = self._fanout, None
        if fanout is not None and os.getpid() == self._pid:
            with fanout.lock:
                fanout.remove_locked(self._queue)
        self._queue.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._finish()

    def __del__(self) -> None:
        # May run inside the garbage collector on a thread that holds the session's
        # lock, so take no lock here: flag the queue and let the publisher prune it.
        self._queue.abandoned = True


def event_type_set(values: Any) -> Optional[FrozenSet[SessionEventType]]:
    """``event_types`` as a frozenset of members (None: all); raises on bad input."""
    from collections.abc import Iterable

    from .errors import ArgumentTypeError, InvalidArgumentError

    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArgumentTypeError(
            f"event_types must be a list of SessionEventType values, not {type(values).__name__}"
        )
    types = set()
    for value in values:
        try:
            types.add(SessionEventType(value))
        except ValueError:
            raise InvalidArgumentError(
                f"unknown event type {value!r}; use SessionEventType members"
            ) from None
    return frozenset(types) or None
