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
import websocket
from conftest import scaled
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.utils import accept_key

from vectorshift_sync import AuthenticationError, SessionConnectionError, SessionTimeoutError
from vectorshift_sync._dial import _direct_target, _no_response, _read_response, open_socket
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
    each request's header block and answers ``answer(request)``: bytes to send,
    ``b""`` to end the stream, None to say nothing. Every connection stays open
    until :meth:`close` (a server that keeps the connection after answering)."""

    def __init__(self, answer: Callable[[bytes], Optional[bytes]], connections: int = 1) -> None:
        self._answer = answer
        self._connections = connections
        self.requests: List[bytes] = []
        self._held: List[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._done = threading.Event()
        # A daemon: should close() ever fail, a thread left in accept() must not
        # hold the interpreter at exit.
        self._thread = threading.Thread(target=self._serve, name="bare-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws/session"

    def _serve(self) -> None:
        with self._listener:
            for _ in range(self._connections):
                conn, _ = self._listener.accept()
                self._held.append(conn)
                if self._done.is_set():  # woken by close()
                    return
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
        if reply:
            conn.sendall(reply)
        elif reply is not None:
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._done.set()
        if len(self._held) < self._connections:  # it may be waiting in accept()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5)).close()
            except OSError:
                pass  # it had stopped listening
        self._thread.join(scaled(10))
        assert not self._thread.is_alive()
        for conn in self._held:
            conn.close()


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
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent = engine.add_agent("Any", turn=lambda ctx: ctx.complete("hi"))
    # The "proxy": bound, never listening, kept bound until the end (connections are
    # refused, and no other process can take the port meanwhile).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed.getsockname()[1]}")
        # (websocket-client 1.6 skips the proxy for 127.0.0.1 unless no_proxy is set)
        monkeypatch.setenv("no_proxy", "example.invalid")
        with pytest.raises(SessionConnectionError) as caught:
            Session(owner_type="agent", owner_id=agent, connect_timeout=scaled(5)).connect()
    assert "Connection refused" in str(caught.value)
    monkeypatch.delenv("http_proxy")
    caplog.set_level(logging.DEBUG, logger="websockets.client")
    with Session(owner_type="agent", owner_id=agent) as session:  # direct again
        assert session.ask("hello", timeout=scaled(10)).text == "hi"
    assert any("< HTTP/1.1 101" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("ws://127.0.0.1:8080/v1/ws/session", True),
        ("ws://127.0.0.2/v1/ws/session", True),
        ("ws://localhost:8080/v1/ws/session", True),
        ("ws://[::1]:8080/v1/ws/session", True),
        ("ws://10.0.0.1:8080/v1/ws/session", False),  # maybe a load balancer: cookies
        ("ws://example.com/v1/ws/session", False),
        ("wss://127.0.0.1:8443/v1/ws/session", False),
        ("ws://user:secret@127.0.0.1:8080/v1/ws/session", False),
    ],
)
def test_only_a_direct_ws_url_to_this_machine_takes_the_direct_path(url: str, direct: bool) -> None:
    assert (_direct_target(url, None) is not None) is direct
    assert _direct_target(url, {"http_proxy_host": "proxy", "http_proxy_port": 3128}) is None


def test_the_trace_and_a_proxy_variable_keep_websocket_clients_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "ws://127.0.0.1:8080/v1/ws/session"
    trace_logger = logging.getLogger("websocket")
    level, handlers = trace_logger.level, list(trace_logger.handlers)
    websocket.enableTrace(True, handler=logging.NullHandler())
    try:
        assert _direct_target(url, None) is None
    finally:
        websocket.enableTrace(False)
        trace_logger.setLevel(level)
        trace_logger.handlers[:] = handlers
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:3128")
        assert _direct_target(url, None) is None
        monkeypatch.delenv(name)
    assert _direct_target(url, None) is not None


@pytest.mark.parametrize(
    "status_line", ["HTTP/1.0 401 Unauthorized", "HTTP/1.1 401"], ids=["http-1.0", "no-reason"]
)
def test_a_refusal_websockets_does_not_parse_is_asked_again_by_websocket_client(
    bare: Callable[..., BareServer], status_line: str
) -> None:
    body = b'{"error": "missing or invalid API key"}'
    reply = f"{status_line}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    server = bare(lambda request: reply, connections=2)
    with pytest.raises(AuthenticationError) as caught:
        open_socket(server.url, KEY, timeout=scaled(5))
    assert caught.value.error_message == "missing or invalid API key"
    assert len(server.requests) == 2


def test_a_refusal_without_a_length_on_a_kept_connection_is_not_waited_out(
    bare: Callable[..., BareServer],
) -> None:
    # No Content-Length and the connection kept open: websockets would read the body
    # until the connection ends (here: the timeout); websocket-client reads none.
    reply = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nno"
    server = bare(lambda request: reply, connections=2)
    with pytest.raises(AuthenticationError) as caught:
        open_socket(server.url, KEY, timeout=scaled(2))
    assert caught.value.status_code == 401
    assert len(server.requests) == 2


def test_an_end_before_any_response_is_a_websockets_error_on_every_version() -> None:
    # websockets 14 leaves its parser's EOFError in handshake_exc; 15 and later wrap
    # it in InvalidMessage (deprecated in 14, so not named here).
    error = _no_response(EOFError("stream ends after 0 bytes"))
    assert type(error) is InvalidHandshake
    assert str(error) == "did not receive a valid HTTP response"
    assert isinstance(error.__cause__, EOFError)
    already = InvalidHandshake("did not receive a valid HTTP response")
    assert _no_response(already) is already


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:abc/v1/ws/session", "ws://127.0.0.1:99999/v1/ws/session"]
)
def test_a_malformed_url_is_a_connection_error_as_before(url: str) -> None:
    assert _direct_target(url, None) is None  # websocket-client reports it
    with pytest.raises(SessionConnectionError) as caught:
        open_socket(url, KEY, timeout=scaled(5))
    assert "could not open the WebSocket" in str(caught.value)
