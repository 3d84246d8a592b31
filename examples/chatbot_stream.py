"""The docs' chatbot session example, without asyncio.

    python examples/chatbot_stream.py

The async example from the official docs, line for line, with ``async``/``await``
dropped (``async with`` and ``async for`` become ``with`` and ``for``) and one fix:
it stops at the chatbot's complete message, not at the echo of your own. Without
VECTORSHIFT_API_KEY this runs against a local engine (see _local.py).
"""

from _local import local_engine_unless_api_key

from vectorshift_sync import Chatbot
from vectorshift_sync.events import SessionEventType

CHATBOT_NAME = "Demo Chatbot"  # the name of a chatbot in your account


def main():
    # Fetch an existing chatbot (must already exist)
    chatbot = Chatbot.fetch(name=CHATBOT_NAME)
    print(f"Fetched chatbot: {chatbot.name} (id={chatbot.id})")

    # Open a session - same API as agent.create_session()
    with chatbot.create_session() as session:
        print(f"Session connected: {session.session_id}")

        session.send("Hello! What can you help me with?")

        print("\nAssistant: ", end="", flush=True)
        for event in session.listen(
            event_types=[
                SessionEventType.MESSAGE_DELTA,
                SessionEventType.MESSAGE_COMPLETE,
            ]
        ):
            if event.delta:
                print(event.delta, end="", flush=True)
            # Your own message is echoed back as a complete message too, so stop
            # at the chatbot's complete message, not at the first one.
            if event.is_complete and event.is_from_agent:
                break
        print()

    print("\nDone.")


if __name__ == "__main__":
    with local_engine_unless_api_key():
        main()
