"""Events and history messages of a real-time session.

Names, fields, enum values and helper properties match ``vectorshift.events`` of the
official SDK, so code written against one reads the same against the other. The enums
are ``str`` enums (Python 3.9 has no ``StrEnum``): members compare equal to their
values and ``str()`` gives the value.

Two additions, both read-only: ``SessionEvent.sender`` (who wrote the message an event
came from, so a user's echoed post is never mistaken for the agent's reply) and
``SessionEvent.is_from_agent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

__all__ = [
    "SessionEventType",
    "SessionMessageStatus",
    "SessionMessageRole",
    "ParticipantStatus",
    "MessageSender",
    "SessionMessage",
    "SessionEvent",
]


class _StrEnum(str, Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` give the bare value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class ParticipantStatus(_StrEnum):
    """What a participant of the session is doing."""

    IDLE = "Idle"
    PROCESSING = "Processing"
    OFFLINE = "Offline"
    CONNECTED = "Connected"
    TYPING = "Typing"
    AWAITING_APPROVAL = "AwaitingApproval"


class SessionMessageRole(_StrEnum):
    """Who wrote a history message."""

    USER = "user"
    OBJECT = "object"
    UNKNOWN = "unknown"


class SessionEventType(_StrEnum):
    """Every kind of event ``Session.listen()`` can yield."""

    MESSAGE_DELTA = "message_delta"
    MESSAGE_COMPLETE = "message_complete"
    MESSAGE_STREAMING = "message_streaming"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    THINKING = "thinking"
    SEARCH_RESULT = "search_result"
    APPROVAL_REQUEST = "approval_request"
    REAUTH_REQUEST = "reauth_request"
    ERROR = "error"
    PARTICIPANT_STATUS = "participant_status"
    SESSION_CREATED = "session_created"
    SESSION_CONNECTED = "session_connected"
    MESSAGE_POSTED = "message_posted"
    MESSAGES_POSTED = "messages_posted"
    PONG = "pong"


class SessionMessageStatus(_StrEnum):
    """Delivery state of a message."""

    STREAMING = "streaming"
    COMPLETE = "complete"
    ERROR = "error"


@dataclass(frozen=True)
class MessageSender:
    """Who sent a session message: a user, or an object (agent/chatbot)."""

    role: SessionMessageRole
    user_id: Optional[str] = None
    object_id: Optional[str] = None
    object_type: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> MessageSender:
        """Build a sender from a wire ``sender`` object (``None`` or ``{}`` is UNKNOWN).

        A ``user_id`` key, even with a null value, marks a user; otherwise an
        ``object_id`` key marks an object.
        """
        if not isinstance(data, dict) or not data:
            return cls(role=SessionMessageRole.UNKNOWN)
        if "user_id" in data:
            return cls(role=SessionMessageRole.USER, user_id=_opt_str(data["user_id"]))
        if "object_id" in data:
            return cls(
                role=SessionMessageRole.OBJECT,
                object_id=_opt_str(data["object_id"]),
                object_type=_opt_str(data.get("object_type")),
            )
        return cls(role=SessionMessageRole.UNKNOWN)


@dataclass(frozen=True, repr=False)
class SessionMessage:
    """A message from session history, as returned by ``Session.get_messages()``."""

    id: str
    session_id: str
    sender: MessageSender
    content_type: str = ""
    text: Optional[str] = None
    status: Optional[SessionMessageStatus] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SessionMessage:
        """Build a history message from its wire form.

        Lenient where the official parser crashes: a null or non-object ``content`` and
        a non-string status are read as absent rather than raising.
        """
        content = data.get("content")
        if not isinstance(content, dict):
            content = {}
        content_type = content.get("type")
        content_type = content_type if isinstance(content_type, str) else ""
        text: Optional[str] = None
        status: Optional[SessionMessageStatus] = None
        if content_type == "data_type_message":
            value = content.get("value")
            text = str(value) if value is not None else None
            raw_status = content.get("status")
            if isinstance(raw_status, str) and raw_status:
                try:
                    status = SessionMessageStatus(raw_status.lower())
                except ValueError:
                    status = None
        elif content_type == "error_message":
            text = _opt_str(content.get("error"))
        elif content_type in ("thinking", "tool_call", "agent_task"):
            text = _opt_str(content.get("content") or content.get("tool_name"))
        return cls(
            id=str(data.get("id") or ""),
            session_id=str(data.get("session_id") or ""),
            sender=MessageSender.from_dict(data.get("sender")),
            content_type=content_type,
            text=text,
            status=status,
            raw=data,
        )

    @property
    def is_user(self) -> bool:
        """True if a user wrote this message."""
        return self.sender.role == SessionMessageRole.USER

    @property
    def is_agent(self) -> bool:
        """True if the agent or chatbot wrote this message."""
        return self.sender.role == SessionMessageRole.OBJECT

    def __repr__(self) -> str:
        role = "user" if self.is_user else "agent" if self.is_agent else "unknown"
        preview = self.text[:80] if self.text else self.text
        status = self.status.value if self.status else None
        return f"SessionMessage(role={role!r}, text={preview!r}, status={status!r})"

    def __hash__(self) -> int:
        return hash((self.id, self.session_id))


@dataclass(frozen=True)
class SessionEvent:
    """One event of a live session, as yielded by ``Session.listen()``.

    ``data`` holds the frame's payload; the properties below read the common parts
    and return ``None`` when an event is not of the kind they describe.
    """

    type: SessionEventType
    session_id: str
    message_id: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        # ``data`` is a dict, so the generated hash would raise; equal events share
        # these three fields, which keeps hash consistent with ==.
        return hash((self.type, self.session_id, self.message_id))

    @property
    def delta(self) -> Optional[str]:
        """The streamed text chunk of a MESSAGE_DELTA."""
        if self.type == SessionEventType.MESSAGE_DELTA:
            return self.data.get("delta")
        return None

    @property
    def text(self) -> Optional[str]:
        """The full text of a MESSAGE_COMPLETE."""
        if self.type == SessionEventType.MESSAGE_COMPLETE:
            return self.data.get("text")
        return None

    @property
    def tool_name(self) -> Optional[str]:
        """The tool a TOOL_CALL or TOOL_RESULT is about."""
        if self.type in (SessionEventType.TOOL_CALL, SessionEventType.TOOL_RESULT):
            return self.data.get("tool_name")
        return None

    @property
    def status(self) -> Optional[SessionMessageStatus]:
        """The message status in ``data["status"]`` if it is a known one (any type)."""
        raw = self.data.get("status")
        if raw and isinstance(raw, str):
            try:
                return SessionMessageStatus(raw)
            except ValueError:
                return None
        return None

    @property
    def is_complete(self) -> bool:
        """True for MESSAGE_COMPLETE: a message (user echo or reply) finished."""
        return self.type == SessionEventType.MESSAGE_COMPLETE

    @property
    def participant_status(self) -> Optional[ParticipantStatus]:
        """The participant's status of a PARTICIPANT_STATUS event."""
        if self.type == SessionEventType.PARTICIPANT_STATUS:
            raw = self.data.get("status")
            if isinstance(raw, str):
                try:
                    return ParticipantStatus(raw)
                except ValueError:
                    return None
        return None

    @property
    def is_turn_end(self) -> bool:
        """True when a participant went Idle: the end of a turn."""
        return self.participant_status == ParticipantStatus.IDLE

    @property
    def requires_action(self) -> bool:
        """True when the agent waits for the user (approval or re-authorisation)."""
        return (
            self.type
            in (SessionEventType.APPROVAL_REQUEST, SessionEventType.REAUTH_REQUEST)
            or self.participant_status == ParticipantStatus.AWAITING_APPROVAL
        )

    @property
    def error(self) -> Optional[str]:
        """The error text of an ERROR event."""
        if self.type == SessionEventType.ERROR:
            return self.data.get("error")
        return None

    @property
    def sender(self) -> Optional[MessageSender]:
        """Who wrote the message this event came from, when the frame said so."""
        raw = self.data.get("sender")
        if isinstance(raw, dict) and raw:
            return MessageSender.from_dict(raw)
        return None

    @property
    def is_from_agent(self) -> bool:
        """False only when the frame names a user as the sender (an echo of a post)."""
        sender = self.sender
        return sender is None or sender.role != SessionMessageRole.USER


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)
