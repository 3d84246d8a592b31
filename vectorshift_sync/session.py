"""The blocking real-time Session: the synchronous twin of ``vectorshift.session``.

Threading model
---------------
A process has **one I/O thread** (``vectorshift-io``) for all of its sessions. It
waits on every session's socket at once, reads, frames, parses and routes: replies
to the call waiting for them, events to subscriber queues. Heartbeats and the
half-open check are timers on the same thread. It never runs user code and never
waits for one connection. It starts with the first ``connect()`` and ends by itself
once the last session is gone.

Consumers (``listen()`` iterators, ``stream()``, ``ask()``, replies) only wait on
their own queues (on the main thread in slices, so that Ctrl-C gets through); the
I/O thread wakes each once per round of reads. Callbacks registered with
:meth:`Session.on` run on a small shared pool (8 threads by default): one session's
callbacks in order, one at a time; different sessions' in parallel. Reconnect
handshakes run on another small pool (4 threads), with their back-off on the I/O
thread's timers. See :func:`vectorshift_sync.set_worker_limits`.

Delivery model
--------------
Every :meth:`Session.listen` iterator has its own queue, registered when
``listen()`` is called. Events that arrive while no iterator is open are kept in a
bounded backlog and handed to the next ``listen()``; ``send()`` starts a new turn and
clears it, so an earlier turn is never replayed into a later one. ``disconnect()``
clears it too, and what is read while closing is dropped, so nothing of one
``connect()`` is replayed into the next. A full bounded
queue drops the offending event and hands its consumer an ``ERROR`` event with
``data["error"] == "subscriber queue overflow"`` before anything that came later.
``get_messages()`` is answered privately and never appears in ``listen()``.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import socket
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import (
    Any,
    FrozenSet,
    Generator,
    List,
    Optional,
    Type,
    TypeVar,
    Union,
)

from . import _protocol as proto
from ._callbacks import Callback, CallbackErrorHook, Callbacks
from ._config import resolve_api_key, ws_session_url
from ._connection import Connection, ConnectionSink, TransportClosed, open_socket
from ._deadline import Deadline
from ._fanout import FanOut, Listener, event_type_set
from ._inbound import Inbound
from ._ioloop import io_loop
from ._options import SessionOptions, check_positive, check_str
from ._protocol import Content, FileLike, SendManyItem, UserSessionMessage
from ._reconnect import Reconnector
from ._recovery import (
    ReconnectAttempt,
    ReconnectHook,
    ReconnectPolicy,
    missed_replies,
)
from ._replies import ReplyDesk
from ._subscribers import SubscriberQueue
from ._turn_follow import TextStream, TurnFollower, TurnLine, follow_answer, follow_events
from .errors import (
    ArgumentTypeError,
    SessionConnectionError,
    SessionDisconnectedError,
    SessionError,
    SessionForkedError,
    SessionRefusedError,
    SessionTimeoutError,
)
from .events import SessionEvent, SessionEventType, SessionMessage
from .turns import TurnResult

__all__ = [
    "Session",
    "SessionError",
    "SessionDisconnectedError",
    "SessionTimeoutError",
    "SessionConnectionError",
    "UserSessionMessage",
    "SendManyItem",
    "ApprovalResponse",
    "TurnResult",
    "TextStream",
    "ReconnectPolicy",
    "ReconnectAttempt",
    "EventTypes",
    "Callback",
]

logger = logging.getLogger(__name__)

EventTypes = Union[SessionEventType, str, Sequence[Union[SessionEventType, str]], None]
_F = TypeVar("_F", bound=Callback)

_LIVE: "weakref.WeakSet[Session]" = weakref.WeakSet()


class _State(enum.Enum):
    """Where a session is in its life."""

    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


_ACTIVE = (_State.CONNECTING, _State.OPEN, _State.RECONNECTING)


class ApprovalResponse:
    """An approval decision, as the official SDK exports it (no method takes one)."""

    def __init__(
        self,
        approved: bool,
        confirm: Optional[Mapping[str, Any]] = None,
        deny_reason: Optional[str] = None,
    ) -> None:
        self.approved = approved
        self.confirm = confirm
        self.deny_reason = deny_reason

    def __repr__(self) -> str:
        return (
            f"ApprovalResponse(approved={self.approved!r}, confirm={self.confirm!r}, "
            f"deny_reason={self.deny_reason!r})"
        )


class _Sink(ConnectionSink):
    """What the I/O thread reports to a session (kept off the public class).

    It refers to its session weakly: the I/O thread's references end with the
    connection's, never keeping a closed session alive a moment longer.
    """

    __slots__ = ("_session",)

    def __init__(self, session: Session) -> None:
        self._session = weakref.ref(session)

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        session = self._session()
        if session is not None:
            session._on_messages(connection, messages)

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        session = self._session()
        if session is not None:
            session._on_connection_end(connection, ending)

    def keepalive_frame(self) -> Optional[str]:
        session = self._session()
        if session is None:
            return None
        session_id = session._session_id
        if session_id and session._state is _State.OPEN:
            return proto.encode_ping(session_id)
        return None


class Session:
    """A live, multi-turn conversation with an Agent or Chatbot, without asyncio.

    Create one with ``agent.create_session()`` / ``chatbot.create_session()``, or
    directly: ``Session(owner_type="agent", owner_id=...)`` starts a new session,
    ``Session(session_id=...)`` resumes one. Use it as a context manager, or call
    :meth:`connect` and :meth:`disconnect`.

    Options beyond the official SDK's (all keyword-only, all finite):

    * connection: ``sslopt`` (passed to websocket-client, e.g. ``{"ca_certs": ...}``;
      certificates are verified by default), ``proxy`` (websocket-client's
      ``http_proxy_host``/``http_proxy_port``/``proxy_type``/... options),
      ``max_message_size`` (largest inbound message, bytes).
    * timeouts (seconds): ``connect_timeout`` (dial plus acknowledgements),
      ``request_timeout`` (``get_messages``), ``write_timeout`` (one frame),
      ``close_timeout`` (each step of closing).
    * liveness: ``ping_interval`` (``ping_session`` and WebSocket pings) and
      ``idle_timeout`` (no byte from the server for this long means the link is dead).
    * delivery: ``backlog`` (events kept while no ``listen()`` is open),
      ``on_callback_error`` (called with ``(exception, event)`` when a callback fails).
    * recovery: ``reconnect`` (``True``: the default :class:`ReconnectPolicy`;
      ``False``: never; or a policy) and ``on_reconnect`` (called with a
      :class:`ReconnectAttempt` before each attempt; returning ``False`` gives up).

    After an unexpected drop the session reconnects by itself: listeners and
    callbacks get an ``ERROR`` event (``data["error"] == "connection lost"``,
    ``data["reconnecting"] is True``), then a ``SESSION_CONNECTED`` event with
    ``data["reconnected"] is True`` once it is back, followed by a
    ``MESSAGE_COMPLETE`` (``data["recovered"] is True``) for every agent reply that
    completed while it was away. If it gives up, they get a final ``ERROR`` with
    ``data["reconnecting"] is False`` and their iteration ends. While reconnecting,
    ``send()`` and friends wait up to ``write_timeout`` for the connection to return,
    then raise :class:`SessionDisconnectedError`.
    """

    def __init__(
        self,
        *,
        owner_type: str = "",
        owner_id: str = "",
        session_id: Optional[str] = None,
        api_key: Optional[str] = None,
        connect_timeout: float = 30.0,
        request_timeout: float = 30.0,
        write_timeout: float = 30.0,
        close_timeout: float = 1.0,
        ping_interval: float = 5.0,
        idle_timeout: float = 15.0,
        backlog: int = 4096,
        max_message_size: Optional[int] = 64 * 1024 * 1024,
        sslopt: Optional[Mapping[str, Any]] = None,
        proxy: Optional[Mapping[str, Any]] = None,
        on_callback_error: Optional[CallbackErrorHook] = None,
        reconnect: Union[bool, ReconnectPolicy] = True,
        on_reconnect: Optional[ReconnectHook] = None,
    ) -> None:
        check_str("session_id", session_id, optional=True)
        check_str("api_key", api_key, optional=True)
        self._options = options = SessionOptions.checked(
            owner_type=owner_type,
            owner_id=owner_id,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            write_timeout=write_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            idle_timeout=idle_timeout,
            backlog=backlog,
            max_message_size=max_message_size,
            sslopt=sslopt,
            proxy=proxy,
            on_callback_error=on_callback_error,
            reconnect=reconnect,
            on_reconnect=on_reconnect,
        )
        self._session_id: Optional[str] = session_id or None
        self.__api_key = api_key

        # One lock for shared state, also the fan-out's; never held while user code
        # runs or while blocking on the network (writes happen outside it).
        self._lock = threading.Lock()
        self._lifecycle = threading.Lock()  # serialises connect() and close
        self._request_lock = threading.Lock()  # one get_messages() in flight
        self._state = _State.NEW
        self._pid: Optional[int] = None
        self._terminated = False
        self._lost_reason: Optional[str] = None
        self._connection: Optional[Connection] = None
        self._sink = _Sink(self)
        self._replies = ReplyDesk()
        self._fanout = FanOut(self._lock, options.backlog)
        self._callbacks = Callbacks(options.on_callback_error)
        self._fanout.extra = self._callbacks.post
        self._reconnector: Optional[Reconnector] = None
        if options.policy is not None:
            self._reconnector = Reconnector(
                options.policy,
                options.on_reconnect,
                connect_timeout=options.connect_timeout,
                session_id=lambda: self._session_id or "",
                attach=self._reattach,
                reconcile=self._reconcile,
                give_up=self._reconnect_failed,
            )
        self._opened = threading.Event()  # set exactly while the state is OPEN
        self._reconnect_attempts = 0
        # Which reconnect cycle may attach: bumped under the lock when a cycle starts,
        # when the session closes and when it gives up. An attempt of an older cycle
        # (still dialling when disconnect() stopped waiting for it) is refused.
        self._generation = 0
        # Parsing and routing, what the client has seen, and the events held while
        # a reconnect reads the history (released by _reconcile, and whenever a
        # connection ends or is attached and when the session gives up).
        self._inbound = Inbound(self._fanout, self._replies)
        self._turn_line = TurnLine()  # where a turn left before its end is read to its end

    # --- state ------------------------------------------------------------------

    @property
    def session_id(self) -> Optional[str]:
        """The session's id: given at construction, or assigned by the engine."""
        return self._session_id

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is open and the session attached (never in a
        child process that inherited the session across ``fork()``)."""
        connection = self._connection
        return (
            self._state is _State.OPEN
            and connection is not None
            and not connection.closed
            and not self._forked()
        )

    def __repr__(self) -> str:
        owner = (
            f"{self._options.owner_type}:{self._options.owner_id}"
            if self._options.owner_type
            else "-"
        )
        return f"<Session id={self._session_id!r} owner={owner} state={self._state.value}>"

    # --- lifecycle ----------------------------------------------------------------

    def connect(self) -> Session:
        """Open the WebSocket, create or attach to the session, hand it to the I/O thread.

        Blocks until the engine has acknowledged the session, at most
        ``connect_timeout`` seconds. Calling it on a connected session does nothing;
        after a dropped connection it re-attaches to the same session id. Raises
        :class:`SessionTimeoutError`, :class:`SessionConnectionError`,
        :class:`SessionError` when the engine refuses (e.g. an unknown id), or an
        API status error such as :class:`AuthenticationError` when the handshake is
        refused. On any failure nothing is left open. Any thread may call it.
        """
        self._check_fork()
        # The reconnector may already be on it: wait for its outcome, don't race it.
        if not self._reconnect_over(self._options.connect_timeout):
            raise SessionTimeoutError("the session is still reconnecting; try again later")
        with self._lifecycle:
            if self.is_connected:
                return self
            if self._terminated:
                raise SessionDisconnectedError(
                    f"session {self._session_id!r} was terminated; create a new session"
                )
            if not self._session_id and not (self._options.owner_type and self._options.owner_id):
                raise SessionError(
                    "owner_type and owner_id are required to create a session; pass "
                    "session_id= to resume an existing one"
                )
            key = resolve_api_key(self.__api_key)
            if not key:
                raise SessionError(
                    "no API key configured: pass api_key=, set vectorshift_sync.api_key, "
                    "or set the VECTORSHIFT_API_KEY environment variable"
                )
            deadline = Deadline(self._options.connect_timeout)
            sock = self._dial(key, self._options.connect_timeout)
            resumed = bool(self._session_id)
            try:
                self._attach(sock, _State.CONNECTING)
                if resumed:
                    self._handshake("connect_session", deadline)
                else:
                    reply = self._handshake("create_session", deadline)
                    self._session_id = reply.session_id
                    self._handshake("connect_session", deadline)
            except BaseException:
                self._shutdown(goodbye=None)
                raise
            with self._lock:
                self._set_state(_State.OPEN)
                self._lost_reason = None
                if resumed:
                    self._inbound.resumed_locked()
            _LIVE.add(self)
            logger.debug("session %s connected", self._session_id)
            return self

    def disconnect(self) -> None:
        """Detach this client; the session stays on the engine and can be resumed.

        Ends every ``listen()`` iterator at once, sends ``disconnect_session`` and a
        close frame, and lets the callbacks queued so far finish, waiting at most a
        few ``close_timeout`` periods whatever the server does. Idempotent; any
        thread, including a callback, may call it.
        """
        self._close("disconnect")

    def terminate(self) -> None:
        """Destroy the session on the engine, then close as :meth:`disconnect` does.

        A terminated session cannot be connected again by this object.
        """
        self._close("terminate")

    def __enter__(self) -> Session:
        return self.connect()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.disconnect()

    # --- messaging ----------------------------------------------------------------

    def send(
        self,
        content: Content,
        *,
        files: Optional[Sequence[FileLike]] = None,
        mime_type: Optional[str] = None,
        filename: Optional[str] = None,
    ) -> None:
        """Post one user message (a ``post_message``; ``post_messages`` with files).

        Starts a new turn: events of earlier turns that no ``listen()`` took are
        forgotten. Returns once the frame is written; the engine's answer arrives as
        events. Bad arguments (wrong type, unreadable file) raise before anything is
        sent; a closed session raises :class:`SessionDisconnectedError`. Safe to call
        from several threads at once.
        """
        self._send_turn(self._encode_send(content, files, mime_type, filename))

    def send_many(self, messages: Sequence[SendManyItem]) -> None:
        """Post several messages as one batch, answered as one LLM turn.

        Items are strings, paths, bytes, file objects, :class:`UserSessionMessage` or
        history :class:`SessionMessage` (its text is sent). Same rules as :meth:`send`.
        """
        session_id = self._require_open()
        self._send_turn(proto.encode_send_many(session_id, messages))

    def respond(
        self,
        event: SessionEvent,
        *,
        approved: Optional[bool] = None,
        confirm: Optional[Mapping[str, Any]] = None,
        deny_reason: Optional[str] = None,
    ) -> None:
        """Answer a pause event (today: ``APPROVAL_REQUEST``) so the turn resumes.

        ``approved=True`` lets the tool run, with ``confirm`` overriding its
        arguments; ``approved=False`` rejects it, with ``deny_reason`` shown to the
        model. Raises a ``TypeError`` (:class:`ArgumentTypeError`) for another event
        type or a missing ``approved``.
        """
        if not isinstance(event, SessionEvent):
            raise ArgumentTypeError(
                f"respond() takes the SessionEvent to answer, not {type(event).__name__}"
            )
        if event.type != SessionEventType.APPROVAL_REQUEST:
            raise ArgumentTypeError(
                f"only APPROVAL_REQUEST events can be answered; got {event.type.value}"
            )
        if approved is None:
            raise ArgumentTypeError("respond() needs approved=True or approved=False")
        self.respond_approval(event, approved=approved, confirm=confirm, deny_reason=deny_reason)

    def respond_approval(
        self,
        event: SessionEvent,
        *,
        approved: bool,
        confirm: Optional[Mapping[str, Any]] = None,
        deny_reason: Optional[str] = None,
    ) -> None:
        """Approve or reject the tool call of an ``APPROVAL_REQUEST`` event."""
        if not isinstance(event, SessionEvent):
            raise ArgumentTypeError(
                f"respond_approval() takes a SessionEvent, not {type(event).__name__}"
            )
        if event.type != SessionEventType.APPROVAL_REQUEST:
            raise ArgumentTypeError(
                f"respond_approval() needs an APPROVAL_REQUEST event; got {event.type.value}"
            )
        if not isinstance(approved, bool):
            raise ArgumentTypeError(f"approved must be True or False, not {approved!r}")
        if confirm is not None and not isinstance(confirm, Mapping):
            raise ArgumentTypeError(f"confirm must be a mapping, not {type(confirm).__name__}")
        check_str("deny_reason", deny_reason, optional=True)
        session_id = self._require_open()
        frame = proto.encode_approval(
            session_id,
            event.message_id,
            approved=approved,
            confirm=confirm,
            deny_reason=deny_reason,
        )
        self._send_frame(frame)

    # --- streaming ----------------------------------------------------------------

    def listen(
        self,
        *,
        event_types: Optional[Iterable[Union[SessionEventType, str]]] = None,
        maxsize: int = 1024,
        timeout: Optional[float] = None,
    ) -> _Listener:
        """Return an iterator over the session's events, starting now.

        The iterator is subscribed when ``listen()`` returns (not at the first
        ``next()``), and first yields any backlog of the current turn. It ends when
        the session is disconnected or terminated (from any thread, at once) or the
        connection is lost, which is announced first by an ``ERROR`` event. Only
        ``event_types`` are yielded (None: all). ``maxsize`` bounds the queue (0:
        unbounded); see the module notes on overflow. ``timeout`` bounds the wait for
        each next event and raises :class:`SessionTimeoutError` (the iterator stays
        usable). Ctrl-C interrupts the wait. Raises
        :class:`SessionDisconnectedError` when the session is not connected.
        """
        types = event_type_set(event_types)
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise ArgumentTypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if timeout is not None:
            check_positive("timeout", timeout)
        return _Listener(self, self._subscribe(types, maxsize, fresh=False), timeout)

    def _subscribe(
        self, types: Optional[FrozenSet[SessionEventType]], maxsize: int, *, fresh: bool
    ) -> SubscriberQueue:
        """Register a queue; it starts with the backlog, or (``fresh``) clears it."""
        self._check_fork()
        subscriber = SubscriberQueue(maxsize, types)
        with self._lock:
            if self._state in _ACTIVE:
                self._fanout.subscribe_locked(subscriber, fresh=fresh)
            elif not (
                not fresh
                and self._state is _State.CLOSED
                and self._lost_reason
                # The link died with events nobody took yet: hand them over, then end.
                and self._fanout.hand_over_locked(subscriber)
            ):
                raise SessionDisconnectedError(self._not_connected_message())
        return subscriber

    # --- turns ---------------------------------------------------------------------

    def stream(
        self,
        content: Content,
        *,
        files: Optional[Sequence[FileLike]] = None,
        mime_type: Optional[str] = None,
        filename: Optional[str] = None,
        timeout: Optional[float] = 300.0,
    ) -> Generator[SessionEvent, None, None]:
        """Send one turn and yield its events until the agent's turn ends.

        Subscribes before sending, so nothing of the turn is missed. An approval
        request is yielded like any event; answer it with :meth:`respond` and keep
        iterating. ``timeout`` bounds the whole turn (:class:`SessionTimeoutError`);
        a lost connection yields its ``ERROR`` event and then raises
        :class:`SessionDisconnectedError`. Stopping early unsubscribes; a turn left
        before its end is read to its end, unseen, before the next turn is sent.
        """
        return follow_events(self._start_turn(content, files, mime_type, filename, timeout))

    def stream_text(
        self,
        content: Content,
        *,
        files: Optional[Sequence[FileLike]] = None,
        mime_type: Optional[str] = None,
        filename: Optional[str] = None,
        timeout: Optional[float] = 300.0,
    ) -> TextStream:
        """Send one turn and return an iterator over the agent's text, chunk by chunk.

        Takes what :meth:`send` takes. The :class:`TextStream` yields the agent's
        text deltas of this turn, in order, and ends when the turn ends; made for
        ``st.write_stream`` and Gradio's generator functions. A failed turn raises
        :class:`SessionError` (as :meth:`ask` does). An approval request raises
        :class:`ConversationalRunActionRequiredError` carrying the event; answer it
        with ``stream.respond(approved=...)`` and iterate the same stream again for
        the rest of the turn. ``timeout`` bounds the turn (restarted after such a
        pause). Closing the stream early leaves the session ready for the next turn.
        """
        return TextStream(self._start_turn(content, files, mime_type, filename, timeout))

    def ask(
        self,
        content: Content,
        *,
        files: Optional[Sequence[FileLike]] = None,
        mime_type: Optional[str] = None,
        filename: Optional[str] = None,
        timeout: Optional[float] = 300.0,
    ) -> TurnResult:
        """Send one turn, block until the agent's turn ends, and return its answer.

        The answer is the agent's own final message (never the echo of the user's
        post). Raises :class:`ConversationalRunActionRequiredError` carrying the event
        when the agent asks for approval or re-authorisation (answer it with
        :meth:`respond`, then follow the rest with :meth:`listen`),
        :class:`SessionError` when the turn reports an error,
        :class:`SessionTimeoutError` after ``timeout`` seconds, and
        :class:`SessionDisconnectedError` when the connection is lost.
        """
        return follow_answer(self._start_turn(content, files, mime_type, filename, timeout))

    def _start_turn(
        self,
        content: Content,
        files: Optional[Sequence[FileLike]],
        mime_type: Optional[str],
        filename: Optional[str],
        timeout: Optional[float],
    ) -> TurnFollower:
        """Check and send one turn for ``stream``/``stream_text``/``ask``; follow it."""
        if timeout is not None:
            check_positive("timeout", timeout)
        frame = self._encode_send(content, files, mime_type, filename)
        return TurnFollower.start(self, frame, timeout)

    def on(self, event_types: EventTypes, callback: Optional[_F] = None) -> Any:
        """Call ``callback(event)`` for every event of ``event_types`` (None: all).

        Callbacks run one at a time, in arrival order, on the shared callback pool,
        never on the I/O thread. A callback that raises is logged with its
        traceback (and passed to ``on_callback_error``); the others and all
        listeners carry on. A callback may call ``send()``, ``respond()`` or
        ``disconnect()``. Without ``callback`` this returns a decorator. Returns
        the callback; remove it with :meth:`off`.
        """
        types = event_type_set(_as_iterable(event_types))

        def register(fn: _F) -> _F:
            if not callable(fn):
                raise ArgumentTypeError(f"callback must be callable, not {type(fn).__name__}")
            self._check_fork()
            with self._lock:
                self._callbacks.add(types, fn)
                if self._state in _ACTIVE:
                    self._callbacks.start()
            return fn

        if callback is None:
            return register
        return register(callback)

    def off(self, callback: Callback) -> bool:
        """Remove every registration of ``callback``; return whether there was one."""
        if self._forked():
            return False  # the callbacks run in the parent; its locks may be held here
        with self._lock:
            return self._callbacks.remove(callback)

    def get_messages(self, *, timeout: Optional[float] = None) -> List[SessionMessage]:
        """Fetch the session's full history as :class:`SessionMessage` objects.

        Waits at most ``timeout`` seconds (default ``request_timeout``) in total,
        whatever other traffic arrives, then raises :class:`SessionTimeoutError`.
        An error reply raises :class:`SessionError`; a lost connection
        :class:`SessionDisconnectedError`. Concurrent calls are answered one after
        the other, since replies carry no request id.
        """
        if timeout is not None:
            check_positive("timeout", timeout)
        self._check_fork()  # before any lock: a forked child may inherit them taken
        deadline = Deadline(self._options.request_timeout if timeout is None else timeout)
        _acquire(self._request_lock, deadline, "message history")
        try:
            session_id = self._require_open(deadline)
            with self._lock:
                waiter = self._replies.expect_locked("get_messages", accept_untyped=False)
            try:
                self._send_frame(proto.encode_get_messages(session_id), deadline)
                reply = waiter.wait(deadline, "the message history", self._lost)
            finally:
                with self._lock:
                    self._replies.forget_locked(waiter)
        finally:
            self._request_lock.release()
        if not reply.ok:
            raise SessionError(f"the engine refused get_messages: {reply.error}")
        return list(reply.messages)

    # --- internals: connecting --------------------------------------------------------

    def _set_state(self, state: _State) -> None:
        # Called with self._lock held.
        self._state = state
        if state is _State.OPEN:
            self._opened.set()
        else:
            self._opened.clear()

    def _dial(self, key: str, timeout: float) -> socket.socket:
        """The WebSocket handshake, on the caller's thread (proxies, TLS, headers)."""
        return open_socket(
            ws_session_url(),
            key,
            timeout=timeout,
            sslopt=self._options.sslopt,
            proxy=self._options.proxy,
        )

    def _attach(
        self, sock: socket.socket, state: _State, generation: Optional[int] = None
    ) -> Connection:
        """Hand a dialled socket to the I/O thread as this session's connection
        (a reconnect attempt passes its cycle's ``generation``)."""
        connection = Connection(
            sock,
            self._sink,
            max_message_size=self._options.max_message_size,
            write_timeout=self._options.write_timeout,
            ping_interval=self._options.ping_interval,
            idle_timeout=self._options.idle_timeout,
        )
        with self._lock:
            if state is _State.RECONNECTING and (
                self._state is not _State.RECONNECTING or generation != self._generation
            ):
                sock.close()  # closed (and maybe connected again) while it dialled
                raise SessionDisconnectedError("the session was closed while reconnecting")
            self._inbound.release_held_locked([])  # nothing held outlives its connection
            self._connection = connection
            self._set_state(state)
            self._pid = os.getpid()
            self._callbacks.start()
        connection.start()  # last step of setup
        return connection

    def _handshake(self, kind: str, deadline: Deadline) -> proto.Reply:
        connection = self._connection
        if connection is None:  # the connection already ended
            raise SessionDisconnectedError(
                f"the connection closed before {kind} could be sent"
                + (f" ({self._lost_reason})" if self._lost_reason else "")
            )
        if kind == "create_session":
            frame = proto.encode_create_session(self._options.owner_type, self._options.owner_id)
        else:
            assert self._session_id
            frame = proto.encode_connect_session(self._session_id)
        with self._lock:  # registered before sending: the reply cannot race it
            waiter = self._replies.expect_locked(kind, accept_untyped=True)
        try:
            connection.send_text(frame)
            reply = waiter.wait(deadline, f"the {kind} acknowledgement", self._lost)
        finally:
            with self._lock:
                self._replies.forget_locked(waiter)
        if not reply.ok:
            target = self._session_id or f"{self._options.owner_type} {self._options.owner_id}"
            raise SessionRefusedError(f"the engine refused {kind} for {target!r}: {reply.error}")
        return reply

    def _lost(self) -> str:
        return self._lost_reason or ""

    # --- internals: on the I/O thread ---------------------------------------------------

    def _on_messages(self, connection: Connection, raws: List[bytes]) -> None:
        """Parse one read's worth of ``connection``'s frames, then route them under one
        lock hold; its consumers are woken at the end of the I/O loop's round."""
        parsed = self._inbound.parse(raws, self._session_id or "")
        if not parsed:
            return
        with self._lock:
            if connection is not self._connection:
                return  # read from a connection the session has since let go of
            if self._state not in _ACTIVE:
                # Read during disconnect(): its listeners are ended and its backlog
                # cleared; kept now, it would greet the next connect()'s listen().
                return
            reconnecting = self._state is _State.RECONNECTING
            attempt = self._reconnect_attempts if reconnecting else None
            self._inbound.route_locked(parsed, connection.loop.round_wakes, attempt)

    def _on_connection_end(self, connection: Connection, ending: TransportClosed) -> None:
        reason = ending.reason
        with self._lock:
            if self._connection is not connection:
                return  # an old connection, already replaced or dropped
            self._replies.fail_locked()
            self._inbound.release_held_locked([])  # what came before the drop goes first
            if self._state not in (_State.CONNECTING, _State.OPEN):
                if self._state is _State.RECONNECTING:
                    self._connection = None  # a failed attempt; the attempt says why
                return
            logger.warning("session %s lost its connection: %s", self._session_id, reason)
            self._lost_reason = reason
            self._connection = None
            if self._state is _State.OPEN and self._reconnector is not None:
                self._set_state(_State.RECONNECTING)
                self._announce_loss_locked(reason, reconnecting=True)
                self._generation += 1
                self._reconnector.start(reason, self._generation)
            else:
                self._give_up_locked(reason)

    def _announce_loss_locked(self, reason: str, *, reconnecting: bool) -> SessionEvent:
        # Called with self._lock held. Every consumer must see this, full queue or not.
        error = SessionEvent(
            SessionEventType.ERROR,
            self._session_id or "",
            data={
                "error": "connection lost",
                "reason": reason,
                "request_type": None,
                "reconnecting": reconnecting,
            },
        )
        if reconnecting:
            self._callbacks.post([error])
            self._fanout.announce_locked(error)
        return error

    def _give_up_locked(self, reason: str) -> None:
        # Called with self._lock held: the session is over; tell everyone, then end.
        self._inbound.release_held_locked([])  # what came before the end goes first
        self._generation += 1  # no attempt of the ended cycle may attach now
        self._set_state(_State.CLOSED)
        self._lost_reason = reason
        error = self._announce_loss_locked(reason, reconnecting=False)
        self._fanout.end_locked(error)
        self._callbacks.stop(error)
        _LIVE.discard(self)

    # --- internals: reconnecting (on a reconnect pool thread) ---------------------------

    def _reattach(self, timeout: float, attempt: int, generation: int) -> None:
        key = resolve_api_key(self.__api_key)
        if not key:
            raise SessionError("no API key configured any more; cannot reconnect")
        deadline = Deadline(timeout)
        sock = self._dial(key, timeout)
        with self._lock:
            self._reconnect_attempts = attempt
        connection = self._attach(sock, _State.RECONNECTING, generation)
        try:
            self._handshake("connect_session", deadline)
        except BaseException:
            self._drop(connection)
            raise
        with self._lock:
            if self._state is _State.RECONNECTING and self._connection is connection:
                self._set_state(_State.OPEN)
                self._lost_reason = None
                connection = None  # type: ignore[assignment]
        if connection is not None:  # closed meanwhile: this attempt's link goes too
            self._drop(connection)
            return
        logger.info("session %s reconnected (attempt %d)", self._session_id, attempt)

    def _drop(self, connection: Connection) -> None:
        """Tear down the connection of a failed attempt; listeners stay subscribed."""
        with self._lock:
            if self._connection is connection:
                self._connection = None
            self._inbound.release_held_locked([])
        connection.abort()
        connection.finished.wait(self._options.close_timeout)

    def _reconnect_failed(self, reason: str, generation: int) -> None:
        with self._lock:
            if self._state is not _State.RECONNECTING or generation != self._generation:
                return
            logger.warning("session %s gave up reconnecting: %s", self._session_id, reason)
            self._give_up_locked(reason)

    def _reconcile(self) -> None:
        """Deliver the agent replies that completed while the link was down, before
        the live events that came after the reconnect (a reconnect pool thread).

        Whatever happens here, the held events are released: an exception must not
        leave every later event held back."""
        events: List[SessionEvent] = []
        try:
            with self._lock:
                known, delivered, last_seen = self._inbound.seen_locked()
            history: Optional[List[SessionMessage]] = None
            if known:
                try:
                    history = self.get_messages()
                except Exception as exc:
                    logger.warning("could not reconcile history after reconnecting: %s", exc)
            if history is not None:
                events = missed_replies(history, delivered, last_seen, self._session_id or "")
        finally:
            with self._lock:  # minus replies that reached the client meanwhile
                self._inbound.release_held_locked(events)
        if events:
            logger.info("recovered %d missed event(s) from history", len(events))

    # --- internals: sending and closing ---------------------------------------------

    def _require_open(self, deadline: Optional[Deadline] = None) -> str:
        self._check_fork()
        self._await_reopen(deadline)
        session_id = self._session_id
        if self._state is not _State.OPEN or not session_id:
            raise SessionDisconnectedError(self._not_connected_message())
        return session_id

    def _await_reopen(self, deadline: Optional[Deadline] = None) -> None:
        timeout = self._write_bound(deadline)
        if not self._reconnect_over(timeout):
            raise SessionDisconnectedError(
                f"the session is reconnecting ({self._lost_reason}) and did not come "
                f"back within {timeout:g}s"
            )

    def _write_bound(self, deadline: Optional[Deadline]) -> float:
        """``write_timeout``, or less when the caller's own ``deadline`` (a request's
        total timeout) ends sooner."""
        return (
            self._options.write_timeout
            if deadline is None
            else deadline.slice(self._options.write_timeout)
        )

    def _reconnect_over(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s while the session is reconnecting; False if it
        still is. Sliced, so Ctrl-C interrupts it."""
        if self._state is not _State.RECONNECTING:
            return True
        deadline = Deadline(timeout)
        while self._state is _State.RECONNECTING:
            if deadline.expired:
                return False
            self._opened.wait(deadline.slice())
        return True

    def _not_connected_message(self) -> str:
        if self._terminated:
            return f"session {self._session_id!r} was terminated; create a new session"
        if self._lost_reason:
            return (
                f"the connection was lost ({self._lost_reason}); call connect() to "
                "resume the session"
            )
        if self._state is _State.RECONNECTING:
            return "the session is reconnecting"
        return "the session is not connected; call connect() first"

    def _encode_send(
        self,
        content: Content,
        files: Optional[Sequence[FileLike]],
        mime_type: Optional[str],
        filename: Optional[str],
    ) -> str:
        """The frame of one ``send()``: arguments checked and encoded, nothing sent."""
        check_str("mime_type", mime_type, optional=True)
        check_str("filename", filename, optional=True)
        session_id = self._require_open()
        return proto.encode_send(
            session_id, content, files=files, mime_type=mime_type, filename=filename
        )

    def _send_turn(self, frame: str) -> None:
        with self._lock:
            self._fanout.clear_backlog_locked()  # a new turn: nothing of the last one
        self._send_frame(frame)

    def _send_frame(self, frame: str, deadline: Optional[Deadline] = None) -> None:
        """Write ``frame`` within ``write_timeout``, or by ``deadline`` if sooner."""
        connection = self._connection
        if connection is None or self._state not in (_State.OPEN, _State.CONNECTING):
            if self._state is _State.RECONNECTING:
                self._await_reopen(deadline)
                connection = self._connection
        if connection is None:
            raise SessionDisconnectedError(self._not_connected_message())
        connection.send_text(frame, self._write_bound(deadline))

    def _close(self, how: str) -> None:
        if self._forked():
            # Inherited across fork(): the socket belongs to the parent. Forget it
            # here without a byte on the wire and without touching the locks.
            self._state = _State.CLOSED
            self._connection = None
            return
        with self._lifecycle:
            goodbye = None
            if self._session_id:
                if how == "terminate":
                    goodbye = proto.encode_terminate(self._session_id)
                else:
                    goodbye = proto.encode_disconnect(self._session_id)
            lost = self._connection is None and self._lost_reason is not None
            if how == "terminate" and self._state is not _State.NEW:
                if lost:
                    self._shutdown(None)
                    raise SessionDisconnectedError(
                        f"cannot terminate session {self._session_id!r}: the connection "
                        f"was lost ({self._lost_reason}); connect() first, then terminate()"
                    )
                self._terminated = True
            self._shutdown(goodbye)

    def _shutdown(self, goodbye: Optional[str]) -> None:
        """Close in order: stop reconnecting, end listeners, say goodbye, close frame,
        wait for the end (bounded), let the callbacks finish."""
        reconnector = self._reconnector
        if reconnector is not None:
            reconnector.stop(self._options.close_timeout)
        with self._lock:
            self._generation += 1  # no attempt still under way may attach now
            connection = self._connection
            if connection is None and self._state in (_State.NEW, _State.CLOSED):
                self._fanout.end_locked(None)
                return
            self._set_state(_State.CLOSING)
            self._inbound.held = None
            self._fanout.end_locked(None)
            mailbox = self._callbacks.stop(None)
            self._replies.fail_locked()
        if connection is not None:
            if not connection.closed:
                if goodbye is not None:
                    try:
                        connection.send_text(goodbye, self._options.close_timeout)
                    except (SessionDisconnectedError, SessionTimeoutError):
                        pass
                connection.send_close(1000, self._options.close_timeout)
            if not connection.close(self._options.close_timeout):
                logger.warning("the I/O thread did not release the connection in time")
        self._callbacks.wait(mailbox, self._options.close_timeout)
        with self._lock:
            self._set_state(_State.CLOSED)
            late, self._connection = self._connection, None
        if late is not None and late is not connection:  # attached by a late attempt
            late.abort()
            late.finished.wait(self._options.close_timeout)
        _LIVE.discard(self)
        if not io_loop().wait_ended(self._options.close_timeout):
            # The process's last session: its I/O thread ends with it, not after.
            logger.warning("the I/O thread did not end within the close timeout")
        logger.debug("session %s closed", self._session_id)

    def _forked(self) -> bool:
        return self._pid is not None and os.getpid() != self._pid

    def _check_fork(self) -> None:
        if self._forked():
            raise SessionForkedError(
                f"this session was opened in process {self._pid} and inherited by "
                f"fork() into process {os.getpid()}; open a new Session in this process"
            )


class _Listener(Listener):
    """A :class:`Listener` of one session (what :meth:`Session.listen` returns)."""

    def __init__(self, session: Session, queue_: SubscriberQueue, timeout: Optional[float]):
        super().__init__(session._fanout, queue_, timeout, session._pid)

    def _pull(self, deadline: Optional[float]) -> SessionEvent:
        return self.pull(deadline)


def _acquire(lock: threading.Lock, deadline: Deadline, what: str) -> None:
    while not lock.acquire(timeout=deadline.slice()):
        if deadline.expired:
            raise SessionTimeoutError(f"timed out waiting for {what}")


def _as_iterable(value: EventTypes) -> Optional[Iterable[Union[SessionEventType, str]]]:
    if value is None:
        return None
    if isinstance(value, (SessionEventType, str)):
        return (value,)
    return value


@atexit.register
def _close_live_sessions() -> None:
    # Daemon threads never block exit; this only says goodbye to the engine.
    for session in list(_LIVE):
        try:
            session.disconnect()
        except Exception:  # pragma: no cover - best effort at exit
            logger.debug("closing a session at exit failed", exc_info=True)
