"""The session protocol, server side: exact frames for every client frame type, the demo
turn, approvals, history across connections, resume and terminate, malformed frames."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
from test_engine_support import (
    RawClient,
    agent_id,
    content_of,
    engine_running,
    first,
    is_status,
    is_type,
    scaled,
)

from vectorshift_sync.testing import LocalEngine, TurnContext

pytestmark = pytest.mark.timeout(15)

USER = {"user_id": "local-user"}


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with engine_running() as running:
        yield running


@pytest.fixture
def client(engine: LocalEngine) -> Iterator[RawClient]:
    with RawClient(engine) as raw:
        yield raw


def _is_hex24(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 24 and int(value, 16) >= 0


def test_create_session_then_connect(engine: LocalEngine, client: RawClient) -> None:
    demo = agent_id(engine)
    client.send({"type": "create_session", "object_type": "agent", "object_id": demo})
    created = client.recv()
    assert isinstance(created, dict) and set(created) == {"type", "session_id"}
    assert created["type"] == "session_created" and _is_hex24(created["session_id"])
    sid = created["session_id"]
    client.send({"type": "connect_session", "session_id": sid})
    assert client.recv() == {"type": "connect_session", "session_id": sid, "success": True}
    info = engine.sessions[sid]
    assert (info.owner_type, info.owner_id, info.owner_name) == ("agent", demo, "Demo Agent")
    assert info.connections == (0,) and not info.terminated


def test_demo_turn_exact_frames(engine: LocalEngine, client: RawClient) -> None:
    demo = agent_id(engine)
    sid = client.open_session(demo)
    client.post(sid, "count these four words")
    frames = client.turn()
    agent = {"object_id": demo, "object_type": "agent"}

    assert frames[0] == {"type": "post_message", "session_id": sid, "success": True}
    echo = frames[1]
    assert isinstance(echo, dict) and _is_hex24(echo["message"]["id"])
    assert echo == {
        "type": "message_notification",
        "session_id": sid,
        "message": {
            "id": echo["message"]["id"],
            "sender": USER,
            "content": {
                "type": "data_type_message",
                "value": "count these four words",
                "status": "Complete",
            },
        },
    }
    assert frames[2] == {
        "type": "participant_status",
        "session_id": sid,
        "message": {"status": "Processing"},
    }
    thinking = content_of(frames[3])
    assert thinking["type"] == "thinking" and thinking["content"] and thinking["summary"]
    call, result = frames[4], frames[5]
    assert isinstance(call, dict) and isinstance(result, dict)
    assert call["message"]["sender"] == agent
    assert content_of(call) == {
        "type": "tool_call",
        "tool_name": "word_count",
        "tool_id": content_of(call)["tool_id"],
        "status": "Running",
        "arguments": {"text": "count these four words"},
    }
    assert content_of(result) == {
        "type": "tool_call",
        "tool_name": "word_count",
        "tool_id": content_of(call)["tool_id"],
        "status": "Completed",
        "result": {"words": 4, "characters": 22},
    }
    assert result["message"]["id"] == call["message"]["id"]  # the call, updated

    deltas = [f for f in frames[6:-2] if isinstance(f, dict)]
    assert deltas and all(f["type"] == "message_delta" for f in deltas)
    message_id = deltas[0]["message_id"]
    assert [f["index"] for f in deltas] == list(range(len(deltas)))
    assert {f["message_id"] for f in deltas} == {message_id}
    assert set(deltas[0]) == {"type", "session_id", "message_id", "index", "value"}
    final = frames[-2]
    assert isinstance(final, dict) and final["message"]["id"] == message_id
    assert final["message"]["sender"] == agent
    answer = content_of(final)
    assert answer["type"] == "data_type_message" and answer["status"] == "Complete"
    assert answer["value"] == "".join(f["value"] for f in deltas)
    assert '"count these four words"' in answer["value"] and "4 words" in answer["value"]
    assert frames[-1] == {
        "type": "participant_status",
        "session_id": sid,
        "message": {"status": "Idle"},
    }


def test_demo_chatbot_session(engine: LocalEngine, client: RawClient) -> None:
    bot = agent_id(engine, "Demo Chatbot", "chatbot")
    sid = client.open_session(bot, "chatbot")
    client.post(sid, "hi")
    frames = client.turn()
    final = frames[-2]
    assert isinstance(final, dict)
    assert final["message"]["sender"] == {"object_id": bot, "object_type": "chatbot"}
    assert "Demo Chatbot" in content_of(final)["value"]


@pytest.mark.parametrize(
    ("object_type", "object_id", "error"),
    [
        ("agent", "missing", "agent not found: missing"),
        ("chatbot", "missing", "chatbot not found: missing"),
    ],
)
def test_create_session_for_unknown_object_is_an_error_frame(
    client: RawClient, object_type: str, object_id: str, error: str
) -> None:
    client.send({"type": "create_session", "object_type": object_type, "object_id": object_id})
    assert client.recv() == {"type": "error", "error": error, "request_type": "create_session"}


def test_create_session_for_the_wrong_kind_or_a_functional_agent(
    engine: LocalEngine, client: RawClient
) -> None:
    bot = agent_id(engine, "Demo Chatbot", "chatbot")
    client.send({"type": "create_session", "object_type": "agent", "object_id": bot})
    assert client.recv() == {
        "type": "error",
        "error": f"agent not found: {bot}",
        "request_type": "create_session",
    }
    functional = engine.add_agent("Batch", agent_type="functional")
    client.send({"type": "create_session", "object_type": "agent", "object_id": functional})
    assert client.recv() == {
        "type": "error",
        "error": f"agent {functional} is not conversational",
        "request_type": "create_session",
    }


def test_unknown_session_ids(client: RawClient) -> None:
    sid = "0" * 24
    client.send({"type": "connect_session", "session_id": sid})
    assert client.recv() == {
        "type": "connect_session",
        "session_id": sid,
        "success": False,
        "error": "session not found",
    }
    for kind in ("post_message", "post_messages"):
        body = {"content": "x"} if kind == "post_message" else {"messages": ["x"]}
        client.send({"type": kind, "session_id": sid, **body})
        assert client.recv() == {
            "type": kind,
            "session_id": sid,
            "success": False,
            "error": "session not found",
        }
    for kind in ("get_messages", "ping_session", "disconnect_session", "terminate_session"):
        client.send({"type": kind, "session_id": sid})
        assert client.recv() == {
            "type": "error",
            "session_id": sid,
            "error": "session not found",
            "request_type": kind,
        }


def test_ping_pong_and_disconnect(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    client.send({"type": "ping_session", "session_id": sid})
    assert client.recv() == {"type": "pong", "session_id": sid}
    client.send({"type": "disconnect_session", "session_id": sid})
    assert client.recv() == {"type": "disconnect_session", "session_id": sid, "success": True}
    assert engine.sessions[sid].connections == ()
    assert engine.send_raw("{}", session_id=sid) == 0  # detached: turn output goes nowhere
    client.connect(sid)  # the session survived
    assert engine.sessions[sid].connections == (0,)


def test_post_messages_joins_text_and_decodes_files(engine: LocalEngine) -> None:
    seen: List[TurnContext] = []
    bot = engine.add_agent("Files", turn=lambda ctx: seen.append(ctx))
    png = b"\x89PNG\r\n\x1a\n-bytes"
    file_item = {
        "type_string": "file",
        "value": {
            "raw_bytes": base64.b64encode(png).decode(),
            "metadata": {"name": "chart.png", "mime_type": "image/png"},
        },
    }
    messages = ["summarize", file_item, {"type_string": "text/plain", "value": "and this"}]
    with RawClient(engine) as client:
        sid = client.open_session(bot)
        client.send({"type": "post_messages", "session_id": sid, "messages": messages})
        frames = client.turn()
    assert frames[0] == {"type": "post_messages", "session_id": sid, "success": True}
    assert content_of(frames[1])["value"] == "summarize\nand this"
    assert [f["message"]["status"] for f in frames[2:] if isinstance(f, dict)] == [
        "Processing",
        "Idle",
    ]
    (ctx,) = seen
    assert ctx.text == "summarize\nand this" and ctx.content == messages
    assert [(f.name, f.mime_type, f.data) for f in ctx.files] == [("chart.png", "image/png", png)]


def test_large_inline_file_is_accepted(engine: LocalEngine) -> None:
    """Files come base64-inline in one frame: far above websockets' 1 MiB default."""
    sizes: List[int] = []
    bot = engine.add_agent("Big", turn=lambda ctx: sizes.extend(len(f.data) for f in ctx.files))
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB
    item = {
        "type_string": "file",
        "value": {
            "raw_bytes": base64.b64encode(data).decode(),
            "metadata": {"name": "big.bin", "mime_type": "application/octet-stream"},
        },
    }
    with RawClient(engine) as client:
        sid = client.open_session(bot)
        client.send({"type": "post_messages", "session_id": sid, "messages": ["look", item]})
        assert client.turn()[0] == {"type": "post_messages", "session_id": sid, "success": True}
    assert sizes == [len(data)]


def test_bad_file_content_is_refused_in_the_ack(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    bad = {"type_string": "file", "value": {"raw_bytes": "@@not base64@@"}}
    client.post(sid, bad)
    assert client.recv() == {
        "type": "post_message",
        "session_id": sid,
        "success": False,
        "error": "file raw_bytes is not valid base64",
    }


def _answer(client: RawClient, sid: str, parent: str, decision: Dict[str, Any]) -> None:
    client.send(
        {
            "type": "post_message",
            "session_id": sid,
            "content": {
                "type_string": "response_message",
                "value": {"tool_call_approval": decision},
            },
            "parent_message_id": parent,
        }
    )


def _until_approval(client: RawClient) -> List[Any]:
    return client.recv_until(is_status("AwaitingApproval"))


def test_demo_approval_confirmed(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    client.post(sid, "Please approve this email")
    before = _until_approval(client)
    request = before[-2]
    assert isinstance(request, dict)
    content = content_of(request)
    assert set(content) == {"type", "tool_id", "tool_name", "tool_call_id", "arguments"}
    assert content["type"] == "tool_call_approval" and content["tool_name"] == "send_email"
    assert content["arguments"]["body"] == "Please approve this email"
    assert before[-1] == {
        "type": "participant_status",
        "session_id": sid,
        "message": {"status": "AwaitingApproval"},
    }

    # Pings are answered while the turn waits for the user.
    client.send({"type": "ping_session", "session_id": sid})
    assert client.recv() == {"type": "pong", "session_id": sid}

    _answer(client, sid, request["message"]["id"], {"confirm": {"cc": "boss@example.com"}})
    after = client.turn()
    assert after[0] == {"type": "post_message", "session_id": sid, "success": True}
    assert is_status("Processing")(after[1])
    calls = [content_of(f) for f in after if is_type("message_notification")(f)]
    sent = [c for c in calls if c.get("tool_name") == "send_email"]
    assert [c["status"] for c in sent] == ["Running", "Completed"]
    assert sent[0]["arguments"]["cc"] == "boss@example.com"
    assert sent[1]["result"]["status"] == "sent"
    assert "You approved send_email" in calls[-1]["value"]


def test_demo_approval_denied(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    client.post(sid, "approve sending it")
    request = _until_approval(client)[-2]
    assert isinstance(request, dict)
    _answer(client, sid, request["message"]["id"], {"deny": "Not today."})
    after = client.turn()
    notes = [content_of(f) for f in after if is_type("message_notification")(f)]
    assert not [c for c in notes if c.get("tool_name") == "send_email"]
    assert (
        'You denied send_email, so nothing was sent. Your reason: "Not today."'
        in notes[-1]["value"]
    )
    history = engine.history(sid)
    assert [item["content"]["type"] for item in history] == [
        "data_type_message",
        "thinking",
        "tool_call",
        "tool_call_approval",
        "data_type_message",
    ]


def test_approval_reply_without_a_pending_request(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    _answer(client, sid, "nope", {"confirm": {}})
    assert client.recv() == {
        "type": "post_message",
        "session_id": sid,
        "success": False,
        "error": "no pending approval with id nope",
    }
    client.send(
        {
            "type": "post_message",
            "session_id": sid,
            "content": {"type_string": "response_message", "value": {}},
            "parent_message_id": "nope",
        }
    )
    reply = client.recv()
    assert isinstance(reply, dict) and reply["success"] is False


def test_history_across_connections_and_resume(engine: LocalEngine) -> None:
    demo = agent_id(engine)
    with RawClient(engine) as first_client:
        sid = first_client.open_session(demo)
        first_client.post(sid, "first message")
        first_turn = first_client.turn()
    with RawClient(engine) as second:
        second.connect(sid)
        second.send({"type": "get_messages", "session_id": sid})
        reply = second.recv()
        assert isinstance(reply, dict) and reply["type"] == "get_messages"
        items = reply["messages"]
        assert items == engine.history(sid)
        assert [set(i) for i in items] == [{"id", "session_id", "sender", "content"}] * 4
        assert items[0]["sender"] == USER
        assert items[0]["content"] == {
            "type": "data_type_message",
            "value": "first message",
            "status": "Complete",
        }
        assert items[2]["content"]["status"] == "Completed"  # the tool call, updated
        final = first_turn[-2]
        assert isinstance(final, dict) and items[3]["id"] == final["message"]["id"]
        assert items[3]["sender"] == {"object_id": demo, "object_type": "agent"}
        second.post(sid, "second message")
        answer = content_of(second.turn()[-2])["value"]
        assert "This is message 2 of this session" in answer
    assert len(engine.history(sid)) == 8


def test_terminate_then_resume_fails(engine: LocalEngine, client: RawClient) -> None:
    sid = client.open_session(agent_id(engine))
    client.send({"type": "terminate_session", "session_id": sid})
    assert client.recv() == {"type": "terminate_session", "session_id": sid, "success": True}
    assert engine.sessions[sid].terminated
    client.post(sid, "still there?")
    assert client.recv() == {
        "type": "post_message",
        "session_id": sid,
        "success": False,
        "error": "session is terminated",
    }
    with RawClient(engine) as other:
        other.send({"type": "connect_session", "session_id": sid})
        assert other.recv() == {
            "type": "connect_session",
            "session_id": sid,
            "success": False,
            "error": "session is terminated",
        }
        other.send({"type": "get_messages", "session_id": sid})
        assert other.recv() == {"type": "get_messages", "session_id": sid, "messages": []}


def test_terminated_session_resumable_when_configured(engine: LocalEngine) -> None:
    engine.terminated_resumable = True
    with RawClient(engine) as client:
        sid = client.open_session(agent_id(engine))
        client.send({"type": "terminate_session", "session_id": sid})
        client.recv()
        client.connect(sid)
        assert not engine.sessions[sid].terminated
        client.post(sid, "back again")
        assert client.turn()[0] == {"type": "post_message", "session_id": sid, "success": True}


def test_terminate_stops_a_running_turn(engine: LocalEngine, client: RawClient) -> None:
    started, ended = threading.Event(), threading.Event()

    def slow(ctx: TurnContext) -> None:
        started.set()
        try:
            ctx.wait(60)
        finally:
            ended.set()

    sid = client.open_session(engine.add_agent("Slow", turn=slow))
    client.post(sid, "go")
    client.recv_until(is_status("Processing"))
    assert started.wait(scaled(5))
    client.send({"type": "terminate_session", "session_id": sid})
    assert client.recv() == {"type": "terminate_session", "session_id": sid, "success": True}
    assert ended.wait(scaled(5))


MALFORMED = [
    ("not json at all", "frame is not valid JSON", None),
    ("[1, 2]", "frame must be a JSON object", None),
    ('"a string"', "frame must be a JSON object", None),
    ("{}", "frame has no type", None),
    ('{"type": 5}', "frame has no type", None),
    ('{"type": "bogus", "session_id": "s"}', "unknown message type: bogus", "bogus"),
    ('{"type": "post_message", "content": "x"}', "session_id is required", "post_message"),
    ('{"type": "ping_session", "session_id": ""}', "session_id is required", "ping_session"),
    (
        '{"type": "create_session", "object_type": "robot", "object_id": "x"}',
        "object_type must be 'agent' or 'chatbot'",
        "create_session",
    ),
    (
        '{"type": "create_session", "object_type": "agent"}',
        "object_id is required",
        "create_session",
    ),
    ('{"type": "post_message", "session_id": "s"}', "content is required", "post_message"),
    (
        '{"type": "post_messages", "session_id": "s", "messages": "x"}',
        "messages must be a list",
        "post_messages",
    ),
]


@pytest.mark.parametrize(("text", "error", "request_type"), MALFORMED)
def test_malformed_client_frames_get_an_error_frame(
    engine: LocalEngine, client: RawClient, text: str, error: str, request_type: Any
) -> None:
    client.send_text(text)
    reply = client.recv()
    assert isinstance(reply, dict)
    reply.pop("session_id", None)
    assert reply == {"type": "error", "error": error, "request_type": request_type}
    # The connection is still served.
    sid = client.open_session(agent_id(engine))
    assert engine.sessions[sid].connections == (0,)
    kept = engine.connections[0].frames[0]
    assert kept == (json.loads(text) if isinstance(json_or_none(text), dict) else text)


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_binary_frame_is_an_error_and_the_connection_survives(
    engine: LocalEngine, client: RawClient
) -> None:
    client.ws.send_binary(b"\x00\x01")
    assert client.recv() == {
        "type": "error",
        "error": "binary frames are not supported; send JSON text",
        "request_type": None,
    }
    assert engine.received() == [b"\x00\x01"]
    client.send({"type": "ping_session", "session_id": "x"})
    assert is_type("error")(client.recv())


def test_turns_of_one_session_run_one_at_a_time(engine: LocalEngine, client: RawClient) -> None:
    order: List[str] = []
    release = threading.Event()

    def turn(ctx: TurnContext) -> None:
        order.append(f"start {ctx.text}")
        if ctx.text == "one":
            assert release.wait(scaled(5))
        ctx.complete(f"done {ctx.text}")
        order.append(f"end {ctx.text}")

    sid = client.open_session(engine.add_agent("Serial", turn=turn))
    client.post(sid, "one")
    client.post(sid, "two")
    frames = client.recv_until(is_type("post_message"))
    frames += client.recv_until(is_type("post_message"))  # both acks arrive while "one" runs
    client.send({"type": "ping_session", "session_id": sid})
    frames += client.recv_until(is_type("pong"))
    deadline = time.monotonic() + scaled(5)
    while not order and time.monotonic() < deadline:  # the session's worker is starting
        time.sleep(0.01)
    assert order == ["start one"]  # "two" waits for "one", which waits for release
    release.set()
    frames += client.turn() + client.turn()
    assert order == ["start one", "end one", "start two", "end two"]
    statuses = [f["message"]["status"] for f in frames if is_type("participant_status")(f)]
    assert statuses == ["Processing", "Idle", "Processing", "Idle"]


def test_unclosed_client_does_not_block_the_suite(engine: LocalEngine) -> None:
    """A client that vanishes without a close frame is noticed and detached."""
    client = RawClient(engine)
    sid = client.open_session(agent_id(engine))
    client.ws.sock.close()  # no close frame
    assert engine.connections[0].closed.wait(scaled(5))
    assert engine.sessions[sid].connections == ()
    assert first(engine.received(), is_type("create_session")) is not None
