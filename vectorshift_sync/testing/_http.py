"""The engine's plain HTTP side, as pure functions: paths, auth, and the fetch endpoints.

``GET /v1/agent`` and ``GET /v1/chatbot`` (query ``id``, ``name``, ``username``,
``org_name``) answer ``{"object": {...}}``; ``GET /v1/agents`` and ``/v1/chatbots``
answer ``{"objects": [...]}``. Errors are JSON ``{"error": ...}`` with a real status, so
the official SDK's status → exception mapping (§2.5) applies. ``username`` and
``org_name`` are accepted and ignored: everything here belongs to one local user.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

from ._records import Owner

__all__ = ["normalize_path", "is_ws_path", "authorized", "route"]

_SLASHES = re.compile(r"/{2,}")
_WS_PATHS = ("/v1/ws/session", "/ws/session")


def normalize_path(target: str) -> str:
    """The request target's path, with repeated and trailing slashes removed.

    The official SDK builds ``…/v1//ws/session`` from a base URL ending in ``/``.
    """
    path = _SLASHES.sub("/", urlsplit(target).path)
    return path.rstrip("/") or "/"


def is_ws_path(target: str) -> bool:
    return normalize_path(target) in _WS_PATHS


def authorized(header: Optional[str], api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <api_key>``."""
    if not header:
        return False
    return hmac.compare_digest(header.strip().encode(), f"Bearer {api_key}".encode())


def _first(query: Dict[str, List[str]], key: str) -> Optional[str]:
    values = query.get(key)
    return values[0] if values else None


def _int(query: Dict[str, List[str]], key: str, default: int) -> int:
    try:
        return max(0, int(_first(query, key) or default))
    except ValueError:
        return default


def _fetch(kind: str, query: Dict[str, List[str]], owners: Sequence[Owner]) -> Tuple[int, Any]:
    wanted_id = _first(query, "id")
    wanted_name = _first(query, "name")
    if not wanted_id and not wanted_name:
        return 400, {"error": f"{kind}: id or name is required"}
    found: Optional[Owner] = None
    for owner in owners:  # the latest registration with a name wins
        if owner.kind != kind:
            continue
        if wanted_id and owner.id != wanted_id:
            continue
        if wanted_name and owner.name != wanted_name:
            continue
        found = owner
    if found is None:
        what = f"id {wanted_id!r}" if wanted_id else f"name {wanted_name!r}"
        return 404, {"error": f"{kind} not found: {what}"}
    return 200, {"object": found.to_json()}


def route(target: str, owners: Sequence[Owner]) -> Tuple[int, Any]:
    """Answer one authorised plain-HTTP ``GET``: ``(status, JSON body)``."""
    path = normalize_path(target)
    if path.startswith("/v1/"):
        path = path[len("/v1") :]
    query = parse_qs(urlsplit(target).query)
    if path in ("/agent", "/chatbot"):
        return _fetch(path[1:], query, owners)
    if path in ("/agents", "/chatbots"):
        kind = path[1:-1]
        matching = [o.to_json() for o in owners if o.kind == kind]
        offset, limit = _int(query, "offset", 0), _int(query, "limit", 50)
        return 200, {"objects": matching[offset : offset + limit]}
    return 404, {"error": f"no such endpoint: GET {urlsplit(target).path}"}
