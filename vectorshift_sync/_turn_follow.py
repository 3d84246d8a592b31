"""Following one turn: the single loop behind ``ask()``, ``stream()`` and ``stream_text()``.

A turn is followed on a subscriber queue of its own, registered before the user's
message is sent, so nothing of the turn is missed. :class:`TurnFollower` pulls the
turn's events from it, feeds them to a :class:`~vectorshift_sync.turns.TurnTracker`
and stops when the tracker says the turn ended. The three front ends differ only in
what they do with each event: ``stream()`` yields it, ``ask()`` stops on what
:func:`turn_stop` names, ``stream_text()`` (a :class:`TextStream`) keeps the agent's
text and pauses on an approval request.

Abandoned turns
---------------
The engine runs a session's turns one after another, so a turn left before its end
(a ``break``, a closed generator, a Streamlit rerun, a timeout) goes on sending its
deltas and its ``Idle``. Were the next turn to subscribe at once, it would take those
leftovers for its own answer and end at the old ``Idle``. So a follower closed early
is *parked* on the session's :class:`TurnLine`, its queue still subscribed, and the
next turn first reads it to its end (within the new turn's timeout), then subscribes
and sends. A turn that never started (its post was refused) or whose connection is
gone is not parked.

Nothing here is owned by a thread, and no lock is held between two events: a
:class:`TextStream` may be advanced from a different thread at every step (Gradio
does that), provided one thread at a time does.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
from typing import TYPE_CHECKING, Any, Deque, Dict, Generator, Iterator, List, Mapping, Optional

from ._subscribers import Ended
from .errors import (
    ConversationalRunActionRequiredError,
    InvalidArgumentError,
    SessionDisconnectedError,
    SessionError,
    SessionTimeoutError,
    VectorshiftError,
)
from .events import SessionEvent, SessionEventType
from .turns import TurnResult, TurnTracker

if TYPE_CHECKING:
    from .session import Session, _Listener

__all__ = ["TextStream", "TurnFollower", "TurnLine", "turn_stop", "follow_events", "follow_answer"]

logger = logging.getLogger(__name__)

E = SessionEventType
_ACTIONS = (E.APPROVAL_REQUEST, E.REAUTH_REQUEST)


def turn_stop(event: SessionEvent, session_id: str) -> Optional[VectorshiftError]:
    """What a turn that meets ``event`` raises, or None when the turn goes on.

    An approval or re-authorisation request pauses it
    (:class:`ConversationalRunActionRequiredError`); an ``ERROR`` other than the
    "reconnecting" notice fails it (:class:`SessionError`).
    """
    if event.type in _ACTIONS:
        return ConversationalRunActionRequiredError(event, session_id)
    if event.type is E.ERROR and not event.data.get("reconnecting"):
        return SessionError(f"the turn failed: {event.error}")
    return None


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + timeout


class TurnLine:
    """A session's turns one after another: where an abandoned turn is read to its end.

    Parking only appends to a deque (atomic, no lock), so it is safe from a
    finaliser on any thread.
    """

    def __init__(self) -> None:
        self._parked: Deque[TurnFollower] = collections.deque()

    def park(self, follower: TurnFollower) -> None:
        self._parked.append(follower)

    def settle(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Read every parked turn to its end; raise :class:`SessionTimeoutError` past
        ``deadline`` (the parked turn stays parked)."""
        while True:
            try:
                parked = self._parked.popleft()
            except IndexError:
                return
            parked._deadline = deadline
            done = False
            try:
                while not parked.refused and parked.next_event() is not None:
                    pass
                done = True
            except SessionDisconnectedError:
                done = True  # the session closed under it: nothing more will come
            except SessionTimeoutError:
                waiting = " (it is waiting for an answer to an approval request)"
                raise SessionTimeoutError(
                    f"the previous turn, left before its end, did not end within {timeout}s"
                    + (waiting if parked.awaiting else "")
                    + "; the engine runs one turn at a time"
                ) from None
            finally:
                if done:
                    parked._release()
                else:
                    self._parked.appendleft(parked)

    def discard(self) -> None:
        """Forget every parked turn (unsubscribing them)."""
        while True:
            try:
                parked = self._parked.popleft()
            except IndexError:
                return
            parked._release()


class TurnFollower:
    """One turn being followed, from its own subscriber queue to the turn's end."""

    def __init__(self, session: Session, listener: _Listener, timeout: Optional[float]) -> None:
        self.session = session
        self.tracker = TurnTracker()
        self.timeout = timeout
        self._deadline = _deadline(timeout)
        self._listener: Optional[_Listener] = listener
        self.ended = False  # the turn ended (its last event was handed out)
        self.refused = False  # the post was refused: no turn runs
        self.awaiting = False  # the last event asked the user for something
        self._lost = False  # the subscription ended with the session
        self._closed = False

    @classmethod
    def start(cls, session: Session, frame: str, timeout: Optional[float]) -> TurnFollower:
        """Wait for an abandoned turn to end, subscribe, then send ``frame``."""
        from .session import _Listener  # session imports this module

        deadline = _deadline(timeout)
        session._turn_line.settle(deadline, timeout)
        listener = _Listener(session, session._subscribe(None, 0, fresh=True), None)
        try:
            session._link.send_frame(frame)
        except BaseException:
            listener.close()
            raise
        follower = cls(session, listener, timeout)
        follower._deadline = deadline
        return follower

    @property
    def session_id(self) -> str:
        return self.session.session_id or ""

    def restart_clock(self) -> None:
        """Give the rest of the turn a full ``timeout`` again (after a user's pause)."""
        self._deadline = _deadline(self.timeout)

    def next_event(self) -> Optional[SessionEvent]:
        """The turn's next event, or None once the event that ended it was returned.

        Raises :class:`SessionTimeoutError` past the deadline and
        :class:`SessionDisconnectedError` when the session closes first (a lost
        connection's ``ERROR`` event is returned once before that).
        """
        if self.ended:
            return None
        listener = self._listener
        if listener is None or self._lost:
            raise SessionDisconnectedError(self._closed_message())
        try:
            event = listener._pull(self._deadline)
        except queue.Empty:
            raise SessionTimeoutError(
                f"the turn did not end within {self.timeout}s (session "
                f"{self.session.session_id!r}); it may still be running on the engine"
            ) from None
        except Ended as end:
            self._lost = True
            self._release()
            if end.error is not None:
                return end.error
            raise SessionDisconnectedError(self._closed_message()) from None
        if event.type is E.ERROR and event.data.get("request_type") is not None:
            self.refused = True
        self.awaiting = event.requires_action
        if self.tracker.feed(event):
            self.ended = True
            self._release()
        return event

    def close(self) -> None:
        """Stop following: unsubscribe, or park the turn if it is still running."""
        if self._closed:
            return
        self._closed = True
        if self.ended or self._lost or self.refused or self._listener is None:
            self._release()
        else:
            self.session._turn_line.park(self)

    def _release(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _closed_message(self) -> str:
        reason = self.session._link.lost_reason
        return "the session closed before the turn ended" + (f" ({reason})" if reason else "")


def follow_events(follower: TurnFollower) -> Generator[SessionEvent, None, None]:
    """``stream()``: every event of the turn, the one that ends it included."""
    try:
        while True:
            event = follower.next_event()
            if event is None:
                return
            yield event
    finally:
        follower.close()


def follow_answer(follower: TurnFollower) -> TurnResult:
    """``ask()``: the turn's answer; raises what :func:`turn_stop` names."""
    events: List[SessionEvent] = []
    try:
        while True:
            event = follower.next_event()
            if event is None:
                break
            events.append(event)
            stop = turn_stop(event, follower.session_id)
            if stop is not None:
                raise stop
    finally:
        follower.close()
    return TurnResult(follower.tracker.text, follower.session_id, events)


class _TextPicker:
    """Turns a turn's events into the agent's text, chunk by chunk, each once.

    Deltas are passed on as they come. A complete (or partial ``MESSAGE_STREAMING``)
    message yields what its deltas did not, so an agent that sends no deltas still
    streams. After a reconnect within the turn, deltas of unfinished messages are
    held back until the message completes (some were lost while away), and the rest
    of the complete text is yielded then.
    """

    def __init__(self) -> None:
        self._shown: Dict[str, str] = {}
        self._held: Dict[str, List[str]] = {}
        self._completed: set[str] = set()
        self._gap = False

    def take(self, event: SessionEvent, processing: bool) -> str:
        kind = event.type
        key = event.message_id or ""
        if kind is E.MESSAGE_DELTA:
            delta = event.delta
            if not event.is_from_agent or not isinstance(delta, str) or key in self._completed:
                return ""
            if self._gap:
                self._held.setdefault(key, []).append(delta)
                return ""
            self._shown[key] = self._shown.get(key, "") + delta
            return delta
        if kind is E.MESSAGE_COMPLETE:
            text = event.text
            if text is None or not event.is_from_agent or key in self._completed:
                return ""
            if event.sender is None and not processing and key not in self._shown:
                return ""  # no sender given: a message before the agent started is the echo
            self._completed.add(key)
            self._held.pop(key, None)
            return self._rest(key, text if isinstance(text, str) else str(text))
        if kind is E.MESSAGE_STREAMING:
            text = event.data.get("text")
            if "status" in event.data and isinstance(text, str) and event.is_from_agent:
                if self._gap or key in self._completed:
                    return ""
                return self._rest(key, text)  # a partial message: its text so far
            return ""
        if kind is E.ERROR and event.data.get("reconnecting"):
            self._gap = True
        return ""

    def _rest(self, key: str, text: str) -> str:
        shown = self._shown.get(key, "")
        if not text.startswith(shown):
            logger.debug("message %s differs from its streamed deltas; not repeated", key)
            return ""
        self._shown[key] = text
        return text[len(shown) :]

    def flush(self) -> str:
        """At the turn's end: held deltas of messages that never completed."""
        held = "".join("".join(parts) for parts in self._held.values())
        self._held.clear()
        return held


class TextStream(Iterator[str]):
    """The agent's text of one turn, chunk by chunk: what ``Session.stream_text()`` returns.

    Iterate it (or hand it to ``st.write_stream``); it ends when the agent's turn
    ends. ``text`` is everything yielded so far. When the agent asks for approval,
    ``next()`` raises :class:`ConversationalRunActionRequiredError` carrying the
    request (also in :attr:`pending`); the stream stays open: answer with
    :meth:`respond` and iterate again for the rest of the same turn. Other errors
    (:class:`SessionError` for a failed turn, :class:`SessionTimeoutError`,
    :class:`SessionDisconnectedError`) close it.

    :meth:`close` (also ``with``, or dropping the object) leaves the session ready
    for the next turn: a turn still running is read to its end, unseen, before the
    next one is sent. No lock or thread-local state is kept between two chunks, so
    consecutive ``next()`` calls may come from different threads, one at a time.
    """

    def __init__(self, follower: TurnFollower) -> None:
        self._follower: Optional[TurnFollower] = follower
        self._session = follower.session
        self._picker = _TextPicker()
        self._chunks: List[str] = []
        self._pending: Optional[SessionEvent] = None
        self._paused = False

    @property
    def session(self) -> Session:
        """The session this turn belongs to."""
        return self._session

    @property
    def text(self) -> str:
        """The text yielded so far (all of the answer once the stream has ended)."""
        return "".join(self._chunks)

    @property
    def pending(self) -> Optional[SessionEvent]:
        """The approval or re-authorisation request waiting for an answer, if any."""
        return self._pending

    @property
    def ended(self) -> bool:
        """True once the agent's turn ended (and the stream was read to its end)."""
        follower = self._follower
        return follower is None or follower.ended

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        follower = self._follower
        if follower is None:
            raise StopIteration
        if self._paused:  # going on after a pause for the user: a fresh timeout
            self._paused = False
            self._pending = None
            follower.restart_clock()
        try:
            while True:
                event = follower.next_event()
                if event is None:
                    rest = self._picker.flush()
                    self.close()
                    if rest:
                        self._chunks.append(rest)
                        return rest
                    raise StopIteration
                stop = turn_stop(event, follower.session_id)
                if isinstance(stop, ConversationalRunActionRequiredError):
                    self._pending = event
                    self._paused = True
                    raise stop
                if stop is not None:
                    raise stop
                chunk = self._picker.take(event, follower.tracker.processing)
                if chunk:
                    self._chunks.append(chunk)
                    return chunk
        except ConversationalRunActionRequiredError:
            raise
        except BaseException:
            self.close()
            raise

    def respond(
        self,
        *,
        approved: bool,
        confirm: Optional[Mapping[str, Any]] = None,
        deny_reason: Optional[str] = None,
    ) -> TextStream:
        """Answer the pending approval request; return this stream to read on.

        ``st.write_stream(stream.respond(approved=True))`` goes on with the same
        turn's text. Raises :class:`InvalidArgumentError` when nothing is pending, and
        what :meth:`Session.respond_approval` raises (a re-authorisation request
        cannot be answered from here).
        """
        event = self._pending
        if event is None or self._follower is None:
            raise InvalidArgumentError("no approval request is pending on this text stream")
        self._session.respond_approval(
            event, approved=approved, confirm=confirm, deny_reason=deny_reason
        )
        self._pending = None
        return self

    def close(self) -> None:
        """Stop reading; a turn still running is left to end unseen. Idempotent."""
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unclosed (a Streamlit rerun abandons a stream mid-turn): park the
        # turn. Parking takes no lock, so this is safe on any thread, in the GC.
        follower = getattr(self, "_follower", None)
        if follower is not None and not follower._closed:
            if follower.ended or follower.refused or follower._lost:
                return  # nothing to park; the listener's own finaliser unsubscribes
            follower._closed = True
            follower.session._turn_line.park(follower)
