"""One I/O thread for every session of a process, and what must hold because of it.

Many sessions are served by one ``vectorshift-io`` thread that ends with the last of
them; a write that blocks on one connection never stalls another; TLS bytes already
decrypted inside an ``SSLSocket`` are drained (they wake no selector); a forked child
gets a loop of its own; callbacks run on a shared pool, in order per session and in
parallel across sessions; consumers only wait on their queues, so nothing is lost or
repeated when Ctrl-C lands again and again in the middle of a flood.
"""

from __future__ import annotations

import select
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any, Dict, List

import pytest
from conftest import CollectingSink, make_connection, scaled, until_turn_end
from websockets.frames import Frame, Opcode

from vectorshift_sync import SessionEvent, SessionEventType, set_worker_limits
from vectorshift_sync._ioloop import Handler, IOLoop
from vectorshift_sync._pool import WorkerPool, callback_pool
from vectorshift_sync.errors import SessionConnectionError
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


def _io_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vectorshift-io"]


# --- one thread, many sessions ------------------------------------------------------------


def test_many_sessions_share_one_io_thread_that_ends_with_the_last(engine: LocalEngine) -> None:
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.stream("pong " + ctx.text, chunk=3))
    sessions = [Session(owner_type="agent", owner_id=agent).connect() for _ in range(40)]
    try:
        listeners = [s.listen(timeout=scaled(10)) for s in sessions]
        for i, session in enumerate(sessions):
            session.send(f"n{i}")
        for i, listener in enumerate(listeners):
            events = until_turn_end(listener)
            replies = [e.text for e in events if e.is_complete and e.is_from_agent]
            assert replies == [f"pong n{i}"]
        assert len(_io_threads()) == 1
        library = [t for t in threading.enumerate() if t.name.startswith("vectorshift-")
                   and not t.name.startswith("vectorshift-engine")]
        assert len(library) <= 2  # the I/O thread (and no thread per session)
    finally:
        started = time.monotonic()
        for session in sessions[:-1]:
            session.disconnect()
        # Each returned at once: none waited for a thread that others keep busy.
        assert time.monotonic() - started < scaled(10)
        assert len(_io_threads()) == 1  # one session is still open
        last = _io_threads()[0]
        sessions[-1].disconnect()
    assert not last.is_alive(), "the I/O thread outlived the last session's disconnect()"
    # and it comes back for the next session
    with Session(owner_type="agent", owner_id=agent) as session:
        assert session.ask("again", timeout=scaled(10)).text == "pong again"
        assert len(_io_threads()) == 1


def test_a_write_blocked_on_one_connection_does_not_stall_another() -> None:
    stuck_ours, stuck_peer = socket.socketpair()  # the peer never reads
    live_ours, live_peer = socket.socketpair()
    stuck_sink, live_sink = CollectingSink(), CollectingSink()
    stuck = make_connection(stuck_ours, stuck_sink, write_timeout=scaled(3))
    live = make_connection(live_ours, live_sink)
    stuck.start()
    live.start()
    writer_error: List[BaseException] = []

    def write_forever() -> None:
        try:
            stuck.send_text("x" * (16 << 20))  # far more than the socket buffers hold
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            writer_error.append(exc)

    writer = threading.Thread(target=write_forever)
    try:
        writer.start()
        # The frame's first bytes reach the peer: the writer is under way, and 16 MB
        # is far more than the socket buffers hold, so it now waits for them to drain.
        assert select.select([stuck_peer], [], [], scaled(5))[0]
        # The stuck peer pings: the pong can't be written now; it must be queued.
        stuck_peer.sendall(Frame(Opcode.PING, b"hi").serialize(mask=False))
        live_sink.expect = 200
        started = time.monotonic()
        for i in range(200):
            live_peer.sendall(Frame(Opcode.TEXT, f"m{i}".encode()).serialize(mask=False))
        assert live_sink.arrived.wait(scaled(2)), "the live connection stalled"
        assert time.monotonic() - started < scaled(1.0)
        assert live_sink.messages == [f"m{i}".encode() for i in range(200)]
        assert writer.is_alive()  # still blocked on the other connection meanwhile
        writer.join(scaled(10))
        assert writer_error and "timed out" in str(writer_error[0])
        assert stuck.finished.wait(scaled(5))  # a half-written frame ends that link
        assert not live.closed
    finally:
        for connection in (stuck, live):
            connection.abort()
            assert connection.finished.wait(scaled(5))
        for sock in (stuck_peer, live_peer):
            sock.close()


def test_tls_bytes_decrypted_inside_the_socket_are_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trustme = pytest.importorskip("trustme")
    from vectorshift_sync import _connection

    # Reads smaller than a TLS record leave the rest of the record decrypted inside
    # the SSLSocket, where no selector sees it: only draining gets it out.
    monkeypatch.setattr(_connection, "_READ_SIZE", 1000)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: List[ssl.SSLSocket] = []

    def accept() -> None:
        raw, _ = listener.accept()
        accepted.append(server_ctx.wrap_socket(raw, server_side=True))

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    client = client_ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
    )
    acceptor.join(scaled(5))
    server = accepted[0]
    sink = CollectingSink()
    connection = make_connection(client, sink)
    connection.start()
    try:
        # One write: one TLS record of ~12 KB holding 40 messages, then silence.
        payload = [("%03d" % i + "y" * 300).encode() for i in range(40)]
        sink.expect = 40
        server.sendall(b"".join(Frame(Opcode.TEXT, p).serialize(mask=False) for p in payload))
        assert sink.arrived.wait(scaled(3)), f"only {len(sink.messages)} of 40 arrived"
        assert sink.messages == payload
    finally:
        connection.abort()
        assert connection.finished.wait(scaled(5))
        server.close()
        listener.close()


def test_an_idle_but_live_link_is_not_declared_half_open() -> None:
    ours, peer = socket.socketpair()
    sink = CollectingSink()
    connection = make_connection(ours, sink, ping_interval=0.05, idle_timeout=0.3)
    connection.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # the peer answers each ping with a pong
            if select.select([peer], [], [], 0.05)[0]:
                data = peer.recv(65536)
                assert data
                peer.sendall(Frame(Opcode.PONG, b"").serialize(mask=False))
        assert not sink.ended and not connection.closed
        # Now the peer stays silent past idle_timeout: that is a dead link.
        assert connection.finished.wait(scaled(2))
        assert "half-open" in sink.ended[0].reason
    finally:
        connection.abort()
        connection.finished.wait(scaled(5))
        peer.close()


# --- consumers only wait on their queues ----------------------------------------------------


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
        started = time.monotonic()
        assert done.wait(scaled(5)), "the callbacks stalled behind an idle listener"
        assert time.monotonic() - started < scaled(2.5)  # the stream itself takes ~0.3 s
        rest = until_turn_end(listener)
        deltas = [first.delta] + [e.delta for e in rest if e.type is E.MESSAGE_DELTA]
        assert "".join(d or "" for d in deltas) == "abcdefghijklmnopqrstuvwxyz" * 2
        callback_deltas = [e.delta for e in seen_by_callback if e.type is E.MESSAGE_DELTA]
        assert callback_deltas == deltas


def test_get_messages_inside_a_listen_loop(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    with Session(owner_type="agent", owner_id=agent) as session:
        histories = []
        with session.listen(timeout=scaled(10)) as events:
            session.send("go")
            for event in events:
                if event.type is E.MESSAGE_DELTA and not histories:
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

    def interrupter() -> None:
        # One SIGINT at a time, to the main thread, each after the last was handled.
        while not stop.is_set():
            caught.clear()
            signal.pthread_kill(main, signal.SIGINT)
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
        assert session.is_connected
        assert [e for e in got if e.type is E.ERROR] == []
        numbers = [int(e.delta or -1) for e in got if e.type is E.MESSAGE_DELTA]
        assert numbers == list(range(FLOOD))
    assert interrupts >= 5, f"only {interrupts} interrupts landed mid-flood"


def test_a_failure_while_routing_on_the_io_thread_reconnects(engine: LocalEngine) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    policy = ReconnectPolicy(max_attempts=20, max_time=scaled(3.0), base_delay=0.02)
    with Session(owner_type="agent", owner_id=agent, reconnect=policy) as session:
        route = session._link.on_messages
        failed: List[int] = []

        def once(connection: Any, raws: List[bytes]) -> None:
            if not failed:
                failed.append(1)
                raise RuntimeError("a bug while routing")
            route(connection, raws)

        session._link.on_messages = once  # type: ignore[method-assign]
        listener = session.listen(timeout=scaled(10))
        session.send("go")
        events = []
        for event in listener:
            events.append(event)
            if event.type is E.SESSION_CONNECTED and event.data.get("reconnected"):
                break
        assert failed == [1]
        assert any(e.type is E.ERROR and e.data.get("reconnecting") for e in events)
        assert session.ask("again", timeout=scaled(10)).text.startswith("abcdefgh")
        assert len(_io_threads()) == 1  # the loop itself carried on


def test_listeners_on_several_threads_and_callbacks_all_see_every_event(
    engine: LocalEngine,
) -> None:
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
                        time.sleep(0.05)  # a slow consumer delays nobody else
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


# --- callbacks on the shared pool -------------------------------------------------------------


def test_callbacks_run_in_order_per_session_and_in_parallel_across_sessions(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    release = threading.Event()
    sessions = [Session(owner_type="agent", owner_id=agent).connect() for _ in range(3)]
    try:
        seen: List[List[str]] = [[] for _ in sessions]
        ended = [threading.Event() for _ in sessions]
        running: Dict[int, int] = {}
        overlap: List[int] = []
        lock = threading.Lock()

        def make(index: int) -> Any:
            def on_event(event: SessionEvent) -> None:
                with lock:
                    running[index] = running.get(index, 0) + 1
                    overlap.append(running[index])
                try:
                    if index == 0 and event.type is E.MESSAGE_DELTA and not seen[0]:
                        assert release.wait(scaled(10))  # session 0 is stuck in a callback
                    if event.type is E.MESSAGE_DELTA:
                        seen[index].append(event.delta or "")
                    if event.is_turn_end:
                        ended[index].set()
                finally:
                    with lock:
                        running[index] -= 1

            return on_event

        for index, session in enumerate(sessions):
            session.on(None, make(index))
        for session in sessions:
            session.send("go")
        # Sessions 1 and 2 finish while session 0's callback is blocked.
        assert ended[1].wait(scaled(5)) and ended[2].wait(scaled(5))
        assert not ended[0].is_set() and seen[0] == []
        release.set()
        assert ended[0].wait(scaled(5))
        for deltas in seen:
            assert "".join(deltas) == "abcdefghijklmnopqrstuvwxyz" * 2
        assert max(overlap) == 1  # one session's callbacks never ran at the same time
        assert callback_pool().threads <= 8
    finally:
        release.set()
        for session in sessions:
            session.disconnect()


def test_the_callback_pool_size_is_configurable_and_bounds_the_threads(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    set_worker_limits(callbacks=2)
    release = threading.Event()
    sessions = [Session(owner_type="agent", owner_id=agent).connect() for _ in range(4)]
    try:
        started = threading.Semaphore(0)

        def blocking(event: SessionEvent) -> None:
            if event.type is E.MESSAGE_DELTA:
                started.release()
                release.wait(scaled(10))

        for session in sessions:
            session.on([E.MESSAGE_DELTA], blocking)
            session.send("go")
        assert started.acquire(timeout=scaled(5)) and started.acquire(timeout=scaled(5))
        assert not started.acquire(timeout=0.3)  # a third would need a third thread
        names = [
            t.name for t in threading.enumerate() if t.name.startswith("vectorshift-callbacks")
        ]
        assert len(names) == 2
    finally:
        release.set()
        set_worker_limits(callbacks=8)
        for session in sessions:
            session.disconnect()


def test_a_callback_that_raises_system_exit_does_not_stop_the_pool(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    set_worker_limits(callbacks=1)  # one worker: if it died, nothing would run
    try:
        with Session(owner_type="agent", owner_id=agent) as session:
            ended = threading.Event()
            seen: List[str] = []

            def exits(event: SessionEvent) -> None:
                if event.type is E.MESSAGE_DELTA and not seen:
                    seen.append("exit")
                    raise SystemExit(3)

            session.on(None, exits)
            session.on(None, lambda ev: ended.set() if ev.is_turn_end else None)
            session.send("go")
            assert ended.wait(scaled(5)), "callbacks stopped after a SystemExit"
    finally:
        set_worker_limits(callbacks=8)


def test_the_last_disconnect_returns_only_once_the_io_thread_has_ended(
    engine: LocalEngine,
) -> None:
    # No join, no grace period: the moment disconnect() returns, the thread is gone.
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    for i in range(30):
        session = Session(owner_type="agent", owner_id=agent).connect()
        if i % 3 == 0:
            assert session.ask("hello", timeout=scaled(5)).text == "hi"
        (thread,) = _io_threads()
        session.disconnect()
        assert not thread.is_alive(), f"the I/O thread outlived disconnect() (round {i})"
        assert _io_threads() == []


def _slow_to_exit(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Pool workers linger after leaving their loop, as a busy machine makes them."""
    loop = WorkerPool._work_loop

    def lingering(self: WorkerPool) -> None:
        loop(self)
        time.sleep(seconds)

    monkeypatch.setattr(WorkerPool, "_work_loop", lingering)


def _workers() -> List[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("vectorshift-callbacks", "vectorshift-reconnect"))
    ]


def test_the_last_disconnect_returns_only_once_the_callback_workers_have_ended(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No join: the moment the last disconnect() returns, no pool worker is alive,
    # even one slow to end.
    _slow_to_exit(monkeypatch, 0.3)
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    before = set(_workers())  # an earlier test's, ending by themselves
    for i in range(3):
        session = Session(owner_type="agent", owner_id=agent, close_timeout=scaled(5))
        session.connect()
        ended = threading.Event()
        ran_on: List[threading.Thread] = []
        session.on(
            None,
            lambda ev, ended=ended, ran_on=ran_on: (
                ran_on.append(threading.current_thread()),
                ended.set() if ev.is_turn_end else None,
            ),
        )
        session.send("hello")
        assert ended.wait(scaled(5))
        session.disconnect()
        assert not any(t.is_alive() for t in ran_on), f"a worker outlived disconnect() ({i})"
        assert set(_workers()) <= before, f"a pool worker outlived disconnect() (round {i})"


def test_a_pool_waits_for_its_workers_only_once_nothing_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _slow_to_exit(monkeypatch, 2.0)
    pool = WorkerPool("vectorshift-test-pool", 2)
    ran = threading.Event()
    pool.hold()  # as an open session with callbacks does
    pool.submit(ran.set)
    assert ran.wait(scaled(5))
    started = time.monotonic()
    assert pool.wait_ended(scaled(5))  # held: its workers stay, and nobody waits
    assert time.monotonic() - started < 1.5  # well short of a worker's 2 s exit
    assert pool.threads == 1
    pool.release()
    assert pool.wait_ended(scaled(5))
    assert pool.threads == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("vectorshift-test-pool")]

    # A worker closing the last session (a callback calling disconnect()) does not
    # wait for itself.
    waited: List[bool] = []
    done = threading.Event()
    pool.submit(lambda: (waited.append(pool.wait_ended(scaled(5))), done.set()))
    assert done.wait(scaled(5)) and waited == [True]
    assert pool.wait_ended(scaled(5))
    assert pool.threads == 0


def test_a_pool_wait_ends_as_soon_as_the_pool_is_in_use_again() -> None:
    # The last session closes while another connects (it holds the pool) or a
    # reconnect is queued: the closing thread stops waiting at once, True.
    pool = WorkerPool("vectorshift-test-pool", 2)
    running, release = threading.Event(), threading.Event()
    pool.submit(lambda: (running.set(), release.wait(scaled(10))))
    assert running.wait(scaled(5))
    results: List[bool] = []
    waiting = threading.Event()
    wait = pool._changed.wait

    def noting(timeout: Any = None) -> bool:
        waiting.set()  # the closing thread waits for the workers now
        return wait(timeout)

    pool._changed.wait = noting  # type: ignore[method-assign]
    waiter = threading.Thread(target=lambda: results.append(pool.wait_ended(scaled(10))))
    started = time.monotonic()
    waiter.start()
    assert waiting.wait(scaled(5))
    pool.hold()
    waiter.join(scaled(5))
    assert results == [True] and time.monotonic() - started < scaled(2)
    assert not release.is_set()  # it did not wait for the running job
    release.set()
    pool.release()
    assert pool.wait_ended(scaled(5)) and pool.threads == 0


def test_a_job_that_queues_its_sequel_does_not_wake_another_worker() -> None:
    # A session's callback job, with more events waiting, queues its sequel at the
    # back of the line; its own worker takes the queue's head next, so waking an idle
    # worker would only cost a thread switch per batch (about 300 per 20,000-event
    # flood before; about 35 after).
    pool = WorkerPool("vectorshift-test-pool", 4)
    pool.hold()
    try:
        gate = threading.Barrier(5)
        for _ in range(4):  # four workers, then all idle
            pool.submit(lambda: gate.wait(scaled(5)))
        gate.wait(scaled(5))
        woken: List[int] = []
        notify = pool._work.notify

        def counting(n: int = 1) -> None:
            woken.append(n)
            notify(n)

        pool._work.notify = counting  # type: ignore[method-assign]
        ran_on: List[threading.Thread] = []
        done = threading.Event()

        def sequel() -> None:
            ran_on.append(threading.current_thread())
            if len(ran_on) < 100:
                pool.resubmit(sequel)
            else:
                done.set()

        pool.resubmit(sequel)  # from a thread outside the pool: a plain submit
        assert done.wait(scaled(5))
        assert woken == [1]  # the first submit only
        assert len(set(ran_on)) == 1 and pool.threads == 4
    finally:
        pool.release()
    assert pool.wait_ended(scaled(5))


def test_disconnect_during_a_reconnect_back_off_ends_the_io_thread_at_once(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    policy = ReconnectPolicy(max_attempts=50, max_time=60.0, base_delay=20.0, max_delay=20.0)
    backing_off = threading.Event()

    def on_reconnect(attempt: Any) -> None:
        if attempt.attempt >= 2:  # the first was refused; this one waits up to 20 s
            backing_off.set()

    session = Session(
        owner_type="agent", owner_id=agent, reconnect=policy, on_reconnect=on_reconnect
    ).connect()
    engine.faults.reject_handshake = 503
    try:
        engine.drop_connections()
        assert backing_off.wait(scaled(5))
        reconnector = session._link.reconnector
        assert reconnector is not None
        deadline = time.monotonic() + scaled(5)
        while reconnector._timer is None:  # the back-off is armed on the I/O thread
            assert time.monotonic() < deadline, "no back-off was armed"
            time.sleep(0.005)
    finally:
        session.disconnect()
        engine.faults.reject_handshake = None
    # At once: disconnect() returned only after the thread ended (no join here).
    assert _io_threads() == [], "the I/O thread outlived disconnect() in a back-off"


class _Reader(Handler):
    """A bare handler: reads what came, asks for ``waker`` at the end of the round."""

    def __init__(self, loop: IOLoop, sock: socket.socket, name: str, log: List[str]) -> None:
        self.loop, self.sock, self.name, self.log = loop, sock, name, log
        self.waker = self
        self.all_woken = threading.Event()

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        self.sock.recv(100)
        self.log.append("read " + self.name)
        self.loop.round_wakes.add(self.waker)

    def on_writable(self) -> None:
        pass

    def on_failure(self, exc: BaseException) -> None:
        self.log.append(f"failed {exc!r}")

    def wake(self) -> None:
        self.log.append("wake " + self.name)
        if sum(entry.startswith("wake") for entry in self.log) == 3:
            self.all_woken.set()


def test_consumers_are_woken_once_per_round_after_every_ready_socket_is_read() -> None:
    # A consumer woken in the middle of a round would only wait for the interpreter
    # lock the I/O thread still needs for the other sockets: wake-ups come last.
    loop = IOLoop()
    pairs = [socket.socketpair() for _ in range(3)]
    log: List[str] = []
    readers = [_Reader(loop, b, name, log) for (_, b), name in zip(pairs, "abc")]
    done = threading.Event()
    for reader in readers:
        reader.all_woken = done
    try:
        for reader in readers:
            loop.add(reader)

        def make_all_ready() -> None:  # on the I/O thread: all three ready at once
            for a, _ in pairs:
                a.send(b"x")

        loop.call_soon(make_all_ready)
        assert done.wait(scaled(5))
        reads = [entry for entry in log if entry.startswith("read")]
        wakes = [entry for entry in log if entry.startswith("wake")]
        assert sorted(reads) == ["read a", "read b", "read c"]
        assert sorted(wakes) == ["wake a", "wake b", "wake c"]  # once each
        assert log.index(wakes[0]) > log.index(reads[-1]), log
        assert not loop.round_wakes
    finally:
        thread = loop._thread
        for reader in readers:
            loop.remove(reader)
        if thread is not None:
            thread.join(scaled(5))  # nothing registered: the loop's thread ends
        for a, b in pairs:
            a.close()
            b.close()


def _failing_start(names: str, failures: List[str], limit: threading.Event) -> Any:
    """``Thread.start`` that fails, as at the process's thread limit, for threads
    whose name starts with ``names`` while ``limit`` is set."""
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if limit.is_set() and self.name.startswith(names):
            failures.append(self.name)
            raise RuntimeError("can't start new thread")
        real_start(self)

    return start


def test_connect_fails_clearly_when_the_io_thread_cannot_start(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = engine.add_agent("Paced", turn=_paced)
    failures: List[str] = []
    limit = threading.Event()
    limit.set()
    start = _failing_start("vectorshift-io", failures, limit)
    monkeypatch.setattr(threading.Thread, "start", start)
    session = Session(owner_type="agent", owner_id=agent)
    with pytest.raises(SessionConnectionError, match="could not start the I/O thread"):
        session.connect()
    assert failures == ["vectorshift-io"]
    limit.clear()  # the limit is lifted: the next connect works
    with session:
        assert session.ask("hi", timeout=scaled(10)).text.startswith("abcdefgh")


def test_a_pool_worker_that_cannot_start_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = WorkerPool("vectorshift-test-pool", 2)
    ran: List[int] = []
    done = threading.Event()
    failures: List[str] = []
    limit = threading.Event()
    limit.set()
    start = _failing_start("vectorshift-test", failures, limit)
    monkeypatch.setattr(threading.Thread, "start", start)
    pool.submit(lambda: ran.append(1))
    assert failures and pool.threads == 0  # no phantom worker the job would wait on
    limit.clear()
    pool.submit(lambda: (ran.append(2), done.set()))
    assert done.wait(scaled(5))
    assert ran == [1, 2]  # the first job waited for a worker and ran first


def test_a_connection_that_ends_at_once_leaves_no_timer_behind() -> None:
    # The peer is gone before the connection is handed over: the I/O thread reads the
    # EOF as soon as it registers the socket. No keepalive timer may outlive that.
    loop = IOLoop()
    ours, theirs = socket.socketpair()
    theirs.close()
    sink = CollectingSink()
    connection = make_connection(ours, sink, loop=loop)
    real_call_later = loop.call_later

    def late_call_later(delay: float, callback: Any) -> Any:
        # The caller's thread is descheduled here for a moment: if the socket was
        # already handed over, the I/O thread ends the connection meanwhile.
        connection.finished.wait(0.5)
        return real_call_later(delay, callback)

    loop.call_later = late_call_later  # type: ignore[method-assign]
    connection.start()
    loop.call_later = real_call_later  # type: ignore[method-assign]
    assert connection.finished.wait(scaled(5))
    thread = loop._thread
    if thread is not None:
        thread.join(scaled(2))  # nothing registered, no timer: the thread ends at once
        assert not thread.is_alive(), "a timer of an ended connection kept the I/O thread"
