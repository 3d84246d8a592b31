"""Fault switches of the local engine, read at the moment they matter.

Tests flip them between (or during) steps: ``engine.faults.answer_pings = False``.
Plain attributes are enough for single values; the one counter that several threads
decrement (``drop_after_frames``) is consumed under a lock.
"""

from __future__ import annotations

import threading
from typing import Optional, Set, Tuple

__all__ = ["Faults"]


class Faults:
    """What the engine does wrong on purpose.

    * ``answer_pings`` — ``False``: ``ping_session`` gets no ``pong``.
    * ``half_open`` — ``True``: nothing at all leaves the engine on WebSocket connections
      (no frames, no WS pong, no close frame, no handshake response for new
      connections) while TCP stays open; the engine still reads and records what
      clients send. A connection whose handshake response was swallowed stays mute
      for good, since its client never saw the upgrade.
    * ``ack_delay`` — seconds to wait before every ack (``session_created``,
      ``connect_session``, ``post_message(s)``); the connection's later frames wait too.
    * ``refuse_acks`` — request types (``create_session``, ``connect_session``,
      ``post_message``, ``post_messages``) answered with ``success: false``.
    * ``drop_after_frames`` — abort the connection (no close frame) after sending this
      many more frames, on whichever connection sends them; resets to ``None``.
    * ``reject_handshake`` — HTTP status to refuse WebSocket upgrades with (e.g. 503).
    * ``retry_after`` — seconds sent as ``Retry-After`` with those refusals (``None``:
      no header).
    * ``ignore`` — client frame types that are recorded but never answered (e.g.
      ``{"get_messages"}``: a request that goes unanswered while pings still are).
    * ``fail_requests`` — client frame types answered with an ``error`` frame naming
      them as ``request_type``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answer_pings: bool = True
        self.half_open: bool = False
        self.ack_delay: float = 0.0
        self.refuse_acks: Set[str] = set()
        self.drop_after_frames: Optional[int] = None
        self.reject_handshake: Optional[int] = None
        self.retry_after: Optional[float] = None
        self.ignore: Set[str] = set()
        self.fail_requests: Set[str] = set()

    def reset(self) -> None:
        """Back to a well-behaved engine."""
        with self._lock:
            self.answer_pings = True
            self.half_open = False
            self.ack_delay = 0.0
            self.refuse_acks = set()
            self.drop_after_frames = None
            self.reject_handshake = None
            self.retry_after = None
            self.ignore = set()
            self.fail_requests = set()

    def _take_frame(self) -> Tuple[bool, bool]:
        """Count one outgoing frame: (abort before sending it, abort right after it)."""
        with self._lock:
            left = self.drop_after_frames
            if left is None:
                return False, False
            if left <= 0:
                self.drop_after_frames = None
                return True, False
            left -= 1
            self.drop_after_frames = None if left == 0 else left
            return False, left == 0

    def __repr__(self) -> str:
        return (
            f"Faults(answer_pings={self.answer_pings!r}, half_open={self.half_open!r}, "
            f"ack_delay={self.ack_delay!r}, refuse_acks={sorted(self.refuse_acks)!r}, "
            f"drop_after_frames={self.drop_after_frames!r}, "
            f"reject_handshake={self.reject_handshake!r}, retry_after={self.retry_after!r}, "
            f"ignore={sorted(self.ignore)!r}, "
            f"fail_requests={sorted(self.fail_requests)!r})"
        )
