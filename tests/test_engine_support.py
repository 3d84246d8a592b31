"""Helpers shared by the local-engine tests (no tests here).

The engine is driven by a *raw* websocket-client connection, so every assertion is
about exact frames on the wire, and by ``requests`` for the HTTP side.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import websocket

from vectorshift_sync.testing import LocalEngine

KEY = "local-test-key"
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timing bound, scaled for slow machines (VS_TEST_TIME_SCALE)."""
    return seconds * TIME_SCALE


def auth(key: str = KEY) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def engine_running(**options: Any) -> Iterator[LocalEngine]:
    """A started engine; on exit, stop it and check that none of its threads survive."""
    before = set(threading.enumerate())
    engine = LocalEngine(KEY, **options)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        leftover = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        assert not leftover, f"threads outlived engine.stop(): {leftover}"


Frame = Union[Dict[str, Any], str]


class RawClient:
    """One raw WebSocket connection to the engine, speaking JSON frames."""

    def __init__(
        self,
        engine: LocalEngine,
        *,
        key: str = KEY,
        timeout: float = 5.0,
        path: str = "/ws/session",
    ) -> None:
        self.ws = websocket.create_connection(
            engine.ws_url + path,
            header=[f"Authorization: Bearer {key}"],
            timeout=scaled(timeout),
        )

    def send(self, frame: Dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def recv(self) -> Frame:
        """The next text message: parsed if it is JSON, else the raw string."""
        text = self.ws.recv()
        try:
            parsed = json.loads(text)
        except ValueError:
            return str(text)
        return parsed if isinstance(parsed, dict) else str(text)

    def recv_until(self, done: Callable[[Frame], bool]) -> List[Frame]:
        """Every frame up to and including the first one for which ``done`` is true."""
        frames: List[Frame] = []
        while True:
            frame = self.recv()
            frames.append(frame)
            if done(frame):
                return frames

    def turn(self) -> List[Frame]:
        """Frames up to and including the next ``participant_status`` ``Idle``."""
        return self.recv_until(is_status("Idle"))

    def open_session(self, object_id: str, object_type: str = "agent") -> str:
        """create_session + connect_session, checking both answers; returns the id."""
        self.send({"type": "create_session", "object_type": object_type, "object_id": object_id})
        created = self.recv()
        assert isinstance(created, dict) and created["type"] == "session_created", created
        session_id = str(created["session_id"])
        self.connect(session_id)
        return session_id

    def connect(self, session_id: str) -> None:
        self.send({"type": "connect_session", "session_id": session_id})
        assert self.recv() == {
            "type": "connect_session",
            "session_id": session_id,
            "success": True,
        }

    def post(self, session_id: str, content: Any) -> None:
        self.send({"type": "post_message", "session_id": session_id, "content": content})

    def settimeout(self, seconds: float) -> None:
        self.ws.settimeout(seconds)

    def close(self) -> None:
        self.ws.close(timeout=scaled(1))
        # After a server close frame, websocket-client marks itself disconnected and its
        # close() returns early without closing the socket.
        self.ws.shutdown()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_status(status: str) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        return (
            isinstance(frame, dict)
            and frame.get("type") == "participant_status"
            and frame["message"]["status"] == status
        )

    return check


def is_type(kind: str) -> Callable[[Frame], bool]:
    return lambda frame: isinstance(frame, dict) and frame.get("type") == kind


def content_of(frame: Frame) -> Dict[str, Any]:
    """``message.content`` of a ``message_notification``."""
    assert isinstance(frame, dict) and frame["type"] == "message_notification", frame
    content = frame["message"]["content"]
    assert isinstance(content, dict)
    return content


def agent_id(engine: LocalEngine, name: str = "Demo Agent", kind: str = "agent") -> str:
    """The id of a registered agent or chatbot, looked up through HTTP."""
    import requests

    response = requests.get(
        f"{engine.base_url}/{kind}", params={"name": name}, headers=auth(), timeout=scaled(5)
    )
    response.raise_for_status()
    return str(response.json()["object"]["_id"])


def first(frames: List[Frame], predicate: Callable[[Frame], bool]) -> Optional[Frame]:
    return next((f for f in frames if predicate(f)), None)
