"""The engine's side of the wire protocol, as pure functions: ids, frame builders, and
the validation of client frames.

No sockets and no threads here: strings and dicts in, dicts out, so every shape can be
read in one place and checked against PROTOCOL.md §3 (client frames) and §4.5 (what a
server sends). Server frames put ``type`` first and ``session_id`` second, as the
examples in §4.5 do.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

__all__ = [
    "USER_SENDER",
    "CLIENT_TYPES",
    "FrameError",
    "UploadedFile",
    "new_id",
    "dumps",
    "parse_client_frame",
    "content_text",
    "content_files",
    "is_approval_reply",
    "session_created",
    "ack",
    "error_frame",
    "pong",
    "messages_frame",
    "status_frame",
    "delta_frame",
    "notification_frame",
    "history_item",
    "with_session_id",
]

#: The ``message.sender`` of the user's own messages (echoes and history items).
USER_SENDER: Dict[str, Any] = {"user_id": "local-user"}

_NEED_SESSION = frozenset(
    {
        "connect_session",
        "post_message",
        "post_messages",
        "get_messages",
        "ping_session",
        "disconnect_session",
        "terminate_session",
    }
)

#: Every frame type a client may send (§3.2).
CLIENT_TYPES = _NEED_SESSION | {"create_session"}

_counter_lock = threading.Lock()
_counter = int.from_bytes(os.urandom(3), "big")
_process_part = os.urandom(5).hex()


def new_id() -> str:
    """A fresh 24-hex id shaped like a Mongo ObjectId (time, random, counter)."""
    global _counter
    with _counter_lock:
        _counter = (_counter + 1) % 0x1000000
        count = _counter
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_process_part}{count:06x}"


def dumps(frame: Mapping[str, Any]) -> str:
    """Serialise a frame the way the official SDK does (``json.dumps`` defaults)."""
    return json.dumps(frame)


class FrameError(ValueError):
    """A client frame the engine cannot act on; becomes an ``error`` frame."""

    def __init__(
        self,
        message: str,
        request_type: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_type = request_type
        self.session_id = session_id


@dataclass(frozen=True)
class UploadedFile:
    """A file that arrived base64-inline in a ``post_message(s)`` content item."""

    name: str
    mime_type: str
    data: bytes


def parse_client_frame(message: Union[str, bytes]) -> Dict[str, Any]:
    """Validate one client message and return it as a dict.

    Raises :class:`FrameError` for binary or non-JSON messages, non-objects, a missing
    or unknown ``type``, a missing ``session_id``, and type-specific missing fields.
    """
    if isinstance(message, bytes):
        raise FrameError("binary frames are not supported; send JSON text")
    try:
        frame = json.loads(message)
    except ValueError:
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("frame must be a JSON object")
    kind = frame.get("type")
    if not isinstance(kind, str) or not kind:
        raise FrameError("frame has no type")
    raw_sid = frame.get("session_id")
    sid = raw_sid if isinstance(raw_sid, str) and raw_sid else None
    if kind not in CLIENT_TYPES:
        raise FrameError(f"unknown message type: {kind}", kind, sid)
    if kind in _NEED_SESSION and sid is None:
        raise FrameError("session_id is required", kind)
    if kind == "create_session":
        if frame.get("object_type") not in ("agent", "chatbot"):
            raise FrameError("object_type must be 'agent' or 'chatbot'", kind)
        object_id = frame.get("object_id")
        if not isinstance(object_id, str) or not object_id:
            raise FrameError("object_id is required", kind)
    elif kind == "post_message" and "content" not in frame:
        raise FrameError("content is required", kind, sid)
    elif kind == "post_messages" and not isinstance(frame.get("messages"), list):
        raise FrameError("messages must be a list", kind, sid)
    return frame


def is_approval_reply(content: Any) -> bool:
    """Whether a ``post_message`` content is an approval answer (§3.6)."""
    return isinstance(content, dict) and content.get("type_string") == "response_message"


def content_text(content: Any) -> str:
    """The text of one content item: a bare string, or a typed string's ``value``."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and content.get("type_string") not in ("file", "response_message"):
        value = content.get("value")
        if isinstance(value, str):
            return value
    return ""


def content_files(content: Any, request_type: str, session_id: str) -> List[UploadedFile]:
    """The decoded file of one content item (§3.3), as a list of zero or one."""
    if not isinstance(content, dict) or content.get("type_string") != "file":
        return []
    value = content.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("raw_bytes"), str):
        raise FrameError("file content needs value.raw_bytes", request_type, session_id)
    metadata = value.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    try:
        data = base64.b64decode(value["raw_bytes"], validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("file raw_bytes is not valid base64", request_type, session_id) from None
    return [
        UploadedFile(
            name=str(meta.get("name") or "file"),
            mime_type=str(meta.get("mime_type") or "application/octet-stream"),
            data=data,
        )
    ]


def with_session_id(frame: Mapping[str, Any], session_id: str) -> Dict[str, Any]:
    """A copy of ``frame`` with ``session_id`` filled in (right after ``type``) if absent."""
    if "session_id" in frame:
        return dict(frame)
    out: Dict[str, Any] = {}
    if "type" in frame:
        out["type"] = frame["type"]
    out["session_id"] = session_id
    for key, value in frame.items():
        out.setdefault(key, value)
    return out


def session_created(session_id: str) -> Dict[str, Any]:
    return {"type": "session_created", "session_id": session_id}


def ack(kind: str, session_id: Optional[str], error: Optional[str] = None) -> Dict[str, Any]:
    """An acknowledgement (``connect_session``, ``post_message``, …): success or not."""
    frame: Dict[str, Any] = {"type": kind}
    if session_id is not None:
        frame["session_id"] = session_id
    frame["success"] = error is None
    if error is not None:
        frame["error"] = error
    return frame


def error_frame(
    error: str, request_type: Optional[str], session_id: Optional[str] = None
) -> Dict[str, Any]:
    frame: Dict[str, Any] = {"type": "error"}
    if session_id is not None:
        frame["session_id"] = session_id
    frame["error"] = error
    frame["request_type"] = request_type
    return frame


def pong(session_id: str) -> Dict[str, Any]:
    return {"type": "pong", "session_id": session_id}


def messages_frame(session_id: str, items: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"type": "get_messages", "session_id": session_id, "messages": items}


def status_frame(session_id: str, status: str) -> Dict[str, Any]:
    return {"type": "participant_status", "session_id": session_id, "message": {"status": status}}


def delta_frame(session_id: str, message_id: str, index: int, value: str) -> Dict[str, Any]:
    return {
        "type": "message_delta",
        "session_id": session_id,
        "message_id": message_id,
        "index": index,
        "value": value,
    }


def notification_frame(
    session_id: str, message_id: str, sender: Mapping[str, Any], content: Mapping[str, Any]
) -> Dict[str, Any]:
    return {
        "type": "message_notification",
        "session_id": session_id,
        "message": {"id": message_id, "sender": dict(sender), "content": dict(content)},
    }


def history_item(session_id: str, message_id: str, sender: Any, content: Any) -> Dict[str, Any]:
    """One ``get_messages`` item, the shape ``SessionMessage.from_dict`` reads (§4.5)."""
    return {"id": message_id, "session_id": session_id, "sender": sender, "content": content}
