"""Turns: one user message and everything the agent does until it goes idle.

The wire has no "turn finished" frame. Like the official SDK's one-shot run, a turn
ends when the agent's participant status goes ``Processing`` and then ``Idle``. When
an engine never reports ``Processing``, an ``Idle`` that follows the agent's own
completed message ends the turn as well. The answer is the agent's last completed
message, never the echo of the user's own post; when the agent only streamed deltas,
their concatenation is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .events import ParticipantStatus, SessionEvent, SessionEventType

__all__ = ["TurnResult", "TurnTracker"]


@dataclass
class TurnResult:
    """What one turn produced: the answer text and the turn's events, in order."""

    text: str
    session_id: str
    events: List[SessionEvent] = field(default_factory=list)

    @property
    def final_message(self) -> str:
        """The official one-shot run's name for :attr:`text`."""
        return self.text


class TurnTracker:
    """Follows a turn's events and says when it has ended and what the answer is."""

    def __init__(self) -> None:
        self.processing = False
        self.answered = False
        self.ended = False
        self.final: Optional[str] = None
        self._deltas: Dict[str, List[str]] = {}
        self._order: List[str] = []

    def feed(self, event: SessionEvent) -> bool:
        """Take the next event of the turn; return True when the turn has ended."""
        kind = event.type
        if kind is SessionEventType.MESSAGE_DELTA and event.is_from_agent:
            key = event.message_id or ""
            if key not in self._deltas:
                self._deltas[key] = []
                self._order.append(key)
            delta = event.delta
            if isinstance(delta, str):
                self._deltas[key].append(delta)
        elif kind is SessionEventType.MESSAGE_COMPLETE and event.is_from_agent:
            text = event.text
            if text is not None and (event.sender is not None or not self._is_echo(event)):
                self.final = text if isinstance(text, str) else str(text)
                self.answered = True
        elif kind is SessionEventType.PARTICIPANT_STATUS:
            status = event.participant_status
            if status is ParticipantStatus.PROCESSING:
                self.processing = True
            elif status is ParticipantStatus.IDLE and (self.processing or self.answered):
                self.ended = True
        return self.ended

    def _is_echo(self, event: SessionEvent) -> bool:
        # With no sender on the frame, a complete message before the agent started
        # processing is taken to be the echo of the user's post.
        return not self.processing

    @property
    def text(self) -> str:
        """The answer so far: the last completed agent message, else the deltas."""
        if self.final is not None:
            return self.final
        return "".join("".join(self._deltas[key]) for key in self._order)
