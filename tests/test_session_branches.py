"""Session branches no other test reaches, against the real local engine: a server
close frame's code and reason, an inbound message over ``max_message_size``,
``terminate()`` after the link was lost, and an ``on_reconnect`` hook that raises."""

from __future__ import annotations

import logging
from typing import List

import pytest
from conftest import scaled

from vectorshift_sync import SessionDisconnectedError, SessionEventType
from vectorshift_sync.session import ReconnectAttempt, ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine

E = SessionEventType
pytestmark = pytest.mark.timeout(30)

FAST = ReconnectPolicy(max_attempts=20, max_time=scaled(3.0), base_delay=0.02, max_delay=0.1)


@pytest.mark.parametrize("reconnect", [False, FAST], ids=["no-reconnect", "reconnect"])
def test_a_server_close_frame_gives_its_code_and_reason_to_the_error_event(
    engine: LocalEngine, reconnect: object
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    with Session(owner_type="agent", owner_id=agent, reconnect=reconnect) as session:  # type: ignore[arg-type]
        listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
        engine.restart()  # closes every connection with 1012 "service restart"
        error = next(listener)
        assert error.data["error"] == "connection lost"
        assert error.data["reason"] == "server closed the WebSocket (code 1012, 'service restart')"
        assert error.data["reconnecting"] is bool(reconnect)


def test_a_message_over_max_message_size_ends_the_session_saying_so(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Big", turn=lambda ctx: ctx.complete("x" * 5000))
    with Session(
        owner_type="agent", owner_id=agent, reconnect=False, max_message_size=2048
    ) as session:
        listener = session.listen(timeout=scaled(5))
        session.send("hi")  # the echo is small; the reply is not
        events = list(listener)
        assert [e.text for e in events if e.is_complete] == ["hi"]
        assert events[-1].type is E.ERROR and events[-1].data["reconnecting"] is False
        reason = events[-1].data["reason"]
        assert "exceeded max_message_size" in reason and "2048" in reason, reason
        assert not session.is_connected
    # The same reply fits under the default limit.
    with Session(owner_type="agent", owner_id=agent) as session:
        assert session.ask("hi", timeout=scaled(5)).text == "x" * 5000


def test_terminate_after_the_link_was_lost_says_how_and_leaves_the_session(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    session = Session(owner_type="agent", owner_id=agent, reconnect=False).connect()
    try:
        sid = session.session_id
        assert sid
        listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
        engine.drop_connections()
        assert next(listener).data["reconnecting"] is False
        with pytest.raises(SessionDisconnectedError, match="connect\\(\\) first, then terminate"):
            session.terminate()
        assert not engine.sessions[sid].terminated  # nothing could reach the engine
        session.connect()  # still resumable, and terminate() works once connected
        session.terminate()
        assert engine.wait_for_frame("terminate_session", timeout=scaled(5))["session_id"] == sid
        assert engine.sessions[sid].terminated
    finally:
        session.disconnect()


def test_an_on_reconnect_hook_that_raises_stops_reconnecting(
    engine: LocalEngine, caplog: pytest.LogCaptureFixture
) -> None:
    calls: List[ReconnectAttempt] = []

    def broken(attempt: ReconnectAttempt) -> bool:
        calls.append(attempt)
        raise RuntimeError("hook bug")

    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    caplog.set_level(logging.ERROR, logger="vectorshift_sync")
    session = Session(owner_type="agent", owner_id=agent, reconnect=FAST, on_reconnect=broken)
    session.connect()
    try:
        listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
        engine.drop_connections()
        events = list(listener)
        assert [e.data["reconnecting"] for e in events] == [True, False]
        assert events[-1].data["reason"].endswith("reconnecting stopped by on_reconnect")
        assert len(calls) == 1 and calls[0].attempt == 1
        assert "on_reconnect hook failed" in caplog.text and "hook bug" in caplog.text
        assert len(engine.connections) == 1  # no attempt was made
        with pytest.raises(SessionDisconnectedError):
            session.send("anyone?")
    finally:
        session.disconnect()
