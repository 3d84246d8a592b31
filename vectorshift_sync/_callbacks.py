"""Callback dispatch: ``Session.on`` callbacks on the process's shared callback pool.

Each session has a mailbox (an unbounded :class:`SubscriberQueue`) that the I/O
thread fills. When it has events and is not already scheduled, one job for it goes
to the pool (:func:`._pool.callback_pool`); that job runs a batch of callbacks in
order, then hands the session back to the end of the line if more is waiting. So a
session's callbacks run one at a time and in order, sessions run in parallel up to
the pool's size, and a slow callback delays other sessions' by at most one batch
when the pool is full. An exception in a callback is logged (and handed to
``on_callback_error``) and the rest carry on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, FrozenSet, List, Optional, Tuple

from ._pool import WorkerPool, callback_pool
from ._subscribers import Ended, SubscriberQueue
from .events import SessionEvent, SessionEventType

__all__ = ["Callbacks", "Callback", "CallbackErrorHook"]

logger = logging.getLogger(__name__)

Callback = Callable[[SessionEvent], Any]
CallbackErrorHook = Callable[[BaseException, SessionEvent], Any]
Entry = Tuple[Optional[FrozenSet[SessionEventType]], Callback]

#: Events one job runs before the session goes to the back of the line.
_BATCH = 256


class _Mailbox:
    """One connection epoch's events for the callbacks, and its scheduling flag."""

    def __init__(self, owner: Callbacks, pool: WorkerPool) -> None:
        self.owner = owner
        self.pool = pool
        self.events = SubscriberQueue(0)
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._scheduled = False
        self.runner: Optional[int] = None  # ident of the worker running it now

    def post(self, events: List[SessionEvent]) -> None:
        """Queue ``events`` and make sure a job will run them (any thread; no blocking)."""
        self.events.offer_many(events)
        self._schedule()

    def end(self, error: Optional[SessionEvent]) -> None:
        self.events.close(error)
        self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled or self.done.is_set():
                return
            self._scheduled = True
        self.pool.submit(self._run)

    def _run(self) -> None:
        self.runner = threading.get_ident()
        try:
            batch = self.events.take_now(_BATCH)
            for event in batch:
                self.owner.run(event)
        except Ended as end:
            if end.error is not None:
                self.owner.run(end.error)
            self.done.set()
            self.pool.release()
            return
        finally:
            self.runner = None
        with self._lock:
            if not self.events.queue:
                self._scheduled = False
                return
        self.pool.submit(self._run)  # more waiting: back of the line, for fairness


class Callbacks:
    """A session's registered callbacks and the mailbox that feeds them."""

    def __init__(self, on_error: Optional[CallbackErrorHook]) -> None:
        self.entries: Tuple[Entry, ...] = ()
        self.on_error = on_error
        self._mailbox: Optional[_Mailbox] = None

    def add(self, types: Optional[FrozenSet[SessionEventType]], callback: Callback) -> None:
        self.entries = self.entries + ((types, callback),)

    def remove(self, callback: Callback) -> bool:
        kept = tuple(entry for entry in self.entries if entry[1] is not callback)
        removed = len(kept) != len(self.entries)
        self.entries = kept
        return removed

    def start(self) -> None:
        """Begin delivering (called under the session's lock when it connects)."""
        if self._mailbox is not None or not self.entries:
            return
        pool = callback_pool()
        pool.hold()  # idle workers stay while this session may send them work
        self._mailbox = _Mailbox(self, pool)

    def post(self, events: List[SessionEvent]) -> None:
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.post(events)

    def stop(self, error: Optional[SessionEvent]) -> Optional[_Mailbox]:
        """End delivery after what is queued (then ``error``); returns the mailbox to
        wait for with :meth:`wait`."""
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            mailbox.end(error)
        return mailbox

    @staticmethod
    def wait(mailbox: Optional[_Mailbox], timeout: float) -> None:
        """Wait up to ``timeout`` for ``mailbox``'s callbacks to finish, unless this is
        the thread running them (a callback that disconnects its own session)."""
        if mailbox is None or mailbox.runner == threading.get_ident():
            return
        if not mailbox.done.wait(timeout):
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
