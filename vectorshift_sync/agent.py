"""VectorShift Agents: fetch one over HTTP, open or resume real-time sessions with it.

Mirrors ``vectorshift.agent`` of the official SDK (``Agent``, ``AgentType``) without
``await``: ``Agent.fetch(...)`` blocks until the API answers, and
``agent.create_session()`` returns a :class:`~vectorshift_sync.session.Session`
directly (it does no I/O; connect it with ``with agent.create_session() as s:``).

Differences from the official SDK, all deliberate:

* HTTP calls have a finite ``timeout`` (default 30 s) and accept an injected
  ``requests.Session`` (``http=``).
* A missing API key is refused before anything is sent.
* The id is read from ``_id`` with a fallback to ``id`` (the SDK reads only ``_id``).
* ``llm_client_key`` is not required; a response without it still gives an Agent.
* A key passed to ``fetch(api_key=...)`` is also the key of the sessions the agent opens
  (the SDK always falls back to the global key there).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from ._http import (
    DEFAULT_TIMEOUT,
    check_http,
    check_session_id,
    check_timeout,
    fetch_object,
    optional_str,
    plain_id,
    request_json,
)
from ._run import (
    AgentRunResult,
    ConversationalAgentRunResult,
    check_run_options,
    run_conversational,
)
from .errors import ArgumentTypeError, ConversationalRunActionRequiredError, InvalidArgumentError

if TYPE_CHECKING:
    import requests

    from ._protocol import FileLike
    from .session import Session

__all__ = [
    "Agent",
    "AgentType",
    "AgentRunResult",
    "ConversationalAgentRunResult",
    "ConversationalRunActionRequiredError",
]

logger = logging.getLogger(__name__)


class AgentType(str, Enum):
    """Whether an agent answers one-shot runs or holds conversations (sessions)."""

    FUNCTIONAL = "functional"
    CONVERSATIONAL = "conversational"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def _agent_type_of(data: Mapping[str, Any]) -> AgentType:
    """The official rule: the first truthy of ``agent_type``, ``agentType``, ``variant``,
    lower-cased, equal to ``"conversational"``; anything else is functional."""
    value = data.get("agent_type") or data.get("agentType") or data.get("variant")
    if isinstance(value, str) and value.lower() == AgentType.CONVERSATIONAL.value:
        return AgentType.CONVERSATIONAL
    return AgentType.FUNCTIONAL


def _check_agent_type(value: object) -> AgentType:
    if isinstance(value, AgentType):
        return value
    if not isinstance(value, str):
        raise ArgumentTypeError(f"agent_type must be an AgentType, not {type(value).__name__}")
    try:
        return AgentType(value.lower())
    except ValueError:
        raise InvalidArgumentError(
            f"agent_type must be 'functional' or 'conversational', got {value!r}"
        ) from None


class Agent:
    """A VectorShift agent, usually obtained with :meth:`Agent.fetch`.

    Attributes:
        id: the agent's id (``None`` for an agent built without one).
        name: its name (``""`` when the API gives none).
        agent_type: :class:`AgentType`; only conversational agents open sessions.
        branch_id: the main branch id (``mainBranch``), if any.
        instructions: the agent's instructions, if any.
        llm_client_key: the model selection object (``provider``, ``model_id``), if any.
        raw: the resource exactly as the API returned it.
    """

    def __init__(
        self,
        *,
        id: str | None = None,
        name: str = "",
        agent_type: AgentType = AgentType.FUNCTIONAL,
        branch_id: str | None = None,
        instructions: str | None = None,
        llm_client_key: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        http: requests.Session | None = None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise ArgumentTypeError(f"api_key must be a str or None, not {type(api_key).__name__}")
        self.id = id
        self.name = name
        self.agent_type = _check_agent_type(agent_type)
        self.branch_id = branch_id
        self.instructions = instructions
        self.llm_client_key = llm_client_key
        self.raw: dict[str, Any] = dict(raw) if raw is not None else {}
        # Kept for the sessions this agent opens and for run(); never shown (see __repr__).
        self._api_key = api_key or None
        self._timeout = check_timeout(timeout)
        self._http = check_http(http)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, name={self.name!r}, "
            f"agent_type={self.agent_type.value!r})"
        )

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        http: requests.Session | None = None,
    ) -> Agent:
        """Build an Agent from the API's JSON object (the ``"object"`` of a fetch)."""
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(
                f"data must be a mapping (the agent JSON object), not {type(data).__name__}"
            )
        llm = data.get("llm_client_key")
        return cls(
            id=plain_id(data.get("_id")) or plain_id(data.get("id")),
            name=optional_str(data.get("name")) or "",
            agent_type=_agent_type_of(data),
            branch_id=plain_id(data.get("mainBranch")),
            instructions=optional_str(data.get("instructions")),
            llm_client_key=dict(llm) if isinstance(llm, Mapping) else None,
            raw=dict(data),
            api_key=api_key,
            timeout=timeout,
            http=http,
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
    ) -> Agent:
        """Fetch an agent by ``id`` or by ``name`` (optionally under ``username`` /
        ``org_name``) with ``GET {base}/agent``.

        Blocks the calling thread until the API answers; any thread may call it.
        ``timeout`` (seconds; ``None`` waits forever) bounds connecting and each wait
        for data. ``api_key`` overrides ``vectorshift_sync.api_key`` and
        ``VECTORSHIFT_API_KEY`` for this call and for the agent's sessions. ``http``
        is a ``requests.Session`` to send with (used as given, never closed).

        Raises:
            InvalidArgumentError: neither ``id`` nor ``name`` given, an empty string,
                a bad ``timeout``, or no API key configured (nothing is sent).
            ArgumentTypeError: an argument of the wrong type.
            ApiTimeoutError, ApiConnectionError: the API could not be reached, or not in time.
            VectorshiftApiError: the API answered an error status (``NotFoundError``
                for an unknown agent, ``AuthenticationError`` for a bad key, ...).
            VectorshiftError: the API's answer was not the expected JSON.
        """
        timeout = check_timeout(timeout)
        data = fetch_object(
            "/agent",
            id=id,
            name=name,
            username=username,
            org_name=org_name,
            api_key=api_key,
            timeout=timeout,
            http=http,
        )
        agent = cls.from_json(data, api_key=api_key, timeout=timeout, http=http)
        logger.debug("fetched %r", agent)
        return agent

    def _require_conversational(self) -> None:
        if self.agent_type is not AgentType.CONVERSATIONAL:
            raise InvalidArgumentError(
                f"{self!r} is a functional agent; sessions need a conversational agent. "
                f"Fetch a conversational agent, or run a functional one with agent.run()."
            )

    def create_session(self, session_id: str | None = None) -> Session:
        """Build (without connecting) a session with this agent.

        With ``session_id``, the session resumes that existing session instead of
        creating one. No I/O happens here; connect with ``with ... as session:`` or
        ``session.connect()``.

        Raises:
            InvalidArgumentError: the agent is functional, has no id, or ``session_id``
                is empty.
            ArgumentTypeError: ``session_id`` is not a str.
        """
        if session_id is not None:
            session_id = check_session_id(session_id)
        self._require_conversational()
        if session_id is None and not self.id:
            raise InvalidArgumentError(
                f"{self!r} has no id, so no session can be created for it; "
                f"get the agent with Agent.fetch(...)."
            )
        # Imported at call time: fetching needs no WebSocket stack, and session.py
        # may come to import this module.
        from .session import Session

        return Session(
            owner_type="agent",
            owner_id=self.id or "",
            session_id=session_id,
            api_key=self._api_key,
        )

    def resume_session(self, session_id: str) -> Session:
        """Build (without connecting) a session that resumes ``session_id``.

        Raises:
            InvalidArgumentError: ``session_id`` is empty, or the agent is functional.
            ArgumentTypeError: ``session_id`` is not a str.
        """
        session_id = check_session_id(session_id)
        self._require_conversational()
        from .session import Session

        return Session(session_id=session_id, api_key=self._api_key)

    def run(
        self,
        inputs: Any = None,
        additional_instructions: str | None = None,
        *,
        skill: Any = None,
        files: Sequence[FileLike] | None = None,
        session_id: str | None = None,
        keep_alive: bool = False,
        include_deltas: bool = False,
        timeout: float | None = 300.0,
    ) -> AgentRunResult | ConversationalAgentRunResult:
        """Run the agent once and block until it has answered.

        A conversational agent takes ``inputs`` as the message (str, Path, bytes or
        file object), sends it on a session (a new one, or ``session_id``'s), waits
        until the turn ends (at most ``timeout`` seconds) and returns a
        :class:`ConversationalAgentRunResult`. The session is terminated afterwards
        unless ``keep_alive`` or ``session_id`` was given. When the agent asks for an
        approval, :class:`ConversationalRunActionRequiredError` is raised and the
        session is kept so that ``agent.resume_session(error.session_id)`` can answer.

        A functional agent takes a dict of inputs, POSTs ``/agent/{id}/run`` and
        returns an :class:`AgentRunResult`.
        """
        if self.agent_type is AgentType.CONVERSATIONAL:
            check_run_options(additional_instructions, skill, files, session_id)
            session = self.create_session(session_id)
            return run_conversational(
                session,
                inputs,
                files=files,
                keep_alive=bool(keep_alive),
                resumed=session_id is not None,
                include_deltas=bool(include_deltas),
                timeout=timeout,
            )
        if files is not None or session_id is not None or keep_alive or include_deltas:
            raise InvalidArgumentError(
                "files, session_id, keep_alive and include_deltas apply to "
                "conversational agents only"
            )
        if inputs is not None and not isinstance(inputs, Mapping):
            raise ArgumentTypeError(
                f"a functional run takes a dict of inputs, not {type(inputs).__name__}"
            )
        if not self.id:
            raise InvalidArgumentError(f"{self!r} has no id; get it with Agent.fetch(...)")
        body: dict[str, Any] = {"inputs": dict(inputs or {})}
        instructions = additional_instructions or ""
        skill_text = getattr(skill, "content", None)
        if isinstance(skill_text, str) and skill_text:
            instructions = f"{instructions}\n\n{skill_text}" if instructions else skill_text
        if instructions:
            body["additional_instructions"] = instructions
        data = request_json(
            "POST",
            f"/agent/{self.id}/run",
            json_body=body,
            api_key=self._api_key,
            timeout=self._timeout if timeout is None else timeout,
            http=self._http,
        )
        outputs = data.get("outputs")
        error = data.get("error")
        return AgentRunResult(
            outputs=dict(outputs) if isinstance(outputs, Mapping) else {},
            run_id=str(data.get("run_id") or ""),
            status=str(data.get("status") or "success"),
            error=None if error is None else str(error),
        )
