"""The event model (vectorshift_sync.events): enums, helper properties, history messages.

Names and values are those of the official ``vectorshift.events`` (PROTOCOL.md §5); the
enums are ``str`` enums so that they also work on Python 3.9, where ``StrEnum`` is missing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional

import pytest

from vectorshift_sync.events import (
    MessageSender,
    ParticipantStatus,
    SessionEvent,
    SessionEventType,
    SessionMessage,
    SessionMessageRole,
    SessionMessageStatus,
)

T = SessionEventType


# --- enums (§5.4) ---------------------------------------------------------------------


def test_session_event_type_has_exactly_the_sixteen_official_members() -> None:
    assert {m.name: m.value for m in SessionEventType} == {
        "MESSAGE_DELTA": "message_delta",
        "MESSAGE_COMPLETE": "message_complete",
        "MESSAGE_STREAMING": "message_streaming",
        "TOOL_CALL": "tool_call",
        "TOOL_RESULT": "tool_result",
        "THINKING": "thinking",
        "SEARCH_RESULT": "search_result",
        "APPROVAL_REQUEST": "approval_request",
        "REAUTH_REQUEST": "reauth_request",
        "ERROR": "error",
        "PARTICIPANT_STATUS": "participant_status",
        "SESSION_CREATED": "session_created",
        "SESSION_CONNECTED": "session_connected",
        "MESSAGE_POSTED": "message_posted",
        "MESSAGES_POSTED": "messages_posted",
        "PONG": "pong",
    }
    assert len(SessionEventType) == 16
    # Declaration order is the official one.
    assert [m.value for m in SessionEventType][:3] == [
        "message_delta",
        "message_complete",
        "message_streaming",
    ]


def test_other_enums_have_exactly_the_official_members() -> None:
    assert {m.name: m.value for m in ParticipantStatus} == {
        "IDLE": "Idle",
        "PROCESSING": "Processing",
        "OFFLINE": "Offline",
        "CONNECTED": "Connected",
        "TYPING": "Typing",
        "AWAITING_APPROVAL": "AwaitingApproval",
    }
    assert {m.name: m.value for m in SessionMessageRole} == {
        "USER": "user",
        "OBJECT": "object",
        "UNKNOWN": "unknown",
    }
    assert {m.name: m.value for m in SessionMessageStatus} == {
        "STREAMING": "streaming",
        "COMPLETE": "complete",
        "ERROR": "error",
    }


_ALL_MEMBERS = [
    *SessionEventType,
    *ParticipantStatus,
    *SessionMessageRole,
    *SessionMessageStatus,
]


@pytest.mark.parametrize("member", _ALL_MEMBERS, ids=lambda m: f"{type(m).__name__}.{m.name}")
def test_members_behave_like_their_string_values(member: Any) -> None:
    value = member.value
    assert isinstance(value, str)
    assert isinstance(member, str)
    assert member == value
    assert value == member
    assert not (member != value)
    assert str(member) == value
    assert f"{member}" == value
    assert "%s" % member == value
    assert "{:>20}".format(member) == value.rjust(20)
    assert json.dumps(member) == json.dumps(value)
    assert hash(member) == hash(value)
    assert {value: 1}[member] == 1
    assert {member: 1}[value] == 1
    assert type(member)(value) is member
    assert repr(member) == f"<{type(member).__name__}.{member.name}: {value!r}>"


def test_enum_lookup_is_case_sensitive() -> None:
    with pytest.raises(ValueError):
        SessionMessageStatus("Complete")
    with pytest.raises(ValueError):
        ParticipantStatus("idle")
    assert SessionEventType.ERROR != "ERROR"


# --- SessionEvent basics ------------------------------------------------------------------


def test_event_fields_and_defaults() -> None:
    event = SessionEvent(T.PONG, "s")
    assert (event.type, event.session_id, event.message_id, event.data) == (T.PONG, "s", None, {})
    other = SessionEvent(T.PONG, "s")
    assert event.data is not other.data  # no shared mutable default
    assert [f.name for f in dataclasses.fields(SessionEvent)] == [
        "type",
        "session_id",
        "message_id",
        "data",
    ]


def test_event_is_frozen() -> None:
    event = SessionEvent(T.PONG, "s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = T.ERROR  # type: ignore[misc]


def test_event_hashing_works_and_agrees_with_equality() -> None:
    # The official dataclass hashes its dict and raises TypeError (D18).
    a = SessionEvent(T.MESSAGE_DELTA, "s", "m1", {"delta": "x", "index": 0})
    b = SessionEvent(T.MESSAGE_DELTA, "s", "m1", {"delta": "x", "index": 0})
    c = SessionEvent(T.MESSAGE_DELTA, "s", "m1", {"delta": "y", "index": 1})
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert {a: "first"}[b] == "first"
    assert SessionEvent(T.PONG, "s") != SessionEvent(T.PONG, "t")


# --- helper properties (§5.1) -------------------------------------------------------------


def _e(event_type: SessionEventType, data: Optional[Dict[str, Any]] = None) -> SessionEvent:
    return SessionEvent(event_type, "s", "m", data if data is not None else {})


def test_delta_only_for_message_delta() -> None:
    assert _e(T.MESSAGE_DELTA, {"delta": "Hel", "index": 0}).delta == "Hel"
    assert _e(T.MESSAGE_DELTA).delta is None
    for event_type in SessionEventType:
        if event_type is not T.MESSAGE_DELTA:
            assert _e(event_type, {"delta": "Hel"}).delta is None, event_type


def test_text_only_for_message_complete() -> None:
    assert _e(T.MESSAGE_COMPLETE, {"text": "Hello!", "status": "complete"}).text == "Hello!"
    assert _e(T.MESSAGE_COMPLETE, {"text": 7}).text == 7  # passed through raw, as the SDK
    assert _e(T.MESSAGE_COMPLETE).text is None
    for event_type in SessionEventType:
        if event_type is not T.MESSAGE_COMPLETE:
            assert _e(event_type, {"text": "x"}).text is None, event_type


def test_tool_name_for_tool_call_and_tool_result() -> None:
    assert _e(T.TOOL_CALL, {"tool_name": "calc"}).tool_name == "calc"
    assert _e(T.TOOL_RESULT, {"tool_name": "calc"}).tool_name == "calc"
    assert _e(T.TOOL_CALL).tool_name is None
    for event_type in SessionEventType:
        if event_type not in (T.TOOL_CALL, T.TOOL_RESULT):
            assert _e(event_type, {"tool_name": "calc"}).tool_name is None, event_type


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("streaming", SessionMessageStatus.STREAMING),
        ("complete", SessionMessageStatus.COMPLETE),
        ("error", SessionMessageStatus.ERROR),
        ("Complete", None),  # case-sensitive
        ("COMPLETE", None),
        ("Streaming", None),
        ("Running", None),
        ("Idle", None),
        ("", None),
        (None, None),
        (1, None),
        (["complete"], None),
    ],
)
def test_status_is_case_sensitive_for_any_type(raw: Any, expected: Any) -> None:
    for event_type in (T.MESSAGE_COMPLETE, T.TOOL_CALL, T.PARTICIPANT_STATUS, T.PONG):
        status = _e(event_type, {"status": raw}).status
        assert status is expected, (event_type, raw)
    assert _e(T.MESSAGE_STREAMING).status is None


def test_status_returns_the_enum_member() -> None:
    status = _e(T.MESSAGE_STREAMING, {"status": "streaming"}).status
    assert type(status) is SessionMessageStatus


def test_is_complete() -> None:
    assert _e(T.MESSAGE_COMPLETE).is_complete is True
    for event_type in SessionEventType:
        if event_type is not T.MESSAGE_COMPLETE:
            assert _e(event_type, {"status": "complete"}).is_complete is False, event_type


@pytest.mark.parametrize("status", list(ParticipantStatus))
def test_participant_status_every_value(status: ParticipantStatus) -> None:
    event = _e(T.PARTICIPANT_STATUS, {"status": status.value})
    assert event.participant_status is status
    assert event.is_turn_end is (status is ParticipantStatus.IDLE)
    assert event.requires_action is (status is ParticipantStatus.AWAITING_APPROVAL)


@pytest.mark.parametrize(
    "raw", ["idle", "IDLE", "awaitingapproval", "Awaiting Approval", "", None, 0, {}]
)
def test_participant_status_is_case_sensitive_and_lenient(raw: Any) -> None:
    event = _e(T.PARTICIPANT_STATUS, {"status": raw})
    assert event.participant_status is None
    assert event.is_turn_end is False
    assert event.requires_action is False


def test_participant_status_missing_and_other_types() -> None:
    assert _e(T.PARTICIPANT_STATUS).participant_status is None
    for event_type in SessionEventType:
        if event_type is not T.PARTICIPANT_STATUS:
            event = _e(event_type, {"status": "Idle"})
            assert event.participant_status is None, event_type
            assert event.is_turn_end is False, event_type


def test_requires_action() -> None:
    assert _e(T.APPROVAL_REQUEST).requires_action is True
    assert _e(T.REAUTH_REQUEST).requires_action is True
    assert _e(T.PARTICIPANT_STATUS, {"status": "AwaitingApproval"}).requires_action is True
    for event_type in SessionEventType:
        if event_type not in (T.APPROVAL_REQUEST, T.REAUTH_REQUEST):
            # AwaitingApproval counts only on a PARTICIPANT_STATUS event.
            data = {"status": "AwaitingApproval"} if event_type is not T.PARTICIPANT_STATUS else {}
            assert _e(event_type, data).requires_action is False, event_type


def test_error_only_for_error_events() -> None:
    assert _e(T.ERROR, {"error": "boom", "request_type": None}).error == "boom"
    assert _e(T.ERROR).error is None
    for event_type in SessionEventType:
        if event_type is not T.ERROR:
            assert _e(event_type, {"error": "boom"}).error is None, event_type


def test_sender_and_is_from_agent() -> None:
    user = _e(T.MESSAGE_COMPLETE, {"text": "q", "sender": {"user_id": "u1"}})
    assert user.sender == MessageSender(SessionMessageRole.USER, user_id="u1")
    assert user.is_from_agent is False

    agent = _e(T.MESSAGE_COMPLETE, {"sender": {"object_id": "ag", "object_type": "agent"}})
    assert agent.sender == MessageSender(SessionMessageRole.OBJECT, None, "ag", "agent")
    assert agent.is_from_agent is True

    odd = _e(T.MESSAGE_COMPLETE, {"sender": {"something": 1}})
    assert odd.sender == MessageSender(SessionMessageRole.UNKNOWN)
    assert odd.is_from_agent is True

    # A user_id key, even null, marks a user (§5.3), so it is never taken for the agent.
    null_user = _e(T.MESSAGE_COMPLETE, {"sender": {"user_id": None, "object_id": "a"}})
    assert null_user.sender == MessageSender(SessionMessageRole.USER)
    assert null_user.is_from_agent is False


@pytest.mark.parametrize("raw", [None, {}, "u1", ["user_id"], 0])
def test_no_usable_sender_is_none_and_counts_as_agent(raw: Any) -> None:
    data = {} if raw is None else {"sender": raw}
    event = _e(T.MESSAGE_COMPLETE, data)
    assert event.sender is None
    assert event.is_from_agent is True


def test_helpers_on_a_realistic_turn() -> None:
    turn = [
        SessionEvent(T.MESSAGE_POSTED, "s", None, {"type": "post_message", "success": True}),
        SessionEvent(T.PARTICIPANT_STATUS, "s", None, {"status": "Processing"}),
        SessionEvent(T.MESSAGE_DELTA, "s", "m1", {"delta": "Hel", "index": 0}),
        SessionEvent(T.MESSAGE_DELTA, "s", "m1", {"delta": "lo!", "index": 1}),
        SessionEvent(T.MESSAGE_COMPLETE, "s", "m1", {"text": "Hello!", "status": "complete"}),
        SessionEvent(T.PARTICIPANT_STATUS, "s", None, {"status": "Idle"}),
    ]
    assert "".join(e.delta for e in turn if e.delta) == "Hello!"
    assert [e.text for e in turn if e.is_complete] == ["Hello!"]
    assert [e.is_turn_end for e in turn] == [False, False, False, False, False, True]
    assert [e.participant_status for e in turn if e.participant_status] == [
        ParticipantStatus.PROCESSING,
        ParticipantStatus.IDLE,
    ]
    assert turn[4].status is SessionMessageStatus.COMPLETE


# --- MessageSender.from_dict (§5.3) -------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, MessageSender(SessionMessageRole.UNKNOWN)),
        ({}, MessageSender(SessionMessageRole.UNKNOWN)),
        ("u1", MessageSender(SessionMessageRole.UNKNOWN)),
        ({"name": "x"}, MessageSender(SessionMessageRole.UNKNOWN)),
        ({"user_id": "u1"}, MessageSender(SessionMessageRole.USER, user_id="u1")),
        ({"user_id": None}, MessageSender(SessionMessageRole.USER, user_id=None)),
        ({"user_id": 42}, MessageSender(SessionMessageRole.USER, user_id="42")),
        (
            {"user_id": None, "object_id": "a", "object_type": "agent"},
            MessageSender(SessionMessageRole.USER, user_id=None),
        ),
        (
            {"object_id": "ag_1", "object_type": "agent"},
            MessageSender(SessionMessageRole.OBJECT, object_id="ag_1", object_type="agent"),
        ),
        ({"object_id": "cb_1"}, MessageSender(SessionMessageRole.OBJECT, object_id="cb_1")),
        ({"object_id": None}, MessageSender(SessionMessageRole.OBJECT, object_id=None)),
        ({"object_type": "agent"}, MessageSender(SessionMessageRole.UNKNOWN)),
    ],
)
def test_message_sender_from_dict(raw: Any, expected: MessageSender) -> None:
    assert MessageSender.from_dict(raw) == expected


def test_message_sender_fields_and_frozen() -> None:
    assert [f.name for f in dataclasses.fields(MessageSender)] == [
        "role",
        "user_id",
        "object_id",
        "object_type",
    ]
    sender = MessageSender(SessionMessageRole.USER, user_id="u")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sender.role = SessionMessageRole.OBJECT  # type: ignore[misc]
    assert hash(sender) == hash(MessageSender(SessionMessageRole.USER, user_id="u"))


# --- SessionMessage.from_dict (§5.2) ------------------------------------------------------


def _msg(content: Any = None, **fields: Any) -> SessionMessage:
    data = dict(fields)
    if content is not None:
        data["content"] = content
    return SessionMessage.from_dict(data)


def test_session_message_full_item() -> None:
    raw = {
        "id": "h1",
        "session_id": "s1",
        "sender": {"object_id": "ag_1", "object_type": "agent"},
        "content": {"type": "data_type_message", "value": "Hello!", "status": "Complete"},
    }
    message = SessionMessage.from_dict(raw)
    assert message == SessionMessage(
        id="h1",
        session_id="s1",
        sender=MessageSender(SessionMessageRole.OBJECT, object_id="ag_1", object_type="agent"),
        content_type="data_type_message",
        text="Hello!",
        status=SessionMessageStatus.COMPLETE,
        raw=raw,
    )
    assert message.raw is raw
    assert message.is_agent is True and message.is_user is False
    assert [f.name for f in dataclasses.fields(SessionMessage)] == [
        "id",
        "session_id",
        "sender",
        "content_type",
        "text",
        "status",
        "raw",
    ]


def test_session_message_defaults_for_an_empty_item() -> None:
    message = SessionMessage.from_dict({})
    assert (message.id, message.session_id, message.content_type) == ("", "", "")
    assert (message.text, message.status) == (None, None)
    assert message.sender == MessageSender(SessionMessageRole.UNKNOWN)
    assert message.is_user is False and message.is_agent is False
    assert message.raw == {}


@pytest.mark.parametrize("content", [None, "text", 5, ["x"]])
def test_session_message_null_or_odd_content_is_lenient(content: Any) -> None:
    # The official from_dict raises AttributeError on a null content (D6).
    message = SessionMessage.from_dict({"id": "h", "content": content})
    assert (message.id, message.content_type, message.text, message.status) == ("h", "", None, None)


@pytest.mark.parametrize(
    "value, text",
    [("hi", "hi"), (7, "7"), (1.5, "1.5"), (True, "True"), ("", ""), (None, None)],
)
def test_data_message_text_is_str_of_value(value: Any, text: Optional[str]) -> None:
    assert _msg({"type": "data_type_message", "value": value}).text == text


@pytest.mark.parametrize(
    "raw, status",
    [
        ("Complete", SessionMessageStatus.COMPLETE),
        ("complete", SessionMessageStatus.COMPLETE),
        ("COMPLETE", SessionMessageStatus.COMPLETE),
        ("Streaming", SessionMessageStatus.STREAMING),
        ("Error", SessionMessageStatus.ERROR),
        ("Running", None),
        ("", None),
        (None, None),
        (3, None),  # the official from_dict raises AttributeError here
        ({"a": 1}, None),
    ],
)
def test_data_message_status_is_lowercased_and_lenient(raw: Any, status: Any) -> None:
    message = _msg({"type": "data_type_message", "value": "x", "status": raw})
    assert message.status is status


def test_status_only_read_for_data_messages() -> None:
    assert _msg({"type": "tool_call", "status": "Complete", "content": "c"}).status is None


def test_error_message_text() -> None:
    assert _msg({"type": "error_message", "error": "boom"}).text == "boom"
    assert _msg({"type": "error_message"}).text is None
    assert _msg({"type": "error_message", "error": 5}).text == "5"


@pytest.mark.parametrize("kind", ["thinking", "tool_call", "agent_task"])
def test_content_then_tool_name_kinds(kind: str) -> None:
    assert _msg({"type": kind, "content": "c", "tool_name": "t"}).text == "c"
    assert _msg({"type": kind, "content": "", "tool_name": "t"}).text == "t"
    assert _msg({"type": kind, "tool_name": "t"}).text == "t"
    assert _msg({"type": kind}).text is None
    assert _msg({"type": kind}).content_type == kind


@pytest.mark.parametrize(
    "kind", ["reasoning", "search_message", "tool_call_approval", "reauthorization_request", "x"]
)
def test_other_kinds_have_no_text(kind: str) -> None:
    message = _msg({"type": kind, "value": "v", "content": "c", "error": "e"})
    assert message.text is None
    assert message.content_type == kind


def test_non_string_content_type_is_empty() -> None:
    message = _msg({"type": 5, "value": "v"})
    assert message.content_type == ""
    assert message.text is None


def test_ids_are_strings() -> None:
    message = _msg(None, id=None, session_id=None)
    assert (message.id, message.session_id) == ("", "")
    message = _msg(None, id=12, session_id="s")
    assert (message.id, message.session_id) == ("12", "s")


def test_is_user_and_is_agent() -> None:
    user = _msg({"type": "data_type_message", "value": "q"}, sender={"user_id": "u"})
    assert user.is_user is True and user.is_agent is False
    agent = _msg(None, sender={"object_id": "a"})
    assert agent.is_user is False and agent.is_agent is True


def test_session_message_repr() -> None:
    user = _msg(
        {"type": "data_type_message", "value": "x" * 100, "status": "Complete"},
        sender={"user_id": "u"},
    )
    assert repr(user) == ("SessionMessage(role='user', text='" + "x" * 80 + "', status='complete')")
    agent = _msg({"type": "data_type_message", "value": "hi"}, sender={"object_id": "a"})
    assert repr(agent) == "SessionMessage(role='agent', text='hi', status=None)"
    assert repr(SessionMessage.from_dict({})) == (
        "SessionMessage(role='unknown', text=None, status=None)"
    )
    empty = _msg({"type": "data_type_message", "value": ""})
    assert repr(empty) == "SessionMessage(role='unknown', text='', status=None)"


def test_session_message_is_hashable_and_frozen() -> None:
    raw = {"id": "h1", "session_id": "s", "content": {"type": "data_type_message", "value": "x"}}
    a = SessionMessage.from_dict(raw)
    b = SessionMessage.from_dict(dict(raw))
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.text = "y"  # type: ignore[misc]
