"""Review of the connection and the I/O loop: defects found, each pinned by a test.

Every test here failed before the fix that came with it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List

import pytest
from conftest import scaled
from websockets.frames import Frame, Opcode

from vectorshift_sync._connection import Connection, ConnectionSink, TransportClosed

pytestmark = pytest.mark.timeout(60)


def _make(sock: socket.socket, sink: ConnectionSink, **options: Any) -> Connection:
    settings: Dict[str, Any] = dict(
        max_message_size=None, write_timeout=5.0, ping_interval=60.0, idle_timeout=60.0
    )
    settings.update(options)
    return Connection(sock, sink, **settings)


def _text(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class _LateThenFailing(ConnectionSink):
    """A sink whose first delivery holds the I/O thread past the idle timeout (a late
    I/O thread: a GC pause, a starved CPU) while the peer sends more, and whose
    second delivery fails, as a routing failure on the I/O thread does."""

    def __init__(self, peer: socket.socket, late: float) -> None:
        self.peer = peer
        self.late = late
        self.calls = 0
        self.ended: List[TransportClosed] = []
        self.second = threading.Event()

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.peer.sendall(_text(b"second"))  # waiting in the socket meanwhile
            time.sleep(self.late)  # the I/O thread is late (not a synchronisation)
            return
        self.second.set()
        raise RuntimeError("routing failed")

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        self.ended.append(ending)

    def keepalive_frame(self) -> None:
        return None


def test_a_failure_while_the_keepalive_tick_reads_ends_the_connection() -> None:
    # A failure while a socket is served ends its connection (on_failure): the
    # session then reconnects and recovers. The keepalive tick also reads, when the
    # I/O thread was late; a failure there left the connection open, with the
    # message lost and no keepalive or idle check ever again (the tick is re-armed
    # only when it returns).
    ours, peer = socket.socketpair()
    idle = scaled(0.3)
    sink = _LateThenFailing(peer, late=idle + scaled(0.1))
    connection = _make(ours, sink, ping_interval=60.0, idle_timeout=idle)
    connection.start()
    try:
        peer.sendall(_text(b"first"))
        assert sink.second.wait(scaled(5)), "the tick did not read the waiting frame"
        assert connection.finished.wait(scaled(3)), "the connection outlived the failure"
        assert sink.ended and "internal failure" in sink.ended[0].reason
    finally:
        connection.abort()
        connection.finished.wait(scaled(5))
        peer.close()

