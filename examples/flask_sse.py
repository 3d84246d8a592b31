"""Flask: stream an agent's reply to the browser with Server-Sent Events.

    pip install flask
    python examples/flask_sse.py          # then open http://127.0.0.1:5000/

The page's form opens an EventSource on /stream?message=...; the route sends one
``data:`` line per streamed delta (JSON-encoded, so a newline in a delta cannot
break the event) and an ``end`` event when the agent's turn is over. Plain blocking
code in a normal request handler: no asyncio, no extra worker.

Without VECTORSHIFT_API_KEY this runs against a local engine (see _local.py).
"""

import argparse
import json

from _local import local_engine_unless_api_key
from flask import Flask, Response, request

from vectorshift_sync import Agent, SessionEventType

AGENT_NAME = "Demo Agent"  # the name of a conversational agent in your account

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>vectorshift_sync + Flask</title></head>
<body>
  <h1>Ask the agent</h1>
  <form id="ask">
    <input id="message" size="60" value="Hello from the browser! What can you do?">
    <button id="send" type="submit">Send</button>
  </form>
  <p id="status"></p>
  <div id="reply" style="white-space: pre-wrap"></div>
  <script>
    document.getElementById("ask").addEventListener("submit", function (e) {
      e.preventDefault();
      var reply = document.getElementById("reply");
      var status = document.getElementById("status");
      reply.textContent = "";
      status.textContent = "streaming...";
      var message = document.getElementById("message").value;
      var source = new EventSource("/stream?message=" + encodeURIComponent(message));
      source.onmessage = function (event) {   // one delta per "data:" line
        reply.textContent += JSON.parse(event.data);
      };
      source.addEventListener("end", function () {
        source.close();                       // otherwise the browser reconnects
        status.textContent = "done";
      });
      source.addEventListener("agent-error", function (event) {
        status.textContent = "agent error: " + JSON.parse(event.data);
      });
      source.onerror = function () {          // the connection failed
        source.close();
        status.textContent = "connection error";
      };
    });
  </script>
</body>
</html>
"""


def sse(data, event=None):
    """Format one Server-Sent Event."""
    text = f"event: {event}\n" if event else ""
    return text + f"data: {json.dumps(data)}\n\n"


def create_app():
    app = Flask(__name__)
    # Fetched once: one HTTP request at start-up, not one per chat message.
    agent = Agent.fetch(name=AGENT_NAME)

    @app.get("/")
    def index():
        return PAGE

    @app.get("/stream")
    def stream():
        message = request.args.get("message", "").strip() or "Hello!"

        def generate():
            # One session per request. A Session is one conversation, and every
            # listener of a session sees all of its events: requests sharing one
            # session would read each other's replies. Each request here is a
            # whole conversation, so it is terminated at the end. (To continue a
            # conversation across requests, keep session.session_id in the user's
            # cookie and open agent.resume_session(id) in each request.)
            with agent.create_session() as session:
                for event in session.stream(message, timeout=120):
                    if event.type == SessionEventType.MESSAGE_DELTA and event.is_from_agent:
                        yield sse(event.delta)
                    elif event.type == SessionEventType.APPROVAL_REQUEST:
                        # This page has no approval UI, so say no (see approvals.py).
                        session.respond(event, approved=False, deny_reason="not from the web")
                    elif event.type == SessionEventType.ERROR:
                        yield sse(event.error, event="agent-error")
                session.terminate()
            # If the browser goes away mid-stream, Flask closes this generator and
            # the with-block still disconnects the session.
            yield sse(session.session_id, event="end")

        # Flask sends each yielded event as soon as it is produced.
        return Response(
            generate(),
            mimetype="text/event-stream",
            # Keep caches and proxies (nginx) from holding the events back.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the Flask SSE example.")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    with local_engine_unless_api_key():
        # threaded=True: each request (and its stream) gets its own thread.
        create_app().run(host="127.0.0.1", port=args.port, threaded=True)
