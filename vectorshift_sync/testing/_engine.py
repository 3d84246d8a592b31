"""``LocalEngine``: a real VectorShift server on 127.0.0.1 for tests, demos and CI.

One port serves both sides: websockets' threading server performs the WebSocket
handshake on ``/v1/ws/session`` and, through its ``process_request`` hook, answers the
plain HTTP ``GET`` endpoints with JSON. No WebSocket framing is written here.

It runs on websockets 14.1 and later and behaves the same on all of them: it never
relies on what changed in 16 (the newest release on Python 3.9 is 15). Methods other
than ``GET`` are answered by the engine's sockets, since websockets < 16 never shows them
to ``process_request``; and ``stop()`` refuses, closes and joins every connection itself,
since the ``Server.shutdown()`` of websockets < 16 only closes the listening socket.
"""

from __future__ import annotations

import email.utils
import http
import json
import logging
import socket
import ssl
import sys
import threading
import time
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from ._demo import demo_turn
from ._faults import Faults
from ._frames import new_id
from ._http import authorized, is_ws_path, route
from ._hub import Hub
from ._records import ConnectionRecord, Owner, SessionInfo, Turn
from ._sockets import ClientSocket, ListeningSocket, use_tls_client_sockets

__all__ = ["LocalEngine"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_SIZE = 64 * 2**20
_JOIN_TIMEOUT = 5.0
#: How long connection threads may take to end once the engine stopped listening and
#: closed its WebSocket connections, before every remaining socket (say, a client that
#: never finished its handshake) is aborted.
_SHUTDOWN_GRACE = 0.5


def _json_response(status: int, body: Any, **extra_headers: str) -> Any:
    """A JSON HTTP response for websockets' ``process_request`` hook."""
    payload = json.dumps(body).encode()
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *extra_headers.items(),
        ]
    )
    return Response(status, phrase, headers, payload)


def _method_not_allowed(method: str) -> bytes:
    """The raw 405 the engine's sockets write for a request that is not a ``GET``."""
    response = _json_response(405, {"error": f"method not allowed: {method}"}, Allow="GET")
    return bytes(response.serialize())


class _WebsocketsLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to websockets' server.

    websockets < 16 logs "opening handshake failed" at ERROR, with a traceback, for every
    client that goes away before or during its opening handshake (a port probe, a TLS
    client that rejected the certificate, one aborted by ``stop()``, a request the
    socket answered with 405); 16+ does not log those at all. Here they are DEBUG on
    every version. An exception of the engine's own (``process_request`` raising) stays
    an ERROR.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR and msg == "opening handshake failed":
            if isinstance(sys.exc_info()[1], (InvalidHandshake, EOFError, OSError)):
                level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


def _check_turn(turn: Turn) -> Turn:
    """Reject a ``turn`` that is neither None, a callable, nor a list of frames."""
    if turn is None or callable(turn):
        return turn
    if isinstance(turn, Sequence) and not isinstance(turn, (str, bytes)):
        return list(turn)  # a copy: later edits of the caller's list change nothing
    raise TypeError("turn must be None, a callable, or a list of frames")


class LocalEngine:
    """A local VectorShift engine: HTTP fetch endpoints and the session WebSocket.

    ``with LocalEngine() as engine:`` starts it on 127.0.0.1 and an ephemeral port;
    ``engine.env`` points any client (ours or the official SDK) at it. Everything it
    received can be read back, and ``engine.faults`` makes it misbehave on purpose.

    ``stop()`` is idempotent and bounded: it cancels running turns, refuses WebSocket
    upgrades from then on (503), closes connections (close code 1001; at most
    ``close_timeout`` per unresponsive client before an abort) and joins every thread
    the engine and websockets started.

    ``ssl_context`` (a server-side ``ssl.SSLContext`` with a certificate loaded) serves
    HTTPS and ``wss://`` instead; every fault control works the same. The engine sets
    the context's ``sslsocket_class`` (a documented hook) to its own socket class, so
    give it a context made for it.
    """

    def __init__(
        self,
        api_key: str = "local-test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        demo: bool = True,
        terminated_resumable: bool = False,
        stream_delay: float = 0.0,
        close_timeout: float = 1.0,
        max_size: Optional[int] = _DEFAULT_MAX_SIZE,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError("ssl_context must be an ssl.SSLContext or None")
            use_tls_client_sockets(ssl_context)
        self._ssl_context = ssl_context
        self._api_key = api_key
        self._host = host
        self._requested_port = port
        self._close_timeout = close_timeout
        self._max_size = max_size
        self.faults = Faults()
        self._hub = Hub(
            self.faults,
            default_turn=demo_turn,
            terminated_resumable=terminated_resumable,
            stream_delay=stream_delay,
        )
        self._lifecycle = threading.RLock()
        self._server: Any = None
        self._listener: Optional[ListeningSocket] = None
        self._thread: Optional[threading.Thread] = None
        self._port: Optional[int] = None
        if demo:
            self.add_agent("Demo Agent")
            self.add_chatbot("Demo Chatbot")

    # -- configuration --------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first start, if not 0)."""
        if self._port is not None:
            return self._port
        if self._requested_port:
            return self._requested_port
        raise RuntimeError("the engine has no port yet: call start() first")

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def tls(self) -> bool:
        """Whether the engine serves HTTPS and ``wss://`` (it was given an ``ssl_context``)."""
        return self._ssl_context is not None

    @property
    def base_url(self) -> str:
        """The HTTP API base, ``http://HOST:PORT/v1`` (``https://`` with TLS)."""
        return f"{'https' if self.tls else 'http'}://{self._netloc()}/v1"

    @property
    def ws_url(self) -> str:
        """The WebSocket base, ``ws://HOST:PORT/v1`` (``wss://`` with TLS); clients
        append ``/ws/session``."""
        return f"{'wss' if self.tls else 'ws'}://{self._netloc()}/v1"

    @property
    def env(self) -> Dict[str, str]:
        """Environment variables that point a client at this engine."""
        return {
            "VECTORSHIFT_API_KEY": self._api_key,
            "VECTORSHIFT_BASE_URL": self.base_url,
            "VECTORSHIFT_WS_URL": self.ws_url,
        }

    @property
    def terminated_resumable(self) -> bool:
        """Whether ``connect_session`` may resume a terminated session."""
        return self._hub.terminated_resumable

    @terminated_resumable.setter
    def terminated_resumable(self, value: bool) -> None:
        self._hub.terminated_resumable = value

    @property
    def stream_delay(self) -> float:
        """Seconds ``TurnContext.stream`` waits between deltas (the demo's pace)."""
        return self._hub.stream_delay

    @stream_delay.setter
    def stream_delay(self, value: float) -> None:
        self._hub.stream_delay = value

    def _netloc(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    # -- registry ---------------------------------------------------------------------------

    def add_agent(
        self,
        name: str,
        *,
        id: Optional[str] = None,
        turn: Turn = None,
        agent_type: str = "conversational",
        instructions: str = "",
        echo: bool = True,
    ) -> str:
        """Register an agent and return its id (24-hex unless given).

        ``turn`` runs once per user message: ``None`` is the demo; a callable gets a
        ``TurnContext`` in a worker thread, wrapped in ``Processing``/``Idle``; a list of
        frames is sent as is (``session_id`` filled in) with no automatic status.
        ``echo=False`` skips the echo of the user's message (history keeps it).
        """
        owner = Owner(
            "agent",
            id or new_id(),
            name,
            _check_turn(turn),
            agent_type=agent_type,
            instructions=instructions,
            echo=echo,
        )
        self._hub.add_owner(owner)
        return owner.id

    def add_chatbot(
        self,
        name: str,
        *,
        id: Optional[str] = None,
        turn: Turn = None,
        description: str = "",
        echo: bool = True,
    ) -> str:
        """Register a chatbot and return its id; ``turn`` as for :meth:`add_agent`."""
        owner = Owner(
            "chatbot",
            id or new_id(),
            name,
            _check_turn(turn),
            description=description,
            echo=echo,
        )
        self._hub.add_owner(owner)
        return owner.id

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalEngine:
        """Bind and serve in a background thread. Raises ``RuntimeError`` if running."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the engine is already running")
            self._serve(self._requested_port)
        logger.info("local engine serving %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and join every engine thread. Idempotent; keeps all state."""
        with self._lifecycle:
            if self._server is None:
                return
            self._shutdown(code=1001, reason="", abort=False)
        logger.info("local engine stopped")

    def restart(self, *, graceful: bool = True) -> None:
        """Stop listening and serve again on the same port, keeping agents, sessions
        and history. Running turns are cancelled; connections are closed with code
        1012 (service restart), or aborted when ``graceful`` is false.
        """
        with self._lifecycle:
            if self._server is None:
                raise RuntimeError("the engine is not running")
            port = self.port
            self._shutdown(code=1012, reason="service restart", abort=not graceful)
            self._serve(port)
        logger.info("local engine restarted on port %d", port)

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def _serve(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        raw = socket.create_server((self._host, port), family=family)
        listener = ListeningSocket(
            raw, lambda: self.faults.half_open, self._ssl_context, _method_not_allowed
        )
        hub = self._hub

        class TrackedConnection(ServerConnection):  # type: ignore[misc]
            """Known to the hub from the first moment of its connection thread, so that
            ``stop()`` can end and join it whatever it is doing."""

            def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
                # Before websockets starts this connection's reader, which may read the
                # request, answer it and close the socket before __init__ returns.
                hub.track(self, threading.current_thread())
                if isinstance(sock, ClientSocket):
                    sock.connection = self  # after track(): see _settle()
                super().__init__(sock, *args, **kwargs)

        try:
            server = serve(
                self._hub.serve_connection,
                sock=listener,
                process_request=self._process_request,
                compression=None,
                ping_interval=None,
                close_timeout=self._close_timeout,
                max_size=self._max_size,
                logger=_WebsocketsLogger(logging.getLogger(__name__ + ".websockets"), {}),
                create_connection=TrackedConnection,
            )
        except BaseException:
            listener.close()
            raise
        self._hub.resume()
        thread = threading.Thread(
            target=server.serve_forever, name="vectorshift-engine-server", daemon=True
        )
        thread.start()
        self._server, self._listener, self._thread = server, listener, thread
        self._port = int(listener.getsockname()[1])

    def _shutdown(self, *, code: int, reason: str, abort: bool) -> None:
        server, listener, thread = self._server, self._listener, self._thread
        self._hub.halt()  # turns cancelled; WebSocket upgrades refused from here on
        self._hub.close_connections(code, reason, abort=abort, timeout=self._close_timeout + 0.5)
        # Stop listening. websockets >= 16's shutdown() also closes what is still open
        # and waits for every connection thread (held up by a client stuck before its
        # handshake); older ones only close the listening socket. So it runs aside,
        # and the engine ends and joins what is left itself, the same on every version.
        closer = threading.Thread(
            target=server.shutdown, name="vectorshift-engine-shutdown", daemon=True
        )
        closer.start()
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)  # serve_forever() returned: nothing more is accepted
        if listener is not None and not self._settle(listener, _SHUTDOWN_GRACE):
            # A client stuck before the end of its handshake (or a fetch not read).
            for client in listener.clients():
                client.abort()
        closer.join(_JOIN_TIMEOUT)
        threads: List[threading.Thread] = [closer]
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
            threads.append(thread)
        leftover = self._hub.join_threads(_JOIN_TIMEOUT)
        leftover += [t for t in threads if t.is_alive()]
        if leftover:
            logger.warning("engine threads still alive after stop: %s", [t.name for t in leftover])
        self._server = self._listener = self._thread = None

    def _settle(self, listener: ListeningSocket, timeout: float) -> bool:
        """Wait up to ``timeout`` for every connection thread to end; whether they did.

        Called once nothing is accepted any more. Each accepted socket has a thread that
        is about to track itself, unless the socket names its connection already (a
        socket closed before that never got one: its thread is ending).
        """
        deadline = time.monotonic() + timeout
        while True:
            starting = any(c.connection is None for c in listener.clients())
            for handler in self._hub.handler_threads():
                handler.join(max(0.0, deadline - time.monotonic()))
            if not starting and not self._hub.handler_threads():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _process_request(self, connection: Any, request: Any) -> Any:
        """websockets' HTTP hook: auth, faults, and the plain ``GET`` endpoints (other
        methods never get here: the engine's sockets answer them, see ``_sockets``)."""
        target = str(request.path)
        credentials = request.headers.get("Authorization")
        if is_ws_path(target):
            if not self._hub.accepting:
                return _json_response(503, {"error": "the engine is stopping"})
            status = self.faults.reject_handshake
            if status:
                retry_after = self.faults.retry_after
                extra = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                body = {"error": "handshake refused (fault injection)"}
                return _json_response(status, body, **extra)
            if not authorized(credentials, self._api_key):
                return _json_response(401, {"error": "missing or invalid API key"})
            sock = connection.socket
            if isinstance(sock, ClientSocket):
                sock.websocket = True
            return None  # go on with the WebSocket handshake
        if not authorized(credentials, self._api_key):
            return _json_response(401, {"error": "missing or invalid API key"})
        status, body = route(target, self._hub.owners())
        return _json_response(status, body)

    # -- reading back --------------------------------------------------------------------------

    @property
    def connections(self) -> List[ConnectionRecord]:
        """Every WebSocket connection accepted so far, in accept order."""
        return self._hub.connections()

    def received(self, type: Optional[str] = None) -> List[Any]:
        """Every client frame received on any connection, in order; optionally one type."""
        return self._hub.received(type)

    def wait_for_frame(
        self,
        type: Optional[str],
        *,
        timeout: float = 5.0,
        predicate: Optional[Callable[[Dict[str, Any]], bool]] = None,
        since: int = 0,
    ) -> Dict[str, Any]:
        """Block until a client frame of ``type`` (any type if ``None``) matching
        ``predicate`` has been received, counting those already received from index
        ``since`` of :meth:`received` on. Raises the built-in ``TimeoutError``.
        """
        return self._hub.wait_for_frame(type, timeout=timeout, predicate=predicate, since=since)

    def history(self, session_id: str) -> List[Dict[str, Any]]:
        """A copy of a session's history (``get_messages`` items). ``KeyError`` if unknown."""
        return self._hub.history(session_id)

    @property
    def sessions(self) -> Dict[str, SessionInfo]:
        """A snapshot of every session, by id."""
        return self._hub.sessions()

    # -- injecting ----------------------------------------------------------------------------

    def send_raw(
        self, text: Union[str, Mapping[str, Any]], *, session_id: Optional[str] = None
    ) -> int:
        """Write raw text (or a dict as JSON) to every live connection, or to those
        attached to ``session_id``. Returns how many connections it was written to.
        """
        payload = text if isinstance(text, str) else json.dumps(dict(text))
        return self._hub.send_raw(payload, session_id)

    def drop_connections(self, session_id: Optional[str] = None) -> int:
        """Abort live connections (all, or those attached to ``session_id``) without a
        close frame. Returns how many were dropped.
        """
        return self._hub.drop(session_id)

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        state = "running" if self.running else "stopped"
        return f"<LocalEngine {state} {where} api_key=***>"
