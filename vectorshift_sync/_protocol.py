"""The VectorShift session protocol as pure functions: frames in, events out.

Nothing here touches a socket, a thread or the clock. Outbound, ``encode_*`` turn a
command into the exact JSON text the official SDK sends (same keys, same order, same
``json.dumps`` defaults). Inbound, :func:`parse_frame` turns one text frame into a
:class:`Parsed` result: an event for subscribers, a reply for a waiting request, both,
or neither (:func:`read_frame`, the I/O thread's form, gives a frame that means only
an event as the bare :class:`SessionEvent`). A frame that cannot be read raises
:class:`FrameError`, which the caller logs and skips; nothing in a frame can raise
anything else.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Union,
)

import msgspec

from .errors import ArgumentTypeError, InvalidArgumentError
from .events import SessionEvent, SessionEventType, SessionMessage

__all__ = [
    "Content",
    "FileLike",
    "UserSessionMessage",
    "SendManyItem",
    "FrameError",
    "UnknownFrameError",
    "Reply",
    "Parsed",
    "encode_content",
    "encode_create_session",
    "encode_connect_session",
    "encode_post_message",
    "encode_post_messages",
    "encode_send",
    "encode_send_many",
    "encode_approval",
    "encode_get_messages",
    "encode_ping",
    "encode_disconnect",
    "encode_terminate",
    "parse_frame",
    "read_frame",
    "EventOrParsed",
    "OVERFLOW_ERROR",
    "DEFAULT_DENY_REASON",
]

FileLike = Union[Path, bytes, bytearray, io.IOBase]
Content = Union[str, Path, bytes, bytearray, io.IOBase]

OVERFLOW_ERROR = "subscriber queue overflow"
DEFAULT_DENY_REASON = "User denied tool call."


@dataclass
class UserSessionMessage:
    """An authored outbound message for ``Session.send_many()``.

    Each field mirrors a keyword of ``Session.send()``. ``references`` is accepted for
    parity with the official SDK, which does not send it either.
    """

    content: Optional[Content] = None
    files: Optional[Sequence[FileLike]] = None
    mime_type: Optional[str] = None
    filename: Optional[str] = None
    references: Optional[Mapping[str, Any]] = None


SendManyItem = Union[str, Path, bytes, bytearray, io.IOBase, UserSessionMessage, SessionMessage]


# --- Outbound -----------------------------------------------------------------


def _dumps(frame: Mapping[str, Any]) -> str:
    # Default separators and ensure_ascii, byte-for-byte what the official SDK sends.
    return json.dumps(frame)


def _file_value(data: bytes, name: str, mime_type: Optional[str]) -> Dict[str, Any]:
    if mime_type is None:
        mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return {
        "type_string": "file",
        "value": {
            "raw_bytes": base64.b64encode(data).decode("ascii"),
            "metadata": {"name": name, "mime_type": mime_type},
        },
    }


def encode_content(
    content: Any, *, mime_type: Optional[str] = None, filename: Optional[str] = None
) -> Any:
    """Encode one piece of message content into its wire value.

    A plain string is sent as is (or typed by ``mime_type``); a ``Path``, bytes or a
    binary/text file object becomes an inline base64 file. Unlike the official SDK,
    a file object's name is reduced to its base name (a full local path never leaves
    the machine), and anything else is refused with :class:`ArgumentTypeError`
    instead of being sent as its Python ``repr``.
    """
    if isinstance(content, str):
        if mime_type is None:
            return content
        return {"type_string": mime_type or "string", "value": content}
    if isinstance(content, Path):
        try:
            data = content.read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read file {str(content)!r}: {exc.strerror or exc}; "
                "check the path exists and is readable"
            ) from exc
        if mime_type is None:
            mime_type = mimetypes.guess_type(content.name)[0]
        return _file_value(data, filename or content.name, mime_type)
    if isinstance(content, (bytes, bytearray)):
        return _file_value(bytes(content), filename or "file", mime_type)
    if isinstance(content, io.IOBase):
        raw = content.read()
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, (bytes, bytearray)):
            raise ArgumentTypeError(
                f"file object {type(content).__name__} returned "
                f"{type(raw).__name__} from read(); expected bytes or str"
            )
        name = filename
        if not name:
            # Like Path and bytes, "" means "no filename"; a name that has no base
            # part ("dir/") must not produce a nameless file either.
            attr = getattr(content, "name", None)
            name = (os.path.basename(attr) if isinstance(attr, str) else "") or "file"
        return _file_value(bytes(raw), name, mime_type)
    raise ArgumentTypeError(
        f"cannot send a {type(content).__name__}; content must be str, pathlib.Path, "
        "bytes or a file object (json.dumps() structured data first)"
    )


def _encode_items(messages: Sequence[SendManyItem]) -> List[Any]:
    items: List[Any] = []
    for item in messages:
        if isinstance(item, UserSessionMessage):
            if item.content is not None:
                items.append(
                    encode_content(
                        item.content, mime_type=item.mime_type, filename=item.filename
                    )
                )
            items.extend(encode_content(f) for f in _check_files(item.files))
        elif isinstance(item, SessionMessage):
            if item.text:
                items.append(item.text)
        else:
            items.append(encode_content(item))
    return items


def _check_files(files: Optional[Sequence[FileLike]]) -> Sequence[FileLike]:
    if files is None:
        return ()
    if isinstance(files, (str, bytes, bytearray, Path, io.IOBase)) or not isinstance(
        files, Sequence
    ):
        raise ArgumentTypeError(
            f"files must be a list of attachments, not {type(files).__name__}"
        )
    return files


def encode_create_session(object_type: str, object_id: str) -> str:
    """Ask the engine for a new session owned by an agent or chatbot."""
    return _dumps(
        {"type": "create_session", "object_type": object_type, "object_id": object_id}
    )


def encode_connect_session(session_id: str) -> str:
    """Attach this connection to an existing session."""
    return _dumps({"type": "connect_session", "session_id": session_id})


def encode_post_message(
    session_id: str, content: Any, *, parent_message_id: Optional[str] = None
) -> str:
    """One user post; ``content`` is already encoded."""
    frame: Dict[str, Any] = {
        "type": "post_message",
        "session_id": session_id,
        "content": content,
    }
    if parent_message_id:
        frame["parent_message_id"] = parent_message_id
    return _dumps(frame)


def encode_post_messages(session_id: str, messages: List[Any]) -> str:
    """Several posts answered as one LLM turn; items are already encoded."""
    return _dumps({"type": "post_messages", "session_id": session_id, "messages": messages})


def encode_send(
    session_id: str,
    content: Content,
    *,
    files: Optional[Sequence[FileLike]] = None,
    mime_type: Optional[str] = None,
    filename: Optional[str] = None,
) -> str:
    """The frame for ``Session.send()``: a post_message, or post_messages with files."""
    attachments = _check_files(files)
    primary = encode_content(content, mime_type=mime_type, filename=filename)
    if not attachments:
        return encode_post_message(session_id, primary)
    return encode_post_messages(
        session_id, [primary] + [encode_content(f) for f in attachments]
    )


def encode_send_many(session_id: str, messages: Sequence[SendManyItem]) -> str:
    """The frame for ``Session.send_many()``."""
    if isinstance(messages, (str, bytes, bytearray)) or not isinstance(messages, Sequence):
        raise ArgumentTypeError(
            f"messages must be a list of items, not {type(messages).__name__}"
        )
    return encode_post_messages(session_id, _encode_items(messages))


def encode_approval(
    session_id: str,
    parent_message_id: Optional[str],
    *,
    approved: bool,
    confirm: Optional[Mapping[str, Any]] = None,
    deny_reason: Optional[str] = None,
) -> str:
    """The reply to an approval request: a post_message of a response_message."""
    if approved:
        decision: Dict[str, Any] = {"confirm": dict(confirm) if confirm else {}}
    else:
        decision = {"deny": deny_reason or DEFAULT_DENY_REASON}
    content = {"type_string": "response_message", "value": {"tool_call_approval": decision}}
    return encode_post_message(session_id, content, parent_message_id=parent_message_id)


def encode_get_messages(session_id: str) -> str:
    """Ask for the session's history."""
    return _dumps({"type": "get_messages", "session_id": session_id})


def encode_ping(session_id: str) -> str:
    """The application-level keep-alive."""
    return _dumps({"type": "ping_session", "session_id": session_id})


def encode_disconnect(session_id: str) -> str:
    """Detach this client; the session lives on."""
    return _dumps({"type": "disconnect_session", "session_id": session_id})


def encode_terminate(session_id: str) -> str:
    """Destroy the session on the engine."""
    return _dumps({"type": "terminate_session", "session_id": session_id})


# --- Inbound ------------------------------------------------------------------


class FrameError(ValueError):
    """An inbound frame could not be read (not JSON, not an object, wrong shapes)."""


class UnknownFrameError(FrameError):
    """A well-formed frame of a type this client does not know; ``kind`` names it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown frame type {kind!r}")


@dataclass(frozen=True)
class Reply:
    """The answer to one of our requests, routed to its waiter rather than listeners.

    ``request_type`` is the request it answers (``create_session``,
    ``connect_session``, ``get_messages``), or ``None`` for an error frame that names
    no request.
    """

    request_type: Optional[str]
    ok: bool
    session_id: str = ""
    error: Optional[str] = None
    messages: List[SessionMessage] = field(default_factory=list)


class Parsed(NamedTuple):
    """What one frame means: an event for listeners and/or a reply for a waiter.

    A named tuple rather than a frozen dataclass: one object per frame instead of an
    object and its dict. (:func:`read_frame` gives a frame that is only an event as
    the bare event, without this wrapper.)
    """

    event: Optional[SessionEvent] = None
    reply: Optional[Reply] = None


_NOTHING = Parsed()
_ACK_TYPES = ("connect_session", "post_message", "post_messages")
_REPLY_REQUESTS = ("create_session", "connect_session", "get_messages")


def _obj(value: Any, what: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FrameError(f"{what} is a {type(value).__name__}, expected an object")
    return value


def _sid(frame: Mapping[str, Any], default: str) -> str:
    value = frame.get("session_id")
    return value if isinstance(value, str) and value else default


def _error_text(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except RecursionError:
        # json.loads accepts nesting a few levels deeper than json.dumps can write
        # back from inside parse_frame; such a value is a malformed frame, not a crash.
        raise FrameError("error value is nested too deeply") from None


_decode = msgspec.json.Decoder().decode


def _loads(text: Union[str, bytes, bytearray]) -> Any:
    """``json.loads(text)``: the same value and the same errors, at C speed.

    msgspec reads the frame straight from the bytes websockets hands over. It reads
    strict JSON only (RFC 8259), a subset of what ``json.loads`` takes, and for that
    subset gives the same values (integers past 64 bits included, unlike orjson, which
    turns them into floats). What it refuses (``NaN``, ``Infinity``, numbers out of
    a float's range, lone surrogates, other encodings, malformed or very deeply
    nested text) goes to ``json.loads``, so those rare frames are read, or refused,
    exactly as before. ``tests/test_fast_paths.py`` holds the two to the same result.
    """
    try:
        return _decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # msgspec 0.20 (the last for Python 3.9) raises UnicodeDecodeError for bad
        # UTF-8 inside a string; later versions a DecodeError.
        return json.loads(text)


#: What :func:`read_frame` makes of a frame: the event alone, when that is all the
#: frame means, or the whole :class:`Parsed`.
EventOrParsed = Union[SessionEvent, Parsed]


def parse_frame(text: Union[str, bytes, bytearray], session_id: str = "") -> Parsed:
    """:func:`read_frame`, always as a :class:`Parsed`."""
    meaning = read_frame(text, session_id)
    return meaning if isinstance(meaning, Parsed) else Parsed(meaning)


def read_frame(text: Union[str, bytes, bytearray], session_id: str = "") -> EventOrParsed:
    """Read one inbound text frame: a frame that means only an event (nine in ten are
    deltas) comes back as the bare :class:`SessionEvent`, anything else as
    :class:`Parsed`. The I/O thread's form: one object fewer per delta means less
    allocation, and fewer garbage-collector passes while events wait in queues.

    ``session_id`` is the session's own id, used when a frame does not carry one (an
    event's ``session_id`` is therefore always a string). Raises :class:`FrameError`
    for a frame that is not a JSON object or whose parts have the wrong shapes.
    """
    try:
        frame = _loads(text)
    except RecursionError:
        # "[[[[..." deeper than the recursion limit: a hostile or broken frame must
        # be skipped like any other, not kill the reader with a RecursionError.
        raise FrameError("frame is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise FrameError(f"frame is a JSON {type(frame).__name__}, expected an object")
    kind = frame.get("type")
    if kind == "message_delta":  # nine frames in ten: skip the checks that cannot apply
        return _on_delta(frame, _sid(frame, session_id))
    if not isinstance(kind, str):
        raise FrameError("frame has no string 'type'")
    sid = _sid(frame, session_id)

    if kind in _ACK_TYPES and frame.get("success") is False:
        error = _error_text(frame.get("error"), f"{kind} failed")
        event = SessionEvent(
            SessionEventType.ERROR, sid, data={"error": error, "request_type": kind}
        )
        if kind != "connect_session":
            return event  # a refused post has no waiter: listeners hear of it
        return Parsed(event, Reply(kind, False, sid, error))

    handler = _HANDLERS.get(kind)
    if handler is None:
        if kind in ("disconnect_session", "terminate_session"):
            return _NOTHING
        raise UnknownFrameError(kind)
    return handler(frame, sid)


def _on_session_created(frame: Dict[str, Any], sid: str) -> Parsed:
    new_id = frame.get("session_id")
    if frame.get("success") is False or not isinstance(new_id, str) or not new_id:
        error = _error_text(frame.get("error"), "session_created carried no session_id")
        return Parsed(
            SessionEvent(
                SessionEventType.ERROR, sid, data={"error": error, "request_type": "create_session"}
            ),
            Reply("create_session", False, sid, error),
        )
    return Parsed(
        SessionEvent(SessionEventType.SESSION_CREATED, new_id, data=frame),
        Reply("create_session", True, new_id),
    )


def _on_connect_session(frame: Dict[str, Any], sid: str) -> Parsed:
    return Parsed(
        SessionEvent(SessionEventType.SESSION_CONNECTED, sid, data=frame),
        Reply("connect_session", True, sid),
    )


_Handler = Callable[[Dict[str, Any], str], EventOrParsed]


def _whole(event_type: SessionEventType) -> _Handler:
    def handle(frame: Dict[str, Any], sid: str) -> SessionEvent:
        return SessionEvent(event_type, sid, None, frame)

    return handle


def _on_delta(frame: Dict[str, Any], sid: str) -> SessionEvent:
    message_id = frame.get("message_id")
    return SessionEvent(
        _DELTA,
        sid,
        message_id if isinstance(message_id, str) else None,
        {"delta": frame.get("value"), "index": frame.get("index")},
    )


_DELTA = SessionEventType.MESSAGE_DELTA


def _on_get_messages(frame: Dict[str, Any], sid: str) -> Parsed:
    if frame.get("success") is False:
        error = _error_text(frame.get("error"), "get_messages failed")
        return Parsed(reply=Reply("get_messages", False, sid, error))
    raw = frame.get("messages", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        error = f"history is a {type(raw).__name__}, expected a list"
        return Parsed(reply=Reply("get_messages", False, sid, error))
    messages = [SessionMessage.from_dict(m) for m in raw if isinstance(m, dict)]
    return Parsed(reply=Reply("get_messages", True, sid, messages=messages))


def _on_participant_status(frame: Dict[str, Any], sid: str) -> SessionEvent:
    data = _obj(frame.get("message"), "participant_status.message")
    return SessionEvent(SessionEventType.PARTICIPANT_STATUS, sid, None, data)


def _on_error(frame: Dict[str, Any], sid: str) -> EventOrParsed:
    request_type = frame.get("request_type")
    request_type = request_type if isinstance(request_type, str) else None
    error = _error_text(frame.get("error"), "Unknown error")
    event = SessionEvent(
        SessionEventType.ERROR, sid, data={"error": error, "request_type": request_type}
    )
    if request_type is None or request_type in _REPLY_REQUESTS:
        return Parsed(event, Reply(request_type, False, sid, error))
    return event


def _on_notification(frame: Dict[str, Any], sid: str) -> SessionEvent:
    message = _obj(frame.get("message"), "message_notification.message")
    content = _obj(message.get("content"), "message.content")
    message_id = message.get("id")
    message_id = message_id if isinstance(message_id, str) else None
    event_type, data = _content_event(content)
    sender = message.get("sender")
    if isinstance(sender, dict) and sender:
        data["sender"] = sender
    return SessionEvent(event_type, sid, message_id, data)


_TOOL_DONE = frozenset({"completed", "complete", "success", "succeeded", "done", "failed", "error"})


def _content_event(content: Dict[str, Any]) -> tuple[SessionEventType, Dict[str, Any]]:
    kind = content.get("type")
    if kind == "data_type_message":
        complete = content.get("status") == "Complete"
        return (
            SessionEventType.MESSAGE_COMPLETE if complete else SessionEventType.MESSAGE_STREAMING,
            {"text": content.get("value"), "status": "complete" if complete else "streaming"},
        )
    if kind == "error_message":
        return SessionEventType.ERROR, {"error": _error_text(content.get("error"), "Unknown error")}
    if kind == "tool_call":
        data = dict(content)
        data.pop("type", None)
        data.setdefault("tool_name", None)
        data.setdefault("tool_id", None)
        data.setdefault("status", None)
        status = data["status"]
        # The official parser folds results into TOOL_CALL and drops them; a tool_call
        # that carries a result or a finished status is the TOOL_RESULT the docs promise.
        finished = isinstance(status, str) and status.lower() in _TOOL_DONE
        if "result" in content or finished:
            return SessionEventType.TOOL_RESULT, data
        return SessionEventType.TOOL_CALL, data
    if kind == "thinking":
        return SessionEventType.THINKING, {
            "content": content.get("content"),
            "summary": content.get("summary"),
        }
    if kind == "reasoning":
        return SessionEventType.THINKING, {"text": content.get("value") or content.get("content")}
    if kind == "tool_call_approval":
        return SessionEventType.APPROVAL_REQUEST, dict(content)
    if kind == "reauthorization_request":
        return SessionEventType.REAUTH_REQUEST, dict(content)
    if kind == "search_message":
        return SessionEventType.SEARCH_RESULT, dict(content)
    if kind == "agent_task":
        return SessionEventType.MESSAGE_STREAMING, {
            "text": content.get("value") or content.get("content")
        }
    return SessionEventType.MESSAGE_STREAMING, dict(content)


_HANDLERS: Dict[str, _Handler] = {
    "session_created": _on_session_created,
    "connect_session": _on_connect_session,
    "message_delta": _on_delta,
    "message_notification": _on_notification,
    "post_message": _whole(SessionEventType.MESSAGE_POSTED),
    "post_messages": _whole(SessionEventType.MESSAGES_POSTED),
    "get_messages": _on_get_messages,
    "pong": _whole(SessionEventType.PONG),
    "participant_status": _on_participant_status,
    "error": _on_error,
}
