"""Shared test fixtures: a clean environment, one timing knob, and a thread-leak check."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterator

import pytest

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


def scaled(seconds: float) -> float:
    """A timing bound, scaled for the machine."""
    return seconds * TIME_SCALE


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's keys, endpoints or proxies."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    import vectorshift_sync

    monkeypatch.setattr(vectorshift_sync, "api_key", None)
    yield


_SESSION_THREADS = ("vectorshift-reader", "vectorshift-callbacks", "vectorshift-reconnect")


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
