"""Ctrl-C held back over a few lines that must not be cut in half.

A consumer thread that reads the socket itself (``Session._await_events``) takes bytes
off the socket, frames them and routes the events in one go. A ``KeyboardInterrupt``
raised between those steps would lose the bytes already read and leave the frame
parser out of step with the stream. On the main thread (the only one Python delivers
signals to), :class:`HeldInterrupt` installs a handler that only notes a SIGINT for
the duration of the block, then puts the original handler back and calls it, so the
interrupt is raised as soon as the block is done. Elsewhere it does nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Optional, Tuple

try:  # the C functions: ``signal.signal`` wraps them in enum conversions that
    # cost ~10 us a call, more than the read this module protects
    import _signal as _sig  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other interpreters
    _sig = signal

__all__ = ["HeldInterrupt"]


class HeldInterrupt:
    """Context manager: a SIGINT inside the block is handled right after it."""

    __slots__ = ("_previous", "_caught")

    def __init__(self) -> None:
        self._previous: Any = None
        self._caught: Optional[Tuple[int, Optional[FrameType]]] = None

    def __enter__(self) -> HeldInterrupt:
        self._previous = None
        self._caught = None
        if threading.get_ident() != threading.main_thread().ident:
            return self
        previous = _sig.getsignal(signal.SIGINT)
        if not callable(previous):  # SIG_IGN / SIG_DFL: nothing runs Python code
            return self
        try:
            _sig.signal(signal.SIGINT, self._note)
        except ValueError:  # not the main interpreter: signals are not ours to hold
            return self
        self._previous = previous
        return self

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        self._caught = (signum, frame)

    def __exit__(self, *exc_info: object) -> None:
        previous = self._previous
        if previous is None:
            return
        self._previous = None
        _sig.signal(signal.SIGINT, previous)
        caught, self._caught = self._caught, None
        if caught is not None:
            previous(*caught)  # the default handler raises KeyboardInterrupt here
