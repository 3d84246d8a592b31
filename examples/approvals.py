"""Approvals: the agent asks before running a gated tool, and you answer.

    python examples/approvals.py

session.stream() sends one message and yields that turn's events until the agent
is done. An APPROVAL_REQUEST pauses the turn: answer it with session.respond() and
keep iterating; the rest of the turn follows. The demo agent asks for approval
(to "send an email") whenever your message contains the word "approve".
"""

from _local import local_engine_unless_api_key

from vectorshift_sync import Agent, SessionEventType

AGENT_NAME = "Demo Agent"  # a conversational agent with an approval-gated tool


def run_turn(session, message, approve, deny_reason=None):
    """Send one message, print what happens, and answer the approval request."""
    print(f"\nYou: {message}")
    for event in session.stream(message):
        if event.type == SessionEventType.TOOL_CALL:
            print(f"  [tool call] {event.tool_name}")
        elif event.type == SessionEventType.APPROVAL_REQUEST:
            tool = event.data.get("tool_name")
            print(f"  [approval requested] {tool} {event.data.get('arguments')}")
            if approve:
                print("  [you] approve")
                session.respond(event, approved=True)
            else:
                print(f"  [you] deny: {deny_reason}")
                session.respond(event, approved=False, deny_reason=deny_reason)
        elif event.type == SessionEventType.MESSAGE_COMPLETE and event.is_from_agent:
            print(f"Agent: {event.text}")


def main():
    agent = Agent.fetch(name=AGENT_NAME)
    with agent.create_session() as session:
        print(f"Session connected: {session.session_id}")
        run_turn(session, "Please approve sending this note to the team.", approve=True)
        run_turn(
            session,
            "Please approve sending a second note.",
            approve=False,
            deny_reason="I changed my mind.",
        )
    print("\nDone.")


if __name__ == "__main__":
    with local_engine_unless_api_key():
        main()
