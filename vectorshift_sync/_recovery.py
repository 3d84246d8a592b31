"""Reconnection policy and history reconciliation, as plain functions and values.

The session's reconnector thread asks this module three questions: how long to wait
before the next attempt (exponential backoff with full jitter, bounded in attempts
and in elapsed time, never shorter than a refusal's ``Retry-After``), whether a
failure is worth another attempt (only the network, a timeout, 429 and 5xx: anything
else, a wrong key, a session that is gone, no API key at all, a bug, will not get
better by asking again), and which completed agent replies the client missed while it
was away (the history after the last message it saw, minus those it already delivered).
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from .errors import (
    ApiConnectionError,
    InternalServerError,
    RateLimitError,
    SessionDisconnectedError,
    SessionHandshakeError,
    SessionTimeoutError,
)
from .events import SessionEvent, SessionEventType, SessionMessage, SessionMessageStatus

__all__ = [
    "ReconnectPolicy",
    "ReconnectAttempt",
    "ReconnectHook",
    "is_recoverable",
    "next_pause",
    "missed_replies",
    "RecentIds",
]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard a session tries to come back after an unexpected drop.

    ``max_attempts`` and ``max_time`` (seconds since the drop) bound the effort; the
    wait before attempt *n* is uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]``
    (full jitter, so that many clients dropped at once do not return in lockstep).
    """

    max_attempts: int = 10
    max_time: float = 14.0
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, rand: Callable[[float, float], float] = random.uniform) -> float:
        """The pause before attempt number ``attempt`` (1-based); 0 for the first."""
        if attempt <= 1:
            return 0.0
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 2)))
        return rand(0.0, ceiling)


@dataclass(frozen=True)
class ReconnectAttempt:
    """What an ``on_reconnect`` hook is told before each attempt."""

    session_id: str
    attempt: int
    reason: str
    elapsed: float


#: Called before each attempt; returning ``False`` gives up at once.
ReconnectHook = Callable[[ReconnectAttempt], Optional[bool]]


#: Built-in errors of the network itself (a reset, an unreachable host, DNS, a timeout).
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, socket.herror)


def is_recoverable(error: BaseException) -> bool:
    """Whether another attempt could succeed after ``error``.

    Yes for what time can fix: the network (the WebSocket could not be opened or
    dropped during the handshake, the HTTP API could not be reached), a timeout, and
    a server that said "later" (429, 5xx), over the WebSocket handshake or HTTP. No
    for everything else: a refused handshake's other statuses (401, 403, 404, ...),
    a refused ``connect_session``, no API key, misuse and bugs.
    """
    if isinstance(error, (RateLimitError, InternalServerError)):
        return True
    if isinstance(error, SessionHandshakeError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(
        error, (SessionDisconnectedError, SessionTimeoutError, ApiConnectionError)
    ) or isinstance(error, _NETWORK_ERRORS)


def next_pause(
    policy: ReconnectPolicy,
    attempt: int,
    last_error: Optional[BaseException] = None,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """The pause before attempt ``attempt``: the policy's backoff, or the
    ``Retry-After`` the last refusal asked for when that is longer."""
    pause = policy.delay(attempt, rand)
    retry_after = getattr(last_error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and retry_after > pause:
        pause = float(retry_after)
    return pause


def missed_replies(
    history: Sequence[SessionMessage],
    delivered: Iterable[str],
    last_seen: Optional[str],
    session_id: str,
) -> List[SessionEvent]:
    """The completed agent replies of ``history`` that the client never received.

    Only messages after ``last_seen`` (the id of the last message the client saw an
    event for) are considered; with no such id, the whole history is. When the last
    history item is a recovered reply, an ``Idle`` participant status follows it, so
    that a consumer waiting for the end of the turn is not left hanging.
    """
    start = 0
    if last_seen is not None:
        for index, message in enumerate(history):
            if message.id == last_seen:
                start = index + 1
    known = set(delivered)
    events: List[SessionEvent] = []
    for message in history[start:]:
        if (
            message.is_agent
            and message.content_type == "data_type_message"
            and message.status is SessionMessageStatus.COMPLETE
            and message.id not in known
        ):
            data: Dict[str, Any] = {
                "text": message.text,
                "status": "complete",
                "recovered": True,
            }
            sender = message.raw.get("sender")
            if isinstance(sender, dict) and sender:
                data["sender"] = sender
            events.append(
                SessionEvent(SessionEventType.MESSAGE_COMPLETE, session_id, message.id, data)
            )
    if events and history and history[-1].id == events[-1].message_id:
        events.append(
            SessionEvent(
                SessionEventType.PARTICIPANT_STATUS,
                session_id,
                data={"status": "Idle", "recovered": True},
            )
        )
    return events


class RecentIds:
    """The newest ``limit`` ids added, for ``in`` tests; the oldest are forgotten first.

    Not thread-safe: the session uses it under its lock.
    """

    __slots__ = ("_ids", "_limit")

    def __init__(self, limit: int) -> None:
        self._ids: Dict[str, None] = {}  # insertion-ordered: the oldest comes first
        self._limit = limit

    def add(self, id_: str) -> None:
        ids = self._ids
        if id_ in ids:
            return
        ids[id_] = None
        if len(ids) > self._limit:
            del ids[next(iter(ids))]

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
