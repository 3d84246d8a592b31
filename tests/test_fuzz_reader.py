"""Fuzz the live reader: junk frames from the engine never kill it.

The parser alone is fuzzed in ``tests/test_protocol.py``. Here hypothesis-generated
text and JSON go through a real socket into a connected session (``engine.send_raw``),
and after each one a marker frame proves the reader is still routing: it must come
out of ``listen()``. At the end a normal turn still streams. Every wait is bounded.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
from conftest import INBOUND_FRAME_TYPES, scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectorshift_sync import SessionEventType
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine, TurnContext

pytestmark = pytest.mark.timeout(60)

E = SessionEventType
REPLY = "still streaming after the junk"

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# A client frame type arriving from the server is junk too.
_FRAME_TYPES = [*INBOUND_FRAME_TYPES, "ping_session"]
_KEYS = [
    "type",
    "session_id",
    "success",
    "error",
    "message",
    "messages",
    "value",
    "message_id",
    "content",
    "status",
    "sender",
    "id",
    "data",
    "delta",
    "index",
]

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)  # UTF-8 only
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)  # json.dumps writes NaN, Infinity
    | st.text(max_size=20)
    | st.sampled_from(["Complete", "Idle", "Processing", "streaming", "text", "tool_call"])
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)


def _frames(session_id: str) -> st.SearchStrategy[Dict[str, Any]]:
    """Objects shaped like server frames: a known type, this or another session, odd
    fields (including a nested ``message`` object, where the content lives)."""
    message = st.dictionaries(st.sampled_from(_KEYS), _json, max_size=6)
    return st.builds(
        lambda kind, sid, fields, inner: {
            **fields,
            "type": kind,
            **({} if sid is None else {"session_id": sid}),
            **({} if inner is None else {"message": inner}),
        },
        st.sampled_from(_FRAME_TYPES) | st.text(max_size=12),
        st.sampled_from([session_id, None, "0" * 24, 42]),
        st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5),
        st.none() | message,
    )


_nested = st.integers(min_value=1, max_value=100_000).flatmap(
    lambda depth: st.sampled_from(
        ["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth]
    )
)


def _reply(ctx: TurnContext) -> None:
    ctx.stream(REPLY, chunk=4)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEngine]:
    with LocalEngine() as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def session(engine: LocalEngine) -> Iterator[Session]:
    agent_id = engine.add_agent("Fuzzed", turn=_reply)
    with Session(owner_type="agent", owner_id=agent_id) as opened:
        yield opened


class _Injector:
    """Sends one junk frame, then a marker, and waits for the marker to come out."""

    def __init__(self, engine: LocalEngine, session: Session) -> None:
        self.engine, self.session = engine, session
        self.sid = session.session_id or ""
        self.count = 0

    def __call__(self, junk: str) -> None:
        self.count += 1
        marker = {"type": "pong", "session_id": self.sid, "fuzz_marker": self.count}
        with self.session.listen(timeout=scaled(5)) as events:
            assert self.engine.send_raw(junk, session_id=self.sid) == 1
            assert self.engine.send_raw(marker, session_id=self.sid) == 1
            for event in events:  # SessionTimeoutError here means the reader stopped
                if event.type is E.PONG and event.data.get("fuzz_marker") == self.count:
                    break
            else:
                raise AssertionError(f"listen() ended after junk {junk[:200]!r}")
        assert self.session.is_connected

    def finish(self) -> None:
        """A normal turn still streams, on the same connection (no reconnect hid a drop)."""
        assert self.count > 0
        events = list(self.session.stream("hello", timeout=scaled(10)))
        assert "".join(e.delta or "" for e in events if e.type is E.MESSAGE_DELTA) == REPLY
        assert [c.index for c in self.engine.connections] == [0]


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def test_arbitrary_text_never_kills_the_reader(engine: LocalEngine, session: Session) -> None:
    inject = _Injector(engine, session)

    @_SETTINGS
    @given(_text | _nested)
    def junk_text(text: str) -> None:
        inject(text)

    junk_text()
    inject.finish()


def test_arbitrary_json_and_frame_shaped_objects_never_kill_the_reader(
    engine: LocalEngine, session: Session
) -> None:
    inject = _Injector(engine, session)

    @_SETTINGS
    @given(_json | _frames(inject.sid))
    def junk_json(value: Any) -> None:
        inject(_dumps(value))

    junk_json()
    inject.finish()
