"""Resume: leave a session, come back to it later by id, and see its history.

    python examples/resume.py

disconnect() only detaches this client; the conversation stays on the server and
agent.resume_session(session_id) picks it up again, even from another process.
terminate() destroys it for good.
"""

from _local import local_engine_unless_api_key

from vectorshift_sync import Agent

AGENT_NAME = "Demo Agent"  # the name of a conversational agent in your account


def main():
    agent = Agent.fetch(name=AGENT_NAME)

    # First visit: one question, then disconnect (the with-block does it).
    with agent.create_session() as session:
        session_id = session.session_id
        print(f"Session created: {session_id}")
        reply = session.ask("Hello, this is my first visit.")
        print(f"Agent: {reply.text}")
    print("Disconnected.")

    # Later: resume the same session by its id.
    session = agent.resume_session(session_id)
    session.connect()
    print(f"\nResumed: {session.session_id}")
    reply = session.ask("I am back. Are you still there?")
    print(f"Agent: {reply.text}")

    print("\nHistory:")
    for message in session.get_messages():
        if message.is_user:
            who = "you"
        elif message.is_agent:
            who = "agent"
        else:
            continue
        # Tool calls and thinking are in the history too; show the chat messages.
        if message.content_type == "data_type_message":
            print(f"  {who}: {message.text}")

    # Done with it for good: terminate() deletes the session on the server.
    session.terminate()
    print("\nTerminated.")


if __name__ == "__main__":
    with local_engine_unless_api_key():
        main()
