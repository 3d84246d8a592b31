"""One session's link to the engine, across connections.

A :class:`Link` holds the session's state (a :class:`LinkState`), its current
:class:`~._connection.Connection` on the I/O thread, and what a lost connection
sets off: the loss notice to every consumer, the reconnect (:mod:`._reconnect`), the
recovery of replies that completed meanwhile (:mod:`._recovery`), or giving up.
:class:`~.session.Session` drives it from callers' threads (open, send, request,
shut down); the I/O thread reports reads and ends through its :class:`_Sink`;
reconnect attempts call it from the reconnect pool.

Changes to shared state happen under ``lock``, the session's one lock (also its
fan-out's); quick checks read ``state``, ``connection`` and ``lost_reason`` without
it. It is never held while user code runs or while waiting on the network: writes
and waits happen outside it. ``lifecycle`` serialises opening and closing.

Open links are registered here (weakly) so that the interpreter's exit says
goodbye to the engine for each.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import socket
import threading
import weakref
from typing import Callable, List, Optional

from . import _protocol as proto
from ._callbacks import Callbacks
from ._config import ws_session_url
from ._connection import Connection, ConnectionSink, TransportClosed
from ._deadline import Deadline
from ._dial import open_socket
from ._fanout import FanOut
from ._inbound import Inbound
from ._ioloop import io_loop
from ._options import SessionOptions
from ._pool import callback_pool, reconnect_pool
from ._reconnect import Reconnector
from ._recovery import missed_replies
from ._replies import ReplyDesk
from .errors import (
    SessionDisconnectedError,
    SessionError,
    SessionForkedError,
    SessionRefusedError,
    SessionTimeoutError,
)
from .events import SessionEvent, SessionEventType, SessionMessage

__all__ = ["Link", "LinkState", "ACTIVE"]

logger = logging.getLogger(__name__)

_LIVE: "weakref.WeakSet[Link]" = weakref.WeakSet()


class LinkState(enum.Enum):
    """Where a session is in its life."""

    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


#: The states in which events flow to listeners and callbacks.
ACTIVE = (LinkState.CONNECTING, LinkState.OPEN, LinkState.RECONNECTING)


class _Sink(ConnectionSink):
    """What the I/O thread reports to a link.

    It refers to its link weakly: the I/O thread's references end with the
    connection's, never keeping a closed session alive a moment longer.
    """

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = weakref.ref(link)

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        link = self._link()
        if link is not None:
            link.on_messages(connection, messages)

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        link = self._link()
        if link is not None:
            link.on_connection_end(connection, ending)

    def keepalive_frame(self) -> Optional[str]:
        link = self._link()
        if link is None:
            return None
        session_id = link.session_id
        if session_id and link.state is LinkState.OPEN:
            return proto.encode_ping(session_id)
        return None


class Link:
    """One session's state and connection, its handshakes, sends and requests, and
    its reaction to a lost connection.

    ``api_key()`` resolves the key for each reconnect's dial.
    """

    def __init__(
        self,
        options: SessionOptions,
        session_id: Optional[str],
        *,
        api_key: Callable[[], Optional[str]],
        lock: threading.Lock,
        fanout: FanOut,
        callbacks: Callbacks,
    ) -> None:
        self.options = options
        self.session_id = session_id
        self._api_key = api_key
        self.lock = lock
        self.lifecycle = threading.Lock()  # serialises open() and close()
        self._fanout = fanout
        self._callbacks = callbacks
        self._request_lock = threading.Lock()  # one history request in flight
        self.state = LinkState.NEW
        self.pid: Optional[int] = None
        self.terminated = False
        self.lost_reason: Optional[str] = None
        self.connection: Optional[Connection] = None
        self._sink = _Sink(self)
        self._replies = ReplyDesk()
        # Parsing and routing, what the client has seen, and the events held while
        # a reconnect reads the history (released by reconcile, and whenever a
        # connection ends or is attached and when the session gives up).
        self.inbound = Inbound(fanout, self._replies)
        self.reconnector: Optional[Reconnector] = None
        if options.policy is not None:
            self.reconnector = Reconnector(
                options.policy,
                options.on_reconnect,
                connect_timeout=options.connect_timeout,
                session_id=lambda: self.session_id or "",
                attach=self.reattach,
                reconcile=self.reconcile,
                give_up=self.reconnect_failed,
            )
        self._opened = threading.Event()  # set exactly while the state is OPEN
        self.reconnect_attempts = 0
        # Which reconnect cycle may attach: bumped under the lock when a cycle starts,
        # when the session closes and when it gives up. An attempt of an older cycle
        # (still dialling when disconnect() stopped waiting for it) is refused.
        self._generation = 0

    # --- state --------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while events flow: connecting, open or reconnecting."""
        return self.state in ACTIVE

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is open and the session attached, in this process."""
        connection = self.connection
        return (
            self.state is LinkState.OPEN
            and connection is not None
            and not connection.closed
            and not self.forked()
        )

    def forked(self) -> bool:
        """True in a child process that inherited the link across ``fork()``."""
        return self.pid is not None and os.getpid() != self.pid

    def check_fork(self) -> None:
        """Raise :class:`SessionForkedError` in such a child."""
        if self.forked():
            raise SessionForkedError(
                f"this session was opened in process {self.pid} and inherited by "
                f"fork() into process {os.getpid()}; open a new Session in this process"
            )

    def not_connected_message(self) -> str:
        """Why nothing can be sent now, and what to do about it."""
        if self.terminated:
            return f"session {self.session_id!r} was terminated; create a new session"
        if self.lost_reason:
            return (
                f"the connection was lost ({self.lost_reason}); call connect() to "
                "resume the session"
            )
        if self.state is LinkState.RECONNECTING:
            return "the session is reconnecting"
        return "the session is not connected; call connect() first"

    def _set_state(self, state: LinkState) -> None:
        # Called with the lock held.
        self.state = state
        if state is LinkState.OPEN:
            self._opened.set()
        else:
            self._opened.clear()

    def _lost(self) -> str:
        return self.lost_reason or ""

    # --- connecting (the caller's thread) -------------------------------------------

    def open(self, key: str) -> None:
        """Dial, hand the socket to the I/O thread, create the session if it has no
        id, and attach to it: the body of ``connect()``, within ``connect_timeout``,
        called with ``lifecycle`` held. On any failure nothing is left open."""
        deadline = Deadline(self.options.connect_timeout)
        sock = self._dial(key, self.options.connect_timeout)
        resumed = bool(self.session_id)
        try:
            self._attach(sock, LinkState.CONNECTING)
            if not resumed:
                self.session_id = self._handshake("create_session", deadline).session_id
            self._handshake("connect_session", deadline)
        except BaseException:
            self.shutdown(goodbye=None)
            raise
        with self.lock:
            self._set_state(LinkState.OPEN)
            self.lost_reason = None
            if resumed:
                self.inbound.resumed_locked()
        _LIVE.add(self)

    def _dial(self, key: str, timeout: float) -> socket.socket:
        """The WebSocket handshake, on the caller's thread (proxies, TLS, headers)."""
        return open_socket(
            ws_session_url(),
            key,
            timeout=timeout,
            sslopt=self.options.sslopt,
            proxy=self.options.proxy,
        )

    def _attach(
        self, sock: socket.socket, state: LinkState, generation: Optional[int] = None
    ) -> Connection:
        """Hand a dialled socket to the I/O thread as this session's connection
        (a reconnect attempt passes its cycle's ``generation``)."""
        options = self.options
        connection = Connection(
            sock,
            self._sink,
            max_message_size=options.max_message_size,
            write_timeout=options.write_timeout,
            ping_interval=options.ping_interval,
            idle_timeout=options.idle_timeout,
        )
        with self.lock:
            if state is LinkState.RECONNECTING and (
                self.state is not LinkState.RECONNECTING or generation != self._generation
            ):
                sock.close()  # closed (and maybe connected again) while it dialled
                raise SessionDisconnectedError("the session was closed while reconnecting")
            self.inbound.release_held_locked([])  # nothing held outlives its connection
            self.connection = connection
            self._set_state(state)
            self.pid = os.getpid()
            self._callbacks.start()
        connection.start()  # last step of setup
        return connection

    def _handshake(self, kind: str, deadline: Deadline) -> proto.Reply:
        connection = self.connection
        if connection is None:  # the connection already ended
            raise SessionDisconnectedError(
                f"the connection closed before {kind} could be sent"
                + (f" ({self.lost_reason})" if self.lost_reason else "")
            )
        options = self.options
        if kind == "create_session":
            frame = proto.encode_create_session(options.owner_type, options.owner_id)
        else:
            assert self.session_id
            frame = proto.encode_connect_session(self.session_id)
        with self.lock:  # registered before sending: the reply cannot race it
            waiter = self._replies.expect_locked(kind, accept_untyped=True)
        try:
            connection.send_text(frame)
            reply = waiter.wait(deadline, f"the {kind} acknowledgement", self._lost)
        finally:
            with self.lock:
                self._replies.forget_locked(waiter)
        if not reply.ok:
            target = self.session_id or f"{options.owner_type} {options.owner_id}"
            raise SessionRefusedError(f"the engine refused {kind} for {target!r}: {reply.error}")
        return reply

    # --- sending and requests (callers' threads) --------------------------------------

    def require_open(self, deadline: Optional[Deadline] = None) -> str:
        """The session id, once the session is open (waiting out a reconnect within
        ``write_timeout`` or ``deadline``); else :class:`SessionDisconnectedError`."""
        self.check_fork()
        self._await_reopen(deadline)
        session_id = self.session_id
        if self.state is not LinkState.OPEN or not session_id:
            raise SessionDisconnectedError(self.not_connected_message())
        return session_id

    def send_frame(self, frame: str, deadline: Optional[Deadline] = None) -> None:
        """Write ``frame`` within ``write_timeout``, or by ``deadline`` if sooner."""
        connection = self.connection
        if connection is None or self.state not in (LinkState.OPEN, LinkState.CONNECTING):
            if self.state is LinkState.RECONNECTING:
                self._await_reopen(deadline)
                connection = self.connection
        if connection is None:
            raise SessionDisconnectedError(self.not_connected_message())
        connection.send_text(frame, self._write_bound(deadline))

    def request_history(self, deadline: Deadline) -> List[SessionMessage]:
        """Ask for the session's history and wait for the answer until ``deadline``
        (one request at a time: replies carry no request id)."""
        while not self._request_lock.acquire(timeout=deadline.slice()):
            if deadline.expired:
                raise SessionTimeoutError("timed out waiting for message history")
        try:
            session_id = self.require_open(deadline)
            with self.lock:
                waiter = self._replies.expect_locked("get_messages", accept_untyped=False)
            try:
                self.send_frame(proto.encode_get_messages(session_id), deadline)
                reply = waiter.wait(deadline, "the message history", self._lost)
            finally:
                with self.lock:
                    self._replies.forget_locked(waiter)
        finally:
            self._request_lock.release()
        if not reply.ok:
            raise SessionError(f"the engine refused get_messages: {reply.error}")
        return list(reply.messages)

    def reconnect_over(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s while the session is reconnecting; False if it
        still is. Sliced, so Ctrl-C interrupts it."""
        if self.state is not LinkState.RECONNECTING:
            return True
        deadline = Deadline(timeout)
        while self.state is LinkState.RECONNECTING:
            if deadline.expired:
                return False
            self._opened.wait(deadline.slice())
        return True

    def _await_reopen(self, deadline: Optional[Deadline] = None) -> None:
        timeout = self._write_bound(deadline)
        if not self.reconnect_over(timeout):
            raise SessionDisconnectedError(
                f"the session is reconnecting ({self.lost_reason}) and did not come "
                f"back within {timeout:g}s"
            )

    def _write_bound(self, deadline: Optional[Deadline]) -> float:
        """``write_timeout``, or less when the caller's own ``deadline`` (a request's
        total timeout) ends sooner."""
        write_timeout = self.options.write_timeout
        return write_timeout if deadline is None else deadline.slice(write_timeout)

    # --- on the I/O thread ------------------------------------------------------------

    def on_messages(self, connection: Connection, raws: List[bytes]) -> None:
        """Parse one read's worth of ``connection``'s frames, then route them under one
        lock hold; its consumers are woken at the end of the I/O loop's round."""
        parsed = self.inbound.parse(raws, self.session_id or "")
        if not parsed:
            return
        with self.lock:
            if connection is not self.connection:
                return  # read from a connection the session has since let go of
            if self.state not in ACTIVE:
                # Read during disconnect(): its listeners are ended and its backlog
                # cleared; kept now, it would greet the next connect()'s listen().
                return
            reconnecting = self.state is LinkState.RECONNECTING
            attempt = self.reconnect_attempts if reconnecting else None
            self.inbound.route_locked(parsed, connection.loop.round_wakes, attempt)

    def on_connection_end(self, connection: Connection, ending: TransportClosed) -> None:
        """Reconnect, or give the session up, when its connection ends unasked."""
        reason = ending.reason
        with self.lock:
            if self.connection is not connection:
                return  # an old connection, already replaced or dropped
            self._replies.fail_locked()
            self.inbound.release_held_locked([])  # what came before the drop goes first
            if self.state not in (LinkState.CONNECTING, LinkState.OPEN):
                if self.state is LinkState.RECONNECTING:
                    self.connection = None  # a failed attempt; the attempt says why
                return
            logger.warning("session %s lost its connection: %s", self.session_id, reason)
            self.lost_reason = reason
            self.connection = None
            if self.state is LinkState.OPEN and self.reconnector is not None:
                self._set_state(LinkState.RECONNECTING)
                self._announce_loss_locked(reason, reconnecting=True)
                self._generation += 1
                self.reconnector.start(reason, self._generation)
            else:
                self._give_up_locked(reason)

    def _announce_loss_locked(self, reason: str, *, reconnecting: bool) -> SessionEvent:
        # Called with the lock held. Every consumer must see this, full queue or not.
        error = SessionEvent(
            SessionEventType.ERROR,
            self.session_id or "",
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
        # Called with the lock held: the session is over; tell everyone, then end.
        self.inbound.release_held_locked([])  # what came before the end goes first
        self._generation += 1  # no attempt of the ended cycle may attach now
        self._set_state(LinkState.CLOSED)
        self.lost_reason = reason
        error = self._announce_loss_locked(reason, reconnecting=False)
        self._fanout.end_locked(error)
        self._callbacks.stop(error)
        _LIVE.discard(self)

    # --- reconnecting (on a reconnect pool thread) -------------------------------------

    def reattach(self, timeout: float, attempt: int, generation: int) -> None:
        """One reconnect attempt: dial, attach, ``connect_session``; raise on failure."""
        key = self._api_key()
        if not key:
            raise SessionError("no API key configured any more; cannot reconnect")
        deadline = Deadline(timeout)
        sock = self._dial(key, timeout)
        with self.lock:
            self.reconnect_attempts = attempt
        connection = self._attach(sock, LinkState.RECONNECTING, generation)
        try:
            self._handshake("connect_session", deadline)
        except BaseException:
            self.drop(connection)
            raise
        with self.lock:
            if self.state is LinkState.RECONNECTING and self.connection is connection:
                self._set_state(LinkState.OPEN)
                self.lost_reason = None
                connection = None  # type: ignore[assignment]
        if connection is not None:  # closed meanwhile: this attempt's link goes too
            self.drop(connection)
            return
        logger.info("session %s reconnected (attempt %d)", self.session_id, attempt)

    def drop(self, connection: Connection) -> None:
        """Tear down the connection of a failed attempt; listeners stay subscribed."""
        with self.lock:
            if self.connection is connection:
                self.connection = None
            self.inbound.release_held_locked([])
        self._abort(connection)

    def _abort(self, connection: Connection) -> None:
        connection.abort()
        connection.finished.wait(self.options.close_timeout)

    def reconnect_failed(self, reason: str, generation: int) -> None:
        """The reconnector gave up: end the session, unless that cycle is over."""
        with self.lock:
            if self.state is not LinkState.RECONNECTING or generation != self._generation:
                return
            logger.warning("session %s gave up reconnecting: %s", self.session_id, reason)
            self._give_up_locked(reason)

    def reconcile(self) -> None:
        """Deliver the agent replies that completed while the link was down, before
        the live events that came after the reconnect.

        Whatever happens here, the held events are released: an exception must not
        leave every later event held back."""
        events: List[SessionEvent] = []
        try:
            with self.lock:
                known, delivered, last_seen = self.inbound.seen_locked()
            history: Optional[List[SessionMessage]] = None
            if known:
                try:
                    history = self.request_history(Deadline(self.options.request_timeout))
                except Exception as exc:
                    logger.warning("could not reconcile history after reconnecting: %s", exc)
            if history is not None:
                events = missed_replies(history, delivered, last_seen, self.session_id or "")
        finally:
            with self.lock:  # minus replies that reached the client meanwhile
                self.inbound.release_held_locked(events)
        if events:
            logger.info("recovered %d missed event(s) from history", len(events))

    # --- closing (the caller's thread) ---------------------------------------------------

    def close(self, how: str) -> None:
        """``disconnect()`` or (``how == "terminate"``) ``terminate()``: say so to the
        engine, then shut down. Terminating a session whose connection was lost
        shuts down and raises :class:`SessionDisconnectedError` (nothing could be
        said). In a child process after ``fork()`` the link is only forgotten: the
        socket belongs to the parent, so no byte goes on the wire and no lock is
        touched."""
        if self.forked():
            self.state = LinkState.CLOSED
            self.connection = None
            return
        with self.lifecycle:
            session_id = self.session_id
            goodbye = None
            if session_id:
                if how == "terminate":
                    goodbye = proto.encode_terminate(session_id)
                else:
                    goodbye = proto.encode_disconnect(session_id)
            if how == "terminate" and self.state is not LinkState.NEW:
                if self.connection is None and self.lost_reason is not None:
                    self.shutdown(None)
                    raise SessionDisconnectedError(
                        f"cannot terminate session {session_id!r}: the connection "
                        f"was lost ({self.lost_reason}); connect() first, then terminate()"
                    )
                self.terminated = True
            self.shutdown(goodbye)

    def shutdown(self, goodbye: Optional[str]) -> None:
        """Close in order: stop reconnecting, end listeners, say ``goodbye``, close
        frame, wait for the end (each step bounded by ``close_timeout``), let the
        callbacks finish; the process's last link waits for the I/O thread to end.
        Called with ``lifecycle`` held."""
        close_timeout = self.options.close_timeout
        if self.reconnector is not None:
            self.reconnector.stop(close_timeout)
        with self.lock:
            self._generation += 1  # no attempt still under way may attach now
            connection = self.connection
            if connection is None and self.state in (LinkState.NEW, LinkState.CLOSED):
                self._fanout.end_locked(None)
                return
            self._set_state(LinkState.CLOSING)
            self.inbound.held = None
            self._fanout.end_locked(None)
            mailbox = self._callbacks.stop(None)
            self._replies.fail_locked()
        if connection is not None:
            if not connection.closed:
                if goodbye is not None:
                    try:
                        connection.send_text(goodbye, close_timeout)
                    except (SessionDisconnectedError, SessionTimeoutError):
                        pass
                connection.send_close(1000, close_timeout)
            if not connection.close(close_timeout):
                logger.warning("the I/O thread did not release the connection in time")
        self._callbacks.wait(mailbox, close_timeout)
        with self.lock:
            self._set_state(LinkState.CLOSED)
            late, self.connection = self.connection, None
        if late is not None and late is not connection:  # attached by a late attempt
            self._abort(late)
        _LIVE.discard(self)
        # The process's last session: its threads end with it, not after.
        if not io_loop().wait_ended(close_timeout):
            logger.warning("the I/O thread did not end within the close timeout")
        for pool in (callback_pool(), reconnect_pool()) if not _LIVE else ():
            if not pool.wait_ended(close_timeout):
                logger.warning("%s workers did not end within the close timeout", pool.name)
        logger.debug("session %s closed", self.session_id)


@atexit.register
def _close_live_links() -> None:
    # Daemon threads never block exit; this only says goodbye to the engine.
    for link in list(_LIVE):
        try:
            link.close("disconnect")
        except Exception:  # pragma: no cover - best effort at exit
            logger.debug("closing a session at exit failed", exc_info=True)
