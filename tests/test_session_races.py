"""Races between a session's connection lifetimes, against the real local engine.

Each test drives one interleaving that the I/O thread, a reconnect attempt, and
``connect()``/``disconnect()`` can produce, deterministically: by calling a private
step at the moment the race would, or by holding a step back with a wrapper. None
patches a socket.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List

import pytest
from conftest import scaled

from vectorshift_sync import SessionEventType
from vectorshift_sync.session import ReconnectAttempt, ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine

E = SessionEventType
pytestmark = pytest.mark.timeout(60)


def _ack(session_id: str) -> bytes:
    frame = {"type": "connect_session", "session_id": session_id, "success": True}
    return json.dumps(frame).encode()


def test_a_late_handshake_ack_does_not_hold_back_every_later_event(engine: LocalEngine) -> None:
    # The attempt's connect_session acknowledgement comes only after the attempt timed
    # out and dropped its connection (the I/O thread had read it just before). Nobody
    # waits for it any more, so it must not start holding events back for a history
    # look that will never come: the next connect() must work normally.
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    policy = ReconnectPolicy(max_attempts=1, max_time=scaled(5.0), base_delay=0.02)
    session = Session(
        owner_type="agent", owner_id=agent, reconnect=policy, connect_timeout=scaled(0.5)
    ).connect()
    try:
        sid = session.session_id
        assert sid
        drop = session._link.drop
        late: List[int] = []

        def drop_then_late_ack(connection: Any) -> None:
            drop(connection)
            late.append(1)
            session._link.on_messages(connection, [_ack(sid)])  # as the I/O thread, a moment late

        session._link.drop = drop_then_late_ack  # type: ignore[method-assign]
        errors = session.listen(event_types=[E.ERROR], timeout=scaled(5))
        engine.faults.ignore = {"connect_session"}  # the attempt's ack never comes in time
        engine.drop_connections()
        assert [e.data["reconnecting"] for e in errors] == [True, False]  # gave up
        assert late == [1]
        engine.faults.reset()
        session.connect()
        assert session.ask("still there?", timeout=scaled(5)).text == "hi"
    finally:
        session.disconnect()


def _status(session_id: str, marker: str) -> Dict[str, Any]:
    return {
        "type": "participant_status",
        "session_id": session_id,
        "message": {"status": "Processing", "marker": marker},
    }


def test_events_read_while_disconnecting_are_not_replayed_after_the_next_connect(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    session = Session(owner_type="agent", owner_id=agent, reconnect=False).connect()
    try:
        sid = session.session_id
        assert sid
        route = session._link.on_messages
        routed = threading.Event()

        def noting(connection: Any, raws: List[bytes]) -> None:
            route(connection, raws)
            routed.set()

        session._link.on_messages = noting  # type: ignore[method-assign]
        connection = session._link.connection
        assert connection is not None
        send_close = connection.send_close

        def an_event_first(*args: Any, **kwargs: Any) -> None:
            # disconnect() has begun: the engine's frame is read during the close.
            routed.clear()
            # (the engine may have detached it from the session on disconnect_session)
            assert engine.send_raw(_status(sid, "during the close")) == 1
            assert routed.wait(scaled(5))
            send_close(*args, **kwargs)

        connection.send_close = an_event_first  # type: ignore[method-assign]
        session.disconnect()
        session.connect()
        listener = session.listen(timeout=scaled(5))
        assert engine.send_raw(_status(sid, "after the connect"), session_id=sid) == 1
        # The backlog still keeps what came before the first listen() of the live
        # session (its own SESSION_CONNECTED), and nothing of the last one.
        first, second = next(listener), next(listener)
        assert first.type is E.SESSION_CONNECTED, first
        assert second.data.get("marker") == "after the connect", second
    finally:
        session.disconnect()


def test_a_reconnect_attempt_that_outlives_disconnect_never_attaches_to_a_later_life(
    engine: LocalEngine,
) -> None:
    # An attempt is still dialling when disconnect() gives up waiting for it; the
    # session is connected again and drops again, so it is RECONNECTING once more
    # when the old attempt's dial returns. That attempt belongs to a finished cycle:
    # it must close its socket and leave the new cycle alone.
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    stale_dialling, release_stale = threading.Event(), threading.Event()
    second_cycle, cycle_waiting = threading.Event(), threading.Event()
    release_cycle = threading.Event()

    def hold_the_second_cycle(attempt: ReconnectAttempt) -> None:
        if second_cycle.is_set() and not cycle_waiting.is_set():
            cycle_waiting.set()
            assert release_cycle.wait(scaled(10))

    policy = ReconnectPolicy(max_attempts=20, max_time=scaled(10.0), base_delay=0.02)
    session = Session(
        owner_type="agent",
        owner_id=agent,
        reconnect=policy,
        on_reconnect=hold_the_second_cycle,
        close_timeout=scaled(0.3),
    )
    dial = session._link._dial

    def hold_the_first_attempt(key: str, timeout: float) -> Any:
        if threading.current_thread().name.startswith("vectorshift-reconnect"):
            if not stale_dialling.is_set():
                stale_dialling.set()
                assert release_stale.wait(scaled(10))
        return dial(key, timeout)

    session._link._dial = hold_the_first_attempt  # type: ignore[method-assign]
    session.connect()
    try:
        engine.drop_connections()
        assert stale_dialling.wait(scaled(5))
        session.disconnect()  # the attempt is still dialling
        session.connect()
        listener = session.listen(timeout=scaled(5))
        second_cycle.set()
        engine.drop_connections()
        assert cycle_waiting.wait(scaled(5))  # the new cycle is reconnecting
        since = len(engine.received())
        release_stale.set()
        with pytest.raises(TimeoutError):  # the old attempt says nothing to the engine
            engine.wait_for_frame("connect_session", since=since, timeout=scaled(1))
        release_cycle.set()
        assert engine.wait_for_frame("connect_session", since=since, timeout=scaled(5))
        assert any(e.data.get("reconnected") for e in listener if e.type is E.SESSION_CONNECTED)
        assert session.ask("still there?", timeout=scaled(5)).text == "hi"
        assert len(engine.sessions[session.session_id or ""].connections) == 1
    finally:
        release_stale.set()
        release_cycle.set()
        session.disconnect()


def test_a_failure_while_recovering_history_still_releases_the_held_events(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vectorshift_sync._link as link_module

    def broken(*args: Any) -> List[Any]:
        raise RuntimeError("a bug while reading the history")

    monkeypatch.setattr(link_module, "missed_replies", broken)
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    policy = ReconnectPolicy(max_attempts=20, max_time=scaled(5.0), base_delay=0.02)
    with Session(owner_type="agent", owner_id=agent, reconnect=policy) as session:
        listener = session.listen(timeout=scaled(5))
        engine.drop_connections()
        assert any(e.data.get("reconnected") for e in listener if e.type is E.SESSION_CONNECTED)
        assert session.ask("still there?", timeout=scaled(5)).text == "hi"


def test_callbacks_run_one_at_a_time_across_connections(engine: LocalEngine) -> None:
    # A callback is still running when disconnect() stops waiting for it; the
    # session's next connection must not run its callbacks alongside it.
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    session = Session(owner_type="agent", owner_id=agent, close_timeout=scaled(0.3))
    seen: List[str] = []
    first_running, second_running, release = threading.Event(), threading.Event(), threading.Event()

    def on_connected(event: Any) -> None:
        if not first_running.is_set():
            first_running.set()
            seen.append("first starts")
            release.wait(scaled(10))
            seen.append("first ends")
        else:
            seen.append("second starts")
            second_running.set()

    session.on(E.SESSION_CONNECTED, on_connected)
    try:
        session.connect()
        assert first_running.wait(scaled(5))
        session.disconnect()  # gives up waiting for the first callback
        session.connect()
        assert not second_running.wait(scaled(0.5)), seen
        release.set()
        assert second_running.wait(scaled(5))
        assert seen == ["first starts", "first ends", "second starts"]
    finally:
        release.set()
        session.disconnect()


def test_the_ids_of_delivered_replies_are_bounded(engine: LocalEngine) -> None:
    # They only keep a reply from being recovered twice after a reconnect: the
    # newest few thousand are enough, and a long-lived session must not grow.
    from vectorshift_sync._inbound import DELIVERED_KEEP as keep

    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    with Session(owner_type="agent", owner_id=agent, reconnect=False) as session:
        sid = session.session_id or ""
        listener = session.listen(maxsize=0, timeout=scaled(10))
        sender = {"role": "agent", "object_id": agent, "object_type": "agent"}
        content = {"type": "data_type_message", "value": "ok", "status": "Complete"}
        count = keep + 100
        for n in range(count):
            frame = {
                "type": "message_notification",
                "session_id": sid,
                "message": {"id": f"m{n}", "sender": sender, "content": content},
            }
            engine.send_raw(frame, session_id=sid)
        ids = []
        for event in listener:
            if event.is_complete:
                ids.append(event.message_id)
                if event.message_id == f"m{count - 1}":
                    break
        assert ids == [f"m{n}" for n in range(count)]  # every reply was delivered
        delivered = session._link.inbound.delivered
        assert len(delivered) == keep  # only the memory of them is bounded
        assert f"m{count - 1}" in delivered and "m0" not in delivered


def test_a_reply_completed_live_while_the_history_was_read_is_delivered_once() -> None:
    # After a reconnect, live events are held while the history is read. A reply
    # that completes on the engine in that window is both held (live) and in the
    # history (recovered): it must reach consumers once, as the live copy in its
    # place. (Seen once in CI's quick chaos run: a cut session got its reply twice.)
    import threading as _threading

    from vectorshift_sync._fanout import FanOut
    from vectorshift_sync._inbound import Inbound
    from vectorshift_sync._replies import ReplyDesk
    from vectorshift_sync.events import SessionEvent
    from vectorshift_sync.events import SessionEventType as T

    fanout = FanOut(_threading.Lock(), backlog=64)
    inbound = Inbound(fanout, ReplyDesk())
    agent = {"sender": "agent"}
    recovered = SessionEvent(T.MESSAGE_COMPLETE, "s", "m1", {**agent, "recovered": True})
    live = SessionEvent(T.MESSAGE_COMPLETE, "s", "m1", dict(agent))
    idle = SessionEvent(T.PARTICIPANT_STATUS, "s", None, {"status": "Idle"})
    inbound.held = [live, idle]
    inbound.release_held_locked([recovered])
    delivered = fanout.backlog.drain()
    completes = [e for e in delivered if e.type is T.MESSAGE_COMPLETE]
    assert completes == [live], delivered
    assert inbound.held is None


def test_a_read_keeps_events_and_the_reply_between_them_in_wire_order() -> None:
    # One read: a delta, the reconnect's connect_session acknowledgement, a delta.
    # read_frame gives the deltas bare and the acknowledgement as a Parsed pair; the
    # first delta must be published before the reconnect's SESSION_CONNECTED, and
    # the second held (the history is read next) rather than published ahead of it.
    import json as _json
    import threading as _threading

    from vectorshift_sync._fanout import FanOut
    from vectorshift_sync._inbound import Inbound
    from vectorshift_sync._replies import ReplyDesk
    from vectorshift_sync.events import SessionEventType as T

    fanout = FanOut(_threading.Lock(), backlog=64)
    desk = ReplyDesk()
    inbound = Inbound(fanout, desk)
    desk.expect_locked("connect_session", accept_untyped=False)

    def delta(index: int) -> bytes:
        frame = {"type": "message_delta", "session_id": "s", "message_id": "m",
                 "value": f"d{index}", "index": index}
        return _json.dumps(frame).encode()

    ack = _json.dumps({"type": "connect_session", "session_id": "s"}).encode()
    parsed = inbound.parse([delta(1), ack, delta(2)], "s")
    assert [type(item).__name__ for item in parsed] == ["SessionEvent", "Parsed", "SessionEvent"]
    inbound.route_locked(parsed, None, 1)
    published = fanout.backlog.drain()
    assert [e.type for e in published] == [T.MESSAGE_DELTA, T.SESSION_CONNECTED], published
    assert published[0].delta == "d1" and published[1].data["reconnected"] is True
    assert [e.delta for e in inbound.held or []] == ["d2"]


def _failing_reconnector(error: Exception, give_up: Callable[[str, int], None]) -> Any:
    """A Reconnector whose every attempt raises ``error``, with 0.2 s back-offs."""
    from vectorshift_sync._reconnect import Reconnector

    def _attach(timeout: float, attempt: int, generation: int) -> None:
        raise error

    return Reconnector(
        ReconnectPolicy(max_attempts=5, max_time=scaled(10.0), base_delay=0.2, max_delay=0.2),
        None,
        connect_timeout=1.0,
        session_id=lambda: "s1",
        attach=_attach,
        reconcile=lambda: None,
        give_up=give_up,
    )


def test_stop_does_not_return_while_a_backoff_timer_is_being_armed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # stop() came just as an attempt armed its back-off timer. Before the fix the
    # attempt marked itself idle before scheduling, so stop() (and the session's
    # disconnect()) returned and the late call_later started the I/O thread afresh
    # after the last session had gone (seen in CI as a thread outliving its test).
    # Here call_later waits for stop() to return: it must not, until the timer is
    # armed and cancelled.
    from vectorshift_sync import SessionDisconnectedError, _reconnect

    real_loop = _reconnect.io_loop()
    stop_returned = threading.Event()
    armed_after_stop: List[bool] = []
    timers: List[Any] = []

    class _SlowArming:
        def call_later(self, delay: float, callback: Any) -> Any:
            stopper = threading.Thread(target=_stop, daemon=True)
            stopper.start()
            armed_after_stop.append(stop_returned.wait(0.5))
            timer = real_loop.call_later(delay, callback)
            timers.append(timer)
            return timer

    monkeypatch.setattr(_reconnect, "io_loop", _SlowArming)

    reconnector = _failing_reconnector(
        SessionDisconnectedError("the server is away"), lambda reason, generation: None
    )

    def _stop() -> None:
        reconnector.stop(scaled(5.0))
        stop_returned.set()

    reconnector.start("dropped", 1)
    assert stop_returned.wait(scaled(5.0)), "stop() never returned"
    assert armed_after_stop == [False], "stop() returned before the timer was armed"
    assert len(timers) == 1 and timers[0]._state == 2, "the armed timer was not cancelled"


def test_a_back_off_that_cannot_be_armed_gives_up_instead_of_staying_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No I/O thread can start for the back-off timer (the process is out of threads
    # or descriptors). The attempt must give up and go idle; it stayed "busy" for
    # good, so every later stop() (each disconnect()) waited its whole timeout.
    from vectorshift_sync import SessionConnectionError, SessionTimeoutError, _reconnect

    class _NoThread:
        def call_later(self, delay: float, callback: Any) -> Any:
            raise SessionConnectionError("could not start the I/O thread (out of threads)")

    monkeypatch.setattr(_reconnect, "io_loop", _NoThread)
    gave_up = threading.Event()
    reasons: List[str] = []

    def _give_up(reason: str, generation: int) -> None:
        reasons.append(reason)
        gave_up.set()

    # A recoverable error: a pause follows each attempt.
    reconnector = _failing_reconnector(SessionTimeoutError("the dial timed out"), _give_up)
    reconnector.start("dropped", 1)
    assert gave_up.wait(scaled(5.0)), "the reconnector neither waited nor gave up"
    assert "cannot wait to retry" in reasons[0] and "out of threads" in reasons[0]
    started = time.monotonic()
    reconnector.stop(scaled(3.0))
    assert time.monotonic() - started < scaled(1.0), "stop() waited on a busy flag for ever set"
