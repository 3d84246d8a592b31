"""Every fault control of the local engine, observed from a raw client."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator, List, Set

import pytest
import requests
import websocket
from test_engine_support import (
    KEY,
    RawClient,
    agent_id,
    auth,
    content_of,
    engine_running,
    is_status,
    is_type,
    scaled,
)

from vectorshift_sync.testing import LocalEngine, TurnContext

pytestmark = pytest.mark.timeout(20)

QUIET = 0.3  # how long "nothing arrives" is watched for


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    # Short close timeout: several tests restart or stop with a client that is not reading.
    with engine_running(close_timeout=0.2) as running:
        yield running


def _nothing_arrives(client: RawClient) -> None:
    client.settimeout(scaled(QUIET))
    with pytest.raises(websocket.WebSocketTimeoutException):
        client.ws.recv_data(control_frame=True)
    client.settimeout(scaled(5))


def _aborted(client: RawClient) -> None:
    """The connection ends with no close frame (``recv_data`` would return it)."""
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            opcode, _ = client.ws.recv_data(control_frame=True)
            assert opcode != websocket.ABNF.OPCODE_CLOSE, "got a close frame"


def test_answer_pings_off_and_on(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        engine.faults.answer_pings = False
        client.send({"type": "ping_session", "session_id": sid})
        engine.wait_for_frame("ping_session", timeout=scaled(5))
        _nothing_arrives(client)
        engine.faults.answer_pings = True
        client.send({"type": "ping_session", "session_id": sid})
        assert client.recv() == {"type": "pong", "session_id": sid}


def test_half_open_silences_frames_and_ws_pings_but_keeps_tcp(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        engine.faults.half_open = True
        client.send({"type": "ping_session", "session_id": sid})
        client.ws.ping(b"are you there")
        engine.wait_for_frame("ping_session", timeout=scaled(5))  # it still reads
        engine.send_raw("injected")
        _nothing_arrives(client)  # no pong, no WS pong, nothing injected
        record = engine.connections[0]
        assert record.muted and not record.closed.is_set()
        assert record.sent[-1] == {"type": "connect_session", "session_id": sid, "success": True}

        engine.faults.half_open = False
        client.ws.ping(b"again")
        opcode, frame = client.ws.recv_data(control_frame=True)
        assert (opcode, frame) == (websocket.ABNF.OPCODE_PONG, b"again")
        client.send({"type": "ping_session", "session_id": sid})
        assert client.recv() == {"type": "pong", "session_id": sid}


def test_half_open_swallows_the_handshake_of_new_connections(engine: LocalEngine) -> None:
    engine.faults.half_open = True
    with pytest.raises(websocket.WebSocketTimeoutException):
        RawClient(engine, timeout=QUIET)
    engine.faults.half_open = False
    assert engine.connections[0].muted  # it never saw the upgrade: mute for good
    # HTTP is never affected.
    response = requests.get(engine.base_url + "/agents", headers=auth(), timeout=scaled(5))
    assert response.status_code == 200
    with RawClient(engine) as client:
        client.open_session(agent_id(engine))


def test_stop_while_half_open_is_quick() -> None:
    with engine_running(close_timeout=5.0) as engine:
        client = RawClient(engine)
        client.open_session(agent_id(engine))
        engine.faults.half_open = True
        started = time.monotonic()
        engine.stop()
        assert time.monotonic() - started < scaled(2)  # aborted, not closed politely
        client.close()


def test_ack_delay_delays_every_ack(engine: LocalEngine) -> None:
    delay = 0.25
    with RawClient(engine) as client:
        demo = agent_id(engine)
        engine.faults.ack_delay = delay
        timings: List[float] = []
        started = time.monotonic()
        client.send({"type": "create_session", "object_type": "agent", "object_id": demo})
        created = client.recv()
        timings.append(time.monotonic() - started)
        assert isinstance(created, dict)
        sid = created["session_id"]
        for frame in (
            {"type": "connect_session", "session_id": sid},
            {"type": "post_message", "session_id": sid, "content": "hi"},
        ):
            started = time.monotonic()
            client.send(frame)
            assert client.recv()["success"] is True  # type: ignore[index]
            timings.append(time.monotonic() - started)
        assert all(t >= delay for t in timings), timings
        client.turn()


def test_ack_delay_does_not_hold_up_stop() -> None:
    with engine_running(close_timeout=0.2) as engine:
        client = RawClient(engine)
        engine.faults.ack_delay = 60
        client.send({"type": "create_session", "object_type": "agent", "object_id": "x"})
        engine.wait_for_frame("create_session", timeout=scaled(5))
        started = time.monotonic()
        engine.stop()
        assert time.monotonic() - started < scaled(3)
        client.close()


def test_refused_acks(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        demo = agent_id(engine)
        sid = client.open_session(demo)
        engine.faults.refuse_acks = {"create_session", "connect_session", "post_message"}
        engine.faults.refuse_acks.add("post_messages")
        client.send({"type": "create_session", "object_type": "agent", "object_id": demo})
        assert client.recv() == {
            "type": "session_created",
            "success": False,
            "error": "create_session refused (fault injection)",
        }
        for frame in (
            {"type": "connect_session", "session_id": sid},
            {"type": "post_message", "session_id": sid, "content": "hi"},
            {"type": "post_messages", "session_id": sid, "messages": ["hi"]},
        ):
            client.send(frame)
            assert client.recv() == {
                "type": frame["type"],
                "session_id": sid,
                "success": False,
                "error": f"{frame['type']} refused (fault injection)",
            }
        assert engine.history(sid) == []  # refused posts start no turn
        engine.faults.reset()
        client.post(sid, "now")
        assert client.turn()[0] == {"type": "post_message", "session_id": sid, "success": True}


def test_drop_after_frames_mid_stream(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        engine.faults.drop_after_frames = 3
        client.post(sid, "hello")
        got = [client.recv() for _ in range(3)]
        assert got[0] == {"type": "post_message", "session_id": sid, "success": True}
        assert content_of(got[1])["value"] == "hello"  # the echo
        assert is_status("Processing")(got[2])
        _aborted(client)
    record = engine.connections[0]
    assert record.closed.wait(scaled(5))
    assert len(record.sent) == 2 + 3  # session_created + connect ack, then three more
    assert engine.faults.drop_after_frames is None  # one shot
    assert engine.sessions[sid].connections == ()


def test_drop_after_zero_frames_drops_before_the_next_one(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        engine.faults.drop_after_frames = 0
        client.send({"type": "ping_session", "session_id": "x"})
        _aborted(client)


def test_reject_handshake(engine: LocalEngine) -> None:
    engine.faults.reject_handshake = 503
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        RawClient(engine)
    assert caught.value.status_code == 503
    response = requests.get(engine.base_url + "/agents", headers=auth(), timeout=scaled(5))
    assert response.status_code == 200  # plain HTTP is served
    engine.faults.reject_handshake = None
    RawClient(engine).close()


def test_send_raw_non_json_and_unknown_types(engine: LocalEngine) -> None:
    with RawClient(engine) as first_client, RawClient(engine) as second:
        sid = first_client.open_session(agent_id(engine))
        assert engine.send_raw("this is not JSON") == 2
        assert engine.send_raw({"type": "mystery", "x": 1}, session_id=sid) == 1
        assert first_client.recv() == "this is not JSON"
        assert first_client.recv() == {"type": "mystery", "x": 1}
        assert second.recv() == "this is not JSON"
        _nothing_arrives(second)


def test_flood_of_deltas_arrives_complete_and_in_order(engine: LocalEngine) -> None:
    count = 5000

    def flood(ctx: TurnContext) -> None:
        ctx.flood(count, text="x", message_id="flood")

    with RawClient(engine) as client:
        sid = client.open_session(engine.add_agent("Flood", turn=flood))
        started = time.monotonic()
        client.post(sid, "go")
        frames = client.turn()
        elapsed = time.monotonic() - started
    deltas = [f for f in frames if is_type("message_delta")(f)]
    assert [f["index"] for f in deltas] == list(range(count))  # type: ignore[index]
    assert {f["message_id"] for f in deltas} == {"flood"}  # type: ignore[index]
    assert elapsed < scaled(10)


def test_drop_connections_all_or_by_session(engine: LocalEngine) -> None:
    with RawClient(engine) as a, RawClient(engine) as b:
        sid = a.open_session(agent_id(engine))
        assert engine.drop_connections(session_id=sid) == 1
        _aborted(a)
        b.send({"type": "ping_session", "session_id": sid})
        assert b.recv() == {"type": "pong", "session_id": sid}  # b is untouched
        assert engine.connections[0].closed.wait(scaled(5))  # a's record is settled
        assert engine.drop_connections() == 1
        _aborted(b)
    assert all(c.closed.wait(scaled(5)) for c in engine.connections)


def test_restart_on_the_same_port_keeps_history(engine: LocalEngine) -> None:
    port = engine.port
    client = RawClient(engine)
    sid = client.open_session(agent_id(engine))
    client.post(sid, "remember me")
    client.turn()
    history = engine.history(sid)

    engine.restart()
    assert engine.port == port
    opcode, frame = client.ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame[:2], "big") == 1012  # service restart
    client.close()

    with RawClient(engine) as again:
        again.connect(sid)
        again.send({"type": "get_messages", "session_id": sid})
        assert again.recv() == {"type": "get_messages", "session_id": sid, "messages": history}
        again.post(sid, "still here")
        assert "message 2 of this session" in content_of(again.turn()[-2])["value"]


def test_restart_without_grace_aborts_connections(engine: LocalEngine) -> None:
    client = RawClient(engine)
    client.open_session(agent_id(engine))
    engine.restart(graceful=False)
    _aborted(client)
    client.close()
    RawClient(engine).close()


def test_restart_cancels_a_running_turn(engine: LocalEngine) -> None:
    def slow(ctx: TurnContext) -> None:
        ctx.wait(60)

    with RawClient(engine) as client:
        sid = client.open_session(engine.add_agent("Slow", turn=slow))
        client.post(sid, "go")
        client.recv_until(is_status("Processing"))
        started = time.monotonic()
        engine.restart()
        assert time.monotonic() - started < scaled(3)
        assert not engine.sessions[sid].turn_running


def test_faults_repr_and_reset() -> None:
    engine = LocalEngine(KEY, demo=False)
    engine.faults.half_open = True
    engine.faults.refuse_acks.add("post_message")
    assert "half_open=True" in repr(engine.faults)
    engine.faults.reset()
    assert not engine.faults.half_open and engine.faults.refuse_acks == set()


def test_stop_with_a_client_stuck_before_its_handshake_is_bounded() -> None:
    with engine_running(close_timeout=0.2) as engine:
        stalled = socket.create_connection(("127.0.0.1", engine.port), timeout=scaled(5))
        try:
            started = time.monotonic()
            engine.stop()  # websockets would wait its 10 s open timeout
            assert time.monotonic() - started < scaled(2)
            assert stalled.recv(1) == b""  # the engine hung up
        except ConnectionResetError:
            pass
        finally:
            stalled.close()


class _Reconnecting:
    """Clients that, like sessions, reconnect the moment their connection ends."""

    def __init__(self, engine: LocalEngine, count: int) -> None:
        self.url = engine.ws_url + "/ws/session"
        self.quit = threading.Event()
        self.lock = threading.Lock()
        self.open: Set[websocket.WebSocket] = set()
        self.statuses: List[int] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.quit.is_set():
            try:
                ws = websocket.create_connection(
                    self.url, header=[f"Authorization: Bearer {KEY}"], timeout=scaled(5)
                )
            except websocket.WebSocketBadStatusException as exc:
                with self.lock:
                    self.statuses.append(exc.status_code)
                continue
            except (OSError, websocket.WebSocketException):
                time.sleep(0.01)  # refused: nothing listens
                continue
            with self.lock:
                self.open.add(ws)
            try:
                while True:
                    ws.recv()  # until the engine ends the connection
            except (OSError, websocket.WebSocketException):
                pass
            finally:
                with self.lock:
                    self.open.discard(ws)
                ws.shutdown()

    def wait_open(self, count: int) -> None:
        deadline = time.monotonic() + scaled(5)
        while len(self.open) < count:
            assert time.monotonic() < deadline, f"only {len(self.open)} connected"
            time.sleep(0.01)

    def stop(self) -> None:
        self.quit.set()
        for thread in self.threads:
            thread.join(scaled(3))
        assert not [t for t in self.threads if t.is_alive()], "a client is still connected"


def test_clients_reconnecting_through_restart_and_stop_never_outlive_them() -> None:
    # A connection that arrives while the engine stops is refused (503) or closed: none
    # lingers on the old server, holding up stop() and keeping its client connected.
    with engine_running(close_timeout=0.2) as engine:
        clients = _Reconnecting(engine, 4)
        try:
            clients.wait_open(4)
            for _ in range(3):
                started = time.monotonic()
                engine.restart()
                assert time.monotonic() - started < scaled(2)
                clients.wait_open(4)
                deadline = time.monotonic() + scaled(2)
                while len([c for c in engine.connections if not c.closed.is_set()]) != 4:
                    assert time.monotonic() < deadline, "a client is still on the old server"
                    time.sleep(0.01)
            started = time.monotonic()
            engine.stop()
            assert time.monotonic() - started < scaled(2)
        finally:
            clients.stop()
        assert set(clients.statuses) <= {503}


def test_ignore_leaves_a_request_unanswered(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        engine.faults.ignore = {"get_messages"}
        client.send({"type": "get_messages", "session_id": sid})
        engine.wait_for_frame("get_messages", timeout=scaled(5))
        client.send({"type": "ping_session", "session_id": sid})
        assert client.recv() == {"type": "pong", "session_id": sid}  # pings still answered
        engine.faults.ignore = set()
        client.send({"type": "get_messages", "session_id": sid})
        assert client.recv() == {"type": "get_messages", "session_id": sid, "messages": []}


def test_fail_requests_answers_with_an_error_frame(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        engine.faults.fail_requests = {"get_messages"}
        client.send({"type": "get_messages", "session_id": sid})
        assert client.recv() == {
            "type": "error",
            "error": "get_messages failed (injected fault)",
            "request_type": "get_messages",
            "session_id": sid,
        }
        engine.faults.reset()
        assert engine.faults.fail_requests == set() and engine.faults.ignore == set()
