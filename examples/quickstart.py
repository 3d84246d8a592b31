"""Quickstart: send one message to an agent and print its reply as it streams.

    python examples/quickstart.py

Without VECTORSHIFT_API_KEY this runs against a local engine (see _local.py).
"""

from _local import local_engine_unless_api_key

from vectorshift_sync import Agent

AGENT_NAME = "Demo Agent"  # the name of a conversational agent in your account


def main():
    agent = Agent.fetch(name=AGENT_NAME)
    print(f"Fetched agent: {agent.name} (id={agent.id})")

    # The with-block connects the session and disconnects it at the end.
    with agent.create_session() as session:
        print(f"Session connected: {session.session_id}")

        session.send("Hello! What can you do?")

        print("\nAgent: ", end="", flush=True)
        # listen() blocks until the next event arrives; no asyncio needed.
        for event in session.listen():
            if event.delta:
                print(event.delta, end="", flush=True)
            # The agent's turn is over when it goes back to Idle.
            if event.is_turn_end:
                break
        print()

    print("\nDone.")


if __name__ == "__main__":
    with local_engine_unless_api_key():
        main()
