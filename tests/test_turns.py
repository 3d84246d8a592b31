"""Turn helpers (Session.stream/ask) and the one-shot Agent.run(), against the local engine."""

from __future__ import annotations

from typing import Iterator

import pytest
from conftest import scaled

from vectorshift_sync import (
    Agent,
    ConversationalRunActionRequiredError,
    SessionDisconnectedError,
    SessionError,
    SessionEventType,
    SessionTimeoutError,
)
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine, TurnContext
from vectorshift_sync.turns import TurnTracker

E = SessionEventType
pytestmark = pytest.mark.timeout(30)


def _only_deltas(ctx: TurnContext) -> None:
    for piece in ("Par", "tial"):
        ctx.delta(piece, message_id="m-deltas")


def test_ask_returns_the_agent_answer_not_the_echo(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    with agent.create_session() as session:
        result = session.ask("What is the weather?", timeout=scaled(10))
        assert "What is the weather?" in result.text
        assert result.text != "What is the weather?"
        assert result.session_id == session.session_id
        assert result.events[-1].is_turn_end
        assert any(e.type == E.TOOL_CALL for e in result.events)
        assert any(e.type == E.TOOL_RESULT for e in result.events)
        assert any(e.type == E.THINKING for e in result.events)


def test_ask_falls_back_to_deltas_when_no_message_completes(engine: LocalEngine) -> None:
    agent_id = engine.add_agent("Deltas only", turn=_only_deltas)
    with Session(owner_type="agent", owner_id=agent_id) as session:
        assert session.ask("q", timeout=scaled(5)).text == "Partial"


def test_ask_raises_with_the_approval_event(engine: LocalEngine) -> None:
    with Agent.fetch(name="Demo Agent").create_session() as session:
        with pytest.raises(ConversationalRunActionRequiredError) as info:
            session.ask("please approve sending the email", timeout=scaled(10))
        request = info.value.event
        assert request.type == E.APPROVAL_REQUEST
        assert info.value.session_id == session.session_id
        listener = session.listen(timeout=scaled(10))  # the rest of the paused turn
        session.respond(request, approved=True)
        rest = []
        for event in listener:
            rest.append(event)
            if event.is_turn_end:
                break
        assert any(e.type == E.TOOL_RESULT for e in rest)


def test_stream_yields_one_turn_and_continues_after_respond(engine: LocalEngine) -> None:
    with Agent.fetch(name="Demo Agent").create_session() as session:
        seen = []
        for event in session.stream("approve this, please", timeout=scaled(10)):
            seen.append(event.type)
            if event.type == E.APPROVAL_REQUEST:
                session.respond(event, approved=False, deny_reason="no emails today")
        assert seen[0] == E.MESSAGE_POSTED and seen[-1] == E.PARTICIPANT_STATUS
        assert E.APPROVAL_REQUEST in seen
        # the next turn's stream starts clean: nothing of this turn is replayed
        second = list(session.stream("hello again", timeout=scaled(10)))
        assert second[0].type == E.MESSAGE_POSTED
        assert [e.text for e in second if e.is_complete][0] == "hello again"


def test_stream_timeout_and_drop(engine: LocalEngine) -> None:
    def silent(ctx: TurnContext) -> None:
        ctx.wait(2.0)

    agent_id = engine.add_agent("Silent", turn=silent)
    with Session(owner_type="agent", owner_id=agent_id, reconnect=False) as session:
        with pytest.raises(SessionTimeoutError):
            for _ in session.stream("anyone?", timeout=0.5):
                pass
        events = []
        with pytest.raises(SessionDisconnectedError):
            # The new stream first reads the timed-out turn to its end (about 1.5 s
            # more) within the same deadline, so the bound leaves room past that.
            for event in session.stream("drop me", timeout=scaled(10)):
                events.append(event)
                if event.type == E.MESSAGE_POSTED:
                    engine.drop_connections()
        assert events[-1].type == E.ERROR and events[-1].error == "connection lost"


def test_ask_reports_turn_errors(engine: LocalEngine) -> None:
    agent_id = engine.add_agent("Broken", turn=lambda ctx: ctx.error("model unavailable"))
    with Session(owner_type="agent", owner_id=agent_id) as session:
        with pytest.raises(SessionError, match="model unavailable"):
            session.ask("hi", timeout=scaled(5))


def test_run_terminates_its_hidden_session(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    result = agent.run("Summarise the Apollo mission", timeout=scaled(10))
    assert result.status == "complete" and result.error is None
    assert "Apollo" in result.final_message
    assert all(e.type != E.MESSAGE_DELTA for e in result.events)
    types = [f["type"] for f in engine.received()]
    assert types[:3] == ["create_session", "connect_session", "post_message"]
    assert engine.wait_for_frame("terminate_session")["session_id"] == result.session_id


def test_run_keep_alive_and_resume_disconnect_instead(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    first = agent.run("one", keep_alive=True, include_deltas=True, timeout=scaled(10))
    assert any(e.type == E.MESSAGE_DELTA for e in first.events)
    assert engine.wait_for_frame("disconnect_session")["session_id"] == first.session_id
    second = agent.run("two", session_id=first.session_id, timeout=scaled(10))
    assert second.session_id == first.session_id and second.status == "complete"
    assert engine.received("terminate_session") == []
    history = [m["content"].get("value") for m in engine.history(first.session_id)]
    assert history[0] == "one" and "two" in history


def test_run_approval_keeps_the_session_resumable(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    with pytest.raises(ConversationalRunActionRequiredError) as info:
        agent.run("approve the email", timeout=scaled(10))
    assert engine.received("terminate_session") == []
    with agent.resume_session(info.value.session_id) as session:
        listener = session.listen(timeout=scaled(10))
        session.respond(info.value.event, approved=True)
        assert any(e.type == E.TOOL_RESULT for e in _take_turn(listener))


def test_run_refuses_what_it_cannot_honour(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    with pytest.raises(ValueError, match="functional runs only"):
        agent.run("hi", additional_instructions="be brief")
    with pytest.raises(TypeError):
        agent.run({"question": "hi"})
    with pytest.raises(TypeError):
        agent.run(None)


def test_tracker_ignores_an_idle_before_anything_happened() -> None:
    from vectorshift_sync.events import SessionEvent

    tracker = TurnTracker()
    idle = SessionEvent(E.PARTICIPANT_STATUS, "s", data={"status": "Idle"})
    assert not tracker.feed(idle)
    tracker.feed(SessionEvent(E.PARTICIPANT_STATUS, "s", data={"status": "Processing"}))
    assert tracker.feed(idle)


def _take_turn(listener: Iterator) -> list:  # type: ignore[type-arg]
    events = []
    for event in listener:
        events.append(event)
        if event.is_turn_end:
            break
    return events
