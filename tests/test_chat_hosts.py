"""The chat examples in their real hosts, not mocks.

examples/streamlit_chat.py runs under Streamlit's own ``AppTest`` (the script, its
reruns and ``st.session_state`` as Streamlit runs them), and examples/gradio_chat.py
is launched as a real Gradio server on 127.0.0.1 and driven over HTTP by several
concurrent ``gradio_client`` clients. Both talk to the ``local_engine`` fixture, and
the conftest checks that no session thread outlives a test.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

# No telemetry from gradio, gradio_client or huggingface_hub: read at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest  # noqa: E402

# Gradio 5+ needs Python 3.10 (setup.py installs it only there).
GRADIO = sys.version_info >= (3, 10)
if GRADIO:
    import gradio as gr
    from gradio_client import Client
needs_gradio = pytest.mark.skipif(not GRADIO, reason="Gradio 5+ needs Python 3.10")

# conftest.py's timing knob, read here (see test_examples.py for why).
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_TAIL = "running on the local VectorShift engine."

pytestmark = [
    pytest.mark.timeout(60),
    # Gradio leaves event loops and sockets of its own to the garbage collector.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE


# --- Streamlit ---------------------------------------------------------------------------


def _chat(at: AppTest) -> List[Tuple[str, str]]:
    return [(m.name, "".join(md.value for md in m.markdown)) for m in at.chat_message]


def _say(at: AppTest, text: str) -> AppTest:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


#: Loggers Streamlit takes over for good (level, propagate=False, its own handler)
#: the first time an app runs; put back after each test so that later tests' log
#: captures (test_security.py reads the "websockets" records) still see them.
_STREAMLIT_TAKES = ("websockets", "uvicorn", "uvicorn.access", "uvicorn.asgi", "uvicorn.error")


@pytest.fixture
def streamlit_app(local_engine: Any) -> Iterator[AppTest]:
    saved = {}
    for name in _STREAMLIT_TAKES:
        log = logging.getLogger(name)
        saved[name] = (log.level, log.propagate, list(log.handlers))
    at = AppTest.from_file(str(EXAMPLES / "streamlit_chat.py"), default_timeout=scaled(20))
    try:
        yield at
    finally:
        session = at.session_state["session"] if "session" in at.session_state else None
        if session is not None:
            session.disconnect()
        for name, (level, propagate, handlers) in saved.items():
            log = logging.getLogger(name)
            log.setLevel(level)
            log.propagate = propagate
            log.handlers[:] = handlers


def test_streamlit_chat_streams_several_turns_in_one_session(streamlit_app: AppTest) -> None:
    at = streamlit_app
    at.run()
    assert not at.exception, at.exception
    assert _chat(at) == []
    session_id = at.session_state["session"].session_id
    assert at.query_params["session"] in (session_id, [session_id])  # reloads resume it
    _say(at, "Hello there")
    _say(at, "And again")
    chat = _chat(at)
    assert [role for role, _ in chat] == ["user", "assistant", "user", "assistant"]
    assert chat[1][1].startswith('You said: "Hello there".') and chat[1][1].endswith(DEMO_TAIL)
    assert chat[3][1].startswith('You said: "And again".')
    assert "This is message 2 of this session" in chat[3][1]
    assert at.session_state["session"].session_id == session_id  # one Session, kept


def test_streamlit_chat_approve_and_deny_buttons_resume_the_turn(
    streamlit_app: AppTest,
) -> None:
    at = streamlit_app
    at.run()
    _say(at, "please approve this note")
    assert [b.key for b in at.button] == ["approve", "deny"]
    assert "send_email" in at.warning[0].value
    assert at.session_state["pending"] is not None
    at.button(key="approve").click().run()
    assert not at.exception, at.exception
    assert [b.key for b in at.button] == []
    reply = _chat(at)[-1]
    assert reply[0] == "assistant"
    assert reply[1].startswith('You said: "please approve this note".')
    assert "You approved send_email, so I sent your message" in reply[1]

    _say(at, "approve it again")
    at.button(key="deny").click().run()
    assert not at.exception, at.exception
    assert 'You denied send_email, so nothing was sent. Your reason: "The user clicked Deny."' in (
        _chat(at)[-1][1]
    )
    # A new message instead of a button denies the request; the next reply is its own.
    _say(at, "approve a third one")
    _say(at, "never mind")
    chat = _chat(at)
    assert chat[-3][1].endswith("*(denied)*")
    assert chat[-1][1].startswith('You said: "never mind".')
    assert "This is message 4 of this session" in chat[-1][1]
    assert [b.key for b in at.button] == []


def test_streamlit_chat_resumes_a_session_by_id_with_its_history(
    streamlit_app: AppTest, local_engine: Any
) -> None:
    at = streamlit_app
    at.run()
    _say(at, "remember me")
    session = at.session_state["session"]
    session_id = session.session_id
    session.disconnect()  # as the idle limit lets it go

    _say(at, "still there?")  # the same tab: connects to the same id again
    assert "This is message 2 of this session" in _chat(at)[-1][1]
    assert at.session_state["session"].session_id == session_id
    at.session_state["session"].disconnect()

    reloaded = AppTest.from_file(str(EXAMPLES / "streamlit_chat.py"), default_timeout=scaled(20))
    reloaded.query_params["session"] = session_id  # a reload of the page
    reloaded.run()
    try:
        assert not reloaded.exception, reloaded.exception
        assert reloaded.session_state["session"].session_id == session_id
        chat = _chat(reloaded)
        assert [text for role, text in chat if role == "user"] == ["remember me", "still there?"]
        assert chat[-1][1].startswith('You said: "still there?".')
    finally:
        reloaded.session_state["session"].disconnect()


# --- Gradio ------------------------------------------------------------------------------


class _Closed(threading.Event):
    pass


@pytest.fixture
def gradio_app(local_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.1")  # unload soon after a client goes
    monkeypatch.syspath_prepend(str(EXAMPLES))
    gradio_chat = importlib.import_module("gradio_chat")
    closed: List[str] = []
    one_closed = threading.Condition()

    class Sessions(gradio_chat.BrowserSessions):  # type: ignore[misc, name-defined]
        def close(self, request: gr.Request) -> None:
            super().close(request)
            with one_closed:
                closed.append(request.session_hash)
                one_closed.notify_all()

    sessions = Sessions("Demo Agent")
    demo = gradio_chat.build_app(sessions)
    # No port given: Gradio tries 7860 and up until uvicorn itself binds one (a port
    # taken meanwhile just fails that bind), then reports it in demo.server_port.
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    demo.test_sessions = sessions
    demo.test_closed = (closed, one_closed)
    try:
        yield demo
    finally:
        demo.close()
        sessions.close_all()
        del demo
        _close_gradio_leftovers()


def _close_gradio_leftovers() -> None:
    """Close the event loops a stopped Gradio server leaves open (with their sockets).

    Otherwise their finalisers warn ("unclosed event loop") whenever a later test of
    another module happens to collect them, and warnings are errors there.
    """
    gc.collect()
    for obj in gc.get_objects():
        # type(), not isinstance(): a lazy proxy (Celery's current_app) would evaluate
        if issubclass(type(obj), asyncio.BaseEventLoop) and not obj.is_running():
            if not obj.is_closed():
                obj.close()
    gc.collect()


@needs_gradio
def test_gradio_chat_serves_concurrent_browser_sessions_each_its_own(gradio_app: Any) -> None:
    url = f"http://127.0.0.1:{gradio_app.server_port}/"
    users = [f"user{n}" for n in range(4)]
    clients = {user: Client(url, verbose=False) for user in users}
    start = threading.Barrier(len(users), timeout=scaled(10))

    def converse(user: str) -> List[str]:
        client = clients[user]
        start.wait()  # all four talk at once
        return [
            client.predict(f"{user} says hello", api_name="/chat"),
            client.predict(f"{user} asks to approve", api_name="/chat"),
        ]

    try:
        with ThreadPoolExecutor(len(users)) as pool:
            replies = dict(zip(users, pool.map(converse, users, timeout=scaled(30))))
        for user, (first, second) in replies.items():
            assert first.startswith(f'You said: "{user} says hello".')
            assert "This is message 1 of this session" in first
            assert "*(denied send_email: this chat cannot ask for approval)*" in second
            assert f'You said: "{user} asks to approve".' in second
            assert "This is message 2 of this session" in second  # no cross-talk
            assert second.endswith(DEMO_TAIL)
        ids = {s.session_id for s in gradio_app.test_sessions._sessions.values()}
        assert len(ids) == len(users)
    finally:
        for client in clients.values():
            client.close()

    # A client that goes away (its heartbeat stream closes) ends its browser
    # session: demo.unload disconnects that Session.
    closed, one_closed = gradio_app.test_closed
    hashes = {client.session_hash for client in clients.values()}
    with one_closed:
        assert one_closed.wait_for(lambda: set(closed) >= hashes, timeout=scaled(10))
    assert gradio_app.test_sessions._sessions == {}


@needs_gradio
def test_gradio_chat_runs_as_a_script_and_closes_its_sessions_on_stop(
    local_engine: Any,
) -> None:
    """The example's own main(): launch, serve, and on Ctrl-C close the sessions."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRADIO_HEARTBEAT_INTERVAL="0.1")
    proc = subprocess.Popen(  # talks to this test's engine: its env carries the key
        [sys.executable, "examples/gradio_chat.py"],
        cwd=EXAMPLES.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:  # bounded by the test's timeout
            found = re.search(r"Running on local URL: +(http://127\.0\.0\.1:\d+/?)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the app never said where it listens"
        client = Client(url, verbose=False)
        try:
            assert client.predict("hi", api_name="/chat").endswith(DEMO_TAIL)
        finally:
            client.close()
        (session_id,) = local_engine.sessions
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=scaled(20))
        assert proc.returncode == 0, out
        assert local_engine.wait_for_frame(
            "disconnect_session",
            predicate=lambda f: f["session_id"] == session_id,
            timeout=scaled(5),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(scaled(5))
