"""The read lease: a consumer that would sleep reads the socket itself, safely.

A waiting ``listen()`` (or ``stream()``, or the callbacks' dispatcher) does the
reader thread's job instead of waiting to be woken; the reader takes reading back
when that consumer goes away. These tests check what must not change because of it:
nothing lost or repeated (also under repeated Ctrl-C in the middle of reads), other
consumers are not stalled by a consumer that stops reading, a read cut short by an
exception ends the connection cleanly (and the session reconnects), and the lease is
given back when the consumer goes quiet or stops listening.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import List

import pytest
from conftest import scaled, until_turn_end

from vectorshift_sync import SessionEvent, SessionEventType, SessionTimeoutError
from vectorshift_sync.session import ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType
pytestmark = pytest.mark.timeout(60)

FLOOD = 20_000


def _numbered_flood(ctx: TurnContext) -> None:
    message_id = "flood-" + ctx.session_id[-6:]
    for i in range(FLOOD):
        ctx.delta(str(i), message_id=message_id)
    ctx.complete("done", message_id=message_id)


def _paced(ctx: TurnContext) -> None:
    ctx.stream("abcdefghijklmnopqrstuvwxyz" * 2, chunk=2, delay=0.01)



def test_a_waiting_listener_reads_for_itself(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    me = threading.get_ident()
    with Session(owner_type="agent", owner_id=agent) as session:
        holders = []
        with session.listen(timeout=scaled(10)) as events:
            session.send("go")
            seen = []
            for event in events:
                seen.append(event)
                holders.append(session._helper)
                if event.is_turn_end:
                    break
        assert me in holders  # the events reached this thread without a hand-off
        assert "".join(e.delta or "" for e in seen if e.type is E.MESSAGE_DELTA) == (
            "abcdefghijklmnopqrstuvwxyz" * 2
        )
        assert session._helper is None  # closing the listener gave the lease back


def test_a_listener_that_stops_reading_does_not_stall_callbacks(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    with Session(owner_type="agent", owner_id=agent) as session:
        done = threading.Event()
        seen_by_callback: List[SessionEvent] = []

        def on_event(event: SessionEvent) -> None:
            seen_by_callback.append(event)
            if event.is_turn_end:
                done.set()

        session.on(None, on_event)
        listener = session.listen(timeout=scaled(10))
        session.send("go")
        first = next(e for e in listener if e.type is E.MESSAGE_DELTA)
        # This thread now holds the lease and goes away: the reader must take over.
        started = time.monotonic()
        assert done.wait(scaled(5)), "the callbacks stalled behind an idle listener"
        assert time.monotonic() - started < scaled(2.5)  # the stream itself takes ~0.3 s
        rest = until_turn_end(listener)
        deltas = [first.delta] + [e.delta for e in rest if e.type is E.MESSAGE_DELTA]
        assert "".join(d or "" for d in deltas) == "abcdefghijklmnopqrstuvwxyz" * 2
        callback_deltas = [e.delta for e in seen_by_callback if e.type is E.MESSAGE_DELTA]
        assert callback_deltas == deltas


def test_the_lease_goes_back_when_the_listener_is_quiet(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    with Session(owner_type="agent", owner_id=agent) as session:
        listener = session.listen(timeout=0.6)
        session.send("go")
        until_turn_end(listener)
        with pytest.raises(SessionTimeoutError):
            next(listener)  # nothing more comes: after a quiet slice the reader waits
        assert session._helper is None
        # and the next turn still arrives, through the reader, then the lease again
        session.send("again")
        assert until_turn_end(listener)[-1].is_turn_end


def test_get_messages_inside_a_listen_loop(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    with Session(owner_type="agent", owner_id=agent) as session:
        histories = []
        with session.listen(timeout=scaled(10)) as events:
            session.send("go")
            for event in events:
                if event.type is E.MESSAGE_DELTA and not histories:
                    # the reply comes on the socket this thread was reading
                    histories.append(session.get_messages(timeout=scaled(5)))
                if event.is_turn_end:
                    break
        assert [m.text for m in histories[0]][:1] == ["go"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_again_and_again_during_a_flood_loses_and_repeats_nothing(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Numbers", turn=_numbered_flood, echo=False)
    main = threading.get_ident()
    caught = threading.Event()
    stop = threading.Event()
    fired: List[int] = []

    def interrupter() -> None:
        # One SIGINT at a time, to the main thread (a real signal, so it also cuts
        # a blocking poll short), each after the previous one was handled.
        while not stop.is_set():
            caught.clear()
            signal.pthread_kill(main, signal.SIGINT)
            fired.append(1)
            while not caught.wait(0.05):
                if stop.is_set():
                    return
            time.sleep(0.002)

    got: List[SessionEvent] = []
    interrupts = 0
    with Session(owner_type="agent", owner_id=agent, reconnect=False) as session:
        listener = session.listen(maxsize=0, timeout=scaled(20))
        session.send("go")
        thread = threading.Thread(target=interrupter, daemon=True)
        try:
            while True:
                try:
                    if not thread.is_alive() and not stop.is_set():
                        thread.start()
                    for event in listener:
                        got.append(event)  # the only call between next() and keeping it
                        if event.type is E.MESSAGE_COMPLETE:
                            break
                    break
                except KeyboardInterrupt:
                    interrupts += 1
                    caught.set()
        finally:
            stop.set()
            while True:  # a last SIGINT in flight lands here, not in the report
                try:
                    thread.join(5)
                    break
                except KeyboardInterrupt:
                    continue
        assert session.is_connected  # the stream never went out of step
        errors = [e for e in got if e.type is E.ERROR]
        assert errors == []
        numbers = [int(e.delta or -1) for e in got if e.type is E.MESSAGE_DELTA]
        assert numbers == list(range(FLOOD))
    assert interrupts >= 5, f"only {interrupts} interrupts landed mid-flood"


def test_an_exception_in_the_middle_of_a_read_reconnects(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    policy = ReconnectPolicy(max_attempts=20, max_time=scaled(3.0), base_delay=0.02)
    with Session(owner_type="agent", owner_id=agent, reconnect=policy) as session:
        me = threading.get_ident()
        route = session._on_messages
        failed: List[int] = []

        def once_on_this_thread(raws: List[bytes]) -> None:
            if threading.get_ident() == me and not failed:
                failed.append(1)
                raise RuntimeError("cut short half-way")
            route(raws)

        session._on_messages = once_on_this_thread  # type: ignore[method-assign]
        listener = session.listen(timeout=scaled(10))
        session.send("go")
        with pytest.raises(RuntimeError, match="cut short"):
            for _ in listener:
                pass
        assert failed == [1]
        events = []
        for event in listener:
            events.append(event)
            if event.type is E.SESSION_CONNECTED and event.data.get("reconnected"):
                break
        assert any(e.type is E.ERROR and e.data.get("reconnecting") for e in events)
        assert session.ask("again", timeout=scaled(10)).text.startswith("abcdefgh")


def test_listeners_on_several_threads_and_callbacks_all_see_every_event(
    engine: LocalEngine,
) -> None:
    # They compete for the lease: one reads, the others are handed events, and the
    # reader takes over whenever the holder is away. Each must see the whole flood.
    agent = engine.add_agent("Numbers", turn=_numbered_flood, echo=False)
    with Session(owner_type="agent", owner_id=agent) as session:
        seen: List[List[int]] = [[] for _ in range(4)]
        done = threading.Event()

        def on_event(event: SessionEvent) -> None:
            if event.type is E.MESSAGE_DELTA:
                seen[3].append(int(event.delta or -1))
            elif event.type is E.MESSAGE_COMPLETE:
                done.set()

        session.on(None, on_event)
        listeners = [session.listen(maxsize=0, timeout=scaled(20)) for _ in range(3)]

        def consume(index: int) -> None:
            for event in listeners[index]:
                if event.type is E.MESSAGE_DELTA:
                    seen[index].append(int(event.delta or -1))
                    if index == 1 and len(seen[1]) % 1000 == 0:
                        time.sleep(0.05)  # away now and then: the reader takes over
                elif event.type is E.MESSAGE_COMPLETE:
                    return

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        session.send("go")
        for thread in threads:
            thread.join(scaled(30))
        assert done.wait(scaled(10))
        for numbers in seen:
            assert numbers == list(range(FLOOD))
