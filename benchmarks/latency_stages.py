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
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _percentiles import percentile  # noqa: E402
from run import start_engine, stop_engine  # noqa: E402

from vectorshift_sync import _transport  # noqa: E402
from vectorshift_sync.events import SessionEventType  # noqa: E402
from vectorshift_sync.session import Session  # noqa: E402

STAGES = ("wake-up", "read + framing", "parse + route", "to the consumer")


class _Stamps(threading.local):
    """The latest time each stage finished, per thread (the reader's and the
    consumer's reads must not overwrite each other's stamps)."""

    def __init__(self) -> None:
        self.woke = self.read = self.routed = 0.0


_stamps = _Stamps()
_last: Dict[str, Any] = {}  # the stamps of the read that routed the newest event


def _instrument() -> None:
    wait_readable = _transport.Transport.wait_readable
    read = _transport.Transport.read
    on_messages = Session._on_messages

    def timed_wait(self: Any, timeout: float, poller: Optional[Any] = None) -> bool:
        ready = wait_readable(self, timeout, poller)
        _stamps.woke = time.monotonic()
        return ready

    def timed_read(self: Any) -> Optional[List[bytes]]:
        messages = read(self)
        _stamps.read = time.monotonic()
        return messages

    def timed_route(self: Any, raws: List[bytes]) -> None:
        on_messages(self, raws)
        _last.update(
            woke=_stamps.woke,
            read=_stamps.read,
            routed=time.monotonic(),
            by=threading.get_ident(),
        )

    _transport.Transport.wait_readable = timed_wait  # type: ignore[method-assign]
    _transport.Transport.read = timed_read  # type: ignore[method-assign]
    Session._on_messages = timed_route  # type: ignore[method-assign]


def measure(agent_id: str, n: int, rate: float) -> Dict[str, Any]:
    rows: List[List[float]] = []
    own = 0
    me = threading.get_ident()
    with Session(owner_type="agent", owner_id=agent_id) as session:
        with session.listen(maxsize=0, timeout=60) as events:
            session.send(f"{n} {rate}")
            for event in events:
                if event.type is not SessionEventType.MESSAGE_DELTA:
                    continue
                now = time.monotonic()
                sent = float(event.delta or 0.0)
                stamps = dict(_last)
                own += stamps["by"] == me
                rows.append(
                    [
                        stamps["woke"] - sent,
                        stamps["read"] - stamps["woke"],
                        stamps["routed"] - stamps["read"],
                        now - stamps["routed"],
                        now - sent,
                    ]
                )
                if len(rows) == n:
                    break
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
