"""Where a delta's time goes on our receive path: ``python benchmarks/breakdown.py``.

Single thread, no network: each stage of the I/O thread's work, and then the
consumer's, is timed on the same 20,000 ``message_delta`` frames the benchmark
engine sends (best of 5), so the numbers (garbage collection included) add up to a
per-event budget that the end-to-end figures of ``run.py`` can be read against.

The stages run the library's real code: ``Connection.on_readable`` (reads, then the
framing fast path that slices plain text frames and hands the rest to websockets'
sans-I/O ``Protocol``) over an in-memory socket that hands out the wire bytes 64 KiB
per ``recv()`` (so no system call is timed), with websockets' ``Protocol`` alone for
reference; then ``read_frame`` (``parse_frame`` as the I/O thread calls it), split
into its JSON decode (msgspec) and the event build; then the session's sink and
``Link.on_messages`` (parse, route, fan-out); then ``next()`` on a ``listen()``
iterator. The target line is the I/O thread's cost per delta: framing + parse +
route. These are private parts of the library; the session stages are shown as n/a
if they change.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import flood_payloads  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402

from vectorshift_sync import _protocol as proto  # noqa: E402
from vectorshift_sync._connection import Connection, ConnectionSink, _Framer  # noqa: E402
from vectorshift_sync._ioloop import IOLoop  # noqa: E402
from vectorshift_sync._subscribers import SubscriberQueue  # noqa: E402

N = 20_000
SID = "6b0192833d1ed31d66c7965c"
READ = 1 << 16  # what one recv() returns from a flooded socket


def best_us(run: Callable[[], Any], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


class WireBytes:
    """A stand-in socket: ``recv()`` hands out the wire bytes a chunk at a time, then
    would block (as a drained non-blocking socket does). Nothing else is called while
    the connection lives."""

    def __init__(self, chunks: List[bytes]) -> None:
        self.chunks = chunks
        self.next = 0

    def recv(self, size: int) -> bytes:
        if self.next >= len(self.chunks):
            raise BlockingIOError
        chunk = self.chunks[self.next]
        self.next += 1
        return chunk

    @property
    def left(self) -> bool:
        return self.next < len(self.chunks)

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1


class Each(ConnectionSink):
    """Hands every message to ``handle`` (as the session's sink hands a read's worth)."""

    def __init__(self, handle: Optional[Callable[[bytes], Any]]) -> None:
        self.handle = handle

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        handle = self.handle
        if handle is not None:
            for message in messages:
                handle(message)

    def connection_ended(self, connection: Connection, ending: Any) -> None:
        raise RuntimeError(f"the connection ended: {ending.reason}")

    def keepalive_frame(self) -> Optional[str]:
        return None


def main() -> int:
    payloads = flood_payloads(SID, N)
    blob = b"".join(Frame(Opcode.TEXT, p).serialize(mask=False) for p in payloads)
    chunks = [blob[i : i + READ] for i in range(0, len(blob), READ)]
    loop = IOLoop()  # never started: on_readable is called here, on this thread

    def connection(sink: ConnectionSink) -> Connection:
        return Connection(
            WireBytes(chunks),  # type: ignore[arg-type]
            sink,
            max_message_size=None,
            write_timeout=30.0,
            ping_interval=30.0,
            idle_timeout=60.0,
            loop=loop,
        )

    def reading(sink: ConnectionSink, fast: bool = True) -> Callable[[], None]:
        """What the I/O thread does while the socket has bytes: on_readable, which
        reads, frames, assembles and hands each read's messages to ``sink``."""

        def run() -> None:
            conn = connection(sink)
            if not fast:  # websockets' Protocol alone, as before the fast path
                conn._framer = _Framer(conn._protocol, None, fast=False)
            wire = conn._sock
            while wire.left:  # type: ignore[attr-defined]
                conn.on_readable()

        return run

    framing = best_us(reading(Each(None)))
    rows = [("framing: Connection.on_readable (fast path), 64 KiB reads", framing)]
    rows.append(
        ("  websockets' Protocol alone, for reference", best_us(reading(Each(None), False)))
    )
    messages: List[bytes] = []
    best_us(reading(Each(messages.append)), reps=1)
    if len(messages) != N:
        raise RuntimeError(f"framing gave {len(messages)} of {N} messages")
    decode = best_us(lambda: [proto._loads(m) for m in messages])
    rows.append(("JSON decode: _protocol._loads (msgspec)", decode))
    rows.append(
        ("  json.loads(bytes), for reference", best_us(lambda: [json.loads(m) for m in messages]))
    )
    parse = best_us(lambda: [proto.read_frame(m, SID) for m in messages])
    rows.append(("read_frame: decode + event build", parse))
    rows.append(("  of which event build (field checks, SessionEvent)", parse - decode))
    events = [proto.parse_frame(p, SID).event for p in payloads]
    queue = SubscriberQueue(0)

    def offer() -> None:
        queue.clear()
        for event in events:
            queue.offer(event)  # type: ignore[arg-type]

    rows.append(("SubscriberQueue.offer", best_us(offer)))

    def fill() -> None:
        queue.clear()
        queue.offer_many(events)  # type: ignore[arg-type]

    def take() -> None:
        fill()
        for _ in range(N):
            queue.take(None)

    filling = best_us(fill)
    rows.append(("SubscriberQueue.take", best_us(take) - filling))
    try:
        from vectorshift_sync._link import LinkState
        from vectorshift_sync.session import Session

        session = Session(owner_type="agent", owner_id="x", session_id=SID)
        session._link.state = LinkState.OPEN  # no socket: only the routing is timed
        listener = session.listen(maxsize=0)
        pending = listener._queue
        sink = session._link._sink

        def routing() -> None:
            # As the I/O thread does: each read's frames go through the session's
            # sink to Link.on_messages (parsed, then routed under one lock hold).
            pending.clear()
            conn = connection(sink)
            session._link.connection = conn  # the sink serves the session's connection only
            wire = conn._sock
            while wire.left:  # type: ignore[attr-defined]
                conn.on_readable()

        total = best_us(routing) - framing
        if pending.qsize() != N:
            raise RuntimeError(f"the listener got {pending.qsize()} of {N} events")
        rows.append(("Link.on_messages: read_frame + route + fan-out + offer", total))
        rows.append(("  of which route + fan-out + offer", total - parse))
        rows.append(("receive cost on the I/O thread: framing + parse + route", framing + total))

        def fill_listener() -> None:
            pending.clear()
            pending.offer_many(events)  # type: ignore[arg-type]

        def consume() -> None:
            fill_listener()
            for _ in range(N):
                next(listener)

        rows.append(
            ("next(listener): the consumer's side", best_us(consume) - best_us(fill_listener))
        )
        budget = framing + total + rows[-1][1]
        rows.append(("sum: one delta through the I/O thread and the consumer", budget))
        rows.append((f"  = {1e6 / budget:,.0f} events/s on one core, with no thread hand-off", 0.0))
        session._link.connection = None
        session._link.state = LinkState.CLOSED  # nothing to say goodbye to at exit
    except Exception as exc:  # session internals changed
        rows.append((f"session stages n/a ({type(exc).__name__}: {exc})", float("nan")))
    print(f"per message_delta, single thread, best of 5 over {N:,} frames (us):")
    for label, value in rows:
        print(f"  {label:62} {value:6.2f}" if value else f"  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
