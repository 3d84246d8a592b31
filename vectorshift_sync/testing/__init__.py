"""A local VectorShift engine: a real loopback server for tests, demos and CI.

``LocalEngine`` speaks the session wire protocol from the server side (WebSocket
``/v1/ws/session``) and serves the HTTP fetch endpoints (``GET /v1/agent``,
``/v1/chatbot``) on 127.0.0.1, with a demo agent and chatbot, scripted agents, a
record of every frame received, and fault controls::

    from vectorshift_sync.testing import LocalEngine

    with LocalEngine() as engine:
        os.environ.update(engine.env)
        ...

``python -m vectorshift_sync.testing`` runs it standalone; the pytest plugin of this
package provides a ``local_engine`` fixture.
"""

from __future__ import annotations

from ._demo import demo_turn
from ._engine import LocalEngine
from ._faults import Faults
from ._frames import UploadedFile
from ._records import ConnectionRecord, SessionInfo, Turn
from ._turns import TurnCancelled, TurnContext

__all__ = [
    "LocalEngine",
    "TurnContext",
    "TurnCancelled",
    "Turn",
    "Faults",
    "ConnectionRecord",
    "SessionInfo",
    "UploadedFile",
    "demo_turn",
]
