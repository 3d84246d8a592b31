"""Fault injection: every fault ends in a recovered stream or a clear, documented error.

Each case runs against the local engine's fault controls with a bounded time; none may
hang or leave a dead reader behind (the conftest checks that no session thread
outlives a test). Timing parameters are scaled down from the defaults so the suite
stays fast; ``test_defaults_notice_half_open_and_give_up_within_30s`` checks the
defaults themselves and is marked slow.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Iterator, List, Type

import pytest
from conftest import scaled, until_turn_end

from vectorshift_sync import (
    Agent,
    AuthenticationError,
    SessionDisconnectedError,
    SessionError,
    SessionEvent,
    SessionEventType,
    SessionRefusedError,
    SessionTimeoutError,
)
from vectorshift_sync.session import (
    ReconnectAttempt,
    ReconnectPolicy,
    Session,
    SessionConnectionError,
)
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType
pytestmark = pytest.mark.timeout(60)

FAST = ReconnectPolicy(max_attempts=20, max_time=scaled(3.0), base_delay=0.02, max_delay=0.2)


def _slow_story(ctx: TurnContext) -> None:
    ctx.stream("Once upon a time there was a very patient websocket.", chunk=3, delay=0.02)


def _fast_session(agent_id: str, **options: object) -> Session:
    options.setdefault("reconnect", FAST)
    return Session(owner_type="agent", owner_id=agent_id, **options)  # type: ignore[arg-type]



def test_drop_mid_stream_recovers_and_loses_no_completed_reply(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with _fast_session(agent) as session:
        listener = session.listen(timeout=scaled(10))
        engine.faults.drop_after_frames = 6  # ack, echo, Processing, then a few deltas
        started = time.monotonic()
        session.send("tell me a story")
        events = until_turn_end(listener)
        recovered_in = time.monotonic() - started
        kinds = [(e.type, e.data.get("reconnecting"), e.data.get("reconnected")) for e in events]
        assert (E.ERROR, True, None) in kinds
        assert (E.SESSION_CONNECTED, None, True) in kinds
        replies = [e.text for e in events if e.is_complete and e.is_from_agent]
        assert replies == ["Once upon a time there was a very patient websocket."]
        assert recovered_in < scaled(5)
        # the session works normally afterwards
        assert session.ask("again", timeout=scaled(10)).text.startswith("Once upon")


def test_a_reply_that_completes_while_away_is_recovered_from_history(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    reply_stored = threading.Event()

    def hold_until_the_reply_is_stored(attempt: ReconnectAttempt) -> None:
        # Keep the client away until the engine has finished and stored the reply.
        assert engine.wait_for_frame("post_message", timeout=scaled(5))
        deadline = time.monotonic() + scaled(5)
        while time.monotonic() < deadline and not reply_stored.is_set():
            history = engine.history(attempt.session_id)
            if any(m["content"].get("status") == "Complete" and "object_id" in m["sender"]
                   and m["content"].get("type") == "data_type_message" for m in history):
                reply_stored.set()
            else:
                reply_stored.wait(0.01)

    with _fast_session(agent, on_reconnect=hold_until_the_reply_is_stored) as session:
        engine.faults.drop_after_frames = 4  # ack, echo, Processing, one delta
        events = list(session.stream("story while away", timeout=scaled(10)))
        assert reply_stored.is_set()
        recovered = [e for e in events if e.data.get("recovered")]
        assert [e.type for e in recovered] == [E.MESSAGE_COMPLETE, E.PARTICIPANT_STATUS]
        assert recovered[0].text == "Once upon a time there was a very patient websocket."
        assert events[-1].is_turn_end  # the stream ends although the real Idle was lost


def test_ask_survives_a_mid_turn_drop(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with _fast_session(agent) as session:
        engine.faults.drop_after_frames = 8
        result = session.ask("story please", timeout=scaled(10))
        assert result.text == "Once upon a time there was a very patient websocket."


def test_server_restart_on_the_same_port(engine: LocalEngine) -> None:
    agent = Agent.fetch(name="Demo Agent")
    with _fast_session(agent.id or "") as session:
        first = session.ask("before the restart", timeout=scaled(10))
        reconnected = threading.Event()
        session.on(E.SESSION_CONNECTED,
                   lambda ev: reconnected.set() if ev.data.get("reconnected") else None)
        started = time.monotonic()
        engine.restart()
        assert reconnected.wait(scaled(5))
        assert time.monotonic() - started < scaled(5)
        second = session.ask("after the restart", timeout=scaled(10))
        assert "after the restart" in second.text and first.session_id == second.session_id
        texts = [m.text for m in session.get_messages() if m.is_user]
        assert texts == ["before the restart", "after the restart"]


def test_half_open_is_noticed_and_recovers_when_the_server_answers_again(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    session = _fast_session(agent, ping_interval=0.1, idle_timeout=0.5,
                            connect_timeout=0.5).connect()
    try:
        errors = session.listen(event_types=[E.ERROR, E.SESSION_CONNECTED], timeout=scaled(5))
        engine.faults.half_open = True
        started = time.monotonic()
        lost = next(e for e in errors if e.type == E.ERROR)  # past the connect's backlog
        assert lost.data["reconnecting"] is True and "half-open" in lost.data["reason"]
        assert time.monotonic() - started < scaled(1.5)
        engine.faults.half_open = False
        engine.drop_connections()  # the mute sockets of failed attempts
        back = next(e for e in errors if e.type == E.SESSION_CONNECTED)
        assert back.data["reconnected"] is True
        assert session.ask("still there?", timeout=scaled(10)).text.startswith("Once upon")
    finally:
        session.disconnect()


def test_a_reader_starved_past_idle_timeout_with_bytes_waiting_is_not_half_open(
    engine: LocalEngine,
) -> None:
    # A process starved of CPU (or a long GC pause) can leave the reader away longer
    # than idle_timeout while the server's bytes wait in the socket: that is not a
    # dead link, and reconnecting would lose the deltas in flight.
    agent = engine.add_agent("Story", turn=_slow_story)
    session = _fast_session(agent, ping_interval=5.0, idle_timeout=0.5).connect()
    try:
        route = session._link.on_messages
        stalled: List[int] = []
        read_again = threading.Event()

        def stall_once(connection: Any, raws: List[bytes]) -> None:
            route(connection, raws)
            if threading.current_thread().name == "vectorshift-io":
                if stalled:
                    read_again.set()
                else:
                    stalled.append(1)
                    time.sleep(1.0)  # the fault: the engine streams on; nobody reads

        session._link.on_messages = stall_once  # type: ignore[method-assign]
        session.send("tell me a story")  # nobody listens: the reader reads it all
        # Past the stall the same reader must read on, not declare the link dead.
        assert read_again.wait(scaled(5)), "the reader gave up on a live link"
        assert stalled == [1]
        events = until_turn_end(session.listen(timeout=scaled(5)))  # backlog, then live
        assert not [e for e in events if e.type is E.ERROR]
        replies = [e.text for e in events if e.is_complete and e.is_from_agent]
        assert replies == ["Once upon a time there was a very patient websocket."]
        assert session.is_connected and session._link.reconnect_attempts == 0
    finally:
        session.disconnect()


def test_unreachable_server_makes_the_session_give_up(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    policy = ReconnectPolicy(max_attempts=50, max_time=1.0, base_delay=0.02, max_delay=0.2)
    session = _fast_session(agent, reconnect=policy).connect()
    listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
    started = time.monotonic()
    engine.stop()  # nothing listens on the port any more: refused connections
    events = list(listener)
    flags = [e.data["reconnecting"] for e in events]
    # (an attempt may still land while the engine shuts down, and be dropped again)
    assert flags[-1] is False and set(flags[:-1]) == {True}
    assert "gave up" in events[-1].data["reason"]
    assert time.monotonic() - started < scaled(2.5)
    with pytest.raises(SessionDisconnectedError):
        session.send("hello?")
    session.disconnect()


def test_rejected_key_during_reconnect_gives_up_at_once(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    attempts: List[ReconnectAttempt] = []
    session = _fast_session(agent, on_reconnect=attempts.append).connect()
    listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
    engine.faults.reject_handshake = 401
    engine.drop_connections()
    events = list(listener)
    assert [e.data["reconnecting"] for e in events] == [True, False]
    assert "401" in events[-1].data["reason"]
    assert len(attempts) == 1  # not retried: the key will not get better
    session.disconnect()


def test_terminated_while_away_gives_up_at_once(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    terminated = threading.Event()
    attempts: List[ReconnectAttempt] = []

    def hold_until_terminated(attempt: ReconnectAttempt) -> None:
        attempts.append(attempt)
        terminated.wait(scaled(5))  # keep the session away while another client kills it

    session = _fast_session(agent, on_reconnect=hold_until_terminated).connect()
    listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
    engine.drop_connections()
    assert next(listener).data["reconnecting"] is True
    with Session(session_id=session.session_id, reconnect=False) as other:
        other.terminate()
    assert engine.wait_for_frame("terminate_session", timeout=scaled(5))
    terminated.set()
    last = next(listener)
    assert last.data["reconnecting"] is False and "refused connect_session" in last.data["reason"]
    assert len(attempts) == 1
    session.disconnect()


def test_on_reconnect_can_abort(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    session = _fast_session(agent, on_reconnect=lambda attempt: False).connect()
    listener = session.listen(event_types=[E.ERROR], timeout=scaled(5))
    engine.drop_connections()
    assert [e.data["reconnecting"] for e in listener] == [True, False]
    session.disconnect()


def _drop_and_keep_away(engine: LocalEngine, session: Session) -> None:
    """Drop the session's connection and refuse its reconnects (503) until told."""
    lost = threading.Event()
    session.on(E.ERROR, lambda ev: lost.set() if ev.data.get("reconnecting") else None)
    engine.faults.reject_handshake = 503
    engine.drop_connections()
    assert lost.wait(scaled(5))


def test_send_while_reconnecting_waits_then_goes_through(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with _fast_session(agent) as session:
        _drop_and_keep_away(engine, session)
        threading.Timer(0.3, setattr, (engine.faults, "reject_handshake", None)).start()
        session.send("queued behind the reconnect")  # blocks until the session is back
        assert engine.wait_for_frame(
            "post_message", predicate=lambda f: f["content"] == "queued behind the reconnect",
            timeout=scaled(5),
        )


@pytest.mark.parametrize(
    ("bound", "call", "error", "match"),
    [
        ("write_timeout", lambda s: s.send("hi"), SessionDisconnectedError, "reconnecting"),
        ("connect_timeout", lambda s: s.connect(), SessionTimeoutError, "still reconnecting"),
    ],
    ids=["send", "connect"],
)
def test_send_and_connect_while_reconnecting_wait_for_it_and_are_bounded(
    engine: LocalEngine,
    bound: str,
    call: Callable[[Session], object],
    error: Type[Exception],
    match: str,
) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    session = _fast_session(agent, **{bound: 0.3}).connect()
    try:
        _drop_and_keep_away(engine, session)
        started = time.monotonic()
        with pytest.raises(error, match=match):
            call(session)
        assert 0.3 <= time.monotonic() - started < scaled(1.0)
        assert not session.is_connected
    finally:
        session.disconnect()


def test_refused_connection_dns_failure_and_401_at_connect(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with pytest.raises(AuthenticationError):
        Session(owner_type="agent", owner_id=agent, api_key="not-the-key-1234").connect()
    monkeypatch.setenv("VECTORSHIFT_WS_URL", "ws://nonexistent.invalid/v1")
    with pytest.raises(SessionConnectionError, match="could not open"):
        Session(owner_type="agent", owner_id=agent, connect_timeout=scaled(2)).connect()
    url = engine.ws_url
    engine.stop()
    monkeypatch.setenv("VECTORSHIFT_WS_URL", url)
    with pytest.raises(SessionConnectionError, match="refused"):
        Session(owner_type="agent", owner_id=agent).connect()


def test_unknown_session_id_fails_fast(engine: LocalEngine) -> None:
    with pytest.raises(SessionRefusedError, match="session not found"):
        Session(session_id="f" * 24).connect()


def test_failed_post_ack_surfaces_as_an_error(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with _fast_session(agent) as session:
        engine.faults.refuse_acks = {"post_message"}
        with pytest.raises(SessionError, match="post_message"):
            session.ask("refused", timeout=scaled(5))


def test_junk_frames_then_a_normal_turn(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    with _fast_session(agent) as session:
        for junk in ("{", "null", "[]", '{"type": 7}', '{"type": "future_frame", "x": 1}'):
            engine.send_raw(junk, session_id=session.session_id)
        assert session.ask("ok?", timeout=scaled(10)).text.startswith("Once upon")


def test_slow_consumer_under_a_flood_gets_an_overflow_error_not_a_hang(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Flood", turn=lambda ctx: ctx.flood(5000, message_id="m"))
    with _fast_session(agent) as session:
        done = threading.Event()
        session.on(E.PARTICIPANT_STATUS, lambda ev: done.set() if ev.is_turn_end else None)
        listener = session.listen(event_types=[E.MESSAGE_DELTA, E.ERROR], maxsize=16,
                                  timeout=scaled(10))
        session.send("flood")
        seen = [next(listener)]
        assert done.wait(scaled(10))  # a consumer that fell behind the whole flood
        while True:
            try:
                seen.append(next(listener))
            except TimeoutError:
                break
            listener._timeout = 0.3  # once drained, stop waiting
        overflow = [e for e in seen if e.error == "subscriber queue overflow"]
        # The loss is announced right behind what fitted (16 queued, plus at most one
        # batch already in the consumer's hands); if the flood overtakes the first
        # next(), a second episode may follow. Every delta is delivered or counted.
        assert overflow and 16 <= seen.index(overflow[0]) <= 33
        delivered = sum(1 for e in seen if e.type == E.MESSAGE_DELTA)
        dropped = sum(e.data["dropped_event_types"]["message_delta"] for e in overflow)
        assert delivered + dropped == 5000


def test_disconnect_racing_the_reader(engine: LocalEngine) -> None:
    agent = engine.add_agent("Flood", turn=lambda ctx: ctx.flood(2000, message_id="m"))
    rng = random.Random(7)
    for _ in range(15):
        session = _fast_session(agent).connect()
        listener = session.listen(maxsize=0)
        session.send("go")
        ended = threading.Event()

        def drain(listener: Iterator[SessionEvent] = listener,
                  ended: threading.Event = ended) -> None:
            for _ in listener:
                pass
            ended.set()

        worker = threading.Thread(target=drain)
        worker.start()
        time.sleep(rng.uniform(0, 0.02))  # land the disconnect at a random point
        session.disconnect()
        assert ended.wait(scaled(1.0))
        worker.join(scaled(1))
        assert not session.is_connected


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_defaults_notice_half_open_and_give_up_within_30s(engine: LocalEngine) -> None:
    agent = engine.add_agent("Story", turn=_slow_story)
    session = Session(owner_type="agent", owner_id=agent).connect()  # all defaults
    listener = session.listen(event_types=[E.ERROR], timeout=40)
    engine.faults.half_open = True
    started = time.monotonic()
    lost = next(listener)
    noticed = time.monotonic() - started
    assert lost.data["reconnecting"] is True and noticed <= 15.0 + 1.0
    last = next(listener)
    gave_up = time.monotonic() - started
    assert last.data["reconnecting"] is False and gave_up <= 30.0 + 1.0
    with pytest.raises(SessionDisconnectedError):
        session.send("anyone?")
    session.disconnect()


def test_a_live_idle_after_the_reconnect_never_overtakes_the_recovered_reply(
    engine: LocalEngine,
) -> None:
    # The reply completes on the engine while the link is down; the turn's Idle then
    # reaches the new connection before the history answers the reconnect's
    # get_messages. The recovered reply must still come before that Idle, or a
    # consumer ends the turn without its answer (seen at scale: 1 in 300).
    turn_done = threading.Event()

    def drop_then_finish(ctx: TurnContext) -> None:
        ctx.delta("Once ", message_id="answer")
        ctx.drop()  # the link goes; the reply completes meanwhile
        ctx.complete("Once upon a time.", message_id="answer")
        engine.wait_for_frame("get_messages", timeout=scaled(10))  # reconnected
        turn_done.set()  # the engine now sends Idle on the new connection

    agent = engine.add_agent("Story", turn=drop_then_finish)
    engine.faults.ignore = {"get_messages"}  # the history answers late, by hand below
    with _fast_session(agent) as session:
        listener = session.listen(timeout=scaled(10))
        session.send("tell me a story")
        assert turn_done.wait(scaled(10))
        sid = session.session_id or ""
        # Once the engine has written that Idle, answer the history request: the
        # same TCP stream carries the answer after the Idle.
        deadline = time.monotonic() + scaled(5)
        while engine.sessions[sid].turn_running:
            assert time.monotonic() < deadline, "the engine never ended the turn"
            time.sleep(0.005)
        engine.faults.ignore = set()
        assert engine.send_raw(
            {"type": "get_messages", "session_id": sid, "messages": engine.history(sid)},
            session_id=sid,
        )
        events = until_turn_end(listener)
    replies = [e for e in events if e.type is E.MESSAGE_COMPLETE and e.is_from_agent]
    assert [e.text for e in replies] == ["Once upon a time."]
    assert replies[0].data.get("recovered") is True
    assert [e for e in events if e.is_turn_end] == [events[-1]]
