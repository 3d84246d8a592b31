"""Where the API key and the endpoints come from, resolved the official SDK's way.

Resolution order for the key: an explicit ``api_key`` argument, then the module global
``vectorshift_sync.api_key``, then the ``VECTORSHIFT_API_KEY`` environment variable.
Unlike the official SDK, the environment is read when a call needs it (not frozen at
import), and no ``.env`` file is loaded behind the user's back.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

__all__ = [
    "DEFAULT_BASE_URL",
    "resolve_api_key",
    "base_url",
    "ws_session_url",
    "mask_key",
]

DEFAULT_BASE_URL = "https://api.vectorshift.ai/v1"


def resolve_api_key(explicit: Optional[str] = None) -> Optional[str]:
    """Return the key to use, or ``None`` when none is configured anywhere."""
    if explicit:
        return explicit
    package = sys.modules.get("vectorshift_sync")
    global_key = getattr(package, "api_key", None) if package is not None else None
    if global_key:
        return str(global_key)
    return os.environ.get("VECTORSHIFT_API_KEY") or None


def base_url() -> str:
    """The HTTP API base, from ``VECTORSHIFT_BASE_URL`` (no trailing slash)."""
    return (os.environ.get("VECTORSHIFT_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def ws_session_url() -> str:
    """The WebSocket endpoint ``{ws_base}/ws/session``.

    ``VECTORSHIFT_WS_URL`` is used as the base when set; otherwise the HTTP base with
    its scheme turned into ``ws``/``wss``. Trailing slashes are dropped, so a base of
    ``https://host/v1/`` does not give the official SDK's ``//ws/session``.
    """
    ws_base = os.environ.get("VECTORSHIFT_WS_URL")
    if not ws_base:
        http_base = base_url()
        if http_base.startswith("https://"):
            ws_base = "wss://" + http_base[len("https://") :]
        elif http_base.startswith("http://"):
            ws_base = "ws://" + http_base[len("http://") :]
        else:
            ws_base = http_base
    return ws_base.rstrip("/") + "/ws/session"


def mask_key(key: Optional[str]) -> str:
    """A form of the key that is safe to show: never more than its last 4 characters."""
    if not key:
        return "<none>"
    if len(key) <= 8:
        return "***"
    return "***" + key[-4:]
