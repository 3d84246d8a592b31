"""No leaks, and no hang at exit.

* 2,000 sessions opened and closed against one engine leave this process's threads and
  file descriptors exactly at their baseline and its memory flat. The engine runs in a
  child process: it keeps a record of every connection by design, and its threads and
  sockets must not blur what is measured here.
* A script that leaves a session open (connected, with a callback, mid-listen in a
  thread, mid-turn; against an engine in another process or in its own) and just ends
  exits within a few seconds, and the session says goodbye to the engine on the way.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from conftest import scaled
from engine_process import EngineProcess

from vectorshift_sync import SessionEventType
from vectorshift_sync._link import Link
from vectorshift_sync.session import Session

E = SessionEventType

#: Sessions opened and closed in all, and how many of them warm up before measuring.
TOTAL = 2000
WARM_UP = 200
#: Memory still allocated after the measured sessions, beyond what was after the warm-up.
#: 64 KiB over 1,800 sessions is 36 bytes a session: a leak of any object per session
#: (the smallest Python object with a dict is larger) fails it. Measured: ~2 KiB.
TRACED_GROWTH_LIMIT = 64 * 1024
#: Resident set growth over the same stretch: a catastrophic-leak guard for memory that
#: tracemalloc does not see (OpenSSL, socket buffers). Measured: < 1 MiB.
RSS_GROWTH_LIMIT = 16 * 1024 * 1024


def _fds() -> Set[Tuple[int, str]]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return found


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _one_session(n: int, agent_id: str) -> None:
    """Open and close one session, in one of several shapes (every thread kind runs)."""
    session = Session(owner_type="agent", owner_id=agent_id)
    if n % 10 == 1:
        session.on(E.PARTICIPANT_STATUS, lambda event: None)  # a dispatcher thread
    session.connect()
    if n % 50 == 2:
        assert session.ask("count these words", timeout=scaled(10)).text
    elif n % 50 == 3:
        with session.listen(timeout=scaled(5)) as events:
            session.send("hello")
            for event in events:
                if event.is_turn_end:
                    break
    if n % 100 == 4:
        session.terminate()
    else:
        session.disconnect()
    if n % 100 == 5:  # resume by id, then close again
        with Session(session_id=session.session_id):
            pass


@pytest.mark.timeout(180)
def test_2000_sessions_leave_threads_fds_and_memory_at_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EngineProcess() as engine:
        for name, value in engine.env.items():
            monkeypatch.setenv(name, value)
        agent_id = engine.agent_id()
        gc.collect()
        sessions_before = {id(o) for o in gc.get_objects() if type(o) in (Session, Link)}
        threads_before = sorted(t.name for t in threading.enumerate())
        os_threads_before = _os_threads()
        fds_before = _fds()
        started = time.monotonic()

        for n in range(WARM_UP):
            _one_session(n, agent_id)
        gc.collect()
        tracemalloc.start()
        try:
            traced_warm, _ = tracemalloc.get_traced_memory()
            rss_warm = _rss()
            for n in range(WARM_UP, TOTAL):
                _one_session(n, agent_id)
            gc.collect()
            traced_end, _ = tracemalloc.get_traced_memory()
            top = tracemalloc.take_snapshot().statistics("lineno")[:5]
        finally:
            tracemalloc.stop()
        rss_end = _rss()
        elapsed = time.monotonic() - started

        threads_after = sorted(t.name for t in threading.enumerate())
        fds_after = _fds()
        numbers: Dict[str, object] = {
            "sessions": TOTAL,
            "seconds": round(elapsed, 1),
            "threads": (len(threads_before), len(threads_after)),
            "os_threads": (os_threads_before, _os_threads()),
            "fds": (len(fds_before), len(fds_after)),
            "traced_growth_bytes": traced_end - traced_warm,
            "rss_growth_bytes": rss_end - rss_warm,
        }
        print("leak check:", json.dumps(numbers))

        # Nothing new survives (a leftover of an earlier test may go away meanwhile).
        assert not set(threads_after) - set(threads_before)
        assert _os_threads() <= os_threads_before
        assert not fds_after - fds_before
        kept = [
            o
            for o in gc.get_objects()
            if type(o) in (Session, Link) and id(o) not in sessions_before
        ]
        assert not kept, f"{len(kept)} closed sessions (or their links) are still referenced"
        assert traced_end - traced_warm < TRACED_GROWTH_LIMIT, "\n".join(map(str, top))
        assert rss_end - rss_warm < RSS_GROWTH_LIMIT


# --- interpreter exit ---------------------------------------------------------------------

_PRELUDE = """
import atexit, json, os, sys, threading

# Registered before vectorshift_sync is imported, so it runs after the library's own
# exit hook (atexit runs hooks last-in, first-out).
def _report():
    if engine is not None:
        try:  # the engine's handler thread records frames a moment after they arrive
            engine.wait_for_frame("disconnect_session", timeout=2)
        except TimeoutError:
            pass
        print(json.dumps({"goodbyes": len(engine.received("disconnect_session"))}), flush=True)
engine = None
atexit.register(_report)

from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine
if os.environ.get("VECTORSHIFT_WS_URL"):
    agent_id = sys.argv[1]
else:
    engine = LocalEngine(stream_delay=0.05).start()  # left running on purpose
    os.environ.update(engine.env)
    agent_id = engine.add_agent("Slow", turn=lambda ctx: ctx.stream("x" * 2000, chunk=1))
session = Session(owner_type="agent", owner_id=agent_id).connect()
"""

#: A thread blocked in listen() (``daemon`` filled in): the script goes on once it is.
_LISTENING_THREAD = """
    listening = threading.Event()
    def consume():
        events = session.listen()
        listening.set()
        for event in events:
            pass
    threading.Thread(target=consume, daemon={daemon}).start()
    assert listening.wait(5)
"""

_SCENARIOS = {
    "connected": "",
    "callback": "session.on(None, lambda event: None)",
    "listening in a daemon thread": _LISTENING_THREAD.format(daemon=True),
    "mid-turn with a callback": """
        first = threading.Event()
        session.on("message_delta", lambda event: first.set())
        session.send("go")
        assert first.wait(5)
    """,
}


def _exit_script(body: str) -> str:
    return _PRELUDE + textwrap.dedent(body) + "\nprint('end of script', flush=True)\n"


def _run_to_exit(
    script: str, args: List[str], env: Dict[str, str], limit: float
) -> Tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=limit,
        env=env,
    )
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def remote() -> Iterator[EngineProcess]:
    with EngineProcess() as engine:
        yield engine


_REMOTE, _IN_PROCESS = "engine in another process", "engine left running in-process"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "scenario, where",
    [
        (name, where)
        for name in _SCENARIOS
        for where in (_REMOTE, _IN_PROCESS)
        # the child-process engine's demo turn is too quick to exit in the middle of it
        if not (name.startswith("mid-turn") and where == _REMOTE)
    ],
)
def test_interpreter_exit_never_hangs_on_a_live_session(
    scenario: str, where: str, remote: EngineProcess
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")}
    args: List[str] = []
    if where == _REMOTE:
        env.update(remote.env)
        args = [remote.agent_id()]
    done, elapsed = _run_to_exit(_exit_script(_SCENARIOS[scenario]), args, env, scaled(20))
    assert done.returncode == 0, done.stderr
    assert "end of script" in done.stdout
    assert elapsed < scaled(5), f"exit took {elapsed:.1f}s"
    if where == _IN_PROCESS:
        # The library's exit hook said goodbye before the engine's threads died with
        # the interpreter.
        assert '{"goodbyes": 1}' in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.timeout(30)
@pytest.mark.xfail(
    strict=True,
    reason=(
        "Python joins non-daemon threads before atexit hooks run, so a listen() left "
        "blocked in a non-daemon thread keeps the process alive; the fix is to close "
        "live sessions from threading._register_atexit (session.py, the lead's call)"
    ),
)
def test_exit_with_listen_blocked_in_a_non_daemon_thread(remote: EngineProcess) -> None:
    body = _LISTENING_THREAD.format(daemon=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")}
    env.update(remote.env)
    try:
        done, elapsed = _run_to_exit(_exit_script(body), [remote.agent_id()], env, scaled(4))
    except subprocess.TimeoutExpired:
        raise AssertionError("the interpreter did not exit within 4 s") from None
    assert done.returncode == 0, done.stderr
