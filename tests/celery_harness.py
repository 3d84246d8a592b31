"""The worker tests/test_celery.py runs: examples/celery_chat's app, plus checks inside it.

``celery -A celery_harness worker`` imports this module in the worker's main process.
On top of the example, it makes the mistake the docs warn about (a session connected
in the main process before the pool forks) and reports, on the Redis list
``harness:events``, what the forked worker processes see of it. Each report is one
JSON object with an ``event`` name.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from celery import signals
from celery_chat.tasks import AGENT_NAME, app, redis_client, register

from vectorshift_sync import Agent, Session, SessionForkedError

__all__ = ["app"]

EVENTS = "harness:events"

_inherited: Optional[Session] = None


def report(event: str, **fields: Any) -> None:
    item: Dict[str, Any] = {"event": event, "pid": os.getpid(), **fields}
    redis_client().rpush(EVENTS, json.dumps(item))


@signals.worker_init.connect
def _open_before_fork(**kwargs: Any) -> None:
    global _inherited
    _inherited = Agent.fetch(name=AGENT_NAME).create_session().connect()
    report("parent_session", session_id=_inherited.session_id)


@signals.worker_process_init.connect
def _use_inherited(**kwargs: Any) -> None:
    assert _inherited is not None
    try:
        _inherited.send("from a forked worker process")
        outcome = "sent"
    except SessionForkedError:
        outcome = "SessionForkedError"
    except Exception as exc:  # reported, so the test shows what went wrong
        outcome = f"{type(exc).__name__}: {exc}"
    _inherited.disconnect()  # forgets the copy; not a byte on the parent's socket
    # The right way to keep one session per worker process: opened in the process,
    # closed by the recipe's worker_process_shutdown handler (no exit hook runs).
    own = register(Agent.fetch(name=AGENT_NAME).create_session().connect())
    report("child_started", outcome=outcome, session_id=own.session_id)


@signals.worker_ready.connect
def _ready(**kwargs: Any) -> None:
    report("ready", parent_connected=bool(_inherited and _inherited.is_connected))


@signals.worker_shutdown.connect
def _close_parent_session(**kwargs: Any) -> None:
    if _inherited is not None:
        connected = _inherited.is_connected
        _inherited.disconnect()
        report("parent_closed", was_connected=connected)
