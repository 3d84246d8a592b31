"""One-shot runs: a functional agent over HTTP, a conversational one over a hidden session.

The conversational run keeps the official SDK's semantics (the turn ends at
participant ``Processing`` then ``Idle``; the hidden session is terminated unless it
was resumed or kept alive; an approval or re-authorisation raises
:class:`ConversationalRunActionRequiredError`) and avoids its defects (D13):

* a failed connect raises, like every other failure, instead of being returned;
* an action-required session is *disconnected*, not terminated, so it can really be
  resumed to answer the request the error names;
* the answer is the agent's own message, never the user's echo;
* a connection lost mid-turn gives ``status="error"`` with a reason, not ``None``;
* ``additional_instructions`` and ``skill`` are refused, not silently dropped.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Sequence

from ._turn_follow import TurnFollower, turn_stop
from .errors import (
    ArgumentTypeError,
    ConversationalRunActionRequiredError,
    InvalidArgumentError,
    SessionDisconnectedError,
)
from .events import SessionEvent, SessionEventType

if TYPE_CHECKING:
    from ._protocol import FileLike
    from .session import Session

__all__ = ["AgentRunResult", "ConversationalAgentRunResult", "run_conversational"]

logger = logging.getLogger(__name__)


@dataclass
class AgentRunResult:
    """The result of a functional agent's run."""

    outputs: Dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    status: str = "success"
    error: Optional[str] = None


@dataclass
class ConversationalAgentRunResult:
    """The result of a conversational agent's one-shot run."""

    final_message: str
    session_id: str
    status: Literal["complete", "error"]
    error: Optional[str] = None
    events: List[SessionEvent] = field(default_factory=list)


def run_conversational(
    session: Session,
    content: Any,
    *,
    files: Optional[Sequence[FileLike]],
    keep_alive: bool,
    resumed: bool,
    include_deltas: bool,
    timeout: Optional[float],
) -> ConversationalAgentRunResult:
    """Connect ``session``, run one turn, clean up, and report how it went."""
    if content is None or isinstance(content, (dict, list, tuple)) or not isinstance(
        content, (str, Path, bytes, bytearray, io.IOBase)
    ):
        raise ArgumentTypeError(
            "a conversational run takes the message to send (str, Path, bytes or a "
            f"file object), not {type(content).__name__}"
        )
    session.connect()
    events: List[SessionEvent] = []
    status: Literal["complete", "error"] = "error"
    error: Optional[str] = None
    action: Optional[SessionEvent] = None
    text = ""
    try:
        frame = session._encode_send(content, files, None, None)
        follower = TurnFollower.start(session, frame, timeout)
        try:
            while True:
                event = follower.next_event()
                if event is None:
                    status = "complete"
                    break
                if include_deltas or event.type is not SessionEventType.MESSAGE_DELTA:
                    events.append(event)
                stop = turn_stop(event, session.session_id or "")
                if isinstance(stop, ConversationalRunActionRequiredError):
                    action = event
                    break
                if stop is not None:
                    error = event.error or "session error"
                    break
        except SessionDisconnectedError as exc:
            error = error or exc.message
        finally:
            follower.close()
            text = follower.tracker.text
    finally:
        try:
            if action is not None or keep_alive or resumed:
                session.disconnect()
            else:
                session.terminate()
        except Exception:  # cleanup must not hide the run's own outcome
            logger.warning("closing the run's session failed", exc_info=True)
    session_id = session.session_id or ""
    if action is not None:
        raise ConversationalRunActionRequiredError(action, session_id)
    return ConversationalAgentRunResult(text, session_id, status, error, events)


def check_run_options(
    additional_instructions: Optional[str], skill: Any, files: Any, session_id: Any
) -> None:
    """Refuse the options a conversational run cannot honour (the SDK drops them)."""
    if additional_instructions or skill is not None:
        raise InvalidArgumentError(
            "additional_instructions and skill apply to functional runs only; a "
            "conversational agent takes them as part of the message"
        )
    if session_id is not None and not isinstance(session_id, str):
        raise ArgumentTypeError(f"session_id must be a str, not {type(session_id).__name__}")
