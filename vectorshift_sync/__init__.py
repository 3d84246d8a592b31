"""vectorshift_sync: VectorShift conversational Agents and Chatbots from blocking Python.

The blocking twin of the official ``vectorshift`` SDK's real-time Session: the same
names, parameters and wire protocol, without ``await``.
"""

from __future__ import annotations

import logging
from typing import Optional

from ._pool import set_worker_limits
from ._recovery import ReconnectAttempt, ReconnectPolicy
from ._turn_follow import TextStream
from .agent import Agent, AgentRunResult, AgentType, ConversationalAgentRunResult
from .chatbot import Chatbot
from .errors import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeoutError,
    ArgumentTypeError,
    AuthenticationError,
    BadRequestError,
    ConversationalRunActionRequiredError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionConnectionError,
    SessionDisconnectedError,
    SessionError,
    SessionForkedError,
    SessionHandshakeError,
    SessionRefusedError,
    SessionTimeoutError,
    UnprocessableEntityError,
    VectorshiftApiError,
    VectorshiftError,
)
from .events import (
    MessageSender,
    ParticipantStatus,
    SessionEvent,
    SessionEventType,
    SessionMessage,
    SessionMessageRole,
    SessionMessageStatus,
)
from .session import ApprovalResponse, SendManyItem, Session, UserSessionMessage
from .turns import TurnResult

__version__ = "0.1.0"

#: The API key used when no ``api_key=`` is passed; falls back to ``VECTORSHIFT_API_KEY``.
api_key: Optional[str] = None

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "api_key",
    # resources and sessions
    "Agent",
    "AgentType",
    "AgentRunResult",
    "ConversationalAgentRunResult",
    "Chatbot",
    "Session",
    "UserSessionMessage",
    "SendManyItem",
    "ApprovalResponse",
    "TurnResult",
    "TextStream",
    "ReconnectPolicy",
    "ReconnectAttempt",
    "set_worker_limits",
    # errors
    "VectorshiftError",
    "VectorshiftApiError",
    "ApiStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "ApiConnectionError",
    "ApiTimeoutError",
    "SessionError",
    "SessionDisconnectedError",
    "SessionConnectionError",
    "SessionTimeoutError",
    "SessionForkedError",
    "SessionHandshakeError",
    "SessionRefusedError",
    "ConversationalRunActionRequiredError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    # events
    "SessionEvent",
    "SessionEventType",
    "SessionMessage",
    "SessionMessageStatus",
    "SessionMessageRole",
    "ParticipantStatus",
    "MessageSender",
]
