"""Callbacks: let the session call your functions while your code does other work.

    python examples/callbacks.py

session.on(event_types, callback) registers a function (it also works as a
decorator). Callbacks run one at a time, in order, on the session's own callback
thread, so the main thread stays free. A callback that raises is logged and skipped;
the stream and the other callbacks carry on.
"""

import logging
import threading

from _local import local_engine_unless_api_key

from vectorshift_sync import Agent, SessionEventType

AGENT_NAME = "Demo Agent"  # the name of a conversational agent in your account

# A failing callback is reported through logging: show it on stderr.
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main():
    agent = Agent.fetch(name=AGENT_NAME)
    reply_done = threading.Event()

    with agent.create_session() as session:

        @session.on(SessionEventType.MESSAGE_DELTA)
        def print_delta(event):
            print(event.delta, end="", flush=True)

        @session.on([SessionEventType.TOOL_CALL, SessionEventType.TOOL_RESULT])
        def print_tool(event):
            print(f"[{event.type}: {event.tool_name}]")

        @session.on(SessionEventType.THINKING)
        def buggy(event):
            # A bug on purpose: it is logged, and nothing else is disturbed.
            raise RuntimeError("this callback has a bug")

        @session.on(SessionEventType.MESSAGE_COMPLETE)
        def on_complete(event):
            # Your own message is echoed back complete too; wait for the agent's.
            if event.is_from_agent:
                reply_done.set()

        session.send("Count the words of this sentence, please.")

        # The main thread is free while the reply streams in. Here it just counts
        # how often it got to run; a real program would do real work.
        turns_of_other_work = 0
        while not reply_done.wait(timeout=0.05):
            turns_of_other_work += 1

    print()
    print(f"Main thread: did other work {turns_of_other_work} times while the reply streamed.")
    print("Done.")


if __name__ == "__main__":
    with local_engine_unless_api_key():
        main()
