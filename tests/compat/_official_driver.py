"""Drive the official async ``vectorshift`` SDK (0.1.15) against a VectorShift endpoint.

Run by the *official SDK's own* interpreter (the compat virtualenv), never imported by
our test suite: ``python _official_driver.py`` with ``VECTORSHIFT_API_KEY``,
``VECTORSHIFT_BASE_URL`` and ``VECTORSHIFT_WS_URL`` in the environment. It prints one
JSON document on its last stdout line: what each scenario saw, event by event, so the
test can assert on the client's view while it reads the server's view from the engine.

The SDK is used unchanged, the way its docs and PROTOCOL.md §6 describe. It has
defects (PROTOCOL.md §7) that would make a correct server look broken; the driver
works around them, never patches them, and each workaround is marked where it happens:

* D1  nothing is shared across event loops: one ``asyncio.run()`` for the whole driver.
* D2  a failed ``connect()`` leaves the socket and tasks running: ``disconnect()`` in
      the ``except`` path.
* D3  a connect that times out raises the built-in ``TimeoutError``, not
      ``SessionError``: every step runs under ``asyncio.wait_for`` with our own bound
      and reports a ``TimeoutError`` as such.
* D5  events with no subscriber are lost: ``listen()`` starts right after ``send()``
      with no ``await`` in between, and an approval is answered from inside the same
      ``listen()`` loop, never from a new one.
* D6  ``get_messages()`` re-arms its 30 s wait on every pong: bounded by our own
      ``wait_for`` instead.
* D8  the ``get_messages()`` reply also reaches every live ``listen()`` as a
      ``MESSAGE_COMPLETE`` with ``text=None``: skipped (and counted) by the turn loop.
* D9  an abandoned ``listen()`` generator stays subscribed: every one is ``aclose()``d.
* D12 events drop ``message.sender``, so the echo of the user's own post is a
      ``MESSAGE_COMPLETE`` too: a turn ends on the agent's ``Idle`` after
      ``Processing`` (as the SDK's own ``agent.run()`` does), or, in the chatbot
      scenario, on a ``MESSAGE_COMPLETE`` whose text is not the user's own words.
* D18 ``listen()`` never says why it ended: a loop that ends without its stop rule
      firing is reported as an error ("listen() ended early").

Keep this file importable by Python 3.9 syntax rules (the SDK itself needs 3.11+).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import traceback
import warnings
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

import vectorshift
from vectorshift import (
    Agent,
    Chatbot,
    Session,
    SessionError,
    SessionEvent,
    SessionEventType,
    UserSessionMessage,
)
from vectorshift.events import ParticipantStatus

#: One bound for every awaited step (a turn, a connect, a history fetch), in seconds.
STEP = float(os.environ.get("VS_COMPAT_STEP_TIMEOUT", "20"))
#: The SDK pings every 5 s; wait this long for its first pong.
PONG_WAIT = 5.0 + float(os.environ.get("VS_COMPAT_PONG_SLACK", "4"))

EventHook = Callable[[SessionEvent], Awaitable[None]]


class _Records(logging.Handler):
    """Keep every WARNING+ record the SDK logs (unknown frame types, non-JSON, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def event_json(event: SessionEvent) -> Dict[str, Any]:
    return {
        "type": str(event.type.value),
        "session_id": event.session_id,
        "message_id": event.message_id,
        "data": event.data,
    }


def failure(exc: BaseException) -> Dict[str, Any]:
    return {
        "class": type(exc).__name__,
        "module": type(exc).__module__,
        "is_session_error": isinstance(exc, SessionError),
        "message": str(exc),
    }


def is_history_marker(event: SessionEvent) -> bool:
    """D8: the get_messages() reply, rebroadcast to listeners as MESSAGE_COMPLETE."""
    return (
        event.type == SessionEventType.MESSAGE_COMPLETE
        and isinstance(event.data, dict)
        and event.data.get("_response_type") == "get_messages"
    )


async def turn(
    session: Session,
    text: str,
    *,
    until: str = "idle",
    approve: bool = False,
    deny: Optional[str] = None,
    attachments: Sequence[Any] = (),
    hook: Optional[EventHook] = None,
) -> Dict[str, Any]:
    """Send ``text`` and listen until the turn ends; return what was seen.

    ``until="idle"``: stop on the participant's ``Idle`` after ``Processing`` (the
    SDK's own one-shot rule). ``until="reply"``: stop on a ``MESSAGE_COMPLETE`` that is
    not the echo of ``text`` (D12). ``approve`` / ``deny``: answer every approval
    request with ``respond(event, approved=True)`` / ``respond(event, approved=False,
    deny_reason=deny)`` from inside this loop (D5). ``attachments``: send ``text`` and
    these items together with ``send_many()`` (one ``post_messages`` frame).
    """
    out: Dict[str, Any] = {
        "sent": text,
        "events": [],
        "pongs": 0,
        "history_markers_skipped": 0,
        "approvals_answered": [],
        "ended_by": None,
    }
    if attachments:
        await session.send_many([text, *attachments])
    else:
        await session.send(text)
    # D5: no await between send() and the first iteration of listen(), or the ack,
    # the echo and the first statuses fan out to no queue and are lost.
    stream = session.listen()
    processing = False
    try:
        async for event in stream:
            if event.type == SessionEventType.PONG:
                out["pongs"] += 1
                continue
            if is_history_marker(event):  # D8
                out["history_markers_skipped"] += 1
                continue
            out["events"].append(event_json(event))
            if approve and event.type == SessionEventType.APPROVAL_REQUEST:
                await session.respond(event, approved=True)
                out["approvals_answered"].append(event.message_id)
            if deny is not None and event.type == SessionEventType.APPROVAL_REQUEST:
                await session.respond(event, approved=False, deny_reason=deny)
                out["approvals_answered"].append(event.message_id)
            if hook is not None:
                await hook(event)
            if event.participant_status == ParticipantStatus.PROCESSING:
                processing = True
            elif until == "idle" and processing and event.is_turn_end:
                out["ended_by"] = "idle_after_processing"
                break
            if until == "reply" and event.is_complete and event.text not in (None, text):
                out["ended_by"] = "agent_reply_complete"
                break
    finally:
        await stream.aclose()  # D9
    if out["ended_by"] is None:
        raise RuntimeError(f"listen() ended early (D18 gives no reason) after {out['events']!r}")
    return out


def history_json(messages: List[Any]) -> List[Dict[str, Any]]:
    return [
        {
            "id": m.id,
            "session_id": m.session_id,
            "role": str(m.sender.role.value),
            "content_type": m.content_type,
            "text": m.text,
            "status": None if m.status is None else str(m.status.value),
        }
        for m in messages
    ]


async def bounded(awaitable: Awaitable[Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, STEP)
    except asyncio.TimeoutError:  # D3: the SDK's own connect timeout is this, too
        raise TimeoutError(f"{what}: no result within {STEP} s") from None


def fetch_recording_warnings(fetch: Callable[[], Any]) -> Any:
    """Run a sync fetch, keeping the warnings it raises (unknown fields warn, §2.2)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = fetch()
    return obj, [f"{w.category.__name__}: {w.message}" for w in caught]


async def resume_expecting_failure(session_id: str) -> Dict[str, Any]:
    """Resume ``session_id`` with ``Session(session_id=...)``; report how it failed."""
    session = Session(session_id=session_id)
    try:
        await bounded(session.connect(), "connect to a terminated or unknown session")
    except Exception as exc:
        await session.disconnect()  # D2: a failed connect leaves everything running
        return {"failed": True, **failure(exc)}
    await session.disconnect()
    return {"failed": False}


# -- scenarios -----------------------------------------------------------------------------


async def scenario_agent(out: Dict[str, Any]) -> None:
    """Fetch by name, two turns (one approval), history, disconnect, resume, terminate."""
    agent, out["fetch_warnings"] = fetch_recording_warnings(lambda: Agent.fetch(name="Demo Agent"))
    out["agent"] = {"id": agent.id, "name": agent.name, "type": str(agent.agent_type.value)}

    session = await agent.create_session()
    await bounded(session.connect(), "create_session")
    sid = session.session_id
    out["session_id"] = sid
    out["is_connected"] = session.is_connected

    out["turn1"] = await bounded(turn(session, "Hello from the official SDK"), "turn 1")
    out["turn2"] = await bounded(
        turn(session, "Please approve sending this email", approve=True), "approval turn"
    )
    out["history_before_disconnect"] = history_json(
        await bounded(session.get_messages(), "get_messages")  # D6: our bound, not its
    )
    await bounded(session.disconnect(), "disconnect")
    out["connected_after_disconnect"] = session.is_connected

    resumed = await agent.resume_session(sid)
    await bounded(resumed.connect(), "resume_session")
    out["resumed_session_id"] = resumed.session_id
    out["history_after_resume"] = history_json(
        await bounded(resumed.get_messages(), "get_messages after resume")
    )

    mid_turn: Dict[str, Any] = {}

    async def history_mid_turn(event: SessionEvent) -> None:
        # The engine must answer get_messages while a turn streams; the reply also
        # leaks into the running listen() (D8), which the turn loop skips.
        if event.type == SessionEventType.MESSAGE_DELTA and "items" not in mid_turn:
            mid_turn["items"] = history_json(await resumed.get_messages())

    out["turn3"] = await bounded(
        turn(resumed, "Back again after resuming", hook=history_mid_turn), "turn 3"
    )
    out["history_mid_turn"] = mid_turn.get("items")

    await bounded(resumed.terminate(), "terminate")
    out["connected_after_terminate"] = resumed.is_connected

    # terminate() does not wait for the engine, and the resume below travels on a new
    # socket, so the engine may read it first: try again for a short while.
    deadline = time.monotonic() + 3.0
    attempts = []
    while True:
        attempt = await resume_expecting_failure(sid)
        attempts.append(attempt)
        if attempt["failed"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    out["resume_terminated"] = attempts[-1]
    out["resume_terminated_attempts"] = len(attempts)
    out["resume_unknown"] = await resume_expecting_failure("0" * 24)


async def scenario_batch_and_deny(out: Dict[str, Any]) -> None:
    """A ``post_messages`` batch with an inline file, then an approval denied with a reason."""
    agent = Agent.fetch(name="Demo Agent")
    session = await agent.create_session()
    await bounded(session.connect(), "create_session")
    out["session_id"] = session.session_id
    try:
        table = UserSessionMessage(content=b"a,b\n1,2\n", filename="table.csv")
        out["batch"] = await bounded(
            turn(session, "Two items, one turn", attachments=[table]), "batch turn"
        )
        out["denied"] = await bounded(
            turn(session, "Please approve nothing", deny="Not today, thanks."), "deny turn"
        )
    finally:
        await session.disconnect()


async def scenario_chatbot(out: Dict[str, Any]) -> None:
    """A chatbot session in ``async with``, ended on the reply's MESSAGE_COMPLETE."""
    chatbot, out["fetch_warnings"] = fetch_recording_warnings(
        lambda: Chatbot.fetch(name="Demo Chatbot")
    )
    out["chatbot"] = {"id": chatbot.id, "name": chatbot.name}
    session = await chatbot.create_session()
    async with session:
        out["session_id"] = session.session_id
        out["turn"] = await bounded(
            turn(session, "Hello chatbot, from the official SDK", until="reply"), "chatbot turn"
        )
    out["connected_after_exit"] = session.is_connected


async def scenario_one_shot(out: Dict[str, Any]) -> None:
    """The SDK's own conversational ``agent.run()`` (Processing -> Idle ends the turn)."""
    agent = Agent.fetch(name="Demo Agent")
    result = await bounded(agent.run("One-shot hello", timeout=STEP), "agent.run")
    out["status"] = result.status
    out["error"] = result.error
    out["final_message"] = result.final_message
    out["session_id"] = result.session_id
    out["event_types"] = [str(e.type.value) for e in result.events]


async def scenario_pong(out: Dict[str, Any]) -> None:
    """Stay connected past the SDK's first 5 s ping and wait for the engine's pong."""
    agent = Agent.fetch(name="Demo Agent")
    session = await agent.create_session()
    await bounded(session.connect(), "create_session")
    out["session_id"] = session.session_id
    stream = session.listen(event_types=[SessionEventType.PONG])
    started = time.monotonic()
    try:
        event = await asyncio.wait_for(stream.__anext__(), PONG_WAIT)
        out["pong"] = event_json(event)
        out["after_seconds"] = round(time.monotonic() - started, 2)
    finally:
        await stream.aclose()  # D9
        await session.disconnect()


async def scenario_bad_key(out: Dict[str, Any]) -> None:
    """A wrong key: HTTP 401 -> AuthenticationError; the WS handshake is refused."""
    good = vectorshift.api_key
    vectorshift.api_key = "not-the-engine-key"  # sync call: nothing else runs meanwhile
    try:
        Agent.fetch(name="Demo Agent")
        out["http"] = {"failed": False}
    except Exception as exc:
        out["http"] = {"failed": True, **failure(exc)}
        out["http"]["status_code"] = getattr(exc, "status_code", None)
    finally:
        vectorshift.api_key = good
    session = Session(owner_type="agent", owner_id="unused", api_key="not-the-engine-key")
    try:
        await bounded(session.connect(), "connect with a wrong key")
        out["ws"] = {"failed": False}
        await session.disconnect()
    except Exception as exc:
        out["ws"] = {"failed": True, **failure(exc)}
        await session.disconnect()  # D2 (a no-op here: the handshake itself failed)


async def run_scenario(
    name: str, body: Callable[[Dict[str, Any]], Awaitable[None]], results: Dict[str, Any]
) -> None:
    out: Dict[str, Any] = {"ok": False}
    results[name] = out  # partial results survive a failure
    started = time.monotonic()
    try:
        await body(out)
        out["ok"] = True
    except BaseException as exc:  # report everything, including TimeoutError (D3)
        out["error"] = failure(exc)
        out["traceback"] = traceback.format_exc()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    finally:
        out["seconds"] = round(time.monotonic() - started, 2)


async def main() -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    # Runs beside the others: it only waits for the SDK's 5 s ping to be answered.
    pong = asyncio.ensure_future(run_scenario("pong", scenario_pong, results))
    await run_scenario("bad_key", scenario_bad_key, results)
    await run_scenario("agent", scenario_agent, results)
    await run_scenario("batch_and_deny", scenario_batch_and_deny, results)
    await run_scenario("chatbot", scenario_chatbot, results)
    await run_scenario("one_shot", scenario_one_shot, results)
    await pong
    return results


if __name__ == "__main__":
    records = _Records()
    logging.getLogger("vectorshift").addHandler(records)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    started = time.monotonic()
    scenarios = asyncio.run(main())
    from importlib.metadata import version

    report = {
        "versions": {
            "python": sys.version.split()[0],
            "vectorshift": version("vectorshift"),
            "aiohttp": version("aiohttp"),
        },
        "scenarios": scenarios,
        "sdk_log": records.lines,
        "seconds": round(time.monotonic() - started, 2),
    }
    sys.stdout.write("\n" + json.dumps(report, default=repr) + "\n")
