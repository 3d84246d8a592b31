"""The chat CLI, run for real: ``python -m vectorshift_sync chat`` in a subprocess.

Most tests give it no API key, so it starts its embedded local engine; the rest point
it at an engine started here (its ``env``). Input is piped, output is read back, and
where a test must wait for the process it waits for output with a deadline.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import pytest
from conftest import scaled

from vectorshift_sync.cli import main
from vectorshift_sync.testing import LocalEngine, TurnContext

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
ENGINE_LINE = re.compile(
    r"^No VECTORSHIFT_API_KEY set: using the embedded local engine at "
    r'http://127\.0\.0\.1:\d+/v1 \(demo agent "Demo Agent", demo chatbot "Demo Chatbot"\)\.$'
)
SESSION_LINE = re.compile(r"in (?:resumed )?session (\w+)\.")
NEW_SESSION_LINE = re.compile(r"^New session (\w+) ", re.MULTILINE)


def _env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The test's environment (VECTORSHIFT_* already cleared by conftest), plus extra."""
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _command(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "vectorshift_sync", "chat", *args]


def _chat(
    args: Sequence[str] = (),
    stdin: str = "",
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; the demo streams with no delay between chunks."""
    return subprocess.run(
        _command(["--stream-delay", "0", *args]),
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(env),
        cwd=ROOT,
        timeout=scaled(20),
    )


def _clean(result: subprocess.CompletedProcess[str]) -> None:
    """No traceback, and no colour when the output is not a terminal."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "\x1b" not in result.stdout + result.stderr


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failure prints (after the engine notice, if any)."""
    lines = [line for line in result.stderr.splitlines() if not ENGINE_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


class _Running:
    """A CLI process whose output is read as it comes, so a test can wait for it."""

    def __init__(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None) -> None:
        self.process = subprocess.Popen(
            _command(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(env),
            cwd=ROOT,
        )
        self._chunks: "queue.Queue[bytes]" = queue.Queue()
        self.stdout = ""
        self.stderr = b""
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.process.stdout.fileno(),)),
            threading.Thread(target=self._drain_stderr),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, fd: int) -> None:
        while True:
            chunk = os.read(fd, 4096)
            self._chunks.put(chunk)
            if not chunk:
                return

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def wait_for(self, token: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while token not in self.stdout:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{token!r} not printed in {timeout}s: {self.stdout!r}")
            try:
                chunk = self._chunks.get(timeout=remaining)
            except queue.Empty:
                continue
            if not chunk:
                raise AssertionError(f"output ended before {token!r}: {self.stdout!r}")
            self.stdout += chunk.decode()

    def finish(self, timeout: float) -> int:
        """Close its input, wait for the exit (killing it after ``timeout``), and
        collect all output. Idempotent."""
        assert self.process.stdin is not None
        try:
            if not self.process.stdin.closed:
                self.process.stdin.close()  # end of input: the chat ends after its turn
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for thread in self._threads:
                thread.join(scaled(5))
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
        while not self._chunks.empty():
            self.stdout += self._chunks.get().decode()
        return code


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine() as running:
        yield running


@pytest.fixture
def gate(engine: LocalEngine) -> Iterator[threading.Event]:
    """A "Gated Agent" streams "Hello " and holds the rest until the event is set."""
    released = threading.Event()

    def gated(ctx: TurnContext) -> None:
        ctx.delta("Hello ", message_id="m-gated")
        released.wait(scaled(20))
        ctx.delta("world", message_id="m-gated")
        ctx.complete("Hello world", message_id="m-gated")

    engine.add_agent("Gated Agent", turn=gated)
    yield released
    released.set()  # before the engine stops, so its turn worker ends at once


# --- the embedded engine, piped input ------------------------------------------------


def test_a_turn_streams_the_reply_with_thinking_and_tool_lines() -> None:
    result = _chat(stdin="hello there\n")
    _clean(result)
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "embedded local engine" in line]
    assert len(notices) == 1 and ENGINE_LINE.match(notices[0]), result.stderr
    lines = result.stdout.splitlines()
    thinking = lines.index(
        "[thinking] The user wrote 2 words. I will count them with the word_count tool "
        "and answer with what I found."
    )
    tool = lines.index("[tool] word_count(text='hello there')")
    tool_result = lines.index('[tool result] word_count -> {"words": 2, "characters": 11}')
    answers = [i for i, line in enumerate(lines) if line.startswith('You said: "hello there".')]
    assert len(answers) == 1, result.stdout  # the deltas and the complete message, once
    assert thinking < tool < tool_result < answers[0]
    assert lines[answers[0]].endswith("running on the local VectorShift engine.")
    assert "hello there" not in lines  # the user's echo is never shown as a reply


def test_an_approval_answered_y_continues_and_n_with_a_reason_is_denied() -> None:
    result = _chat(stdin="please approve this\ny\nplease approve that\nn\ntoo risky\n")
    _clean(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "Approve send_email(to='team@example.com', subject='A message from the VectorShift "
        "demo', body='please approve this')? [y/N] y\n" in out
    )
    assert "Approve send_email(" in out.split("please approve this")[-1]
    assert "[tool] send_email(to='team@example.com'" in out  # the approved call ran
    assert "You approved send_email, so I sent your message to team@example.com" in out
    assert "? [y/N] n\nReason (optional): too risky\n" in out
    assert 'You denied send_email, so nothing was sent. Your reason: "too risky".' in out
    assert out.index("You approved send_email") < out.index("You denied send_email")


def test_history_new_and_quit() -> None:
    script = "first message\n/history\n/new\nsecond message\n/history\n/quit\nnever sent\n"
    result = _chat(stdin=script)
    _clean(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    before, after = out.split("This is message 1 of this session", 1)[1].split(
        "This is message 1 of this session", 1
    )
    # /history of the first session, then /new: the second session starts empty.
    assert "\nuser: first message\n" in before
    assert re.search(r'\nagent: You said: "first message"\.', before)
    assert "\nagent: [tool_call] word_count\n" in before
    assert "\nuser: second message\n" in after
    assert "first message" not in after
    assert "never sent" not in out  # /quit ended the chat before the next line
    first_id = SESSION_LINE.search(result.stderr)
    new_id = NEW_SESSION_LINE.search(result.stderr)
    assert first_id and new_id and first_id.group(1) != new_id.group(1), result.stderr
    assert f"--session {first_id.group(1)}" in result.stderr  # how to go back to it


def test_end_of_input_ends_cleanly_and_unknown_commands_are_reported() -> None:
    result = _chat(stdin="/nope\n")
    _clean(result)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "error: unknown command /nope; try /history, /new, /quit" in result.stderr


def test_messages_from_flags_with_yes_and_colour_on_request() -> None:
    result = _chat(["-m", "hi", "--message", "approve this", "--yes", "--color", "always"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert "\x1b[2m[tool] word_count(text='hi')\x1b[0m" in result.stdout  # dim side lines
    assert 'You said: "hi".' in out
    assert "[approval] send_email(to='team@example.com'" in out
    assert "approved (--yes)" in out
    assert "You approved send_email" in out
    assert "This is message 2 of this session" in out


def test_the_demo_chatbot_and_resuming_its_session(engine: LocalEngine) -> None:
    first = _chat(["--chatbot", "Demo Chatbot", "-m", "hi bot"], env=engine.env)
    _clean(first)
    assert first.returncode == 0, first.stderr
    assert "embedded local engine" not in first.stderr  # a key was given
    assert "I am Demo Chatbot" in first.stdout
    found = SESSION_LINE.search(first.stderr)
    assert found, first.stderr
    resumed = _chat(["--session", found.group(1), "--chatbot-session"], "/history\n", engine.env)
    _clean(resumed)
    assert resumed.returncode == 0, resumed.stderr
    assert "user: hi bot\n" in resumed.stdout
    assert re.search(r'chatbot: You said: "hi bot"\..*I am Demo Chatbot', resumed.stdout)


def _showcase(ctx: TurnContext) -> None:
    ctx.reasoning("Which sources mention VectorShift?")
    ctx.search_results(
        "vectorshift",
        [
            {"title": "VectorShift", "url": "https://vectorshift.ai"},
            {"title": "Docs", "url": "https://docs.vectorshift.ai"},
        ],
    )
    ctx.agent_task("Summarise the sources")
    ctx.error("the summariser failed")
    partial = {"type": "data_type_message", "value": "Two sou", "status": "Streaming"}
    ctx.notify(partial, message_id="m-final")
    ctx.complete("Two sources found.", message_id="m-final")


def test_search_results_tasks_and_agent_errors_are_shown_apart(engine: LocalEngine) -> None:
    engine.add_agent("Showcase Agent", turn=_showcase)
    result = _chat(["--agent", "Showcase Agent", "-m", "search", "-m", "not sent"], env=engine.env)
    _clean(result)
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "[thinking] Which sources mention VectorShift?",
        "[search] 'vectorshift': 2 results",
        "  - VectorShift <https://vectorshift.ai>",
        "  - Docs <https://docs.vectorshift.ai>",
        "[task] Summarise the sources",
    ]
    # A partial message is printed as it grows, and its complete form adds the rest.
    assert lines[5:] == ["[error] the summariser failed", "Two sources found."]
    # Not on a terminal, a turn that reported an error fails the run and ends it.
    assert result.returncode == 1
    assert len(engine.received("post_message")) == 1


# --- errors: one line, non-zero ------------------------------------------------------


def test_an_unknown_agent_is_one_clear_line(engine: LocalEngine) -> None:
    result = _chat(["--agent", "No Such Agent", "-m", "hi"], env=engine.env)
    _clean(result)
    assert result.returncode == 1
    line = _error_line(result)
    assert 'could not fetch agent "No Such Agent"' in line
    assert "Not Found (404)" in line
    assert result.stdout == ""


def test_a_wrong_api_key_is_one_clear_line(engine: LocalEngine) -> None:
    result = _chat(["-m", "hi"], env={**engine.env, "VECTORSHIFT_API_KEY": "wrong-key-1234"})
    _clean(result)
    assert result.returncode == 1
    line = _error_line(result)
    assert "Unauthorized (401)" in line and "VECTORSHIFT_API_KEY" in line
    assert "wrong-key-1234" not in result.stderr


def test_an_unknown_session_is_one_clear_line(engine: LocalEngine) -> None:
    result = _chat(["--session", "0" * 24], "hi\n", engine.env)
    _clean(result)
    assert result.returncode == 1
    assert "session not found" in _error_line(result)


def test_an_unreachable_api_is_one_clear_line() -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = _chat(
            ["-m", "hi"],
            env={
                "VECTORSHIFT_API_KEY": "some-key-5678",
                "VECTORSHIFT_BASE_URL": f"http://127.0.0.1:{port}/v1",
            },
        )
    _clean(result)
    assert result.returncode == 1
    line = _error_line(result)
    assert 'could not fetch agent "Demo Agent"' in line and "Connection" in line


@pytest.mark.parametrize(
    "argv",
    [[], ["chat", "--chatbot-session"], ["chat", "--agent", "a", "--chatbot", "b"]],
)
def test_usage_errors_return_2(argv: List[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


# --- streaming and Ctrl-C -------------------------------------------------------------


def test_the_reply_is_printed_as_it_streams(engine: LocalEngine, gate: threading.Event) -> None:
    running = _Running(["--agent", "Gated Agent"], env=engine.env)
    try:
        running.send("hi\n")
        running.wait_for("Hello ", scaled(15))  # printed before the rest exists
        assert "world" not in running.stdout
        gate.set()
        running.wait_for("Hello world\n", scaled(10))
    finally:
        code = running.finish(scaled(10))
    assert code == 0
    assert running.stdout.count("Hello") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_streaming_exits_130_without_a_traceback(
    engine: LocalEngine, gate: threading.Event
) -> None:
    running = _Running(["--agent", "Gated Agent"], env=engine.env)
    try:
        running.send("hi\n")
        running.wait_for("Hello ", scaled(15))  # the reply is mid-stream
        running.process.send_signal(signal.SIGINT)
        code = running.finish(scaled(10))
    finally:
        running.finish(scaled(10))
    assert code == 130
    assert "world" not in running.stdout
    stderr = running.stderr.decode()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    # It said goodbye: the engine saw the session disconnected, not just dropped.
    engine.wait_for_frame("disconnect_session", timeout=scaled(5))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_with_the_embedded_engine_mid_reply() -> None:
    running = _Running(["--stream-delay", "0.05"])
    try:
        running.send("hello there\n")
        running.wait_for("You said", scaled(15))  # about 3 s of stream still to come
        running.process.send_signal(signal.SIGINT)
        code = running.finish(scaled(10))
    finally:
        running.finish(scaled(10))
    assert code == 130
    assert "running on the local VectorShift engine" not in running.stdout
    assert "Traceback" not in running.stderr.decode()


# --- options and prompts no other test reaches ---------------------------------------


def test_no_denies_every_tool_call_without_asking() -> None:
    result = _chat(["-m", "approve this", "--no"])
    _clean(result)
    assert result.returncode == 0, result.stderr
    assert "[approval] send_email(to='team@example.com'" in result.stdout
    assert "denied (--no)" in result.stdout
    assert "You denied send_email, so nothing was sent." in result.stdout
    assert "[y/N]" not in result.stdout  # never asked


def test_end_of_input_at_an_approval_prompt_denies_it() -> None:
    result = _chat(stdin="please approve this\n")  # then the input ends: no answer
    _clean(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "? [y/N] " in out and "Reason (optional)" not in out
    assert "denied (no answer before end of input)" in out
    assert "You denied send_email, so nothing was sent." in out


def test_help_lists_the_commands() -> None:
    result = _chat(stdin="/help\n")
    _clean(result)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "/history  show this session's messages",
        "/new      start a new session with the same agent",
        "/quit     leave (end of input and Ctrl-D too); the session stays resumable",
        "//text    send a message that starts with /",
    ]


def test_a_turn_that_times_out_is_one_line_and_the_script_stops(
    engine: LocalEngine, gate: threading.Event
) -> None:
    started = time.monotonic()
    result = _chat(["--agent", "Gated Agent", "--timeout", "0.5"], "hi\nnever sent\n", engine.env)
    _clean(result)
    assert result.returncode == 1, result.stderr
    assert "Hello " in result.stdout and "world" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: the turn did not end within 0.5s (session {_session_of(result)!r}); it may "
        "still be running on the engine"
    ], result.stderr
    assert [f["content"] for f in engine.received("post_message")] == ["hi"]
    assert time.monotonic() - started < scaled(15)


def _session_of(result: subprocess.CompletedProcess[str]) -> str:
    found = SESSION_LINE.search(result.stderr)
    assert found, result.stderr
    return found.group(1)


def test_local_uses_the_embedded_engine_even_with_a_key(engine: LocalEngine) -> None:
    # The key and URLs point at a real engine here; --local must ignore them.
    result = _chat(["--local", "-m", "hi"], env=engine.env)
    _clean(result)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^--local given: using the embedded local engine at http://127\.0\.0\.1:\d+/v1",
        result.stderr, re.M,
    ), result.stderr
    assert "running on the local VectorShift engine" in result.stdout
    assert f":{engine.port}/" not in result.stderr
    assert engine.received() == []  # nothing reached the engine the key points at


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize("no_color", [None, "1"], ids=["terminal", "NO_COLOR"])
def test_colour_on_a_terminal_unless_no_color(no_color: Optional[str]) -> None:
    import pty
    import select

    leader, follower = pty.openpty()
    env = _env({"NO_COLOR": no_color} if no_color else None)
    try:
        process = subprocess.Popen(
            _command(["--stream-delay", "0", "-m", "hi"]),
            stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE,
            env=env, cwd=ROOT,
        )
    finally:
        os.close(follower)
    out = b""
    deadline = time.monotonic() + scaled(20)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert process.wait(scaled(10)) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait(scaled(5))
        assert process.stderr is not None
        process.stderr.close()
    text = out.decode()
    assert 'You said: "hi".' in re.sub(r"\x1b\[[0-9;]*m", "", text)
    if no_color:
        assert "\x1b" not in text, text
    else:
        assert "\x1b[2m[tool] word_count(text='hi')\x1b[0m" in text, text
