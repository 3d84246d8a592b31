"""VectorShift Chatbots: fetch one over HTTP, open or resume real-time sessions with it.

Mirrors ``vectorshift.chatbot`` of the official SDK without ``await``:
``Chatbot.fetch(...)`` blocks until the API answers, and ``chatbot.create_session()``
returns a :class:`~vectorshift_sync.session.Session` directly (no I/O). Any chatbot may
open sessions; as in the SDK there is no type check.

As for :mod:`vectorshift_sync.agent`: HTTP calls have a finite ``timeout`` and accept
an injected ``requests.Session`` (``http=``), a missing API key is refused before
anything is sent, and a key passed to ``fetch(api_key=...)`` is also the key of the
chatbot's sessions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._http import (
    DEFAULT_TIMEOUT,
    check_session_id,
    fetch_object,
    optional_str,
    plain_id,
)
from .errors import ArgumentTypeError, InvalidArgumentError

if TYPE_CHECKING:
    import requests

    from .session import Session

__all__ = ["Chatbot"]

logger = logging.getLogger(__name__)


def _pipeline_id_of(data: Mapping[str, Any]) -> str:
    """The SDK's rule: ``pipeline`` as an object (``object_id``, else ``id``) or a
    string; else an ``object`` object (``object_id``, else ``id``); else ``""``."""
    pipeline = data.get("pipeline")
    if isinstance(pipeline, Mapping):
        return plain_id(pipeline.get("object_id")) or plain_id(pipeline.get("id")) or ""
    if isinstance(pipeline, str) and pipeline:
        return pipeline
    obj = data.get("object")
    if isinstance(obj, Mapping):
        return plain_id(obj.get("object_id")) or plain_id(obj.get("id")) or ""
    return ""


class Chatbot:
    """A VectorShift chatbot, usually obtained with :meth:`Chatbot.fetch`.

    Attributes:
        id: the chatbot's id (``None`` for a chatbot built without one).
        name: its name (``""`` when the API gives none).
        description: its description (``""`` when the API gives none).
        pipeline_id: the id of the pipeline or agent object it serves (``""`` if none).
        deployed: whether it is deployed.
        raw: the resource exactly as the API returned it.
    """

    def __init__(
        self,
        *,
        id: str | None = None,
        name: str = "",
        description: str = "",
        pipeline_id: str = "",
        deployed: bool = False,
        raw: dict[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise ArgumentTypeError(f"api_key must be a str or None, not {type(api_key).__name__}")
        self.id = id
        self.name = name
        self.description = description
        self.pipeline_id = pipeline_id
        self.deployed = deployed
        self.raw: dict[str, Any] = dict(raw) if raw is not None else {}
        # Kept for the sessions this chatbot opens; never shown (see __repr__).
        self._api_key = api_key or None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, name={self.name!r})"

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        *,
        api_key: str | None = None,
    ) -> Chatbot:
        """Build a Chatbot from the API's JSON object (the ``"object"`` of a fetch)."""
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(
                f"data must be a mapping (the chatbot JSON object), not {type(data).__name__}"
            )
        return cls(
            id=plain_id(data.get("_id")) or plain_id(data.get("id")),
            name=optional_str(data.get("name")) or "",
            description=optional_str(data.get("description")) or "",
            pipeline_id=_pipeline_id_of(data),
            deployed=bool(data.get("deployed", False)),
            raw=dict(data),
            api_key=api_key,
        )

    @classmethod
    def fetch(
        cls,
        id: str | None = None,
        name: str | None = None,
        username: str | None = None,
        org_name: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        http: requests.Session | None = None,
    ) -> Chatbot:
        """Fetch a chatbot by ``id`` or by ``name`` (optionally under ``username`` /
        ``org_name``) with ``GET {base}/chatbot``.

        Blocks the calling thread until the API answers; any thread may call it.
        ``timeout`` (seconds; ``None`` waits forever) bounds connecting and each wait
        for data. ``api_key`` overrides ``vectorshift_sync.api_key`` and
        ``VECTORSHIFT_API_KEY`` for this call and for the chatbot's sessions. ``http``
        is a ``requests.Session`` to send with (used as given, never closed).

        Raises:
            InvalidArgumentError: neither ``id`` nor ``name`` given, an empty string,
                a bad ``timeout``, or no API key configured (nothing is sent).
            ArgumentTypeError: an argument of the wrong type.
            ApiTimeoutError, ApiConnectionError: the API could not be reached, or not in time.
            VectorshiftApiError: the API answered an error status (``NotFoundError``
                for an unknown chatbot, ``AuthenticationError`` for a bad key, ...).
            VectorshiftError: the API's answer was not the expected JSON.
        """
        data = fetch_object(
            "/chatbot",
            id=id,
            name=name,
            username=username,
            org_name=org_name,
            api_key=api_key,
            timeout=timeout,
            http=http,
        )
        chatbot = cls.from_json(data, api_key=api_key)
        logger.debug("fetched %r", chatbot)
        return chatbot

    def create_session(self, session_id: str | None = None) -> Session:
        """Build (without connecting) a session with this chatbot.

        With ``session_id``, the session resumes that existing session instead of
        creating one. No I/O happens here; connect with ``with ... as session:`` or
        ``session.connect()``.

        Raises:
            InvalidArgumentError: the chatbot has no id, or ``session_id`` is empty.
            ArgumentTypeError: ``session_id`` is not a str.
        """
        if session_id is not None:
            session_id = check_session_id(session_id)
        if session_id is None and not self.id:
            raise InvalidArgumentError(
                f"{self!r} has no id, so no session can be created for it; "
                f"get the chatbot with Chatbot.fetch(...)."
            )
        # Imported at call time: fetching needs no WebSocket stack, and session.py
        # may come to import this module.
        from .session import Session

        return Session(
            owner_type="chatbot",
            owner_id=self.id or "",
            session_id=session_id,
            api_key=self._api_key,
        )

    def resume_session(self, session_id: str) -> Session:
        """Build (without connecting) a session that resumes ``session_id``.

        Raises:
            InvalidArgumentError: ``session_id`` is empty.
            ArgumentTypeError: ``session_id`` is not a str.
        """
        session_id = check_session_id(session_id)
        from .session import Session

        return Session(session_id=session_id, api_key=self._api_key)
