"""Every example in examples/ runs, as a user would run it, and says what it should.

Scripts run as subprocesses (``python examples/NAME.py``) with no API key, so each
starts its own local engine. The notebook is executed headlessly with nbclient; the
Flask and Django apps are driven through their test clients, in this process, against
the ``local_engine`` fixture; and both web examples are also started as scripts and
asked over real HTTP once.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
import requests

# conftest.py's timing knob, read here rather than imported: with a second
# conftest.py under tests/, ``from conftest import ...`` can find the wrong one.
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: The demo agent's answer always ends with this sentence (see testing/_demo.py).
DEMO_TAIL = "running on the local VectorShift engine."


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/NAME`` from the repository root, as the README shows."""
    env = dict(os.environ)  # the clean-env fixture already removed VECTORSHIFT_*
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [sys.executable, f"examples/{name}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "using the local engine" in done.stderr
    return done


# --- scripts ----------------------------------------------------------------------


def test_quickstart() -> None:
    out = run_example("quickstart.py").stdout
    assert re.match(r"Fetched agent: Demo Agent \(id=\w+\)\nSession connected: \w+\n\n", out)
    assert '\nAgent: You said: "Hello! What can you do?". That is 5 words' in out
    assert out.endswith(f"{DEMO_TAIL}\n\nDone.\n")


def test_chatbot_stream_matches_the_docs_expected_output() -> None:
    out = run_example("chatbot_stream.py").stdout
    # The docs' "Expected output", line for line.
    shape = (
        r"Fetched chatbot: Demo Chatbot \(id=\w+\)\n"
        r"Session connected: \w+\n"
        r"\n"
        r"Assistant: You said: \"Hello! What can you help me with\?\"\. [^\n]*\n"
        r"\n"
        r"Done\.\n"
    )
    assert re.fullmatch(shape, out), out
    assert "I am Demo Chatbot" in out


def test_approvals_approved_then_denied_with_a_reason() -> None:
    out = run_example("approvals.py").stdout
    first, second = out.split("\nYou: ")[1:]
    assert "[approval requested] send_email" in first
    assert "[you] approve" in first
    assert "[tool call] send_email" in first  # the approved tool ran
    assert "You approved send_email, so I sent your message" in first
    assert "[you] deny: I changed my mind." in second
    assert "[tool call] send_email" not in second
    assert 'nothing was sent. Your reason: "I changed my mind."' in second
    assert out.endswith("\nDone.\n")


def test_resume_shows_earlier_turns_then_terminates() -> None:
    out = run_example("resume.py").stdout
    created = re.search(r"Session created: (\w+)", out)
    resumed = re.search(r"Resumed: (\w+)", out)
    assert created and resumed and created.group(1) == resumed.group(1)
    history = out.split("History:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(":")[0].strip() for line in history] == ["you", "agent", "you", "agent"]
    assert history[0] == "  you: Hello, this is my first visit."
    assert "message 1 of this session" in history[1]
    assert "message 2 of this session" in history[3]
    assert out.endswith("\nTerminated.\n")


def test_callbacks_stream_on_while_main_thread_works_and_a_callback_fails() -> None:
    done = run_example("callbacks.py")
    out, err = done.stdout, done.stderr
    # The failing callback is logged with its traceback ...
    assert "failed on a thinking event" in err
    assert "RuntimeError: this callback has a bug" in err
    # ... and the others still saw the whole turn, in order.
    assert out.index("[tool_call: word_count]") < out.index("[tool_result: word_count]")
    assert out.index("[tool_result: word_count]") < out.index('You said: "Count the words')
    assert f"{DEMO_TAIL}\n" in out
    work = re.search(r"Main thread: did other work (\d+) times", out)
    assert work and int(work.group(1)) > 0
    assert out.endswith("Done.\n")


# --- notebook ---------------------------------------------------------------------


@pytest.mark.filterwarnings(
    # jupyter_core 5.8 (the last for Python 3.9) warns on import that it will move
    # its paths to platformdirs; nothing for us to do.
    "ignore:Jupyter is migrating its paths:DeprecationWarning",
)
def test_jupyter_notebook_streams_into_the_cell_while_the_kernel_stays_free() -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "jupyter_quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=int(scaled(60)),
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},  # the notebook's folder
    )
    client.execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    send_cell, meanwhile_cell, wait_cell = code[2], code[3], code[4]
    assert "session.send(" in send_cell.source
    # The callbacks drew the reply into the sending cell's own output, in place.
    shown = [o["data"]["text/markdown"] for o in send_cell.outputs if "data" in o]
    assert len(shown) == 1
    assert shown[0].startswith('You said: "Hello from Jupyter! What can you do?"')
    assert shown[0].endswith(DEMO_TAIL)
    # The next cell ran while the reply was still streaming.
    assert "Reply finished yet? False" in _stdout(meanwhile_cell)
    assert _stdout(wait_cell).strip() == shown[0]


def _stdout(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


# --- web examples through their test clients ------------------------------------


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import examples as modules (they import their neighbour ``_local``)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _sse_events(text: str) -> List[Tuple[str, Any]]:
    """Parse a text/event-stream body into (event name, decoded data) pairs."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        name, data = "message", None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data = json.loads(value)
        events.append((name, data))
    return events


def _timed_chunks(chunks: Iterator[bytes]) -> List[Tuple[float, bytes]]:
    return [(time.monotonic(), chunk) for chunk in chunks if chunk]


@pytest.mark.usefixtures("examples_on_path")
def test_flask_sse_streams_one_event_per_delta_then_end(local_engine: Any) -> None:
    flask_sse = importlib.import_module("flask_sse")
    local_engine.stream_delay = 0.01
    client = flask_sse.create_app().test_client()

    assert "EventSource" in client.get("/").get_data(as_text=True)

    response = client.get("/stream", query_string={"message": "Hello Flask"})
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        chunks = _timed_chunks(response.response)  # the generator, read as it yields
    finally:
        response.close()

    events = _sse_events(b"".join(chunk for _, chunk in chunks).decode())
    deltas = [data for name, data in events if name == "message"]
    assert len(deltas) > 10 and events[-1][0] == "end"
    assert [name for name, _ in events[:-1]] == ["message"] * len(deltas)
    reply = "".join(deltas)
    assert reply.startswith('You said: "Hello Flask"') and reply.endswith(DEMO_TAIL)
    # Incremental: each chunk is whole events, and they came out as the engine
    # streamed them (at least 0.01 s apart), not all at once at the end.
    assert all(chunk.endswith(b"\n\n") for _, chunk in chunks)
    assert chunks[-1][0] - chunks[0][0] >= 0.01 * (len(deltas) - 1) * 0.5
    # One session per request, terminated when the reply is done.
    session_id = events[-1][1]
    local_engine.wait_for_frame(
        "terminate_session",
        predicate=lambda frame: frame.get("session_id") == session_id,
        timeout=scaled(5),
    )


@pytest.mark.usefixtures("examples_on_path")
def test_flask_sse_denies_approvals_it_cannot_ask_about(local_engine: Any) -> None:
    flask_sse = importlib.import_module("flask_sse")
    client = flask_sse.create_app().test_client()
    body = client.get("/stream", query_string={"message": "approve it"}).get_data(as_text=True)
    reply = "".join(data for name, data in _sse_events(body) if name == "message")
    assert 'You denied send_email, so nothing was sent. Your reason: "not from the web".' in reply


@pytest.mark.usefixtures("examples_on_path")
def test_django_view_streams_the_reply(local_engine: Any) -> None:
    django_view = importlib.import_module("django_view")
    from django.test import Client

    local_engine.stream_delay = 0.01
    response = Client().get("/ask", {"message": "Hello Django"})
    try:
        assert response.status_code == 200
        assert response.streaming
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        chunks = _timed_chunks(iter(response.streaming_content))
    finally:
        response.close()
    assert django_view.urlpatterns  # the module under test
    text = b"".join(chunk for _, chunk in chunks).decode()
    assert text.startswith('You said: "Hello Django"') and text.endswith(f"{DEMO_TAIL}\n")
    assert len(chunks) > 10
    assert chunks[-1][0] - chunks[0][0] >= 0.01 * (len(chunks) - 2) * 0.5


# --- web examples as scripts, over real HTTP -------------------------------------


def _free_port() -> int:
    """A free port below the ephemeral range, for a script that takes ``--port N``.

    Below the range so that no ``bind(port 0)`` can take it in the meantime: the
    script starts its local engine on an ephemeral port just before it binds ours.
    """
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(100):
        port = random.randrange(max(1024, low // 2), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("found no free port below the ephemeral range")


def _serve_and_get(command: List[str], url_path: str) -> str:
    """Start a web example, GET one path once it answers, stop it; return the body."""
    port = _free_port()
    command = [arg.replace("PORT", str(port)) for arg in command]
    server = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + scaled(20)
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}{url_path}", timeout=scaled(20))
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    stderr = server.stderr.read() if server.stderr else ""
                    raise AssertionError(f"{command} did not serve:\n{stderr}") from None
                time.sleep(0.1)
        assert reply.status_code == 200
        return reply.text
    finally:
        server.terminate()
        try:
            server.communicate(timeout=scaled(10))
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            server.kill()
            server.communicate()


def test_flask_sse_runs_as_a_script() -> None:
    body = _serve_and_get(["examples/flask_sse.py", "--port", "PORT"], "/stream?message=hi")
    events = _sse_events(body)
    assert events[-1][0] == "end"
    assert "".join(data for name, data in events[:-1]).endswith(DEMO_TAIL)


def test_django_view_runs_as_a_script() -> None:
    command = ["examples/django_view.py", "runserver", "--noreload", "127.0.0.1:PORT"]
    body = _serve_and_get(command, "/ask?message=hi")
    assert body.startswith('You said: "hi"') and body.endswith(f"{DEMO_TAIL}\n")
