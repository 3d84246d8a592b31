"""Bringing one session back after an unexpected drop, without a thread of its own.

The back-off pauses are timers on the I/O thread; each attempt (the ``on_reconnect``
hook, the blocking handshake, the history reconciliation) is a job on the small
shared reconnect pool (:func:`._pool.reconnect_pool`). A server restart that drops a
thousand links at once therefore queues a thousand jobs for a few threads: the
sessions wait their turn and the thread count stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Callable, Optional

from ._ioloop import Timer, io_loop
from ._pool import reconnect_pool
from ._recovery import (
    ReconnectAttempt,
    ReconnectHook,
    ReconnectPolicy,
    is_recoverable,
    next_pause,
)

__all__ = ["Reconnector"]

logger = logging.getLogger(__name__)


class Reconnector:
    """One session's reconnect attempts.

    ``attach(timeout, attempt, generation)`` dials and re-attaches (raising on
    failure), ``reconcile()`` delivers what was missed, ``give_up(reason,
    generation)`` ends the session; all three run on a reconnect pool thread.

    Each :meth:`start` begins a cycle with the session's ``generation`` number, and
    every job carries the number of its cycle: a job of an earlier cycle (one that
    outlived :meth:`stop`'s bounded wait) stops at its next step, and the session
    refuses its ``attach``/``give_up`` under its lock, so it never touches a later
    cycle or a later ``connect()``.
    """

    def __init__(
        self,
        policy: ReconnectPolicy,
        hook: Optional[ReconnectHook],
        *,
        connect_timeout: float,
        session_id: Callable[[], str],
        attach: Callable[[float, int, int], None],
        reconcile: Callable[[], None],
        give_up: Callable[[str, int], None],
    ) -> None:
        self._policy = policy
        self._hook = hook
        self._connect_timeout = connect_timeout
        self._session_id = session_id
        self._attach = attach
        self._reconcile = reconcile
        self._give_up = give_up
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pausing = threading.Lock()  # arming a pause's timer vs. its firing
        self._timer: Optional[Timer] = None
        self._generation = 0  # the current cycle's
        self._attempt = 0
        self._started = 0.0
        self._reason = ""
        self._last_error: Optional[BaseException] = None  # its Retry-After is honoured

    def start(self, reason: str, generation: int) -> None:
        """Begin cycle ``generation`` after a drop (I/O thread): the first attempt is
        queued at once."""
        self._generation = generation
        self._stop.clear()
        self._idle.clear()
        self._attempt = 0
        self._started = time.monotonic()
        self._reason = reason
        self._last_error = None
        reconnect_pool().submit(partial(self._prepare, generation))

    def stop(self, timeout: float) -> None:
        """No more attempts; wait up to ``timeout`` for one in progress (any thread
        but a reconnect worker's own)."""
        self._stop.set()
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._idle.wait(timeout)

    def _stopped(self, generation: int) -> bool:
        return self._stop.is_set() or generation != self._generation

    def _prepare(self, generation: int) -> None:
        """Decide on the next attempt and wait for its back-off (a pool thread)."""
        while True:
            if self._stopped(generation):
                self._idle.set()
                return
            self._attempt += 1
            attempt, policy = self._attempt, self._policy
            elapsed = time.monotonic() - self._started
            if attempt > policy.max_attempts or elapsed >= policy.max_time:
                self._finish_with(
                    f"{self._reason}; gave up after {attempt - 1} attempts in {elapsed:.1f}s",
                    generation,
                )
                return
            if self._hook is not None:
                info = ReconnectAttempt(self._session_id(), attempt, self._reason, elapsed)
                try:
                    verdict = self._hook(info)
                except BaseException:  # SystemExit too: never kill the pool's thread
                    logger.exception("on_reconnect hook failed; giving up")
                    verdict = False
                if verdict is False:
                    self._finish_with(
                        f"{self._reason}; reconnecting stopped by on_reconnect", generation
                    )
                    return
            pause = next_pause(policy, attempt, self._last_error)
            pause = min(pause, max(0.0, policy.max_time - elapsed))
            if pause > 0:
                # Wait on the I/O thread's timer heap, not on this worker. Idle only
                # once the timer is armed (or cancelled, if stop() came meanwhile):
                # stop() must not return while a timer is about to be scheduled,
                # which would start the I/O thread again after the last disconnect().
                # The lock keeps _after_pause from marking the next attempt busy
                # before this marks the pause idle.
                with self._pausing:
                    if self._stopped(generation):
                        self._idle.set()
                        return
                    try:
                        self._timer = io_loop().call_later(
                            pause, partial(self._after_pause, generation)
                        )
                    except Exception as exc:  # no I/O thread could start for it
                        failure = exc
                    else:
                        if self._stopped(generation):
                            self._timer.cancel()
                        self._idle.set()
                        return
                # Give up (going idle) outside the lock, never stay busy for good.
                self._finish_with(f"{self._reason}; cannot wait to retry: {failure}", generation)
                return
            if not self._try(generation):
                return

    def _after_pause(self, generation: int) -> None:
        # On the I/O thread: hand the attempt back to the pool.
        with self._pausing:
            if self._stopped(generation):
                return
            self._idle.clear()
        reconnect_pool().submit(partial(self._resume, generation))

    def _resume(self, generation: int) -> None:
        if self._try(generation):
            self._prepare(generation)

    def _try(self, generation: int) -> bool:
        """One attempt; True when another should follow."""
        if self._stopped(generation):
            self._idle.set()
            return False
        remaining = self._policy.max_time - (time.monotonic() - self._started)
        if remaining <= 0:
            return True  # _prepare reports the budget spent
        try:
            self._attach(min(self._connect_timeout, remaining), self._attempt, generation)
        except Exception as exc:
            if self._stopped(generation):
                self._idle.set()
                return False
            self._reason = str(exc)
            self._last_error = exc
            logger.info("reconnect attempt %d failed: %s", self._attempt, exc)
            if not is_recoverable(exc):
                self._finish_with(self._reason, generation)
                return False
            return True
        try:
            if not self._stopped(generation):
                self._reconcile()
        finally:
            self._idle.set()
        return False

    def _finish_with(self, reason: str, generation: int) -> None:
        try:
            self._give_up(reason, generation)
        finally:
            self._idle.set()
