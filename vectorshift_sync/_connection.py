"""One WebSocket connection: the I/O thread reads, callers write.

The socket arrives upgraded (:mod:`._dial`, on the caller's thread). It is then made
non-blocking and handed to the process's I/O thread (:mod:`._ioloop`), which reads it
whenever it is ready and feeds the bytes to websockets' sans-I/O ``Protocol``: frames,
pings, the close handshake. websocket-client's own ``recv()`` and ``close()`` are
never called (its ``close()`` reads frames itself and swallows errors).

Who does what, on which thread:

* reading, framing and the keepalive timer (``ping`` frames, the idle check): the I/O
  thread only, which never waits for the socket;
* :meth:`Connection.send_text`: the caller's thread, one writer at a time (the send
  lock), bounded by ``write_timeout``. Frames the I/O thread must write (pongs, close
  replies, pings) are queued; the writer holding the lock sends them too, and a write
  the I/O thread cannot finish now waits for the socket to be writable, never for
  the lock or the network;
* TLS: bytes decrypted and buffered inside an ``SSLSocket`` do not wake a selector,
  so every read drains the socket until ``SSLWantReadError``. One lock orders the
  ``SSLSocket``'s reads and writes (OpenSSL objects are not for two threads at once);
  it is never held while waiting.

This module is where the open connection's socket exceptions become ours (the
dialling ones become ours in :mod:`._dial`).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Union

from websockets.exceptions import PayloadTooBig
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from ._deadline import Deadline
from ._ioloop import Handler, IOLoop, Timer, io_loop
from .errors import (
    SessionConnectionError,
    SessionDisconnectedError,
    SessionTimeoutError,
)

__all__ = [
    "Connection",
    "ConnectionSink",
    "TransportClosed",
    "SessionConnectionError",
]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
#: Reads of one plain socket per wake-up before the loop serves the others (the
#: selector reports it again while bytes remain).
_READS_PER_TURN = 16
#: Queued outbound bytes past which the I/O thread skips a heartbeat rather than
#: queue more behind a peer that is not reading.
_OUT_LIMIT = 1 << 16
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_WRITE_FAILED = "writing to the WebSocket failed"
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TransportClosed(Exception):
    """The connection is over; ``reason`` says how (for logs and ERROR events)."""

    def __init__(self, reason: str, *, clean: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clean = clean


class ConnectionSink:
    """What a :class:`Connection` reports to (its session), on the I/O thread.

    Implementations must not block and must not run user code.
    """

    def connection_messages(self, connection: Connection, messages: List[bytes]) -> None:
        raise NotImplementedError  # pragma: no cover - interface

    def connection_ended(self, connection: Connection, ending: TransportClosed) -> None:
        raise NotImplementedError  # pragma: no cover - interface

    def keepalive_frame(self) -> Optional[str]:
        """A text frame to send with every WebSocket ping (``ping_session``), or None."""
        return None  # pragma: no cover - interface


#: Opcodes websockets' ``Frame.parse`` accepts (continuation, text, binary, close,
#: ping, pong); any other fails the connection as soon as the header is in.
_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82  # first header byte: FIN, no RSV bit, the opcode


class _Framer:
    """Messages out of a read buffer: by slicing where websockets would only slice,
    through websockets' ``Protocol`` for everything else.

    websockets stays the authority. A complete frame with FIN set, no RSV bit, opcode
    text or binary, no mask and a length within ``max_size``, outside a fragmented
    message, is all the ``Protocol`` would turn into one event with no other effect:
    such frames are sliced out here (binary ones dropped, as before). Every other
    complete frame (control frames, fragments, RSV bits, ...) is handed to the
    ``Protocol`` as a whole, in stream order, and its events assembled in place.

    The ``Protocol`` is therefore only ever given whole frames and is always at a
    frame boundary when slicing resumes; a partial frame at the end of a read waits
    in ``_pending`` for the next. A header websockets rejects before reading the
    payload (unknown opcode, a masked frame, a length over the limit) and anything
    after the ``Protocol`` left the OPEN state (a close frame, a protocol error, a
    close we sent) switch the framer off for good: from that byte on, every byte goes
    to the ``Protocol``, exactly as without a fast path. ``tests/test_framing.py``
    checks both give the same messages, close and error on random streams.

    Not thread-safe: the connection calls it with its protocol lock held.
    """

    def __init__(self, protocol: Protocol, max_size: Optional[int], *, fast: bool = True) -> None:
        self._protocol = protocol
        self._max_size = max_size
        self._fast = fast  # False: every byte goes to the Protocol
        # An incomplete frame (fast path only): its bytes so far, and how many the
        # whole frame has (0 while its header is incomplete). Joined once complete,
        # so a large message read in many pieces is copied once.
        self._pending: List[bytes] = []
        self._pending_size = 0
        self._need = 0
        # The fragmented message in progress, as the Protocol tracks it: the bytes
        # received so far (None outside one), which lower the size limit.
        self._current_size: Optional[int] = None
        # Assembly of fragmented messages from the Protocol's frames.
        self._fragments: List[bytes] = []
        self._binary = False  # inside a fragmented binary message (ignored)

    def receive(self, data: bytes, out: List[bytes]) -> None:
        """Take one read's bytes; append the text messages they complete to ``out``."""
        if not self._fast or self._protocol.state is not State.OPEN:
            self._to_protocol(data, out)
            return
        if self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._need:
                return  # the frame is still incomplete
            buf = b"".join(self._pending)
            self._pending = []
        else:
            buf = data
        end = len(buf)
        pos = 0
        need = 0  # the length of the incomplete frame at pos, once its header is in
        limit = self._limit()
        append = out.append
        while end - pos >= 2:
            head = buf[pos]
            size = buf[pos + 1]
            if size & 0x80 or head & 0x0F not in _OPCODES:
                self._to_protocol(buf[pos:], out)  # masked, or no such opcode: fails
                return
            start = pos + 2
            if size >= 126:
                start += 2 if size == 126 else 8
                if start > end:
                    break
                size = int.from_bytes(buf[pos + 2 : start], "big")
            if limit is not None and size > limit:
                self._to_protocol(buf[pos:], out)  # PayloadTooBig from the header
                return
            stop = start + size
            if stop > end:
                need = stop - pos
                break
            if head == _FIN_TEXT and self._current_size is None:
                append(buf[start:stop])
            elif head != _FIN_BINARY or self._current_size is not None:
                self._hand_over(buf[pos:stop], head, size, out)
                if self._protocol.state is not State.OPEN:
                    self._to_protocol(buf[stop:], out)  # a close, or a protocol error
                    return
                limit = self._limit()
            pos = stop
        if pos < end:
            self._pending = [buf[pos:]]
            self._pending_size = end - pos
            self._need = need

    def receive_eof(self, out: List[bytes]) -> None:
        """The peer closed its side: the Protocol gets what is pending, then the EOF."""
        self._to_protocol(b"", out)
        self._protocol.receive_eof()
        self._assemble(self._protocol.events_received(), out)

    def _limit(self) -> Optional[int]:
        # The Protocol's size limit for the next frame header (Protocol.parse).
        if self._max_size is None or self._current_size is None:
            return self._max_size
        return self._max_size - self._current_size

    def _hand_over(self, frame: bytes, head: int, size: int, out: List[bytes]) -> None:
        """One whole frame to the Protocol; keep track of fragmented messages as it does."""
        protocol = self._protocol
        protocol.receive_data(frame)
        self._assemble(protocol.events_received(), out)
        opcode, fin = head & 0x0F, head & 0x80
        if opcode == 0x1 or opcode == 0x2:
            self._current_size = None if fin else size
        elif opcode == 0x0 and self._current_size is not None:
            self._current_size = None if fin else self._current_size + size

    def _to_protocol(self, data: bytes, out: List[bytes]) -> None:
        """Leave the fast path for good: the pending bytes and ``data`` to the Protocol."""
        self._fast = False
        if self._pending:
            data = b"".join(self._pending) + data
            self._pending = []
        if data:
            protocol = self._protocol
            protocol.receive_data(data)
            self._assemble(protocol.events_received(), out)

    def _assemble(self, frames: List[Any], out: List[bytes]) -> None:
        """Whole text messages out of the Protocol's frames (binary ones are dropped)."""
        append = out.append
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    if opcode is _TEXT:
                        append(frame.data)
                    if self._fragments:
                        self._fragments = []
                else:
                    self._fragments = [frame.data] if opcode is _TEXT else []
                    self._binary = opcode is _BINARY
            elif opcode is _CONT:
                if not self._binary:
                    self._fragments.append(frame.data)
                    if frame.fin:
                        append(b"".join(self._fragments))
                        self._fragments = []


class Connection(Handler):
    """A connected WebSocket served by the I/O loop.

    :meth:`start` hands it to the loop. Thread rules: :meth:`send_text`,
    :meth:`send_close`, :meth:`abort` and :meth:`close` may be called from any thread
    except the I/O thread; everything named ``on_*`` runs on the I/O thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        sink: ConnectionSink,
        *,
        max_message_size: Optional[int],
        write_timeout: float,
        ping_interval: float,
        idle_timeout: float,
        loop: Optional[IOLoop] = None,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._tls_lock = threading.Lock()
        self._sink = sink
        self._loop = loop if loop is not None else io_loop()
        self._protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=max_message_size)
        self._proto_lock = threading.Lock()  # the protocol object and _out; no I/O inside
        self._send_lock = threading.Lock()  # one writer at a time; held while writing
        self._out: Deque[bytes] = deque()  # frames encoded but not yet written (b"": EOF)
        self._out_size = 0
        self._current: Optional[Union[memoryview, bytes]] = None  # the send lock holder's
        self._wants_write = False
        self._write_timeout = write_timeout
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._framer = _Framer(self._protocol, max_message_size)
        self._aborted = False  # abort() was called: the end is ours
        self._broken = False  # a write failed: the end is the network's
        self._timed_out = False  # ... because it timed out: its shutdown is ours
        self._sock_closed = False
        self._end: Optional[TransportClosed] = None
        self._timer: Optional[Timer] = None
        self._next_ping = 0.0
        #: Set on the I/O thread once the connection is over and its socket closed.
        self.finished = threading.Event()
        #: When the socket last gave bytes (the half-open check).
        self.last_data = time.monotonic()

    # --- state ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has ended, failed, or :meth:`abort` was called."""
        return (
            self._end is not None
            or self._aborted
            or self._broken
            or self._protocol.state is State.CLOSED
        )

    @property
    def loop(self) -> IOLoop:
        """The I/O loop serving this connection."""
        return self._loop

    def fileno(self) -> int:
        return self._fd

    @property
    def ended(self) -> bool:
        return self._end is not None

    def start(self) -> None:
        """Hand the socket to the I/O thread and start the keepalive timer."""
        now = time.monotonic()
        self.last_data = now
        self._next_ping = now + self._ping_interval
        # The timer first: once added, the I/O thread may read an EOF and end the
        # connection at once, cancelling whatever timer it finds then (a timer made
        # after that would keep the loop's thread alive for a dead connection).
        try:
            self._timer = self._loop.call_later(
                min(self._ping_interval, self._idle_timeout), self._on_tick
            )
            self._loop.add(self)
        except BaseException:  # no I/O thread could start: this connection never ran
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self._aborted = True
            self._sock.close()
            self.finished.set()
            raise

    # --- sending (callers' threads) --------------------------------------------------

    def send_text(self, text: str, timeout: Optional[float] = None) -> None:
        """Write one text frame within ``timeout`` (default ``write_timeout``).

        Raises :class:`SessionDisconnectedError` when the connection is over or the
        write failed (a write cut short leaves the stream unusable, so the connection
        is ended and the session reconnects), :class:`SessionTimeoutError` when
        another writer held the socket for the whole timeout (nothing was sent).
        """
        data = text.encode("utf-8")
        self._write(lambda p: p.send_text(data), timeout)

    def send_close(self, code: int = 1000, timeout: Optional[float] = None) -> None:
        """Start the closing handshake; a connection already closing is left alone."""
        try:
            self._write(lambda p: p.send_close(code) if p.state is State.OPEN else None, timeout)
        except (SessionDisconnectedError, SessionTimeoutError):
            pass

    def _write(self, action: Callable[[Protocol], None], timeout: Optional[float]) -> None:
        limit = self._write_timeout if timeout is None else timeout
        deadline = Deadline(limit)
        if not self._send_lock.acquire(timeout=deadline.remaining() or 0.0):
            raise SessionTimeoutError(
                f"timed out after {limit:g}s waiting to write on the "
                "WebSocket (another write was stuck); nothing was sent"
            )
        try:
            with self._proto_lock:
                if self.closed or self._protocol.state is not State.OPEN:
                    raise SessionDisconnectedError(
                        "the WebSocket is closed; connect() again to resume the session"
                    )
                action(self._protocol)
                self._queue_locked(self._protocol.data_to_send())
            self._flush(deadline, limit)
        finally:
            self._release_writer()

    def _queue_locked(self, chunks: List[bytes]) -> None:
        # Called with self._proto_lock held.
        for chunk in chunks:
            self._out.append(chunk)
            self._out_size += len(chunk)

    def _next_chunk(self) -> Optional[Union[memoryview, bytes]]:
        # Called by the send lock's holder.
        current = self._current
        if current is not None:
            return current
        with self._proto_lock:
            if not self._out:
                return None
            chunk = self._out.popleft()
            self._out_size -= len(chunk)
        self._current = memoryview(chunk) if chunk else chunk
        return self._current

    def _send_some(self, chunk: Union[memoryview, bytes]) -> int:
        """Write what the socket takes now; 0 when it would block."""
        if self._sock_closed:
            raise OSError("the socket is closed")
        if not chunk:  # websockets asks for a half-close
            self._sock.shutdown(socket.SHUT_WR)
            return 0
        try:
            if self._tls:
                with self._tls_lock:
                    return self._sock.send(chunk)
            return self._sock.send(chunk)
        except _WOULD_BLOCK:
            return 0

    def _advance(self, chunk: Union[memoryview, bytes], sent: int) -> bool:
        """Record ``sent`` bytes of ``chunk`` as written; True when it is all out."""
        if not chunk or sent >= len(chunk):
            self._current = None
            return True
        if sent:
            self._current = chunk[sent:]
        return False

    def _flush(self, deadline: Deadline, limit: float) -> None:
        """Write everything queued, waiting for the socket up to ``deadline``."""
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                return
            try:
                sent = self._send_some(chunk)
            except (OSError, ValueError) as exc:
                self._fail_write()
                raise SessionDisconnectedError(f"sending on the WebSocket failed: {exc}") from exc
            if self._advance(chunk, sent) or sent:
                continue
            left = deadline.remaining()
            if not left or not _wait_writable(self._sock, left):
                if not deadline.expired:
                    continue  # woken early (EINTR): try again
                self._timed_out = True
                self._fail_write()
                raise SessionDisconnectedError(
                    f"sending on the WebSocket timed out after {limit:g}s; "
                    "the connection is closed (the session reconnects)"
                )

    def _flush_now(self) -> bool:
        """Write what the socket takes without waiting; True when nothing is left.
        What the socket does not take now waits for the I/O thread's next wake-up."""
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                if self._wants_write:
                    self._wants_write = False
                    self._loop.want_write(self, False)
                return True
            try:
                sent = self._send_some(chunk)
            except (OSError, ValueError):
                self._fail_write()
                return True
            if self._advance(chunk, sent) or sent:
                continue
            if not self._wants_write:
                self._wants_write = True
                self._loop.want_write(self, True)
            return False

    def _release_writer(self) -> None:
        """Release the send lock; flush what another thread queued meanwhile.

        A thread that could not take the lock (the I/O thread with a pong, say) left
        its bytes to the holder: look once more after letting go, so none is stranded.
        """
        while True:
            if self._end is not None and not self._sock_closed:
                self._close_socket()  # the connection ended while this thread wrote
            self._send_lock.release()
            if self._end is not None and not self._sock_closed and self._send_lock.acquire(False):
                try:  # the connection ended as this thread let go: close it here
                    self._close_socket()
                finally:
                    self._send_lock.release()
                return
            if self._end is not None or self._broken or (not self._out and self._current is None):
                return
            if not self._send_lock.acquire(False):
                return  # the new holder flushes
            if not self._flush_now():
                # The socket is full: the I/O thread writes the rest when it drains.
                if self._end is not None and not self._sock_closed:
                    self._close_socket()
                self._send_lock.release()
                if self._end is not None or self._broken or self._wants_write:
                    return
                # The I/O thread found the lock held after _flush_now asked it to
                # watch for writability, and left the flush to this thread (turning
                # the watch off): take the lock again, or leave it to the new holder.
                if not self._send_lock.acquire(False):
                    return

    def _fail_write(self) -> None:
        # Part of a frame may be on the wire: the stream cannot go on, and nothing
        # queued behind it will be written.
        if self._broken:
            return
        self._broken = True
        self._current = None
        with self._proto_lock:
            self._out.clear()
            self._out_size = 0
        self._shutdown()
        self._loop.call_soon(lambda: self._finish(TransportClosed(_WRITE_FAILED)))

    # --- the I/O thread ------------------------------------------------------------------

    def on_readable(self) -> None:
        """Read until the socket would block; frame; hand the messages over; detect the end."""
        if self._end is not None:
            return
        sock = self._sock
        chunks: List[bytes] = []
        eof = False
        failure: Optional[BaseException] = None
        reads = 0
        while True:
            try:
                if self._tls:
                    with self._tls_lock:
                        data = sock.recv(_READ_SIZE)
                else:
                    data = sock.recv(_READ_SIZE)
            except _WOULD_BLOCK:
                break
            except (OSError, ValueError) as exc:
                failure = exc
                break
            if not data:
                eof = True
                break
            chunks.append(data)
            reads += 1
            if self._tls:
                # Decrypted bytes left inside the SSLSocket wake no selector: drain
                # them now, and only leave the rest to the kernel's buffer.
                if reads >= _READS_PER_TURN and not self._decrypted_waiting():
                    break
            elif len(data) < _READ_SIZE or reads >= _READS_PER_TURN:
                break
        if chunks:
            self.last_data = time.monotonic()
        messages: List[bytes] = []
        with self._proto_lock:
            framer = self._framer
            for chunk in chunks:
                framer.receive(chunk, messages)
            if eof:
                framer.receive_eof(messages)
            protocol = self._protocol
            replies = protocol.data_to_send()
            if replies:
                self._queue_locked(replies)
            state = protocol.state
        if replies:
            self._flush_from_loop()
        if messages:
            self._sink.connection_messages(self, messages)
        if failure is not None:
            self._finish(self._failure_reason(failure))
        elif eof or state is State.CLOSED:
            self._finish(self._closed_reason(eof))

    def on_writable(self) -> None:
        self._flush_from_loop()
        if not self._out and self._current is None:
            # Nothing left: stop watching, whatever a queued want_write() said.
            self._wants_write = False
            self._loop.want_write(self, False)  # on this thread: applied at once

    def on_failure(self, exc: BaseException) -> None:
        self._finish(TransportClosed(f"internal failure serving the WebSocket: {exc!r}"))

    def _flush_from_loop(self) -> None:
        if not self._send_lock.acquire(False):
            # A caller is writing: it sends what was queued before it lets go.
            if self._wants_write:
                self._wants_write = False
                self._loop.want_write(self, False)
            # It may have let go in between, seeing the watch still on: try once
            # more, so that the queued bytes are never left with nobody to write them.
            if not self._send_lock.acquire(False):
                return
        try:
            self._flush_now()
        finally:
            self._release_writer()

    def _on_tick(self) -> None:
        """Heartbeat and idle check, then schedule the next tick (I/O thread).

        A failure here ends the connection, as one while its socket is served does:
        the tick is re-armed only when it returns, so a connection left open after
        one would have no keepalive and no idle check any more."""
        try:
            self._tick()
        except Exception as exc:
            logger.exception("the keepalive tick failed")
            self.on_failure(exc)

    def _tick(self) -> None:
        if self._end is not None:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self._ping_interval
            self._heartbeat()
        if now - self.last_data >= self._idle_timeout:
            if self._bytes_waiting():
                # This thread was late, the link is not: read what is there.
                self.on_readable()
            else:
                self._finish(
                    TransportClosed(
                        f"no data from the server for {self._idle_timeout:g}s; "
                        "the connection looks half-open"
                    )
                )
            if self._end is not None:
                return
        due = min(self._next_ping, self.last_data + self._idle_timeout)
        self._timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._on_tick)

    def _heartbeat(self) -> None:
        if self._out_size > _OUT_LIMIT:
            return  # the peer is not reading: skip, never pile up
        extra = self._sink.keepalive_frame()
        with self._proto_lock:
            if self._protocol.state is not State.OPEN or self.closed:
                return
            if extra is not None:
                self._protocol.send_text(extra.encode("utf-8"))
            self._protocol.send_ping(b"")
            self._queue_locked(self._protocol.data_to_send())
        self._flush_from_loop()

    def _decrypted_waiting(self) -> int:
        """Decrypted bytes waiting inside the ``SSLSocket`` (0 for a plain socket),
        read under the TLS lock like every other use of the SSL object."""
        sock = self._sock
        if not isinstance(sock, ssl.SSLSocket):
            return 0
        with self._tls_lock:
            return sock.pending()

    def _bytes_waiting(self) -> bool:
        if self._tls:
            try:
                if self._decrypted_waiting():
                    return True
            except (OSError, ValueError):
                return True
        return _wait_readable(self._sock, 0.0)

    def _finish(self, ending: TransportClosed) -> None:
        """End the connection (I/O thread): unregister, close, tell the sink once."""
        if self._end is not None:
            return
        if self._aborted and not ending.clean:
            ending = TransportClosed("connection closed locally", clean=True)
        self._end = ending
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._loop.remove(self)
        self._shutdown()
        if self._send_lock.acquire(False):
            try:
                self._close_socket()
            finally:
                self._send_lock.release()
        # else: the writer closes it as it lets go (_release_writer)
        self.finished.set()
        self._sink.connection_ended(self, ending)

    def _failure_reason(self, exc: BaseException) -> TransportClosed:
        if self._aborted:
            return TransportClosed("connection closed locally", clean=True)
        if isinstance(exc, ConnectionResetError):
            return TransportClosed("server dropped the connection without a close frame (reset)")
        if self._timed_out:  # our shutdown after a write timed out, read before its end ran
            return TransportClosed(_WRITE_FAILED)
        return TransportClosed(f"reading from the WebSocket failed: {exc}")

    def _closed_reason(self, eof: bool) -> TransportClosed:
        protocol = self._protocol
        if self._aborted:
            return TransportClosed("connection closed locally", clean=True)
        exc = getattr(protocol, "parser_exc", None)
        if isinstance(exc, PayloadTooBig):  # ours to report: the server only saw a 1009
            return TransportClosed(f"a message from the server exceeded max_message_size: {exc}")
        received = protocol.close_rcvd
        if received is not None:
            clean = received.code == 1000
            reason = f"server closed the WebSocket (code {received.code}"
            reason += f", {received.reason!r})" if received.reason else ")"
            return TransportClosed(reason, clean=clean)
        if exc is not None and not isinstance(exc, EOFError):
            return TransportClosed(f"protocol error from the server: {exc}")
        if self._timed_out:  # the EOF of our own shutdown after a write timed out
            return TransportClosed(_WRITE_FAILED)
        if eof:
            return TransportClosed("server dropped the connection without a close frame")
        return TransportClosed("the WebSocket closed")

    # --- teardown (any thread) -----------------------------------------------------------

    def abort(self) -> None:
        """End the connection now, without a closing handshake; idempotent."""
        self._aborted = True
        self._shutdown()
        self._loop.call_soon(
            lambda: self._finish(TransportClosed("connection closed locally", clean=True))
        )

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the end (e.g. the server's close reply), then
        abort and wait as long again; True once the socket is closed."""
        if self.finished.wait(timeout):
            return True
        self.abort()
        return self.finished.wait(timeout)

    def _shutdown(self) -> None:
        try:
            # The plain socket's shutdown: SSLSocket.shutdown() drops its TLS object
            # first, under a writer's feet on another thread.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _close_socket(self) -> None:
        # Called by the holder of the send lock, once the connection has ended.
        if self._sock_closed:
            return
        self._sock_closed = True
        try:
            self._sock.close()
        except OSError:  # pragma: no cover - best effort
            pass


def _wait_writable(sock: socket.socket, timeout: float) -> bool:
    return _poll(sock, timeout, write=True)


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    return _poll(sock, timeout, write=False)


def _poll(sock: socket.socket, timeout: float, *, write: bool) -> bool:
    try:
        if hasattr(select, "poll"):  # select() refuses descriptors past FD_SETSIZE
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLOUT if write else select.POLLIN)
            return bool(poller.poll(max(timeout, 0.0) * 1000.0))
        watched = [sock]
        ready = select.select([], watched, [], timeout) if write else select.select(
            watched, [], [], timeout
        )
        return bool(ready[1] if write else ready[0])
    except (OSError, ValueError):
        return True  # the socket is gone: the next call says how
