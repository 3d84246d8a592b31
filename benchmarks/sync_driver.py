"""Benchmark driver for ``vectorshift_sync`` and the raw websocket-client floor.

Run by ``benchmarks/run.py`` with the benchmark engine's environment
(``VECTORSHIFT_*``) and agent ids in ``VS_BENCH_AGENTS`` (JSON). Reads one JSON
command per stdin line, answers one JSON line per command on stdout, so the parent
can interleave repetitions with the official SDK's driver without paying interpreter
start-up per measurement. ``python sync_driver.py scale`` runs the 1,000-session test
once, in a fresh process of its own (threads and RSS are per process).

Commands: ``{"op": "throughput", "variant": V, "n": N}`` with V in ``raw_default``,
``raw``, ``connection``, ``listen``, ``callbacks``; ``{"op": "latency", "variant": V,
"n": N, "rate": R}`` with V in ``listen``, ``callbacks``; ``{"op": "connect",
"count": K}``.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import websocket  # noqa: E402
from _percentiles import latency_summary  # noqa: E402
from engine import raise_fd_limit  # noqa: E402

from vectorshift_sync import Agent  # noqa: E402
from vectorshift_sync._connection import Connection, ConnectionSink  # noqa: E402
from vectorshift_sync._dial import open_socket  # noqa: E402
from vectorshift_sync.events import SessionEvent, SessionEventType  # noqa: E402
from vectorshift_sync.session import Session  # noqa: E402

DELTA = SessionEventType.MESSAGE_DELTA
AGENTS: Dict[str, str] = json.loads(os.environ.get("VS_BENCH_AGENTS", "{}"))
WAIT = 120.0  # no single measurement may hang the run


def _url() -> str:
    return os.environ["VECTORSHIFT_WS_URL"] + "/ws/session"


def _key() -> str:
    return os.environ["VECTORSHIFT_API_KEY"]


class Clock:
    """First and last delta times at the consumer."""

    __slots__ = ("n", "count", "first", "last")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def tick(self) -> bool:
        self.count += 1
        if self.count == 1:
            self.first = time.monotonic()
        if self.count == self.n:
            self.last = time.monotonic()
            return True
        return False

    def result(self, sent: float) -> Dict[str, Any]:
        """``rate``: events over the time from sending ``go`` to the last delta."""
        span = self.last - self.first
        return {
            "events": self.count,
            "rate": self.n / (self.last - sent),
            "first_to_last_rate": (self.n - 1) / span if span > 0 else None,
            "first_event_ms": (self.first - sent) * 1e3,
        }


# --- throughput --------------------------------------------------------------------


def _raw_handshake(ws: Any, owner_id: str) -> str:
    ws.send(json.dumps({"type": "create_session", "object_type": "agent", "object_id": owner_id}))
    while True:
        frame = json.loads(ws.recv())
        if frame.get("type") == "session_created":
            session_id = frame["session_id"]
            break
    ws.send(json.dumps({"type": "connect_session", "session_id": session_id}))
    while json.loads(ws.recv()).get("type") != "connect_session":
        pass
    return str(session_id)


def _is_idle(frame: Dict[str, Any]) -> bool:
    message = frame.get("message")
    return (
        frame.get("type") == "participant_status"
        and isinstance(message, dict)
        and message.get("status") == "Idle"
    )


def throughput_raw(n: int, skip_utf8: bool) -> Dict[str, Any]:
    """The floor: websocket-client's own recv() plus json.loads, nothing else."""
    ws = websocket.create_connection(
        _url(),
        header=[f"Authorization: Bearer {_key()}"],
        suppress_origin=True,
        skip_utf8_validation=skip_utf8,
        timeout=WAIT,
    )
    try:
        session_id = _raw_handshake(ws, AGENTS["flood"])

        def post(text: str) -> None:
            ws.send(json.dumps({"type": "post_message", "session_id": session_id, "content": text}))

        post(f"prep {n}")
        while not _is_idle(json.loads(ws.recv())):
            pass
        clock = Clock(n)
        sent = time.monotonic()
        post("go")
        recv, loads = ws.recv, json.loads
        while True:
            frame = loads(recv())
            if frame.get("type") == "message_delta" and clock.tick():
                break
        return clock.result(sent)
    finally:
        ws.close(timeout=1)


class _Frames(ConnectionSink):
    """Our connection without the session: every message is ``json.loads``-ed on the
    I/O thread and handed to ``handle`` there (no parse_frame, routing or hand-off)."""

    def __init__(self) -> None:
        self.handle: Callable[[Dict[str, Any]], None] = lambda frame: None
        self.ended = threading.Event()

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        handle, loads = self.handle, json.loads
        for raw in messages:
            handle(loads(raw))

    def connection_ended(self, connection: Connection, ending: Any) -> None:
        self.ended.set()

    def keepalive_frame(self) -> Optional[str]:
        return None


def throughput_connection(n: int) -> Dict[str, Any]:
    """Our receive path without the session: the I/O thread's bulk reads, sans-I/O
    framing and json.loads, counted on the I/O thread itself."""
    sink = _Frames()
    frames: "queue.Queue[Dict[str, Any]]" = queue.Queue()
    sink.handle = frames.put
    connection = Connection(
        open_socket(_url(), _key(), timeout=30.0),
        sink,
        max_message_size=None,
        write_timeout=30.0,
        ping_interval=30.0,
        idle_timeout=WAIT,
    )
    connection.start()

    def until(done: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
        while True:
            frame = frames.get(timeout=30.0)
            if done(frame):
                return frame

    try:
        connection.send_text(
            json.dumps(
                {"type": "create_session", "object_type": "agent", "object_id": AGENTS["flood"]}
            )
        )
        session_id = until(lambda f: f.get("type") == "session_created")["session_id"]
        connection.send_text(json.dumps({"type": "connect_session", "session_id": session_id}))

        def post(text: str) -> None:
            connection.send_text(
                json.dumps({"type": "post_message", "session_id": session_id, "content": text})
            )

        post(f"prep {n}")
        until(_is_idle)
        clock = Clock(n)
        done = threading.Event()

        def count(frame: Dict[str, Any]) -> None:
            if frame.get("type") == "message_delta" and clock.tick():
                done.set()

        sink.handle = count
        sent = time.monotonic()
        post("go")
        if not done.wait(WAIT):
            raise TimeoutError(f"the connection saw {clock.count} of {n} deltas")
        return clock.result(sent)
    finally:
        connection.send_close()
        connection.close(5.0)


def _session(kind: str) -> Session:
    return Session(owner_type="agent", owner_id=AGENTS[kind]).connect()


def _prepare(session: Session, n: int) -> None:
    """The engine frames the flood now, so the measured turn only writes it."""
    for _ in session.stream(f"prep {n}", timeout=WAIT):
        pass


def throughput_listen(n: int) -> Dict[str, Any]:
    session = _session("flood")
    try:
        clock = Clock(n)
        _prepare(session, n)
        with session.listen(maxsize=0, timeout=WAIT) as events:
            sent = time.monotonic()
            session.send("go")
            for event in events:
                if event.type is DELTA and clock.tick():
                    break
        return clock.result(sent)
    finally:
        session.disconnect()


def throughput_callbacks(n: int) -> Dict[str, Any]:
    session = _session("flood")
    try:
        clock = Clock(n)
        done = threading.Event()

        def on_event(event: SessionEvent) -> None:
            if event.type is DELTA and clock.tick():
                done.set()

        _prepare(session, n)
        session.on(None, on_event)
        sent = time.monotonic()
        session.send("go")
        if not done.wait(WAIT):
            raise TimeoutError(f"callbacks saw {clock.count} of {n} deltas")
        return clock.result(sent)
    finally:
        session.disconnect()


# --- latency -------------------------------------------------------------------------


def latency_listen(n: int, rate: float) -> Dict[str, Any]:
    session = _session("paced")
    samples: List[float] = []
    try:
        with session.listen(maxsize=0, timeout=WAIT) as events:
            cpu = time.process_time()
            session.send(f"{n} {rate}")
            for event in events:
                if event.type is DELTA:
                    samples.append(time.monotonic() - float(event.delta or 0.0))
                    if len(samples) == n:
                        break
            cpu = time.process_time() - cpu
    finally:
        session.disconnect()
    return latency_summary(samples, cpu)


def latency_callbacks(n: int, rate: float) -> Dict[str, Any]:
    session = _session("paced")
    samples: List[float] = []
    done = threading.Event()

    def on_event(event: SessionEvent) -> None:
        if event.type is DELTA:
            samples.append(time.monotonic() - float(event.delta or 0.0))
            if len(samples) == n:
                done.set()

    try:
        session.on(None, on_event)
        cpu = time.process_time()
        session.send(f"{n} {rate}")
        if not done.wait(WAIT):
            raise TimeoutError(f"callbacks saw {len(samples)} of {n} paced deltas")
        cpu = time.process_time() - cpu
    finally:
        session.disconnect()
    return latency_summary(samples, cpu)


# --- connect -------------------------------------------------------------------------


def connect_times(count: int) -> Dict[str, Any]:
    """create_session() + connect(), warm (after one untimed connect); then
    ``Session(session_id=...).connect()`` of that existing session, as the official
    driver does it (both SDKs wait for its acknowledgement).

    The first twice: with no other session open, so that each connect starts the I/O thread
    (a script's first session), and with one other session open, so that the thread
    is already running (a server with chats open)."""
    agent = Agent.fetch(name="Trivial")
    warm = agent.create_session().connect()
    existing = warm.session_id
    warm.disconnect()

    def timed(make: Callable[[], Session]) -> List[float]:
        times: List[float] = []
        for _ in range(count):
            start = time.perf_counter()
            session = make()
            session.connect()
            times.append(time.perf_counter() - start)
            session.disconnect()
        return times

    alone = timed(agent.create_session)
    # An existing session: connect_session and its acknowledgement only.
    resumed = timed(lambda: Session(session_id=existing))
    keeper = agent.create_session().connect()
    try:
        beside = timed(agent.create_session)
    finally:
        keeper.disconnect()
    return {
        "median_ms": statistics.median(alone) * 1e3,
        "min_ms": min(alone) * 1e3,
        "running_loop_median_ms": statistics.median(beside) * 1e3,
        "resume_median_ms": statistics.median(resumed) * 1e3,
    }


# --- scale ---------------------------------------------------------------------------


def _status() -> Dict[str, int]:
    """Threads and memory of this process, from /proc/self/status."""
    out: Dict[str, int] = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def scale(sessions: int, n: int, rate: float, workers: int = 8) -> Dict[str, Any]:
    """Open ``sessions`` sessions, stream ``n`` deltas into each at once, count them."""
    if raise_fd_limit() < sessions + 256:
        raise RuntimeError(f"the open-files limit is too low for {sessions} sessions")
    base = _status()
    start = time.monotonic()

    def open_one(_: int) -> Any:
        session = Session(owner_type="agent", owner_id=AGENTS["chorus"]).connect()
        return session, session.listen(maxsize=0, timeout=WAIT)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        opened = list(pool.map(open_one, range(sessions)))
    connect_s = time.monotonic() - start
    idle = _status()
    stream_start = time.monotonic()
    cpu_start = time.process_time()
    for session, _ in opened:
        session.send(f"{n} {rate}")
    received = 0
    lost_sessions = 0
    peak_threads = 0
    first_drained: Optional[Dict[str, int]] = None
    for _session, events in opened:
        got = 0
        for event in events:
            if event.type is DELTA:
                got += 1
            elif event.is_turn_end:
                break
            elif event.type is SessionEventType.ERROR and not event.data.get("reconnecting"):
                break  # the session gave up; a reconnect is counted through
        received += got
        lost_sessions += got != n
        if first_drained is None:  # every session has been streaming for the whole turn
            first_drained = _status()
            peak_threads = first_drained["Threads"]
    stream_s = time.monotonic() - stream_start
    cpu_s = time.process_time() - cpu_start
    streaming = first_drained or _status()
    end = _status()
    for _session, events in opened:
        events.close()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda pair: pair[0].disconnect(), opened))
    return {
        "sessions": sessions,
        "expected": sessions * n,
        "received": received,
        "lost": sessions * n - received,
        "sessions_short": lost_sessions,
        "threads_before": base["Threads"],
        "threads_idle": idle["Threads"],
        "threads_streaming": peak_threads,
        "rss_base_mb": base["VmRSS"] / 1024,
        "rss_idle_mb": idle["VmRSS"] / 1024,
        "rss_streaming_mb": streaming["VmRSS"] / 1024,
        "rss_peak_mb": end["VmHWM"] / 1024,
        "connect_s": connect_s,
        "stream_s": stream_s,
        "cpu_s": cpu_s,
        "cpu_us_per_event": cpu_s / max(received, 1) * 1e6,
    }


# --- the command loop ----------------------------------------------------------------

OPS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "throughput:raw_default": lambda c: throughput_raw(c["n"], False),
    "throughput:raw": lambda c: throughput_raw(c["n"], True),
    "throughput:connection": lambda c: throughput_connection(c["n"]),
    "throughput:listen": lambda c: throughput_listen(c["n"]),
    "throughput:callbacks": lambda c: throughput_callbacks(c["n"]),
    "latency:listen": lambda c: latency_listen(c["n"], c["rate"]),
    "latency:callbacks": lambda c: latency_callbacks(c["n"], c["rate"]),
    "connect:": lambda c: connect_times(c["count"]),
    "scale:": lambda c: scale(c["sessions"], c["n"], c["rate"]),
}


def serve() -> int:
    for line in sys.stdin:
        command = json.loads(line)
        key = f"{command['op']}:{command.get('variant', '')}"
        try:
            result = OPS[key](command)
        except Exception as exc:  # reported, never fatal: the table shows the failure
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["scale"]:
        command = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
        print(json.dumps(OPS["scale:"]({"sessions": 1000, "n": 100, "rate": 20, **command})))
        sys.exit(0)
    sys.exit(serve())
