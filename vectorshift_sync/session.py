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

import logging
import threading
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
from ._config import resolve_api_key
from ._deadline import Deadline
from ._fanout import FanOut, Listener, event_type_set
from ._link import Link, LinkState
from ._options import SessionOptions, check_positive, check_str
from ._protocol import Content, FileLike, SendManyItem, UserSessionMessage
from ._recovery import ReconnectAttempt, ReconnectHook, ReconnectPolicy
from ._subscribers import SubscriberQueue
from ._turn_follow import TextStream, TurnFollower, TurnLine, follow_answer, follow_events
from .errors import (
    ArgumentTypeError,
    SessionConnectionError,
    SessionDisconnectedError,
    SessionError,
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
        self.__api_key = api_key
        # One lock for shared state, also the fan-out's; never held while user code
        # runs or while blocking on the network (writes happen outside it).
        self._lock = threading.Lock()
        self._fanout = FanOut(self._lock, options.backlog)
        self._callbacks = Callbacks(options.on_callback_error)
        self._fanout.extra = self._callbacks.post
        self._link = Link(
            options,
            session_id or None,
            api_key=lambda: resolve_api_key(api_key),  # read again by each reconnect
            lock=self._lock,
            fanout=self._fanout,
            callbacks=self._callbacks,
        )
        self._turn_line = TurnLine()  # where a turn left before its end is read to its end

    # --- state ------------------------------------------------------------------

    @property
    def session_id(self) -> Optional[str]:
        """The session's id: given at construction, or assigned by the engine."""
        return self._link.session_id

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is open and the session attached (never in a
        child process that inherited the session across ``fork()``)."""
        return self._link.is_connected

    def __repr__(self) -> str:
        owner = (
            f"{self._options.owner_type}:{self._options.owner_id}"
            if self._options.owner_type
            else "-"
        )
        link = self._link
        return f"<Session id={link.session_id!r} owner={owner} state={link.state.value}>"

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
        link = self._link
        link.check_fork()
        # The reconnector may already be on it: wait for its outcome, don't race it.
        if not link.reconnect_over(self._options.connect_timeout):
            raise SessionTimeoutError("the session is still reconnecting; try again later")
        with link.lifecycle:
            if link.is_connected:
                return self
            if link.terminated:
                raise SessionDisconnectedError(
                    f"session {link.session_id!r} was terminated; create a new session"
                )
            if not link.session_id and not (self._options.owner_type and self._options.owner_id):
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
            link.open(key)
            logger.debug("session %s connected", link.session_id)
            return self

    def disconnect(self) -> None:
        """Detach this client; the session stays on the engine and can be resumed.

        Ends every ``listen()`` iterator at once, sends ``disconnect_session`` and a
        close frame, and lets the callbacks queued so far finish, waiting at most a
        few ``close_timeout`` periods whatever the server does. Idempotent; any
        thread, including a callback, may call it.
        """
        self._link.close("disconnect")

    def terminate(self) -> None:
        """Destroy the session on the engine, then close as :meth:`disconnect` does.

        A terminated session cannot be connected again by this object.
        """
        self._link.close("terminate")

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
        session_id = self._link.require_open()
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
        session_id = self._link.require_open()
        frame = proto.encode_approval(
            session_id,
            event.message_id,
            approved=approved,
            confirm=confirm,
            deny_reason=deny_reason,
        )
        self._link.send_frame(frame)

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
        link = self._link
        link.check_fork()
        subscriber = SubscriberQueue(maxsize, types)
        with self._lock:
            if link.active:
                self._fanout.subscribe_locked(subscriber, fresh=fresh)
            elif not (
                not fresh
                and link.state is LinkState.CLOSED
                and link.lost_reason
                # The link died with events nobody took yet: hand them over, then end.
                and self._fanout.hand_over_locked(subscriber)
            ):
                raise SessionDisconnectedError(link.not_connected_message())
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
            self._link.check_fork()
            with self._lock:
                self._callbacks.add(types, fn)
                if self._link.active:
                    self._callbacks.start()
            return fn

        if callback is None:
            return register
        return register(callback)

    def off(self, callback: Callback) -> bool:
        """Remove every registration of ``callback``; return whether there was one."""
        if self._link.forked():
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
        self._link.check_fork()  # before any lock: a forked child may inherit them taken
        deadline = Deadline(self._options.request_timeout if timeout is None else timeout)
        return self._link.request_history(deadline)

    # --- internals ---------------------------------------------------------------------

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
        session_id = self._link.require_open()
        return proto.encode_send(
            session_id, content, files=files, mime_type=mime_type, filename=filename
        )

    def _send_turn(self, frame: str) -> None:
        with self._lock:
            self._fanout.clear_backlog_locked()  # a new turn: nothing of the last one
        self._link.send_frame(frame)


class _Listener(Listener):
    """A :class:`Listener` of one session (what :meth:`Session.listen` returns)."""

    def __init__(self, session: Session, queue_: SubscriberQueue, timeout: Optional[float]):
        super().__init__(session._fanout, queue_, timeout, session._link.pid)

    def _pull(self, deadline: Optional[float]) -> SessionEvent:
        return self.pull(deadline)


def _as_iterable(value: EventTypes) -> Optional[Iterable[Union[SessionEventType, str]]]:
    if value is None:
        return None
    if isinstance(value, (SessionEventType, str)):
        return (value,)
    return value
