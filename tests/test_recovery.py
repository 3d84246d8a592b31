"""Reconnection policy and history reconciliation: pure functions, no sockets."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from vectorshift_sync import (
    AuthenticationError,
    PermissionDeniedError,
    SessionConnectionError,
    SessionRefusedError,
    SessionTimeoutError,
)
from vectorshift_sync._recovery import ReconnectPolicy, is_recoverable, missed_replies
from vectorshift_sync.errors import InternalServerError
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


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AuthenticationError(401), False),
        (PermissionDeniedError(403), False),
        (SessionRefusedError("gone"), False),
        (InternalServerError(503), True),
        (SessionConnectionError("refused"), True),
        (SessionTimeoutError("slow"), True),
        (ConnectionResetError(), True),
        (ValueError("bug"), False),
    ],
)
def test_what_is_worth_another_attempt(error: BaseException, expected: bool) -> None:
    assert is_recoverable(error) is expected
