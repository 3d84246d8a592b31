"""The Celery side: one agent turn per task, streamed to a Redis pub/sub channel.

    pip install "celery[redis]" flask
    cd examples && celery -A celery_chat.tasks worker --pool prefork --concurrency 4

A task resumes the conversation's session by id (or creates it on the first turn),
sends the user's message, publishes every text delta and then one ``final`` message
to the channel ``celery_chat:<conversation>``, and ``disconnect()``s, so that the
next turn may run in any worker process on any host. The session lives on the
engine; the worker keeps nothing between turns.

Robust by default:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a worker process killed in
  the middle of a turn (OOM, ``kill -9``) does not ack its task, so the broker hands
  it out again;
* the redelivered run reads the session history before posting: if this turn's
  message is already there it does not post it again (the engine would run the turn
  twice), but takes the reply from the history, or follows the turn still running;
* the ``final`` message is published at most once per turn (a Redis ``SET NX`` and
  the ``PUBLISH`` in one server-side script), so even a run killed after publishing
  it, but before its ack, cannot deliver it twice.

Sessions are opened in the task, never at import: the prefork pool forks its worker
processes from the main one, and a session inherited that way raises
``SessionForkedError``. Worker processes leave with ``os._exit()``, which skips
Python's exit hooks, so ``close_sessions()`` runs from ``worker_process_shutdown``.

Settings come from the environment: ``CELERY_CHAT_REDIS`` (a redis-py URL,
``redis://HOST:PORT/DB`` or ``unix:///path/redis.sock``), ``CELERY_CHAT_AGENT`` (the
agent's name) and ``CELERY_CHAT_TURN_TIMEOUT`` (seconds); the library reads
``VECTORSHIFT_API_KEY``, ``VECTORSHIFT_BASE_URL`` and ``VECTORSHIFT_WS_URL``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import redis
from celery import Celery, signals

from vectorshift_sync import (
    Agent,
    Session,
    SessionError,
    SessionEventType,
    SessionMessage,
    SessionMessageStatus,
)

logger = logging.getLogger(__name__)

AGENT_NAME = os.environ.get("CELERY_CHAT_AGENT", "Demo Agent")
REDIS_URL = os.environ.get("CELERY_CHAT_REDIS", "redis://127.0.0.1:6379/0")
#: The longest an agent turn may take (tools and approvals can take minutes).
TURN_TIMEOUT = float(os.environ.get("CELERY_CHAT_TURN_TIMEOUT", "300"))
#: How long Redis keeps a conversation's session id and turn counter.
KEEP_SECONDS = 7 * 24 * 3600

_CONVERSATION = re.compile(r"[A-Za-z0-9_-]{1,64}")


def broker_url(redis_url: str) -> str:
    """Celery (kombu) spells a Unix socket ``redis+socket://``, redis-py ``unix://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


app = Celery("celery_chat", broker=broker_url(REDIS_URL))
app.conf.update(
    # Ack after the task ran, and give the task back if its process dies: a lost
    # worker's turn is run again (and that run checks the history, see run_turn).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # One task at a time per process: a long turn does not hold queued ones hostage.
    worker_prefetch_multiplier=1,
    # The browser gets everything through pub/sub: no result backend.
    task_ignore_result=True,
    # With Redis, an unacked task goes back to the queue after visibility_timeout
    # even while it is still running: keep it above the longest turn.
    broker_transport_options={"visibility_timeout": int(TURN_TIMEOUT) + 600},
    # How long the main process waits for a result from a worker process that died
    # before it gives the task back (default 10 s). A rerun is harmless here (it
    # checks the history), so a lost worker's turn may as well resume soon.
    worker_lost_wait=float(os.environ.get("CELERY_CHAT_LOST_WAIT", "1")),
    task_soft_time_limit=TURN_TIMEOUT + 30,
    task_time_limit=TURN_TIMEOUT + 60,
    broker_connection_retry_on_startup=True,
)


def channel_name(conversation: str) -> str:
    if not _CONVERSATION.fullmatch(conversation):
        raise ValueError(f"not a conversation id: {conversation!r}")
    return f"celery_chat:{conversation}"


def session_key(conversation: str) -> str:
    return f"{channel_name(conversation)}:session"


def turns_key(conversation: str) -> str:
    return f"{channel_name(conversation)}:turns"


@functools.lru_cache(maxsize=None)
def _redis(pid: int) -> "redis.Redis[bytes]":
    # One client per process (redis-py's pools are not to be shared across fork).
    return redis.Redis.from_url(REDIS_URL, socket_timeout=30, socket_connect_timeout=10)


def redis_client() -> "redis.Redis[bytes]":
    return _redis(os.getpid())


@functools.lru_cache(maxsize=None)
def _agent() -> Agent:
    return Agent.fetch(name=AGENT_NAME)  # one HTTP call per process, not per turn


# -- sessions this process holds -------------------------------------------------------

_live: Set[Session] = set()
_live_lock = threading.Lock()


def register(session: Session) -> Session:
    """Have close_sessions() disconnect ``session`` when this worker process ends.

    For a session kept open across tasks, e.g. one per worker process opened in a
    ``worker_process_init`` handler. Returns the session.
    """
    with _live_lock:
        _live.add(session)
    return session


def close_sessions() -> None:
    """Disconnect every session this process still holds (bounded by close_timeout each).

    Safe to call from a signal handler of Celery's: sessions inherited from another
    process are only forgotten.
    """
    with _live_lock:
        sessions = list(_live)
        _live.clear()
    for session in sessions:
        try:
            session.disconnect()
        except SessionError:
            logger.warning("could not disconnect session %s", session.session_id, exc_info=True)


@signals.worker_process_shutdown.connect
def _close_sessions_on_process_exit(**kwargs: Any) -> None:
    # A prefork worker process leaves with os._exit(): no atexit hook runs after this.
    close_sessions()


@contextlib.contextmanager
def _connected(session: Session) -> Iterator[Session]:
    """Connect, keep track of it for close_sessions(), always disconnect (not terminate)."""
    register(session)
    try:
        session.connect()
        yield session
    finally:
        with _live_lock:
            _live.discard(session)
        session.disconnect()  # the session stays on the engine for the next turn


@contextlib.contextmanager
def _conversation_session(conversation: str) -> Iterator[Session]:
    """The conversation's session, resumed by id, or created on its first turn."""
    r = redis_client()
    key = session_key(conversation)
    stored = r.get(key)
    if stored is None:
        with _connected(_agent().create_session()) as fresh:
            if r.set(key, fresh.session_id or "", nx=True, ex=KEEP_SECONDS):
                yield fresh
                return
            # Another run of this turn stored its session first: use that one.
            fresh.terminate()
        stored = r.get(key)
        if stored is None:
            raise RuntimeError(f"conversation {conversation} lost its session id")
    with _connected(Session(session_id=stored.decode())) as resumed:
        yield resumed


# -- the turn ----------------------------------------------------------------------------

_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('PUBLISH', KEYS[2], ARGV[1])
end
return -1
"""


def _user_positions(history: List[SessionMessage]) -> List[int]:
    return [i for i, m in enumerate(history) if m.is_user and m.content_type == "data_type_message"]


def _reply_in_history(history: List[SessionMessage], start: int) -> Tuple[Optional[str], str]:
    """The agent's completed reply (text, error) after the user message at ``start``."""
    text: Optional[str] = None
    error = ""
    for message in history[start + 1 :]:
        if message.is_user and message.content_type == "data_type_message":
            break  # the next turn
        if not message.is_agent:
            continue
        if message.content_type == "data_type_message":
            if message.status == SessionMessageStatus.COMPLETE:
                text = message.text or ""
        elif message.content_type == "error_message":
            error = message.text or "the agent reported an error"
    return text, error


def _follow(session: Session, events: Any, publish: Any, deadline: float) -> Tuple[str, str]:
    """Publish a turn's deltas until it ends; return (final text, error)."""
    text, error = "", ""
    for event in events:
        if event.type == SessionEventType.MESSAGE_DELTA and event.is_from_agent:
            publish({"type": "delta", "text": event.delta})
        elif event.is_complete and event.is_from_agent:
            text = event.text or ""
        elif event.type == SessionEventType.APPROVAL_REQUEST:
            # No approval UI in this recipe: say no, and the turn goes on.
            session.respond(event, approved=False, deny_reason="no approvals from this app")
        elif event.type == SessionEventType.ERROR and not event.data.get("reconnecting"):
            error = event.error or "error"
        if event.is_turn_end:
            break
        if time.monotonic() > deadline:
            error = error or f"the turn did not end within {TURN_TIMEOUT:g}s"
            break
    return text, error


@app.task(name="celery_chat.run_turn", bind=True, shared=False)  # this app's task only
def run_turn(self: Any, conversation: str, turn: int, message: str) -> None:
    """Run turn number ``turn`` (1, 2, ...) of ``conversation``: post, stream, publish.

    Turns of one conversation run one after the other (the page sends the next one
    after the previous ``final``), so "this turn's message is in the history" is
    "there are at least ``turn`` user messages".
    """
    r = redis_client()
    channel = channel_name(conversation)
    deadline = time.monotonic() + TURN_TIMEOUT

    def publish(payload: Dict[str, Any]) -> None:
        r.publish(channel, json.dumps({**payload, "turn": turn}))

    publish({"type": "started", "pid": os.getpid()})
    with _conversation_session(conversation) as session:
        history = session.get_messages()
        users = _user_positions(history)
        recovered: Optional[str] = None
        if len(users) >= turn:
            # A redelivery: an earlier run posted this turn and then died. Never post
            # again; take the reply from the history, or follow the turn to its end.
            text, error = _reply_in_history(history, users[turn - 1])
            recovered = "history"
            if text is None and not error:
                # listen() starts with everything that arrived since connect(), so a
                # reply completed after get_messages() answered is not missed.
                with session.listen(timeout=TURN_TIMEOUT) as listener:
                    text, error = _follow(session, listener, publish, deadline)
                recovered = "live"
            logger.info("turn %d of %s recovered (%s)", turn, conversation, recovered)
        else:
            events = session.stream(message, timeout=TURN_TIMEOUT)
            text, error = _follow(session, events, publish, deadline)
        final = {
            "type": "final",
            "turn": turn,
            "text": text or "",
            "session_id": session.session_id,
            "recovered": recovered,  # None, or how a rerun found the reply
            "pid": os.getpid(),
        }
        if error:
            final["error"] = error
        # At most once per turn, whatever runs or reruns this task.
        once_key = f"{channel}:final:{turn}"
        r.eval(_PUBLISH_ONCE, 2, once_key, channel, json.dumps(final), KEEP_SECONDS)
