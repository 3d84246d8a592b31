"""Where a paced delta's latency goes: ``python benchmarks/latency_stages.py``.

The benchmark engine (``engine.py``, in a process of its own) sends deltas at a
steady 2,000/s, each stamped with the sender's ``time.monotonic()``; one
``listen()`` consumes them. Timestamps taken inside this process at each stage of
the receive path split every delta's latency into: the wake-up (the engine's write,
loopback, and the kernel waking the I/O thread, ``vectorshift-io``, out of its
``select()``), the read and WebSocket framing (``Connection.on_readable`` up to the
hand-off to the session), parsing and routing (``Link.on_messages`` up to the
offer to the listener's queue), and the hand-over to the consumer (its thread
waking and ``next()`` returning). It also checks that every delta was read on the
I/O thread: consumers only ever wait on their own queue. The stages wrap private
parts of the library (the I/O loop's selector, ``Link.on_messages`` and
``Inbound.publish_locked``): a measuring tool, not an example.

Unlike ``breakdown.py`` (hot loops, best of 5) this is the cold path: between two
deltas the CPU idles for half a millisecond, so caches and branch predictors are
cold and every stage costs several times its hot figure.
"""

from __future__ import annotations

import argparse
import os
import selectors
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _percentiles import percentile  # noqa: E402
from run import start_engine, stop_engine  # noqa: E402

from vectorshift_sync import _ioloop  # noqa: E402
from vectorshift_sync._inbound import Inbound  # noqa: E402
from vectorshift_sync._link import Link  # noqa: E402
from vectorshift_sync.events import SessionEventType  # noqa: E402
from vectorshift_sync.session import Session  # noqa: E402

STAGES = ("wake-up", "read + framing", "parse + route", "to the consumer")
DELTA = SessionEventType.MESSAGE_DELTA


class _Stamps:
    """The latest times the I/O thread's stages finished (only that thread writes)."""

    woke = 0.0
    read = 0.0


_stamps = _Stamps()
#: Per delta index: [woke, read, offered, thread name] of the read that routed it. Joined
#: with the consumer's rows only once the session is closed, when every read has
#: finished: the consumer may take an event before its read's routing is done.
_by_index: Dict[int, List[Any]] = {}


class _TimedSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The I/O loop's selector, stamping the moment ``select()`` returns."""

    def select(self, timeout: Optional[float] = None) -> List[Tuple[Any, int]]:
        ready = super().select(timeout)
        _stamps.woke = time.monotonic()
        return ready


def _instrument() -> None:
    # The loop makes its selector when its thread starts (no session is open yet).
    shim = types.SimpleNamespace(**vars(selectors))
    shim.DefaultSelector = _TimedSelector
    _ioloop.selectors = shim  # type: ignore[attr-defined]
    on_messages = Link.on_messages
    publish = Inbound.publish_locked

    def timed_route(self: Any, connection: Any, raws: List[bytes]) -> None:
        # Called by Connection.on_readable once it has read and framed.
        _stamps.read = time.monotonic()
        on_messages(self, connection, raws)

    def noted_publish(self: Any, events: List[Any], wakes: Any = None) -> None:
        publish(self, events, wakes)  # the events are in the listener's queue now
        record = [_stamps.woke, _stamps.read, time.monotonic(), threading.current_thread().name]
        for event in events:
            if event.type is DELTA:
                _by_index[event.data["index"]] = record

    Link.on_messages = timed_route  # type: ignore[method-assign]
    Inbound.publish_locked = noted_publish  # type: ignore[method-assign]


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
    rows: List[List[float]] = []
    on_io = 0
    for index, now, sent in seen:
        woke, read, offered, by = _by_index[index]
        on_io += by == _ioloop.THREAD_NAME
        rows.append([woke - sent, read - woke, offered - read, now - offered, now - sent])
    return {"rows": rows, "on_io": on_io}


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
    print(f"  read on the I/O thread ({_ioloop.THREAD_NAME}): {result['on_io']:,} of {len(rows):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
