"""The REST boundary (vectorshift_sync._http): statuses, messages, network errors, keys.

HTTP is mocked with ``responses``; the two network-failure tests that need a real
socket use one bound to port 0 on 127.0.0.1 and never a fixed port.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

import vectorshift_sync
from vectorshift_sync import _http
from vectorshift_sync._config import DEFAULT_BASE_URL
from vectorshift_sync.errors import (
    ApiConnectionError,
    ApiTimeoutError,
    ArgumentTypeError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    VectorshiftApiError,
    VectorshiftError,
)

KEY = "sk-test-0123456789abcdef"
AGENT_URL = DEFAULT_BASE_URL + "/agent"


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def get(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("api_key", KEY)
    return _http.request_json("GET", "/agent", **kwargs)


def error_for(
    api: responses.RequestsMock, status: int, body: str = "", **kwargs: Any
) -> VectorshiftApiError:
    api.get(AGENT_URL, status=status, body=body, **kwargs)
    with pytest.raises(VectorshiftApiError) as info:
        get()
    return info.value


# --- success -------------------------------------------------------------------


def test_success_returns_the_json_object_and_sends_bearer_key(
    api: responses.RequestsMock,
) -> None:
    api.get(AGENT_URL, json={"object": {"_id": "a"}})
    assert get() == {"object": {"_id": "a"}}
    request = api.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.method == "GET"
    assert request.body is None


def test_query_parameters_keep_their_order_and_drop_none(
    api: responses.RequestsMock,
) -> None:
    api.get(AGENT_URL, json={})
    get(params=[("id", "x"), ("name", None), ("username", "u y"), ("flag", True)])
    assert api.calls[0].request.url == AGENT_URL + "?id=x&username=u+y&flag=true"


def test_json_body_is_sent(api: responses.RequestsMock) -> None:
    api.post(DEFAULT_BASE_URL + "/agent/a/run", json={"run_id": "r"})
    result = _http.request_json("POST", "/agent/a/run", json_body={"inputs": {"q": 1}}, api_key=KEY)
    assert result == {"run_id": "r"}
    assert json.loads(api.calls[0].request.body or b"") == {"inputs": {"q": 1}}


def test_base_url_comes_from_the_environment_without_trailing_slash(
    api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSHIFT_BASE_URL", "http://local.test:8080/v1/")
    api.get("http://local.test:8080/v1/agent", json={})
    assert get() == {}


# --- the key -------------------------------------------------------------------


def test_missing_key_is_refused_before_sending(api: responses.RequestsMock) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _http.request_json("GET", "/agent")
    message = str(info.value)
    assert "GET /agent" in message
    for hint in ("api_key=", "vectorshift_sync.api_key", "VECTORSHIFT_API_KEY"):
        assert hint in message
    assert len(api.calls) == 0


@pytest.mark.parametrize("where", ["global", "env"])
def test_key_falls_back_to_global_then_environment(
    api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "global":
        monkeypatch.setattr(vectorshift_sync, "api_key", "global-key-123")
        monkeypatch.setenv("VECTORSHIFT_API_KEY", "env-key-456")
        expected = "global-key-123"
    else:
        monkeypatch.setenv("VECTORSHIFT_API_KEY", "env-key-456")
        expected = "env-key-456"
    api.get(AGENT_URL, json={})
    _http.request_json("GET", "/agent")
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {expected}"


def test_explicit_key_wins(api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectorshift_sync, "api_key", "global-key-123")
    api.get(AGENT_URL, json={})
    get()
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_key_echoed_by_the_server_is_masked(api: responses.RequestsMock) -> None:
    exc = error_for(api, 401, json.dumps({"error": f"key {KEY} is revoked"}))
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert KEY not in exc.raw_response
    assert KEY not in exc.error_message
    assert "key ***cdef is revoked" in exc.error_message


def test_key_in_a_requests_error_is_masked(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, body=requests.ConnectionError(f"proxy said {KEY}"))
    with pytest.raises(ApiConnectionError) as info:
        get()
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def test_key_never_logged(api: responses.RequestsMock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vectorshift_sync")
    api.get(AGENT_URL, json={})
    get(params=[("id", "x")])
    assert "GET /agent" in caplog.text
    assert KEY not in caplog.text


# --- status mapping --------------------------------------------------------------

STATUS_CASES = [
    (400, BadRequestError, "VectorShift API Bad Request (400)"),
    (401, AuthenticationError, "VectorShift API Unauthorized (401)"),
    (403, PermissionDeniedError, "VectorShift API Forbidden (403)"),
    (404, NotFoundError, "VectorShift API Not Found (404)"),
    (405, VectorshiftApiError, "VectorShift API Error (405)"),
    (409, VectorshiftApiError, "VectorShift API Error (409)"),
    (410, VectorshiftApiError, "VectorShift API Error (410)"),
    (422, UnprocessableEntityError, "VectorShift API Validation Error (422)"),
    (429, RateLimitError, "VectorShift API Rate Limited (429)"),
    (500, InternalServerError, "VectorShift API Internal Server Error (500)"),
    (502, InternalServerError, "VectorShift API Error (502)"),
    (503, InternalServerError, "VectorShift API Error (503)"),
]


@pytest.mark.parametrize(("status", "cls", "header"), STATUS_CASES)
def test_status_maps_to_its_class(
    api: responses.RequestsMock,
    status: int,
    cls: type[VectorshiftApiError],
    header: str,
) -> None:
    body = json.dumps({"error": "nope"})
    exc = error_for(api, status, body)
    assert type(exc) is cls
    assert isinstance(exc, VectorshiftError)
    assert exc.status_code == status
    assert exc.method == "GET"
    assert exc.endpoint == "/agent"
    assert exc.raw_response == body
    assert exc.error_message == "nope"
    lines = str(exc).splitlines()
    assert lines[0] == header
    assert lines[1] == "  Endpoint: GET /agent"
    assert lines[2] == "  Detail: nope"


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "api_key"), (404, "resource id"), (500, "server-side"), (429, "retry")],
)
def test_hint_line(api: responses.RequestsMock, status: int, hint: str) -> None:
    lines = str(error_for(api, status, '{"error": "x"}')).splitlines()
    assert len(lines) == 4
    assert lines[3].startswith("  Hint: ")
    assert hint in lines[3]


@pytest.mark.parametrize("status", [400, 403, 405, 422, 502, 503])
def test_no_hint_line(api: responses.RequestsMock, status: int) -> None:
    assert len(str(error_for(api, status, '{"error": "x"}')).splitlines()) == 3


def test_empty_error_body_gives_no_detail_line(api: responses.RequestsMock) -> None:
    exc = error_for(api, 403)
    assert exc.error_message == ""
    assert str(exc).splitlines() == [
        "VectorShift API Forbidden (403)",
        "  Endpoint: GET /agent",
    ]


def test_error_status_is_tested_before_parsing(api: responses.RequestsMock) -> None:
    exc = error_for(api, 502, "<html>Bad Gateway</html>", content_type="text/html")
    assert exc.error_message == "<html>Bad Gateway</html>"


def test_status_error_has_no_chained_requests_exception(
    api: responses.RequestsMock,
) -> None:
    exc = error_for(api, 404, "{}")
    assert not isinstance(exc.__cause__, requests.RequestException)


# --- error_message extraction ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "e", "message": "m", "detail": "d", "errors": ["x"]}, "e"),
        ({"message": "m", "detail": "d"}, "m"),
        ({"detail": "d", "errors": ["x"]}, "d"),
        ({"errors": ["first", "second"]}, "first; second"),
        ({"error": "", "message": None, "detail": "d"}, "d"),
        ({"error": [], "detail": "d"}, "d"),
        ({"detail": [{"loc": ["q"], "msg": "field required"}]}, "field required"),
        ({"error": {"message": "nested", "code": 7}}, "nested"),
        ({"error": {"code": 7}}, '{"code": 7}'),
        ({"error": 42}, "42"),
        ({"errors": ["a", "", "b"]}, "a; b"),
    ],
)
def test_error_message_first_truthy_key(body: dict[str, Any], expected: str) -> None:
    assert _http.error_message_from_body(json.dumps(body)) == expected


def test_error_message_object_without_known_keys_is_pretty_printed() -> None:
    body = {"status": "failed", "code": 3}
    assert _http.error_message_from_body(json.dumps(body)) == json.dumps(
        body, indent=2, sort_keys=True
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Service Unavailable\n", "Service Unavailable"),
        ('["a", "b"]', '["a", "b"]'),
        ('"just a string"', '"just a string"'),
        ("", ""),
        ("{}", ""),
    ],
)
def test_error_message_non_object_bodies_are_raw_text(text: str, expected: str) -> None:
    assert _http.error_message_from_body(text) == expected


def test_a_huge_body_is_clipped_in_the_message_but_kept_raw(
    api: responses.RequestsMock,
) -> None:
    body = "x" * 5000
    exc = error_for(api, 502, body)
    assert exc.raw_response == body
    assert len(exc.error_message) < 1100
    assert exc.error_message.endswith("(4000 more characters)")


# --- network errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [requests.ReadTimeout("read timed out"), requests.ConnectTimeout("slow")]
)
def test_requests_timeouts_become_api_timeout_error(
    api: responses.RequestsMock, error: requests.RequestException
) -> None:
    api.get(AGENT_URL, body=error)
    with pytest.raises(ApiTimeoutError) as info:
        get(timeout=2.5)
    exc = info.value
    assert isinstance(exc, ApiConnectionError)
    assert isinstance(exc, TimeoutError)
    assert exc.__cause__ is error
    message = str(exc)
    assert message.startswith("Timed out after 2.5s: GET /agent: ")
    assert "timeout=" in message
    assert DEFAULT_BASE_URL in message


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("refused"),
        requests.exceptions.SSLError("bad certificate"),
        requests.exceptions.ChunkedEncodingError("cut short"),
        requests.TooManyRedirects("loop"),
    ],
)
def test_other_requests_errors_become_api_connection_error(
    api: responses.RequestsMock, error: requests.RequestException
) -> None:
    api.get(AGENT_URL, body=error)
    with pytest.raises(ApiConnectionError) as info:
        get()
    exc = info.value
    assert not isinstance(exc, ApiTimeoutError)
    assert exc.__cause__ is error
    message = str(exc)
    assert message.startswith("Connection error: GET /agent: ")
    assert "VECTORSHIFT_BASE_URL" in message
    assert "network" in message


def test_malformed_base_url_is_a_connection_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VECTORSHIFT_BASE_URL", "api.vectorshift.ai/v1")
    with pytest.raises(ApiConnectionError) as info:
        get()
    assert "api.vectorshift.ai/v1" in str(info.value)


def test_real_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listening socket that never accepts: the kernel completes the handshake, then
    # nothing is ever sent back, so only the read timeout can end the call.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        monkeypatch.setenv("VECTORSHIFT_BASE_URL", f"http://127.0.0.1:{port}/v1")
        with pytest.raises(ApiTimeoutError) as info:
            get(timeout=0.2)
    assert isinstance(info.value.__cause__, requests.Timeout)


def test_real_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # bound, never listening, kept bound: refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        monkeypatch.setenv("VECTORSHIFT_BASE_URL", f"http://127.0.0.1:{port}/v1")
        with pytest.raises(ApiConnectionError) as info:
            get(timeout=5)
    assert not isinstance(info.value, ApiTimeoutError)
    assert f"127.0.0.1:{port}" in str(info.value)


# --- bad success bodies -----------------------------------------------------------


def test_non_json_success_body_is_a_clear_error(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, body="<html>login</html>", content_type="text/html")
    with pytest.raises(VectorshiftError) as info:
        get()
    exc = info.value
    assert not isinstance(exc, ValueError)
    assert isinstance(exc.__cause__, ValueError)
    message = str(exc)
    assert "GET /agent" in message
    assert "status 200" in message
    assert "text/html" in message
    assert "<html>login</html>" in message
    assert "VECTORSHIFT_BASE_URL" in message


def test_empty_success_body_is_a_clear_error(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, body="", status=204)
    with pytest.raises(VectorshiftError, match="status 204.*<empty>"):
        get()


def test_json_success_body_that_is_not_an_object(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, json=[1, 2])
    with pytest.raises(VectorshiftError, match="JSON list where an object"):
        get()


# --- timeout and injected session ---------------------------------------------------


class RecordingSession(requests.Session):
    """A real requests.Session that remembers the keyword arguments of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True
        super().close()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.seen.append(kwargs)
        return super().request(method, url, *args, **kwargs)


def test_default_timeout_is_finite_and_passed_to_requests(
    api: responses.RequestsMock,
) -> None:
    api.get(AGENT_URL, json={})
    http = RecordingSession()
    get(http=http)
    assert http.seen[0]["timeout"] == _http.DEFAULT_TIMEOUT == 30.0


@pytest.mark.parametrize(
    ("given", "sent"), [(None, None), (2, 2.0), (0.5, 0.5), (float("inf"), None)]
)
def test_timeout_values_passed_to_requests(
    api: responses.RequestsMock, given: Any, sent: Any
) -> None:
    api.get(AGENT_URL, json={})
    http = RecordingSession()
    get(http=http, timeout=given)
    assert http.seen[0]["timeout"] == sent


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_bad_timeout_values(api: responses.RequestsMock, bad: float) -> None:
    with pytest.raises(InvalidArgumentError, match="timeout"):
        get(timeout=bad)
    assert len(api.calls) == 0


@pytest.mark.parametrize("bad", ["5", True, [1]])
def test_bad_timeout_types(api: responses.RequestsMock, bad: Any) -> None:
    with pytest.raises(ArgumentTypeError, match="timeout"):
        get(timeout=bad)
    assert len(api.calls) == 0


def test_injected_session_is_used_and_left_open(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, json={})
    http = RecordingSession()
    http.headers["X-Trace"] = "t1"
    get(http=http)
    get(http=http)
    assert len(http.seen) == 2
    assert api.calls[0].request.headers["X-Trace"] == "t1"
    assert not http.closed


def test_injected_session_must_be_a_requests_session() -> None:
    with pytest.raises(ArgumentTypeError, match="requests.Session"):
        get(http=object())


def test_errors_are_ours_only(api: responses.RequestsMock) -> None:
    api.get(AGENT_URL, body=requests.RequestException("odd"))
    with pytest.raises(VectorshiftError) as info:
        get()
    assert not isinstance(info.value, requests.RequestException)


def test_module_exports() -> None:
    assert set(_http.__all__) == {
        "DEFAULT_TIMEOUT",
        "request_json",
        "fetch_object",
        "check_timeout",
        "check_http",
        "check_session_id",
        "error_message_from_body",
        "plain_id",
        "optional_str",
    }


def test_scrub_masks_whole_tokens_only() -> None:
    from vectorshift_sync._http import _scrub

    assert _scrub("Max retries exceeded for x", "x") == "Max retries exceeded for ***"
    long_key = "sk-live-abcdef123"
    assert _scrub(f"Bearer {long_key}; key={long_key}", long_key) == (
        "Bearer ***f123; key=***f123"
    )
