"""A Gradio chat with a VectorShift agent: one Session per browser session.

    pip install gradio
    python examples/gradio_chat.py

``gr.ChatInterface`` calls ``reply`` with each message; ``reply`` yields the growing
answer as ``session.stream_text(message)`` streams it. Gradio advances the generator
one step at a time on a pool of threads, which the text stream allows (it holds
nothing thread-owned between chunks).

Each browser session (Gradio's ``request.session_hash``) gets its own Session, so
users never see each other's turns. It is disconnected when the browser session ends
(``demo.unload``) and, for every session still open, when the app stops. The app is
launched with ``prevent_thread_lock=True`` and closed by ``demo.close()`` in a
``finally``, because a blocking ``launch()`` stopped by Ctrl-C skips the unload hooks.

This UI cannot ask the user about tool calls, so approval requests are denied with a
reason and the reply goes on (see streamlit_chat.py for Approve / Deny buttons).
"""

import threading

import gradio as gr
from _local import local_engine_unless_api_key

from vectorshift_sync import Agent, ConversationalRunActionRequiredError, SessionError

AGENT_NAME = "Demo Agent"  # a conversational agent in your account
CONCURRENCY = 16  # replies streamed at once (Gradio's default is one)


class BrowserSessions:
    """One connected Session per browser session, closed when that session ends."""

    def __init__(self, agent_name):
        self._agent_name = agent_name
        self._agent = None
        self._lock = threading.Lock()
        self._sessions = {}

    def get(self, request):
        key = request.session_hash
        with self._lock:
            session = self._sessions.get(key)
        if session is not None and session.is_connected:
            return session
        if session is None:
            if self._agent is None:
                self._agent = Agent.fetch(name=self._agent_name)
            session = self._agent.create_session()
        session.connect()  # outside the lock: it waits for the network
        with self._lock:
            self._sessions[key] = session
        return session

    def close(self, request: gr.Request):
        """``demo.unload`` hook: the browser session ended."""
        with self._lock:
            session = self._sessions.pop(request.session_hash, None)
        if session is not None:
            session.disconnect()

    def close_all(self):
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.disconnect()


def build_app(sessions):
    def reply(message, history, request: gr.Request):
        stream = sessions.get(request).stream_text(message)
        answer = ""
        with stream:  # closed, turn left to end unseen, if the user goes away
            while True:
                try:
                    for chunk in stream:
                        answer += chunk
                        yield answer
                    return
                except ConversationalRunActionRequiredError as exc:
                    tool = exc.event.data.get("tool_name") or "a tool"
                    answer += f"*(denied {tool}: this chat cannot ask for approval)*\n\n"
                    yield answer
                    stream.respond(approved=False, deny_reason="This chat cannot ask the user.")
                except SessionError as exc:
                    yield f"{answer}\n\n*(the turn failed: {exc})*"
                    return

    with gr.Blocks(title="VectorShift chat") as demo:
        gr.ChatInterface(reply, concurrency_limit=CONCURRENCY, api_name="chat")
        demo.unload(sessions.close)
    return demo


def main():
    with local_engine_unless_api_key():
        sessions = BrowserSessions(AGENT_NAME)
        demo = build_app(sessions)
        try:
            demo.launch(server_name="127.0.0.1", prevent_thread_lock=True)
            demo.block_thread()  # until Ctrl-C
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
            sessions.close_all()


if __name__ == "__main__":
    main()
