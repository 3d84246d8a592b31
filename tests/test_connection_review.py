"""Review of the connection and the I/O loop: defects found, each pinned by a test.

Every test here failed before the fix that came with it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import List, Optional

import pytest
from conftest import CollectingSink, make_connection, scaled
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from vectorshift_sync._connection import Connection, ConnectionSink, TransportClosed
from vectorshift_sync.errors import SessionTimeoutError
from vectorshift_sync.session import Session

pytestmark = pytest.mark.timeout(60)


def _text(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class _LateThenFailing(ConnectionSink):
    """A sink whose first delivery holds the I/O thread past the idle timeout (a late
    I/O thread: a GC pause, a starved CPU) while the peer sends more, and whose
    second delivery fails, as a routing failure on the I/O thread does."""

    def __init__(self, peer: socket.socket, late: float) -> None:
        self.peer = peer
        self.late = late
        self.calls = 0
        self.ended: List[TransportClosed] = []
        self.second = threading.Event()

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.peer.sendall(_text(b"second"))  # waiting in the socket meanwhile
            time.sleep(self.late)  # the I/O thread is late (not a synchronisation)
            return
        self.second.set()
        raise RuntimeError("routing failed")

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        self.ended.append(ending)

    def keepalive_frame(self) -> None:
        return None


def test_a_failure_while_the_keepalive_tick_reads_ends_the_connection() -> None:
    # A failure while a socket is served ends its connection (on_failure): the
    # session then reconnects and recovers. The keepalive tick also reads, when the
    # I/O thread was late; a failure there left the connection open, with the
    # message lost and no keepalive or idle check ever again (the tick is re-armed
    # only when it returns).
    ours, peer = socket.socketpair()
    idle = scaled(0.3)
    sink = _LateThenFailing(peer, late=idle + scaled(0.1))
    connection = make_connection(ours, sink, ping_interval=60.0, idle_timeout=idle)
    connection.start()
    try:
        peer.sendall(_text(b"first"))
        assert sink.second.wait(scaled(5)), "the tick did not read the waiting frame"
        assert connection.finished.wait(scaled(3)), "the connection outlived the failure"
        assert sink.ended and "internal failure" in sink.ended[0].reason
    finally:
        connection.abort()
        connection.finished.wait(scaled(5))
        peer.close()


class _StallingServer:
    """A WebSocket server on 127.0.0.1 that acknowledges ``connect_session``, then
    stops reading once a client frame is under way (a server that fell behind: the
    client's write of that frame blocks, holding the connection's send lock)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.done = threading.Event()
        self.conn: Optional[socket.socket] = None
        self.thread = threading.Thread(target=self._serve, name="stalling-server")
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.conn = conn
        conn.settimeout(scaled(10))
        protocol = ServerProtocol(max_size=None)
        request = None
        while request is None:
            protocol.receive_data(conn.recv(1 << 16))
            for event in protocol.events_received():
                request = event
        protocol.send_response(protocol.accept(request))
        conn.sendall(b"".join(protocol.data_to_send()))
        acked = False
        while not acked:
            protocol.receive_data(conn.recv(1 << 16))
            for frame in protocol.events_received():
                message = json.loads(frame.data)
                if message.get("type") == "connect_session":
                    ack = {"type": "connect_session", "session_id": message["session_id"],
                           "success": True}
                    protocol.send_text(json.dumps(ack).encode())
                    conn.sendall(b"".join(protocol.data_to_send()))
                    acked = True
        got = 0
        while got < 1 << 16:  # the start of the next frame: a write is under way
            data = conn.recv(1 << 16)
            if not data:
                return
            got += len(data)
        self.stalled.set()
        self.done.wait(scaled(30))  # and reads nothing more

    def close(self) -> None:
        self.done.set()
        self.thread.join(scaled(10))
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def test_get_messages_keeps_its_timeout_while_another_write_is_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # get_messages(timeout=...) "waits at most timeout seconds in total". It wrote
    # its request with the session's write_timeout, though: behind a write stuck on
    # a server that stopped reading, it waited write_timeout (30 s by default) for
    # the send lock, whatever its own timeout.
    server = _StallingServer()
    monkeypatch.setenv("VECTORSHIFT_WS_URL", f"ws://127.0.0.1:{server.port}")
    session = Session(
        session_id="s-stall", api_key="key", write_timeout=scaled(10), ping_interval=60.0,
        idle_timeout=120.0, reconnect=False,
    )
    writer_error: List[BaseException] = []

    def write_big() -> None:
        try:
            session.send("x" * (32 << 20))  # far more than the socket buffers hold
        except BaseException as exc:  # noqa: BLE001 - recorded, not asserted
            writer_error.append(exc)

    writer = threading.Thread(target=write_big)
    try:
        session.connect()
        writer.start()
        assert server.stalled.wait(scaled(10)), "the big write never started"
        started = time.monotonic()
        failure: Optional[BaseException] = None
        try:
            session.get_messages(timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - checked below, after the time
            failure = exc
        elapsed = time.monotonic() - started
        assert elapsed < 1.0 + scaled(1.0), f"get_messages(timeout=1) took {elapsed:.1f}s"
        assert isinstance(failure, SessionTimeoutError), repr(failure)
    finally:
        session.disconnect()
        writer.join(scaled(15))
        server.close()
    assert not writer.is_alive()


def test_a_write_that_timed_out_is_reported_as_such_not_as_the_server_dropping() -> None:
    # A write cut short shuts the socket down and queues the end "writing to the
    # WebSocket failed"; the I/O thread, idle in its selector, read the EOF of that
    # shutdown first and reported "server dropped the connection without a close
    # frame": the session's ERROR event blamed the server for our own timeout.
    ours, peer = socket.socketpair()  # the peer never reads
    sink = CollectingSink()
    connection = make_connection(
        ours, sink, write_timeout=scaled(0.5), ping_interval=60.0, idle_timeout=60.0
    )
    connection.start()
    try:
        with pytest.raises(Exception, match="timed out"):
            connection.send_text("x" * (16 << 20))
        assert connection.finished.wait(scaled(5))
        assert [e.reason for e in sink.ended] == ["writing to the WebSocket failed"]
    finally:
        connection.abort()
        connection.finished.wait(scaled(5))
        peer.close()


def test_bytes_left_to_the_lock_holder_are_written_when_the_io_thread_stood_aside() -> None:
    # A caller letting go of the send lock flushes what was queued meanwhile; when
    # the socket is full, _flush_now asks the I/O thread to watch for writability.
    # If the I/O thread, between that and the caller's release, found the lock held,
    # it turned the watch off and left the flush to the caller, who had already
    # decided to return: the queued bytes stayed unsent until something else was
    # written. The interleaving is forced here: the I/O thread's flush attempt runs,
    # to its end, inside the caller's _flush_now.
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection = make_connection(ours, CollectingSink(), ping_interval=60.0, idle_timeout=60.0)
    connection.start()
    loop = connection.loop
    payload = 1 << 20
    original = connection._flush_now
    injected: List[bool] = []

    def flush_now_then_io_thread_tries() -> bool:
        done = original()
        if not injected:
            injected.append(done)
            tried = threading.Event()
            loop.call_soon(connection._flush_from_loop)  # finds the lock held
            loop.call_soon(tried.set)
            assert tried.wait(scaled(5))
        return done

    connection._flush_now = flush_now_then_io_thread_tries  # type: ignore[method-assign]
    try:
        # The caller holds the lock while a frame is queued behind its own write.
        assert connection._send_lock.acquire(timeout=5)
        with connection._proto_lock:
            connection._protocol.send_text(b"y" * payload)
            connection._queue_locked(connection._protocol.data_to_send())
        connection._release_writer()
        assert injected == [False], "the socket was not full: nothing was forced"
        received = 0
        peer.settimeout(scaled(3))
        try:
            while received < payload:
                chunk = peer.recv(1 << 16)
                if not chunk:
                    break
                received += len(chunk)
        except socket.timeout:
            pass
        assert received >= payload, f"only {received} of {payload}+ bytes were written"
    finally:
        connection.abort()
        connection.finished.wait(scaled(5))
        peer.close()
