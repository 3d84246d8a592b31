"""Races between a session's connection lifetimes, against the real local engine.

Each test drives one interleaving that the I/O thread, a reconnect attempt, and
``connect()``/``disconnect()`` can produce, deterministically: by calling a private
step at the moment the race would, or by holding a step back with a wrapper. None
patches a socket.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List

import pytest
from conftest import scaled

from vectorshift_sync import SessionEventType
from vectorshift_sync.session import ReconnectPolicy, Session
from vectorshift_sync.testing import LocalEngine

E = SessionEventType
pytestmark = pytest.mark.timeout(60)


def _ack(session_id: str) -> bytes:
    frame = {"type": "connect_session", "session_id": session_id, "success": True}
    return json.dumps(frame).encode()


def test_a_late_handshake_ack_does_not_hold_back_every_later_event(engine: LocalEngine) -> None:
    # The attempt's connect_session acknowledgement comes only after the attempt timed
    # out and dropped its connection (the I/O thread had read it just before). Nobody
    # waits for it any more, so it must not start holding events back for a history
    # look that will never come: the next connect() must work normally.
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    policy = ReconnectPolicy(max_attempts=1, max_time=scaled(5.0), base_delay=0.02)
    session = Session(
        owner_type="agent", owner_id=agent, reconnect=policy, connect_timeout=scaled(0.5)
    ).connect()
    try:
        sid = session.session_id
        assert sid
        drop = session._drop
        late: List[int] = []

        def drop_then_late_ack(connection: Any) -> None:
            drop(connection)
            late.append(1)
            session._on_messages([_ack(sid)], None)  # as the I/O thread, a moment late

        session._drop = drop_then_late_ack  # type: ignore[method-assign]
        errors = session.listen(event_types=[E.ERROR], timeout=scaled(5))
        engine.faults.ignore = {"connect_session"}  # the attempt's ack never comes in time
        engine.drop_connections()
        assert [e.data["reconnecting"] for e in errors] == [True, False]  # gave up
        assert late == [1]
        engine.faults.reset()
        session.connect()
        assert session.ask("still there?", timeout=scaled(5)).text == "hi"
    finally:
        session.disconnect()


def _status(session_id: str, marker: str) -> Dict[str, Any]:
    return {
        "type": "participant_status",
        "session_id": session_id,
        "message": {"status": "Processing", "marker": marker},
    }


def test_events_read_while_disconnecting_are_not_replayed_after_the_next_connect(
    engine: LocalEngine,
) -> None:
    agent = engine.add_agent("Echo", turn=lambda ctx: ctx.complete("hi"))
    session = Session(owner_type="agent", owner_id=agent, reconnect=False).connect()
    try:
        sid = session.session_id
        assert sid
        route = session._on_messages
        routed = threading.Event()

        def noting(raws: List[bytes], wakes: Any) -> None:
            route(raws, wakes)
            routed.set()

        session._on_messages = noting  # type: ignore[method-assign]
        connection = session._connection
        assert connection is not None
        send_close = connection.send_close

        def an_event_first(*args: Any, **kwargs: Any) -> None:
            # disconnect() has begun: the engine's frame is read during the close.
            routed.clear()
            assert engine.send_raw(_status(sid, "during the close"), session_id=sid) == 1
            assert routed.wait(scaled(5))
            send_close(*args, **kwargs)

        connection.send_close = an_event_first  # type: ignore[method-assign]
        session.disconnect()
        session.connect()
        listener = session.listen(timeout=scaled(5))
        assert engine.send_raw(_status(sid, "after the connect"), session_id=sid) == 1
        # The backlog still keeps what came before the first listen() of the live
        # session (its own SESSION_CONNECTED), and nothing of the last one.
        first, second = next(listener), next(listener)
        assert first.type is E.SESSION_CONNECTED, first
        assert second.data.get("marker") == "after the connect", second
    finally:
        session.disconnect()
