"""A refused WebSocket handshake belongs to both error families, and a reconnect gives
up at once on what retrying cannot fix, against the real local engine.

Code written against the official documentation catches session failures with
``except SessionError``; code written against the HTTP API catches the status class
(``except AuthenticationError``). Both must work for the same refusal, wherever it
happens: ``connect()``, a resume, ``agent.run()``, a reconnect.
"""

from __future__ import annotations

import pickle
import threading
import time
from typing import List, Type

import pytest
from conftest import scaled

from vectorshift_sync import (
    Agent,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionConnectionError,
    SessionError,
    SessionEventType,
    SessionHandshakeError,
    UnprocessableEntityError,
    VectorshiftApiError,
    VectorshiftError,
)
from vectorshift_sync.session import ReconnectAttempt, ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine

E = SessionEventType
pytestmark = pytest.mark.timeout(60)

FAST = ReconnectPolicy(max_attempts=50, max_time=scaled(3.0), base_delay=0.02, max_delay=0.1)

#: Every status the engine can refuse an upgrade with, and the HTTP class it must also be.
STATUSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, VectorshiftApiError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
]


def _check_both_families(
    error: BaseException,
    status: int,
    family: Type[Exception],
    explained: str = "handshake refused (fault injection)",
) -> None:
    assert isinstance(error, SessionHandshakeError)
    assert isinstance(error, SessionConnectionError)
    assert isinstance(error, SessionError)
    assert isinstance(error, family)
    assert isinstance(error, VectorshiftApiError)
    assert error.status_code == status
    assert error.endpoint == "/v1/ws/session"
    # The engine's explanation, taken out of the response body's JSON:
    assert error.error_message == explained
    assert error.message == str(error)  # SessionError's attribute, set as well


@pytest.mark.parametrize(("status", "family"), STATUSES, ids=[str(s) for s, _ in STATUSES])
def test_a_refused_connect_is_caught_by_each_family(
    engine: LocalEngine, status: int, family: Type[Exception]
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    engine.faults.reject_handshake = status
    seen: List[BaseException] = []
    for catch in (SessionError, SessionConnectionError, family):
        try:
            Session(owner_type="agent", owner_id=agent).connect()
        except catch as caught:  # the except clause a user would write
            _check_both_families(caught, status, family)
            assert "handshake refused" in caught.error_message
            seen.append(caught)
        else:  # pragma: no cover - the assertion below explains
            pytest.fail(f"{status}: connect() did not raise")
    copy = pickle.loads(pickle.dumps(seen[-1]))
    assert type(copy) is type(seen[-1]) and copy.status_code == status


def test_a_wrong_key_on_resume_is_a_session_error_and_an_authentication_error(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    with Session(owner_type="agent", owner_id=agent) as first:
        session_id = first.session_id
        assert session_id
    try:
        Session(session_id=session_id, api_key="wrong-key-123456").connect()
    except SessionError as caught:  # the official documentation's idiom
        _check_both_families(caught, 401, AuthenticationError, "missing or invalid API key")
        assert "wrong-key-123456" not in str(caught)
    else:  # pragma: no cover
        pytest.fail("a resume with a wrong key connected")
    engine.faults.reject_handshake = 403
    with pytest.raises(PermissionDeniedError) as info:
        Session(session_id=session_id).connect()
    _check_both_families(info.value, 403, PermissionDeniedError)


@pytest.mark.parametrize(
    ("status", "family"), [(401, AuthenticationError), (503, InternalServerError)]
)
def test_a_refused_handshake_inside_agent_run(
    engine: LocalEngine, status: int, family: Type[Exception]
) -> None:
    agent = Agent.fetch(name="Demo Agent")  # plain HTTP: not refused
    engine.faults.reject_handshake = status
    with pytest.raises(SessionError) as info:
        agent.run("hello", timeout=scaled(5))
    _check_both_families(info.value, status, family)


def _attempts_until_given_up(
    engine: LocalEngine, status: int, *, retry_after: float | None = None
) -> tuple[List[float], str]:
    """Drop a session, refuse its reconnects with ``status``; the hook's call times and
    the final reason, once it gave up (or the budget ran out)."""
    times: List[float] = []

    def record(attempt: ReconnectAttempt) -> None:
        times.append(time.monotonic())

    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    session = Session(
        owner_type="agent", owner_id=agent, reconnect=FAST, on_reconnect=record
    ).connect()
    try:
        listener = session.listen(event_types=[E.ERROR], timeout=scaled(10))
        engine.faults.reject_handshake = status
        engine.faults.retry_after = retry_after
        engine.drop_connections()
        events = list(listener)
        assert [e.data["reconnecting"] for e in events] == [True, False]
        return times, events[-1].data["reason"]
    finally:
        session.disconnect()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_reconnect_refused_with_a_client_status_gives_up_at_once(
    engine: LocalEngine, status: int
) -> None:
    started = time.monotonic()
    times, reason = _attempts_until_given_up(engine, status)
    assert len(times) == 1, f"{status} was retried {len(times) - 1} times"
    assert str(status) in reason
    assert time.monotonic() - started < scaled(1.5)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_reconnect_refused_with_429_or_5xx_is_retried(
    engine: LocalEngine, status: int
) -> None:
    times, reason = _attempts_until_given_up(engine, status)
    assert len(times) > 3 and "gave up after" in reason and str(status) in reason


def test_a_reconnect_honours_retry_after(engine: LocalEngine) -> None:
    times, _ = _attempts_until_given_up(engine, 429, retry_after=0.4)
    gaps = [later - earlier for earlier, later in zip(times[1:], times[2:])]
    assert gaps and min(gaps) >= 0.4, gaps  # FAST alone never waits more than 0.1 s
    assert len(times) <= 1 + int(scaled(3.0) / 0.4) + 1


def test_a_reconnect_comes_back_once_a_503_clears(engine: LocalEngine) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    refused = threading.Event()

    def count(attempt: ReconnectAttempt) -> None:
        if attempt.attempt == 3:  # two refusals seen: let the next one in
            engine.faults.reject_handshake = None
            refused.set()

    with Session(owner_type="agent", owner_id=agent, reconnect=FAST, on_reconnect=count) as s:
        listener = s.listen(event_types=[E.SESSION_CONNECTED, E.ERROR], timeout=scaled(10))
        engine.faults.reject_handshake = 503
        engine.drop_connections()
        seen = []
        for event in listener:
            seen.append((event.type, event.data.get("reconnecting"), event.data.get("reconnected")))
            if event.data.get("reconnected"):
                break
        assert (E.ERROR, True, None) in seen and seen[-1] == (E.SESSION_CONNECTED, None, True)
        assert refused.is_set()
        assert s.ask("again", timeout=scaled(5)).text == "hi"


def test_a_reconnect_without_an_api_key_gives_up_at_once(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    times: List[float] = []
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    session = Session(  # the key comes from VECTORSHIFT_API_KEY, read at each attempt
        owner_type="agent", owner_id=agent, reconnect=FAST,
        on_reconnect=lambda attempt: times.append(time.monotonic()),
    ).connect()
    try:
        listener = session.listen(event_types=[E.ERROR], timeout=scaled(10))
        monkeypatch.delenv("VECTORSHIFT_API_KEY")
        started = time.monotonic()
        engine.drop_connections()
        events = list(listener)
        assert [e.data["reconnecting"] for e in events] == [True, False]
        assert "no API key" in events[-1].data["reason"]
        assert len(times) == 1
        assert time.monotonic() - started < scaled(1.5)
    finally:
        session.disconnect()


def test_the_handshake_error_is_rooted_and_exported() -> None:
    import vectorshift_sync
    from vectorshift_sync import errors

    assert issubclass(SessionHandshakeError, VectorshiftError)
    assert "SessionHandshakeError" in vectorshift_sync.__all__
    for name in errors.__all__:
        if name.startswith("Handshake"):
            cls = getattr(errors, name)
            assert issubclass(cls, SessionHandshakeError) and cls.__doc__
