"""The blocking Session against the local engine on 127.0.0.1: issue 3's points 1-7.

Every test talks to a real WebSocket server; nothing is patched. Where a test must
wait for the engine, it waits on an event with a deadline, never on a sleep.
"""

from __future__ import annotations

import _thread
import io
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from conftest import scaled, until_turn_end

from vectorshift_sync import (
    AuthenticationError,
    SessionDisconnectedError,
    SessionError,
    SessionEvent,
    SessionEventType,
    SessionTimeoutError,
)
from vectorshift_sync.session import Session, UserSessionMessage
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType
pytestmark = pytest.mark.timeout(30)


def _hello(ctx: TurnContext) -> None:
    ctx.stream(f"You said: {ctx.text}", chunk=4)


@pytest.fixture
def agent_id(engine: LocalEngine) -> str:
    return engine.add_agent("Hello Agent", turn=_hello)


@pytest.fixture
def session(engine: LocalEngine, agent_id: str) -> Iterator[Session]:
    with Session(owner_type="agent", owner_id=agent_id) as opened:
        yield opened


def _turn_done(session: Session) -> threading.Event:
    """An event set when the agent goes Idle (seen by a callback, not a listener)."""
    done = threading.Event()
    session.on(E.PARTICIPANT_STATUS, lambda ev: done.set() if ev.is_turn_end else None)
    return done



# --- lifecycle (point 7) ----------------------------------------------------------


def test_connect_creates_then_attaches(engine: LocalEngine, agent_id: str) -> None:
    session = Session(owner_type="agent", owner_id=agent_id)
    assert not session.is_connected
    assert session.connect() is session
    try:
        assert session.is_connected
        assert session.session_id and len(session.session_id) == 24
        frames = engine.received()
        assert frames[:2] == [
            {"type": "create_session", "object_type": "agent", "object_id": agent_id},
            {"type": "connect_session", "session_id": session.session_id},
        ]
        auth = engine.connections[0].headers["Authorization"]
        assert auth == f"Bearer {engine.api_key}"
        assert session.connect() is session  # already connected: no new socket
        assert len(engine.connections) == 1
    finally:
        session.disconnect()
    assert not session.is_connected


def test_disconnect_and_terminate_are_idempotent_and_send_the_right_frames(
    engine: LocalEngine, agent_id: str
) -> None:
    session = Session(owner_type="agent", owner_id=agent_id).connect()
    sid = session.session_id
    session.disconnect()
    session.disconnect()
    assert engine.wait_for_frame("disconnect_session") == {
        "type": "disconnect_session",
        "session_id": sid,
    }
    resumed = Session(session_id=sid).connect()
    resumed.terminate()
    resumed.terminate()
    resumed.disconnect()
    assert engine.wait_for_frame("terminate_session")["session_id"] == sid
    assert [f["type"] for f in engine.received("terminate_session")] == ["terminate_session"]
    with pytest.raises(SessionDisconnectedError, match="terminated"):
        resumed.connect()
    with pytest.raises(SessionError, match="refused connect_session"):
        Session(session_id=sid).connect()  # the engine rejects terminated ids


def test_resume_of_unknown_id_fails_fast_and_leaves_nothing_open(engine: LocalEngine) -> None:
    started = time.monotonic()
    with pytest.raises(SessionError, match="refused connect_session") as info:
        Session(session_id="0123456789abcdef01234567").connect()
    assert time.monotonic() - started < scaled(2.0)
    assert not isinstance(info.value, SessionDisconnectedError)
    assert engine.connections[-1].closed.wait(scaled(2.0))


def test_operations_on_a_closed_session_raise(session: Session) -> None:
    session.disconnect()
    for call in (
        lambda: session.send("hi"),
        lambda: session.send_many(["a"]),
        lambda: session.get_messages(),
        lambda: session.listen(),
    ):
        with pytest.raises(SessionDisconnectedError):
            call()


def test_never_connected_session_refuses_use() -> None:
    session = Session(owner_type="agent", owner_id="x")
    with pytest.raises(SessionDisconnectedError, match="connect"):
        session.send("hi")
    session.disconnect()  # harmless
    with pytest.raises(SessionError, match="owner_type and owner_id"):
        Session().connect()


def test_bad_send_arguments_raise_before_anything_is_sent(
    engine: LocalEngine, session: Session, tmp_path: Path
) -> None:
    with pytest.raises(TypeError):
        session.send({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot read file"):
        session.send(tmp_path / "missing.pdf")
    with pytest.raises(TypeError):
        session.send("x", files="not-a-list")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        session.send("x", mime_type=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        session.send_many("abc")  # type: ignore[arg-type]
    session.get_messages()  # a round trip: anything sent before it has arrived
    assert engine.received("post_message") == []
    assert engine.received("post_messages") == []


def test_missing_key_and_bad_key(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VECTORSHIFT_API_KEY")
    with pytest.raises(SessionError, match="no API key"):
        Session(owner_type="agent", owner_id="a").connect()
    with pytest.raises(AuthenticationError) as info:
        Session(owner_type="agent", owner_id="a", api_key="wrong-key-123456").connect()
    assert info.value.status_code == 401
    assert "wrong-key-123456" not in str(info.value)
    assert "wrong-key-123456" not in repr(Session(api_key="wrong-key-123456"))


def test_failed_acks_and_slow_acks_leave_nothing_open(
    engine: LocalEngine, agent_id: str
) -> None:
    engine.faults.refuse_acks = {"create_session"}
    with pytest.raises(SessionError, match="create_session"):
        Session(owner_type="agent", owner_id=agent_id).connect()
    engine.faults.refuse_acks = {"connect_session"}
    with pytest.raises(SessionError, match="connect_session"):
        Session(owner_type="agent", owner_id=agent_id).connect()
    engine.faults.refuse_acks = set()
    engine.faults.ack_delay = scaled(2.0)
    session = Session(owner_type="agent", owner_id=agent_id, connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SessionTimeoutError) as info:
        session.connect()
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < scaled(1.5)
    assert not session.is_connected


# --- a streamed turn, and no event lost to timing (point 2) ----------------------------


def test_streamed_turn_matches_the_wire(engine: LocalEngine, session: Session) -> None:
    session.send("hello")
    events = until_turn_end(session.listen(timeout=scaled(5)))
    types = [e.type for e in events]
    assert types[0] == E.MESSAGE_POSTED
    assert E.MESSAGE_DELTA in types and E.MESSAGE_COMPLETE in types
    deltas = "".join(e.delta or "" for e in events if e.type == E.MESSAGE_DELTA)
    replies = [e for e in events if e.is_complete and e.is_from_agent]
    assert [e.text for e in replies] == ["You said: hello"] and deltas == "You said: hello"
    echoes = [e for e in events if e.is_complete and not e.is_from_agent]
    assert [e.text for e in echoes] == ["hello"]  # the user's echo is told apart
    assert events[-1].is_turn_end
    assert engine.received("post_message") == [
        {"type": "post_message", "session_id": session.session_id, "content": "hello"}
    ]


def test_listen_started_after_the_whole_reply_still_gets_it(session: Session) -> None:
    done = _turn_done(session)
    session.send("late listener")
    assert done.wait(scaled(5))
    events = until_turn_end(session.listen(timeout=scaled(2)))
    assert events[0].type == E.MESSAGE_POSTED
    assert [e.text for e in events if e.is_complete and e.is_from_agent] == [
        "You said: late listener"
    ]


def test_an_earlier_turn_is_never_replayed(session: Session) -> None:
    done = _turn_done(session)
    session.send("first")
    assert done.wait(scaled(5))
    done.clear()
    session.send("second")
    assert done.wait(scaled(5))
    events = until_turn_end(session.listen(timeout=scaled(2)))
    texts = [e.text for e in events if e.is_complete]
    assert texts == ["second", "You said: second"]


def test_get_messages_has_its_own_channel(session: Session) -> None:
    listener = session.listen(timeout=scaled(5))
    session.send("remember me")
    until_turn_end(listener)
    history = session.get_messages()
    assert [(m.is_user, m.text) for m in history] == [
        (True, "remember me"),
        (False, "You said: remember me"),
    ]
    session.send("next")
    events = until_turn_end(listener)
    assert all("_response_type" not in e.data and "messages" not in e.data for e in events)
    assert all(e.text is not None for e in events if e.is_complete)


def test_history_survives_reconnect_and_resume(engine: LocalEngine, session: Session) -> None:
    session.send("one")
    until_turn_end(session.listen(timeout=scaled(5)))
    sid = session.session_id
    session.disconnect()
    before = len(engine.received())
    with Session(session_id=sid) as resumed:
        # The resumed session's own connect_session, not the first session's.
        frame = engine.wait_for_frame("connect_session", since=before, timeout=scaled(5))
        assert frame["session_id"] == sid
        assert len(engine.received("create_session")) == 1  # attached, not created anew
        assert [m.text for m in resumed.get_messages()] == ["one", "You said: one"]


# --- overflow (point 1) -------------------------------------------------------------


def test_overflow_error_really_arrives_before_later_events(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flood_then_more(ctx: TurnContext) -> None:
        if ctx.text == "flood":
            ctx.flood(50, message_id="m-flood")
        else:
            ctx.delta("after", message_id="m-after")

    agent = engine.add_agent("Flooder", turn=flood_then_more)
    with Session(owner_type="agent", owner_id=agent) as session:
        done = _turn_done(session)
        listener = session.listen(event_types=[E.MESSAGE_DELTA], maxsize=5, timeout=scaled(5))
        session.send("flood")
        assert done.wait(scaled(5))
        # The consumer catches up a little: room again, but the loss is not yet seen.
        got = [next(listener), next(listener)]
        done.clear()
        session.send("more")
        assert done.wait(scaled(5))
        got += [next(listener) for _ in range(5)]
        assert [e.type for e in got[:5]] == [E.MESSAGE_DELTA] * 5
        overflow = got[5]
        assert overflow.type == E.ERROR
        assert overflow.error == "subscriber queue overflow"
        assert overflow.data["dropped_count"] == 45
        assert overflow.data["dropped_event_types"] == {"message_delta": 45}
        assert got[6].delta == "after"  # the later event comes after the error


def test_unbounded_listener_loses_nothing_under_a_20000_delta_flood(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Flooder", turn=lambda ctx: ctx.flood(20_000, message_id="m"))
    with Session(owner_type="agent", owner_id=agent) as session:
        listener = session.listen(event_types=[E.MESSAGE_DELTA, E.PARTICIPANT_STATUS],
                                  maxsize=0, timeout=scaled(20))
        session.send("go")
        count = 0
        for event in listener:
            if event.is_turn_end:
                break
            count += event.type == E.MESSAGE_DELTA
        assert count == 20_000


# --- listen() ends, and says why (point 3) ------------------------------------------------


def test_disconnect_from_another_thread_ends_listen_within_a_second(session: Session) -> None:
    ended = threading.Event()
    waiting = threading.Event()

    def consume() -> None:
        listener = session.listen()
        waiting.set()
        for _ in listener:
            pass
        ended.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert waiting.wait(scaled(2))
    started = time.monotonic()
    session.disconnect()
    assert ended.wait(scaled(1.0))
    assert time.monotonic() - started < scaled(1.0)
    worker.join(scaled(1))


def test_server_drop_is_announced_then_listen_ends_and_connect_resumes(
    engine: LocalEngine, agent_id: str
) -> None:
    """Without automatic reconnection (tests/test_faults.py covers it), a drop ends
    listen() after an ERROR, and connect() resumes the same session explicitly."""
    session = Session(owner_type="agent", owner_id=agent_id, reconnect=False).connect()
    listener = session.listen(timeout=scaled(5))
    sid = session.session_id
    engine.drop_connections()
    events = list(listener)
    assert events[-1].type == E.ERROR
    assert events[-1].error == "connection lost"
    assert "without a close frame" in events[-1].data["reason"]
    assert not session.is_connected
    with pytest.raises(SessionDisconnectedError, match="connection was lost"):
        session.send("anyone?")
    session.connect()  # explicit resume of the same session id
    assert session.session_id == sid
    assert engine.received("connect_session")[-1] == {"type": "connect_session", "session_id": sid}
    session.send("back")
    texts = [e.text for e in until_turn_end(session.listen(timeout=scaled(5))) if e.is_complete]
    assert texts == ["back", "You said: back"]
    session.disconnect()


def test_listen_timeout_raises_and_the_iterator_stays_usable(session: Session) -> None:
    listener = session.listen(event_types=[E.MESSAGE_COMPLETE], timeout=0.2)
    with pytest.raises(SessionTimeoutError) as info:
        next(listener)
    assert isinstance(info.value, TimeoutError)
    session.send("still there")
    assert next(listener).text == "still there"


def test_ctrl_c_interrupts_a_blocked_listen(session: Session) -> None:
    listener = session.listen(event_types=[E.MESSAGE_COMPLETE])
    timer = threading.Timer(0.3, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(listener)
    finally:
        timer.cancel()
    assert time.monotonic() - started < scaled(1.5)


def test_malformed_and_unknown_frames_do_not_kill_the_reader(
    engine: LocalEngine, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vectorshift_sync")
    listener = session.listen(timeout=scaled(5))
    for raw in ("not json", "[1, 2]", '"text"', '{"type": "message_notification", "message": 5}',
                '{"type": "brand_new_type"}', '{"no": "type"}'):
        engine.send_raw(raw, session_id=session.session_id)
    session.send("survived?")
    events = until_turn_end(listener)
    assert [e.text for e in events if e.is_complete] == ["survived?", "You said: survived?"]
    assert "brand_new_type" in caplog.text and "malformed" in caplog.text


# --- callbacks (point 4) -----------------------------------------------------------------


def test_callbacks_run_in_order_off_the_reader_and_are_isolated(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    seen: List[str] = []
    threads: set[str] = set()
    done = threading.Event()

    @session.on(E.MESSAGE_DELTA)
    def collect(event: SessionEvent) -> None:
        threads.add(threading.current_thread().name)
        seen.append(event.delta or "")

    def broken(event: SessionEvent) -> None:
        raise RuntimeError("callback bug")

    session.on(None, broken)
    session.on([E.PARTICIPANT_STATUS], lambda ev: done.set() if ev.is_turn_end else None)
    session.send("ordered")
    assert done.wait(scaled(5))
    assert "".join(seen) == "You said: ordered"
    # On the callback pool, never the I/O thread; in order, one at a time (above),
    # but not pinned to one worker: a job that finds more events queued goes back
    # to the pool, and a free worker (not always the same one) takes it.
    assert threads and all(name.startswith("vectorshift-callbacks") for name in threads)
    assert "callback bug" in caplog.text and "Traceback" in caplog.text
    assert session.off(collect) and not session.off(collect)
    done.clear()
    seen.clear()
    session.send("again")
    assert done.wait(scaled(5))
    assert seen == []



def test_on_callback_error_gets_each_failure_and_a_failing_hook_stops_nothing(
    engine: LocalEngine, agent_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: List[Any] = []
    done = threading.Event()

    def hook(exc: Exception, event: SessionEvent) -> None:
        calls.append((exc, event))
        raise ValueError("the hook is broken too")

    def broken(event: SessionEvent) -> None:
        raise RuntimeError(f"callback bug on {event.message_id}")

    with Session(owner_type="agent", owner_id=agent_id, on_callback_error=hook) as session:
        session.on(E.MESSAGE_COMPLETE, broken)
        session.on(E.PARTICIPANT_STATUS, lambda ev: done.set() if ev.is_turn_end else None)
        session.send("hook me")
        assert done.wait(scaled(5))  # callbacks went on after both failures
    # One call per failure (the echo and the reply), in order, with what failed on what.
    assert [event.text for _, event in calls] == ["hook me", "You said: hook me"]
    for exc, event in calls:
        assert isinstance(exc, RuntimeError) and str(exc) == f"callback bug on {event.message_id}"
        assert event.type is E.MESSAGE_COMPLETE
    assert caplog.text.count("on_callback_error hook failed") == 2
    with pytest.raises(TypeError, match="on_callback_error"):
        Session(owner_type="agent", owner_id=agent_id, on_callback_error="log it")  # type: ignore[arg-type]


def test_a_callback_may_send_respond_and_disconnect(engine: LocalEngine) -> None:
    agent = engine.add_agent("Demo-like", turn=None)  # the demo behaviour: approvals
    session = Session(owner_type="agent", owner_id=agent).connect()
    finished = threading.Event()

    def on_event(event: SessionEvent) -> None:
        if event.type == E.APPROVAL_REQUEST:
            session.respond(event, approved=True, confirm={"to": "team@example.com"})
        elif event.is_turn_end and not finished.is_set():
            finished.set()
            session.send("and a follow-up")
            session.disconnect()

    session.on(None, on_event)
    session.send("please approve the email")
    assert finished.wait(scaled(10))
    assert engine.wait_for_frame("disconnect_session", timeout=scaled(5))
    approval = engine.received("post_message")[1]
    assert approval["content"]["value"] == {
        "tool_call_approval": {"confirm": {"to": "team@example.com"}}
    }
    assert approval["parent_message_id"]
    assert engine.received("post_message")[2]["content"] == "and a follow-up"


# --- threads and concurrency (point 5) -------------------------------------------------------


def test_threads_are_named_daemon_and_bounded(session: Session) -> None:
    """One I/O thread serves the process; callbacks run on the shared pool."""
    ran = threading.Event()
    session.on(None, lambda ev: ran.set())
    session.send("hi")
    assert ran.wait(scaled(5))
    mine = [
        t
        for t in threading.enumerate()
        if t.name.startswith(("vectorshift-io", "vectorshift-callbacks", "vectorshift-reconnect"))
    ]
    kinds = sorted({t.name.rsplit("-", 1)[0] if t.name[-1].isdigit() else t.name for t in mine})
    assert kinds == ["vectorshift-callbacks", "vectorshift-io"]
    assert [t.name for t in mine].count("vectorshift-io") == 1
    assert all(t.daemon for t in mine)


def test_send_is_safe_from_many_threads(engine: LocalEngine, session: Session) -> None:
    def burst(n: int) -> None:
        for i in range(25):
            session.send_many([f"t{n}-{i}"])

    workers = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(scaled(10))
    session.get_messages()
    posted = engine.received("post_messages")
    assert len(posted) == 200
    assert sorted(f["messages"][0] for f in posted) == sorted(
        f"t{n}-{i}" for n in range(8) for i in range(25)
    )


def test_several_listeners_in_several_threads_each_get_every_event(session: Session) -> None:
    results: List[List[str]] = [[], [], []]
    ready = threading.Barrier(4)

    def consume(slot: int, listener: Iterator[SessionEvent]) -> None:
        ready.wait()
        for event in listener:
            results[slot].append(event.type.value)
            if event.is_turn_end:
                return

    workers = [
        threading.Thread(target=consume, args=(i, session.listen(timeout=scaled(5))))
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    session.send("fan out")
    for worker in workers:
        worker.join(scaled(5))
    # The first listener also took the backlog of the connect; from the turn on,
    # all three saw the same events.
    turns = [r[r.index("message_posted"):] for r in results]
    assert turns[0] and turns[0] == turns[1] == turns[2]


# --- close is bounded (point 6) ----------------------------------------------------------------


def test_close_is_bounded_when_the_server_goes_silent(engine: LocalEngine, agent_id: str) -> None:
    session = Session(owner_type="agent", owner_id=agent_id, close_timeout=0.3).connect()
    engine.faults.half_open = True
    started = time.monotonic()
    session.disconnect()
    assert time.monotonic() - started < scaled(1.5)


def test_half_open_connection_is_detected(engine: LocalEngine, agent_id: str) -> None:
    session = Session(owner_type="agent", owner_id=agent_id, ping_interval=0.1,
                      idle_timeout=0.5, reconnect=False).connect()
    listener = session.listen(event_types=[E.ERROR], timeout=scaled(3))
    engine.faults.half_open = True
    started = time.monotonic()
    event = next(listener)
    assert event.error == "connection lost" and "half-open" in event.data["reason"]
    assert time.monotonic() - started < scaled(2.0)
    assert list(listener) == []
    session.disconnect()


# --- the rest of the official surface ----------------------------------------------------------


def test_send_with_files_and_send_many_match_the_wire(
    engine: LocalEngine, session: Session, tmp_path: Path
) -> None:
    chart = tmp_path / "chart.png"
    chart.write_bytes(b"\x89PNG")
    session.send("summarize", files=[chart, b"raw"])
    session.send_many(["a", UserSessionMessage(content=b"zz", filename="z.csv"),
                       io.BytesIO(b"q")])
    session.get_messages()
    first, second = engine.received("post_messages")
    assert first["messages"][0] == "summarize"
    assert first["messages"][1]["value"]["metadata"] == {"name": "chart.png",
                                                         "mime_type": "image/png"}
    assert first["messages"][2]["value"]["metadata"]["name"] == "file"
    assert second["messages"][0] == "a"
    assert second["messages"][1]["value"]["metadata"] == {"name": "z.csv", "mime_type": "text/csv"}


def test_approval_deny_reaches_the_model(engine: LocalEngine) -> None:
    agent = engine.add_agent("Gate", turn=None)
    with Session(owner_type="agent", owner_id=agent) as session:
        listener = session.listen(timeout=scaled(5))
        session.send("please approve the email")
        request = next(e for e in listener if e.type == E.APPROVAL_REQUEST)
        assert request.requires_action and request.message_id
        with pytest.raises(TypeError):
            session.respond(request)
        with pytest.raises(TypeError):
            session.respond(SessionEvent(E.MESSAGE_DELTA, "s"), approved=True)
        session.respond_approval(request, approved=False, deny_reason="not today")
        rest = until_turn_end(listener)
        reply = [e.text for e in rest if e.is_complete and e.is_from_agent]
        assert reply and "not today" in (reply[-1] or "")
        frame = engine.received("post_message")[-1]
        assert frame == {
            "type": "post_message",
            "session_id": session.session_id,
            "content": {"type_string": "response_message",
                        "value": {"tool_call_approval": {"deny": "not today"}}},
            "parent_message_id": request.message_id,
        }


def test_frames_are_json_like_the_official_sdk(engine: LocalEngine, session: Session) -> None:
    session.send("héllo")
    session.get_messages()  # a round trip: the post_message has arrived
    frame = engine.received("post_message")[0]
    assert frame["content"] == "héllo"
    raw = [r for r in engine.connections[0].raw_frames if '"post_message"' in r]
    # Byte for byte what the official SDK's json.dumps() writes: default separators,
    # non-ASCII escaped (ensure_ascii), keys in insertion order.
    assert raw == [json.dumps(frame)]
    assert '"content": "h\\u00e9llo"' in raw[0]


# --- the official SDK's defects we must not have (PROTOCOL.md section 7) ---------------------


def test_get_messages_has_a_real_deadline_despite_pongs(engine: LocalEngine, agent_id: str) -> None:
    """D6: the SDK restarts its 30 s wait on every pong and can hang for ever."""
    engine.faults.ignore = {"get_messages"}
    with Session(owner_type="agent", owner_id=agent_id, ping_interval=0.05) as session:
        pongs = session.listen(event_types=[E.PONG], timeout=scaled(2))
        started = time.monotonic()
        with pytest.raises(SessionTimeoutError, match="history"):
            session.get_messages(timeout=0.6)
        assert scaled(0.55) <= time.monotonic() - started < scaled(1.5)
        assert next(pongs).type == E.PONG  # the server was answering pings all along
        engine.faults.ignore = set()
        assert session.get_messages() == []  # the session is still usable


def test_get_messages_fails_on_an_error_reply(engine: LocalEngine, session: Session) -> None:
    """D6: the SDK ignores error frames for get_messages and waits on."""
    engine.faults.fail_requests = {"get_messages"}
    listener = session.listen(event_types=[E.ERROR], timeout=0.3)
    with pytest.raises(SessionError, match="get_messages failed"):
        session.get_messages(timeout=scaled(2))
    with pytest.raises(SessionTimeoutError):
        next(listener)  # answered privately: listeners never see it


def test_an_abandoned_listener_is_pruned_not_flooded(
    engine: LocalEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """D9: a listener nobody iterates any more must not fill up and log forever."""
    import gc

    full = "a listener queue is full; events were dropped"  # the library's DEBUG line
    agent = engine.add_agent("Flooder", turn=lambda ctx: ctx.flood(3000, message_id="m"))
    with caplog.at_level(logging.DEBUG, logger="vectorshift_sync"):
        with Session(owner_type="agent", owner_id=agent) as session:
            # A listener still held and not iterated fills up: the line is logged and
            # the overflow ERROR waits in it (the check below sees what it claims to).
            held = session.listen(maxsize=4, timeout=scaled(5))
            done = _turn_done(session)
            session.send("go")
            assert done.wait(scaled(5))
            assert full in caplog.text
            kinds = []
            for event in held:
                kinds.append((event.type, event.data.get("error")))
                if event.type is E.ERROR:
                    break
            assert kinds[-1] == (E.ERROR, "subscriber queue overflow")
        caplog.clear()
        with Session(owner_type="agent", owner_id=agent) as session:
            listener = session.listen(maxsize=4)
            next(listener)
            del listener
            gc.collect()
            done = _turn_done(session)
            session.send("go")
            assert done.wait(scaled(5))
            assert session._fanout.listeners == ()
        assert full not in caplog.text


def test_tls_and_proxy_failures_are_clear_connection_errors(
    engine: LocalEngine, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vectorshift_sync.session import SessionConnectionError

    monkeypatch.setenv("VECTORSHIFT_WS_URL", engine.ws_url.replace("ws://", "wss://"))
    with pytest.raises(SessionConnectionError, match="could not open the WebSocket"):
        Session(owner_type="agent", owner_id=agent_id, connect_timeout=scaled(2),
                sslopt={"cert_reqs": 0}).connect()
    monkeypatch.setenv("VECTORSHIFT_WS_URL", engine.ws_url)
    with socket.socket() as closed:  # bound, never listening, kept bound: refused
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(SessionConnectionError, match="refused"):
            Session(owner_type="agent", owner_id=agent_id, connect_timeout=scaled(2),
                    proxy={"http_proxy_host": "127.0.0.1",
                           "http_proxy_port": closed.getsockname()[1],
                           # websocket-client 1.6 bypasses proxies for 127.0.0.1
                           # unless told which hosts to bypass
                           "http_no_proxy": ["example.invalid"],
                           "proxy_type": "http"}).connect()


def test_handshake_refusal_maps_to_the_status_family(engine: LocalEngine, agent_id: str) -> None:
    from vectorshift_sync import InternalServerError

    engine.faults.reject_handshake = 503
    with pytest.raises(InternalServerError) as info:
        Session(owner_type="agent", owner_id=agent_id).connect()
    assert info.value.status_code == 503 and info.value.endpoint == "/v1/ws/session"


def test_a_huge_frame_is_delivered(engine: LocalEngine) -> None:
    big = "x" * (10 * 1024 * 1024)
    agent = engine.add_agent("Big", turn=lambda ctx: ctx.complete(big))
    with Session(owner_type="agent", owner_id=agent) as session:
        assert session.ask("big?", timeout=scaled(20)).text == big

