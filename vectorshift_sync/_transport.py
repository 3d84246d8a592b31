"""One WebSocket connection: websocket-client dials, websockets' sans-I/O core frames.

websocket-client does what it is good at: the HTTP upgrade, proxies, TLS options. Once
the handshake is done, its socket is read in bulk by one thread at a time (the
session's reader, or a consumer holding its read lease; the session decides which)
and the bytes are fed to websockets' sans-I/O ``Protocol``, which parses frames,
answers pings, and runs the close handshake. websocket-client's own ``recv()`` and
``close()`` are never called: its ``close()`` reads frames itself and swallows errors,
which would make a second reader on the socket.

This module is the one place where websocket-client's and the socket's exceptions
become ours.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import threading
from typing import Any, Dict, List, Mapping, Optional

import websocket
from websockets.exceptions import PayloadTooBig
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from ._redaction import masking
from .errors import (
    SessionConnectionError,
    SessionDisconnectedError,
    SessionError,
    SessionTimeoutError,
    VectorshiftError,
    handshake_error_for_status,
)

__all__ = ["Transport", "TransportClosed", "SessionConnectionError", "open_transport"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


class TransportClosed(Exception):
    """The connection is over; ``reason`` says how (for logs and ERROR events)."""

    def __init__(self, reason: str, *, clean: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clean = clean


class Transport:
    """A connected WebSocket whose bytes are framed by a sans-I/O protocol.

    Thread rules: :meth:`read` (and :meth:`receive`) is called by one thread at a
    time; :meth:`wait_readable`, :meth:`send_text`, :meth:`send_ping`,
    :meth:`send_close` and :meth:`abort` may be called from any thread.
    """

    def __init__(self, sock: socket.socket, *, max_message_size: Optional[int]) -> None:
        self._sock = sock
        self._protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=max_message_size)
        self._proto_lock = threading.Lock()  # guards the protocol object; no I/O inside
        self._send_lock = threading.Lock()  # orders socket writes between threads
        self._fragments: List[bytes] = []
        self._binary = False  # inside a fragmented binary message (ignored)
        self._aborted = False  # abort() was called: the end is ours
        self._broken = False  # a write failed: the end is the network's
        # poll(), not select(): select() refuses descriptors past FD_SETSIZE (1024),
        # and a process holding a thousand sessions has them. Windows has no poll().
        self._poller: Optional[Any] = self.new_poller() if hasattr(select, "poll") else None
        # A plain socket with a timeout is non-blocking underneath, so os.read() on it
        # never blocks: one system call and one release of the GIL, where
        # socket.recv() polls first (sockets with a timeout always do). POSIX only.
        self._raw_read = (
            os.name == "posix" and type(sock) is socket.socket and sock.gettimeout() is not None
        )
        self._more = False  # the last read filled the buffer: more is probably waiting
        self._end: Optional[TransportClosed] = None  # what read() reported as the end

    @property
    def closed(self) -> bool:
        """True once the connection has ended or :meth:`abort` was called."""
        return (
            self._aborted
            or self._broken
            or self._end is not None
            or self._protocol.state is State.CLOSED
        )

    # --- sending (any thread) ---------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send one text frame; raise :class:`SessionDisconnectedError` if that fails."""
        self._write(lambda p: p.send_text(text.encode("utf-8")))

    def send_ping(self) -> None:
        """Send a WebSocket-level ping (the server's pong proves the path is alive)."""
        self._write(lambda p: p.send_ping(b""))

    def send_close(self, code: int = 1000) -> None:
        """Start the closing handshake; a connection already closing is left alone."""
        try:
            self._write(lambda p: p.send_close(code) if p.state is State.OPEN else None)
        except SessionDisconnectedError:
            pass

    def _write(self, action: Any) -> None:
        with self._send_lock:
            with self._proto_lock:
                if self.closed or self._protocol.state is not State.OPEN:
                    raise SessionDisconnectedError(
                        "the WebSocket is closed; connect() again to resume the session"
                    )
                action(self._protocol)
                data = self._protocol.data_to_send()
            self._sendall(data)

    def _sendall(self, chunks: List[bytes]) -> None:
        try:
            for chunk in chunks:
                if chunk:
                    self._sock.sendall(chunk)
                else:  # websockets asks for a half-close
                    self._sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError) as exc:
            self._broken = True
            raise SessionDisconnectedError(f"sending on the WebSocket failed: {exc}") from exc

    # --- receiving (one thread at a time) ----------------------------------------

    def receive(self, timeout: float) -> Optional[List[bytes]]:
        """Wait up to ``timeout`` seconds for data; return the complete messages read.

        Returns ``None`` when nothing at all arrived (not even a control frame) and a
        list (possibly empty) when bytes did. Raises :class:`TransportClosed` when the
        connection is over.
        """
        if not self.wait_readable(timeout):
            return None
        return self.read()

    def wait_readable(self, timeout: float, poller: Optional[Any] = None) -> bool:
        """Wait up to ``timeout`` s until :meth:`read` has something (or the end) to
        report. ``poller`` is the calling thread's own ``select.poll`` object when it
        is not the reader's (a poll object serves one thread at a time).

        Safe from any thread; it reads nothing, so two threads may wait at once.
        """
        if self._more:  # the last read filled the buffer: a flood, read on at once
            return True
        sock = self._sock
        if not self._raw_read and isinstance(sock, ssl.SSLSocket):
            try:
                if sock.pending() > 0:  # decrypted bytes wait in the TLS layer
                    return True
            except (OSError, ValueError):
                return True  # let read() report the end
        poller = poller if poller is not None else self._poller
        try:
            if poller is not None:
                return bool(poller.poll(max(timeout, 0.0) * 1000.0))
            readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
        except (OSError, ValueError):
            return True  # the socket is gone: read() says how
        return bool(readable)

    @property
    def pollable(self) -> bool:
        """True where other threads can wait on the socket too (``poll()`` exists)."""
        return self._poller is not None

    def new_poller(self) -> Any:
        """A ``select.poll`` object watching this socket, for a thread other than the
        reader (only where :attr:`pollable`)."""
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        return poller

    def read(self) -> Optional[List[bytes]]:
        """Read what the socket has, without waiting; return the complete messages.

        ``None`` means nothing was there after all. Only one thread at a time may
        call it (the session decides which). Raises :class:`TransportClosed` when
        the connection is over, and again (the same one) on every later call.
        """
        if self._end is not None:
            raise self._end
        try:
            return self._read()
        except TransportClosed as end:
            self._end = end
            raise

    def _read(self) -> Optional[List[bytes]]:
        sock = self._sock
        try:
            if self._raw_read:
                try:
                    data = os.read(sock.fileno(), _READ_SIZE)
                except BlockingIOError:
                    self._more = False
                    return None  # woken, yet nothing to read
            else:
                data = sock.recv(_READ_SIZE)
            self._more = len(data) == _READ_SIZE
        except (OSError, ValueError) as exc:
            self._more = False
            if self._aborted:
                raise TransportClosed("connection closed locally", clean=True) from None
            if isinstance(exc, ConnectionResetError):
                raise TransportClosed(
                    "server dropped the connection without a close frame (reset)"
                ) from None
            if isinstance(exc, (socket.timeout, ssl.SSLWantReadError)):
                return None  # a partial TLS record that did not complete in time
            raise TransportClosed(f"reading from the WebSocket failed: {exc}") from None
        with self._proto_lock:
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            frames = self._protocol.events_received()
            out = self._protocol.data_to_send()
            state = self._protocol.state
        if out:
            with self._send_lock:
                try:
                    self._sendall(out)
                except SessionDisconnectedError:
                    pass  # the read side reports the end below or on the next call
        messages = self._assemble(frames)
        if state is State.CLOSED or not data:
            if messages:
                return messages  # deliver what came before the end; next call raises
            raise self._closed_reason(data)
        return messages

    def _assemble(self, frames: List[Any]) -> List[bytes]:
        messages: List[bytes] = []
        append = messages.append
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    if opcode is _TEXT:
                        append(frame.data)
                    if self._fragments:
                        self._fragments = []
                else:
                    self._fragments = [frame.data] if opcode is _TEXT else []
                    self._binary = opcode is _BINARY
            elif opcode is _CONT:
                if not self._binary:
                    self._fragments.append(frame.data)
                    if frame.fin:
                        append(b"".join(self._fragments))
                        self._fragments = []
        return messages

    def _closed_reason(self, data: bytes) -> TransportClosed:
        protocol = self._protocol
        if self._aborted:
            return TransportClosed("connection closed locally", clean=True)
        exc = getattr(protocol, "parser_exc", None)
        if isinstance(exc, PayloadTooBig):  # ours to report: the server only saw a 1009
            return TransportClosed(f"a message from the server exceeded max_message_size: {exc}")
        received = protocol.close_rcvd
        if received is not None:
            clean = received.code == 1000
            reason = f"server closed the WebSocket (code {received.code}"
            reason += f", {received.reason!r})" if received.reason else ")"
            return TransportClosed(reason, clean=clean)
        if not data:
            return TransportClosed("server dropped the connection without a close frame")
        exc = getattr(protocol, "parser_exc", None)
        if exc is not None:
            return TransportClosed(f"protocol error from the server: {exc}")
        return TransportClosed("the WebSocket closed")

    # --- teardown (any thread) -------------------------------------------------

    def abort(self) -> None:
        """Shut the socket down so a reader blocked on it wakes; idempotent."""
        self._aborted = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self) -> None:
        """Free the socket; call after the reader has stopped."""
        self.abort()
        try:
            self._sock.close()
        except OSError:
            pass


def open_transport(
    url: str,
    api_key: str,
    *,
    timeout: float,
    max_message_size: Optional[int],
    sslopt: Optional[Mapping[str, Any]] = None,
    proxy: Optional[Mapping[str, Any]] = None,
    write_timeout: float,
) -> Transport:
    """Dial ``url`` with the Bearer header and return a connected :class:`Transport`.

    Raises a :class:`SessionHandshakeError` that is also the HTTP status class (e.g.
    :class:`AuthenticationError`) when the upgrade is refused,
    :class:`SessionTimeoutError` when ``timeout`` runs out, and
    :class:`SessionConnectionError` for any other failure to connect.
    """
    options: Dict[str, Any] = dict(proxy or {})
    try:
        with masking(api_key):  # websocket-client's trace logs the Authorization header
            ws = websocket.create_connection(
                url,
                timeout=timeout,
                header=[f"Authorization: Bearer {api_key}"],
                suppress_origin=True,
                skip_utf8_validation=True,
                sslopt=dict(sslopt) if sslopt else None,
                **options,
            )
    except websocket.WebSocketBadStatusException as exc:
        body = exc.resp_body or b""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        raise handshake_error_for_status(
            exc.status_code,
            endpoint=_path_of(url),
            raw_response=text,
            error_message=_error_message(text),
            headers=getattr(exc, "resp_headers", None),
        ) from None
    except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
        raise SessionTimeoutError(
            f"timed out after {timeout:.1f}s opening the WebSocket to {_safe(url)}"
        ) from exc
    except VectorshiftError:
        raise
    except (OSError, websocket.WebSocketException, ValueError) as exc:
        hint = (
            "pass sslopt={'ca_certs': <CA bundle>} (or set WEBSOCKET_CLIENT_CA_BUNDLE) "
            "if the server's certificate is signed by a private CA"
            if isinstance(exc, ssl.SSLCertVerificationError)
            else "check the network and VECTORSHIFT_WS_URL / VECTORSHIFT_BASE_URL"
        )
        raise SessionConnectionError(
            f"could not open the WebSocket to {_safe(url)}: {exc}; {hint}"
        ) from exc
    sock = ws.sock
    if sock is None:  # pragma: no cover - websocket-client always sets it on success
        raise SessionError("websocket-client returned no socket")
    sock.settimeout(write_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # websocket-client reads the handshake response one byte at a time, so nothing of
    # the first frames is left in its buffers: the socket is ours from here.
    return Transport(sock, max_message_size=max_message_size)


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def _safe(url: str) -> str:
    # A URL may carry credentials (user:pass@host); never show them.
    scheme, _, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()
