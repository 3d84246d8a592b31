"""A Streamlit chat with a VectorShift agent, approvals included.

    pip install streamlit
    streamlit run examples/streamlit_chat.py

Streamlit reruns this script from the top on every interaction, each time on a new
thread. What must outlive a rerun lives in ``st.session_state``: the chat history,
the one Session of this browser tab, and a reply paused on an approval request. The
reply streams with ``st.write_stream(session.stream_text(prompt))``. When the agent
asks for approval, the stream raises ConversationalRunActionRequiredError; the app
keeps the stream, shows Approve / Deny buttons, and the click answers it with
``stream.respond(...)`` and streams the rest of the same turn.

Streamlit cannot tell when a tab is closed, so an idle limit lets sessions go: any
session unused for IDLE_LIMIT seconds is disconnected (never terminated). Its id is
in the page's URL (``?session=...``), so a tab that comes back, or a reload, resumes
the conversation by id, history included.
"""

import threading
import time

import streamlit as st
from _local import start_local_engine_unless_api_key

from vectorshift_sync import (
    Agent,
    ConversationalRunActionRequiredError,
    SessionError,
)

AGENT_NAME = "Demo Agent"  # a conversational agent in your account
IDLE_LIMIT = 15 * 60  # seconds a session may sit unused before it is let go


@st.cache_resource
def backend():
    """Once per server process: the local engine, unless VECTORSHIFT_API_KEY is set."""
    return start_local_engine_unless_api_key()


class LiveSessions:
    """Every connected Session of this server process, and when each was last used."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last_used = {}

    def touch(self, session):
        with self._lock:
            self._last_used[session] = time.monotonic()

    def let_idle_ones_go(self, limit):
        now = time.monotonic()
        with self._lock:
            idle = [s for s, used in self._last_used.items() if now - used > limit]
            for session in idle:
                del self._last_used[session]
        for session in idle:  # outside the lock: disconnect() waits for the network
            session.disconnect()


@st.cache_resource
def live_sessions():
    return LiveSessions()


def history_of(session):
    """The chat so far, rebuilt from the session's own history (when resuming)."""
    return [
        {"role": "user" if m.is_user else "assistant", "content": m.text}
        for m in session.get_messages()
        if m.content_type == "data_type_message" and m.text
    ]


def current_session():
    """This tab's Session: kept across reruns, resumed by id when it was let go."""
    state = st.session_state
    session = state.get("session")
    if session is None:
        resume_id = st.query_params.get("session")
        if resume_id:
            session = Agent.fetch(name=AGENT_NAME).resume_session(resume_id).connect()
            state.messages = history_of(session)
        else:
            session = Agent.fetch(name=AGENT_NAME).create_session().connect()
            state.messages = []
        state.session = session
        st.query_params["session"] = session.session_id
    elif not session.is_connected:
        session.connect()  # let go after the idle limit: attach to the same id again
        state.pending = None  # an approval left that long was dropped with the link
    registry = live_sessions()
    registry.touch(session)
    registry.let_idle_ones_go(IDLE_LIMIT)
    return session


def answer(approved):
    """Button callback (runs before the rerun): answer the paused reply's request."""
    stream = st.session_state.pending
    reason = None if approved else "The user clicked Deny."
    stream.respond(approved=approved, deny_reason=reason)
    st.session_state.resume = True


def show_approval(stream):
    request = stream.pending
    tool = request.data.get("tool_name") or "a tool"
    st.warning(f"The agent wants to run **{tool}** with {request.data.get('arguments')}.")
    left, right = st.columns(2)
    left.button("Approve", key="approve", on_click=answer, args=(True,))
    right.button("Deny", key="deny", on_click=answer, args=(False,))


def already_shown_then(stream):
    yield stream.text  # the part written before the pause
    yield from stream


def stream_reply(stream):
    """Write the reply as it streams; keep it in the history once the turn ends."""
    state = st.session_state
    state.pending = None
    try:
        st.write_stream(already_shown_then(stream))
    except ConversationalRunActionRequiredError:
        state.pending = stream  # kept across reruns until a button answers it
        show_approval(stream)
        return
    except SessionError as exc:
        st.error(f"The turn failed: {exc}")
        state.messages.append({"role": "assistant", "content": f"{stream.text}\n\n*({exc})*"})
        return
    except BaseException:
        # A rerun or a stop cut the reply short: keep what was shown, and let the
        # turn end unseen (the next turn will not see its leftovers).
        stream.close()
        state.messages.append({"role": "assistant", "content": stream.text + " …"})
        raise
    state.messages.append({"role": "assistant", "content": stream.text})


def main():
    backend()
    st.title("Chat with a VectorShift agent")
    session = current_session()
    state = st.session_state
    prompt = st.chat_input("Say something")
    pending = state.get("pending")
    if prompt and pending is not None:
        # A new message instead of a button: deny the request; the rest of that
        # turn ends unseen before the new message is sent.
        pending.respond(approved=False, deny_reason="The user sent a new message instead.")
        pending.close()
        state.messages.append({"role": "assistant", "content": pending.text + " *(denied)*"})
        state.pending = pending = None

    for message in state.messages:
        with st.chat_message(message["role"]):
            st.markdown(message["content"])
    if pending is not None:
        with st.chat_message("assistant"):
            if state.get("resume"):
                state.resume = False
                stream_reply(pending)
            else:
                if pending.text:
                    st.markdown(pending.text)
                show_approval(pending)
    if prompt:
        state.messages.append({"role": "user", "content": prompt})
        with st.chat_message("user"):
            st.markdown(prompt)
        with st.chat_message("assistant"):
            stream_reply(session.stream_text(prompt))
    st.caption(f"Session {session.session_id}")


main()
