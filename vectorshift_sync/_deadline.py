"""One helper for "wait at most this long in total", instead of ``deadline - now`` everywhere.

A multi-step operation (dial, then wait for the acknowledgement; take a lock, then
wait for a reply) takes one :class:`Deadline` and asks it how long each step may
still wait. ``None`` as a timeout means "no limit", as everywhere in the library.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

__all__ = ["Deadline", "SLICE"]

#: Longest single wait on a caller's thread. Waits are cut into slices of at most
#: this length so that Ctrl-C gets through on every platform (on Windows an untimed
#: lock wait cannot be interrupted).
SLICE = 0.25


class Deadline:
    """A point in ``time.monotonic()`` time, or none (wait forever)."""

    __slots__ = ("when",)

    def __init__(self, timeout: Optional[float]) -> None:
        self.when: Optional[float] = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> Optional[float]:
        """Seconds left (never negative), or ``None`` without a limit."""
        when = self.when
        return None if when is None else max(0.0, when - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed (never without a limit)."""
        return self.when is not None and time.monotonic() >= self.when

    def slice(self, most: float = SLICE) -> float:
        """How long the next wait may last: at most ``most``, never past the deadline."""
        left = self.remaining()
        return most if left is None else min(most, left)

    def join(self, thread: threading.Thread) -> bool:
        """Wait for ``thread`` to end, until the deadline, in slices (Ctrl-C gets
        through); True once it has ended."""
        while thread.is_alive() and not self.expired:
            thread.join(self.slice())
        return not thread.is_alive()
