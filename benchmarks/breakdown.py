"""Where a delta's time goes on our receive path: ``python benchmarks/breakdown.py``.

Single thread, no network: each stage of the reader's work is timed on the same
20,000 ``message_delta`` frames the benchmark engine sends (best of 5), so the
numbers (garbage collection included) add up to a per-event budget that the
end-to-end figures of ``run.py`` can be read against. The session stages call
private methods of ``Session`` and are shown as n/a if those change.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import flood_payloads  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.protocol import Protocol, Side, State  # noqa: E402

from vectorshift_sync import _protocol as proto  # noqa: E402
from vectorshift_sync._subscribers import SubscriberQueue  # noqa: E402

N = 20_000
SID = "6b0192833d1ed31d66c7965c"


def best_us(run: Callable[[], Any], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


def main() -> int:
    payloads = flood_payloads(SID, N)
    blob = b"".join(Frame(Opcode.TEXT, p).serialize(mask=False) for p in payloads)
    chunks = [blob[i : i + 65536] for i in range(0, len(blob), 65536)]

    def pipeline(handle: Callable[[bytearray], Any]) -> Callable[[], None]:
        """Frame each chunk, then hand each frame to ``handle`` while it is hot,
        as the reader thread does."""

        def run() -> None:
            protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
            for chunk in chunks:
                protocol.receive_data(chunk)
                for frame in protocol.events_received():
                    handle(frame.data)

        return run

    framing = best_us(pipeline(lambda data: None))
    rows = [("websockets framing (sans-I/O Protocol, 64 KiB chunks)", framing)]
    rows.append(("json.loads(bytearray), for reference", best_us(pipeline(json.loads)) - framing))
    rows.append(("  _protocol._loads (same result)", best_us(pipeline(proto._loads)) - framing))
    parse = best_us(pipeline(lambda data: proto.parse_frame(data, SID))) - framing
    rows.append(("parse_frame (includes _loads)", parse))
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
        from vectorshift_sync.session import Session

        session = Session(owner_type="agent", owner_id="x", session_id=SID)
        session._state = "open"  # no socket: only the routing is timed
        listener = session.listen(maxsize=0)
        pending = listener._queue

        def reader() -> None:
            # As the reader (or a consumer holding the read lease) does: one
            # read's frames are parsed, then routed under one lock hold.
            pending.clear()
            protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
            for chunk in chunks:
                protocol.receive_data(chunk)
                session._on_messages([frame.data for frame in protocol.events_received()])

        total = best_us(reader) - framing
        rows.append(("Session._on_messages: parse_frame + route + fan-out + offer", total))
        rows.append(("  of which route + fan-out + offer", total - parse))

        def consume() -> None:
            fill_listener()
            for _ in range(N):
                next(listener)

        def fill_listener() -> None:
            pending.clear()
            listener._buffer, listener._position = [], 0
            pending.offer_many(events)  # type: ignore[arg-type]

        rows.append(
            ("next(listener): the consumer's side", best_us(consume) - best_us(fill_listener))
        )
        budget = framing + total + rows[-1][1]
        rows.append(("sum: one delta through the reader and the consumer", budget))
        rows.append((f"  = {1e6 / budget:,.0f} events/s on one core, with no thread hand-off", 0.0))
    except Exception as exc:  # session internals changed
        rows.append((f"session stages n/a ({type(exc).__name__}: {exc})", float("nan")))
    print(f"per message_delta, single thread, best of 5 over {N:,} frames (us):")
    for label, value in rows:
        print(f"  {label:62} {value:6.2f}" if value else f"  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
