"""Where a paced delta's latency goes: ``python benchmarks/latency_stages.py``.

The benchmark engine (``engine.py``, in a process of its own) sends deltas at a
steady 2,000/s, each stamped with the sender's ``time.monotonic()``; one
``listen()`` consumes them. Timestamps taken inside this process at each stage of
the receive path split every delta's latency into: the wake-up (the engine's write,
loopback, and the kernel waking whichever thread waits on the socket), the read and
WebSocket framing, parsing and routing, and the hand-over to the consumer. It also
counts how many deltas were read by the consuming thread itself (the read lease)
rather than handed over by the reader thread. The stages wrap private methods of
``Session`` and ``Transport``: a measuring tool, not an example.

Unlike ``breakdown.py`` (hot loops, best of 5) this is the cold path: between two
deltas the CPU idles for half a millisecond, so caches and branch predictors are
cold and every stage costs several times its hot figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _percentiles import percentile  # noqa: E402
from run import start_engine, stop_engine  # noqa: E402

from vectorshift_sync import _transport  # noqa: E402
from vectorshift_sync.events import SessionEventType  # noqa: E402
from vectorshift_sync.session import Session  # noqa: E402

STAGES = ("wake-up", "read + framing", "parse + route", "to the consumer")
DELTA = SessionEventType.MESSAGE_DELTA


class _Stamps(threading.local):
    """The latest time each stage finished, per thread (the reader's and the
    consumer's reads must not overwrite each other's stamps), and the record of
    the read being routed on this thread."""

    def __init__(self) -> None:
        self.woke = self.read = 0.0
        self.record: List[Any] = []


_stamps = _Stamps()
#: Per delta index: [woke, read, routed, thread] of the read that routed it. Joined
#: with the consumer's rows only once the session is closed, when every read has
#: finished: a consumer on another thread may take an event before its read is done.
_by_index: Dict[int, List[Any]] = {}


def _instrument() -> None:
    wait_readable = _transport.Transport.wait_readable
    read = _transport.Transport.read
    on_messages = Session._on_messages
    fan_out = Session._fan_out_many

    def timed_wait(self: Any, timeout: float, poller: Optional[Any] = None) -> bool:
        ready = wait_readable(self, timeout, poller)
        _stamps.woke = time.monotonic()
        return ready

    def timed_read(self: Any) -> Optional[List[bytes]]:
        messages = read(self)
        _stamps.read = time.monotonic()
        return messages

    def timed_route(self: Any, raws: List[bytes]) -> None:
        record = [_stamps.woke, _stamps.read, 0.0, threading.get_ident()]
        _stamps.record = record
        on_messages(self, raws)
        record[2] = time.monotonic()

    def noted_fan_out(self: Any, events: List[Any]) -> None:
        for event in events:
            if event.type is DELTA:
                _by_index[event.data["index"]] = _stamps.record
        fan_out(self, events)

    _transport.Transport.wait_readable = timed_wait  # type: ignore[method-assign]
    _transport.Transport.read = timed_read  # type: ignore[method-assign]
    Session._on_messages = timed_route  # type: ignore[method-assign]
    Session._fan_out_many = noted_fan_out  # type: ignore[method-assign]


def measure(agent_id: str, n: int, rate: float) -> Dict[str, Any]:
    seen: List[Tuple[int, float, float]] = []  # (index, taken by the consumer, sent)
    with Session(owner_type="agent", owner_id=agent_id) as session:
        with session.listen(maxsize=0, timeout=60) as events:
            session.send(f"{n} {rate}")
            for event in events:
                if event.type is DELTA:
                    seen.append((event.data["index"], time.monotonic(), float(event.delta or 0.0)))
                    if len(seen) == n:
                        break
    me = threading.get_ident()
    rows: List[List[float]] = []
    own = 0
    for index, now, sent in seen:
        woke, read, routed, by = _by_index[index]
        own += by == me
        rows.append([woke - sent, read - woke, routed - read, now - routed, now - sent])
    return {"rows": rows, "own": own}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6000, help="deltas (6,000)")
    parser.add_argument("--rate", type=float, default=2000.0, help="deltas/s (2,000)")
    args = parser.parse_args()
    with open(os.devnull, "w") as discard:
        engine, info = start_engine(discard)
        try:
            os.environ.update(info["env"])
            _instrument()
            result = measure(info["agents"]["paced"], args.n, args.rate)
        finally:
            stop_engine(engine)
    rows = result["rows"]
    print(f"{len(rows):,} deltas at {args.rate:,.0f}/s, one listen(), microseconds")
    print(f"  {'stage':34} {'p50':>7} {'p90':>7} {'p99':>7}")
    for i, stage in enumerate(STAGES + ("total: server send -> consumer",)):
        column = sorted(row[i] for row in rows)
        p50, p90, p99 = (percentile(column, q) * 1e6 for q in (0.5, 0.9, 0.99))
        print(f"  {stage:34} {p50:7.1f} {p90:7.1f} {p99:7.1f}")
    print(f"  read by the consuming thread itself: {result['own']:,} of {len(rows):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
