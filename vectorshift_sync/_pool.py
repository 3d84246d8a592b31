"""Small shared thread pools: one runs callbacks, one runs reconnect handshakes.

Both kinds of work may block (user code; a TLS handshake), so neither may run on the
I/O thread, and neither may cost a thread per session: a server restart that drops a
thousand links at once must not start a thousand threads. A :class:`WorkerPool` runs
jobs in submission order on at most ``size`` threads, started when work is waiting
and no worker is free.

Workers end by themselves when there is no work and nobody holds the pool
(:meth:`WorkerPool.hold`): the reconnect pool is never held, so its threads live only
while reconnecting; each session with callbacks holds the callback pool while it is
open, so a stream of events does not start and stop a thread per event, and the
last session's ``disconnect()`` lets them go and waits until they have ended
(:meth:`WorkerPool.wait_ended`). A forked child gets pools of its own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Callable, Deque, Dict, Optional, Set

from ._deadline import Deadline

__all__ = ["WorkerPool", "callback_pool", "reconnect_pool", "set_worker_limits"]

logger = logging.getLogger(__name__)

Job = Callable[[], None]


class WorkerPool:
    """Run jobs on at most ``size`` daemon threads named ``<name>-<n>``."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._jobs: Deque[Job] = deque()
        self._threads = 0
        self._idle = 0  # workers waiting for a job
        self._wakeups = 0  # of those, how many were notified and have not woken yet
        self._holds = 0
        self._serial = 0
        # wait_ended() waits here for workers to leave their loop; woken when one
        # does, and when the pool is held or given work (it is in use again).
        self._changed = threading.Condition(self._lock)
        self._end_waiters = 0
        # Workers started and not yet seen dead: one that has left its loop is
        # still alive for a moment, and wait_ended() joins it.
        self._workers: Set[threading.Thread] = set()

    def submit(self, job: Job) -> None:
        """Queue ``job``; a free worker (or a new one, within ``size``) runs it."""
        with self._lock:
            self._jobs.append(job)
            if self._end_waiters:
                self._changed.notify_all()
            if self._idle > self._wakeups:  # a waiting worker nobody has woken yet
                self._wakeups += 1
                self._work.notify()
            elif self._threads < self.size:
                self._start_locked()

    def resubmit(self, job: Job) -> None:
        """Queue ``job`` at the back, from a job of this pool that returns next: its
        worker takes the queue's head itself, so no other worker is woken for it (one
        would find the queue empty and cost a thread switch per batch). From any
        other thread this is :meth:`submit`."""
        if threading.current_thread() not in self._workers:
            self.submit(job)
            return
        with self._lock:
            self._jobs.append(job)
            if self._end_waiters:
                self._changed.notify_all()

    def hold(self) -> None:
        """Keep idle workers alive until the matching :meth:`release`."""
        with self._lock:
            self._holds += 1
            if self._end_waiters:
                self._changed.notify_all()

    def release(self) -> None:
        """Undo one :meth:`hold`; with none left, idle workers end."""
        with self._lock:
            self._holds = max(0, self._holds - 1)
            if not self._holds:
                self._work.notify_all()

    @property
    def threads(self) -> int:
        """How many workers are alive now."""
        return self._threads

    def wait_ended(self, timeout: float) -> bool:
        """While the pool is neither held nor given work, wait up to ``timeout`` for
        its workers to end (one running a job finishes it first), so that the
        process's last session's ``disconnect()`` returns with none alive. Returns at
        once, True, when the pool is in use again; never waits for the calling worker
        itself (a callback that disconnects its session). False if a worker was
        still alive at the deadline. Sliced waits: Ctrl-C gets through."""
        current = threading.current_thread()
        deadline = Deadline(timeout)
        with self._lock:
            mine = 1 if current in self._workers else 0  # still in its loop
            self._end_waiters += 1
            try:
                while self._threads > mine:
                    if self._holds or self._jobs:
                        return True
                    if deadline.expired:
                        return False
                    self._changed.wait(deadline.slice())
                if self._holds or self._jobs:
                    return True
            finally:
                self._end_waiters -= 1
            workers = [worker for worker in self._workers if worker is not current]
        ended = all([deadline.join(worker) for worker in workers])  # each left its loop
        with self._lock:
            self._workers = {worker for worker in self._workers if worker.is_alive()}
        return ended

    def _start_locked(self) -> None:
        self._serial += 1
        thread = threading.Thread(
            target=self._work_loop, name=f"{self.name}-{self._serial}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": the process's limit
            # Count no phantom worker (the pool would wait on it for ever): the job
            # stays queued for a worker alive now or started by the next submit().
            logger.error("%s could not start a worker (%s); the job waits", self.name, exc)
            return
        self._threads += 1
        self._workers = {worker for worker in self._workers if worker.is_alive()}
        self._workers.add(thread)

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    if not self._holds:
                        self._threads -= 1
                        if self._end_waiters:
                            self._changed.notify_all()
                        return
                    self._idle += 1
                    try:
                        self._work.wait()
                    finally:
                        self._idle -= 1
                        if self._wakeups:
                            self._wakeups -= 1
                job = self._jobs.popleft()
            try:
                job()
            except BaseException:  # even SystemExit from user code: this worker goes on
                logger.exception("a job on %s failed", self.name)
            job = None  # type: ignore[assignment]  # hold no session while idle


_limits: Dict[str, int] = {"vectorshift-callbacks": 8, "vectorshift-reconnect": 4}
_pools: Dict[str, WorkerPool] = {}
_pools_lock = threading.Lock()


def _pool(name: str) -> WorkerPool:
    pool = _pools.get(name)
    if pool is not None and pool.pid == os.getpid():
        return pool
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None or pool.pid != os.getpid():
            pool = _pools[name] = WorkerPool(name, _limits[name])
        return pool


def callback_pool() -> WorkerPool:
    """The pool that runs ``Session.on`` callbacks (per session: in order, one at a time)."""
    return _pool("vectorshift-callbacks")


def reconnect_pool() -> WorkerPool:
    """The pool that runs reconnect handshakes and history reconciliation."""
    return _pool("vectorshift-reconnect")


def set_worker_limits(*, callbacks: Optional[int] = None, reconnects: Optional[int] = None) -> None:
    """Set how many threads run callbacks (default 8) and reconnects (default 4).

    Applies to work submitted from now on; threads already running finish their jobs.
    More callback threads let more sessions' callbacks run at once (a session's own
    callbacks always run one at a time, in order).
    """
    settings = (("vectorshift-callbacks", callbacks), ("vectorshift-reconnect", reconnects))
    for name, value in settings:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            from .errors import InvalidArgumentError

            raise InvalidArgumentError(f"worker limits must be positive ints, got {value!r}")
        _limits[name] = value
        with _pools_lock:
            pool = _pools.get(name)
            if pool is not None:
                pool.size = value


def _after_fork_in_child() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
