"""Reconnection policy and history reconciliation: pure functions, no sockets."""

from __future__ import annotations

import socket
from typing import Any, Dict, List

import pytest

from vectorshift_sync import (
    ApiConnectionError,
    ApiTimeoutError,
    ArgumentTypeError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionConnectionError,
    SessionDisconnectedError,
    SessionError,
    SessionForkedError,
    SessionRefusedError,
    SessionTimeoutError,
)
from vectorshift_sync._recovery import (
    ReconnectPolicy,
    is_recoverable,
    missed_replies,
    next_pause,
)
from vectorshift_sync.errors import InternalServerError, handshake_error_for_status
from vectorshift_sync.events import SessionEventType, SessionMessage


def _msg(mid: str, who: str, text: str, status: str = "Complete") -> SessionMessage:
    sender: Dict[str, Any] = {"user_id": "u"} if who == "user" else {"object_id": "a"}
    return SessionMessage.from_dict({
        "id": mid, "session_id": "s", "sender": sender,
        "content": {"type": "data_type_message", "value": text, "status": status},
    })


def _tool(mid: str) -> SessionMessage:
    return SessionMessage.from_dict({
        "id": mid, "session_id": "s", "sender": {"object_id": "a"},
        "content": {"type": "tool_call", "tool_name": "t", "status": "Completed"},
    })


HISTORY: List[SessionMessage] = [
    _msg("u1", "user", "first"), _msg("a1", "agent", "answer one"),
    _msg("u2", "user", "second"), _tool("t2"), _msg("a2", "agent", "answer two"),
]


def test_the_missed_reply_after_the_last_seen_message_is_recovered_with_an_idle() -> None:
    events = missed_replies(HISTORY, delivered={"a1"}, last_seen="u2", session_id="s")
    assert [(e.type, e.message_id) for e in events] == [
        (SessionEventType.MESSAGE_COMPLETE, "a2"),
        (SessionEventType.PARTICIPANT_STATUS, None),
    ]
    assert events[0].text == "answer two" and events[0].data["recovered"] is True
    assert events[0].is_from_agent and events[1].is_turn_end


def test_nothing_is_replayed_that_was_delivered_or_came_before() -> None:
    assert missed_replies(HISTORY, delivered={"a1", "a2"}, last_seen="u2", session_id="s") == []
    assert missed_replies(HISTORY, delivered=set(), last_seen="a2", session_id="s") == []


def test_without_a_last_seen_message_the_whole_history_counts() -> None:
    events = missed_replies(HISTORY, delivered=set(), last_seen=None, session_id="s")
    assert [e.message_id for e in events] == ["a1", "a2", None]


def test_no_idle_when_the_turn_is_still_going() -> None:
    history = HISTORY + [_msg("a3", "agent", "partial", status="Streaming")]
    events = missed_replies(history, delivered=set(), last_seen="u2", session_id="s")
    assert [e.type for e in events] == [SessionEventType.MESSAGE_COMPLETE]


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    policy = ReconnectPolicy(base_delay=0.5, max_delay=3.0)
    ceilings = []
    policy_rand = lambda low, high: ceilings.append((low, high)) or high  # noqa: E731
    delays = [policy.delay(n, rand=policy_rand) for n in range(1, 7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert all(low == 0.0 for low, _ in ceilings)


def _handshake(status: int) -> BaseException:
    return handshake_error_for_status(status, endpoint="/v1/ws/session")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # what time can fix: the network, timeouts, "later" from the server
        (SessionConnectionError("refused"), True),
        (SessionDisconnectedError("closed while waiting for the ack"), True),
        (SessionTimeoutError("slow"), True),
        (ApiConnectionError("unreachable"), True),
        (ApiTimeoutError("slow"), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (_handshake(429), True),
        (_handshake(500), True),
        (_handshake(503), True),
        (InternalServerError(503), True),
        (RateLimitError(429), True),
        # what it cannot: a refusal, no key, misuse, bugs
        (_handshake(400), False),
        (_handshake(401), False),
        (_handshake(403), False),
        (_handshake(404), False),
        (_handshake(409), False),
        (_handshake(422), False),
        (AuthenticationError(401), False),
        (PermissionDeniedError(403), False),
        (NotFoundError(404), False),
        (SessionRefusedError("gone"), False),
        (SessionError("no API key configured any more; cannot reconnect"), False),
        (SessionForkedError("forked"), False),
        (InvalidArgumentError("bad value"), False),
        (ArgumentTypeError("bad type"), False),
        (ValueError("bug"), False),
        (TypeError("bug"), False),
        (KeyError("bug"), False),
        (FileNotFoundError("a file"), False),
        (PermissionError("a file"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_is_worth_another_attempt(error: BaseException, expected: bool) -> None:
    assert is_recoverable(error) is expected


def test_the_pause_is_the_backoff_or_a_longer_retry_after() -> None:
    policy = ReconnectPolicy(base_delay=0.5, max_delay=3.0)
    high = lambda low, high: high  # noqa: E731
    assert next_pause(policy, 3, None, rand=high) == 1.0
    slow = handshake_error_for_status(429, headers={"Retry-After": "7"})
    assert slow.retry_after == 7.0
    assert next_pause(policy, 3, slow, rand=high) == 7.0
    quick = handshake_error_for_status(503, headers={"retry-after": "0.25"})
    assert next_pause(policy, 3, quick, rand=high) == 1.0
    undated = handshake_error_for_status(503, headers={"Retry-After": "Wed, 21 Oct 2015"})
    assert undated.retry_after is None
    assert next_pause(policy, 3, ValueError("no hint"), rand=high) == 1.0
