"""Callback dispatch: ``Session.on`` callbacks on the process's shared callback pool.

Each session has one mailbox for its whole life, which the I/O thread fills. When it
has events and is not already scheduled, one job for it goes to the pool
(:func:`._pool.callback_pool`); that job runs a batch of callbacks in order, then
hands the session back to the end of the line if more is waiting. So a session's
callbacks run one at a time and in order, across its connections too (a callback
still running when ``disconnect()`` stopped waiting for it finishes before the next
connection's callbacks start); sessions run in parallel up to the pool's size, and a
slow callback delays other sessions' by at most one batch when the pool is full. An
exception in a callback is logged (and handed to ``on_callback_error``) and the rest
carry on.

The mailbox is unbounded, as a callback can take any time: events wait for it
rather than being dropped. A callback that never returns holds its session's later
events (and only those) for good.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, FrozenSet, List, Optional, Tuple, Union

from ._pool import WorkerPool, callback_pool
from .events import SessionEvent, SessionEventType

__all__ = ["Callbacks", "Callback", "CallbackErrorHook"]

logger = logging.getLogger(__name__)

Callback = Callable[[SessionEvent], Any]
CallbackErrorHook = Callable[[BaseException, SessionEvent], Any]
Entry = Tuple[Optional[FrozenSet[SessionEventType]], Callback]

#: Events one job runs before the session goes to the back of the line.
_BATCH = 256


class _EpochEnd:
    """Where one connection's events end: ``error`` (if any) runs last, then
    ``done`` is set and the pool the connection held is let go."""

    __slots__ = ("error", "pool", "done")

    def __init__(self, error: Optional[SessionEvent], pool: WorkerPool) -> None:
        self.error = error
        self.pool = pool
        self.done = threading.Event()


class _Mailbox:
    """A session's events for its callbacks, and its scheduling flag."""

    def __init__(self, owner: Callbacks) -> None:
        self.owner = owner
        self._items: Deque[Union[SessionEvent, _EpochEnd]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.runner: Optional[int] = None  # ident of the worker running it now

    def post(self, items: List[Any]) -> None:
        """Queue ``items`` and make sure a job will run them (any thread; no blocking)."""
        with self._lock:
            self._items.extend(items)
            if self._scheduled:
                return
            self._scheduled = True
        callback_pool().submit(self._run)

    def _run(self) -> None:
        with self._lock:
            items = self._items
            if len(items) <= _BATCH:  # the usual case: take all, at C speed
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(_BATCH)]
        self.runner = threading.get_ident()
        run = self.owner.run
        try:
            for item in batch:
                if not isinstance(item, _EpochEnd):
                    run(item)
                    continue
                if item.error is not None:
                    run(item.error)
                item.pool.release()  # before done: the closing thread's waits see it
                item.done.set()
        finally:
            self.runner = None
        with self._lock:
            if not self._items:
                self._scheduled = False
                return
        callback_pool().resubmit(self._run)  # more waiting: back of the line, for fairness


class Callbacks:
    """A session's registered callbacks and the mailbox that feeds them."""

    def __init__(self, on_error: Optional[CallbackErrorHook]) -> None:
        self.entries: Tuple[Entry, ...] = ()
        self.on_error = on_error
        self._mailbox = _Mailbox(self)
        self._pool: Optional[WorkerPool] = None  # held while a connection delivers

    def add(self, types: Optional[FrozenSet[SessionEventType]], callback: Callback) -> None:
        self.entries = self.entries + ((types, callback),)

    def remove(self, callback: Callback) -> bool:
        kept = tuple(entry for entry in self.entries if entry[1] is not callback)
        removed = len(kept) != len(self.entries)
        self.entries = kept
        return removed

    def start(self) -> None:
        """Begin delivering (called under the session's lock when it connects)."""
        if self._pool is not None or not self.entries:
            return
        pool = self._pool = callback_pool()
        pool.hold()  # idle workers stay while this session may send them work

    def post(self, events: List[SessionEvent]) -> None:
        if self._pool is not None:
            self._mailbox.post(events)

    def stop(self, error: Optional[SessionEvent]) -> Optional[_EpochEnd]:
        """End delivery after what is queued (then ``error``); returns the end to wait
        for with :meth:`wait`."""
        pool, self._pool = self._pool, None
        if pool is None:
            return None
        end = _EpochEnd(error, pool)
        self._mailbox.post([end])
        return end

    def wait(self, end: Optional[_EpochEnd], timeout: float) -> None:
        """Wait up to ``timeout`` for the callbacks up to ``end`` to finish, unless
        this is the thread running them (a callback that disconnects its own session)."""
        if end is None or self._mailbox.runner == threading.get_ident():
            return
        if not end.done.wait(timeout):
            logger.warning("session callbacks did not finish within the close timeout")

    def run(self, event: SessionEvent) -> None:
        """Run every matching callback for ``event`` (a pool thread), isolated."""
        for types, callback in self.entries:
            if types is not None and event.type not in types:
                continue
            try:
                callback(event)
            except BaseException as exc:  # SystemExit too: it must not stop the pool
                logger.exception(
                    "session callback %r failed on a %s event", callback, event.type.value
                )
                hook = self.on_error
                if hook is not None:
                    try:
                        hook(exc, event)
                    except Exception:
                        logger.exception("on_callback_error hook failed")
