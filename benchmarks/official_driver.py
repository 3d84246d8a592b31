"""Benchmark driver for the official async ``vectorshift`` SDK (0.1.15).

Run by the official SDK's own interpreter (``.venv-compat/bin/python``), never by
ours, with the benchmark engine's environment (``VECTORSHIFT_*``) and agent ids in
``VS_BENCH_AGENTS``. Reads one JSON command per stdin line and answers one JSON line
per command, like ``sync_driver.py``: ``{"op": "throughput", "variant": "listen",
"n": N}``, ``{"op": "latency", "variant": "listen", "n": N, "rate": R}``,
``{"op": "connect", "count": K}``.

The SDK is used as documented. ``listen(maxsize=0)`` (unbounded, as in our runs)
because with the default 1024 a flood outruns the consumer and events are dropped.
``listen()`` subscribes on its first iteration (PROTOCOL.md §6.4), so the consumer
task is started and seen subscribed before the turn is sent (D5). Python 3.9 syntax.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

from _percentiles import latency_summary
from vectorshift import Agent, Session, SessionEventType

DELTA = SessionEventType.MESSAGE_DELTA
AGENTS: Dict[str, str] = json.loads(os.environ.get("VS_BENCH_AGENTS", "{}"))
WAIT = 120.0


async def _subscribed(session: Session, consumer: "asyncio.Task[Any]") -> None:
    # listen() registers its queue on the first iteration: let the task get there.
    for _ in range(1000):
        if getattr(session, "_subscriber_queues", None) or consumer.done():
            return
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def _open(kind: str) -> Session:
    session = Session(owner_type="agent", owner_id=AGENTS[kind])
    await asyncio.wait_for(session.connect(), 30)
    return session


async def throughput(n: int) -> Dict[str, Any]:
    session = await _open("flood")
    state = {"count": 0, "first": 0.0, "last": 0.0}

    async def consume() -> None:
        stream = session.listen(maxsize=0)
        try:
            async for event in stream:
                if event.type is DELTA:
                    state["count"] += 1
                    if state["count"] == 1:
                        state["first"] = time.monotonic()
                    if state["count"] == n:
                        state["last"] = time.monotonic()
                        return
        finally:
            await stream.aclose()  # D9

    async def prepared() -> None:
        stream = session.listen(maxsize=0)
        try:
            async for event in stream:
                if (
                    event.type is SessionEventType.PARTICIPANT_STATUS
                    and event.data.get("status") == "Idle"
                ):
                    return
        finally:
            await stream.aclose()

    try:
        # The engine frames the flood in a first turn; the measured one only writes it.
        preparing = asyncio.ensure_future(prepared())
        await _subscribed(session, preparing)
        await session.send(f"prep {n}")
        await asyncio.wait_for(preparing, WAIT)
        consumer = asyncio.ensure_future(consume())
        await _subscribed(session, consumer)
        sent = time.monotonic()
        await session.send("go")
        await asyncio.wait_for(consumer, WAIT)
    finally:
        await session.disconnect()
    span = state["last"] - state["first"]
    return {
        "events": state["count"],
        "rate": n / (state["last"] - sent),
        "first_to_last_rate": (n - 1) / span if span > 0 else None,
        "first_event_ms": (state["first"] - sent) * 1e3,
    }


async def latency(n: int, rate: float) -> Dict[str, Any]:
    session = await _open("paced")
    samples: List[float] = []

    async def consume() -> None:
        stream = session.listen(maxsize=0)
        try:
            async for event in stream:
                if event.type is DELTA:
                    samples.append(time.monotonic() - float(event.delta or 0.0))
                    if len(samples) == n:
                        return
        finally:
            await stream.aclose()

    try:
        consumer = asyncio.ensure_future(consume())
        await _subscribed(session, consumer)
        cpu = time.process_time()
        await session.send(f"{n} {rate}")
        await asyncio.wait_for(consumer, WAIT)
        cpu = time.process_time() - cpu
    finally:
        await session.disconnect()
    return latency_summary(samples, cpu)


async def connect_times(count: int) -> Dict[str, Any]:
    """await agent.create_session() + await connect(), warm (after one untimed one);
    then ``Session(session_id=...)`` + ``await connect()`` of that existing session,
    which waits for the ``connect_session`` acknowledgement (a new one does not)."""
    agent = Agent.fetch(name="Trivial")
    warm = await agent.create_session()
    await warm.connect()
    existing = warm.session_id
    await warm.disconnect()
    times: List[float] = []
    for _ in range(count):
        start = time.perf_counter()
        session = await agent.create_session()
        await session.connect()
        times.append(time.perf_counter() - start)
        await session.disconnect()
    resumed: List[float] = []
    for _ in range(count):
        start = time.perf_counter()
        session = Session(session_id=existing)
        await session.connect()
        resumed.append(time.perf_counter() - start)
        await session.disconnect()
    return {
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "resume_median_ms": statistics.median(resumed) * 1e3,
    }


OPS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "throughput:listen": lambda c: throughput(c["n"]),
    "latency:listen": lambda c: latency(c["n"], c["rate"]),
    "connect:": lambda c: connect_times(c["count"]),
}


def serve() -> int:
    for line in sys.stdin:
        command = json.loads(line)
        key = f"{command['op']}:{command.get('variant', '')}"
        try:
            result = asyncio.run(OPS[key](command))  # D1: one loop per measurement
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
