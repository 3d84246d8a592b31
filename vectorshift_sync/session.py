"""The blocking real-time Session: the synchronous twin of ``vectorshift.session``.

Threading model
---------------
Each connected session runs one **reader thread**. It reads the socket, parses
frames, routes replies to the call waiting for them, and fans events out to
subscriber queues. It also sends the 5-second ``ping_session`` heartbeat and notices
a silent (half-open) connection, so no timer thread is needed. It never runs user
code. If callbacks are registered with :meth:`Session.on`, a second **dispatcher
thread** runs them in order. Both are daemon threads and both are joined by
:meth:`Session.disconnect`.

A consumer that finds its queue empty (a ``listen()`` iterator, ``stream()``, the
dispatcher) would otherwise sleep until the reader wakes it; instead it takes a
short **read lease** and does the reader's job itself, so the event reaches it
without a thread hand-off. One thread reads at a time (``_read_lock`` is held
for every read and its routing); the reader parks while the lease is held and takes
reading back whenever the holder has been away for more than ``_LEASE`` seconds, so
a slow consumer never stalls the others, the heartbeat or a reply.

Delivery model
--------------
Every :meth:`Session.listen` iterator has its own queue, registered when
``listen()`` is called. Events that arrive while no iterator is open are kept in a
bounded backlog and handed to the next ``listen()``; ``send()`` starts a new turn and
clears it, so an earlier turn is never replayed into a later one. A full bounded
queue drops the offending event and hands its consumer an ``ERROR`` event with
``data["error"] == "subscriber queue overflow"`` before anything that came later.
``get_messages()`` is answered privately and never appears in ``listen()``.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import (
    Any,
    Callable,
    FrozenSet,
    Generator,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import _protocol as proto
from ._config import resolve_api_key, ws_session_url
from ._interrupts import HeldInterrupt
from ._protocol import Content, FileLike, SendManyItem, UserSessionMessage
from ._recovery import (
    ReconnectAttempt,
    ReconnectHook,
    ReconnectPolicy,
    is_recoverable,
    missed_replies,
)
from ._subscribers import SLICE, Ended, SubscriberQueue
from ._transport import SessionConnectionError, Transport, TransportClosed, open_transport
from ._turn_follow import TextStream, TurnFollower, TurnLine, follow_answer, follow_events
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
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

Callback = Callable[[SessionEvent], Any]
CallbackErrorHook = Callable[[BaseException, SessionEvent], Any]
EventTypes = Union[SessionEventType, str, Sequence[Union[SessionEventType, str]], None]
_F = TypeVar("_F", bound=Callback)

_NEW, _CONNECTING, _OPEN, _CLOSING, _CLOSED = "new", "connecting", "open", "closing", "closed"
_RECONNECTING = "reconnecting"

_LIVE: "weakref.WeakSet[Session]" = weakref.WeakSet()

#: How long a consumer holding the read lease may be away (running its own code)
#: before the reader thread takes reading back. Also the reader's wake-up period
#: while the lease is held.
_LEASE = 0.01


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


class _Waiter:
    """A call blocked on the reply to one request (replies carry no request id)."""

    __slots__ = ("kind", "replies", "accept_untyped")

    def __init__(self, kind: str, *, accept_untyped: bool) -> None:
        self.kind = kind
        self.replies: "queue.Queue[Optional[proto.Reply]]" = queue.Queue()
        self.accept_untyped = accept_untyped

    def accepts(self, reply: proto.Reply) -> bool:
        if reply.request_type is None:
            return self.accept_untyped
        return reply.request_type == self.kind


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
        _check_str("owner_type", owner_type)
        _check_str("owner_id", owner_id, optional=True)
        _check_str("session_id", session_id, optional=True)
        _check_str("api_key", api_key, optional=True)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("write_timeout", write_timeout),
            ("close_timeout", close_timeout),
            ("ping_interval", ping_interval),
            ("idle_timeout", idle_timeout),
        ):
            _check_positive(name, value)
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise InvalidArgumentError(f"backlog must be a positive int, got {backlog!r}")
        if on_callback_error is not None and not callable(on_callback_error):
            raise ArgumentTypeError("on_callback_error must be callable")
        if on_reconnect is not None and not callable(on_reconnect):
            raise ArgumentTypeError("on_reconnect must be callable")
        if not isinstance(reconnect, (bool, ReconnectPolicy)):
            raise ArgumentTypeError("reconnect must be True, False or a ReconnectPolicy")
        self._owner_type = owner_type
        self._owner_id = owner_id or ""
        self._session_id: Optional[str] = session_id or None
        self.__api_key = api_key
        self._connect_timeout = float(connect_timeout)
        self._request_timeout = float(request_timeout)
        self._write_timeout = float(write_timeout)
        self._close_timeout = float(close_timeout)
        self._ping_interval = float(ping_interval)
        self._idle_timeout = float(idle_timeout)
        self._max_message_size = max_message_size
        self._sslopt = dict(sslopt) if sslopt else None
        self._proxy = dict(proxy) if proxy else None
        self._on_callback_error = on_callback_error
        if reconnect is True:
            reconnect = ReconnectPolicy()
        self._policy: Optional[ReconnectPolicy] = reconnect or None
        self._on_reconnect = on_reconnect

        # One lock for shared state; never held while user code runs or while
        # blocking on the network (sends happen outside it).
        self._lock = threading.Lock()
        self._lifecycle = threading.Lock()  # serialises connect() and close
        self._request_lock = threading.Lock()  # one get_messages() in flight
        self._state = _NEW
        self._pid: Optional[int] = None
        self._terminated = False
        self._lost_reason: Optional[str] = None
        self._transport: Optional[Transport] = None
        self._reader: Optional[threading.Thread] = None
        self._waiter: Optional[_Waiter] = None
        self._listeners: Tuple[SubscriberQueue, ...] = ()
        self._backlog = SubscriberQueue(backlog)
        self._callbacks: Tuple[Tuple[Optional[FrozenSet[SessionEventType]], Callback], ...] = ()
        self._dispatch_queue: Optional[SubscriberQueue] = None
        self._dispatcher: Optional[threading.Thread] = None
        self._unknown_kinds: set[str] = set()
        self._opened = threading.Event()  # set exactly while the state is _OPEN
        self._stop_reconnect = threading.Event()
        self._reconnector: Optional[threading.Thread] = None
        self._reconnect_attempts = 0
        # What the client has seen, to find replies it missed while reconnecting.
        self._delivered: set[str] = set()
        self._last_seen: Optional[str] = None
        self._history_known = True  # False while a resumed session has seen nothing
        # Who reads the socket: the reader thread, or the consumer thread holding
        # the read lease (see _await_events). _read_lock is held for every read and
        # its routing, so exactly one thread reads at a time. It is always taken as
        # ``with self._read_lock`` (C-level enter/exit): a Condition's Python-level
        # __enter__ can take the lock and then be cut short by Ctrl-C, leaving it
        # held for good. _read_cond (same lock) only parks and wakes the reader.
        self._read_lock = threading.Lock()
        self._read_cond = threading.Condition(self._read_lock)
        self._helper: Optional[int] = None  # thread ident holding the lease
        self._helper_busy = False  # the holder is inside _await_events (not away)
        self._helper_since = 0.0  # when the holder last went away
        self._ending: Optional[Tuple[Transport, TransportClosed]] = None  # seen by a holder
        self._last_data = 0.0  # when the socket last gave bytes (half-open detection)
        self._turn_line = TurnLine()  # where a turn left before its end is read to its end

    # --- state ------------------------------------------------------------------

    @property
    def session_id(self) -> Optional[str]:
        """The session's id: given at construction, or assigned by the engine."""
        return self._session_id

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is open and the session attached."""
        transport = self._transport
        return self._state == _OPEN and transport is not None and not transport.closed

    def __repr__(self) -> str:
        owner = f"{self._owner_type}:{self._owner_id}" if self._owner_type else "-"
        return f"<Session id={self._session_id!r} owner={owner} state={self._state}>"

    # --- lifecycle ----------------------------------------------------------------

    def connect(self) -> Session:
        """Open the WebSocket, create or attach to the session, start the reader.

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
        if not self._reconnect_over(self._connect_timeout):
            raise SessionTimeoutError("the session is still reconnecting; try again later")
        with self._lifecycle:
            if self.is_connected:
                return self
            if self._terminated:
                raise SessionDisconnectedError(
                    f"session {self._session_id!r} was terminated; create a new session"
                )
            if not self._session_id and not (self._owner_type and self._owner_id):
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
            deadline = time.monotonic() + self._connect_timeout
            transport = open_transport(
                ws_session_url(),
                key,
                timeout=self._connect_timeout,
                max_message_size=self._max_message_size,
                sslopt=self._sslopt,
                proxy=self._proxy,
                write_timeout=self._write_timeout,
            )
            self._start(transport, _CONNECTING)
            resumed = bool(self._session_id)
            try:
                if resumed:
                    self._handshake("connect_session", deadline)
                else:
                    reply = self._handshake("create_session", deadline)
                    self._session_id = reply.session_id
                    for thread in (self._reader, self._dispatcher):
                        if thread is not None:  # name threads after the session
                            thread.name = thread.name.rsplit("-", 1)[0] + "-" + reply.session_id
                    self._handshake("connect_session", deadline)
            except BaseException:
                self._shutdown(goodbye=None)
                raise
            with self._lock:
                self._set_state(_OPEN)
                self._lost_reason = None
                self._stop_reconnect.clear()
                if resumed and self._last_seen is None:
                    self._history_known = False
            _LIVE.add(self)
            logger.debug("session %s connected", self._session_id)
            return self

    def disconnect(self) -> None:
        """Detach this client; the session stays on the engine and can be resumed.

        Ends every ``listen()`` iterator at once, sends ``disconnect_session`` and a
        close frame, and stops both threads, waiting at most a few
        ``close_timeout`` periods whatever the server does. Idempotent; any thread,
        including a callback, may call it.
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
        _check_str("deny_reason", deny_reason, optional=True)
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
        types = _event_type_set(event_types)
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise ArgumentTypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if timeout is not None:
            _check_positive("timeout", timeout)
        return _Listener(self, self._subscribe(types, maxsize, fresh=False), timeout)

    def _subscribe(
        self, types: Optional[FrozenSet[SessionEventType]], maxsize: int, *, fresh: bool
    ) -> SubscriberQueue:
        """Register a queue; it starts with the backlog, or (``fresh``) clears it."""
        self._check_fork()
        subscriber = SubscriberQueue(maxsize, types)
        with self._lock:
            if self._state in (_OPEN, _CONNECTING, _RECONNECTING):
                if fresh:
                    self._backlog.clear()
                else:
                    subscriber.give(self._backlog.drain())
                self._listeners = self._listeners + (subscriber,)
            elif (
                not fresh and self._state == _CLOSED and self._lost_reason and self._backlog.qsize()
            ):
                # The link died with events nobody took yet: hand them over, then end.
                subscriber.give(self._backlog.drain())
                subscriber.close()
            else:
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
        if timeout is not None:
            _check_positive("timeout", timeout)
        frame = self._encode_send(content, files, mime_type, filename)
        return follow_events(TurnFollower.start(self, frame, timeout))

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
        if timeout is not None:
            _check_positive("timeout", timeout)
        frame = self._encode_send(content, files, mime_type, filename)
        return TextStream(TurnFollower.start(self, frame, timeout))

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
        if timeout is not None:
            _check_positive("timeout", timeout)
        frame = self._encode_send(content, files, mime_type, filename)
        return follow_answer(TurnFollower.start(self, frame, timeout))

    def on(self, event_types: EventTypes, callback: Optional[_F] = None) -> Any:
        """Call ``callback(event)`` for every event of ``event_types`` (None: all).

        Callbacks run one at a time, in arrival order, on the session's dispatcher
        thread, never on the reader. A callback that raises is logged with its
        traceback (and passed to ``on_callback_error``); the others and all
        listeners carry on. A callback may call ``send()``, ``respond()`` or
        ``disconnect()``. Without ``callback`` this returns a decorator. Returns
        the callback; remove it with :meth:`off`.
        """
        types = _event_type_set(_as_iterable(event_types))

        def register(fn: _F) -> _F:
            if not callable(fn):
                raise ArgumentTypeError(f"callback must be callable, not {type(fn).__name__}")
            self._check_fork()
            with self._lock:
                self._callbacks = self._callbacks + ((types, fn),)
                if self._state in (_CONNECTING, _OPEN, _RECONNECTING):
                    self._start_dispatcher()
            return fn

        if callback is None:
            return register
        return register(callback)

    def off(self, callback: Callback) -> bool:
        """Remove every registration of ``callback``; return whether there was one."""
        if self._forked():
            return False  # the callbacks run in the parent; its locks may be held here
        with self._lock:
            kept = tuple(entry for entry in self._callbacks if entry[1] is not callback)
            removed = len(kept) != len(self._callbacks)
            self._callbacks = kept
        return removed

    def get_messages(self, *, timeout: Optional[float] = None) -> List[SessionMessage]:
        """Fetch the session's full history as :class:`SessionMessage` objects.

        Waits at most ``timeout`` seconds (default ``request_timeout``) in total,
        whatever other traffic arrives, then raises :class:`SessionTimeoutError`.
        An error reply raises :class:`SessionError`; a lost connection
        :class:`SessionDisconnectedError`. Concurrent calls are answered one after
        the other, since replies carry no request id.
        """
        if timeout is not None:
            _check_positive("timeout", timeout)
        self._check_fork()  # before any lock: a forked child may inherit them taken
        deadline = time.monotonic() + (self._request_timeout if timeout is None else timeout)
        _acquire(self._request_lock, deadline, "message history")
        try:
            session_id = self._require_open()
            waiter = _Waiter("get_messages", accept_untyped=False)
            with self._lock:
                self._waiter = waiter
            try:
                self._send_frame(proto.encode_get_messages(session_id))
                reply = self._await_reply(waiter, deadline, "the message history")
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None
        finally:
            self._request_lock.release()
        if not reply.ok:
            raise SessionError(f"the engine refused get_messages: {reply.error}")
        return list(reply.messages)

    # --- internals: connecting --------------------------------------------------------

    def _set_state(self, state: str) -> None:
        # Called with self._lock held.
        self._state = state
        if state == _OPEN:
            self._opened.set()
        else:
            self._opened.clear()

    def _start(self, transport: Transport, state: str) -> None:
        reader = threading.Thread(
            target=self._read_loop,
            args=(transport,),
            name=f"vectorshift-reader-{self._session_id or hex(id(self))}",
            daemon=True,
        )
        with self._read_lock:  # a new connection: no lease, no end seen yet
            self._drop_lease_locked()
            self._ending = None
        with self._lock:
            self._transport = transport
            self._reader = reader
            self._set_state(state)
            self._pid = os.getpid()
            if self._callbacks:
                self._start_dispatcher()
        reader.start()  # last step of setup

    def _handshake(self, kind: str, deadline: float) -> proto.Reply:
        transport = self._transport
        if transport is None:  # the reader already saw the connection end
            raise SessionDisconnectedError(
                f"the connection closed before {kind} could be sent"
                + (f" ({self._lost_reason})" if self._lost_reason else "")
            )
        if kind == "create_session":
            frame = proto.encode_create_session(self._owner_type, self._owner_id)
        else:
            assert self._session_id
            frame = proto.encode_connect_session(self._session_id)
        waiter = _Waiter(kind, accept_untyped=True)
        with self._lock:
            self._waiter = waiter  # registered before sending: the reply cannot race it
        try:
            transport.send_text(frame)
            reply = self._await_reply(waiter, deadline, f"the {kind} acknowledgement")
        finally:
            with self._lock:
                if self._waiter is waiter:
                    self._waiter = None
        if not reply.ok:
            target = self._session_id or f"{self._owner_type} {self._owner_id}"
            raise SessionRefusedError(f"the engine refused {kind} for {target!r}: {reply.error}")
        return reply

    def _await_reply(self, waiter: _Waiter, deadline: float, what: str) -> proto.Reply:
        self._step_aside()  # the reader must read the reply at once
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionTimeoutError(f"timed out waiting for {what}")
            try:
                reply = waiter.replies.get(timeout=min(SLICE, remaining))
            except queue.Empty:
                continue
            if reply is None:
                raise SessionDisconnectedError(
                    f"the connection closed while waiting for {what}"
                    + (f" ({self._lost_reason})" if self._lost_reason else "")
                )
            return reply

    # --- internals: the reader thread -----------------------------------------------

    def _read_loop(self, transport: Transport) -> None:
        ending: Optional[TransportClosed] = None
        cond, lock = self._read_cond, self._read_lock
        try:
            now = time.monotonic()
            next_ping = now + self._ping_interval
            self._last_data = now
            while True:
                now = time.monotonic()
                if now >= next_ping:
                    next_ping = now + self._ping_interval
                    self._heartbeat(transport)
                if now - self._last_data >= self._idle_timeout:
                    if not transport.wait_readable(0.0):
                        ending = TransportClosed(
                            f"no data from the server for {self._idle_timeout:g}s; "
                            "the connection looks half-open"
                        )
                        break
                    # Bytes are waiting: this process was starved of CPU, the link
                    # is fine. Read them now, whoever holds the lease.
                    with lock:
                        self._drop_lease_locked()
                wait = max(0.0, min(next_ping, self._last_data + self._idle_timeout) - now)
                if self._helper is not None or self._ending is not None:
                    with lock:
                        ending = self._end_handed_locked(transport)
                        if ending is not None:
                            break
                        if self._helper is not None and not self._reclaim_locked(transport):
                            # Look again soon while the holder is away; while it is
                            # reading, less often: it gives the lease back itself
                            # after a quiet SLICE.
                            if self._helper_busy:
                                cond.wait(min(wait, _LEASE * 5))
                            else:
                                away = self._helper_since + _LEASE - time.monotonic()
                                cond.wait(max(0.0005, min(wait, away)))
                            continue
                if not transport.wait_readable(wait):
                    continue
                with lock:
                    if self._helper is not None:
                        continue  # a consumer took the lease while this thread waited
                    ending = self._end_handed_locked(transport)
                    if ending is not None:
                        break
                    messages = transport.read()
                    if messages is not None:
                        self._last_data = time.monotonic()
                        if messages:
                            self._on_messages(messages)
        except TransportClosed as closed:
            ending = closed
        except BaseException as exc:  # a bug here must not leave listeners hanging
            logger.exception("session reader failed")
            ending = TransportClosed(f"internal reader failure: {exc!r}")
        finally:
            with lock:  # waits out a lease holder's read in progress
                self._drop_lease_locked()
            self._reader_exited(transport, ending)

    def _reclaim_locked(self, transport: Transport) -> bool:
        """Take reading back from a lease holder that is away (or a dead socket)."""
        # Called with self._read_lock held.
        if transport.closed or (
            not self._helper_busy and time.monotonic() - self._helper_since >= _LEASE
        ):
            self._drop_lease_locked()
            return True
        return False

    def _drop_lease_locked(self) -> None:
        """Nobody holds the read lease any more: the reader reads (woken if parked)."""
        # Called with self._read_lock held.
        self._helper = None
        self._helper_busy = False
        self._read_cond.notify_all()

    def _end_handed_locked(self, transport: Transport) -> Optional[TransportClosed]:
        """The end of ``transport`` as read by a lease holder, if one read it."""
        # Called with self._read_lock held.
        seen = self._ending
        return seen[1] if seen is not None and seen[0] is transport else None

    def _await_events(
        self, subscriber: SubscriberQueue, deadline: Optional[float], *, sliced: bool = True
    ) -> None:
        """Return once ``subscriber`` has something queued (an event or its end).

        Meanwhile the calling thread takes the read lease and reads the socket
        itself rather than sleeping until the reader thread hands it an event: one
        thread wake-up less per event, so lower latency and higher throughput. It
        keeps the lease when it returns; the reader takes reading back once the
        thread has been away for ``_LEASE`` seconds. After a quiet ``SLICE`` it gives
        the lease back and waits on the queue as usual. Raises ``queue.Empty`` when
        ``deadline`` passes; Ctrl-C interrupts the wait.
        """
        if subscriber.queue:
            return
        transport = self._transport
        if (
            transport is None
            or not transport.pollable  # Windows: the reader does it all
            or self._state not in (_OPEN, _CONNECTING, _RECONNECTING)
        ):
            subscriber.wait(deadline, sliced=sliced)
            return
        me = threading.get_ident()
        lock = self._read_lock
        keep = False
        poller: Any = None
        quiet_since = time.monotonic()
        try:
            while True:
                with lock:
                    if self._transport is not transport or transport.closed:
                        break
                    holder = self._helper
                    if holder is None:
                        self._helper = holder = me
                    elif holder != me:
                        break  # another consumer reads; wait on the queue
                    if subscriber.queue:  # routed by the reader just now?
                        self._helper_busy = False
                        self._helper_since = time.monotonic()
                        keep = True
                        return
                    self._helper_busy = True
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise queue.Empty
                if now - quiet_since >= SLICE:
                    break  # quiet: the reader waits for the next burst, not us
                if poller is None:
                    poller = transport.new_poller()
                wait = SLICE if deadline is None else min(SLICE, deadline - now)
                if not transport.wait_readable(wait, poller):
                    continue
                with lock:
                    if self._helper != me or self._transport is not transport:
                        continue
                    if self._read_for_reader_locked(transport):
                        quiet_since = self._last_data
                    elif self._helper != me:
                        break  # the end was read; the reader reports it
        finally:
            if not keep:
                self._step_aside()
        subscriber.wait(deadline, sliced=sliced)

    def _read_for_reader_locked(self, transport: Transport) -> bool:
        """One read and its routing, done by a lease holder; True if bytes came.

        Called with self._read_lock held. Ctrl-C is held back until the bytes read
        are routed. When the connection is over (or this read failed half-way, which
        leaves the stream out of step), the end is handed to the reader thread,
        which reports it as if it had read it.
        """
        with HeldInterrupt():
            try:
                messages = transport.read()
                if messages is None:
                    return False
                self._last_data = time.monotonic()
                if messages:
                    self._on_messages(messages)
                return True
            except TransportClosed as closed:
                self._hand_end_locked(transport, closed)
                return False
            except BaseException as exc:
                if isinstance(exc, Exception):
                    logger.exception("reading on the consumer's thread failed")
                self._hand_end_locked(
                    transport, TransportClosed(f"a read was interrupted half-way: {exc!r}")
                )
                raise

    def _hand_end_locked(self, transport: Transport, ending: TransportClosed) -> None:
        # Called with self._read_lock held.
        self._ending = (transport, ending)
        self._drop_lease_locked()

    def _step_aside(self) -> None:
        """Give the read lease back if this thread holds it (before blocking on
        something the reader must deliver, e.g. a reply)."""
        if self._helper == threading.get_ident():
            with self._read_lock:
                if self._helper == threading.get_ident():
                    self._drop_lease_locked()

    def _revoke_lease(self) -> None:
        """Give reading back to the reader thread, whoever holds the lease."""
        with self._read_lock:
            self._drop_lease_locked()

    def _heartbeat(self, transport: Transport) -> None:
        session_id = self._session_id
        try:
            if session_id and self._state == _OPEN:
                transport.send_text(proto.encode_ping(session_id))
            transport.send_ping()
        except SessionDisconnectedError:
            pass  # the read side notices the end and reports it

    def _on_messages(self, raws: List[bytes]) -> None:
        """Parse one read's worth of frames, then route them under one lock hold."""
        parsed: List[proto.Parsed] = []
        for raw in raws:
            try:
                parsed.append(proto.parse_frame(raw, self._session_id or ""))
            except proto.UnknownFrameError as exc:
                if exc.kind not in self._unknown_kinds and len(self._unknown_kinds) < 64:
                    self._unknown_kinds.add(exc.kind)
                    logger.info("ignoring frames of unknown type %r", exc.kind)
            except proto.FrameError as exc:
                logger.warning("skipping a malformed frame: %s", exc)
        if not parsed:
            return
        with self._lock:
            batch: List[SessionEvent] = []
            for item in parsed:
                if item.reply is None:
                    if item.event is not None:
                        batch.append(item.event)
                    continue
                if batch:  # keep the order: what came before the reply goes first
                    self._fan_out_many(batch)
                    batch = []
                self._route_locked(item)
            if batch:
                self._fan_out_many(batch)

    def _route_locked(self, parsed: proto.Parsed) -> None:
        # Called with self._lock held.
        reply, event = parsed.reply, parsed.event
        private = False
        if reply is not None:
            # History is never an event. Replies carry no request id, so a reply
            # to a call that timed out answers the next call, if any.
            private = reply.request_type == "get_messages"
            waiter = self._waiter
            if waiter is not None and waiter.accepts(reply):
                self._waiter = None
                waiter.replies.put(reply)
                # A refusal the waiting call turns into an exception (or a give-up
                # event) is not also an ERROR for listeners.
                private = private or not reply.ok
        if event is not None and not private:
            if (
                self._state == _RECONNECTING
                and event.type is SessionEventType.SESSION_CONNECTED
                and reply is not None
                and reply.ok
            ):
                data = dict(event.data)
                data.update(reconnected=True, attempts=self._reconnect_attempts)
                event = SessionEvent(event.type, event.session_id, event.message_id, data)
            self._fan_out_many([event])

    def _fan_out_many(self, events: List[SessionEvent]) -> None:
        # Called with self._lock held; offers never block and run no user code.
        for event in events:
            message_id = event.message_id
            if message_id is not None and event.type is not SessionEventType.MESSAGE_DELTA:
                # Deltas carry the id of a message that is not complete yet: only
                # whole messages mark how far into the history this client has come.
                self._last_seen = message_id
                self._history_known = True
                if event.type is SessionEventType.MESSAGE_COMPLETE:
                    self._delivered.add(message_id)
        if self._dispatch_queue is not None:
            self._dispatch_queue.offer_many(events)
        listeners = self._listeners
        if listeners:
            for subscriber in listeners:
                if subscriber.abandoned:
                    self._listeners = tuple(q for q in self._listeners if not q.abandoned)
                elif subscriber.offer_many(events):
                    logger.debug("a listener queue is full; events were dropped")
        else:
            kept = [e for e in events if e.type is not SessionEventType.PONG]
            if kept:
                self._backlog.offer_many(kept)

    def _reader_exited(self, transport: Transport, ending: Optional[TransportClosed]) -> None:
        reason = ending.reason if ending is not None else "the reader stopped"
        with self._lock:
            unexpected = self._transport is transport and self._state in (_CONNECTING, _OPEN)
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.replies.put(None)
            if not unexpected:
                return
            logger.warning("session %s lost its connection: %s", self._session_id, reason)
            self._lost_reason = reason
            self._transport = None  # the reader stays referenced so close can join it
            if self._state == _OPEN and self._policy is not None:
                self._set_state(_RECONNECTING)
                self._announce_loss(reason, reconnecting=True)
                self._start_reconnector(reason)
            else:
                self._give_up_locked(reason)
        transport.release()

    def _announce_loss(self, reason: str, *, reconnecting: bool) -> SessionEvent:
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
            if self._dispatch_queue is not None:
                self._dispatch_queue.offer(error, force=True)
            for subscriber in self._listeners:
                subscriber.offer(error, force=True)
            if not self._listeners:
                self._backlog.offer(error, force=True)
        return error

    def _give_up_locked(self, reason: str) -> None:
        # Called with self._lock held: the session is over; tell everyone, then end.
        self._set_state(_CLOSED)
        self._lost_reason = reason
        error = self._announce_loss(reason, reconnecting=False)
        listeners, self._listeners = self._listeners, ()
        for subscriber in listeners:
            subscriber.close(error)
        if not listeners:
            self._backlog.offer(error, force=True)
        self._stop_dispatcher_locked(error)
        _LIVE.discard(self)

    # --- internals: reconnecting ------------------------------------------------------

    def _start_reconnector(self, reason: str) -> None:
        # Called with self._lock held.
        thread = threading.Thread(
            target=self._reconnect_loop,
            args=(reason,),
            name=f"vectorshift-reconnect-{self._session_id}",
            daemon=True,
        )
        self._reconnector = thread
        thread.start()

    def _reconnect_loop(self, reason: str) -> None:
        policy = self._policy
        assert policy is not None
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            elapsed = time.monotonic() - started
            if attempt > policy.max_attempts or elapsed >= policy.max_time:
                self._reconnect_failed(
                    f"{reason}; gave up after {attempt - 1} attempts in {elapsed:.1f}s"
                )
                return
            if self._on_reconnect is not None:
                info = ReconnectAttempt(self._session_id or "", attempt, reason, elapsed)
                try:
                    verdict = self._on_reconnect(info)
                except Exception:
                    logger.exception("on_reconnect hook failed; giving up")
                    verdict = False
                if verdict is False:
                    self._reconnect_failed(f"{reason}; reconnecting stopped by on_reconnect")
                    return
            pause = min(policy.delay(attempt), max(0.0, policy.max_time - elapsed))
            if self._stop_reconnect.wait(pause):
                return  # disconnect() or terminate() was called
            remaining = policy.max_time - (time.monotonic() - started)
            if remaining <= 0:
                continue
            try:
                self._reattach(min(self._connect_timeout, remaining), attempt)
            except Exception as exc:
                if self._stop_reconnect.is_set():
                    return
                reason = str(exc)
                logger.info("reconnect attempt %d failed: %s", attempt, exc)
                if not is_recoverable(exc):
                    self._reconnect_failed(reason)
                    return
                continue
            self._reconcile()
            return

    def _reattach(self, timeout: float, attempt: int) -> None:
        key = resolve_api_key(self.__api_key)
        if not key:
            raise SessionError("no API key configured any more; cannot reconnect")
        deadline = time.monotonic() + timeout
        transport = open_transport(
            ws_session_url(),
            key,
            timeout=timeout,
            max_message_size=self._max_message_size,
            sslopt=self._sslopt,
            proxy=self._proxy,
            write_timeout=self._write_timeout,
        )
        with self._lock:
            if self._stop_reconnect.is_set() or self._state != _RECONNECTING:
                transport.release()
                return
            self._reconnect_attempts = attempt
        self._start(transport, _RECONNECTING)
        try:
            self._handshake("connect_session", deadline)
        except BaseException:
            self._drop_transport(transport)
            raise
        with self._lock:
            if self._state != _RECONNECTING:
                return  # closed meanwhile; _shutdown owns the transport
            self._set_state(_OPEN)
            self._lost_reason = None
        logger.info("session %s reconnected (attempt %d)", self._session_id, attempt)

    def _drop_transport(self, transport: Transport) -> None:
        """Tear down a transport of a failed attempt; listeners stay subscribed."""
        with self._lock:
            reader = self._reader
            if self._transport is transport:
                self._transport = None
        transport.abort()
        if reader is not None and reader is not threading.current_thread():
            reader.join(self._close_timeout)
        transport.release()

    def _reconnect_failed(self, reason: str) -> None:
        with self._lock:
            if self._state != _RECONNECTING:
                return
            logger.warning("session %s gave up reconnecting: %s", self._session_id, reason)
            self._give_up_locked(reason)

    def _reconcile(self) -> None:
        """Deliver the agent replies that completed while the link was down."""
        with self._lock:
            if not self._history_known:
                return
            delivered, last_seen = set(self._delivered), self._last_seen
        try:
            history = self.get_messages()
        except Exception as exc:
            logger.warning("could not reconcile history after reconnecting: %s", exc)
            return
        events = missed_replies(history, delivered, last_seen, self._session_id or "")
        with self._lock:
            delivered = self._delivered
            fresh = [e for e in events if e.message_id is None or e.message_id not in delivered]
            if fresh:
                self._fan_out_many(fresh)
        if events:
            logger.info("recovered %d missed event(s) from history", len(events))

    # --- internals: callbacks ---------------------------------------------------------

    def _start_dispatcher(self) -> None:
        # Called with self._lock held.
        if self._dispatcher is not None:
            return
        events = SubscriberQueue(0)
        thread = threading.Thread(
            target=self._dispatch_loop,
            args=(events,),
            name=f"vectorshift-callbacks-{self._session_id or hex(id(self))}",
            daemon=True,
        )
        self._dispatch_queue = events
        self._dispatcher = thread
        thread.start()

    def _stop_dispatcher_locked(self, error: Optional[SessionEvent]) -> Optional[threading.Thread]:
        thread, events = self._dispatcher, self._dispatch_queue
        self._dispatcher = self._dispatch_queue = None
        if events is not None:
            events.close(error)
        return thread

    def _dispatch_loop(self, events: SubscriberQueue) -> None:
        while True:
            try:
                self._await_events(events, None, sliced=False)
                batch = events.take_now(256)
            except Ended as end:
                if end.error is not None:
                    self._run_callbacks(end.error)
                return
            for event in batch:
                self._run_callbacks(event)

    def _run_callbacks(self, event: SessionEvent) -> None:
        for types, callback in self._callbacks:
            if types is not None and event.type not in types:
                continue
            try:
                callback(event)
            except Exception as exc:
                logger.exception(
                    "session callback %r failed on a %s event", callback, event.type.value
                )
                hook = self._on_callback_error
                if hook is not None:
                    try:
                        hook(exc, event)
                    except Exception:
                        logger.exception("on_callback_error hook failed")

    # --- internals: sending and closing ---------------------------------------------

    def _require_open(self) -> str:
        self._check_fork()
        self._await_reopen()
        session_id = self._session_id
        if self._state != _OPEN or not session_id:
            raise SessionDisconnectedError(self._not_connected_message())
        return session_id

    def _await_reopen(self) -> None:
        if not self._reconnect_over(self._write_timeout):
            raise SessionDisconnectedError(
                f"the session is reconnecting ({self._lost_reason}) and did not come "
                f"back within {self._write_timeout:g}s"
            )

    def _reconnect_over(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s while the session is reconnecting; False if it
        still is. Sliced, so Ctrl-C interrupts it."""
        if self._state != _RECONNECTING:
            return True
        self._step_aside()  # the reconnect needs the reader, not this thread
        deadline = time.monotonic() + timeout
        while self._state == _RECONNECTING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._opened.wait(min(SLICE, remaining))
        return True

    def _not_connected_message(self) -> str:
        if self._terminated:
            return f"session {self._session_id!r} was terminated; create a new session"
        if self._lost_reason:
            return (
                f"the connection was lost ({self._lost_reason}); call connect() to "
                "resume the session"
            )
        if self._state == _RECONNECTING:
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
        _check_str("mime_type", mime_type, optional=True)
        _check_str("filename", filename, optional=True)
        session_id = self._require_open()
        return proto.encode_send(
            session_id, content, files=files, mime_type=mime_type, filename=filename
        )

    def _send_turn(self, frame: str) -> None:
        with self._lock:
            self._backlog.clear()  # a new turn: nothing of the last one is replayed
        self._send_frame(frame)

    def _send_frame(self, frame: str) -> None:
        transport = self._transport
        if transport is None or self._state not in (_OPEN, _CONNECTING):
            if self._state == _RECONNECTING:
                self._await_reopen()
                transport = self._transport
        if transport is None:
            raise SessionDisconnectedError(self._not_connected_message())
        transport.send_text(frame)

    def _close(self, how: str) -> None:
        if self._pid is not None and os.getpid() != self._pid:
            # Inherited across fork(): the socket belongs to the parent. Forget it
            # here without a byte on the wire and without touching the locks.
            self._state = _CLOSED
            self._transport = None
            return
        with self._lifecycle:
            goodbye = None
            if self._session_id:
                if how == "terminate":
                    goodbye = proto.encode_terminate(self._session_id)
                else:
                    goodbye = proto.encode_disconnect(self._session_id)
            lost = self._transport is None and self._lost_reason is not None
            if how == "terminate" and self._state != _NEW:
                if lost:
                    self._shutdown(None)
                    raise SessionDisconnectedError(
                        f"cannot terminate session {self._session_id!r}: the connection "
                        f"was lost ({self._lost_reason}); connect() first, then terminate()"
                    )
                self._terminated = True
            self._shutdown(goodbye)

    def _shutdown(self, goodbye: Optional[str]) -> None:
        """Close in order: end listeners, say goodbye, close frame, wake and join."""
        self._stop_reconnect.set()
        with self._lock:
            transport, reader = self._transport, self._reader
            reconnector, self._reconnector = self._reconnector, None
            if (
                transport is None
                and reader is None
                and reconnector is None
                and self._dispatcher is None
                and not self._listeners
            ):
                return
            self._set_state(_CLOSING)
            listeners, self._listeners = self._listeners, ()
            for subscriber in listeners:
                subscriber.close()
            self._backlog.clear()
            dispatcher = self._stop_dispatcher_locked(None)
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.replies.put(None)
        self._revoke_lease()  # the reader reads the close handshake from here on
        current = threading.current_thread()
        if reconnector is not None and reconnector is not current:
            reconnector.join(self._close_timeout)
            with self._lock:  # an attempt may have attached a transport meanwhile
                transport, reader = self._transport, self._reader
        if transport is None and reader is not None and reader is not current:
            reader.join(self._close_timeout)  # after a drop: already on its way out
        if transport is not None:
            if not transport.closed:
                if goodbye is not None:
                    try:
                        transport.send_text(goodbye)
                    except SessionDisconnectedError:
                        pass
                transport.send_close(1000)
            if reader is not None and reader is not current:
                reader.join(self._close_timeout)  # the server's close reply ends it
            transport.abort()  # wakes a reader still blocked on the socket
            if reader is not None and reader is not current:
                reader.join(self._close_timeout)
                if reader.is_alive():
                    logger.warning("session reader did not stop within the close timeout")
            transport.release()
        if dispatcher is not None and dispatcher is not current:
            dispatcher.join(self._close_timeout)
        with self._lock:
            self._set_state(_CLOSED)
            self._transport = None
            self._reader = None
        _LIVE.discard(self)
        logger.debug("session %s closed", self._session_id)

    def _forked(self) -> bool:
        return self._pid is not None and os.getpid() != self._pid

    def _check_fork(self) -> None:
        if self._forked():
            raise SessionForkedError(
                f"this session was opened in process {self._pid} and inherited by "
                f"fork() into process {os.getpid()}; open a new Session in this process"
            )


class _Listener(Iterator[SessionEvent]):
    """The iterator returned by :meth:`Session.listen`; also a context manager."""

    def __init__(self, session: Session, queue_: SubscriberQueue, timeout: Optional[float]):
        self._session: Optional[Session] = session
        self._queue = queue_
        self._timeout = timeout
        self._done = False
        # Events taken from the queue in one lock round trip, handed out one by one
        # by position (no call between taking one and returning it, so Ctrl-C can
        # never land in between and lose it). Capped so a bounded listener never
        # holds much more than its maxsize.
        self._buffer: List[SessionEvent] = []
        self._position = 0
        self._batch = min(queue_.limit, 256) if queue_.limit else 256

    def __iter__(self) -> _Listener:
        return self

    def __next__(self) -> SessionEvent:
        if self._done:
            raise StopIteration
        buffer, position = self._buffer, self._position
        if position < len(buffer):
            self._position = position + 1
            return buffer[position]
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            return self._pull(deadline)
        except Ended as end:
            if end.error is not None:
                return end.error
            self._finish()
            raise StopIteration from None
        except queue.Empty:
            raise SessionTimeoutError(f"no event arrived within {self._timeout}s") from None

    def _pull(self, deadline: Optional[float]) -> SessionEvent:
        """The next event; raises :class:`Ended` or ``queue.Empty`` past ``deadline``."""
        while True:
            buffer, position = self._buffer, self._position
            if position < len(buffer):
                self._position = position + 1
                return buffer[position]
            session = self._session
            if session is not None and not session._forked():
                session._await_events(self._queue, deadline)
            else:
                self._queue.wait(deadline)
            with HeldInterrupt():  # taken from the queue and kept, or not taken
                self._buffer = self._queue.take_now(self._batch)
                self._position = 0

    def close(self) -> None:
        """Unsubscribe now; further iteration stops."""
        self._finish()

    def _finish(self) -> None:
        self._done = True
        session, self._session = self._session, None
        if session is not None and not session._forked():
            session._step_aside()
            with session._lock:
                session._listeners = tuple(q for q in session._listeners if q is not self._queue)
        self._queue.close()

    def __enter__(self) -> _Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finish()

    def __del__(self) -> None:
        # May run inside the garbage collector on a thread that holds the session's
        # lock, so take no lock here: flag the queue and let the reader prune it.
        self._queue.abandoned = True


def _acquire(lock: threading.Lock, deadline: float, what: str) -> None:
    while not lock.acquire(timeout=max(0.0, min(SLICE, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            raise SessionTimeoutError(f"timed out waiting for {what}")


def _as_iterable(value: EventTypes) -> Optional[Iterable[Union[SessionEventType, str]]]:
    if value is None:
        return None
    if isinstance(value, (SessionEventType, str)):
        return (value,)
    return value


def _event_type_set(
    values: Optional[Iterable[Union[SessionEventType, str]]],
) -> Optional[FrozenSet[SessionEventType]]:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArgumentTypeError(
            f"event_types must be a list of SessionEventType values, not {type(values).__name__}"
        )
    types = set()
    for value in values:
        try:
            types.add(SessionEventType(value))
        except ValueError:
            raise InvalidArgumentError(
                f"unknown event type {value!r}; use SessionEventType members"
            ) from None
    return frozenset(types) or None


def _check_str(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number of seconds, not {value!r}")
    if not value > 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")


@atexit.register
def _close_live_sessions() -> None:
    # Daemon threads never block exit; this only says goodbye to the engine.
    for session in list(_LIVE):
        try:
            session.disconnect()
        except Exception:  # pragma: no cover - best effort at exit
            logger.debug("closing a session at exit failed", exc_info=True)
