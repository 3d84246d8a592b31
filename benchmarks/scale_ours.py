"""One scale run of ``vectorshift_sync``, shaped like a threaded web server.

    python benchmarks/scale_ours.py '{"n": 1000, "form": "listen", ...}'

Run by ``scale.py`` in a fresh process per run (threads, CPU and peak RSS are the
process's own), with the benchmark engine's environment (``VECTORSHIFT_*``) and agent
ids in ``VS_BENCH_AGENTS``. Public API only, so it measures any version of the library.

* ``n`` sessions are connected (a pool of ``connect_workers`` threads, then joined).
* ``form: listen``: one consumer thread per session, subscribed before any turn starts,
  doing ``for event in session.listen(maxsize=0)`` until its turn ends.
  ``form: callbacks``: ``session.on(None, callback)``; the callback sets a per-session
  ``threading.Event`` at the turn's end.
* Then every session's turn is triggered at once (``session.send("go D")`` for each,
  from the main thread); each streams ``deltas`` deltas and completes. With
  ``cut_every: k``, every k-th session's turn is cut mid-reply by the engine (its
  connection aborted, no close frame) while the reply completes in history.
* The window runs from the first trigger to the last turn's end, bounded by
  ``timeout``. Its figures are printed as one JSON line *before* the sessions are
  disconnected (a slow teardown cannot lose them); a second line gives the teardown.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _process import cpu_by_thread, raise_fd_limit, threads_now  # noqa: E402

from vectorshift_sync import Session, SessionEventType  # noqa: E402
from vectorshift_sync.events import SessionEvent  # noqa: E402

E = SessionEventType
AGENTS: Dict[str, str] = json.loads(os.environ.get("VS_BENCH_AGENTS", "{}"))


class Tally:
    """What one session's consumer saw. Written by one thread only (its consumer or
    its callback dispatcher); read by the main thread after ``done`` or the deadline."""

    __slots__ = (
        "cut",
        "events",
        "deltas",
        "completes",
        "recovered",
        "errors",
        "reconnect_errors",
        "connected",
        "reconnected",
        "ended_at",
        "ended_early",
        "done",
        "story",
        "cpu_s",
    )

    def __init__(self, cut: bool) -> None:
        self.cut = cut
        self.events = 0
        self.deltas = 0
        self.completes = 0
        self.recovered = 0
        self.errors = 0
        self.reconnect_errors = 0
        self.connected = 0
        self.reconnected = 0
        self.ended_at: Optional[float] = None
        self.ended_early = False  # the iteration stopped without a turn end
        self.done = threading.Event()
        self.story: List[str] = []  # every event but the deltas, in order (diagnosis)
        self.cpu_s = 0.0  # the consumer thread's own CPU while it listened (listen form)

    def feed(self, event: SessionEvent) -> bool:
        """Count one event; True at the end of the turn."""
        self.events += 1
        kind = event.type
        if kind is E.MESSAGE_DELTA:
            self.deltas += 1
            return False
        status = event.data.get("status") if kind is E.PARTICIPANT_STATUS else None
        marks = [name for name in ("recovered", "reconnected") if event.data.get(name)]
        self.story.append(
            f"{kind.value}{':' + str(status) if status else ''}"
            f"{''.join(f'({mark})' for mark in marks)}@{self.deltas}"
        )
        if kind is E.MESSAGE_COMPLETE:
            if event.is_from_agent:
                self.completes += 1
                if event.data.get("recovered"):
                    self.recovered += 1
        elif kind is E.ERROR:
            self.errors += 1
            if event.data.get("reconnecting"):
                self.reconnect_errors += 1
        elif kind is E.SESSION_CONNECTED:
            self.connected += 1
            if event.data.get("reconnected"):
                self.reconnected += 1
        elif event.is_turn_end:
            self.ended_at = time.monotonic()
            return True
        return False

    def extra(self) -> int:
        """ERROR and SESSION_CONNECTED events no fault explains. Allowed: the connect's
        own SESSION_CONNECTED (a listener may get it from the backlog) and, for a cut
        session, one drop (ERROR, reconnecting) and one reconnect."""
        allowed = min(self.connected - self.reconnected, 1)
        if self.cut:
            allowed += min(self.reconnect_errors, 1) + min(self.reconnected, 1)
        return self.errors + self.connected - allowed


def _consume(session: Session, tally: Tally, ready: threading.Event, timeout: float) -> None:
    """One web-server request thread: listen until the turn ends."""
    try:
        events = session.listen(maxsize=0, timeout=timeout)
    except Exception:
        tally.ended_early = True
        ready.set()
        tally.done.set()
        return
    ready.set()
    cpu0 = time.thread_time()
    try:
        with events:
            for event in events:
                if tally.feed(event):
                    break
            else:
                tally.ended_early = True
    except Exception:  # SessionTimeoutError: counted as an unfinished turn
        tally.ended_early = True
    finally:
        tally.cpu_s = time.thread_time() - cpu0
        tally.done.set()


class Countdown:
    """Wakes the main thread once, when the last session's turn has ended."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._lock = threading.Lock()
        self.zero = threading.Event()
        if n == 0:
            self.zero.set()

    def tick(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.zero.set()


def _cpu_split(
    before: Optional[Dict[str, float]],
    after: Optional[Dict[str, float]],
    tallies: Optional[List[Tally]],
    total: float,
    events: int,
) -> Optional[Dict[str, float]]:
    """The window's CPU by thread, in µs per delivered event: the I/O thread
    (``vectorshift-io``), the callback pool, the consumer threads (listen form: each
    timed by itself, as they end with their turns), the main thread (the sends), and
    the rest of the process (threads that came and went, such as reconnect workers)."""
    if before is None or after is None or not events:
        return None
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    split = {
        "io": spent.pop("vectorshift-io", 0.0),
        "callbacks": spent.pop("vectorshift-callbacks", 0.0),
        "consumers": sum(t.cpu_s for t in tallies) if tallies else 0.0,
        "main": spent.pop("MainThread", 0.0),
    }
    split["other"] = max(total - sum(split.values()), 0.0)
    return {name: seconds / events * 1e6 for name, seconds in split.items()}


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    n: int = cfg["n"]
    form: str = cfg["form"]
    deltas: int = cfg["deltas"]
    timeout: float = cfg["timeout"]
    cut_every: int = cfg.get("cut_every") or 0
    burst = " burst" if cfg.get("write") == "burst" else ""
    sslopt = {"ca_certs": cfg["ca"]} if cfg.get("ca") else None
    fd_limit = raise_fd_limit()
    if fd_limit < n + 64:
        return {"error": f"the open-files limit ({fd_limit}) is too low for {n} sessions"}
    threads_base = threads_now()

    options: Dict[str, Any] = {"sslopt": sslopt}
    if cfg.get("idle_timeout") is not None:
        options["idle_timeout"] = cfg["idle_timeout"]

    def open_one(_: int) -> Session:
        session = Session(owner_type="agent", owner_id=AGENTS["burst"], **options)
        return session.connect()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=cfg.get("connect_workers", 8)) as pool:
        sessions: List[Session] = list(pool.map(open_one, range(n)))
    connect_s = time.monotonic() - started

    tallies = [Tally(cut_every > 0 and i % cut_every == 0) for i in range(n)]
    countdown = Countdown(n)
    consumers: List[threading.Thread] = []
    if form == "listen":
        readies = [threading.Event() for _ in range(n)]
        for session, tally, ready in zip(sessions, tallies, readies):

            def consume(s: Session = session, t: Tally = tally, r: threading.Event = ready) -> None:
                try:
                    _consume(s, t, r, timeout)
                finally:
                    countdown.tick()

            thread = threading.Thread(target=consume, name="consumer", daemon=True)
            thread.start()
            consumers.append(thread)
        subscribe_deadline = time.monotonic() + 60
        for ready in readies:
            ready.wait(max(subscribe_deadline - time.monotonic(), 0))
    elif form == "callbacks":
        for session, tally in zip(sessions, tallies):

            def on_event(event: SessionEvent, t: Tally = tally) -> None:
                if t.done.is_set():
                    return
                if t.feed(event) or (event.type is E.ERROR and not event.data.get("reconnecting")):
                    if t.ended_at is None:
                        t.ended_early = True
                    t.done.set()
                    countdown.tick()

            session.on(None, on_event)
    else:
        raise ValueError(f"unknown form {form!r}")
    own_threads = len(consumers) + 1  # the consumers and the main thread
    threads_max = threads_now()

    split0 = cpu_by_thread()
    cpu0 = time.process_time()
    trigger = time.monotonic()
    send_errors = 0
    for session, tally in zip(sessions, tallies):
        try:
            session.send(f"go {deltas}" + (" cut" if tally.cut else "") + burst)
        except Exception:
            send_errors += 1
    sent_s = time.monotonic() - trigger
    deadline = trigger + timeout
    # Sample the thread count while waiting (a reconnect storm's threads come and go).
    while not countdown.zero.wait(min(0.05, max(deadline - time.monotonic(), 0))):
        threads_max = max(threads_max, threads_now())
        if time.monotonic() >= deadline:
            break
    threads_max = max(threads_max, threads_now())
    window_end = time.monotonic()
    cpu = time.process_time() - cpu0
    split1 = cpu_by_thread()
    rss_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    ends = [t.ended_at for t in tallies if t.ended_at is not None]
    finished = [t for t in tallies if t.ended_at is not None]
    cut = [t for t in tallies if t.cut]
    whole = [t for t in tallies if not t.cut]
    events = sum(t.events for t in tallies)
    result: Dict[str, Any] = {
        "side": "ours",
        "form": form,
        "n": n,
        "deltas": deltas,
        "connect_s": connect_s,
        "send_s": sent_s,
        "wall_s": max(ends) - trigger if ends else None,
        "window_s": window_end - trigger,
        "timed_out": len(finished) < n and window_end >= deadline,
        "cpu_s": cpu,
        "events": events,
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        # Which threads spent it, in µs per event (see _cpu_split).
        "cpu_split": _cpu_split(split0, split1, tallies if consumers else None, cpu, events),
        "threads_base": threads_base,
        "threads_max": threads_max,
        "own_threads": own_threads,
        "library_threads": threads_max - own_threads,
        "rss_peak_mb": rss_peak_kb / 1024,
        "deltas_expected": len(whole) * deltas,
        "deltas_lost": sum(deltas - t.deltas for t in whole),
        "extra_events": sum(t.extra() for t in tallies),
        "unfinished": n - len(finished),
        "ended_early": sum(t.ended_early for t in tallies),
        "send_errors": send_errors,
        "completes_lost": sum(t.completes == 0 for t in tallies),
        "completes_repeated": sum(max(t.completes - 1, 0) for t in tallies),
        "cut": len(cut),
        "cut_recovered": sum(t.recovered > 0 for t in cut),
        "cut_recovered_twice": sum(t.recovered > 1 for t in cut),
        "cut_reconnected": sum(t.reconnected > 0 for t in cut),
        "cut_unfinished": sum(t.ended_at is None for t in cut),
        "recovered_uncut": sum(t.recovered for t in whole),
        # What the first sessions that lost their reply saw (every event but deltas,
        # "@k": after k deltas), to tell a lost reply from a miscount.
        "lost_stories": [
            {"cut": t.cut, "deltas": t.deltas, "events": t.story}
            for t in tallies
            if t.completes == 0
        ][:5],
        "fd_limit": fd_limit,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()

    teardown = time.monotonic()
    with ThreadPoolExecutor(max_workers=cfg.get("connect_workers", 8)) as pool:
        list(pool.map(lambda s: s.disconnect(), sessions))
    for thread in consumers:
        thread.join(max(teardown + 30 - time.monotonic(), 0))
    return {"teardown_s": time.monotonic() - teardown}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    try:
        result = run(cfg)
    except Exception as exc:  # reported as the row, never a traceback in the table
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
