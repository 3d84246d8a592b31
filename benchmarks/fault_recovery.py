"""Measure what each injected fault does to a session: outcome, time, replies lost.

    python benchmarks/fault_recovery.py

Runs against an in-process local engine. Reconnect timing uses the default policy;
half-open detection uses idle_timeout=2 s so the run stays short (the default, 15 s,
is checked by tests/test_faults.py::test_defaults_notice_half_open_and_give_up_within_30s).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Callable, List, Tuple

from vectorshift_sync import (
    AuthenticationError,
    SessionError,
    SessionEventType,
    SessionRefusedError,
)
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType
REPLY = "Once upon a time there was a very patient websocket."
Row = Tuple[str, str, float, str]


def _story(ctx: TurnContext) -> None:
    ctx.stream(REPLY, chunk=3, delay=0.01)


def _replies_lost(engine: LocalEngine, session: Session, got: List[str]) -> int:
    history = engine.history(session.session_id or "")
    done = [
        m["content"].get("value")
        for m in history
        if "object_id" in m.get("sender", {})
        and m["content"].get("status") == "Complete"
        and m["content"].get("type") == "data_type_message"
    ]
    # Several turns may complete with the same text: count each one.
    return sum((Counter(done) - Counter(got)).values())


def _turn(session: Session, engine: LocalEngine, text: str) -> Tuple[float, List[str], str]:
    started = time.monotonic()
    got: List[str] = []
    notes = []
    for event in session.stream(text, timeout=60):
        if event.type == E.ERROR and event.data.get("reconnecting"):
            notes.append("lost")
        if event.type == E.SESSION_CONNECTED and event.data.get("reconnected"):
            notes.append(f"reconnected after {event.data['attempts']} attempt(s)")
        if event.is_complete and event.is_from_agent:
            got.append(event.text or "")
            if event.data.get("recovered"):
                notes.append("reply recovered from history")
    return time.monotonic() - started, got, ", ".join(notes)


def drop_mid_stream(engine: LocalEngine, agent: str) -> Row:
    with Session(owner_type="agent", owner_id=agent) as session:
        engine.faults.drop_after_frames = 6
        took, got, notes = _turn(session, engine, "story")
        return (
            "drop mid-stream (no close frame)",
            notes,
            took,
            str(_replies_lost(engine, session, got)),
        )


def reply_completes_while_away(engine: LocalEngine, agent: str) -> Row:
    holder: List[Session] = []

    def hold(attempt: object) -> None:
        # Keep the client away until the engine has finished the reply.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            history = engine.history(holder[0].session_id or "")
            if any(m["content"].get("value") == REPLY for m in history):
                return
            time.sleep(0.01)

    with Session(owner_type="agent", owner_id=agent, on_reconnect=hold) as session:
        holder.append(session)
        engine.faults.drop_after_frames = 4
        took, got, notes = _turn(session, engine, "story while away")
        return (
            "drop; reply completes while away",
            notes,
            took,
            str(_replies_lost(engine, session, got)),
        )


def restart(engine: LocalEngine, agent: str) -> Row:
    with Session(owner_type="agent", owner_id=agent) as session:
        back = threading.Event()
        session.on(E.SESSION_CONNECTED, lambda e: back.set() if e.data.get("reconnected") else None)
        started = time.monotonic()
        engine.restart()
        back.wait(30)
        took = time.monotonic() - started
        _, got, _ = _turn(session, engine, "after restart")
        return (
            "server restart, same port",
            "reconnected; next turn fine",
            took,
            str(_replies_lost(engine, session, got)),
        )


def half_open(engine: LocalEngine, agent: str) -> Row:
    session = Session(owner_type="agent", owner_id=agent, idle_timeout=2.0, ping_interval=0.5)
    session.connect()
    errors = session.listen(event_types=[E.ERROR], timeout=60)
    engine.faults.half_open = True
    started = time.monotonic()
    next(errors)
    noticed = time.monotonic() - started
    engine.faults.half_open = False
    engine.drop_connections()
    took, got, _ = _turn(session, engine, "after half-open")
    session.disconnect()
    return (
        "half-open (server mute)",
        f"noticed in {noticed:.1f}s, reconnected",
        noticed + took,
        str(_replies_lost(engine, session, got)),
    )


def gives_up(engine: LocalEngine, agent: str, label: str, fault: Callable[[], None]) -> Row:
    session = Session(owner_type="agent", owner_id=agent).connect()
    errors = session.listen(event_types=[E.ERROR], timeout=60)
    started = time.monotonic()
    fault()
    reasons = [e.data.get("reason", "") for e in errors]
    took = time.monotonic() - started
    session.disconnect()
    return (label, "gave up: " + " ".join(reasons[-1].split())[:70], took, "0")


def refused_at_connect(engine: LocalEngine) -> Row:
    started = time.monotonic()
    try:
        Session(session_id="f" * 24).connect()
    except SessionRefusedError as exc:
        return ("unknown session id", type(exc).__name__, time.monotonic() - started, "0")
    raise AssertionError("connected to an unknown id")


def bad_key(engine: LocalEngine, agent: str) -> Row:
    started = time.monotonic()
    try:
        Session(owner_type="agent", owner_id=agent, api_key="wrong-key-0000").connect()
    except AuthenticationError as exc:
        return ("401 at handshake", type(exc).__name__, time.monotonic() - started, "0")
    raise AssertionError("a wrong key connected")


def failed_ack(engine: LocalEngine, agent: str) -> Row:
    with Session(owner_type="agent", owner_id=agent) as session:
        engine.faults.refuse_acks = {"post_message"}
        started = time.monotonic()
        try:
            session.ask("refused", timeout=10)
        except SessionError as exc:
            engine.faults.refuse_acks = set()
            return (
                "failed post_message ack",
                f"SessionError: {exc}"[:60],
                time.monotonic() - started,
                "0",
            )
    raise AssertionError("a refused post went through")


def junk_frames(engine: LocalEngine, agent: str) -> Row:
    with Session(owner_type="agent", owner_id=agent) as session:
        for junk in ("{", "[1, 2]", '{"type": "future"}', "null"):
            engine.send_raw(junk, session_id=session.session_id)
        took, got, _ = _turn(session, engine, "still fine?")
        return (
            "non-JSON and unknown frames",
            "skipped; turn completes",
            took,
            str(_replies_lost(engine, session, got)),
        )


def huge_frame(engine: LocalEngine) -> Row:
    big = "x" * (10 * 1024 * 1024)
    agent = engine.add_agent("Big", turn=lambda ctx: ctx.complete(big))
    with Session(owner_type="agent", owner_id=agent) as session:
        started = time.monotonic()
        text = session.ask("big", timeout=60).text
        return (
            "10 MB frame",
            "delivered" if text == big else "WRONG",
            time.monotonic() - started,
            "0" if text == big else "1",
        )


def slow_consumer(engine: LocalEngine) -> Row:
    agent = engine.add_agent("Flood", turn=lambda ctx: ctx.flood(20000, message_id="m"))
    with Session(owner_type="agent", owner_id=agent) as session:
        done = threading.Event()
        session.on(E.PARTICIPANT_STATUS, lambda e: done.set() if e.is_turn_end else None)
        listener = session.listen(event_types=[E.MESSAGE_DELTA, E.ERROR], maxsize=64, timeout=0.5)
        started = time.monotonic()
        session.send("flood")
        done.wait(30)
        took = time.monotonic() - started
        seen = []
        try:
            for event in listener:
                seen.append(event)
        except TimeoutError:
            pass
        errors = [e for e in seen if e.error == "subscriber queue overflow"]
        dropped = sum(e.data["dropped_count"] for e in errors)
        return (
            "slow consumer, 20,000-delta flood, maxsize=64",
            f"overflow ERROR delivered ({dropped} deltas counted as dropped)",
            took,
            "0",
        )


def disconnect_race(engine: LocalEngine) -> Row:
    agent = engine.add_agent("Flood2", turn=lambda ctx: ctx.flood(5000, message_id="m"))
    worst = 0.0
    for _ in range(20):
        session = Session(owner_type="agent", owner_id=agent).connect()
        session.send("go")
        started = time.monotonic()
        session.disconnect()
        worst = max(worst, time.monotonic() - started)
    return ("disconnect() racing the I/O thread (x20)", "clean; worst disconnect time", worst, "0")


def main() -> int:
    rows: List[Row] = []
    with LocalEngine() as engine:
        os.environ.update(engine.env)
        agent = engine.add_agent("Story", turn=_story)
        rows.append(drop_mid_stream(engine, agent))
        rows.append(reply_completes_while_away(engine, agent))
        rows.append(restart(engine, agent))
        rows.append(half_open(engine, agent))

        def reject_401() -> None:
            engine.faults.reject_handshake = 401
            engine.drop_connections()

        rows.append(gives_up(engine, agent, "401 while reconnecting", reject_401))
        engine.faults.reset()
        rows.append(refused_at_connect(engine))
        rows.append(bad_key(engine, agent))
        rows.append(failed_ack(engine, agent))
        rows.append(junk_frames(engine, agent))
        rows.append(huge_frame(engine))
        rows.append(slow_consumer(engine))
        rows.append(disconnect_race(engine))
    with LocalEngine() as engine:
        os.environ.update(engine.env)
        agent = engine.add_agent("Story", turn=_story)
        rows.append(gives_up(engine, agent, "server gone (refused)", engine.stop))
    print("| fault | what happened | time (s) | completed replies lost |")
    print("| --- | --- | --- | --- |")
    for label, outcome, took, lost in rows:
        print(f"| {label} | {outcome} | {took:.2f} | {lost} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
