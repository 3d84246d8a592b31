"""Dialling: a direct ``ws://`` connection is upgraded by websockets' ``ClientProtocol``
over our own TCP socket; proxies, websocket-client's trace and redirects stay with
websocket-client. Against real loopback servers (a bare one that answers as told, and
the local engine)."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Iterator, List, Optional

import pytest
from conftest import scaled
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.utils import accept_key

from vectorshift_sync import SessionConnectionError, SessionTimeoutError
from vectorshift_sync._dial import _read_response, open_socket
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine

pytestmark = pytest.mark.timeout(60)

KEY = "sk-dial-test-0123456789abcdef"
#: One unmasked text frame, as a server sends it.
FRAME = Frame(Opcode.TEXT, b'{"type": "hello"}').serialize(mask=False)


def _switching(request: bytes) -> bytes:
    key = ""
    for line in request.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


class BareServer:
    """Accepts ``connections`` connections on 127.0.0.1, one after the other, reads
    each request's header block and answers with ``answer(request)`` (None: say
    nothing, hold the connection until the test ends)."""

    def __init__(self, answer: Callable[[bytes], Optional[bytes]], connections: int = 1) -> None:
        self._answer = answer
        self._connections = connections
        self.requests: List[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bare-server")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws/session"

    def _serve(self) -> None:
        with self._listener:
            for _ in range(self._connections):
                conn, _ = self._listener.accept()
                if self._done.is_set():  # woken by close()
                    conn.close()
                    return
                with conn:
                    self._answer_one(conn)

    def _answer_one(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        self.requests.append(request)
        reply = self._answer(request)
        if reply is None:
            self._done.wait(scaled(30))
            return
        conn.sendall(reply)
        if self._connections == len(self.requests):
            conn.shutdown(socket.SHUT_WR)
            self._done.wait(scaled(30))

    def close(self) -> None:
        self._done.set()
        if len(self.requests) < self._connections:  # it may be waiting in accept()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5)).close()
            except OSError:
                pass  # it had stopped listening
        self._thread.join(scaled(10))
        assert not self._thread.is_alive()


@pytest.fixture
def bare() -> Iterator[Callable[[Callable[[bytes], Optional[bytes]]], BareServer]]:
    servers: List[BareServer] = []

    def start(answer: Callable[[bytes], Optional[bytes]], connections: int = 1) -> BareServer:
        servers.append(BareServer(answer, connections))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_direct_connect_is_upgraded_by_websockets_and_leaves_the_first_frame(
    bare: Callable[..., BareServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The first frame comes in the same write as the response: it must stay unread.
    server = bare(lambda request: _switching(request) + FRAME)
    sock = open_socket(server.url, KEY, timeout=scaled(5))
    try:
        sock.settimeout(scaled(5))
        received = b""
        while len(received) < len(FRAME):
            chunk = sock.recv(4096)
            assert chunk, "the socket ended before the first frame"
            received += chunk
        assert received == FRAME
    finally:
        sock.close()
    sent = server.requests[0].decode("latin-1")
    assert sent.startswith("GET /v1/ws/session HTTP/1.1\r\n")
    assert f"\r\nAuthorization: Bearer {KEY}\r\n" in sent
    assert "origin:" not in sent.lower()  # as websocket-client's suppress_origin
    # websockets read the response (its DEBUG line), and no log line shows the key.
    assert any(
        r.name == "websockets.client" and "< HTTP/1.1 101" in r.getMessage()
        for r in caplog.records
    )
    assert KEY not in caplog.text


class _Arrivals:
    """Stands for a socket whose bytes arrive in the given pieces, one piece per read
    (as TCP may deliver them); peeks see only what has arrived."""

    def __init__(self, pieces: List[bytes]) -> None:
        self._pieces = list(pieces)
        self.buffer = b""

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.buffer and self._pieces:
            self.buffer = self._pieces.pop(0)
        data = self.buffer[:size]
        if not flags & socket.MSG_PEEK:
            self.buffer = self.buffer[len(data) :]
        return data


def test_a_header_end_split_between_reads_takes_nothing_past_it() -> None:
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), max_size=None)
    request = protocol.connect()
    response = _switching(request.serialize())
    assert response.endswith(b"\r\n\r\n")
    for cut in (1, 2, 3):  # "...\r\n\r" | "\n", "...\r\n" | "\r\n", "...\r" | "\n\r\n"
        protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), max_size=None)
        protocol.key = request.headers["Sec-WebSocket-Key"]
        arrivals = _Arrivals([response[:-cut], response[-cut:] + FRAME])
        _read_response(arrivals, protocol)  # type: ignore[arg-type]
        assert protocol.state is State.OPEN and protocol.handshake_exc is None
        assert arrivals.buffer == FRAME, cut


def test_a_connection_closed_before_any_response_is_a_connection_error(
    bare: Callable[..., BareServer],
) -> None:
    server = bare(lambda request: b"")
    with pytest.raises(SessionConnectionError) as caught:
        open_socket(server.url, KEY, timeout=scaled(5))
    assert "did not receive a valid HTTP response" in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_server_that_never_answers_times_out(bare: Callable[..., BareServer]) -> None:
    server = bare(lambda request: None)
    with pytest.raises(SessionTimeoutError) as caught:
        open_socket(server.url, KEY, timeout=0.3)
    assert "timed out after 0.3s opening the WebSocket" in str(caught.value)


def test_a_redirect_is_followed_by_websocket_client(
    bare: Callable[..., BareServer], engine: LocalEngine
) -> None:
    target = f"{engine.ws_url}/ws/session"
    redirect = f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
    # The direct upgrade meets the redirect and gives the dial to websocket-client,
    # which asks again and follows it: two requests.
    server = bare(lambda request: redirect.encode(), connections=2)
    sock = open_socket(server.url, engine.api_key, timeout=scaled(5))
    try:
        assert sock.getpeername()[1] == engine.port  # upgraded by the engine
    finally:
        sock.close()
    assert len(server.requests) == 2


def test_a_proxy_in_the_environment_is_left_to_websocket_client(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    # The "proxy": bound, never listening, kept bound until the end (connections are
    # refused, and no other process can take the port meanwhile).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed.getsockname()[1]}")
        with pytest.raises(SessionConnectionError) as caught:
            Session(owner_type="agent", owner_id=agent, connect_timeout=scaled(5)).connect()
    assert "Connection refused" in str(caught.value)
    monkeypatch.delenv("http_proxy")
    with Session(owner_type="agent", owner_id=agent) as session:  # direct again
        assert session.ask("hello", timeout=scaled(10)).text == "hi"
