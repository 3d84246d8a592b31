"""One user turn: what a scripted agent sees (:class:`TurnContext`) and how a turn runs.

A turn runs in the session's worker thread, never in the thread that reads the
connection, so pings and approval answers are handled while it runs. Every frame a
turn sends first checks whether the turn was cancelled (session terminated, engine
stopped or restarted) and raises :class:`TurnCancelled` if so, which ends the turn
quietly at its next step.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol

from . import _frames
from ._frames import UploadedFile, new_id
from ._records import Owner, Turn

__all__ = ["TurnCancelled", "TurnContext", "TurnRun", "PendingApproval", "Outlet", "run_turn"]

logger = logging.getLogger(__name__)


class TurnCancelled(Exception):
    """The turn was stopped: its session was terminated, or the engine stopped."""


@dataclass
class PendingApproval:
    """A ``tool_call_approval`` request waiting for its ``response_message``."""

    message_id: str
    session_id: str
    done: threading.Event = field(default_factory=threading.Event)
    answer: Optional[Dict[str, Any]] = None


@dataclass
class TurnRun:
    """The engine's record of one queued or running turn."""

    session_id: str
    owner: Owner
    text: str
    content: Any
    files: List[UploadedFile]
    cancelled: threading.Event = field(default_factory=threading.Event)
    approvals: Dict[str, PendingApproval] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        """Stop the turn at its next step and wake any approval it waits for."""
        self.cancelled.set()
        with self.lock:
            waiting = list(self.approvals.values())
        for pending in waiting:
            pending.done.set()


class Outlet(Protocol):
    """What a turn needs from the engine (implemented by the engine's hub)."""

    stream_delay: float

    def emit(self, run: TurnRun, frame: Dict[str, Any]) -> None: ...

    def emit_text(self, run: TurnRun, text: str) -> None: ...

    def expect_approval(self, run: TurnRun, message_id: str) -> PendingApproval: ...

    def forget_approval(self, run: TurnRun, message_id: str) -> None: ...

    def drop_session(self, session_id: str) -> None: ...

    def history(self, session_id: str) -> List[Dict[str, Any]]: ...


class TurnContext:
    """One user turn, as a scripted agent sees it.

    ``text`` is the user's text (for ``post_messages``: the text items joined with
    ``"\\n"``), ``content`` the raw content (``post_message``) or list of items
    (``post_messages``), ``files`` the decoded file items. Every sending method may
    raise :class:`TurnCancelled`; let it propagate.
    """

    def __init__(self, outlet: Outlet, run: TurnRun) -> None:
        self._outlet = outlet
        self._run = run
        self.session_id: str = run.session_id
        self.text: str = run.text
        self.content: Any = run.content
        self.files: List[UploadedFile] = list(run.files)
        self.owner_id: str = run.owner.id
        self.owner_type: str = run.owner.kind
        self.owner_name: str = run.owner.name
        self._indexes: Dict[str, int] = {}
        self._tool_messages: Dict[str, str] = {}

    # -- raw frames -------------------------------------------------------------

    def send(self, frame: Mapping[str, Any]) -> None:
        """Send a raw frame to the session's connections (``session_id`` filled if absent)."""
        self._outlet.emit(self._run, _frames.with_session_id(frame, self.session_id))

    def send_text(self, text: str) -> None:
        """Send a raw text message, JSON or not."""
        self._outlet.emit_text(self._run, text)

    # -- protocol frames -----------------------------------------------------------

    def status(self, status: str) -> None:
        """A ``participant_status`` frame (``Processing``, ``Idle``, ``AwaitingApproval``…)."""
        self.send(_frames.status_frame(self.session_id, status))

    def delta(self, text: str, *, message_id: str) -> None:
        """One ``message_delta``; indexes count up per message id."""
        index = self._indexes.get(message_id, 0)
        self.send(_frames.delta_frame(self.session_id, message_id, index, text))
        self._indexes[message_id] = index + 1

    def notify(self, content: Mapping[str, Any], *, message_id: Optional[str] = None) -> str:
        """A ``message_notification`` from the agent; recorded in history. Returns its id."""
        message_id = message_id or new_id()
        self.send(
            _frames.notification_frame(self.session_id, message_id, self._run.owner.sender, content)
        )
        return message_id

    def complete(self, text: str, *, message_id: Optional[str] = None) -> str:
        """The final ``data_type_message`` (status ``Complete``) of a message."""
        content = {"type": "data_type_message", "value": text, "status": "Complete"}
        return self.notify(content, message_id=message_id)

    def stream(self, text: str, *, chunk: int = 4, delay: Optional[float] = None) -> str:
        """Deltas of ``chunk`` characters, then the ``Complete`` message. Returns its id.

        ``delay`` (default: the engine's ``stream_delay``) is waited between deltas.
        """
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        pause = self._outlet.stream_delay if delay is None else delay
        message_id = new_id()
        for start in range(0, len(text), chunk):
            if start and pause > 0:
                self.wait(pause)
            self.delta(text[start : start + chunk], message_id=message_id)
        return self.complete(text, message_id=message_id)

    def flood(self, n: int, *, text: str = "x", message_id: Optional[str] = None) -> str:
        """``n`` ``message_delta`` frames as fast as possible. Returns the message id."""
        message_id = message_id or new_id()
        for _ in range(n):
            self.delta(text, message_id=message_id)
        return message_id

    def tool_call(
        self,
        tool_name: str,
        *,
        arguments: Optional[Mapping[str, Any]] = None,
        tool_id: Optional[str] = None,
    ) -> str:
        """A visible tool call (status ``Running``). Returns the tool id."""
        tool_id = tool_id or new_id()
        message_id = new_id()
        self._tool_messages[tool_id] = message_id
        content = {
            "type": "tool_call",
            "tool_name": tool_name,
            "tool_id": tool_id,
            "status": "Running",
            "arguments": dict(arguments or {}),
        }
        self.notify(content, message_id=message_id)
        return tool_id

    def tool_result(self, tool_name: str, result: Any, *, tool_id: str) -> None:
        """The tool call's result (status ``Completed``), under the call's message id."""
        content = {
            "type": "tool_call",
            "tool_name": tool_name,
            "tool_id": tool_id,
            "status": "Completed",
            "result": result,
        }
        self.notify(content, message_id=self._tool_messages.get(tool_id))

    def thinking(self, content: str, summary: Optional[str] = None) -> None:
        self.notify({"type": "thinking", "content": content, "summary": summary})

    def reasoning(self, text: str) -> None:
        self.notify({"type": "reasoning", "value": text})

    def agent_task(self, text: str) -> None:
        self.notify({"type": "agent_task", "value": text})

    def search_results(self, query: str, results: Iterable[Mapping[str, Any]]) -> None:
        self.notify(
            {"type": "search_message", "query": query, "results": [dict(r) for r in results]}
        )

    def error(self, text: str) -> None:
        """An ``error_message`` notification."""
        self.notify({"type": "error_message", "error": text})

    def approval(
        self,
        tool_name: str,
        *,
        arguments: Optional[Mapping[str, Any]] = None,
        timeout: float = 60.0,
    ) -> Dict[str, Any]:
        """Ask the user to approve a tool call and block until they answer.

        Sends a ``tool_call_approval`` notification and ``AwaitingApproval``; waits for a
        ``post_message`` whose content is a ``response_message`` with
        ``parent_message_id`` equal to that notification's id; then sends ``Processing``
        again. Returns the ``tool_call_approval`` value, ``{"confirm": {...}}`` or
        ``{"deny": "reason"}``. Raises the built-in ``TimeoutError`` after ``timeout``
        seconds, :class:`TurnCancelled` if the turn is stopped meanwhile.
        """
        message_id = new_id()
        # Registered before the request goes out, so an instant answer is not lost.
        pending = self._outlet.expect_approval(self._run, message_id)
        try:
            content = {
                "type": "tool_call_approval",
                "tool_id": new_id(),
                "tool_name": tool_name,
                "tool_call_id": new_id(),
                "arguments": dict(arguments or {}),
            }
            self.notify(content, message_id=message_id)
            self.status("AwaitingApproval")
            if not pending.done.wait(timeout):
                raise TimeoutError(f"no answer to approval {message_id} within {timeout} s")
            if self._run.cancelled.is_set() or pending.answer is None:
                raise TurnCancelled()
            answer = pending.answer
        finally:
            self._outlet.forget_approval(self._run, message_id)
        self.status("Processing")
        return answer

    # -- control -------------------------------------------------------------------

    def drop(self) -> None:
        """Abort the session's TCP connections now, without a close frame."""
        self._outlet.drop_session(self.session_id)

    def wait(self, seconds: float) -> None:
        """Sleep; raise :class:`TurnCancelled` as soon as the turn is stopped."""
        if self._run.cancelled.wait(seconds):
            raise TurnCancelled()

    @property
    def cancelled(self) -> bool:
        return self._run.cancelled.is_set()

    @property
    def history(self) -> List[Dict[str, Any]]:
        """The session's history so far (this turn's user message included)."""
        return self._outlet.history(self.session_id)


def run_turn(outlet: Outlet, run: TurnRun, turn: Turn) -> None:
    """Run one turn to the end; never raises.

    A callable gets ``Processing`` before and ``Idle`` after; if it raises, the user
    sees an ``error_message`` and then ``Idle``. Frames of a list are sent as they are.
    """
    ctx = TurnContext(outlet, run)
    try:
        if callable(turn):
            ctx.status("Processing")
            turn(ctx)
            ctx.status("Idle")
        elif turn is not None:
            for item in turn:
                if isinstance(item, str):
                    ctx.send_text(item)
                else:
                    ctx.send(item)
    except TurnCancelled:
        logger.debug("turn in session %s cancelled", run.session_id)
    except Exception as exc:
        logger.exception("turn in session %s failed", run.session_id)
        try:
            ctx.error(f"{type(exc).__name__}: {exc}")
            if callable(turn):
                ctx.status("Idle")
        except TurnCancelled:
            pass
