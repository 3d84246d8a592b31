"""Fork safety (gunicorn ``--preload``, Celery prefork): POSIX only.

A session inherited across ``os.fork()`` belongs to the parent: in the child every use
raises :class:`SessionForkedError`, ``disconnect()`` only forgets it (not a byte on
the parent's socket), and new sessions work. The child reports through a pipe as JSON
and leaves with ``os._exit``, so it never runs pytest's code; every wait is bounded.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Dict, Iterator, List

import pytest
from conftest import scaled

from vectorshift_sync import SessionForkedError
from vectorshift_sync.session import Session
from vectorshift_sync.testing import LocalEngine, TurnContext

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only"),
    pytest.mark.timeout(30),
]

REPLY = "".join(f"word{n} " for n in range(40)).strip()


def _reply(ctx: TurnContext) -> None:
    ctx.stream(REPLY, chunk=6)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEngine]:
    with LocalEngine(stream_delay=0.01) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def agent_id(engine: LocalEngine) -> str:
    return engine.add_agent("Fork Agent", turn=_reply)


class _Hung(Exception):
    pass


def _bounded(seconds: float, call: Callable[[], Any]) -> Dict[str, Any]:
    """Run ``call`` in the child with a SIGALRM watchdog; describe what happened."""

    def alarm(signum: int, frame: Any) -> None:
        raise _Hung()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        value = call()
        return {"outcome": "returned", "value": repr(value)}
    except _Hung:
        return {"outcome": "hung"}
    except Exception as exc:
        return {"outcome": type(exc).__name__, "message": str(exc)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fork(child: Callable[[], Dict[str, Any]], *, timeout: float = 15.0) -> Dict[str, Any]:
    """Run ``child()`` in a forked child; return its JSON report (bounded)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process may deadlock the
        # child: exactly the situation under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's code
        code = 0
        try:
            os.close(read_end)
            report = child()
        except BaseException:
            report, code = {"crash": traceback.format_exc()}, 1
        try:
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: List[bytes] = []
    deadline = time.monotonic() + scaled(timeout)
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, remaining))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the child did not report within {timeout}s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)  # it has closed the pipe, so it is exiting
    report: Dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    assert "crash" not in report, report.get("crash")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


# --- the inherited session in the child ----------------------------------------------

_USES: Dict[str, Callable[[Session], Any]] = {
    "send": lambda s: s.send("from the child"),
    "send_many": lambda s: s.send_many(["a", "b"]),
    "listen": lambda s: s.listen(),
    "get_messages": lambda s: s.get_messages(timeout=1),
    "connect": lambda s: s.connect(),
    "ask": lambda s: s.ask("from the child", timeout=1),
    "stream": lambda s: s.stream("from the child", timeout=1),
    "on": lambda s: s.on(None, lambda event: None),
}


def _inherited_session_case(engine: LocalEngine, agent_id: str, session: Session) -> None:
    parent_sid = session.session_id
    deltas: List[str] = []
    first_delta, turn_done = threading.Event(), threading.Event()

    def consume() -> None:
        for event in session.listen(timeout=scaled(10)):
            if event.delta:
                deltas.append(event.delta)
                first_delta.set()
            if event.is_turn_end:
                turn_done.set()
                return

    consumer = threading.Thread(target=consume, name="fork-test-consumer")
    consumer.start()
    session.send("stream while I fork")
    assert first_delta.wait(scaled(5))

    def child() -> Dict[str, Any]:
        report: Dict[str, Any] = {"pid": os.getpid(), "uses": {}}
        for name, use in _USES.items():
            report["uses"][name] = _bounded(2, functools.partial(use, session))
        report["disconnect"] = _bounded(2, session.disconnect)
        report["terminate"] = _bounded(2, session.terminate)
        report["after_disconnect"] = _bounded(2, lambda: session.send("again"))
        fresh = Session(owner_type="agent", owner_id=agent_id)
        report["fresh_answer"] = _bounded(10, lambda: fresh.connect().ask("hi", timeout=5).text)
        report["fresh_id"] = fresh.session_id
        fresh.disconnect()
        return report

    report = _fork(child)

    for name, result in report["uses"].items():
        assert result["outcome"] == SessionForkedError.__name__, (name, result)
        message = result["message"]
        assert f"process {os.getpid()}" in message and f"process {report['pid']}" in message
        assert "fork()" in message and "new Session" in message, message
    assert report["disconnect"] == {"outcome": "returned", "value": "None"}
    assert report["terminate"] == {"outcome": "returned", "value": "None"}
    assert report["after_disconnect"]["outcome"] == "SessionForkedError"
    assert report["fresh_answer"] == {"outcome": "returned", "value": repr(REPLY)}

    # The parent's stream went on through all of that, and its session is untouched.
    consumer.join(scaled(10))
    assert turn_done.is_set() and "".join(deltas) == REPLY
    assert session.is_connected
    assert session.ask("still there?", timeout=scaled(10)).text == REPLY
    goodbyes = engine.received("disconnect_session") + engine.received("terminate_session")
    assert [frame["session_id"] for frame in goodbyes] == [report["fresh_id"]]
    assert not engine.sessions[parent_sid].terminated


def test_an_inherited_session_refuses_use_and_the_parent_keeps_streaming(
    engine: LocalEngine, agent_id: str
) -> None:
    with Session(owner_type="agent", owner_id=agent_id) as session:
        _inherited_session_case(engine, agent_id, session)


def test_a_session_object_never_connected_before_fork_works_in_the_child(
    engine: LocalEngine, agent_id: str
) -> None:
    prepared = Session(owner_type="agent", owner_id=agent_id)  # e.g. built at import time

    def child() -> Dict[str, Any]:
        with prepared:
            return {"answer": prepared.ask("hi", timeout=5).text}

    assert _fork(child) == {"answer": REPLY}


def test_the_child_can_continue_the_conversation_by_id(engine: LocalEngine, agent_id: str) -> None:
    with Session(owner_type="agent", owner_id=agent_id) as session:
        assert session.ask("first, in the parent", timeout=scaled(10)).text == REPLY

        def child() -> Dict[str, Any]:
            with Session(session_id=session.session_id) as resumed:
                history = resumed.get_messages(timeout=5)
                return {"history": len(history), "answer": resumed.ask("hi", timeout=5).text}

        assert _fork(child) == {"history": 2, "answer": REPLY}
        assert session.is_connected
        assert session.ask("and the parent goes on", timeout=scaled(10)).text == REPLY


def test_a_forked_child_gets_an_io_thread_of_its_own(engine: LocalEngine, agent_id: str) -> None:
    with Session(owner_type="agent", owner_id=agent_id) as session:
        assert session.ask("before", timeout=scaled(10)).text == REPLY
        parent_io = [t.native_id for t in threading.enumerate() if t.name == "vectorshift-io"]
        assert len(parent_io) == 1

        def child() -> Dict[str, Any]:
            with Session(owner_type="agent", owner_id=agent_id) as own:
                answer = own.ask("hi", timeout=5).text
                io = [t.native_id for t in threading.enumerate() if t.name == "vectorshift-io"]
            return {"answer": answer, "io_threads": len(io), "parent_thread": io == parent_io}

        assert _fork(child) == {"answer": REPLY, "io_threads": 1, "parent_thread": False}
        assert session.ask("after", timeout=scaled(10)).text == REPLY  # undisturbed


# The parent's threads may be inside the session when fork() happens: the reader
# holding the state lock while it routes a frame, a get_messages() holding the request
# lock, a connect() holding the lifecycle lock. Those threads do not exist in the child
# and their locks stay taken there forever, so nothing the child can call may wait for
# them. Held here by the forking thread, which simulates each race deterministically.
_LOCKS = ("_lock", "_link._request_lock", "_link.lifecycle")

def _session_only(use: Callable[[Session], Any]) -> Callable[[Session, Any], Any]:
    return lambda session, listener: use(session)


_CHILD_CALLS: Dict[str, Callable[[Session, Any], Any]] = {
    **{name: _session_only(use) for name, use in _USES.items()},
    "disconnect": lambda s, listener: s.disconnect(),
    "terminate": lambda s, listener: s.terminate(),
    "off": lambda s, listener: s.off(print),
    "close an inherited listener": lambda s, listener: listener.close(),
    "is_connected": lambda s, listener: s.is_connected,
    "repr": lambda s, listener: repr(s),
}
#: The calls that return at once in the child instead of raising SessionForkedError,
#: and what they return: the child only forgets the parent's session, it never uses it.
_CHILD_OUTCOMES: Dict[str, Dict[str, Any]] = {
    "disconnect": {"outcome": "returned", "value": "None"},
    "terminate": {"outcome": "returned", "value": "None"},
    "off": {"outcome": "returned", "value": "False"},
    "close an inherited listener": {"outcome": "returned", "value": "None"},
    "is_connected": {"outcome": "returned", "value": "False"},
}


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in _CHILD_CALLS
    ],
)
def test_the_child_never_waits_for_a_lock_the_parents_threads_held(
    engine: LocalEngine, agent_id: str, name: str
) -> None:
    with Session(owner_type="agent", owner_id=agent_id) as session:
        listener = session.listen()
        locks = [operator.attrgetter(attr)(session) for attr in _LOCKS]
        call = _CHILD_CALLS[name]

        def child() -> Dict[str, Any]:
            return _bounded(2, lambda: call(session, listener))

        for lock in locks:
            assert lock.acquire(timeout=scaled(5))
        try:
            result = _fork(child)
        finally:
            for lock in reversed(locks):
                lock.release()
        listener.close()
    if name == "repr":
        assert result["outcome"] == "returned" and "Session" in result["value"], result
    elif name in _CHILD_OUTCOMES:
        assert result == _CHILD_OUTCOMES[name]
    else:
        assert result["outcome"] == SessionForkedError.__name__, result
        assert "fork()" in result["message"]


def test_a_child_that_exits_normally_leaves_the_parents_session_open() -> None:
    """The exit hook runs in a child that ends normally; it must only forget the
    inherited session (gunicorn and Celery workers end this way)."""
    script = textwrap.dedent(
        """
        import json, os, sys, warnings
        from vectorshift_sync.session import Session
        from vectorshift_sync.testing import LocalEngine

        engine = LocalEngine().start()
        os.environ.update(engine.env)
        agent = engine.add_agent("A", turn=lambda ctx: ctx.stream("pong"))
        session = Session(owner_type="agent", owner_id=agent).connect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            with Session(owner_type="agent", owner_id=agent) as own:
                own.ask("child", timeout=5)
            sys.exit(0)  # a normal exit: atexit hooks run in the child
        _, status = os.waitpid(pid, 0)
        result = {
            "child_exit": os.waitstatus_to_exitcode(status),
            "parent_answer": session.ask("parent", timeout=5).text,
            "goodbyes_for_parent": [
                f for f in engine.received("disconnect_session")
                if f["session_id"] == session.session_id
            ],
        }
        session.disconnect()
        engine.stop()
        print(json.dumps(result))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=scaled(20),
        env={k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"child_exit": 0, "parent_answer": "pong", "goodbyes_for_parent": []}


def test_key_masking_works_in_a_child_forked_while_a_handshake_held_its_lock() -> None:
    from vectorshift_sync import _redaction

    with _redaction.masking("sk-parent-key-in-flight"):
        active = _redaction._installed()
        assert active._lock.acquire(timeout=scaled(5))  # a handshake mid-registration
        try:

            def child() -> Dict[str, Any]:
                def mask() -> str:
                    with _redaction.masking("sk-child-key-0001"):
                        record = logging.LogRecord(
                            "websocket",
                            logging.DEBUG,
                            __file__,
                            1,
                            "Bearer sk-child-key-0001",
                            (),
                            None,
                        )
                        logging.getLogger("websocket").handle(record)
                        return record.getMessage()

                return {**_bounded(2, mask), "active_after": active.active}

            result = _fork(child)
        finally:
            active._lock.release()
    assert result == {"outcome": "returned", "value": "'Bearer ***0001'", "active_after": 0}
