"""Session.stream_text(): the agent's text of one turn, chunk by chunk.

The picker that turns events into text is tested pure (events in, chunks out); the
stream itself against the local engine: order, early close (by close(), by dropping
the object, by a timeout), a failed turn, an approval answered mid-stream, a
reconnect mid-turn, and steps taken on different threads as Gradio takes them.
"""

from __future__ import annotations

import gc
import threading
from typing import Any, Dict, List, Optional

import pytest
from conftest import scaled

from vectorshift_sync import (
    Agent,
    ArgumentTypeError,
    ConversationalRunActionRequiredError,
    InvalidArgumentError,
    SessionDisconnectedError,
    SessionError,
    SessionEvent,
    SessionEventType,
    SessionTimeoutError,
    TextStream,
)
from vectorshift_sync._turn_follow import _TextPicker
from vectorshift_sync.session import ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType
pytestmark = pytest.mark.timeout(30)

STORY = "Once upon a time there was a very patient websocket."
AGENT = {"object_type": "agent", "object_id": "a1"}
USER = {"user_id": "u1"}


def _story(ctx: TurnContext) -> None:
    ctx.stream(STORY, chunk=3, delay=0.02)


def _echo_slowly(ctx: TurnContext) -> None:
    # Long enough that a reader who leaves after one chunk leaves it mid-turn.
    ctx.stream(f"[{ctx.text}] " + "tick " * 20, chunk=5, delay=0.01)


def _fails(ctx: TurnContext) -> None:
    ctx.delta("half an answer", message_id="m-fail")
    raise RuntimeError("the tool exploded")


def _session(agent_id: str, **options: Any) -> Session:
    return Session(owner_type="agent", owner_id=agent_id, **options)


# --- the picker, pure ------------------------------------------------------------------


def _ev(kind: SessionEventType, message_id: Optional[str] = None, **data: Any) -> SessionEvent:
    return SessionEvent(kind, "s1", message_id, dict(data))


def _pick(events: List[SessionEvent]) -> List[str]:
    picker = _TextPicker()
    processing = False
    chunks = []
    for event in events:
        if event.participant_status is not None and event.data["status"] == "Processing":
            processing = True
        chunk = picker.take(event, processing)
        if chunk:
            chunks.append(chunk)
    rest = picker.flush()
    return chunks + ([rest] if rest else [])


def test_picker_passes_deltas_and_skips_the_echo_and_side_events() -> None:
    events = [
        _ev(E.MESSAGE_COMPLETE, "u", text="hi there", sender=USER),  # the echo
        _ev(E.MESSAGE_COMPLETE, "u2", text="echo without sender"),  # before Processing
        _ev(E.PARTICIPANT_STATUS, status="Processing"),
        _ev(E.THINKING, content="hmm"),
        _ev(E.MESSAGE_DELTA, "m", delta="Hel"),
        _ev(E.TOOL_CALL, tool_name="t"),
        _ev(E.MESSAGE_DELTA, "m", delta="lo"),
        _ev(E.MESSAGE_COMPLETE, "m", text="Hello", sender=AGENT),
        _ev(E.PARTICIPANT_STATUS, status="Idle"),
    ]
    assert _pick(events) == ["Hel", "lo"]


def test_picker_yields_what_deltas_missed_and_whole_messages_without_deltas() -> None:
    events = [
        _ev(E.PARTICIPANT_STATUS, status="Processing"),
        _ev(E.MESSAGE_DELTA, "m", delta="Hel"),
        _ev(E.MESSAGE_COMPLETE, "m", text="Hello!", sender=AGENT),
        _ev(E.MESSAGE_DELTA, "m", delta="late"),  # after its complete: ignored
        _ev(E.MESSAGE_COMPLETE, "n", text=" Second.", sender=AGENT),
        _ev(E.MESSAGE_STREAMING, "p", text="Par", status="streaming"),
        _ev(E.MESSAGE_STREAMING, "p", text="Partial", status="streaming"),
        _ev(E.MESSAGE_COMPLETE, "p", text="Partial", sender=AGENT),
    ]
    assert _pick(events) == ["Hel", "lo!", " Second.", "Par", "tial"]


def test_picker_holds_deltas_after_a_reconnect_until_the_message_completes() -> None:
    events = [
        _ev(E.PARTICIPANT_STATUS, status="Processing"),
        _ev(E.MESSAGE_DELTA, "m", delta="Once "),
        _ev(E.ERROR, error="connection lost", reconnecting=True),
        _ev(E.SESSION_CONNECTED, reconnected=True),
        _ev(E.MESSAGE_DELTA, "m", delta="patient"),  # "upon a time ... very " was lost
        _ev(E.MESSAGE_COMPLETE, "m", text="Once upon a patient", sender=AGENT),
        _ev(E.MESSAGE_DELTA, "d", delta="deltas "),  # never completes
        _ev(E.MESSAGE_DELTA, "d", delta="only"),
    ]
    assert _pick(events) == ["Once ", "upon a patient", "deltas only"]


# --- against the engine -----------------------------------------------------------------


def test_chunks_are_the_turns_deltas_in_order(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_story)
    with _session(agent) as session:
        stream = session.stream_text("a story", timeout=scaled(10))
        assert isinstance(stream, TextStream)
        chunks = list(stream)
        assert chunks == [STORY[i : i + 3] for i in range(0, len(STORY), 3)]
        assert stream.text == STORY and stream.ended and stream.pending is None
        assert list(stream) == []  # ended: stays ended
        # The demo agent: the same answer ask() gives, as text only.
        demo = Agent.fetch(name="Demo Agent").id or ""
    with _session(demo) as session:
        text = "".join(session.stream_text("Hello there", timeout=scaled(10)))
        assert text.startswith('You said: "Hello there".')
        assert text == session.ask("Hello there", timeout=scaled(10)).text.replace(
            "message 2", "message 1"
        )


def test_arguments_are_checked_as_send_checks_them(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_story)
    session = _session(agent)
    with pytest.raises(SessionDisconnectedError):
        session.stream_text("not connected yet")
    with session:
        with pytest.raises(ArgumentTypeError):
            session.stream_text("x", mime_type=5)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            session.stream_text("x", timeout=0)
        assert not [f for f in engine.received() if f["type"] == "post_message"]
        assert "".join(session.stream_text(b"data", filename="notes.txt")) == STORY


@pytest.mark.parametrize("how", ["close", "drop", "stream-then-ask"])
def test_leaving_mid_turn_leaves_no_leftovers_for_the_next_turn(
    engine: LocalEngine, how: str
) -> None:
    agent = engine.add_agent("Echo", turn=_echo_slowly)
    with _session(agent) as session:
        if how == "stream-then-ask":
            events = session.stream("first", timeout=scaled(10))
            assert any(e.type is E.MESSAGE_DELTA for e in events)  # stops at the first
            events.close()
            answer = session.ask("second", timeout=scaled(10)).text
        else:
            stream = session.stream_text("first", timeout=scaled(10))
            assert next(stream) == "[firs"
            if how == "close":
                stream.close()
                stream.close()  # idempotent
                assert list(stream) == []
            else:
                del stream  # a Streamlit rerun abandons it like this
                gc.collect()
            answer = "".join(session.stream_text("second", timeout=scaled(10)))
        assert answer == "[second] " + "tick " * 20
        # and the turn after that is clean too
        assert "".join(session.stream_text("third", timeout=scaled(10))).startswith("[third]")


def test_a_failed_turn_raises_what_ask_raises_and_the_session_goes_on(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Fails", turn=_fails)
    with _session(agent) as session:
        stream = session.stream_text("go", timeout=scaled(10))
        assert next(stream) == "half an answer"
        with pytest.raises(SessionError) as streamed:
            next(stream)
        assert list(stream) == []  # a failed stream is closed
        with pytest.raises(SessionError) as asked:
            session.ask("go", timeout=scaled(10))
        assert type(streamed.value) is type(asked.value)
        assert str(streamed.value) == str(asked.value)
        assert "RuntimeError: the tool exploded" in str(streamed.value)
        third = session.stream_text("again", timeout=scaled(10))  # no leftovers in it
        assert next(third) == "half an answer"
        with pytest.raises(SessionError, match="the tool exploded"):
            next(third)


def test_a_refused_post_raises_at_once(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_story)
    with _session(agent) as session:
        engine.faults.refuse_acks = {"post_message"}
        with pytest.raises(SessionError, match="post_message"):
            list(session.stream_text("refused", timeout=scaled(5)))
        engine.faults.refuse_acks = set()
        assert "".join(session.stream_text("accepted", timeout=scaled(5))) == STORY


@pytest.mark.parametrize("approved", [True, False])
def test_an_approval_pauses_the_stream_and_respond_continues_the_same_turn(
    engine: LocalEngine, approved: bool
) -> None:
    with Agent.fetch(name="Demo Agent").create_session() as session:
        stream = session.stream_text("please approve this note", timeout=scaled(10))
        with pytest.raises(ConversationalRunActionRequiredError) as info:
            for _ in stream:
                pass
        request = info.value.event
        assert request.type is E.APPROVAL_REQUEST and stream.pending is request
        assert info.value.session_id == session.session_id
        assert stream.text == "" and not stream.ended
        same = stream.respond(approved=approved, deny_reason=None if approved else "not now")
        assert same is stream and stream.pending is None
        rest = "".join(stream)
        assert stream.ended and stream.text == rest
        if approved:
            assert "You approved send_email, so I sent your message" in rest
        else:
            assert 'You denied send_email, so nothing was sent. Your reason: "not now".' in rest
        assert rest.startswith('You said: "please approve this note".')
        with pytest.raises(InvalidArgumentError, match="no approval request is pending"):
            stream.respond(approved=True)
        # the next turn is a normal one
        assert "message 2 of this session" in "".join(session.stream_text("next"))


def test_a_turn_left_waiting_for_approval_makes_the_next_turn_say_so(
    engine: LocalEngine,
) -> None:
    with Agent.fetch(name="Demo Agent").create_session() as session:
        stream = session.stream_text("please approve this", timeout=scaled(10))
        with pytest.raises(ConversationalRunActionRequiredError):
            list(stream)
        stream.close()  # left unanswered: the engine still waits for the answer
        with pytest.raises(SessionTimeoutError, match="waiting for an answer to an approval"):
            session.stream_text("something else", timeout=0.3)
        # the new message was not sent behind the unanswered request's back
        assert not [f for f in engine.received() if f.get("content") == "something else"]


@pytest.mark.parametrize("completes_while_away", [False, True])
def test_the_stream_survives_a_reconnect_mid_turn(
    engine: LocalEngine, completes_while_away: bool
) -> None:
    """Deltas sent while the client is away are lost; the text must not be."""
    lost_sent = threading.Event()  # the engine has sent what the client cannot see
    back = threading.Event()  # the client is attached again

    def turn(ctx: TurnContext) -> None:
        if ctx.text != "story":
            return _story(ctx)
        ctx.delta("Once ", message_id="m")
        ctx.delta("upon ", message_id="m")
        ctx.drop()
        ctx.delta("a time ", message_id="m")  # to nobody
        if completes_while_away:
            ctx.complete("Once upon a time there was a websocket.", message_id="m")
            lost_sent.set()
            return
        lost_sent.set()
        assert back.wait(scaled(5))
        ctx.delta("there was ", message_id="m")
        ctx.delta("a websocket.", message_id="m")
        ctx.complete("Once upon a time there was a websocket.", message_id="m")

    agent = engine.add_agent("Story", turn=turn)
    fast = ReconnectPolicy(max_attempts=20, max_time=scaled(5.0), base_delay=0.02, max_delay=0.2)
    session = _session(
        agent, reconnect=fast, on_reconnect=lambda attempt: lost_sent.wait(scaled(5))
    )
    session.on(E.SESSION_CONNECTED, lambda ev: back.set() if ev.data.get("reconnected") else None)
    with session:
        stream = session.stream_text("story", timeout=scaled(10))
        assert [next(stream), next(stream)] == ["Once ", "upon "]
        assert "".join(stream) == "a time there was a websocket."
        assert stream.text == "Once upon a time there was a websocket."
        # The reconnect was seen by a callback, which runs on the callback pool,
        # not in step with the stream: it may come a moment after the text ends.
        assert back.wait(scaled(5)), "no SESSION_CONNECTED(reconnected) reached the callback"
        assert "".join(session.stream_text("again", timeout=scaled(10))) == STORY


def test_each_step_may_run_on_another_thread(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_story)
    with _session(agent) as session:
        stream = session.stream_text("story", timeout=scaled(10))
        chunks: List[str] = []
        threads: Dict[int, int] = {}

        def step() -> None:
            try:
                chunks.append(next(stream))
            except StopIteration:
                chunks.append("")
            threads[threading.get_ident()] = 1

        while not chunks or chunks[-1]:
            worker = threading.Thread(target=step, name="test-step")
            worker.start()
            worker.join(scaled(5))
            assert not worker.is_alive()
        assert "".join(chunks) == STORY
