"""The Flask debug reloader runs an app module in two processes; what that means for sessions.

``app.run(debug=True)`` (and ``flask run --debug``) imports the module in a reloader
process that only watches files, then runs it again in a server child
(``WERKZEUG_RUN_MAIN=true``) that serves requests. These are two interpreters started
with ``subprocess``, not a fork, so nothing is inherited and nothing raises: a session
opened at import time is simply opened twice, and the reloader's copy serves nobody.
On each reload the server child exits normally, so the library's exit hook says
goodbye for its sessions, and the new child opens its own. docs/reliability.rst.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
from conftest import scaled

from vectorshift_sync.testing import LocalEngine

flask = pytest.importorskip("flask")

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups"),
    pytest.mark.timeout(60),
]

APP = """
import os
from flask import Flask
from vectorshift_sync.session import Session

role = "server" if os.environ.get("WERKZEUG_RUN_MAIN") == "true" else "reloader"
if os.environ["GUARDED"] == "0" or role == "server":
    shared = Session(owner_type="agent", owner_id=os.environ["AGENT_ID"]).connect()
    print(role, os.getpid(), "opened", shared.session_id, flush=True)
print(role, os.getpid(), "ready", flush=True)
app = Flask(__name__)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=0, debug=True, use_reloader=True, reloader_type="stat")
"""


class _App:
    """The app under the reloader, its stdout read line by line with deadlines."""

    def __init__(self, path: Path, env: dict) -> None:  # type: ignore[type-arg]
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # the reloader and its child, killed as a group
        )
        self._reader = threading.Thread(target=self._read, name="flask-app-stdout")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 10) -> "re.Match[str]":
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"the app ended; saw {self.seen}")
            self.seen.append(line)
            found = re.fullmatch(pattern, line)
            if found:
                return found

    def touch_until(self, path: Path, pattern: str, timeout: float = 15) -> "re.Match[str]":
        """Move ``path``'s mtime forward until the app prints ``pattern``.

        The stat reloader records mtimes on its first scan, which may come after a
        single touch; each touch here is later than the last, so one of them counts.
        """
        deadline = time.monotonic() + scaled(timeout)
        bump = time.time()
        while True:
            bump += 10
            os.utime(path, (bump, bump))
            try:
                return self.expect(pattern, timeout=1.5)
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(scaled(5))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(scaled(5))
        self._reader.join(scaled(5))
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine() as running:
        yield running


def _start(engine: LocalEngine, tmp_path: Path, guarded: bool) -> _App:
    path = tmp_path / "app.py"
    path.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VECTORSHIFT_", "WERKZEUG"))}
    env.update(engine.env)
    env.update(AGENT_ID=engine.add_agent("Flask"), GUARDED="1" if guarded else "0")
    return _App(path, env)


def test_a_session_opened_at_import_is_opened_twice_and_renewed_on_reload(
    engine: LocalEngine, tmp_path: Path
) -> None:
    app = _start(engine, tmp_path, guarded=False)
    try:
        reloader = app.expect(r"reloader (\d+) opened (\w+)")
        server = app.expect(r"server (\d+) opened (\w+)")
        app.expect(rf"server {server[1]} ready")
        assert reloader[1] != server[1] and reloader[2] != server[2]  # two processes

        renewed = app.touch_until(tmp_path / "app.py", r"server (\d+) opened (\w+)")
        assert renewed[1] != server[1]
        # The old server child exited normally and said goodbye for its session;
        # the reloader's session is still open, serving nobody.
        goodbye = engine.wait_for_frame("disconnect_session", timeout=scaled(5))
        assert goodbye["session_id"] == server[2]
        assert len(engine.received("create_session")) == 3
        assert engine.sessions[reloader[2]].connections
    finally:
        app.stop()


def test_guarded_by_werkzeug_run_main_only_the_server_opens_one(
    engine: LocalEngine, tmp_path: Path
) -> None:
    app = _start(engine, tmp_path, guarded=True)
    try:
        app.expect(r"reloader (\d+) ready")
        server = app.expect(r"server (\d+) opened (\w+)")
        app.expect(rf"server {server[1]} ready")
        assert [f["object_id"] for f in engine.received("create_session")] == [
            next(iter(engine.sessions.values())).owner_id
        ]
        assert not any(line.startswith("reloader") and "opened" in line for line in app.seen)
    finally:
        app.stop()
