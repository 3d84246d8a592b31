"""Shared test fixtures: a clean environment, one timing knob, a thread-leak check,
one helper that reads a turn to its end, and a bare Connection with a recording sink."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

from vectorshift_sync import SessionEvent
from vectorshift_sync._connection import Connection, ConnectionSink, TransportClosed

# Several tests stop a child (an example app, the CLI) with SIGINT, as Ctrl-C would.
# A shell starts a background job with SIGINT ignored, and an ignored signal stays
# ignored across exec: the child's Python then installs no KeyboardInterrupt handler
# and never stops. So a suite run in the background (`pytest &`, nohup) gives its
# children the default handling back, by catching SIGINT as Python normally does
# (a caught signal is reset to the default in an exec'd child).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Multiply every timing bound in the suite (slow CI machines: VS_TEST_TIME_SCALE=3).
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))

_CLEARED = (
    "VECTORSHIFT_API_KEY",
    "VECTORSHIFT_BASE_URL",
    "VECTORSHIFT_WS_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "WEBSOCKET_CLIENT_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


#: Every frame type the server sends that the parser knows (PROTOCOL.md §3); the
#: fuzz tests of the parser and of the live reader draw from it.
INBOUND_FRAME_TYPES = (
    "session_created",
    "connect_session",
    "message_delta",
    "message_notification",
    "post_message",
    "post_messages",
    "get_messages",
    "pong",
    "participant_status",
    "error",
    "disconnect_session",
    "terminate_session",
)


def scaled(seconds: float) -> float:
    """A timing bound, scaled for the machine."""
    return seconds * TIME_SCALE


class CollectingSink(ConnectionSink):
    """A sink that keeps what a bare Connection reports (messages, its end)."""

    def __init__(self) -> None:
        self.messages: List[bytes] = []
        self.ended: List[TransportClosed] = []
        self.arrived = threading.Event()
        self.expect = 0

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        self.messages.extend(bytes(m) for m in messages)
        if self.expect and len(self.messages) >= self.expect:
            self.arrived.set()

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        self.ended.append(ending)

    def keepalive_frame(self) -> None:
        return None


def make_connection(sock: socket.socket, sink: ConnectionSink, **options: Any) -> Connection:
    """A bare Connection over ``sock`` with the session's defaults, ``options`` on top."""
    settings: Dict[str, Any] = dict(
        max_message_size=None, write_timeout=5.0, ping_interval=5.0, idle_timeout=15.0
    )
    settings.update(options)
    return Connection(sock, sink, **settings)


def until_turn_end(events: Iterator[SessionEvent]) -> List[SessionEvent]:
    """Every event up to and including the one that ends the agent's turn."""
    seen = []
    for event in events:
        seen.append(event)
        if event.is_turn_end:
            break
    return seen


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's keys, endpoints or proxies."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    import vectorshift_sync

    monkeypatch.setattr(vectorshift_sync, "api_key", None)
    yield


_SESSION_THREADS = ("vectorshift-io", "vectorshift-callbacks", "vectorshift-reconnect")


@pytest.fixture
def engine(local_engine: Any) -> Any:
    """The local engine (the package's own ``local_engine`` fixture), env vars set."""
    return local_engine


def _library_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(_SESSION_THREADS)}


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Every session thread a test starts must be gone when it ends."""
    before = _library_threads()
    yield
    deadline = time.monotonic() + scaled(2.0)
    leaked = _library_threads() - before
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = sorted(t.name for t in leaked if t.is_alive())
    assert not alive, f"threads outlived the test: {alive}"
