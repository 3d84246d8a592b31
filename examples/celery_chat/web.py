"""The web side: start a turn in Celery, relay its Redis channel as Server-Sent Events.

    cd examples && flask --app celery_chat.web run      # with a worker running (tasks.py)

``GET /chat/<conversation>?message=...`` subscribes to the conversation's channel
*first* (pub/sub keeps nothing for late subscribers), numbers the turn, queues the
task, then sends one ``data:`` event per delta and a ``final`` event with the whole
reply. The web process holds no session and never talks to the engine: a request
thread only waits on Redis, so a turn that takes minutes costs no agent connection
here, and the turn survives the browser going away.

The ``final`` event carries the whole reply: after a lost worker, the turn is
followed by another one and deltas streamed while nobody was attached are not
replayed, so a page shows the final text in place of the deltas it collected.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Dict, Iterator, Optional

from flask import Flask, Response, abort, request

from celery_chat.tasks import (
    KEEP_SECONDS,
    TURN_TIMEOUT,
    channel_name,
    redis_client,
    run_turn,
    turns_key,
)

#: How long a request waits for the final message: a turn, plus the redelivery of a
#: lost worker's task.
RELAY_TIMEOUT = TURN_TIMEOUT + 60

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>vectorshift_sync + Celery</title></head>
<body>
  <h1>Chat (turns run in Celery workers)</h1>
  <form id="ask">
    <input id="message" size="60" value="Hello from the browser!">
    <button id="send" type="submit">Send</button>
  </form>
  <p id="status"></p>
  <div id="reply" style="white-space: pre-wrap"></div>
  <script>
    var conversation = "%(conversation)s";
    document.getElementById("ask").addEventListener("submit", function (e) {
      e.preventDefault();
      var reply = document.getElementById("reply"), status = document.getElementById("status");
      var send = document.getElementById("send");
      reply.textContent = ""; status.textContent = "streaming..."; send.disabled = true;
      var message = document.getElementById("message").value;
      var source = new EventSource(
        "/chat/" + conversation + "?message=" + encodeURIComponent(message));
      source.onmessage = function (event) { reply.textContent += JSON.parse(event.data); };
      source.addEventListener("final", function (event) {
        source.close();
        var final = JSON.parse(event.data);
        reply.textContent = final.text;          // whole reply, even after a lost worker
        status.textContent = final.error ? "error: " + final.error : "done";
        send.disabled = false;                   // one turn at a time per conversation
      });
      source.onerror = function () {
        source.close(); status.textContent = "connection error"; send.disabled = false;
      };
    });
  </script>
</body>
</html>
"""


def sse(data: Any, event: Optional[str] = None) -> str:
    """Format one Server-Sent Event (JSON data: a newline in a delta cannot break it)."""
    text = f"event: {event}\n" if event else ""
    return text + f"data: {json.dumps(data)}\n\n"


def relay(pubsub: Any, turn: int, timeout: float = RELAY_TIMEOUT) -> Iterator[str]:
    """SSE text for one turn, from a pub/sub already subscribed to its channel."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield sse({"text": "", "error": "no reply in time", "turn": turn}, "final")
                return
            raw = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if raw is None:
                continue
            item: Dict[str, Any] = json.loads(raw["data"])
            if item.get("turn") != turn:
                continue  # another tab's turn of the same conversation
            if item["type"] == "delta":
                yield sse(item["text"])
            elif item["type"] == "final":
                yield sse(item, "final")
                return
    finally:
        pubsub.close()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return PAGE % {"conversation": secrets.token_hex(8)}

    @app.get("/chat/<conversation>")
    def chat(conversation: str) -> Response:
        try:
            channel = channel_name(conversation)
        except ValueError:
            abort(404)
        message = request.args.get("message", "").strip() or "Hello!"
        r = redis_client()
        pubsub = r.pubsub()
        # Subscribed (confirmed by the server) before the task exists: pub/sub keeps
        # nothing for late subscribers.
        pubsub.subscribe(channel)
        if pubsub.get_message(timeout=10) is None:
            pubsub.close()
            abort(503)
        turn = int(r.incr(turns_key(conversation)))
        r.expire(turns_key(conversation), KEEP_SECONDS)
        run_turn.delay(conversation, turn, message)
        response = Response(
            relay(pubsub, turn),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.call_on_close(pubsub.close)  # also when the body is never read
        return response

    return app
