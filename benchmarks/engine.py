"""The benchmark engine: ``LocalEngine`` in a process of its own, with five agents.

Started by ``benchmarks/run.py`` and ``benchmarks/scale.py``; prints one JSON line to
stdout (``{"port", "env", "agents": {"flood", "paced", "chorus", "burst", "trivial"}}``)
and serves until stdin closes or SIGTERM. Agents (each turn is wrapped in
``Processing`` ... ``Idle`` by the engine; no echo of the user's post):

* ``Flood``: a turn ``prep N`` builds ``N`` ``message_delta`` frames (framed by
  websockets' own ``Frame.serialize``) and keeps them; the next turn, ``go``, writes
  them all with one ``sendall`` under the connection's lock. The engine's per-frame
  path (``ctx.flood``: a lock, a ``json.dumps``, a ``sendall`` per frame) tops out near
  the rate the fastest clients read at, and a benchmark of the consumer must not
  measure the producer: the client's clock starts when it sends ``go``.
* ``Paced``: the text is ``N R``; sends ``N`` deltas at ``R`` per second on an absolute
  schedule. Each delta's ``value`` is the sender's ``time.monotonic()`` (CLOCK_MONOTONIC
  is one clock for every process on Linux), taken just before the delta is encoded,
  framed and written: the engine's few microseconds of work count as latency, for
  both SDKs alike.
* ``Chorus``: the text is ``N R`` like ``Paced``, but one engine thread paces every
  session at once (the scale test).
* ``Burst``: the text is ``go N [cut] [burst]`` (``scale.py``). Writes ``N`` deltas,
  each with a write of its own (``burst``: all with one), framed from a template
  made once per ``N`` (a ``bytes.replace`` of the session id, so thousands of turns
  starting together cost the engine little), then the reply's ``Complete`` message
  through the engine (recorded in history). One engine thread (:class:`Writer`)
  writes every turn's deltas, round-robin: a delta per session in turn, as a server
  streaming many replies at once writes them. With ``cut``, only the first half of the deltas is
  written, then the connection is aborted (no close frame) and the reply completes
  in history while the client is away.
* ``Trivial``: does nothing (connect timing).

``--cert FILE --key FILE`` serves ``https://`` and ``wss://`` with that certificate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from websockets.frames import Frame, Opcode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _process import raise_fd_limit  # noqa: E402  (scale.py and sync_driver.py import it from here)

from vectorshift_sync.testing import LocalEngine, TurnContext  # noqa: E402

API_KEY = "bench-key"


def _connections(ctx: TurnContext) -> List[Any]:
    # The engine's hub knows which websockets connections carry this session. Private
    # on purpose: the benchmark needs the raw connection to write without per-frame
    # engine bookkeeping (records of every frame sent, fault checks).
    hub = ctx._outlet
    return [record._websocket for record in hub._targets(ctx.session_id)]  # type: ignore[attr-defined]


def _delta(session_id: str, message_id: str, index: int, value: str) -> bytes:
    return json.dumps(
        {
            "type": "message_delta",
            "session_id": session_id,
            "message_id": message_id,
            "index": index,
            "value": value,
        }
    ).encode()


def flood_payloads(session_id: str, n: int) -> List[bytes]:
    """The ``n`` deltas of a ``Flood`` turn, encoded (``breakdown.py`` times the same)."""
    message_id = "flood-" + session_id[-6:]
    value = "tok "  # a typical small LLM token
    return [_delta(session_id, message_id, i, value) for i in range(n)]


def _write(connection: Any, payload: bytes) -> None:
    """Frame ``payload`` as a text message with websockets' protocol and write it."""
    with connection.send_context():
        protocol = connection.protocol
        protocol.send_text(payload)
        connection.socket.sendall(b"".join(protocol.data_to_send()))


def _write_framed(connection: Any, blob: bytes) -> None:
    """Write frames serialised beforehand, under the connection's lock."""
    with connection.send_context():
        connection.socket.sendall(blob)


_prepared: Dict[str, bytes] = {}
_prepared_lock = threading.Lock()


def flood_turn(ctx: TurnContext) -> None:
    """``prep N`` frames N deltas and keeps them; ``go`` writes them in one sendall.

    Two turns, so that the client's clock (started at ``go``) measures the client:
    the engine's own JSON encoding and framing happen before it.
    """
    words = ctx.text.split()
    if words[0] == "prep":
        blob = b"".join(
            Frame(Opcode.TEXT, payload).serialize(mask=False)
            for payload in flood_payloads(ctx.session_id, int(words[1]))
        )
        with _prepared_lock:
            _prepared[ctx.session_id] = blob
        return
    with _prepared_lock:
        blob = _prepared.pop(ctx.session_id)
    for connection in _connections(ctx):
        _write_framed(connection, blob)


def paced_turn(ctx: TurnContext) -> None:
    parts = ctx.text.split()
    n, rate = int(parts[0]), float(parts[1])
    message_id = "paced-" + ctx.session_id[-6:]
    connections = _connections(ctx)
    start = time.monotonic() + 0.01
    for i in range(n):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if ctx.cancelled:
            return
        stamp = repr(time.monotonic())
        payload = _delta(ctx.session_id, message_id, i, stamp)
        for connection in connections:
            try:
                _write(connection, payload)
            except Exception:  # a client that left mid-turn (scale runs end abruptly)
                return


class Chorus:
    """Scale runs: one thread paces every session's stream, instead of one per session.

    A turn ``N R`` joins the chorus and waits; each tick (every ``1/R`` s, on an
    absolute schedule) writes the next delta to every member. A thousand turn threads
    each sleeping and waking 20 times a second would make the engine, not the client,
    the bottleneck of the scale test.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: List[Dict[str, Any]] = []
        self._thread: Optional[threading.Thread] = None

    def join(self, ctx: TurnContext, n: int, rate: float) -> None:
        member = {
            "ctx": ctx,
            "connections": _connections(ctx),
            "left": n,
            "index": 0,
            "done": threading.Event(),
            "message_id": "chorus-" + ctx.session_id[-6:],
        }
        with self._lock:
            self._members.append(member)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(rate,), daemon=True)
                self._thread.start()
        while not member["done"].wait(0.5):
            if ctx.cancelled:
                member["left"] = 0
                return

    def _run(self, rate: float) -> None:
        tick = 0
        start = time.monotonic()
        while True:
            with self._lock:
                members = [m for m in self._members if m["left"] > 0]
                self._members = members
                if not members:
                    self._thread = None
                    return
            for member in members:
                ctx = member["ctx"]
                payload = _delta(ctx.session_id, member["message_id"], member["index"], "tok ")
                member["index"] += 1
                member["left"] -= 1
                for connection in member["connections"]:
                    try:
                        _write(connection, payload)
                    except Exception:
                        member["left"] = 0
                if member["left"] <= 0:
                    member["done"].set()
            tick += 1
            pause = start + tick / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)


_chorus = Chorus()


def chorus_turn(ctx: TurnContext) -> None:
    parts = ctx.text.split()
    _chorus.join(ctx, int(parts[0]), float(parts[1]))


_TEMPLATE_ID = "0" * 24  # a session id is 24 hex characters: replaced in place
_templates: Dict[int, Tuple[bytes, List[int]]] = {}


def burst_frames(session_id: str, n: int) -> Tuple[bytes, List[int]]:
    """``n`` framed deltas for ``session_id`` in one blob, and where each frame ends."""
    with _prepared_lock:
        template = _templates.get(n)
        if template is None:
            template = _templates[n] = _framed(flood_payloads(_TEMPLATE_ID, n))
    blob, ends = template
    if len(session_id) != len(_TEMPLATE_ID):  # not an engine id: frame it the slow way
        return _framed(flood_payloads(session_id, n))
    return blob.replace(_TEMPLATE_ID.encode(), session_id.encode()), ends


def _framed(payloads: List[bytes]) -> Tuple[bytes, List[int]]:
    frames = [Frame(Opcode.TEXT, payload).serialize(mask=False) for payload in payloads]
    ends, end = [], 0
    for frame in frames:
        end += len(frame)
        ends.append(end)
    return b"".join(frames), ends


class Writer:
    """Scale runs: one engine thread writes every ``Burst`` turn's frames.

    Two thousand turn threads each writing a hundred frames left the engine's
    connection threads (pongs, ``connect_session`` acknowledgements) waiting their turn
    for the engine's GIL for over 15 s: the scale test measured the engine's scheduling,
    not the clients. Here a turn hands its pieces over and waits; one thread writes
    them round-robin, one piece per turn per round (each piece still a write of its
    own), with ``MSG_DONTWAIT`` so a client whose buffer is full is passed over, not
    waited for; when every turn is passed over, it waits for any socket to drain.
    (A TLS socket takes no flags: its pieces are written blocking, by the same thread.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incoming: List[_Stream] = []
        self._thread: Optional[threading.Thread] = None

    def write(self, ctx: TurnContext, connection: Any, pieces: List[bytes]) -> None:
        """Write ``pieces`` to ``connection`` in turn with every other stream; block until done."""
        if not pieces:
            return
        stream = _Stream(ctx, connection, pieces)
        with self._lock:
            self._incoming.append(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="engine-writer", daemon=True)
                self._thread.start()
        stream.done.wait()

    def _run(self) -> None:
        active: List[_Stream] = []
        poller = select.poll()
        while True:
            with self._lock:
                if not active and not self._incoming:
                    self._thread = None
                    return
                active.extend(self._incoming)
                self._incoming.clear()
            blocked = []
            for stream in active:
                if not stream.step():
                    blocked.append(stream)
            active = [stream for stream in active if not stream.done.is_set()]
            if active and len(blocked) == len(active):
                # Every client's buffer is full: wait for one to drain (or a new turn).
                for stream in blocked:
                    poller.register(stream.fd, select.POLLOUT)
                poller.poll(100)
                for stream in blocked:
                    poller.unregister(stream.fd)


class _Stream:
    """One turn's pieces on one connection, written one per round by :class:`Writer`."""

    def __init__(self, ctx: TurnContext, connection: Any, pieces: List[bytes]) -> None:
        self.ctx = ctx
        self.connection = connection
        self.sock = connection.socket
        self.fd = self.sock.fileno()
        self.tls = isinstance(self.sock, ssl.SSLSocket)
        self.pieces = pieces
        self.next = 0
        self.done = threading.Event()

    def step(self) -> bool:
        """Write the next piece if the socket takes it now; False if its buffer is full."""
        piece = self.pieces[self.next]
        try:
            with self.connection.send_context():
                if self.tls:  # an SSLSocket takes no flags: a blocking write
                    self.sock.sendall(piece)
                else:
                    try:
                        sent = self.sock.send(piece, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        return False
                    if sent < len(piece):  # rare: finish the frame before any other write
                        self.sock.sendall(piece[sent:])
        except Exception:  # the client went away (or aborted: chaos): the turn goes on
            self.done.set()
            return True
        self.next += 1
        if self.next == len(self.pieces) or self.ctx.cancelled:
            self.done.set()
        return True


_writer = Writer()


def burst_turn(ctx: TurnContext) -> None:
    """``go N [cut] [burst]``: N deltas, each written on its own (as a server streaming
    tokens does), or all in one (``burst``), by the shared :class:`Writer`; then the
    ``Complete``."""
    words = ctx.text.split()
    n = int(words[1])
    cut = "cut" in words[2:]
    blob, ends = burst_frames(ctx.session_id, n)
    if cut:
        ends = ends[: n // 2]
    pieces = [blob[: ends[-1]]] if "burst" in words[2:] and ends else []
    if not pieces:
        pieces = [blob[start:end] for start, end in zip([0] + ends[:-1], ends)]
    for connection in _connections(ctx):
        _writer.write(ctx, connection, pieces)
    if cut:
        ctx.drop()  # no close frame; the reply completes in history meanwhile
    ctx.complete("tok " * n, message_id="burst-" + ctx.session_id)


def trivial_turn(ctx: TurnContext) -> None:
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="the benchmark engine")
    parser.add_argument("--cert", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--key", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    fds = raise_fd_limit()
    # 1,000 sessions: one handler + one reader thread per connection in websockets'
    # threading server, one turn worker per session; small stacks keep that cheap.
    threading.stack_size(512 * 1024)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    engine = LocalEngine(API_KEY, demo=False, ssl_context=context)
    agents = {
        "flood": engine.add_agent("Flood", turn=flood_turn, echo=False),
        "paced": engine.add_agent("Paced", turn=paced_turn, echo=False),
        "chorus": engine.add_agent("Chorus", turn=chorus_turn, echo=False),
        "burst": engine.add_agent("Burst", turn=burst_turn, echo=False),
        "trivial": engine.add_agent("Trivial", turn=trivial_turn, echo=False),
    }
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def _stdin_watch() -> None:
        sys.stdin.read()  # the parent closed our stdin (or died): stop
        stop.set()

    with engine:
        info = {"port": engine.port, "env": engine.env, "agents": agents, "pid": os.getpid()}
        info["fd_limit"] = fds
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        threading.Thread(target=_stdin_watch, daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
