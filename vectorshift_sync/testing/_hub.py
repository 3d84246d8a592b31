"""The engine's state and its WebSocket side: sessions, connections, turns, history.

Threads (all joined by ``LocalEngine.stop()``):

* websockets runs one handler thread per connection; it calls :meth:`Hub.serve_connection`,
  which reads client frames in order and answers acks, pongs and history inline;
* each session with work has one worker thread that runs its turns one at a time,
  so a connection keeps answering pings and approvals while a turn runs.

One lock guards all state. It is never held while writing to a socket or while a
turn's code runs: work is decided under the lock, done after it.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple, Union

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from . import _frames
from ._faults import Faults
from ._frames import USER_SENDER, FrameError, UploadedFile, new_id
from ._records import ConnectionRecord, Owner, SessionInfo, Turn
from ._sockets import ClientSocket
from ._turns import PendingApproval, TurnCancelled, TurnContext, TurnRun, run_turn

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

_Payload = Union[Dict[str, Any], str]


class _Session:
    """Everything the engine keeps about one session (guarded by the hub's lock)."""

    def __init__(self, session_id: str, owner: Owner) -> None:
        self.id = session_id
        self.owner = owner
        self.terminated = False
        self.history: List[Dict[str, Any]] = []
        self._positions: Dict[str, int] = {}
        self.connections: Set[ConnectionRecord] = set()
        self.queue: Deque[TurnRun] = collections.deque()
        self.current: Optional[TurnRun] = None
        self.worker: Optional[threading.Thread] = None
        self.approvals: Dict[str, PendingApproval] = {}

    def record(self, item: Dict[str, Any]) -> None:
        """Add a history item; an item with a known id replaces the old one in place."""
        position = self._positions.get(item["id"])
        if position is None:
            self._positions[item["id"]] = len(self.history)
            self.history.append(item)
        else:
            self.history[position] = item

    def runs(self) -> List[TurnRun]:
        return ([self.current] if self.current else []) + list(self.queue)

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.id,
            owner_type=self.owner.kind,
            owner_id=self.owner.id,
            owner_name=self.owner.name,
            terminated=self.terminated,
            connections=tuple(sorted(r.index for r in self.connections)),
            turn_running=self.current is not None,
            message_count=len(self.history),
        )


def _as_received(message: Union[str, bytes]) -> Any:
    """How a client message is kept: a dict if it is a JSON object, else as it came."""
    if isinstance(message, str):
        try:
            parsed = json.loads(message)
        except ValueError:
            return message
        if isinstance(parsed, dict):
            return parsed
    return message


class Hub:
    """Sessions, connections and turns of one engine (survives ``restart()``)."""

    def __init__(
        self,
        faults: Faults,
        *,
        default_turn: Callable[[TurnContext], None],
        terminated_resumable: bool,
        stream_delay: float,
    ) -> None:
        self.faults = faults
        self.terminated_resumable = terminated_resumable
        self.stream_delay = stream_delay
        self._default_turn = default_turn
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._owners: Dict[str, Owner] = {}
        self._sessions: Dict[str, _Session] = {}
        self._connections: List[ConnectionRecord] = []
        self._received: List[Any] = []
        self._workers: List[threading.Thread] = []
        self._tracked: List[Tuple[Any, threading.Thread]] = []
        self._halted = True
        self._halt = threading.Event()
        self._handlers: Dict[str, Callable[[ConnectionRecord, Dict[str, Any]], None]] = {
            "create_session": self._on_create_session,
            "connect_session": self._on_connect_session,
            "post_message": self._on_post_message,
            "post_messages": self._on_post_messages,
            "get_messages": self._on_get_messages,
            "ping_session": self._on_ping_session,
            "disconnect_session": self._on_disconnect_session,
            "terminate_session": self._on_terminate_session,
        }

    # -- registry -------------------------------------------------------------------

    def add_owner(self, owner: Owner) -> None:
        with self._lock:
            if owner.id in self._owners:
                raise ValueError(f"id already registered: {owner.id}")
            self._owners[owner.id] = owner

    def owners(self) -> List[Owner]:
        with self._lock:
            return list(self._owners.values())

    # -- reading back -------------------------------------------------------------------

    def connections(self) -> List[ConnectionRecord]:
        with self._lock:
            return list(self._connections)

    def received(self, kind: Optional[str] = None) -> List[Any]:
        with self._lock:
            frames = list(self._received)
        if kind is None:
            return frames
        return [f for f in frames if isinstance(f, dict) and f.get("type") == kind]

    def wait_for_frame(
        self,
        kind: Optional[str],
        *,
        timeout: float,
        predicate: Optional[Callable[[Dict[str, Any]], bool]],
        since: int,
    ) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            position = max(0, since)
            while True:
                for frame in self._received[position:]:
                    if not isinstance(frame, dict):
                        continue
                    if kind is not None and frame.get("type") != kind:
                        continue
                    if predicate is None or predicate(frame):
                        return frame
                position = len(self._received)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {kind or 'client'} frame received within {timeout} s")
                self._changed.wait(remaining)

    def history(self, session_id: str) -> List[Dict[str, Any]]:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise KeyError(session_id)
            return copy.deepcopy(session.history)

    def sessions(self) -> Dict[str, SessionInfo]:
        with self._lock:
            return {sid: s.info() for sid, s in self._sessions.items()}

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether WebSocket upgrades are welcome (not while the engine stops)."""
        return not self._halted

    def resume(self) -> None:
        """Accept turns and connections again (after ``start()`` or ``restart()``)."""
        with self._lock:
            self._halted = False
            self._halt = threading.Event()

    def halt(self) -> None:
        """Cancel every running and queued turn; accept no new ones, nor connections."""
        with self._lock:
            self._halted = True
            self._halt.set()
            runs = [run for s in self._sessions.values() for run in s.runs()]
            for session in self._sessions.values():
                session.queue.clear()
        for run in runs:
            run.cancel()

    def track(self, websocket: Any, thread: threading.Thread) -> None:
        """Remember a websockets connection and its thread, to end and join them at stop.

        Called first thing as the connection is made (``websocket`` not initialised yet).
        """
        with self._lock:
            self._tracked = [(w, t) for w, t in self._tracked if t.is_alive() or _reading(w)]
            self._tracked.append((websocket, thread))

    def handler_threads(self) -> List[threading.Thread]:
        """The connection threads (websockets' handler threads) still running."""
        with self._lock:
            return [t for _, t in self._tracked if t.is_alive()]

    def close_connections(self, code: int, reason: str, *, abort: bool, timeout: float) -> None:
        """Close every open WebSocket connection (close frame ``code``), or abort them.

        Call after :meth:`halt`. Every connection websockets made counts, including one
        whose handler has not recorded it yet, and one in the middle of its handshake:
        if it was let through before the halt, it is closed as soon as it is open.
        Mute connections are always aborted: their close frame would go nowhere. A
        close that is not done after ``timeout`` (a client that never answers, or a
        writer stuck on a full buffer) is finished with an abort.
        """
        deadline = time.monotonic() + timeout
        closers: List[Tuple[Any, threading.Thread]] = []
        done: Set[int] = set()
        while True:
            with self._lock:
                tracked = [w for w, _ in self._tracked if id(w) not in done]
            upgrading = False
            for websocket in tracked:
                protocol = getattr(websocket, "protocol", None)  # None: being made
                state = State.CONNECTING if protocol is None else protocol.state
                if state is State.CONNECTING:
                    upgrading = upgrading or _upgrading(websocket)
                    continue
                done.add(id(websocket))
                if state is not State.OPEN:
                    continue
                sock = websocket.socket
                if abort or (isinstance(sock, ClientSocket) and sock.muted()):
                    sock.abort()
                    continue
                thread = threading.Thread(
                    target=_close_quietly,
                    args=(websocket, code, reason),
                    name="vectorshift-engine-close",
                    daemon=True,
                )
                thread.start()
                closers.append((websocket, thread))
            if not upgrading or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        for websocket, thread in closers:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                websocket.socket.abort()
                thread.join(timeout)

    def join_threads(self, timeout: float) -> List[threading.Thread]:
        """Join turn workers and websockets' threads; return those still alive."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._workers)
            for websocket, handler in self._tracked:
                threads.append(handler)
                reader = getattr(websocket, "recv_events_thread", None)
                if isinstance(reader, threading.Thread):
                    threads.append(reader)
        me = threading.current_thread()
        for thread in threads:
            if thread is not me and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._workers = [t for t in self._workers if t.is_alive()]
            self._tracked = [(w, t) for w, t in self._tracked if t.is_alive() or _reading(w)]
        return [t for t in threads if t.is_alive() and t is not me]

    # -- the connection handler (one websockets thread per connection) ---------------------

    def serve_connection(self, websocket: Any) -> None:
        """websockets' handler: record the connection, then act on each client message."""
        sock = websocket.socket
        if not isinstance(sock, ClientSocket):  # pragma: no cover - the engine's listener
            raise TypeError("connection did not come from the engine's listener")
        request = websocket.request
        with self._lock:
            record = ConnectionRecord(
                len(self._connections), str(request.path), request.headers, websocket, sock
            )
            self._connections.append(record)
        logger.debug("connection #%d open", record.index)
        try:
            for message in websocket:
                self._on_message(record, message)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                for session in self._sessions.values():
                    session.connections.discard(record)
                record.sessions.clear()
                record.closed.set()
                self._changed.notify_all()
            logger.debug("connection #%d closed", record.index)

    def _on_message(self, record: ConnectionRecord, message: Union[str, bytes]) -> None:
        kept = _as_received(message)
        with self._changed:
            record.frames.append(kept)
            record.raw_frames.append(message)
            self._received.append(kept)
            self._changed.notify_all()
        try:
            frame = _frames.parse_client_frame(message)
            kind = frame["type"]
            if kind in self.faults.ignore:
                return
            if kind in self.faults.fail_requests:
                error = f"{kind} failed (injected fault)"
                self._send(record, _frames.error_frame(error, kind, frame.get("session_id")))
                return
            self._handlers[kind](record, frame)
        except FrameError as exc:
            self._send(record, _frames.error_frame(exc.message, exc.request_type, exc.session_id))
        except Exception as exc:  # the engine never dies of a frame
            logger.exception("engine failed on a client frame")
            kind = kept.get("type") if isinstance(kept, dict) else None
            self._send(record, _frames.error_frame(f"internal engine error: {exc}", kind))

    # -- writing ----------------------------------------------------------------------------

    def _send(self, record: ConnectionRecord, payload: _Payload) -> bool:
        """Write one frame to one connection, applying the faults; never raises."""
        if record.closed.is_set() or record.muted:
            return False
        abort_now, abort_after = self.faults._take_frame()
        if abort_now:
            record.abort()
            return False
        text = payload if isinstance(payload, str) else _frames.dumps(payload)
        try:
            record._websocket.send(text)
        except (ConnectionClosed, OSError):
            return False
        record.sent.append(payload)
        if abort_after:
            record.abort()
        return True

    def _targets(self, session_id: Optional[str]) -> List[ConnectionRecord]:
        with self._lock:
            if session_id is None:
                return [r for r in self._connections if not r.closed.is_set()]
            session = self._sessions.get(session_id)
            return list(session.connections) if session else []

    def send_raw(self, text: str, session_id: Optional[str]) -> int:
        return sum(self._send(record, text) for record in self._targets(session_id))

    def drop(self, session_id: Optional[str]) -> int:
        targets = self._targets(session_id)
        for record in targets:
            record.abort()
        return len(targets)

    def _attach(self, session: _Session, record: ConnectionRecord) -> None:
        session.connections.add(record)
        record.sessions.add(session.id)

    def _detach(self, session: _Session, record: ConnectionRecord) -> None:
        session.connections.discard(record)
        record.sessions.discard(session.id)

    # -- the turn side (the Outlet protocol of _turns) ------------------------------------------

    def emit(self, run: TurnRun, frame: Dict[str, Any]) -> None:
        if run.cancelled.is_set():
            raise TurnCancelled()
        with self._lock:
            session = self._sessions[run.session_id]
            _record_notification(session, frame)
            targets = list(session.connections)
        for record in targets:
            self._send(record, frame)

    def emit_text(self, run: TurnRun, text: str) -> None:
        if run.cancelled.is_set():
            raise TurnCancelled()
        for record in self._targets(run.session_id):
            self._send(record, text)

    def expect_approval(self, run: TurnRun, message_id: str) -> PendingApproval:
        pending = PendingApproval(message_id, run.session_id)
        with run.lock:
            run.approvals[message_id] = pending
        with self._lock:
            self._sessions[run.session_id].approvals[message_id] = pending
        if run.cancelled.is_set():
            pending.done.set()
        return pending

    def forget_approval(self, run: TurnRun, message_id: str) -> None:
        with run.lock:
            run.approvals.pop(message_id, None)
        with self._lock:
            self._sessions[run.session_id].approvals.pop(message_id, None)

    def drop_session(self, session_id: str) -> None:
        self.drop(session_id)

    def _enqueue(self, session: _Session, run: TurnRun) -> None:
        with self._lock:
            if self._halted or session.terminated:
                return
            session.queue.append(run)
            if session.worker is not None:
                return
            worker = threading.Thread(
                target=self._work,
                args=(session,),
                name=f"vectorshift-engine-turn-{session.id[-6:]}",
                daemon=True,
            )
            session.worker = worker
            self._workers = [t for t in self._workers if t.is_alive()]
            self._workers.append(worker)
            worker.start()

    def _work(self, session: _Session) -> None:
        """A session's worker: run queued turns one at a time, exit when none is left.

        The queue check and giving up the worker slot happen under one lock, so a turn
        queued at that moment either is seen here or starts a new worker.
        """
        try:
            while True:
                with self._lock:
                    if self._halted or not session.queue:
                        session.worker = None
                        session.current = None
                        return
                    run = session.queue.popleft()
                    session.current = run
                turn: Turn = run.owner.turn if run.owner.turn is not None else self._default_turn
                run_turn(self, run, turn)
        except BaseException:  # pragma: no cover - run_turn never raises an Exception
            with self._lock:
                session.worker = None
                session.current = None
            raise

    # -- client frames ------------------------------------------------------------------------

    def _ack_allowed(self, kind: str) -> Optional[str]:
        """Apply ``ack_delay``; ``None`` to go on, else why the ack is refused.

        Returns ``"halted"`` when the engine stopped during the delay.
        """
        delay = self.faults.ack_delay
        with self._lock:
            halt = self._halt
        if delay > 0 and halt.wait(delay):
            return "halted"
        if kind in self.faults.refuse_acks:
            return f"{kind} refused (fault injection)"
        return None

    def _on_create_session(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        refusal = self._ack_allowed("create_session")
        if refusal == "halted":
            return
        if refusal is not None:
            self._send(record, {"type": "session_created", "success": False, "error": refusal})
            return
        kind, object_id = frame["object_type"], frame["object_id"]
        error: Optional[str] = None
        with self._lock:
            owner = self._owners.get(object_id)
            if owner is None or owner.kind != kind:
                error = f"{kind} not found: {object_id}"
            elif owner.kind == "agent" and owner.agent_type.lower() != "conversational":
                error = f"agent {object_id} is not conversational"
            else:
                session = _Session(new_id(), owner)
                self._sessions[session.id] = session
                self._attach(session, record)
        if error is not None:
            self._send(record, _frames.error_frame(error, "create_session"))
            return
        logger.debug("session %s created for %s %s", session.id, kind, object_id)
        self._send(record, _frames.session_created(session.id))

    def _on_connect_session(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        session_id = frame["session_id"]
        error = self._ack_allowed("connect_session")
        if error == "halted":
            return
        if error is None:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is None:
                    error = "session not found"
                elif session.terminated and not self.terminated_resumable:
                    error = "session is terminated"
                else:
                    session.terminated = False
                    self._attach(session, record)
        self._send(record, _frames.ack("connect_session", session_id, error))

    def _on_post_message(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        content = frame["content"]
        if _frames.is_approval_reply(content):
            self._on_approval_reply(record, frame)
        else:
            self._post(record, "post_message", frame["session_id"], content, [content])

    def _on_post_messages(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        messages = frame["messages"]
        self._post(record, "post_messages", frame["session_id"], messages, messages)

    def _post(
        self, record: ConnectionRecord, kind: str, session_id: str, content: Any, items: List[Any]
    ) -> None:
        """A user turn: ack, record and echo the user's message, queue the turn."""
        error = self._ack_allowed(kind)
        if error == "halted":
            return
        texts: List[str] = []
        files: List[UploadedFile] = []
        if error is None:
            try:
                for item in items:
                    item_text = _frames.content_text(item)
                    if item_text or isinstance(item, str):
                        texts.append(item_text)
                    files.extend(_frames.content_files(item, kind, session_id))
            except FrameError as exc:
                error = exc.message
        text = "\n".join(texts)
        user_message_id = new_id()
        user_content = {"type": "data_type_message", "value": text, "status": "Complete"}
        run: Optional[TurnRun] = None
        with self._lock:
            session = self._sessions.get(session_id)
            if error is not None:
                pass
            elif session is None:
                error = "session not found"
            elif session.terminated:
                error = "session is terminated"
            else:
                self._attach(session, record)
                session.record(
                    _frames.history_item(session_id, user_message_id, USER_SENDER, user_content)
                )
                run = TurnRun(session_id, session.owner, text, content, files)
        self._send(record, _frames.ack(kind, session_id, error))
        if run is None or session is None:
            return
        if session.owner.echo:
            echo = _frames.notification_frame(
                session_id, user_message_id, USER_SENDER, user_content
            )
            for target in self._targets(session_id):
                self._send(target, echo)
        self._enqueue(session, run)

    def _on_approval_reply(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        """A ``response_message``: answer the pending approval it points at."""
        session_id = frame["session_id"]
        error = self._ack_allowed("post_message")
        if error == "halted":
            return
        parent = frame.get("parent_message_id")
        value = frame["content"].get("value")
        answer = value.get("tool_call_approval") if isinstance(value, dict) else None
        pending: Optional[PendingApproval] = None
        if error is not None:
            pass
        elif not isinstance(parent, str) or not parent:
            error = "parent_message_id is required for a response_message"
        elif not isinstance(answer, dict) or not ({"confirm", "deny"} & answer.keys()):
            error = "response_message needs value.tool_call_approval with confirm or deny"
        else:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is None:
                    error = "session not found"
                else:
                    pending = session.approvals.get(parent)
                    if pending is None:
                        error = f"no pending approval with id {parent}"
        self._send(record, _frames.ack("post_message", session_id, error))
        if pending is not None and error is None and isinstance(answer, dict):
            pending.answer = dict(answer)
            pending.done.set()

    def _known(self, record: ConnectionRecord, frame: Mapping[str, Any]) -> Optional[_Session]:
        """The frame's session, or ``None`` after answering an ``error`` frame."""
        session_id = frame["session_id"]
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            self._send(record, _frames.error_frame("session not found", frame["type"], session_id))
        return session

    def _on_get_messages(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        session = self._known(record, frame)
        if session is not None:
            with self._lock:
                items = copy.deepcopy(session.history)
            self._send(record, _frames.messages_frame(session.id, items))

    def _on_ping_session(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        if not self.faults.answer_pings:
            return
        session = self._known(record, frame)
        if session is not None:
            self._send(record, _frames.pong(session.id))

    def _on_disconnect_session(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        session = self._known(record, frame)
        if session is not None:
            with self._lock:
                self._detach(session, record)
            self._send(record, _frames.ack("disconnect_session", session.id))

    def _on_terminate_session(self, record: ConnectionRecord, frame: Dict[str, Any]) -> None:
        session = self._known(record, frame)
        if session is None:
            return
        with self._lock:
            session.terminated = True
            runs = session.runs()
            session.queue.clear()
            for attached in list(session.connections):
                self._detach(session, attached)
        for run in runs:
            run.cancel()
        logger.debug("session %s terminated", session.id)
        self._send(record, _frames.ack("terminate_session", session.id))


def _record_notification(session: _Session, frame: Mapping[str, Any]) -> None:
    """Keep a well-formed ``message_notification`` of this session in its history."""
    if frame.get("type") != "message_notification" or frame.get("session_id") != session.id:
        return
    message = frame.get("message")
    if not isinstance(message, dict):
        return
    message_id, content = message.get("id"), message.get("content")
    if isinstance(message_id, str) and message_id and isinstance(content, dict):
        session.record(
            _frames.history_item(
                session.id, message_id, message.get("sender"), copy.deepcopy(content)
            )
        )


def _reading(websocket: Any) -> bool:
    reader = getattr(websocket, "recv_events_thread", None)
    return isinstance(reader, threading.Thread) and reader.is_alive()


def _upgrading(websocket: Any) -> bool:
    """Whether a connection still in its opening handshake has a request that is being
    answered, and may be let through (it will be open in a moment)."""
    if getattr(websocket, "request", None) is None:
        return False  # its process_request has not run: it will refuse the upgrade
    response = getattr(websocket, "response", None)
    return response is None or response.status_code == 101


def _close_quietly(websocket: Any, code: int, reason: str) -> None:
    try:
        websocket.close(code, reason)
    except Exception:  # closing is best effort; an abort follows if it hangs
        logger.debug("closing a connection failed", exc_info=True)
