"""The local engine's HTTP side and handshake auth, driven with ``requests`` and a raw
websocket-client connection."""

from __future__ import annotations

import logging
import socket
from typing import Iterator

import pytest
import requests
import websocket
from test_engine_support import KEY, RawClient, auth, engine_running, scaled

from vectorshift_sync.testing import LocalEngine
from vectorshift_sync.testing._engine import _method_not_allowed
from vectorshift_sync.testing._sockets import ClientSocket

pytestmark = pytest.mark.timeout(15)


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with engine_running() as running:
        yield running


def get(engine: LocalEngine, path: str, key: str = KEY, **params: str) -> requests.Response:
    return requests.get(engine.base_url + path, params=params, headers=auth(key), timeout=scaled(5))


def test_urls_and_env_point_at_the_bound_port(engine: LocalEngine) -> None:
    assert engine.port > 0
    assert engine.base_url == f"http://127.0.0.1:{engine.port}/v1"
    assert engine.ws_url == f"ws://127.0.0.1:{engine.port}/v1"
    assert engine.env == {
        "VECTORSHIFT_API_KEY": KEY,
        "VECTORSHIFT_BASE_URL": engine.base_url,
        "VECTORSHIFT_WS_URL": engine.ws_url,
    }
    assert KEY not in repr(engine)


def test_fetch_demo_agent_by_name_returns_the_sdk_shape(engine: LocalEngine) -> None:
    response = get(engine, "/agent", name="Demo Agent", username="me", org_name="acme")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    agent = body["object"]
    assert set(body) == {"object"}
    assert set(agent) == {
        "_id",
        "name",
        "agent_type",
        "llm_client_key",
        "mainBranch",
        "instructions",
    }
    assert agent["name"] == "Demo Agent"
    assert agent["agent_type"] == "conversational"
    assert agent["llm_client_key"] == {"provider": "openai", "model_id": "gpt-4o"}
    assert len(agent["_id"]) == 24 and int(agent["_id"], 16) >= 0


def test_fetch_by_id_and_registered_ids(engine: LocalEngine) -> None:
    agent = engine.add_agent("Helper", id="agent_1", agent_type="functional")
    chatbot = engine.add_chatbot("Support", description="helps")
    assert agent == "agent_1"
    body = get(engine, "/agent", id="agent_1").json()["object"]
    assert body["_id"] == "agent_1" and body["agent_type"] == "functional"
    bot = get(engine, "/chatbot", id=chatbot).json()["object"]
    assert bot == {
        "_id": chatbot,
        "name": "Support",
        "description": "helps",
        "pipeline": bot["pipeline"],
        "deployed": True,
    }
    assert get(engine, "/chatbot", name="Demo Chatbot").json()["object"]["name"] == "Demo Chatbot"


def test_lists_of_agents_and_chatbots(engine: LocalEngine) -> None:
    engine.add_agent("Second")
    agents = get(engine, "/agents").json()["objects"]
    assert [a["name"] for a in agents] == ["Demo Agent", "Second"]
    chatbots = get(engine, "/chatbots").json()["objects"]
    assert [c["name"] for c in chatbots] == ["Demo Chatbot"]
    assert [a["name"] for a in get(engine, "/agents", offset="1", limit="5").json()["objects"]] == [
        "Second"
    ]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/agent", {"name": "Nobody"}, 404),
        ("/agent", {"id": "0" * 24}, 404),
        ("/agent", {"name": "Demo Chatbot"}, 404),  # a chatbot is not an agent
        ("/chatbot", {"id": "x", "name": "Demo Chatbot"}, 404),  # both must match
        ("/agent", {}, 400),
        ("/chatbot", {"username": "me"}, 400),
        ("/pipelines", {}, 404),
    ],
)
def test_http_errors_are_json_with_an_error_key(
    engine: LocalEngine, path: str, params: dict[str, str], status: int
) -> None:
    response = get(engine, path, **params)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(response.json()["error"], str) and response.json()["error"]


@pytest.mark.parametrize("key", ["wrong-key", "None"])
def test_http_with_a_wrong_key_is_401(engine: LocalEngine, key: str) -> None:
    response = get(engine, "/agent", key=key, name="Demo Agent")
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid API key"}


def test_http_without_authorization_is_401(engine: LocalEngine) -> None:
    response = requests.get(engine.base_url + "/agents", timeout=scaled(5))
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"


def test_ws_handshake_with_a_wrong_key_is_refused_with_401(engine: LocalEngine) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        RawClient(engine, key="wrong-key")
    assert caught.value.status_code == 401
    assert engine.connections == []  # refused before the upgrade


def test_ws_handshake_without_authorization_is_refused_with_401(engine: LocalEngine) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection(engine.ws_url + "/ws/session", timeout=scaled(5))
    assert caught.value.status_code == 401


@pytest.mark.parametrize("path", ["/ws/session", "//ws/session"])
def test_ws_paths_accepted(engine: LocalEngine, path: str) -> None:
    """``/v1/ws/session``, the SDK's ``/v1//ws/session``, and ``/ws/session``."""
    with RawClient(engine, path=path) as client:
        client.send({"type": "ping_session", "session_id": "nope"})
        assert client.recv()["type"] == "error"  # type: ignore[index]
    bare = websocket.create_connection(
        f"ws://127.0.0.1:{engine.port}/ws/session",
        header=[f"Authorization: Bearer {KEY}"],
        timeout=scaled(5),
    )
    bare.close()
    assert [c.path for c in engine.connections] == ["/v1" + path, "/ws/session"]
    assert engine.connections[0].headers["Authorization"] == f"Bearer {KEY}"


def test_engine_without_demo_has_no_objects() -> None:
    with engine_running(demo=False) as engine:
        assert get(engine, "/agents").json() == {"objects": []}
        assert get(engine, "/agent", name="Demo Agent").status_code == 404


def test_duplicate_ids_and_bad_turns_are_rejected() -> None:
    engine = LocalEngine(KEY, demo=False)
    engine.add_agent("A", id="same")
    with pytest.raises(ValueError):
        engine.add_chatbot("B", id="same")
    with pytest.raises(TypeError):
        engine.add_agent("C", turn="not frames")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        engine.port  # noqa: B018 - no port before start()


def test_other_methods_are_405(engine: LocalEngine) -> None:
    response = requests.post(engine.base_url + "/agents", headers=auth(), timeout=scaled(5))
    assert response.status_code == 405
    assert response.json() == {"error": "method not allowed: POST"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/agent?name=Demo+Agent", "/ws/session", "/nowhere"])
def test_every_other_method_on_every_path_is_405(
    engine: LocalEngine, method: str, path: str
) -> None:
    # websockets < 16 never shows these to process_request: the engine's socket answers.
    response = requests.request(method, engine.base_url + path, headers=auth(), timeout=scaled(5))
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert response.json() == {"error": f"method not allowed: {method}"}


def test_a_method_split_across_reads_is_still_405() -> None:
    """The engine's socket decides on the read that completes the method; a read that
    ends inside it ("DEL") is passed on undecided. Driven one read at a time on a
    socket pair, so the request really is split (no sleep hoping the server read)."""
    client, accepted = socket.socketpair()
    refused: list = []

    def refuse(method: str) -> bytes:
        refused.append(method)
        return _method_not_allowed(method)

    with client, ClientSocket(accepted, lambda: False, refuse) as engine_side:
        engine_side.settimeout(scaled(5))
        client.settimeout(scaled(5))
        client.sendall(b"DEL")
        assert engine_side.recv(4096) == b"DEL"  # the first read: not decided yet
        assert refused == []
        client.sendall(b"ETE /v1/agents HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert engine_side.recv(4096) == b""  # websockets sees the stream end
        assert refused == ["DELETE"]
        engine_side.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = client.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 405 ")
    assert reply.endswith(b'{"error": "method not allowed: DELETE"}')


def test_clients_gone_before_their_handshake_log_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # websockets < 16 logs each of these as an ERROR with a traceback; 16+ does not.
    caplog.set_level(logging.DEBUG)
    with engine_running() as engine:
        socket.create_connection(("127.0.0.1", engine.port), timeout=scaled(5)).close()
        with socket.create_connection(("127.0.0.1", engine.port), timeout=scaled(5)) as raw:
            raw.sendall(b"GET /v1/ws/session HTTP/1.1\r\nHost: loc")  # and hangs up
        requests.post(engine.base_url + "/agents", headers=auth(), timeout=scaled(5))
        assert get(engine, "/agents").status_code == 200
    # stop() joined every connection thread: whatever they logged is in
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
