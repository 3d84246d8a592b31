"""The process's one I/O thread: a selector over every session's socket, plus timers.

Every connected :class:`~vectorshift_sync.session.Session` of a process hands its
socket to one daemon thread, ``vectorshift-io``. It waits in
``selectors.DefaultSelector`` (epoll on Linux, kqueue on macOS, select on Windows),
reads every ready socket until it would block, and lets the connection frame, parse
and route what came. Heartbeats, idle checks and reconnect back-offs are timers on
a heap kept by the same thread, so no session owns a thread of its own.

Rules for code that runs here (handlers, timers, calls): never block on one
connection and never run user code. Other threads talk to the loop through
:meth:`IOLoop.call_soon` and :meth:`IOLoop.call_later`, which wake it through a
socket pair registered beside the sessions' sockets.

The thread starts with the first registration and ends by itself once nothing is
registered and no timer is pending, so no thread outlives the last session. A
forked child gets a loop of its own (the parent's thread does not exist there).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Set, Tuple

from ._deadline import Deadline

__all__ = ["IOLoop", "Handler", "Timer", "Waker", "io_loop"]

logger = logging.getLogger(__name__)

THREAD_NAME = "vectorshift-io"


class Handler:
    """What the loop calls for a registered socket (on the I/O thread)."""

    def fileno(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def on_readable(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_writable(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_failure(self, exc: BaseException) -> None:  # pragma: no cover - interface
        """A handler method raised: the loop carries on; the handler ends itself."""
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        """True once the handler is over (a late registration is then skipped)."""
        return False


class Waker(Protocol):
    """Something the loop wakes at the end of a round (a subscriber queue)."""

    def wake(self) -> None: ...  # pragma: no cover - interface


class Timer:
    """A call due at ``when`` on the I/O thread; :meth:`cancel` from any thread."""

    __slots__ = ("when", "callback", "_state", "_loop")

    def __init__(self, loop: IOLoop, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self._state = 0  # 0 pending, 1 fired, 2 cancelled
        self._loop = loop

    def cancel(self) -> None:
        """Forget the call if it has not run yet; idempotent."""
        self._loop._cancel(self)


class IOLoop:
    """One selector, one timer heap, one thread (started on demand)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        # The selector and the wake-up pair exist while the thread runs (no
        # descriptor is held while the process has no session).
        self._selector: Optional[selectors.BaseSelector] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._calls: Deque[Callable[[], None]] = deque()
        self._timers: List[Tuple[float, int, Timer]] = []
        self._live_timers = 0
        self._seq = itertools.count()
        self._handlers: Dict[int, Handler] = {}  # touched on the I/O thread only
        self._writers: Dict[int, bool] = {}
        self._woken = False
        self._thread: Optional[threading.Thread] = None
        self._ident: Optional[int] = None
        # The last disconnect() waits here for the thread to end (see wait_ended).
        self._changed = threading.Condition(self._lock)
        self._end_waiters = 0
        self._swaps = 0  # how many times the I/O thread took the queued calls
        self._ran = 0  # the last swap whose calls have all run
        self._ending: Optional[threading.Thread] = None  # left its loop, maybe not ended
        #: Consumers to wake once this round's ready sockets are all read (I/O thread
        #: only; see :meth:`_wake_consumers`).
        self.round_wakes: Set[Waker] = set()

    # --- any thread -------------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread, in call order; start the thread if needed."""
        with self._lock:
            self._calls.append(callback)
            self._wake_locked()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the I/O thread in ``delay`` seconds; returns its Timer."""
        timer = Timer(self, time.monotonic() + max(0.0, delay), callback)
        with self._lock:
            earliest = self._timers[0][0] if self._timers else None
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            self._live_timers += 1
            if self._end_waiters:
                self._changed.notify_all()  # more work: the thread stays
            try:
                if not self.on_loop_thread and (earliest is None or timer.when < earliest):
                    self._wake_locked()
                elif self._thread is None:
                    self._start_locked()
            except BaseException:  # no thread to run it: the timer was never armed
                timer._state = 2
                self._live_timers -= 1
                raise
        return timer

    def add(self, handler: Handler) -> None:
        """Watch ``handler``'s socket for reading (registered on the I/O thread)."""
        self.call_soon(lambda: self._register(handler))

    def remove(self, handler: Handler) -> None:
        """Stop watching ``handler``'s socket; safe to call twice, any thread."""
        if self.on_loop_thread:
            self._unregister(handler)
        else:
            self.call_soon(lambda: self._unregister(handler))

    def want_write(self, handler: Handler, wanted: bool) -> None:
        """Also wake for writability (a write the I/O thread could not finish)."""
        if self.on_loop_thread:
            self._set_writer(handler, wanted)
        else:
            self.call_soon(lambda: self._set_writer(handler, wanted))

    def wait_ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the thread to end when it has nothing left to
        serve, so that no thread outlives the process's last session (called at the
        end of ``disconnect()``; any thread but the I/O thread). Returns at once,
        True, while other sessions or timers keep the thread busy; False only when
        it was still winding down at the deadline. Sliced waits: Ctrl-C gets through.
        """
        deadline = Deadline(timeout)
        with self._lock:
            thread = self._thread
            if thread is not None:
                if self.on_loop_thread:
                    return True
                # Calls queued now (one may remove the last handler) are taken by the
                # next swap; wait until that swap's calls have run, no longer.
                swap = self._swaps + 1 if self._calls else 0
                self._end_waiters += 1
                try:
                    while self._thread is thread and (
                        self._ran < swap or not (self._handlers or self._live_timers)
                    ):
                        if deadline.expired:
                            return False
                        self._changed.wait(deadline.slice())
                finally:
                    self._end_waiters -= 1
                if self._thread is thread:
                    return True  # it serves others: it stays
            ending = self._ending
        if ending is None or ending is threading.current_thread():
            return True
        return deadline.join(ending)

    @property
    def on_loop_thread(self) -> bool:
        """True when called from the I/O thread itself."""
        return threading.get_ident() == self._ident

    def _cancel(self, timer: Timer) -> None:
        with self._lock:
            if timer._state == 0:
                timer._state = 2
                timer.callback = _nothing  # the heap may keep it a while: not its target
                self._live_timers -= 1
                if self._thread is not None and not self.on_loop_thread:
                    self._wake_locked()  # it may have nothing left to wait for

    def _wake_locked(self) -> None:
        # Called with self._lock held.
        if self._thread is None:
            self._start_locked()
            return
        if not self._woken and not self.on_loop_thread:
            self._woken = True
            try:
                assert self._wake_w is not None
                self._wake_w.send(b"\0")
            except OSError:  # pragma: no cover - a full pair already wakes it
                pass

    def _start_locked(self) -> None:
        """Start the thread; on failure (no descriptors, no threads left) raise
        :class:`SessionConnectionError` and leave the loop as if never started, so
        the caller's ``connect()`` fails instead of waiting on a loop that never runs."""
        try:
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread = thread
            self._woken = False
            thread.start()
        except (OSError, RuntimeError) as exc:
            self._thread = None
            self._calls.clear()
            self._close_resources()
            from .errors import SessionConnectionError

            raise SessionConnectionError(
                f"could not start the I/O thread ({exc}); the process is out of threads "
                "or file descriptors: close other sessions or raise the limits"
            ) from exc

    # --- the I/O thread -----------------------------------------------------------

    def _register(self, handler: Handler) -> None:
        fd = handler.fileno()
        if fd < 0 or fd in self._handlers or handler.ended:
            return
        self._handlers[fd] = handler
        assert self._selector is not None
        try:
            self._selector.register(fd, selectors.EVENT_READ, handler)
        except (OSError, ValueError) as exc:
            del self._handlers[fd]
            handler.on_failure(exc)

    def _unregister(self, handler: Handler) -> None:
        fd = handler.fileno()
        if self._handlers.get(fd) is not handler:
            return
        del self._handlers[fd]
        self._writers.pop(fd, None)
        assert self._selector is not None
        try:
            self._selector.unregister(fd)
        except (KeyError, OSError, ValueError):
            pass

    def _set_writer(self, handler: Handler, wanted: bool) -> None:
        fd = handler.fileno()
        if self._handlers.get(fd) is not handler or self._writers.get(fd, False) == wanted:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
        assert self._selector is not None
        try:
            self._selector.modify(fd, events, handler)
            self._writers[fd] = wanted
        except (KeyError, OSError, ValueError) as exc:
            handler.on_failure(exc)

    def _run(self) -> None:
        self._ident = threading.get_ident()
        selector = self._selector
        assert selector is not None
        try:
            while True:
                with self._lock:
                    calls, self._calls = self._calls, deque()
                    self._swaps += 1
                    swap = self._swaps
                    self._woken = False
                for call in calls:
                    self._guard(call)
                call = calls = None  # type: ignore[assignment]  # hold no session between turns
                timeout = self._next_timeout()
                with self._lock:
                    self._ran = swap
                    if self._end_waiters:
                        self._changed.notify_all()  # the calls ran: handlers are current
                    if not self._handlers and not self._live_timers and not self._calls:
                        self._thread = None  # the next call_soon starts a new one
                        self._ident = None
                        self._ending = threading.current_thread()
                        self._timers.clear()  # only cancelled ones are left
                        self._close_resources()
                        self._changed.notify_all()
                        return
                    if self._calls:
                        timeout = 0.0
                ready = selector.select(timeout)
                for key, mask in ready:
                    handler = key.data
                    if handler is None:
                        self._drain_wake()
                        continue
                    try:
                        if mask & selectors.EVENT_READ:
                            handler.on_readable()
                        if mask & selectors.EVENT_WRITE:
                            handler.on_writable()
                    except Exception as exc:  # never let one connection stop the loop
                        logger.exception("I/O handler failed")
                        try:
                            handler.on_failure(exc)
                        except Exception:
                            logger.exception("an I/O handler failed to end itself")
                handler = ready = None  # type: ignore[assignment]
                if self.round_wakes:
                    self._wake_consumers()
                self._run_timers()
        except BaseException:  # pragma: no cover - the loop itself broke
            logger.exception("the I/O thread failed")
            with self._lock:
                self._thread = None
                self._ident = None
                self._ending = threading.current_thread()
                self._handlers.clear()
                self._close_resources()
                self._changed.notify_all()
            raise

    def _wake_consumers(self) -> None:
        """Wake, once each, the consumers this round's reads gave events to.

        Deferred to the end of the round on purpose: a consumer woken in the middle
        would only wait for the interpreter lock the I/O thread still needs for the
        other ready sockets, and one woken per read instead of per round can be woken
        more than once for the same round's events.
        """
        wakes = list(self.round_wakes)
        self.round_wakes.clear()
        for waker in wakes:
            try:
                waker.wake()
            except Exception:  # pragma: no cover - a wake-up takes a lock and notifies
                logger.exception("waking a consumer failed")

    def _guard(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception:
            logger.exception("a call on the I/O thread failed")

    def _next_timeout(self) -> Optional[float]:
        with self._lock:
            timers = self._timers
            while timers and timers[0][2]._state != 0:
                heapq.heappop(timers)
            if not timers:
                return None
            return max(0.0, timers[0][0] - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        due: List[Timer] = []
        with self._lock:
            timers = self._timers
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if timer._state == 0:
                    timer._state = 1
                    self._live_timers -= 1
                    due.append(timer)
        for timer in due:
            self._guard(timer.callback)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _close_resources(self) -> None:
        for closeable in (self._selector, self._wake_r, self._wake_w):
            if closeable is not None:
                try:
                    closeable.close()
                except (OSError, ValueError):  # pragma: no cover - best effort
                    pass
        self._selector = self._wake_r = self._wake_w = None

    def _abandon(self) -> None:
        """In a forked child: drop the parent's loop without touching its locks."""
        self._close_resources()


def _nothing() -> None:
    """What a cancelled timer calls (nothing; it lets go of its target at once)."""


_loop: Optional[IOLoop] = None
_loop_lock = threading.Lock()


def io_loop() -> IOLoop:
    """This process's loop, created on first use (and afresh in a forked child)."""
    global _loop
    loop = _loop
    if loop is not None and loop.pid == os.getpid():
        return loop
    with _loop_lock:
        if _loop is None or _loop.pid != os.getpid():
            _loop = IOLoop()
        return _loop


def _after_fork_in_child() -> None:
    global _loop, _loop_lock
    _loop_lock = threading.Lock()  # the parent may have held it at fork time
    old, _loop = _loop, None
    if old is not None:
        old._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
