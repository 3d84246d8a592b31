"""Scripted agents (callables and frame lists), TurnContext helpers, and reading back
what the engine received."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
import websocket
from test_engine_support import (
    RawClient,
    content_of,
    engine_running,
    is_status,
    is_type,
    scaled,
)

from vectorshift_sync.testing import LocalEngine, TurnCancelled, TurnContext

pytestmark = pytest.mark.timeout(15)


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with engine_running() as running:
        yield running


def _session(engine: LocalEngine, client: RawClient, **agent: Any) -> str:
    return client.open_session(engine.add_agent("Scripted", **agent))


def test_frame_list_turn_is_sent_verbatim_after_ack_and_echo(engine: LocalEngine) -> None:
    frames = [
        {"type": "message_delta", "message_id": "m1", "index": 0, "value": "Hel"},
        {"type": "message_notification", "session_id": "other", "message": {"id": "x"}},
        "not json {",
        {"type": "surprise", "payload": [1, 2]},
    ]
    with RawClient(engine) as client:
        sid = _session(engine, client, turn=frames)
        client.post(sid, "hi")
        got = [client.recv() for _ in range(6)]
    assert got[0] == {"type": "post_message", "session_id": sid, "success": True}
    assert content_of(got[1])["value"] == "hi"
    assert got[2:] == [
        {
            "type": "message_delta",
            "session_id": sid,
            "message_id": "m1",
            "index": 0,
            "value": "Hel",
        },
        {"type": "message_notification", "session_id": "other", "message": {"id": "x"}},
        "not json {",
        {"type": "surprise", "session_id": sid, "payload": [1, 2]},
    ]
    # Not well-formed for this session, so not in its history.
    assert [i["sender"] for i in engine.history(sid)] == [{"user_id": "local-user"}]


def test_echo_can_be_turned_off(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        sid = _session(engine, client, turn=[{"type": "ping"}], echo=False)
        client.post(sid, "hi")
        assert is_type("post_message")(client.recv())
        assert client.recv() == {"type": "ping", "session_id": sid}
    assert engine.history(sid)[0]["content"]["value"] == "hi"


def test_context_helpers_produce_the_documented_frames(engine: LocalEngine) -> None:
    ids: Dict[str, Any] = {}

    def turn(ctx: TurnContext) -> None:
        assert (ctx.session_id, ctx.text, ctx.content) == (sid_box[0], "go", "go")
        assert ctx.owner_type == "agent" and ctx.owner_name == "Scripted"
        ctx.status("Typing")
        ctx.delta("a", message_id="d1")
        ctx.delta("b", message_id="d1")
        ids["complete"] = ctx.complete("ab", message_id="d1")
        ids["stream"] = ctx.stream("abcdefg", chunk=3)
        ids["notify"] = ctx.notify({"type": "custom", "x": 1})
        ids["tool"] = ctx.tool_call("lookup", arguments={"q": "x"}, tool_id="t1")
        ctx.tool_result("lookup", {"hits": 2}, tool_id="t1")
        ctx.thinking("hmm", summary="thinking")
        ctx.reasoning("because")
        ctx.agent_task("subtask")
        ctx.search_results("q", [{"title": "A"}])
        ctx.error("oops")
        ctx.send({"type": "custom_frame"})
        ctx.send_text("raw text")
        ids["history"] = len(ctx.history)

    sid_box: List[str] = []
    with RawClient(engine) as client:
        agent = engine.add_agent("Scripted", turn=turn)
        sid_box.append(client.open_session(agent))
        sid = sid_box[0]
        client.post(sid, "go")
        frames = client.turn()
    body = frames[3:-1]  # after ack, echo, Processing; before Idle
    assert body[0] == {
        "type": "participant_status",
        "session_id": sid,
        "message": {"status": "Typing"},
    }
    assert body[1:3] == [
        {"type": "message_delta", "session_id": sid, "message_id": "d1", "index": 0, "value": "a"},
        {"type": "message_delta", "session_id": sid, "message_id": "d1", "index": 1, "value": "b"},
    ]
    assert ids["complete"] == "d1" and content_of(body[3]) == {
        "type": "data_type_message",
        "value": "ab",
        "status": "Complete",
    }
    assert [f["value"] for f in body[4:7]] == ["abc", "def", "g"]  # type: ignore[index]
    assert content_of(body[7])["value"] == "abcdefg"
    assert body[7]["message"]["id"] == ids["stream"]  # type: ignore[index]
    assert content_of(body[8]) == {"type": "custom", "x": 1}
    assert ids["tool"] == "t1"
    assert content_of(body[9])["status"] == "Running"
    assert content_of(body[10]) == {
        "type": "tool_call",
        "tool_name": "lookup",
        "tool_id": "t1",
        "status": "Completed",
        "result": {"hits": 2},
    }
    assert content_of(body[11]) == {"type": "thinking", "content": "hmm", "summary": "thinking"}
    assert content_of(body[12]) == {"type": "reasoning", "value": "because"}
    assert content_of(body[13]) == {"type": "agent_task", "value": "subtask"}
    assert content_of(body[14]) == {
        "type": "search_message",
        "query": "q",
        "results": [{"title": "A"}],
    }
    assert content_of(body[15]) == {"type": "error_message", "error": "oops"}
    assert body[16:] == [{"type": "custom_frame", "session_id": sid}, "raw text"]
    history = engine.history(sid)
    assert [i["content"]["type"] for i in history] == [
        "data_type_message",  # the user
        "data_type_message",  # complete (d1)
        "data_type_message",  # stream
        "custom",
        "tool_call",  # one item, updated in place
        "thinking",
        "reasoning",
        "agent_task",
        "search_message",
        "error_message",
    ]
    assert history[4]["content"]["status"] == "Completed"
    assert ids["history"] == len(history)


def test_a_failing_turn_reports_an_error_and_ends_idle(engine: LocalEngine) -> None:
    def broken(ctx: TurnContext) -> None:
        raise RuntimeError("script bug")

    with RawClient(engine) as client:
        sid = _session(engine, client, turn=broken)
        client.post(sid, "go")
        frames = client.turn()
    assert content_of(frames[-2]) == {"type": "error_message", "error": "RuntimeError: script bug"}
    assert is_status("Idle")(frames[-1])


def test_approval_timeout_raises_in_the_turn(engine: LocalEngine) -> None:
    outcome: List[str] = []

    def asks(ctx: TurnContext) -> None:
        try:
            ctx.approval("delete_everything", timeout=0.2)
        except TimeoutError as exc:
            outcome.append(str(exc))
            raise

    with RawClient(engine) as client:
        sid = _session(engine, client, turn=asks)
        client.post(sid, "go")
        frames = client.turn()
    assert outcome and "within 0.2 s" in outcome[0]
    assert is_status("AwaitingApproval")(frames[4])
    assert content_of(frames[-2])["type"] == "error_message"


def test_instant_approval_answer_is_not_lost(engine: LocalEngine) -> None:
    """The waiter exists before the request goes out."""
    answers: List[Dict[str, Any]] = []

    def asks(ctx: TurnContext) -> None:
        answers.append(ctx.approval("tool", arguments={"a": 1}))

    with RawClient(engine) as client:
        sid = _session(engine, client, turn=asks)
        client.post(sid, "go")
        request = client.recv_until(
            lambda f: (
                is_type("message_notification")(f) and content_of(f)["type"] == "tool_call_approval"
            )
        )[-1]
        client.send(
            {
                "type": "post_message",
                "session_id": sid,
                "content": {
                    "type_string": "response_message",
                    "value": {"tool_call_approval": {"confirm": {}}},
                },
                "parent_message_id": request["message"]["id"],  # type: ignore[index]
            }
        )
        client.turn()
    assert answers == [{"confirm": {}}]


def test_context_wait_ends_when_the_engine_stops() -> None:
    cancelled = threading.Event()

    def sleeper(ctx: TurnContext) -> None:
        try:
            ctx.wait(60)
        except TurnCancelled:
            cancelled.set()
            raise

    with engine_running() as engine:
        client = RawClient(engine)
        sid = _session(engine, client, turn=sleeper)
        client.post(sid, "go")
        client.recv_until(is_status("Processing"))
        client.close()
        started = time.monotonic()
        engine.stop()
        assert time.monotonic() - started < scaled(3)
        assert cancelled.is_set()
        engine.stop()  # idempotent


def test_drop_from_a_turn_aborts_without_a_close_frame(engine: LocalEngine) -> None:
    def dropper(ctx: TurnContext) -> None:
        ctx.delta("partial", message_id="m")
        ctx.drop()

    with RawClient(engine) as client:
        sid = _session(engine, client, turn=dropper)
        client.post(sid, "go")
        assert is_type("message_delta")(client.recv_until(is_type("message_delta"))[-1])
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            client.ws.recv_data(control_frame=True)  # a close frame would be returned here
    assert engine.connections[0].closed.wait(scaled(5))


def test_received_frames_and_wait_for_frame(engine: LocalEngine) -> None:
    with RawClient(engine) as client:
        client.send({"type": "ping_session", "session_id": "s1"})
        client.send_text("garbage")
        client.send({"type": "ping_session", "session_id": "s2"})
        found = engine.wait_for_frame(
            "ping_session", predicate=lambda f: f["session_id"] == "s2", timeout=scaled(5)
        )
        assert found == {"type": "ping_session", "session_id": "s2"}
        assert engine.wait_for_frame("ping_session")["session_id"] == "s1"
        assert engine.wait_for_frame("ping_session", since=1)["session_id"] == "s2"
        assert engine.received("ping_session") == [
            {"type": "ping_session", "session_id": "s1"},
            {"type": "ping_session", "session_id": "s2"},
        ]
        assert engine.received()[1] == "garbage"
        with pytest.raises(TimeoutError):
            engine.wait_for_frame("get_messages", timeout=0.05)
        for _ in range(3):
            client.recv()
        record = engine.connections[0]
        assert record.frames == engine.received()
        assert [f["type"] for f in record.sent] == ["error", "error", "error"]
        assert not record.closed.is_set()
    assert engine.connections[0].closed.wait(scaled(5))


def test_stop_with_a_client_still_connected_is_bounded() -> None:
    with engine_running(close_timeout=0.2) as engine:
        client = RawClient(engine)  # never reads the close frame
        started = time.monotonic()
        engine.stop()
        assert time.monotonic() - started < scaled(2)
        client.close()
