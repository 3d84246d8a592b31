"""How the engine starts outside a ``with`` block: ``python -m vectorshift_sync.testing``
and the ``local_engine`` pytest fixture (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Dict

import pytest
import requests
import websocket
from test_engine_support import scaled

from vectorshift_sync.testing import LocalEngine


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's pipe, or fail after ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        assert selector.select(timeout), "the engine printed nothing in time"
    return stream.readline()


def _child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_standalone_prints_one_json_line_serves_and_exits_cleanly(stop_signal: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vectorshift_sync.testing", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    try:
        assert proc.stdout is not None
        info = json.loads(_read_line(proc.stdout, scaled(15)))
        port = info["port"]
        assert set(info) == {"port", "env"} and port > 0
        assert info["env"] == {
            "VECTORSHIFT_API_KEY": "cli-key",
            "VECTORSHIFT_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "VECTORSHIFT_WS_URL": f"ws://127.0.0.1:{port}/v1",
        }
        headers = {"Authorization": "Bearer cli-key"}
        agent = requests.get(
            info["env"]["VECTORSHIFT_BASE_URL"] + "/agent",
            params={"name": "Demo Agent"},
            headers=headers,
            timeout=scaled(5),
        ).json()["object"]
        ws = websocket.create_connection(
            info["env"]["VECTORSHIFT_WS_URL"] + "/ws/session",
            header=["Authorization: Bearer cli-key"],
            timeout=scaled(5),
        )
        try:
            ws.send(
                json.dumps(
                    {"type": "create_session", "object_type": "agent", "object_id": agent["_id"]}
                )
            )
            assert json.loads(ws.recv())["type"] == "session_created"
        finally:
            ws.close()
            ws.shutdown()

        proc.send_signal(stop_signal)
        started = time.monotonic()
        assert proc.wait(timeout=scaled(10)) == 0
        assert time.monotonic() - started < scaled(5)
        out, err = proc.communicate(timeout=scaled(5))
        assert out == ""  # exactly one line on stdout
        assert "stopping" in err and "local engine stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(15)
def test_local_engine_fixture_sets_the_environment(local_engine: LocalEngine) -> None:
    assert local_engine.running
    assert {k: os.environ[k] for k in local_engine.env} == local_engine.env
    response = requests.get(
        os.environ["VECTORSHIFT_BASE_URL"] + "/agent",
        params={"name": "Demo Agent"},
        headers={"Authorization": "Bearer " + os.environ["VECTORSHIFT_API_KEY"]},
        timeout=scaled(5),
    )
    assert response.json()["object"]["name"] == "Demo Agent"


@pytest.mark.timeout(60)
def test_fixture_is_registered_for_users_and_stops_the_engine(tmp_path: Path) -> None:
    """A user's project gets the fixture from the entry point alone, no conftest."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import os
            seen = []

            def test_uses_the_engine(local_engine):
                seen.append(local_engine)
                assert os.environ["VECTORSHIFT_WS_URL"] == local_engine.ws_url

            def test_engine_is_stopped_and_env_restored():
                assert not seen[0].running
                assert "VECTORSHIFT_WS_URL" not in os.environ
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=scaled(50),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
