"""What the engine knows and shows: registered agents/chatbots, connections, sessions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Sequence, Set, Tuple, Union

from ._frames import new_id
from ._sockets import ClientSocket

if TYPE_CHECKING:
    from ._turns import TurnContext

__all__ = ["Turn", "Owner", "ConnectionRecord", "SessionInfo"]

#: What runs for each user turn: ``None`` (the demo), a callable, or frames to send.
Turn = Union[
    Callable[["TurnContext"], None],
    Sequence[Union[Mapping[str, Any], str]],
    None,
]


@dataclass
class Owner:
    """A registered agent or chatbot: what HTTP fetches return and what sessions run."""

    kind: str  # "agent" or "chatbot"
    id: str
    name: str
    turn: Turn = None
    agent_type: str = "conversational"
    instructions: str = ""
    description: str = ""
    echo: bool = True
    branch_id: str = field(default_factory=new_id)
    pipeline_id: str = field(default_factory=new_id)

    @property
    def sender(self) -> Dict[str, Any]:
        """``message.sender`` of this owner's messages."""
        return {"object_id": self.id, "object_type": self.kind}

    def to_json(self) -> Dict[str, Any]:
        """The ``object`` body of ``GET /v1/agent`` or ``/v1/chatbot`` (§2.2, §2.3).

        Only keys the official SDK knows: any other top-level key makes it warn.
        """
        if self.kind == "agent":
            return {
                "_id": self.id,
                "name": self.name,
                "agent_type": self.agent_type,
                "llm_client_key": {"provider": "openai", "model_id": "gpt-4o"},
                "mainBranch": self.branch_id,
                "instructions": self.instructions,
            }
        return {
            "_id": self.id,
            "name": self.name,
            "description": self.description,
            "pipeline": self.pipeline_id,
            "deployed": True,
        }


class ConnectionRecord:
    """One WebSocket connection as the engine saw it, in accept order.

    ``frames`` holds every client message received, parsed to a dict when it was a
    JSON object, else kept as the raw ``str`` (or ``bytes`` for binary messages);
    ``raw_frames`` holds the same messages exactly as they arrived, unparsed.
    ``sent`` holds every frame the engine wrote (dicts, or ``str`` for raw text);
    frames swallowed by ``half_open`` are not in it. ``closed`` is set when the
    connection has ended.
    """

    def __init__(
        self,
        index: int,
        path: str,
        headers: Mapping[str, str],
        websocket: Any,
        sock: ClientSocket,
    ) -> None:
        self.index = index
        self.path = path
        self.headers = headers
        self.frames: List[Any] = []
        self.raw_frames: List[Union[str, bytes]] = []
        self.sent: List[Any] = []
        self.closed = threading.Event()
        #: Ids of the sessions whose turn output this connection receives.
        self.sessions: Set[str] = set()
        self._websocket = websocket
        self._sock = sock

    @property
    def muted(self) -> bool:
        return self._sock.muted()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self._sock.abort()

    def __repr__(self) -> str:
        state = "closed" if self.closed.is_set() else "open"
        return (
            f"<ConnectionRecord #{self.index} {state} path={self.path!r} "
            f"received={len(self.frames)} sent={len(self.sent)}>"
        )


@dataclass(frozen=True)
class SessionInfo:
    """A snapshot of one session on the engine."""

    session_id: str
    owner_type: str
    owner_id: str
    owner_name: str
    terminated: bool
    #: Indexes (``ConnectionRecord.index``) of the connections attached right now.
    connections: Tuple[int, ...]
    turn_running: bool
    message_count: int
