"""Fidelity, proven by a client nobody here wrote: the official SDK against our engine.

``_official_driver.py`` runs in the official ``vectorshift==0.1.15``'s own virtualenv
(see ``conftest.py``), pointed at an in-process :class:`LocalEngine` by nothing but the
three environment variables of ``engine.env``. It fetches the demo agent and chatbot
by name, creates sessions, streams turns, approves one tool call and denies another,
sends a batch with an inline file, reads history (also mid-turn), disconnects and
resumes by id, terminates, runs the SDK's own one-shot ``agent.run()``, waits for a
pong, and tries a wrong key. It runs once per module; each test below checks one part
of it from both ends: what the SDK saw (the driver's JSON) and what the engine
received (exact frame shapes, key order included, as PROTOCOL.md §3.2 and §3.6 give
them).

The SDK's own defects (PROTOCOL.md §7) are worked around in the driver, never here:
the point is that the *engine* speaks the protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest

from vectorshift_sync.testing import LocalEngine

#: Same knob as tests/conftest.py: multiply every bound on a slow machine.
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))

DRIVER = Path(__file__).with_name("_official_driver.py")

#: Generous: the first test pays for the cold virtualenv (python -m venv + pip install).
pytestmark = pytest.mark.timeout(600)

#: Environment a developer or CI may carry that must not reach the SDK's process.
_SCRUBBED_PREFIXES = ("VECTORSHIFT_", "PYTHON")
_SCRUBBED = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "VIRTUAL_ENV",
}


@dataclass
class Run:
    """One run of the driver: the SDK's report and the engine it ran against."""

    report: Dict[str, Any]
    engine: LocalEngine
    stderr: str
    seconds: float

    def scenario(self, name: str) -> Dict[str, Any]:
        """A scenario's results; fail with the driver's traceback if it did not finish."""
        result = self.report["scenarios"][name]
        if not result["ok"]:
            pytest.fail(
                f"official SDK scenario {name!r} failed: {result.get('error')}\n"
                f"{result.get('traceback', '')}\n--- driver stderr ---\n{self.stderr}"
            )
        return result

    def frames(self, session_id: str) -> List[Dict[str, Any]]:
        """Every client frame the engine received for one session, in order."""
        return [
            f
            for f in self.engine.received()
            if isinstance(f, dict) and f.get("session_id") == session_id
        ]


def _driver_env(engine_env: Mapping[str, str]) -> Dict[str, str]:
    """The SDK's process sees the engine's three variables and nothing of ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name.upper() not in _SCRUBBED
    }
    env.update(engine_env)
    env["PYTHONIOENCODING"] = "utf-8"
    # The SDK calls load_dotenv() at import (PROTOCOL.md §1.1): no stray .env here.
    env["PYTHON_DOTENV_DISABLED"] = "1"
    env["VS_COMPAT_STEP_TIMEOUT"] = str(20 * TIME_SCALE)
    env["VS_COMPAT_PONG_SLACK"] = str(4 * TIME_SCALE)
    return env


@pytest.fixture(scope="module")
def run(official_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Start an engine, run the driver once under the official SDK, keep the engine up."""
    # A small delay between deltas, so a mid-turn get_messages() reply lands while the
    # answer is still streaming (that is what makes D8 visible to the driver).
    with LocalEngine(stream_delay=0.01) as engine:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [str(official_python), str(DRIVER)],
                env=_driver_env(engine.env),
                cwd=str(tmp_path_factory.mktemp("official-sdk")),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=120 * TIME_SCALE,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the official SDK driver hung: {exc}\nstderr: {exc.stderr!r}")
        seconds = time.monotonic() - started
        lines = proc.stdout.strip().splitlines()
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            pytest.fail(
                f"the official SDK driver printed no report (exit {proc.returncode})\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        assert proc.returncode == 0, proc.stderr
        yield Run(report, engine, proc.stderr, seconds)


def assert_frame(actual: Any, expected: Mapping[str, Any]) -> None:
    """``actual`` is exactly ``expected``: same keys, same order, same values."""
    assert isinstance(actual, dict), actual
    assert list(actual.items()) == list(expected.items())


def events_of(turn: Mapping[str, Any], kind: str) -> List[Dict[str, Any]]:
    return [e for e in turn["events"] if e["type"] == kind]


def statuses(turn: Mapping[str, Any]) -> List[Optional[str]]:
    return [e["data"].get("status") for e in events_of(turn, "participant_status")]


def reply_of(turn: Mapping[str, Any]) -> Dict[str, Any]:
    """The agent's answer: the MESSAGE_COMPLETE that is not the echo of the user's text."""
    replies = [e for e in events_of(turn, "message_complete") if e["data"]["text"] != turn["sent"]]
    assert len(replies) == 1, turn["events"]
    return replies[0]


def assert_streamed_reply(turn: Mapping[str, Any]) -> str:
    """Deltas of one message id, indexes 0..n-1, that add up to the Complete text."""
    reply = reply_of(turn)
    deltas = events_of(turn, "message_delta")
    assert deltas, "the answer was not streamed"
    assert {d["message_id"] for d in deltas} == {reply["message_id"]}
    assert [d["data"]["index"] for d in deltas] == list(range(len(deltas)))
    assert "".join(d["data"]["delta"] for d in deltas) == reply["data"]["text"]
    return str(reply["data"]["text"])


# -- the run as a whole -------------------------------------------------------------------


def test_the_official_sdk_itself_ran(run: Run) -> None:
    versions = run.report["versions"]
    assert versions["vectorshift"] == "0.1.15"
    print(
        f"official SDK {versions['vectorshift']} (aiohttp {versions['aiohttp']}, "
        f"Python {versions['python']}): driver {run.seconds:.1f} s"
    )


def test_the_sdk_logged_no_complaint_about_any_engine_frame(run: Run) -> None:
    # "Unknown server message type", "Received non-JSON WS message", "Subscriber queue
    # full", "Background listener error": any of them means a frame the SDK could not use.
    assert run.report["sdk_log"] == []
    assert "Unclosed" not in run.stderr


def test_every_connection_used_the_documented_path_and_bearer_key(run: Run) -> None:
    connections = run.engine.connections
    assert connections
    for record in connections:
        assert record.path == "/v1/ws/session"
        assert record.headers["Authorization"] == f"Bearer {run.engine.api_key}"


# -- agent: fetch, create, turns ------------------------------------------------------------


def test_fetch_agent_by_name(run: Run) -> None:
    agent = run.scenario("agent")
    assert agent["agent"]["name"] == "Demo Agent"
    assert agent["agent"]["type"] == "conversational"
    # Only fields the SDK knows: an unknown top-level key makes it warn (§2.2).
    assert agent["fetch_warnings"] == []
    info = run.engine.sessions[agent["session_id"]]
    assert (info.owner_type, info.owner_id, info.owner_name) == (
        "agent",
        agent["agent"]["id"],
        "Demo Agent",
    )


def test_session_frames_are_exactly_what_the_official_sdk_sends(run: Run) -> None:
    agent = run.scenario("agent")
    sid, aid = agent["session_id"], agent["agent"]["id"]
    approval_id = agent["turn2"]["approvals_answered"][0]
    create = {"type": "create_session", "object_type": "agent", "object_id": aid}
    assert any(
        isinstance(f, dict) and list(f.items()) == list(create.items())
        for f in run.engine.received("create_session")
    )

    def simple(kind: str) -> Dict[str, Any]:
        return {"type": kind, "session_id": sid}

    def post(content: Any) -> Dict[str, Any]:
        return {"type": "post_message", "session_id": sid, "content": content}

    approve = post(
        {"type_string": "response_message", "value": {"tool_call_approval": {"confirm": {}}}}
    )
    approve["parent_message_id"] = approval_id
    # One list per connection, in the engine's accept order. Within a connection the
    # order is the SDK's; across connections it is not fixed: disconnect() and
    # terminate() do not wait for the engine, so the next connection's frames may be
    # read before the old connection's last one.
    expected = [
        [
            simple("connect_session"),  # right after session_created
            post(agent["turn1"]["sent"]),
            post(agent["turn2"]["sent"]),
            approve,
            simple("get_messages"),
            simple("disconnect_session"),
        ],
        [
            simple("connect_session"),  # resume_session(sid)
            simple("get_messages"),
            post(agent["turn3"]["sent"]),
            simple("get_messages"),  # mid-turn
            simple("terminate_session"),
        ],
    ]
    # Each attempt to resume the terminated session: connect, then the D2 clean-up.
    expected += [
        [simple("connect_session"), simple("disconnect_session")]
    ] * agent["resume_terminated_attempts"]
    per_connection = [
        [f for f in record.frames if isinstance(f, dict) and f.get("session_id") == sid]
        for record in run.engine.connections
    ]
    per_connection = [frames for frames in per_connection if frames]
    assert [[f["type"] for f in frames] for frames in per_connection] == [
        [f["type"] for f in frames] for frames in expected
    ]
    for actual_frames, wanted_frames in zip(per_connection, expected):
        for actual, wanted in zip(actual_frames, wanted_frames):
            assert_frame(actual, wanted)


def test_a_new_session_is_connected_and_acked(run: Run) -> None:
    agent = run.scenario("agent")
    assert agent["is_connected"] is True
    assert len(agent["session_id"]) == 24
    int(agent["session_id"], 16)  # a Mongo-style ObjectId, as the real server's
    sid = agent["session_id"]
    created = {"type": "session_created", "session_id": sid}
    acked = {"type": "connect_session", "session_id": sid, "success": True}
    (record,) = [r for r in run.engine.connections if created in r.sent]
    server = [f for f in record.sent if isinstance(f, dict) and f.get("session_id") == sid]
    assert_frame(server[0], created)
    assert_frame(server[1], acked)
    # connect() does not wait for that ack (§6.2 step 6), and the SDK delivers it only
    # to a listen() that already exists when it arrives (D5): whether the first turn's
    # listener sees it depends on the SDK's task scheduling, not on the engine.
    seen = events_of(agent["turn1"], "session_connected")
    assert seen in (
        [],
        [{"type": "session_connected", "session_id": sid, "message_id": None, "data": acked}],
    )


def test_streamed_turn_ends_processing_to_idle(run: Run) -> None:
    turn = run.scenario("agent")["turn1"]
    kinds = [e["type"] for e in turn["events"]]
    assert turn["ended_by"] == "idle_after_processing"
    assert "error" not in kinds
    assert [k for k in kinds if k != "session_connected"][0] == "message_posted"
    assert statuses(turn) == ["Processing", "Idle"]
    assert kinds[-1] == "participant_status"
    processing = kinds.index("participant_status")
    # The echo of the user's post (D12: the SDK cannot tell it from the answer).
    echo = [e for e in events_of(turn, "message_complete") if e["data"]["text"] == turn["sent"]]
    assert len(echo) == 1
    # Everything the agent does happens between Processing and Idle.
    for kind in ("thinking", "tool_call", "message_delta"):
        assert processing < kinds.index(kind) < len(kinds) - 1, kind
    thinking = events_of(turn, "thinking")[0]["data"]
    assert thinking["content"] and thinking["summary"]
    calls = events_of(turn, "tool_call")
    assert [c["data"]["status"] for c in calls] == ["Running", "Completed"]
    assert len({c["data"]["tool_id"] for c in calls}) == 1
    assert calls[0]["data"]["tool_name"] == "word_count"
    answer = assert_streamed_reply(turn)
    assert turn["sent"] in answer


def test_approval_is_answered_and_the_turn_goes_on(run: Run) -> None:
    agent = run.scenario("agent")
    turn = agent["turn2"]
    kinds = [e["type"] for e in turn["events"]]
    assert turn["ended_by"] == "idle_after_processing"
    (request,) = events_of(turn, "approval_request")
    assert request["data"]["type"] == "tool_call_approval"
    assert request["data"]["tool_name"] == "send_email"
    assert request["data"]["tool_id"] and request["data"]["tool_call_id"]
    assert turn["approvals_answered"] == [request["message_id"]]
    # Paused, not finished: AwaitingApproval, and no Idle until the answer was in.
    assert statuses(turn) == ["Processing", "AwaitingApproval", "Processing", "Idle"]
    after = turn["events"][kinds.index("approval_request") + 1 :]
    # The answer's ack, then the approved tool runs and the answer streams.
    (ack,) = events_of({"events": after}, "message_posted")
    assert ack["data"]["success"] is True
    sent = [c["data"] for c in events_of({"events": after}, "tool_call")]
    assert [(c["tool_name"], c["status"]) for c in sent] == [
        ("send_email", "Running"),
        ("send_email", "Completed"),
    ]
    answer = assert_streamed_reply(turn)
    assert "approved" in answer
    # The approval reply travelled with the request's id as parent (§3.6).
    replies = [
        f
        for f in run.frames(agent["session_id"])
        if isinstance(f.get("content"), dict)
        and f["content"].get("type_string") == "response_message"
    ]
    assert [f["parent_message_id"] for f in replies] == [request["message_id"]]


# -- history, disconnect, resume, terminate ---------------------------------------------------


def test_get_messages_returns_the_conversation(run: Run) -> None:
    agent = run.scenario("agent")
    history = agent["history_before_disconnect"]
    engine_history = run.engine.history(agent["session_id"])
    assert [m["id"] for m in history] == [m["id"] for m in engine_history[: len(history)]]
    assert {m["session_id"] for m in history} == {agent["session_id"]}
    users = [m["text"] for m in history if m["role"] == "user"]
    assert users == [agent["turn1"]["sent"], agent["turn2"]["sent"]]
    answers = [
        m["text"]
        for m in history
        if m["role"] == "object" and m["content_type"] == "data_type_message"
    ]
    assert answers == [
        reply_of(agent["turn1"])["data"]["text"],
        reply_of(agent["turn2"])["data"]["text"],
    ]
    assert {m["status"] for m in history if m["content_type"] == "data_type_message"} == {
        "complete"
    }
    kinds = {m["content_type"] for m in history}
    assert {"thinking", "tool_call", "tool_call_approval"} <= kinds


def test_disconnect_then_resume_by_id_keeps_the_session(run: Run) -> None:
    agent = run.scenario("agent")
    sid = agent["session_id"]
    assert agent["connected_after_disconnect"] is False
    assert agent["resumed_session_id"] == sid
    # Nothing replays on resume (§6.8), but the history is all there.
    assert agent["history_after_resume"] == agent["history_before_disconnect"]
    turn = agent["turn3"]
    assert turn["ended_by"] == "idle_after_processing"
    assert turn["events"][0]["type"] == "message_posted"  # resume awaited its own ack
    assert turn["sent"] in assert_streamed_reply(turn)
    users = [m for m in run.engine.history(sid) if "user_id" in (m.get("sender") or {})]
    assert len(users) == 3
    # Two different connections carried the session.
    carriers = [
        r.index
        for r in run.engine.connections
        if any(
            isinstance(f, dict)
            and f.get("type") == "connect_session"
            and f.get("session_id") == sid
            for f in r.frames
        )
    ]
    assert len(carriers) >= 2


def test_get_messages_while_a_turn_streams(run: Run) -> None:
    agent = run.scenario("agent")
    turn = agent["turn3"]
    mid = agent["history_mid_turn"]
    assert mid is not None, "the hook never ran: no delta was seen"
    assert turn["sent"] in [m["text"] for m in mid if m["role"] == "user"]
    # D8: the reply also reached the running listen() as MESSAGE_COMPLETE(text=None);
    # the driver skipped it, and the turn still ended on Idle.
    assert turn["history_markers_skipped"] == 1
    assert len(mid) < len(run.engine.history(agent["session_id"]))


def test_terminate_then_resume_fails(run: Run) -> None:
    agent = run.scenario("agent")
    sid = agent["session_id"]
    assert agent["connected_after_terminate"] is False
    assert run.engine.sessions[sid].terminated is True
    failed = agent["resume_terminated"]
    assert failed["failed"] is True, "resuming a terminated session succeeded"
    assert failed["is_session_error"] is True
    assert failed["class"] == "SessionError"
    assert "terminated" in failed["message"]
    unknown = agent["resume_unknown"]
    assert unknown["failed"] is True and unknown["is_session_error"] is True
    assert "not found" in unknown["message"]


def test_a_batch_with_an_inline_file_is_one_turn(run: Run) -> None:
    batch = run.scenario("batch_and_deny")
    sid = batch["session_id"]
    turn = batch["batch"]
    assert turn["ended_by"] == "idle_after_processing"
    (ack,) = events_of(turn, "messages_posted")
    assert ack["data"] == {"type": "post_messages", "session_id": sid, "success": True}
    assert statuses(turn) == ["Processing", "Idle"]
    answer = assert_streamed_reply(turn)
    assert "table.csv (text/csv, 8 bytes)" in answer  # the engine decoded the file
    file_item = {
        "type_string": "file",
        "value": {
            "raw_bytes": "YSxiCjEsMgo=",  # base64 of b"a,b\n1,2\n"
            "metadata": {"name": "table.csv", "mime_type": "text/csv"},
        },
    }
    (frame,) = [f for f in run.frames(sid) if f["type"] == "post_messages"]
    assert_frame(
        frame,
        {"type": "post_messages", "session_id": sid, "messages": [turn["sent"], file_item]},
    )


def test_a_denied_approval_explains_and_runs_nothing(run: Run) -> None:
    batch = run.scenario("batch_and_deny")
    sid = batch["session_id"]
    turn = batch["denied"]
    assert turn["ended_by"] == "idle_after_processing"
    (request,) = events_of(turn, "approval_request")
    assert turn["approvals_answered"] == [request["message_id"]]
    assert statuses(turn) == ["Processing", "AwaitingApproval", "Processing", "Idle"]
    assert [c["data"]["tool_name"] for c in events_of(turn, "tool_call")] == [
        "word_count",
        "word_count",
    ]
    assert "Not today, thanks." in assert_streamed_reply(turn)
    deny = {
        "type": "post_message",
        "session_id": sid,
        "content": {
            "type_string": "response_message",
            "value": {"tool_call_approval": {"deny": "Not today, thanks."}},
        },
        "parent_message_id": request["message_id"],
    }
    assert [f["type"] for f in run.frames(sid)] == [
        "connect_session",
        "post_messages",
        "post_message",
        "post_message",
        "disconnect_session",
    ]
    assert_frame(run.frames(sid)[3], deny)


# -- chatbot, one-shot run, heartbeat, auth ------------------------------------------------------


def test_chatbot_session_by_name(run: Run) -> None:
    chatbot = run.scenario("chatbot")
    assert chatbot["chatbot"]["name"] == "Demo Chatbot"
    assert chatbot["fetch_warnings"] == []
    sid = chatbot["session_id"]
    info = run.engine.sessions[sid]
    assert (info.owner_type, info.owner_id) == ("chatbot", chatbot["chatbot"]["id"])
    create = {
        "type": "create_session",
        "object_type": "chatbot",
        "object_id": chatbot["chatbot"]["id"],
    }
    assert any(
        list(f.items()) == list(create.items()) for f in run.engine.received("create_session")
    )
    turn = chatbot["turn"]
    assert turn["ended_by"] == "agent_reply_complete"
    assert turn["sent"] in assert_streamed_reply(turn)
    # Leaving `async with` disconnects, never terminates.
    assert chatbot["connected_after_exit"] is False
    assert [f["type"] for f in run.frames(sid)] == [
        "connect_session",
        "post_message",
        "disconnect_session",
    ]
    assert info.terminated is False


def test_the_sdks_own_one_shot_run_completes(run: Run) -> None:
    one_shot = run.scenario("one_shot")
    assert one_shot["status"] == "complete", one_shot
    assert one_shot["error"] is None
    assert one_shot["final_message"].startswith('You said: "One-shot hello"')
    assert one_shot["event_types"].count("participant_status") == 2
    # Its clean-up terminates the hidden session (§6.10).
    assert [f["type"] for f in run.frames(one_shot["session_id"])] == [
        "connect_session",
        "post_message",
        "terminate_session",
    ]


def test_ping_session_is_answered_with_pong(run: Run) -> None:
    pong = run.scenario("pong")
    sid = pong["session_id"]
    assert pong["pong"]["type"] == "pong"
    assert pong["pong"]["session_id"] == sid
    assert 4.0 <= pong["after_seconds"] <= 5.0 + 4 * TIME_SCALE
    pings = [f for f in run.frames(sid) if f["type"] == "ping_session"]
    assert pings
    assert_frame(pings[0], {"type": "ping_session", "session_id": sid})


def test_a_wrong_key_is_refused_on_http_and_websocket(run: Run) -> None:
    bad = run.scenario("bad_key")
    assert bad["http"]["failed"] is True
    assert (bad["http"]["class"], bad["http"]["status_code"]) == ("AuthenticationError", 401)
    # The SDK does not map the handshake status (D16): a SessionError naming the 401.
    assert bad["ws"]["failed"] is True
    assert bad["ws"]["class"] == "SessionError"
    assert "401" in bad["ws"]["message"]
