"""One scale run of the official async SDK (``vectorshift`` 0.1.15): ``scale_ours.py``'s
scenario on one asyncio event loop, one task per session.

    .venv-compat/bin/python benchmarks/scale_official.py '{"n": 1000, ...}'

Run by ``scale.py`` with the official SDK's own interpreter, never ours. The SDK is
used as documented: ``listen(maxsize=0)`` (unbounded, as ours), which subscribes on its
first iteration, so every task is seen subscribed before any turn is triggered. TLS:
the SDK connects through aiohttp's default context, which trusts ``SSL_CERT_FILE``
(``scale.py`` points it at the test CA). The official SDK has no reconnect: in a chaos
run a cut session's listener just ends (reported as unfinished turns, replies lost).
Python 3.11 (the SDK's floor).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from typing import Any, Dict, List, Optional

from _process import raise_fd_limit, threads_now
from vectorshift import Session, SessionEventType

E = SessionEventType
AGENTS: Dict[str, str] = json.loads(os.environ.get("VS_BENCH_AGENTS", "{}"))


class Tally:
    def __init__(self, cut: bool) -> None:
        self.cut = cut
        self.events = 0
        self.deltas = 0
        self.completes = 0
        self.errors = 0
        self.connected = 0
        self.ended_at: Optional[float] = None
        self.ended_early = False

    def feed(self, event: Any) -> bool:
        self.events += 1
        kind = event.type
        if kind is E.MESSAGE_DELTA:
            self.deltas += 1
        elif kind is E.MESSAGE_COMPLETE:
            self.completes += 1
        elif kind is E.ERROR:
            self.errors += 1
        elif kind is E.SESSION_CONNECTED:
            self.connected += 1
        elif kind is E.PARTICIPANT_STATUS and event.data.get("status") == "Idle":
            self.ended_at = time.monotonic()
            return True
        return False

    def extra(self) -> int:
        # connect() returns before the connect_session ack: a first SESSION_CONNECTED
        # may reach the listener; any other is unexplained, as is any ERROR.
        return self.errors + max(self.connected - 1, 0)


async def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    n: int = cfg["n"]
    deltas: int = cfg["deltas"]
    timeout: float = cfg["timeout"]
    cut_every: int = cfg.get("cut_every") or 0
    burst = " burst" if cfg.get("write") == "burst" else ""
    fd_limit = raise_fd_limit()
    if fd_limit < n + 64:
        return {"error": f"the open-files limit ({fd_limit}) is too low for {n} sessions"}
    threads_base = threads_now()
    limit = asyncio.Semaphore(cfg.get("connect_workers", 8))

    async def open_one() -> Session:
        async with limit:
            session = Session(owner_type="agent", owner_id=AGENTS["burst"])
            await asyncio.wait_for(session.connect(), 60)
            return session

    started = time.monotonic()
    sessions: List[Session] = list(await asyncio.gather(*(open_one() for _ in range(n))))
    connect_s = time.monotonic() - started

    tallies = [Tally(cut_every > 0 and i % cut_every == 0) for i in range(n)]

    async def consume(session: Session, tally: Tally) -> None:
        stream = session.listen(maxsize=0)
        try:
            async for event in stream:
                if tally.feed(event):
                    return
            tally.ended_early = True
        finally:
            await stream.aclose()

    tasks = [asyncio.ensure_future(consume(s, t)) for s, t in zip(sessions, tallies)]
    for _ in range(1000):  # listen() subscribes on its first iteration: let every task get there
        if all(getattr(s, "_subscriber_queues", None) or t.done() for s, t in zip(sessions, tasks)):
            break
        await asyncio.sleep(0)
    threads_max = threads_now()

    cpu0 = time.process_time()
    trigger = time.monotonic()
    send_errors = 0
    for session, tally in zip(sessions, tallies):
        try:
            await session.send(f"go {deltas}" + (" cut" if tally.cut else "") + burst)
        except Exception:
            send_errors += 1
    sent_s = time.monotonic() - trigger
    deadline = trigger + timeout
    pending = set(tasks)
    while pending and time.monotonic() < deadline:
        _, pending = await asyncio.wait(
            pending, timeout=min(0.05, max(deadline - time.monotonic(), 0))
        )
        threads_max = max(threads_max, threads_now())
    window_end = time.monotonic()
    cpu = time.process_time() - cpu0
    rss_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    finished = [t for t in tallies if t.ended_at is not None]
    whole = [t for t in tallies if not t.cut]
    cut = [t for t in tallies if t.cut]
    events = sum(t.events for t in tallies)
    result: Dict[str, Any] = {
        "side": "official",
        "form": "listen",
        "n": n,
        "deltas": deltas,
        "connect_s": connect_s,
        "send_s": sent_s,
        "wall_s": (max(t.ended_at for t in finished) - trigger) if finished else None,
        "window_s": window_end - trigger,
        "timed_out": len(finished) < n and window_end >= deadline,
        "cpu_s": cpu,
        "events": events,
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        "threads_base": threads_base,
        "threads_max": threads_max,
        "own_threads": 1,
        "library_threads": threads_max - 1,
        "rss_peak_mb": rss_peak_kb / 1024,
        "deltas_expected": len(whole) * deltas,
        "deltas_lost": sum(deltas - t.deltas for t in whole),
        "extra_events": sum(t.extra() for t in whole),
        "unfinished": n - len(finished),
        "ended_early": sum(t.ended_early for t in tallies),
        "send_errors": send_errors,
        "completes_lost": sum(t.completes == 0 for t in tallies),
        "completes_repeated": sum(max(t.completes - 1, 0) for t in tallies),
        "cut": len(cut),
        "cut_recovered": 0,
        "cut_recovered_twice": 0,
        "cut_reconnected": 0,
        "cut_unfinished": sum(t.ended_at is None for t in cut),
        "recovered_uncut": 0,
        "fd_limit": fd_limit,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()

    teardown = time.monotonic()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.gather(*(s.disconnect() for s in sessions), return_exceptions=True)
    return {"teardown_s": time.monotonic() - teardown}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    try:
        result = asyncio.run(run(cfg))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
