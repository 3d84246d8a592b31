"""The framing fast path agrees with websockets' ``Protocol`` on every stream.

``_connection._Framer`` slices complete, unfragmented, unmasked text and binary frames
out of each read itself and hands everything else to websockets. Here hypothesis
builds random streams of valid and invalid frames (text, binary, fragmented messages,
control frames inside them, close frames good and bad, masked frames, oversized
frames, unknown opcodes, RSV bits, stray continuations, garbage), cuts them at random
read boundaries, and feeds them both to the framer and to websockets alone
(``fast=False``: what the connection did before the fast path). After every read the
two must have produced the same messages, and at the end the same state, the same
close frame received and sent, the same replies and the same error class.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import struct
from typing import Any, List, Optional, Tuple

import pytest
from conftest import make_connection, scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close
from websockets.protocol import Protocol, Side, State

from vectorshift_sync._connection import TransportClosed, _Framer

_SETTINGS = settings(
    max_examples=int(os.environ.get("VS_FRAMING_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def _frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = False,
    wide: int = 0,
) -> bytes:
    """Raw frame bytes, valid or not (websockets' serializer refuses invalid ones).

    ``wide`` forces the 16-bit (1) or 64-bit (2) length form for a short payload."""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if length < 126 and not wide:
        head += bytes([bit | length])
    elif length < 65536 and wide != 2:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if mask:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


_small = st.binary(max_size=40)
_sizes = st.sampled_from([0, 1, 125, 126, 127, 200, 400, 1000, 1001, 65535, 65536, 70_000])
_payload = st.one_of(
    _small,
    st.builds(lambda n, b: bytes([b]) * n, _sizes, st.integers(0x20, 0x7E)),
    st.just(b'{"type": "message_delta", "session_id": "s", "value": "tok "}'),
)
_control = st.builds(
    lambda op, data: _frame(op, data), st.sampled_from([PING, PONG]), st.binary(max_size=125)
)


def _fragmented(opcode: int) -> Any:
    def build(parts: List[bytes], controls: List[Optional[bytes]]) -> bytes:
        out = b""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            out += _frame(opcode if i == 0 else CONT, part, fin=last)
            if not last and controls[i % len(controls)] is not None:
                out += controls[i % len(controls)]  # type: ignore[operator]
        return out

    return st.builds(
        build,
        st.lists(_payload, min_size=1, max_size=4),
        st.lists(st.none() | _control, min_size=1, max_size=3),
    )


_close = st.one_of(
    st.just(_frame(CLOSE, b"")),
    st.builds(
        lambda code, reason: _frame(CLOSE, Close(code, reason).serialize()),
        st.sampled_from([1000, 1001, 1008, 1011, 3000, 4999]),
        st.text(max_size=20),
    ),
    st.builds(lambda data: _frame(CLOSE, data), st.binary(max_size=10)),  # 1-byte, bad codes
)

_invalid = st.one_of(
    st.builds(lambda op, data: _frame(op, data), st.sampled_from([3, 4, 5, 6, 7, 11, 15]), _small),
    st.builds(
        lambda op, data, rsv: _frame(op, data, rsv=rsv),
        st.sampled_from([TEXT, BINARY, PING]),
        _small,
        st.integers(1, 7),
    ),
    st.builds(lambda op, data: _frame(op, data, mask=True), st.sampled_from([TEXT, PING]), _small),
    st.builds(lambda data: _frame(PING, data), st.binary(min_size=126, max_size=130)),  # too long
    st.builds(lambda data: _frame(PONG, data, fin=False), _small),  # fragmented control
    st.builds(lambda data, fin: _frame(CONT, data, fin=fin), _small, st.booleans()),  # stray
    st.builds(lambda data: _frame(TEXT, data, fin=False), _small),  # a message left open
    st.binary(min_size=1, max_size=12),  # garbage
)

_element = st.one_of(
    st.builds(
        lambda data, wide: _frame(TEXT, data, wide=wide), _payload, st.sampled_from([0, 0, 1, 2])
    ),
    st.builds(lambda data: _frame(BINARY, data), _payload),
    _control,
    _fragmented(TEXT),
    _fragmented(BINARY),
    _close,
    _invalid,
)


@st.composite
def _streams(draw: Any) -> Tuple[List[bytes], Optional[int], bool]:
    """Frames (mostly valid, a few invalid or a close), cut into reads."""
    elements = draw(st.lists(_element, min_size=1, max_size=12))
    blob = b"".join(elements)
    cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    if draw(st.booleans()):  # also cut right at frame boundaries and inside headers
        offset = 0
        for element in elements:
            cuts.append(offset + min(len(element), draw(st.integers(0, 11))))
            offset += len(element)
        cuts.sort()
    reads, last = [], 0
    for cut in cuts + [len(blob)]:
        if cut > last:
            reads.append(blob[last:cut])
            last = cut
    max_size = draw(st.sampled_from([None, 1000, 65536, 70_000, 2**20]))
    return reads, max_size, draw(st.booleans())


def _decode_writes(writes: List[bytes]) -> List[Any]:
    """What the client sent (pongs, close replies): masked at random, so read them back
    through a server-side Protocol."""
    server = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    sent: List[Any] = []
    for chunk in writes:
        if chunk == b"":
            sent.append("EOF")
            continue
        server.receive_data(chunk)
        sent.extend((f.opcode, bytes(f.data), f.fin) for f in server.events_received())
    return sent


class _Side:
    def __init__(self, max_size: Optional[int], fast: bool) -> None:
        self.protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=max_size)
        self.framer = _Framer(self.protocol, max_size, fast=fast)
        self.writes: List[bytes] = []

    def read(self, data: bytes) -> List[bytes]:
        out: List[bytes] = []
        self.framer.receive(data, out)
        self.writes.extend(self.protocol.data_to_send())
        return [bytes(m) for m in out]

    def eof(self) -> List[bytes]:
        out: List[bytes] = []
        self.framer.receive_eof(out)
        self.writes.extend(self.protocol.data_to_send())
        return [bytes(m) for m in out]

    def outcome(self) -> Any:
        p = self.protocol
        close = p.close_rcvd
        exc = p.parser_exc
        return (
            p.state,
            None if close is None else (close.code, close.reason),
            None if p.close_sent is None else (p.close_sent.code, p.close_sent.reason),
            type(exc),
            None if exc is None else str(exc),
            _decode_writes(self.writes),
        )


def _check(reads: List[bytes], max_size: Optional[int], eof: bool) -> None:
    fast, alone = _Side(max_size, True), _Side(max_size, False)
    for i, data in enumerate(reads):
        assert fast.read(data) == alone.read(data), f"read {i} of {len(reads)}"
        assert fast.protocol.state is alone.protocol.state, f"read {i}"
    if eof:
        assert fast.eof() == alone.eof()
    assert fast.outcome() == alone.outcome()


@_SETTINGS
@given(_streams())
def test_the_fast_path_and_websockets_alone_agree(stream: Any) -> None:
    _check(*stream)


def test_examples_that_exercise_each_hand_over() -> None:
    delta = b'{"type": "message_delta", "value": "x"}'
    cases = [
        [_frame(TEXT, delta) * 3],
        [_frame(TEXT, delta)[:1], _frame(TEXT, delta)[1:]],  # a header cut in two
        [
            _frame(TEXT, b"a" * 70_000)[:5],
            _frame(TEXT, b"a" * 70_000)[5:40_000],
            _frame(TEXT, b"a" * 70_000)[40_000:],
        ],
        [
            _frame(TEXT, b"ab", fin=False)
            + _frame(PING, b"p")
            + _frame(CONT, b"c")
            + _frame(TEXT, delta)
        ],
        [_frame(TEXT, delta) + _frame(CLOSE, Close(1000, "bye").serialize()) + _frame(TEXT, delta)],
        [_frame(TEXT, delta) + _frame(TEXT, delta, rsv=4) + _frame(TEXT, delta)],
        [_frame(TEXT, delta) + _frame(TEXT, delta, mask=True)],
        [_frame(TEXT, delta) + _frame(5, b"")],
        [_frame(TEXT, b"x" * 2000)],  # over max_size=1000
        [_frame(TEXT, b"x" * 600, fin=False) + _frame(CONT, b"y" * 600)],  # message over 1000
        [_frame(TEXT, b"x", fin=False), _frame(TEXT, delta)],  # expected a continuation
        # The third fragment's header alone takes the message over 1000: websockets
        # fails on it before its payload is in.
        [
            _frame(TEXT, b"x" * 400, fin=False)
            + _frame(CONT, b"y" * 400, fin=False)
            + _frame(CONT, b"z" * 400)[:4]
        ],
    ]
    for reads in cases:
        for eof in (False, True):
            _check(reads, 1000, eof)
            _check(reads, None, eof)


def test_the_fast_path_slices_and_the_protocol_sees_no_plain_frame() -> None:
    """The point of the fast path: plain text frames never reach websockets."""
    protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    fed: List[bytes] = []
    original = protocol.receive_data

    def spy(data: bytes) -> None:
        fed.append(bytes(data))
        original(data)

    protocol.receive_data = spy  # type: ignore[method-assign]
    framer = _Framer(protocol, None)
    out: List[bytes] = []
    framer.receive(_frame(TEXT, b"a") + _frame(PING, b"p") + _frame(TEXT, b"b"), out)
    assert out == [b"a", b"b"]
    assert fed == [_frame(PING, b"p")]
    assert len(protocol.data_to_send()) == 1  # the pong


def test_a_non_utf8_or_malformed_frame_is_skipped_with_a_warning_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the real receive path (Connection -> Session): each bad frame is
    logged and skipped, and the frames after it, in the same read, still arrive."""
    from vectorshift_sync._ioloop import IOLoop
    from vectorshift_sync._link import LinkState
    from vectorshift_sync.events import SessionEventType
    from vectorshift_sync.session import Session

    sid = "6b0192833d1ed31d66c7965c"

    def pong(n: int) -> bytes:
        return json.dumps({"type": "pong", "session_id": sid, "n": n}).encode()

    wire = b"".join(
        [
            _frame(TEXT, b'{"type": "pong", "x": "\xff\xfe"}'),  # not UTF-8 (fast path)
            _frame(TEXT, pong(1)),
            _frame(TEXT, b'{"type": "pong", "n": '),  # not JSON
            _frame(TEXT, b'{"type": "pong", "n": 2, "x": NaN}'),  # json.loads reads it
            _frame(TEXT, b'{"type": "po', fin=False) + _frame(CONT, b'ng", "x": "\xc3\x28"}'),
            _frame(TEXT, pong(3)),
        ]
    )
    caplog.set_level(logging.WARNING, logger="vectorshift_sync")
    ours, server = socket.socketpair()
    session = Session(owner_type="agent", owner_id="x", session_id=sid)
    session._link.state = LinkState.OPEN  # no engine: the connection is this socket pair
    connection = make_connection(
        ours,
        session._link._sink,
        ping_interval=30.0,
        idle_timeout=60.0,
        loop=IOLoop(),  # never started: on_readable is called here
    )
    session._link.connection = connection
    try:
        listener = session.listen(event_types=[SessionEventType.PONG], timeout=scaled(5))
        server.sendall(wire)
        assert select.select([ours], [], [], scaled(5))[0]
        connection.on_readable()
        assert [next(listener).data["n"] for _ in range(3)] == [1, 2, 3]
        skipped = [r for r in caplog.records if "skipping a malformed frame" in r.getMessage()]
        assert len(skipped) == 3, caplog.text
        assert all(r.levelno == logging.WARNING for r in skipped)
        assert not connection.closed
    finally:
        session._link.connection = None
        session._link.state = LinkState.CLOSED
        connection._finish(TransportClosed("test over", clean=True))
        server.close()
