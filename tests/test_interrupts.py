"""HeldInterrupt: a SIGINT inside the block is handled right after it, never inside."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import List, Optional, Tuple

import pytest

from vectorshift_sync._interrupts import HeldInterrupt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_a_sigint_inside_the_block_is_raised_after_it() -> None:
    reached: List[str] = []
    with pytest.raises(KeyboardInterrupt):
        with HeldInterrupt():
            signal.raise_signal(signal.SIGINT)
            reached.append("rest of the block")
    assert reached == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_sigint_means_no_side_effect() -> None:
    with HeldInterrupt():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_custom_handler_is_called_once_with_the_signal_and_a_frame() -> None:
    calls: List[Tuple[int, Optional[FrameType]]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append((signum, frame)))
    try:
        with HeldInterrupt():
            signal.raise_signal(signal.SIGINT)
            assert calls == []
        assert len(calls) == 1
        assert calls[0][0] == signal.SIGINT and calls[0][1] is not None
        assert signal.getsignal(signal.SIGINT) is not None
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with HeldInterrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_error_in_the_block_still_restores_the_handler() -> None:
    with pytest.raises(ValueError):
        with HeldInterrupt():
            raise ValueError("boom")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_other_threads_leave_the_handler_alone() -> None:
    seen: List[object] = []

    def worker() -> None:
        with HeldInterrupt():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert seen == [signal.default_int_handler]
