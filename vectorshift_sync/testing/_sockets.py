"""TCP sockets the engine can mute (half-open) or abort (drop without a close frame).

The engine hands websockets' threading server a listening socket whose ``accept()``
returns :class:`ClientSocket` objects, so every byte websockets writes passes through
:meth:`ClientSocket.sendall`. That is the one choke point for faults that must also
silence websockets' automatic writes — the WS pong, the close frame, the handshake
response — without touching its framing code:

* **mute** (``Faults.half_open``): writes are discarded whole (websockets writes one
  frame per ``sendall`` and compression is off, so the stream stays frame-aligned) and
  ``shutdown`` is ignored, while the reader keeps reading and recording. If the first
  write — the handshake response — was discarded, the socket stays mute for good.
* **abort**: ``SO_LINGER`` 0, then ``shutdown(SHUT_RDWR)`` to wake websockets' reader
  (and any writer blocked on a full buffer); its ``close()`` then resets the connection.
  No close frame is ever written.

Every :meth:`ClientSocket.recv` passes through here too, which gives the engine one
version-independent answer to a request that is not a ``GET``: websockets 16+ hands
it to ``process_request``, but older releases (the newest one on Python 3.9 is 15)
close such a connection without a response before ``process_request`` runs. So the
socket looks at the method of the first request itself and, if it is not ``GET``,
writes the engine's 405 and reports end-of-stream to websockets.

With TLS (``LocalEngine(ssl_context=...)``) the listening socket wraps each accepted
connection itself, as a :class:`TLSClientSocket` (a :class:`ClientSocket` that is also
an ``ssl.SSLSocket``), so both faults work the same: muting discards whole plaintext
writes before they are encrypted. The TLS handshake runs inside the first read, in
websockets' connection thread, never in the accept loop.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import ssl
import struct
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["ClientSocket", "TLSClientSocket", "ListeningSocket"]

#: Answers a request whose method (the argument) is not ``GET``: the raw HTTP response.
RefuseMethod = Callable[[str], bytes]

#: How far into a connection its request method must have ended (HTTP methods are short).
_METHOD_WINDOW = 16
_METHOD = re.compile(rb"[A-Za-z]+")


class ClientSocket(socket.socket):
    """One accepted connection, with a mute switch and an abort."""

    def __init__(
        self,
        sock: socket.socket,
        half_open: Callable[[], bool],
        refuse_method: Optional[RefuseMethod] = None,
    ) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self._init_faults(half_open, refuse_method)

    def _init_faults(
        self, half_open: Callable[[], bool], refuse_method: Optional[RefuseMethod] = None
    ) -> None:
        self._half_open = half_open
        self._abort_lock = threading.Lock()
        #: Set once the request turned out to be a WebSocket upgrade (HTTP is never muted).
        self.websocket = False
        #: The websockets connection serving this socket, once its thread has made it.
        self.connection: Any = None
        self._wrote = False
        self._swallowed = False
        self._aborted = False
        self._refuse_method = refuse_method
        #: The first bytes received, while the request method is not known yet.
        self._start: Optional[bytes] = b"" if refuse_method is not None else None

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def is_open(self) -> bool:
        return self.fileno() != -1

    def muted(self) -> bool:
        """Whether writes are being discarded right now."""
        return self._swallowed or (self.websocket and self._half_open())

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        # websockets calls this with its protocol lock held, so calls never interleave.
        if self._aborted:
            raise BrokenPipeError(errno.EPIPE, "connection aborted by the local engine")
        if self.muted():
            if not self._wrote:
                self._swallowed = True
            return
        self._wrote = True
        super().sendall(data, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:  # as ssl.SSLSocket's
        data = super().recv(buflen, flags)
        if self._start is not None and data:
            return self._screen_method(data)
        return data

    def _screen_method(self, data: bytes) -> bytes:
        """Pass ``data`` on, unless it completes the method of a request that is not a
        ``GET``: then write the engine's answer and return end-of-stream instead.

        Never waits for more bytes than the client sent: a method split across reads
        is decided on the read that completes it (what came before went on already,
        and websockets sees the stream end mid-request).
        """
        assert self._start is not None and self._refuse_method is not None
        start = self._start + data[:_METHOD_WINDOW]
        space = start.find(b" ")
        if space < 0 and len(start) < _METHOD_WINDOW:
            self._start = start
            return data
        self._start = None  # decided: later reads pass straight through
        method = start[:space] if space > 0 else b""
        if method == b"GET" or not _METHOD.fullmatch(method):
            return data  # an upgrade or a fetch; or not HTTP at all: websockets' call
        with contextlib.suppress(OSError):
            self.sendall(self._refuse_method(method.decode("ascii")))
        return b""

    def shutdown(self, how: int, /) -> None:
        # A mute connection keeps TCP up: no half-close after a (swallowed) close frame.
        # SHUT_RDWR, though, only ever precedes close() (websockets < 16 uses it to wake
        # its reader blocked in recv(); 16+ wakes it another way and just closes), so it
        # goes through like that close() would.
        if self._aborted or (self.muted() and how != socket.SHUT_RDWR):
            return
        super().shutdown(how)

    def abort(self) -> None:
        """Drop the connection now: no close frame, a reset instead of a goodbye."""
        with self._abort_lock:
            if self._aborted:
                return
            self._aborted = True
        with contextlib.suppress(OSError):
            self.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            super().shutdown(socket.SHUT_RDWR)


class TLSClientSocket(ClientSocket, ssl.SSLSocket):
    """An accepted TLS connection with the same mute switch and abort.

    Made by ``SSLContext.wrap_socket`` (the engine sets the context's documented
    ``sslsocket_class`` to this class), which bypasses ``__init__``: the listening
    socket calls :meth:`_init_faults` right after.
    """


def use_tls_client_sockets(context: ssl.SSLContext) -> None:
    """Make ``context.wrap_socket`` return :class:`TLSClientSocket` objects."""
    context.sslsocket_class = TLSClientSocket


class ListeningSocket(socket.socket):
    """The server socket; wraps each accepted connection in a :class:`ClientSocket`
    (with ``tls``, a :class:`TLSClientSocket`, before any byte is read)."""

    def __init__(
        self,
        sock: socket.socket,
        half_open: Callable[[], bool],
        tls: Optional[ssl.SSLContext] = None,
        refuse_method: Optional[RefuseMethod] = None,
    ) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self._half_open = half_open
        self._tls = tls
        self._refuse_method = refuse_method
        self._clients_lock = threading.Lock()
        self._clients: List[ClientSocket] = []

    def accept(self) -> Tuple[socket.socket, Any]:
        sock, address = super().accept()
        client: ClientSocket
        if self._tls is None:
            client = ClientSocket(sock, self._half_open, self._refuse_method)
        else:
            # No I/O here: the handshake happens in the connection's thread, inside
            # the first read, so a slow or silent client cannot stall the accept loop.
            wrapped = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            if not isinstance(wrapped, TLSClientSocket):  # pragma: no cover - misuse
                wrapped.close()
                raise TypeError("the engine's SSL context was given another sslsocket_class")
            client = wrapped
            client._init_faults(self._half_open, self._refuse_method)
        with self._clients_lock:
            self._clients = [c for c in self._clients if c.is_open]
            self._clients.append(client)
        return client, address

    def clients(self) -> List[ClientSocket]:
        """Every accepted connection that is still open (HTTP and WebSocket)."""
        with self._clients_lock:
            return [c for c in self._clients if c.is_open]
