"""Agent and Chatbot: fetch over HTTP (mocked with ``responses``) and session building.

Session construction is observed through a recorder put in place of
``vectorshift_sync.session.Session`` (the resources import it lazily, at call time);
one test also builds the real class.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

import vectorshift_sync
from vectorshift_sync import agent as agent_module
from vectorshift_sync import chatbot as chatbot_module
from vectorshift_sync import session as session_module
from vectorshift_sync._config import DEFAULT_BASE_URL
from vectorshift_sync.agent import Agent, AgentRunResult, AgentType
from vectorshift_sync.chatbot import Chatbot
from vectorshift_sync.errors import (
    ApiTimeoutError,
    ArgumentTypeError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
    RateLimitError,
    UnprocessableEntityError,
    VectorshiftError,
)
from vectorshift_sync.session import Session

KEY = "sk-test-0123456789abcdef"
AGENT_URL = DEFAULT_BASE_URL + "/agent"
CHATBOT_URL = DEFAULT_BASE_URL + "/chatbot"
CONVERSATIONAL = {"_id": "agent_1", "name": "Helper", "agent_type": "conversational"}


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


class RecordedSession:
    """Stands in for Session: keeps the constructor's keyword arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``from .session import Session`` give :class:`RecordedSession`."""
    monkeypatch.setattr(session_module, "Session", RecordedSession)


def fetched_agent(api: responses.RequestsMock, obj: dict[str, Any], **kwargs: Any) -> Agent:
    api.get(AGENT_URL, json={"object": obj})
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("id", "agent_1")
    return Agent.fetch(**kwargs)


def fetched_chatbot(api: responses.RequestsMock, obj: dict[str, Any], **kwargs: Any) -> Chatbot:
    api.get(CHATBOT_URL, json={"object": obj})
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("id", "bot_1")
    return Chatbot.fetch(**kwargs)


FETCHERS = [(Agent, AGENT_URL, "/agent"), (Chatbot, CHATBOT_URL, "/chatbot")]


# --- requests both resources send ----------------------------------------------------


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
@pytest.mark.parametrize(
    ("kwargs", "query"),
    [
        ({"name": "Helper", "username": "alice", "org_name": "acme"},
         "name=Helper&username=alice&org_name=acme"),
        ({"id": "a1"}, "id=a1"),
        ({"org_name": "o", "username": "u", "name": "n", "id": "i"},
         "id=i&name=n&username=u&org_name=o"),
        ({"name": "My Bot & Co"}, "name=My+Bot+%26+Co"),
    ],
)  # fmt: skip
def test_fetch_query_string(
    api: responses.RequestsMock,
    cls: Any,
    url: str,
    path: str,
    kwargs: dict[str, Any],
    query: str,
) -> None:
    api.get(url, json={"object": {"_id": "x"}})
    cls.fetch(api_key=KEY, **kwargs)
    request = api.calls[0].request
    assert request.method == "GET"
    assert request.url == f"{url}?{query}"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert not request.body


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_positional_arguments_follow_the_sdk(
    api: responses.RequestsMock, cls: Any, url: str, path: str
) -> None:
    api.get(url, json={"object": {"_id": "x"}})
    cls.fetch("i", "n", "u", "o", api_key=KEY)
    assert api.calls[0].request.url == f"{url}?id=i&name=n&username=u&org_name=o"


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_needs_id_or_name_before_any_request(
    api: responses.RequestsMock, cls: Any, url: str, path: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        cls.fetch(username="alice", api_key=KEY)
    assert isinstance(info.value, ValueError)
    assert "id or name" in str(info.value)
    assert len(api.calls) == 0


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 123},
        {"name": b"bytes"},
        {"id": "a", "username": 5},
        {"id": "a", "org_name": ["acme"]},
        {"id": "a", "api_key": 42},
        {"id": "a", "timeout": "30"},
        {"id": "a", "http": "session"},
    ],
)
def test_fetch_wrong_argument_types(
    api: responses.RequestsMock,
    cls: Any,
    url: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    kwargs.setdefault("api_key", KEY)
    with pytest.raises(ArgumentTypeError) as info:
        cls.fetch(**kwargs)
    assert isinstance(info.value, TypeError)
    assert len(api.calls) == 0


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
@pytest.mark.parametrize(
    "kwargs",
    [{"id": ""}, {"name": ""}, {"id": "a", "username": ""}, {"id": "a", "timeout": 0}],
)
def test_fetch_bad_argument_values(
    api: responses.RequestsMock,
    cls: Any,
    url: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(InvalidArgumentError):
        cls.fetch(api_key=KEY, **kwargs)
    assert len(api.calls) == 0


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_without_a_key_says_how_to_set_one(
    api: responses.RequestsMock, cls: Any, url: str, path: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        cls.fetch(name="x")
    message = str(info.value)
    for hint in ("api_key=", "vectorshift_sync.api_key", "VECTORSHIFT_API_KEY"):
        assert hint in message
    assert "None" not in message
    assert len(api.calls) == 0


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_uses_the_global_key(
    api: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    cls: Any,
    url: str,
    path: str,
) -> None:
    monkeypatch.setattr(vectorshift_sync, "api_key", "global-key-1234")
    api.get(url, json={"object": {"_id": "x"}})
    cls.fetch(name="x")
    assert api.calls[0].request.headers["Authorization"] == "Bearer global-key-1234"


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
@pytest.mark.parametrize(("status", "error"), [(404, NotFoundError), (401, AuthenticationError)])
def test_fetch_error_status(
    api: responses.RequestsMock,
    cls: Any,
    url: str,
    path: str,
    status: int,
    error: type[Exception],
) -> None:
    api.get(url, status=status, json={"error": f"bad key {KEY}"})
    with pytest.raises(error) as info:
        cls.fetch(name="missing", api_key=KEY)
    exc: Any = info.value
    assert exc.endpoint == path
    assert exc.method == "GET"
    assert f"  Endpoint: GET {path}" in str(exc)
    assert KEY not in str(exc)
    assert KEY not in repr(exc)


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_timeout(api: responses.RequestsMock, cls: Any, url: str, path: str) -> None:
    api.get(url, body=requests.ReadTimeout("slow"))
    with pytest.raises(ApiTimeoutError, match=f"GET {path}"):
        cls.fetch(id="x", api_key=KEY, timeout=1)


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({}, "no 'object' key"),
        ({"objects": [{"_id": "x"}]}, "no 'object' key"),
        ({"object": None}, "'object' is null"),
        ({"object": ["x"]}, "'object' is a JSON list"),
        ({"object": "agent_1"}, "'object' is a JSON str"),
    ],
)
def test_fetch_body_without_an_object(
    api: responses.RequestsMock,
    cls: Any,
    url: str,
    path: str,
    body: dict[str, Any],
    found: str,
) -> None:
    api.get(url, json=body)
    with pytest.raises(VectorshiftError) as info:
        cls.fetch(id="x", api_key=KEY)
    assert not isinstance(info.value, (KeyError, ValueError))
    assert found in str(info.value)
    assert f"GET {path}" in str(info.value)


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_non_json_body(api: responses.RequestsMock, cls: Any, url: str, path: str) -> None:
    api.get(url, body="not json", content_type="text/plain")
    with pytest.raises(VectorshiftError, match="not JSON"):
        cls.fetch(id="x", api_key=KEY)


@pytest.mark.parametrize(("cls", "url", "path"), FETCHERS)
def test_fetch_with_an_injected_session_and_timeout(
    api: responses.RequestsMock, cls: Any, url: str, path: str
) -> None:
    seen: list[Any] = []

    class Recording(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            seen.append(kwargs["timeout"])
            return super().request(*args, **kwargs)

    api.get(url, json={"object": {"_id": "x"}})
    cls.fetch(id="x", api_key=KEY, http=Recording(), timeout=4)
    assert seen == [4.0]


# --- Agent parsing ---------------------------------------------------------------


def test_agent_fields(api: responses.RequestsMock) -> None:
    obj = {
        "_id": "agent_1",
        "name": "Helper",
        "agent_type": "conversational",
        "mainBranch": "branch_9",
        "instructions": "Be brief.",
        "llm_client_key": {"provider": "openai", "model_id": "gpt-4o"},
        "tools": [],
        "custom": {"kept": True},
    }
    agent = fetched_agent(api, obj)
    assert agent.id == "agent_1"
    assert agent.name == "Helper"
    assert agent.agent_type is AgentType.CONVERSATIONAL
    assert agent.branch_id == "branch_9"
    assert agent.instructions == "Be brief."
    assert agent.llm_client_key == {"provider": "openai", "model_id": "gpt-4o"}
    assert agent.raw == obj


def test_agent_minimal_object_without_llm_client_key(
    api: responses.RequestsMock,
) -> None:
    agent = fetched_agent(api, {"_id": "a"})
    assert agent.id == "a"
    assert agent.name == ""
    assert agent.agent_type is AgentType.FUNCTIONAL
    assert agent.branch_id is None
    assert agent.instructions is None
    assert agent.llm_client_key is None


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"_id": "a", "id": "b"}, "a"),
        ({"id": "b"}, "b"),
        ({"_id": "", "id": "b"}, "b"),
        ({"_id": None, "id": "b"}, "b"),
        ({"_id": {"$oid": "65f0c0ffee"}}, "65f0c0ffee"),
        ({"_id": 17}, "17"),
        ({"name": "no id"}, None),
    ],
)
def test_agent_id_from_underscore_id_then_id(
    api: responses.RequestsMock, obj: dict[str, Any], expected: Any
) -> None:
    assert fetched_agent(api, obj).id == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"agent_type": "conversational"}, AgentType.CONVERSATIONAL),
        ({"agent_type": "Conversational"}, AgentType.CONVERSATIONAL),
        ({"agentType": "CONVERSATIONAL"}, AgentType.CONVERSATIONAL),
        ({"variant": "conversational"}, AgentType.CONVERSATIONAL),
        ({"agent_type": "", "variant": "conversational"}, AgentType.CONVERSATIONAL),
        ({"agent_type": None, "agentType": "conversational"}, AgentType.CONVERSATIONAL),
        ({"agent_type": "functional", "variant": "conversational"}, AgentType.FUNCTIONAL),
        ({"agentType": "chat", "variant": "conversational"}, AgentType.FUNCTIONAL),
        ({"agent_type": 1, "variant": "conversational"}, AgentType.FUNCTIONAL),
        ({"agent_type": " conversational"}, AgentType.FUNCTIONAL),
        ({"agent_type": "functional"}, AgentType.FUNCTIONAL),
        ({}, AgentType.FUNCTIONAL),
    ],
)  # fmt: skip
def test_agent_type_rules(
    api: responses.RequestsMock, fields: dict[str, Any], expected: AgentType
) -> None:
    assert fetched_agent(api, {"_id": "a", **fields}).agent_type is expected


def test_agent_type_is_a_str_enum() -> None:
    assert AgentType.FUNCTIONAL.value == "functional"
    assert AgentType.CONVERSATIONAL.value == "conversational"
    assert AgentType("conversational") is AgentType.CONVERSATIONAL
    assert AgentType.CONVERSATIONAL == "conversational"
    assert isinstance(AgentType.FUNCTIONAL, str)
    assert str(AgentType.FUNCTIONAL) == "functional"
    assert f"{AgentType.CONVERSATIONAL}" == "conversational"
    assert [t.value for t in AgentType] == ["functional", "conversational"]


def test_agent_repr_shows_id_name_type_only(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, {**CONVERSATIONAL, "instructions": "secret sauce"})
    assert repr(agent) == ("Agent(id='agent_1', name='Helper', agent_type='conversational')")
    assert KEY not in repr(agent)
    assert KEY not in str(agent)


def test_agent_constructor_checks_its_arguments() -> None:
    assert Agent(agent_type="Conversational").agent_type is AgentType.CONVERSATIONAL  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        Agent(agent_type="chat")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        Agent(agent_type=1)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        Agent(api_key=123)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        Agent.from_json(["not", "a", "mapping"])  # type: ignore[arg-type]


# --- Agent sessions ----------------------------------------------------------------


@pytest.mark.usefixtures("sessions")
def test_agent_create_session_arguments(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, CONVERSATIONAL)
    session: Any = agent.create_session()
    assert isinstance(session, RecordedSession)
    assert session.kwargs == {
        "owner_type": "agent",
        "owner_id": "agent_1",
        "session_id": None,
        "api_key": KEY,
    }


@pytest.mark.usefixtures("sessions")
def test_agent_create_session_with_session_id(api: responses.RequestsMock) -> None:
    session: Any = fetched_agent(api, CONVERSATIONAL).create_session("sess_1")
    assert session.kwargs["session_id"] == "sess_1"
    assert session.kwargs["owner_id"] == "agent_1"


@pytest.mark.usefixtures("sessions")
def test_agent_sessions_keep_only_an_explicit_key(
    api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorshift_sync, "api_key", "global-key-1234")
    api.get(AGENT_URL, json={"object": CONVERSATIONAL})
    agent = Agent.fetch(name="Helper")
    created: Any = agent.create_session()
    resumed: Any = agent.resume_session("s")
    assert created.kwargs["api_key"] is None
    assert resumed.kwargs["api_key"] is None


@pytest.mark.usefixtures("sessions")
def test_agent_resume_session_arguments(api: responses.RequestsMock) -> None:
    session: Any = fetched_agent(api, CONVERSATIONAL).resume_session("sess_1")
    assert session.kwargs == {"session_id": "sess_1", "api_key": KEY}


@pytest.mark.usefixtures("sessions")
def test_functional_agent_refuses_sessions(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, {"_id": "a", "name": "Calc", "agent_type": "functional"})
    for call in (agent.create_session, lambda: agent.resume_session("s")):
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert "functional" in message
        assert "conversational agent" in message
        assert "Calc" in message


@pytest.mark.usefixtures("sessions")
def test_agent_session_id_checks(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, CONVERSATIONAL)
    with pytest.raises(InvalidArgumentError):
        agent.resume_session("")
    with pytest.raises(ArgumentTypeError):
        agent.resume_session(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        agent.create_session("")
    with pytest.raises(ArgumentTypeError):
        agent.create_session(42)  # type: ignore[arg-type]


@pytest.mark.usefixtures("sessions")
def test_agent_without_id_cannot_create_but_can_resume() -> None:
    agent = Agent(name="Stub", agent_type=AgentType.CONVERSATIONAL)
    with pytest.raises(InvalidArgumentError, match="no id"):
        agent.create_session()
    session: Any = agent.create_session("sess_1")
    assert session.kwargs["session_id"] == "sess_1"
    assert agent.resume_session("sess_1").kwargs["session_id"] == "sess_1"


def test_real_session_class_is_returned(api: responses.RequestsMock) -> None:
    # The real constructor does no I/O, so building one here is safe.
    assert isinstance(fetched_agent(api, CONVERSATIONAL).create_session(), Session)
    assert isinstance(Chatbot(id="bot_1").create_session(), Session)


def test_session_is_imported_lazily() -> None:
    # The import is lazy: nothing at module level refers to vectorshift_sync.session.
    assert "Session" not in vars(agent_module)
    assert "Session" not in vars(chatbot_module)


# --- Chatbot parsing -------------------------------------------------------------


def test_chatbot_fields(api: responses.RequestsMock) -> None:
    obj = {
        "_id": "bot_1",
        "name": "Support",
        "description": "Answers questions",
        "pipeline": {"object_id": "pipe_1"},
        "deployed": True,
        "deployment_options": {"x": 1},
    }
    chatbot = fetched_chatbot(api, obj)
    assert chatbot.id == "bot_1"
    assert chatbot.name == "Support"
    assert chatbot.description == "Answers questions"
    assert chatbot.pipeline_id == "pipe_1"
    assert chatbot.deployed is True
    assert chatbot.raw == obj


def test_chatbot_defaults(api: responses.RequestsMock) -> None:
    chatbot = fetched_chatbot(api, {"id": "bot_2"})
    assert chatbot.id == "bot_2"
    assert chatbot.name == ""
    assert chatbot.description == ""
    assert chatbot.pipeline_id == ""
    assert chatbot.deployed is False


@pytest.mark.parametrize(
    ("obj", "expected"),
    [({"_id": "a", "id": "b"}, "a"), ({"id": "b"}, "b"), ({"_id": "", "id": "b"}, "b")],
)
def test_chatbot_id_from_underscore_id_then_id(
    api: responses.RequestsMock, obj: dict[str, Any], expected: str
) -> None:
    assert fetched_chatbot(api, obj).id == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"pipeline": {"object_id": "p1", "id": "p2"}}, "p1"),
        ({"pipeline": {"id": "p2"}}, "p2"),
        ({"pipeline": "p3"}, "p3"),
        ({"pipeline": {"object_id": {"$oid": "p4"}}}, "p4"),
        ({"object": {"object_id": "o1", "id": "o2"}}, "o1"),
        ({"object": {"id": "o2"}}, "o2"),
        ({"pipeline": "", "object": {"id": "o2"}}, "o2"),
        ({"pipeline": {}, "object": {"id": "o2"}}, ""),
        ({"object": "o3"}, ""),
        ({}, ""),
    ],
)
def test_chatbot_pipeline_id_rules(
    api: responses.RequestsMock, fields: dict[str, Any], expected: str
) -> None:
    assert fetched_chatbot(api, {"_id": "bot_1", **fields}).pipeline_id == expected


def test_chatbot_repr_has_no_key(api: responses.RequestsMock) -> None:
    chatbot = fetched_chatbot(api, {"_id": "bot_1", "name": "Support"})
    assert repr(chatbot) == "Chatbot(id='bot_1', name='Support')"
    assert KEY not in repr(chatbot)


# --- Chatbot sessions --------------------------------------------------------------


@pytest.mark.usefixtures("sessions")
def test_chatbot_sessions(api: responses.RequestsMock) -> None:
    chatbot = fetched_chatbot(api, {"_id": "bot_1", "name": "Support"})
    created: Any = chatbot.create_session()
    assert created.kwargs == {
        "owner_type": "chatbot",
        "owner_id": "bot_1",
        "session_id": None,
        "api_key": KEY,
    }
    resumed: Any = chatbot.resume_session("sess_1")
    assert resumed.kwargs == {"session_id": "sess_1", "api_key": KEY}


@pytest.mark.usefixtures("sessions")
def test_chatbot_session_checks() -> None:
    chatbot = Chatbot(name="no id")
    with pytest.raises(InvalidArgumentError, match="no id"):
        chatbot.create_session()
    with pytest.raises(InvalidArgumentError):
        chatbot.resume_session("")
    with pytest.raises(ArgumentTypeError):
        chatbot.resume_session(7)  # type: ignore[arg-type]


def test_public_names() -> None:
    assert agent_module.__all__ == [
        "Agent",
        "AgentType",
        "AgentRunResult",
        "ConversationalAgentRunResult",
        "ConversationalRunActionRequiredError",
    ]
    assert chatbot_module.__all__ == ["Chatbot"]


# --- a functional agent's run() ------------------------------------------------------


FUNCTIONAL = {"_id": "agent_1", "name": "Calc", "agent_type": "functional"}
RUN_URL = DEFAULT_BASE_URL + "/agent/agent_1/run"


def test_functional_run_posts_the_inputs_and_parses_the_result(
    api: responses.RequestsMock,
) -> None:
    agent = fetched_agent(api, FUNCTIONAL)
    api.post(RUN_URL, json={
        "run_id": "run_9", "status": "success", "outputs": {"sum": 3, "text": "three"},
    })

    class Skill:
        content = "Answer in numbers."

    result = agent.run({"a": 1, "b": 2}, "be exact", skill=Skill(), timeout=7)
    request = api.calls[-1].request
    assert request.method == "POST" and request.url == RUN_URL
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(request.body or b"") == {
        "inputs": {"a": 1, "b": 2},
        "additional_instructions": "be exact\n\nAnswer in numbers.",
    }
    assert result == AgentRunResult(
        outputs={"sum": 3, "text": "three"}, run_id="run_9", status="success", error=None
    )


def test_functional_run_defaults_and_a_reported_failure(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, FUNCTIONAL)
    api.post(RUN_URL, json={"outputs": "not a dict", "error": 42, "status": "failed"})
    result = agent.run()
    assert json.loads(api.calls[-1].request.body or b"") == {"inputs": {}}
    assert result == AgentRunResult(outputs={}, run_id="", status="failed", error="42")
    api.post(RUN_URL, json={})
    assert agent.run({}) == AgentRunResult()


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (401, AuthenticationError), (404, NotFoundError),
     (422, UnprocessableEntityError), (429, RateLimitError), (500, InternalServerError)],
)
def test_functional_run_error_statuses(
    api: responses.RequestsMock, status: int, error: type
) -> None:
    agent = fetched_agent(api, FUNCTIONAL)
    api.post(RUN_URL, status=status, json={"error": "nope"})
    with pytest.raises(error) as info:
        agent.run({"a": 1})
    assert info.value.status_code == status
    assert info.value.method == "POST" and info.value.endpoint == "/agent/agent_1/run"
    assert info.value.error_message == "nope"


def test_functional_run_refuses_conversational_options(api: responses.RequestsMock) -> None:
    agent = fetched_agent(api, FUNCTIONAL)
    for options in ({"files": []}, {"session_id": "s"}, {"keep_alive": True},
                    {"include_deltas": True}):
        with pytest.raises(InvalidArgumentError, match="conversational agents only"):
            agent.run({}, **options)
    with pytest.raises(ArgumentTypeError, match="dict of inputs"):
        agent.run("a message")
    assert len(api.calls) == 1  # only the fetch: nothing was posted
