"""The performance paths of issue 6 behave exactly like the plain code they stand for.

* ``_protocol._loads`` (msgspec, with ``json.loads`` for what msgspec refuses) is
  ``json.loads``: same value, same exception and message, for str, bytes and
  bytearray; and msgspec, not ``json``, reads an ordinary frame.
* ``SubscriberQueue`` notifies only when a consumer waits: no wake-up is lost, for
  ``take``, ``wait`` + ``take_now`` (what listeners and the dispatcher use) and plain
  ``queue.Queue.get``.
* ``Transport`` waits with ``poll()`` and reads plain sockets with ``os.read()``: a
  session whose socket descriptor is above ``FD_SETSIZE`` (1024) works, and a flood
  of mixed frame sizes arrives whole and in order across read boundaries.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any, Iterator, List

import pytest
from conftest import scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectorshift_sync import _protocol
from vectorshift_sync._protocol import Parsed, _loads, parse_frame
from vectorshift_sync._subscribers import SubscriberQueue
from vectorshift_sync.events import SessionEvent, SessionEventType
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine, TurnContext

E = SessionEventType


def _outcome(fn: Any, value: Any) -> Any:
    try:
        return ("ok", fn(value))
    except BaseException as exc:  # compare the failure too
        return ("error", type(exc), str(exc))


def _same_as_json(value: Any) -> None:
    expected = _outcome(json.loads, value)
    got = _outcome(_loads, value)
    if expected[0] == "ok" and got[0] == "ok":
        # NaN != NaN: compare the JSON text of both results
        assert json.dumps(got[1], sort_keys=True) == json.dumps(expected[1], sort_keys=True)
        assert type(got[1]) is type(expected[1])
    else:
        assert got == expected


DELTA = '{"type": "message_delta", "session_id": "s", "message_id": "m", "value": "x"}'


@pytest.mark.parametrize(
    "text",
    [
        DELTA,
        DELTA + " ",
        DELTA + "\n\t ",
        " " + DELTA,
        DELTA + "x",
        DELTA + "{}",
        DELTA[:-1],
        "{}",
        "{",
        "",
        " ",
        "[1, 2]",
        '"str"',
        "5",
        "NaN",
        '{"a": NaN, "b": Infinity, "c": -Infinity}',
        '{"big": 123456789012345678901234567890, "f": 1e400, "neg0": -0.0}',
        '{"dup": 1, "dup": 2}',
        '{"s": "\\ud800 lone surrogate"}',
        '{"s": "\\u00e9 \u00e9 \U0001f600"}',
        "\ufeff" + DELTA,
        '{"a": [' * 50 + "]}" * 50,
        '{"type": "x"}\x00',
    ],
)
def test_loads_is_json_loads_for_str_bytes_and_bytearray(text: str) -> None:
    _same_as_json(text)
    raw = text.encode("utf-8", "surrogatepass")
    _same_as_json(raw)
    _same_as_json(bytearray(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf" + DELTA.encode(),  # UTF-8 BOM: json.loads(bytes) accepts it
        DELTA.encode("utf-16"),
        DELTA.encode("utf-16-le"),
        DELTA.encode("utf-32"),
        b'{"s": "\xed\xa0\x80"}',  # an encoded surrogate: surrogatepass
        b'{"s": "\xff"}',  # not UTF-8
        b'{"',
        b"{",
    ],
)
def test_loads_is_json_loads_for_odd_encodings(raw: bytes) -> None:
    _same_as_json(raw)
    _same_as_json(bytearray(raw))


def test_loads_nesting_deeper_than_the_recursion_limit_is_a_recursion_error() -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(RecursionError):
        _loads(deep)


_FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@_FUZZ
@given(st.text())
def test_fuzz_loads_text(text: str) -> None:
    _same_as_json(text)
    _same_as_json("{" + text)
    _same_as_json(bytearray(("{" + text).encode("utf-8", "surrogatepass")))


@_FUZZ
@given(st.binary())
def test_fuzz_loads_bytes(data: bytes) -> None:
    _same_as_json(data)
    _same_as_json(b'{"' + data)
    _same_as_json(bytearray(b'{"' + data))


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=10,
)


@_FUZZ
@given(st.dictionaries(st.text(max_size=5), _values, max_size=5), st.sampled_from(["", " ", "\n"]))
def test_fuzz_loads_objects(value: Any, tail: str) -> None:
    text = json.dumps(value) + tail
    _same_as_json(text)
    _same_as_json(text.encode())
    _same_as_json(bytearray(text.encode()))


# --- msgspec in use ---------------------------------------------------------------------------


def test_ordinary_frames_are_read_by_msgspec_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads was called for an ordinary frame")

    monkeypatch.setattr(_protocol.json, "loads", refuse)
    parsed = parse_frame(DELTA.encode(), "own")
    assert parsed.event is not None and parsed.event.delta == "x"
    with pytest.raises(AssertionError):  # what msgspec refuses still goes to json.loads
        parse_frame(b'{"type": "pong", "x": NaN}', "own")


def test_delta_frames_parse_to_the_plain_result() -> None:
    frame = {"type": "message_delta", "session_id": "s1", "message_id": "m", "index": 2}
    frame["value"] = "hi"
    expected = Parsed(SessionEvent(E.MESSAGE_DELTA, "s1", "m", {"delta": "hi", "index": 2}))
    assert parse_frame(json.dumps(frame), "own") == expected
    assert parse_frame(bytearray(json.dumps(frame).encode()), "own") == expected
    odd = {"type": "message_delta", "session_id": "", "message_id": 5}
    assert parse_frame(json.dumps(odd), "own") == Parsed(
        SessionEvent(E.MESSAGE_DELTA, "own", None, {"delta": None, "index": None})
    )


# --- subscriber queues: notify only when someone waits ---------------------------------------


def _delta(i: int) -> SessionEvent:
    return SessionEvent(E.MESSAGE_DELTA, "s", "m", {"delta": str(i), "index": i})


def _wait_then_take_now(q: SubscriberQueue) -> SessionEvent:
    """One event the way the callbacks' dispatcher takes them."""
    q.wait(None, sliced=False)
    return q.take_now(1)[0]


@pytest.mark.parametrize("how", ["take", "wait_then_take_now", "get", "get_timeout"])
def test_a_waiting_consumer_is_woken_by_each_offer(how: str) -> None:
    q = SubscriberQueue(0)
    takers = {
        "take": lambda: q.take(time.monotonic() + scaled(10)),
        "wait_then_take_now": lambda: _wait_then_take_now(q),
        "get": q.get,
        "get_timeout": lambda: q.get(timeout=scaled(10)),
    }
    take = takers[how]
    got: List[Any] = []

    def consume() -> None:
        for _ in range(200):
            got.append(take())

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for i in range(200):
        if i % 20 == 0:  # let the consumer catch up and really wait now and then
            deadline = time.monotonic() + scaled(5)
            while q._sleepers == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
        q.offer(_delta(i))
    thread.join(scaled(10))
    assert not thread.is_alive(), f"{how} missed a wake-up ({len(got)} of 200)"
    assert got == [_delta(i) for i in range(200)]
    assert q._sleepers == 0


def test_get_keeps_queue_semantics() -> None:
    q = SubscriberQueue(0)
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    q.put(_delta(1))  # plain put() still wakes and feeds get()
    assert q.get(timeout=1) == _delta(1)
    q.offer(_delta(2))
    assert q.get_nowait() == _delta(2)


# --- transport: poll() and os.read() -----------------------------------------------------------


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Push this process's next descriptors above FD_SETSIZE (1024)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1300
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-files hard limit ({hard}) is below {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    fds: List[int] = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            fds.append(fd)
            if fd >= 1100:
                break
        yield
    finally:
        for fd in fds:
            os.close(fd)
        if soft != resource.RLIM_INFINITY and soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("high_descriptors")
def test_a_session_on_a_descriptor_above_fd_setsize_works(local_engine: LocalEngine) -> None:
    agent = local_engine.add_agent("Echo", turn=lambda ctx: ctx.stream("pong " + ctx.text))
    with Session(owner_type="agent", owner_id=agent) as session:
        connection = session._link.connection
        assert connection is not None and connection.fileno() > 1024
        assert session.ask("ping", timeout=scaled(10)).text == "pong ping"


def test_a_flood_of_mixed_sizes_arrives_whole_and_in_order(local_engine: LocalEngine) -> None:
    sizes = [1, 70_000, 3, 200_000, 5] + [40] * 3000 + [65_536, 131_072, 7]

    def turn(ctx: TurnContext) -> None:
        for i, size in enumerate(sizes):
            ctx.delta(str(i % 10) * size, message_id="m")

    agent = local_engine.add_agent("Mixed", turn=turn)
    with Session(owner_type="agent", owner_id=agent) as session:
        listener = session.listen(
            event_types=[E.MESSAGE_DELTA, E.PARTICIPANT_STATUS], maxsize=0, timeout=scaled(20)
        )
        session.send("go")
        got: List[str] = []
        for event in listener:
            if event.is_turn_end:
                break
            if event.delta is not None:
                got.append(event.delta)
        assert [len(d) for d in got] == sizes
        assert all(d == str(i % 10) * len(d) for i, d in enumerate(got))


# --- offer_many: offer() in a loop, under one lock -----------------------------------------


def _snapshot(q: SubscriberQueue) -> List[Any]:
    out: List[Any] = []
    for item in q.drain():
        if isinstance(item, SessionEvent):
            out.append(item)
        else:  # markers: compare what they say
            out.append(
                (
                    type(item).__name__,
                    getattr(item, "count", None),
                    dict(getattr(item, "types", {}) or {}),
                )
            )
    return out


@pytest.mark.parametrize("maxsize", [0, 1, 3, 10])
@pytest.mark.parametrize("types", [None, [E.MESSAGE_DELTA], [E.ERROR, E.PONG]])
@pytest.mark.parametrize("prefill", [0, 2, 5])
def test_offer_many_is_offer_in_a_loop(maxsize: int, types: Any, prefill: int) -> None:
    events = [_delta(i) if i % 3 else SessionEvent(E.PONG, "s", None, {"i": i}) for i in range(12)]
    one, many = SubscriberQueue(maxsize, types), SubscriberQueue(maxsize, types)
    for q in (one, many):
        for i in range(prefill):
            q.offer(_delta(100 + i))
    dropped = sum(not one.offer(event) for event in events)
    assert many.offer_many(events) == dropped
    assert many.overflows == one.overflows
    assert _snapshot(many) == _snapshot(one)


def test_offer_many_after_close_drops_everything_and_wakes_a_waiter() -> None:
    q = SubscriberQueue(0)
    got: List[Any] = []
    thread = threading.Thread(target=lambda: got.append(_wait_then_take_now(q)), daemon=True)
    thread.start()
    deadline = time.monotonic() + scaled(5)
    while q._sleepers == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q.offer_many([_delta(1), _delta(2)]) == 0
    thread.join(scaled(5))
    assert got == [_delta(1)]
    q.close()
    assert q.offer_many([_delta(3)]) == 1


def test_take_now_returns_what_take_would_in_order_and_stops_before_the_end() -> None:
    from vectorshift_sync._subscribers import Ended

    q = SubscriberQueue(3)
    for i in range(6):  # 3 kept, then one overflow marker counting 3 drops
        q.offer(_delta(i))
    batch = q.take_now()
    assert batch[:3] == [_delta(0), _delta(1), _delta(2)]
    assert len(batch) == 4 and batch[3].type is E.ERROR
    assert batch[3].data["dropped_count"] == 3
    q.offer(_delta(7))
    q.offer(_delta(8))
    lost = SessionEvent(E.ERROR, "s", None, {"error": "connection lost"})
    q.close(lost)
    assert q.take_now(1) == [_delta(7)]  # at most `most`
    assert q.take_now() == [_delta(8)]  # stops before the end marker
    with pytest.raises(Ended) as first:
        q.take_now()
    assert first.value.error is lost  # the end's error, once
    with pytest.raises(Ended) as again:
        q.take_now()
    assert again.value.error is None
    assert SubscriberQueue(0).take_now() == []  # nothing queued: no wait


def test_fragmented_messages_are_assembled_across_reads_and_binary_is_skipped() -> None:
    """websockets hands over frames, not messages: ``Connection`` joins continuation
    frames itself (the server may fragment a long message), and drops binary ones."""
    import select
    import socket

    from websockets.frames import Frame, Opcode

    from vectorshift_sync._connection import Connection, ConnectionSink, TransportClosed

    class Collect(ConnectionSink):
        def __init__(self) -> None:
            self.messages: List[bytes] = []
            self.ended: List[TransportClosed] = []

        def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
            self.messages.extend(bytes(m) for m in messages)

        def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
            self.ended.append(ending)

        def keepalive_frame(self) -> None:
            return None

    ours, server = socket.socketpair()
    sink = Collect()
    connection = Connection(
        ours, sink, max_message_size=None, write_timeout=5.0, ping_interval=5.0, idle_timeout=15.0
    )
    try:

        def write(*frames: Frame) -> None:
            server.sendall(b"".join(frame.serialize(mask=False) for frame in frames))
            assert select.select([ours], [], [], scaled(5))[0]
            connection.on_readable()  # what the I/O thread does when the socket is ready

        write(Frame(Opcode.TEXT, b'{"a": "hel', fin=False), Frame(Opcode.CONT, b"lo ", fin=False))
        assert sink.messages == []  # nothing whole yet
        write(
            Frame(Opcode.CONT, b'world"}'),
            Frame(Opcode.BINARY, b"\x00", fin=False),
            Frame(Opcode.CONT, b"\x01"),
            Frame(Opcode.TEXT, b'"whole"'),
        )
        assert sink.messages == [b'{"a": "hello world"}', b'"whole"']
        assert not sink.ended
    finally:
        connection.abort()
        assert connection.finished.wait(scaled(5))
        server.close()
