"""``Link`` on its own: a session's state and connection, without a ``Session``.

Its connection is one end of a socket pair on an I/O loop that is never started, so
the test plays the I/O thread (``on_readable``, ``_finish``) and nothing runs behind
its back.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Iterator, List, Tuple

import pytest
from conftest import make_connection

from vectorshift_sync import _link
from vectorshift_sync._callbacks import Callbacks
from vectorshift_sync._connection import Connection, TransportClosed
from vectorshift_sync._deadline import Deadline
from vectorshift_sync._fanout import FanOut
from vectorshift_sync._ioloop import IOLoop
from vectorshift_sync._link import Link, LinkState
from vectorshift_sync._options import SessionOptions
from vectorshift_sync._subscribers import Ended, SubscriberQueue
from vectorshift_sync.errors import SessionDisconnectedError
from vectorshift_sync.events import SessionEvent, SessionEventType

SID = "6b0192833d1ed31d66c7965c"


def _options(**overrides: object) -> SessionOptions:
    settings = dict(
        owner_type="agent",
        owner_id="a1",
        connect_timeout=5.0,
        request_timeout=5.0,
        write_timeout=5.0,
        close_timeout=1.0,
        ping_interval=30.0,
        idle_timeout=60.0,
        backlog=16,
        max_message_size=None,
        sslopt=None,
        proxy=None,
        on_callback_error=None,
        reconnect=False,
        on_reconnect=None,
    )
    settings.update(overrides)
    return SessionOptions.checked(**settings)  # type: ignore[arg-type]


class _Parts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fanout = FanOut(self.lock, 16)
        self.callbacks = Callbacks(None)
        self.link = Link(
            _options(),
            SID,
            api_key=lambda: "not used: nothing dials here",
            lock=self.lock,
            fanout=self.fanout,
            callbacks=self.callbacks,
        )
        self.listener = SubscriberQueue(0)
        with self.lock:
            self.fanout.subscribe_locked(self.listener, fresh=False)

    def attach(self, state: LinkState = LinkState.OPEN) -> Tuple[Connection, socket.socket]:
        ours, server = socket.socketpair()
        connection = make_connection(
            ours,
            self.link._sink,
            ping_interval=30.0,
            idle_timeout=60.0,
            loop=IOLoop(),  # never started: the test plays the I/O thread
        )
        with self.lock:
            self.link.connection = connection
            self.link.state = state
        return connection, server

    def events(self) -> List[SessionEvent]:
        return self.listener.take_now()


@pytest.fixture
def parts() -> Iterator[_Parts]:
    made = _Parts()
    yield made
    with made.lock:
        made.fanout.end_locked(None)


def _frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


def _delta(n: int) -> bytes:
    return json.dumps(
        {"type": "message_delta", "session_id": SID, "message_id": "m1", "index": n, "value": "x"}
    ).encode()


def test_a_connection_that_ends_without_reconnect_ends_the_session_once(parts: _Parts) -> None:
    connection, server = parts.attach()
    _link._LIVE.add(parts.link)  # as open() registers it, for the goodbye at exit
    server.close()
    connection._finish(TransportClosed("server went away"))

    with pytest.raises(Ended) as ended:  # the listener ends with the error
        parts.events()
    error = ended.value.error
    assert error is not None and error.type is SessionEventType.ERROR
    assert error.data["error"] == "connection lost"
    assert error.data["reason"] == "server went away"
    assert error.data["reconnecting"] is False
    with pytest.raises(Ended) as again:
        parts.listener.take_now()
    assert again.value.error is None  # reported once
    assert parts.link.state is LinkState.CLOSED
    assert parts.link.connection is None
    assert parts.link not in _link._LIVE  # nothing to say goodbye for at exit
    assert "call connect() to resume" in parts.link.not_connected_message()
    with pytest.raises(SessionDisconnectedError, match="server went away"):
        parts.link.require_open()


def test_frames_read_from_a_connection_the_link_let_go_of_are_dropped(parts: _Parts) -> None:
    old, old_server = parts.attach()
    old_server.sendall(_frame(_delta(1)))
    current, current_server = parts.attach()  # replaced, as a reconnect does
    current_server.sendall(_frame(_delta(2)))
    try:
        old.on_readable()
        current.on_readable()
        for queue_ in parts.fanout.listeners:
            queue_.wake()
        assert [event.data["index"] for event in parts.events()] == [2]
    finally:
        for connection, server in ((old, old_server), (current, current_server)):
            server.close()
            connection._finish(TransportClosed("test over", clean=True))


def test_frames_read_while_closing_never_reach_a_listener(parts: _Parts) -> None:
    connection, server = parts.attach(LinkState.CLOSING)
    server.sendall(_frame(_delta(1)))
    try:
        connection.on_readable()
        assert parts.events() == []
    finally:
        server.close()
        connection._finish(TransportClosed("test over", clean=True))


def test_a_new_link_says_to_connect_first_and_sends_nothing(parts: _Parts) -> None:
    assert parts.link.state is LinkState.NEW and not parts.link.active
    assert not parts.link.is_connected
    with pytest.raises(SessionDisconnectedError, match=r"call connect\(\) first"):
        parts.link.require_open()
    with pytest.raises(SessionDisconnectedError, match=r"call connect\(\) first"):
        parts.link.send_frame("{}")
    with pytest.raises(SessionDisconnectedError):
        parts.link.request_history(Deadline(1.0))
