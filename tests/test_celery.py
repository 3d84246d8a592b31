"""examples/celery_chat for real: Debian's redis-server, a prefork Celery worker, SSE.

Redis listens on a Unix socket in a temporary directory (``--port 0`` turns TCP
off), so no port is ever picked. The local engine runs in this process; the worker
(``celery -A celery_harness worker --pool prefork --concurrency 2``) reaches it over
TCP through the ``VECTORSHIFT_*`` variables. Turns are started through the example's
Flask view (its test client) and read back as Server-Sent Events, while a pattern
subscriber records everything published on the conversations' channels, so that a
final message delivered twice would be seen.

Without redis-server or celery the tests skip, loudly; with ``CI`` set (``.ci/run``,
which installs both) or ``VS_CELERY_REQUIRED=1`` that is a failure. Python 3.9's
pass in ``.ci/run`` installs neither and leaves this file out.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import scaled

from vectorshift_sync import Session
from vectorshift_sync.testing import LocalEngine, TurnContext

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTS = ROOT / "tests"
AGENT = "Celery Agent"

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the prefork pool is POSIX only"),
    pytest.mark.timeout(120),
]


def _missing(what: str) -> None:
    reason = f"{what} is not installed: the Celery recipe test cannot run"
    if os.environ.get("CI") or os.environ.get("VS_CELERY_REQUIRED") == "1":
        pytest.fail(reason + " (CI must have it: .ci/run installs it)")
    sys.stderr.write(f"\nSKIPPED: {reason}\n")
    pytest.skip(reason)


# --- the pieces: redis-server, the engine, the example's modules -----------------------


def _lines(stream: Any) -> Tuple["queue.Queue[Optional[str]]", threading.Thread]:
    """A process's output, line by line, on a queue (``None`` at the end)."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        with stream:
            for line in iter(stream.readline, ""):
                lines.put(line)
        lines.put(None)

    pumping = threading.Thread(target=pump, name="celery-test-output", daemon=True)
    pumping.start()
    return lines, pumping


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        _missing("redis-server (apt-get install redis-server)")
    for module in ("celery", "redis"):
        try:
            __import__(module)
        except ImportError:
            _missing(f"the {module} package (pip install -e '.[test]')")
    directory = tmp_path_factory.mktemp("redis")
    sock = directory / "redis.sock"
    server = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    output, pumping = _lines(server.stdout)
    deadline = time.monotonic() + scaled(10)
    seen: List[str] = []
    # "Ready to accept connections" (TCP) or "... ready to accept connections at PATH"
    while not seen or "ready to accept connections" not in seen[-1].lower():
        try:
            line = output.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            server.kill()
            server.wait(scaled(5))
            pumping.join(scaled(5))
            raise AssertionError("redis-server did not start:\n" + "".join(seen))
        seen.append(line)
    try:
        yield f"unix://{sock}"
    finally:
        server.terminate()
        server.wait(scaled(10))
        pumping.join(scaled(5))


class Runs:
    """What the engine's agent ran: (session id, user text) per turn, in order."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, str]] = []
        self.lock = threading.Lock()

    def turn(self, ctx: TurnContext) -> None:
        with self.lock:
            self.items.append((ctx.session_id, ctx.text))
        users = sum(1 for item in ctx.history if "user_id" in (item.get("sender") or {}))
        reply = expected_reply(users, ctx.text)
        if "slow" in ctx.text:  # about 2 s: time to kill or stop the worker running it
            ctx.stream(reply, chunk=3, delay=0.05)
        else:
            ctx.stream(reply, chunk=12, delay=0.002)


def expected_reply(turn: int, text: str) -> str:
    return f"Reply {turn} to {text!r}: " + " ".join(f"word{i}" for i in range(24))


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def chat(
    redis_url: str, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Tuple[LocalEngine, Any, Any]]:
    """A started engine with the test agent, and the example's tasks and web modules,
    imported afresh with the environment pointing at this engine and this Redis."""
    with LocalEngine() as engine:
        engine.add_agent(AGENT, turn=runs.turn)
        for name, value in {
            **engine.env,
            "CELERY_CHAT_REDIS": redis_url,
            "CELERY_CHAT_AGENT": AGENT,
            "CELERY_CHAT_TURN_TIMEOUT": str(scaled(20)),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(EXAMPLES))
        for name in ("celery_chat.web", "celery_chat.tasks", "celery_chat"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        from celery_chat import tasks, web

        tasks.redis_client().flushall()
        yield engine, tasks, web
        tasks.close_sessions()
        for name in ("celery_chat.web", "celery_chat.tasks", "celery_chat"):
            sys.modules.pop(name, None)


class Recorder:
    """Every message published on ``celery_chat:*``, with the time it arrived."""

    STOP = "celery_chat:stop-recorder"

    def __init__(self, tasks: Any) -> None:
        self._client = tasks.redis_client()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe("celery_chat:*")
        assert self._pubsub.get_message(timeout=scaled(5)) is None  # the confirmation
        self.items: List[Tuple[float, str, Dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="celery-test-recorder")
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._pubsub.listen():
                channel = message["channel"].decode()
                if channel == self.STOP:
                    return
                item = json.loads(message["data"])
                with self._changed:
                    self.items.append((time.monotonic(), channel, item))
                    self._changed.notify_all()
        finally:
            self._pubsub.close()

    def wait_for(
        self, predicate: Callable[[str, Dict[str, Any]], bool], timeout: float
    ) -> Tuple[float, str, Dict[str, Any]]:
        """The first recorded message matching ``predicate`` (bounded wait)."""
        found: List[Tuple[float, str, Dict[str, Any]]] = []

        def match() -> bool:
            found[:] = [entry for entry in self.items if predicate(entry[1], entry[2])][:1]
            return bool(found)

        with self._changed:
            assert self._changed.wait_for(match, scaled(timeout)), "nothing matched in time"
        return found[0]

    def finals(self) -> Dict[Tuple[str, int], List[Dict[str, Any]]]:
        counted: Dict[Tuple[str, int], List[Dict[str, Any]]] = collections.defaultdict(list)
        with self._changed:
            for _, channel, item in self.items:
                if item["type"] == "final":
                    counted[(channel, item["turn"])].append(item)
        return counted

    def stop(self) -> None:
        self._client.publish(self.STOP, "{}")
        self._thread.join(scaled(5))
        assert not self._thread.is_alive()


def _sse(text: str) -> List[Tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


class Browser(threading.Thread):
    """One GET /chat/<conversation> through the Flask test client, read to its end."""

    def __init__(self, web: Any, conversation: str, message: str) -> None:
        super().__init__(name=f"celery-test-browser-{conversation}")
        self.client = web.create_app().test_client()
        self.conversation, self.message = conversation, message
        self.events: List[Tuple[str, Any]] = []
        self.start()

    def run(self) -> None:
        query = {"message": self.message}
        response = self.client.get(f"/chat/{self.conversation}", query_string=query)
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        self.events = _sse(response.get_data(as_text=True))

    def final(self, timeout: float) -> Dict[str, Any]:
        self.join(scaled(timeout))
        assert not self.is_alive(), f"no final event for {self.conversation}"
        name, data = self.events[-1]
        assert name == "final", self.events
        assert [n for n, _ in self.events[:-1]] == ["message"] * (len(self.events) - 1)
        return dict(data)


# --- the worker --------------------------------------------------------------------------


class Worker:
    """``celery -A celery_harness worker --pool prefork --concurrency 2``, and its reports."""

    def __init__(self, tasks: Any, log: Path) -> None:
        self._tasks = tasks
        self.log = log
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), str(TESTS)])
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_harness", "worker",
             "--pool", "prefork", "--concurrency", "2", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", "harness@%h"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.events: List[Dict[str, Any]] = []

    def next_event(self, name: str, timeout: float) -> Dict[str, Any]:
        """The next report named ``name`` from celery_harness (bounded BLPOP)."""
        deadline = time.monotonic() + scaled(timeout)
        for item in self.events:
            if item["event"] == name and not item.get("_taken"):
                item["_taken"] = True
                return item
        while True:
            remaining = deadline - time.monotonic()
            client = self._tasks.redis_client()
            if self.proc.poll() is not None:  # gone: only what it left on the list
                popped = client.lpop("harness:events")
            elif remaining > 0:
                popped = client.blpop(["harness:events"], max(1, int(remaining)))
                popped = popped and popped[1]
            else:
                popped = None
            if popped is None:
                raise AssertionError(f"no {name!r} from the worker; log:\n{self.text()}")
            item = json.loads(popped)
            self.events.append(item)
            if item["event"] == name:
                item["_taken"] = True
                return item

    def text(self) -> str:
        self._log.flush()
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(scaled(10))
        self._log.close()


@pytest.fixture
def worker(chat: Tuple[LocalEngine, Any, Any], tmp_path: Path) -> Iterator[Worker]:
    running = Worker(chat[1], tmp_path / "worker.log")
    try:
        yield running
    finally:
        running.stop()


def _goodbyes(engine: LocalEngine) -> List[Any]:
    """Every engine connection that closed without a disconnect or terminate frame."""
    silent = []
    for record in engine.connections:
        assert record.closed.wait(scaled(5)), f"connection {record.index} is still open"
        kinds = {f.get("type") for f in record.frames if isinstance(f, dict)}
        if not kinds & {"disconnect_session", "terminate_session"}:
            silent.append(record)
    return silent


# --- the tests ---------------------------------------------------------------------------


def test_ten_conversations_a_lost_worker_process_and_a_warm_shutdown(
    chat: Tuple[LocalEngine, Any, Any], worker: Worker, runs: Runs
) -> None:
    engine, tasks, web = chat
    started = time.monotonic()

    # The main process connected a session before the pool forked: every worker
    # process was refused it, and it stayed connected in the main process.
    parent = worker.next_event("parent_session", 20)
    ready = worker.next_event("ready", 20)
    assert ready["parent_connected"] is True
    children = [worker.next_event("child_started", 10) for _ in range(2)]
    assert [c["outcome"] for c in children] == ["SessionForkedError"] * 2
    assert {c["pid"] for c in children}.isdisjoint({parent["pid"]})

    recorder = Recorder(tasks)
    try:
        conversations = [f"c{n}" for n in range(10)]
        # Turn 1 of ten conversations at once; c0's is slow, and its worker process
        # is killed (SIGKILL) as soon as its first delta is out.
        browsers = {c: Browser(web, c, f"slow hello from {c}" if c == "c0" else f"hello {c}")
                    for c in conversations}  # fmt: skip
        _, _, first = recorder.wait_for(
            lambda ch, item: ch == "celery_chat:c0" and item["type"] == "delta", 20
        )
        _, _, victim = recorder.wait_for(
            lambda ch, item: ch == "celery_chat:c0" and item["type"] == "started", 1
        )
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        firsts = {c: browsers[c].final(30) for c in conversations}
        recovered_at, _, _ = recorder.wait_for(
            lambda ch, item: ch == "celery_chat:c0" and item["type"] == "final", 1
        )
        recovery = recovered_at - killed_at

        # A new worker process replaced the killed one; it was refused the inherited
        # session too.
        replacement = worker.next_event("child_started", 10)
        assert replacement["outcome"] == "SessionForkedError"

        # Turn 2 of each, on whichever worker process takes it.
        browsers = {c: Browser(web, c, f"again {c}") for c in conversations}
        seconds = {c: browsers[c].final(30) for c in conversations}

        # Turn 3 of c1, slow; SIGTERM (warm shutdown) while it streams.
        last = Browser(web, "c1", "slow goodbye")
        recorder.wait_for(
            lambda ch, item: ch == "celery_chat:c1" and item["type"] == "delta"
            and item["turn"] == 3, 20)  # fmt: skip
        worker.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        exit_code = worker.proc.wait(scaled(20))
        exited_at = time.monotonic()
        third = last.final(5)
        third_at, _, _ = recorder.wait_for(
            lambda ch, item: ch == "celery_chat:c1" and item["type"] == "final"
            and item["turn"] == 3, 1)  # fmt: skip
    finally:
        recorder.stop()

    # Every reply, whole, once; the killed turn's too.
    for c in conversations:
        text = f"slow hello from {c}" if c == "c0" else f"hello {c}"
        assert firsts[c]["text"] == expected_reply(1, text) and "error" not in firsts[c]
        assert seconds[c]["text"] == expected_reply(2, f"again {c}")
        assert seconds[c]["session_id"] == firsts[c]["session_id"]  # resumed by id
    assert third["text"] == expected_reply(3, "slow goodbye") and third["recovered"] is None
    assert firsts["c0"]["recovered"] in ("live", "history")
    assert firsts["c0"]["pid"] != victim["pid"]
    assert firsts["c0"]["text"].startswith(first["text"])
    finals = recorder.finals()
    assert sorted(finals) == sorted(
        [(f"celery_chat:{c}", t) for c in conversations for t in (1, 2)] + [("celery_chat:c1", 3)]
    )
    assert all(len(items) == 1 for items in finals.values()), finals

    # The engine ran each turn exactly once: the lost one was not posted again.
    assert len(runs.items) == 21
    assert len(set(runs.items)) == 21, collections.Counter(runs.items)

    # The warm shutdown waited for the running turn, then ended: every session was
    # closed with a goodbye, except the one of the process killed mid-turn.
    assert exit_code == 0, worker.text()
    shutdown = exited_at - term_at
    assert shutdown < scaled(10)
    closed = worker.next_event("parent_closed", 1)
    assert closed["was_connected"] is True
    # The killed process held two: c0's, and the one it kept for itself.
    kept = {c["pid"]: c["session_id"] for c in [*children, replacement]}
    silent = {
        f.get("session_id") for r in _goodbyes(engine) for f in r.sent if isinstance(f, dict)
    } - {None}
    assert silent == {firsts["c0"]["session_id"], kept[victim["pid"]]}
    assert not [f for f in engine.received("post_message") if "forked" in str(f.get("content"))]
    assert parent["session_id"] not in {sid for sid, _ in runs.items}

    ran_on = {c: {firsts[c]["pid"], seconds[c]["pid"]} for c in conversations}
    sys.stderr.write(
        f"\n[celery] turns: 21 ({sum(len(p) == 2 for p in ran_on.values())} of 10 "
        f"conversations had their two turns on different worker processes); "
        f"lost turn recovered in {recovery:.2f} s ({firsts['c0']['recovered']}); "
        f"warm shutdown {shutdown:.2f} s, {exited_at - third_at:.2f} s of it after the running "
        f"turn's final; whole run {time.monotonic() - started:.1f} s\n"
    )


def test_a_rerun_after_the_reply_completed_posts_nothing_and_publishes_it_once(
    chat: Tuple[LocalEngine, Any, Any], runs: Runs
) -> None:
    """The history path, in this process: a run posted turn 2 and died before
    publishing; the reruns take the reply from the history, and publish it once."""
    engine, tasks, _ = chat
    recorder = Recorder(tasks)
    try:
        tasks.run_turn.apply(args=("solo", 1, "first")).get(timeout=scaled(20))
        session_id = tasks.redis_client().get(tasks.session_key("solo")).decode()
        with Session(session_id=session_id) as died:  # the run that died: posted, then gone
            assert died.ask("second", timeout=scaled(10)).text == expected_reply(2, "second")
        for _ in range(2):  # the redelivery, and one more (say, after a lost ack)
            tasks.run_turn.apply(args=("solo", 2, "second")).get(timeout=scaled(20))
        recorder.wait_for(lambda ch, item: item["type"] == "started" and item["turn"] == 2, 5)
    finally:
        recorder.stop()
    finals = recorder.finals()
    assert [item["text"] for item in finals[("celery_chat:solo", 1)]] == [
        expected_reply(1, "first")
    ]
    [second] = finals[("celery_chat:solo", 2)]
    assert second["text"] == expected_reply(2, "second") and second["recovered"] == "history"
    assert [text for _, text in runs.items] == ["first", "second"]  # never posted twice
    assert len(engine.received("post_message")) == 2
