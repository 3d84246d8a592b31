"""The API key never shows: not in logs (websocket-client's trace included), reprs or errors.

Log capture runs against an engine in a child process, so every record captured here
is the client's: the engine, as the server, logs the request headers it receives, and
that is the server's business. Reprs and exceptions use an in-process engine.
"""

from __future__ import annotations

import io
import logging
import secrets
import socket
import threading
import traceback
from typing import Iterator, List, Optional

import pytest
import websocket
from conftest import scaled
from engine_process import EngineProcess

from vectorshift_sync import Agent, AuthenticationError, Chatbot, SessionEventType
from vectorshift_sync._config import mask_key
from vectorshift_sync._redaction import WEBSOCKET_LOGGER, KeyRedactingFilter, masking
from vectorshift_sync.session import Session, SessionConnectionError
from vectorshift_sync.testing import LocalEngine

pytestmark = pytest.mark.timeout(60)

E = SessionEventType


def _new_key() -> str:
    return "sk-test-" + secrets.token_hex(16)


KEY = _new_key()


@pytest.fixture(scope="module")
def remote() -> Iterator[EngineProcess]:
    with EngineProcess(KEY) as engine:
        yield engine


@pytest.fixture
def traced() -> Iterator[io.StringIO]:
    """websocket-client's trace on, printing into a buffer through its own handler."""
    printed = io.StringIO()
    websocket.enableTrace(True, handler=logging.StreamHandler(printed))
    try:
        yield printed
    finally:
        websocket.enableTrace(False)


def _chain(exc: BaseException) -> List[BaseException]:
    seen: List[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _assert_no_key_in_exception(exc: BaseException, key: str) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert key not in text
    for link in _chain(exc):
        assert key not in str(link)
        assert key not in repr(link)
        assert all(key not in repr(arg) for arg in link.args)


def _all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text + "\n".join(record.getMessage() for record in caplog.records)


# --- logs -----------------------------------------------------------------------------


def test_debug_logs_and_the_websocket_client_trace_never_show_the_key(
    remote: EngineProcess,
    traced: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in remote.env.items():
        monkeypatch.setenv(name, value)
    agent_id = remote.agent_id()
    caplog.set_level(logging.DEBUG)  # root at DEBUG: every logger's records reach caplog
    with Session(owner_type="agent", owner_id=agent_id) as session:
        answer = session.ask("hello there", timeout=scaled(10))
        assert "hello there" in answer.text
        assert session.get_messages(timeout=scaled(5))
    out, err = capsys.readouterr()
    printed = traced.getvalue()
    logged = _all_logged(caplog)

    # The capture saw what it must have seen, or the test proves nothing:
    trace = [r for r in caplog.records if r.name == WEBSOCKET_LOGGER]
    assert any("Authorization: Bearer" in r.getMessage() for r in trace), "no handshake trace"
    assert f"Authorization: Bearer {mask_key(KEY)}" in printed  # the trace handler's output
    names = {record.name for record in caplog.records}
    assert any(name.startswith("vectorshift_sync") for name in names), names
    assert any(name.startswith("websockets") for name in names), names

    assert KEY not in logged
    assert KEY not in out + err + printed


def test_a_refused_key_is_not_in_the_error_the_trace_or_the_logs(
    remote: EngineProcess,
    traced: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in remote.env.items():
        monkeypatch.setenv(name, value)
    wrong = _new_key()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as caught:
        Session(owner_type="agent", owner_id="a" * 24, api_key=wrong).connect()
    assert caught.value.status_code == 401
    _assert_no_key_in_exception(caught.value, wrong)
    out, err = capsys.readouterr()
    printed = traced.getvalue()
    assert f"Authorization: Bearer {mask_key(wrong)}" in printed
    assert wrong not in _all_logged(caplog) + out + err + printed


def test_connection_errors_never_show_the_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    # Bound, never listening, and kept bound until the end: connections are refused,
    # and no other process can take the port in between.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        for url in (f"ws://127.0.0.1:{port}/v1", f"wss://127.0.0.1:{port}/v1"):
            monkeypatch.setenv("VECTORSHIFT_WS_URL", url)
            with pytest.raises(SessionConnectionError) as caught:
                Session(owner_type="agent", owner_id="a" * 24, api_key=KEY).connect()
            _assert_no_key_in_exception(caught.value, KEY)
            assert "refused" in str(caught.value)
    assert KEY not in _all_logged(caplog)


# --- reprs and errors with an in-process engine ---------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEngine]:
    with LocalEngine(KEY) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


def test_reprs_never_show_the_key(engine: LocalEngine) -> None:
    shown: List[object] = [engine]
    agent = Agent.fetch(name="Demo Agent", api_key=KEY)
    chatbot = Chatbot.fetch(name="Demo Chatbot", api_key=KEY)
    shown += [agent, chatbot]
    session = agent.create_session()
    shown.append(session)  # never connected
    with session:
        shown.append(session)  # open
        shown += list(session.stream("show me everything", timeout=scaled(10)))
        result = session.ask("and again", timeout=scaled(10))
        shown += [result, *result.events, *session.get_messages(timeout=scaled(5))]
    shown.append(session)  # closed
    direct = Session(owner_type="agent", owner_id=agent.id, api_key=KEY)
    shown.append(direct)
    assert any(getattr(item, "type", None) is E.MESSAGE_COMPLETE for item in shown)
    for item in shown:
        assert KEY not in repr(item), type(item)
        assert KEY not in str(item), type(item)


def test_http_errors_never_show_the_key(engine: LocalEngine) -> None:
    wrong = _new_key()
    with pytest.raises(AuthenticationError) as caught:
        Agent.fetch(name="Demo Agent", api_key=wrong)
    _assert_no_key_in_exception(caught.value, wrong)
    with pytest.raises(AuthenticationError) as caught:
        Session(owner_type="agent", owner_id="a" * 24, api_key=wrong).connect()
    _assert_no_key_in_exception(caught.value, wrong)


# --- the filter itself ----------------------------------------------------------------


def _filters_on(name: str) -> List[logging.Filter]:
    return [f for f in logging.getLogger(name).filters if isinstance(f, KeyRedactingFilter)]


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(WEBSOCKET_LOGGER, logging.DEBUG, __file__, 1, msg, args, None)


def test_the_filter_masks_only_while_a_key_is_registered() -> None:
    key = _new_key()
    with masking(key):
        (active,) = _filters_on(WEBSOCKET_LOGGER)
        record = _record("Authorization: Bearer %s\r\nHost: x", key)
        assert active.filter(record) is True  # rewritten, never dropped
        assert record.getMessage() == f"Authorization: Bearer {mask_key(key)}\r\nHost: x"
        untouched = _record("nothing secret %d", 5)
        active.filter(untouched)
        assert (untouched.msg, untouched.args) == ("nothing secret %d", (5,))
    late = _record("Bearer %s", key)
    active.filter(late)
    assert late.getMessage() == f"Bearer {key}"  # no key registered: nothing to do
    assert active.active == 0


def test_the_filter_is_installed_once_on_the_websocket_logger_only() -> None:
    with masking(_new_key()), masking(_new_key()):
        pass
    assert len(_filters_on(WEBSOCKET_LOGGER)) == 1
    for other in ("", "websockets", "websockets.client", "vectorshift_sync", "urllib3"):
        assert not _filters_on(other)
    assert all(not isinstance(f, KeyRedactingFilter) for f in logging.getLogger().filters)


def test_short_keys_are_masked_as_whole_tokens_and_long_keys_everywhere() -> None:
    with masking("abc"), masking("k" * 12):
        (active,) = _filters_on(WEBSOCKET_LOGGER)
        record = _record("Bearer abc; abcdef; xabc; key=%s!", "k" * 12 + "tail")
        active.filter(record)
        assert record.getMessage() == "Bearer ***; abcdef; xabc; key=***kkkktail!"
    with masking(None), masking(""):
        assert active.active == 0


def test_concurrent_handshakes_keep_their_keys_masked_until_each_ends() -> None:
    keys = [_new_key() for _ in range(8)]
    leaks: List[str] = []
    start = threading.Barrier(len(keys) * 2)

    def handshake(key: str) -> None:
        start.wait(scaled(5))
        for _ in range(200):
            with masking(key):
                record = _record("Authorization: Bearer %s", key)
                logging.getLogger(WEBSOCKET_LOGGER).handle(record)
                if key in record.getMessage():
                    leaks.append(key)

    threads = [
        threading.Thread(target=handshake, args=(key,), name=f"handshake-{n}")
        for n in range(2)
        for key in keys
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(20))
    assert not any(thread.is_alive() for thread in threads)
    assert not leaks
    (active,) = _filters_on(WEBSOCKET_LOGGER)
    assert active.active == 0
