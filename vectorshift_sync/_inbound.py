"""What comes in from the engine, routed in the order consumers must see it.

The I/O thread parses each read's frames here (no lock), then routes them under the
session's lock: replies to the calls waiting for them (:mod:`._replies`), events to
the listeners and callbacks (:mod:`._fanout`), in arrival order.

After a reconnect, the session reads the history to recover replies that completed
while the link was down. Between the reconnect's acknowledgement and the end of that
look, live events are held here, so a recovered reply comes before the live events
after it (the turn's live Idle must not overtake the reply it ends). To know what was
missed, this module also remembers what the client has seen: the last whole message
and the ids of the newest completed replies.

Nothing here blocks, starts a thread or runs user code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, List, Optional, Set, Tuple

from . import _protocol as proto
from ._fanout import FanOut
from ._recovery import RecentIds
from ._replies import ReplyDesk
from .events import SessionEvent, SessionEventType

if TYPE_CHECKING:  # the loop's idea of what it wakes at the end of a round
    from ._ioloop import Waker

__all__ = ["Inbound", "DELIVERED_KEEP"]

logger = logging.getLogger(__name__)

#: How many ids of delivered replies a session remembers. They only keep a reply
#: from being recovered twice after a reconnect, and recovery looks at the history
#: after the last message seen: only replies completed around a drop matter, so the
#: newest few thousand are plenty and a long-lived session does not grow unbounded.
DELIVERED_KEEP = 4096

_DELTA = SessionEventType.MESSAGE_DELTA
_COMPLETE = SessionEventType.MESSAGE_COMPLETE
_CONNECTED = SessionEventType.SESSION_CONNECTED


class Inbound:
    """One session's inbound routing and what it has seen.

    Every method named ``*_locked`` is called with the session's lock held (the
    fan-out's lock). ``parse`` needs no lock.
    """

    def __init__(self, fanout: FanOut, replies: ReplyDesk) -> None:
        self._fanout = fanout
        self._replies = replies
        self._unknown_kinds: Set[str] = set()
        #: Live events held while a reconnect reads the history, or None.
        self.held: Optional[List[SessionEvent]] = None
        self.delivered = RecentIds(DELIVERED_KEEP)  # the newest, bounded
        self.last_seen: Optional[str] = None
        self.history_known = True  # False while a resumed session has seen nothing

    def parse(self, raws: List[bytes], session_id: str) -> List[proto.EventOrParsed]:
        """Parse one read's frames (I/O thread, no lock); malformed and unknown
        frames are skipped with a log line (unknown kinds once each, at most 64)."""
        parsed: List[proto.EventOrParsed] = []
        for raw in raws:
            try:
                parsed.append(proto.read_frame(raw, session_id))
            except proto.UnknownFrameError as exc:
                kinds = self._unknown_kinds
                if exc.kind not in kinds and len(kinds) < 64:
                    kinds.add(exc.kind)
                    logger.info("ignoring frames of unknown type %r", exc.kind)
            except proto.FrameError as exc:
                logger.warning("skipping a malformed frame: %s", exc)
        return parsed

    def route_locked(
        self,
        parsed: List[proto.EventOrParsed],
        wakes: Optional[Set[Waker]],
        reconnect_attempt: Optional[int],
    ) -> None:
        """Route one read's parsed frames, in order. ``reconnect_attempt``: the attempt
        number while the session is reconnecting (None otherwise). ``wakes``: the I/O
        loop's set of consumers to wake at the end of its round."""
        batch: List[SessionEvent] = []
        for item in parsed:
            if isinstance(item, SessionEvent):  # an event alone: most frames
                batch.append(item)
                continue
            if item.reply is None:  # from read_frame only Parsed(): a frame meaning nothing
                if item.event is not None:  # any other Parsed(event) is an event alone
                    batch.append(item.event)
                continue
            if batch:  # keep the order: what came before the reply goes first
                self.publish_locked(batch, wakes)
                batch = []
            self._route_reply_locked(item, wakes, reconnect_attempt)
        if batch:
            self.publish_locked(batch, wakes)

    def _route_reply_locked(
        self,
        parsed: proto.Parsed,
        wakes: Optional[Set[Waker]],
        reconnect_attempt: Optional[int],
    ) -> None:
        reply, event = parsed.reply, parsed.event
        assert reply is not None
        # History is never an event. Replies carry no request id, so a reply to a
        # call that timed out answers the next call, if any.
        private = reply.request_type == "get_messages"
        delivered = self._replies.deliver_locked(reply)
        if delivered:
            # A refusal the waiting call turns into an exception (or a give-up
            # event) is not also an ERROR for listeners.
            private = private or not reply.ok
        if event is None or private:
            return
        if (
            reconnect_attempt is not None
            and event.type is _CONNECTED
            and delivered  # to this attempt's handshake: a late ack holds nothing
            and reply.ok
        ):
            data = dict(event.data)
            data.update(reconnected=True, attempts=reconnect_attempt)
            event = SessionEvent(event.type, event.session_id, event.message_id, data)
            self.publish_locked([event], wakes)
            self.held = []  # until the reconciliation has read the history
            return
        self.publish_locked([event], wakes)

    def publish_locked(
        self, events: List[SessionEvent], wakes: Optional[Set[Waker]] = None
    ) -> None:
        """Hand ``events`` to the fan-out (or hold them while reconciling), noting
        how far into the history the client has come. Never blocks."""
        if self.held is not None:  # reconciling after a reconnect: keep the order
            self.held.extend(events)
            return
        for event in events:
            message_id = event.message_id
            if message_id is not None and event.type is not _DELTA:
                # Deltas carry the id of a message that is not complete yet: only
                # whole messages mark how far into the history this client has come.
                self.last_seen = message_id
                self.history_known = True
                if event.type is _COMPLETE:
                    self.delivered.add(message_id)
        self._fanout.publish_locked(events, wakes)

    def release_held_locked(self, recovered: List[SessionEvent]) -> None:
        """Publish what a reconnect recovered from the history (minus replies that
        reached the client meanwhile), then what was held; stop holding."""
        held, self.held = self.held or [], None
        delivered = self.delivered
        # A reply that completed live while the history was read is in both: the
        # live copy, held in its place, is the one consumers get.
        live = {e.message_id for e in held if e.type is _COMPLETE and e.message_id is not None}
        recovered = [
            e
            for e in recovered
            if e.message_id is None or (e.message_id not in delivered and e.message_id not in live)
        ]
        if any(e.is_turn_end for e in held):
            # The live Idle ends the turn; no second, recovered one before it.
            recovered = [e for e in recovered if not e.is_turn_end]
        if recovered or held:
            self.publish_locked(recovered + held)

    def seen_locked(self) -> Tuple[bool, Set[str], Optional[str]]:
        """(whether the history can be read against what was seen, the delivered
        reply ids, the last whole message seen), for the reconciliation."""
        return self.history_known, set(self.delivered), self.last_seen

    def resumed_locked(self) -> None:
        """A resumed session that has seen nothing yet cannot tell what it missed."""
        if self.last_seen is None:
            self.history_known = False
