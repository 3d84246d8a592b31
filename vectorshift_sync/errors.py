"""The exception tree of vectorshift_sync.

Every exception the library raises on purpose derives from :class:`VectorshiftError`,
so one ``except VectorshiftError`` catches them all. The families are kept apart::

    VectorshiftError
    ├── ApiConnectionError              could not talk to the HTTP API
    │   └── ApiTimeoutError             ... in time (also a built-in TimeoutError)
    ├── VectorshiftApiError             the API answered with a status >= 400
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitError              429
    │   └── InternalServerError         >= 500
    ├── SessionError                    a real-time session failed
    │   ├── SessionDisconnectedError    it is not (or no longer) connected
    │   │   └── SessionConnectionError  the WebSocket could not be opened
    │   │       └── SessionHandshakeError   the server refused the upgrade with a
    │   │           │                       status (also a VectorshiftApiError)
    │   │           ├── HandshakeBadRequestError           400 (also BadRequestError)
    │   │           ├── HandshakeAuthenticationError       401 (also AuthenticationError)
    │   │           ├── HandshakePermissionDeniedError     403 (also PermissionDeniedError)
    │   │           ├── HandshakeNotFoundError             404 (also NotFoundError)
    │   │           ├── HandshakeUnprocessableEntityError  422 (also UnprocessableEntityError)
    │   │           ├── HandshakeRateLimitError            429 (also RateLimitError)
    │   │           └── HandshakeInternalServerError       5xx (also InternalServerError)
    │   ├── SessionRefusedError         the engine refused the session (unknown id, ...)
    │   ├── SessionTimeoutError         a wait ran out (also a built-in TimeoutError)
    │   └── SessionForkedError          used in a child process after fork()
    ├── ConversationalRunActionRequiredError   a one-shot run paused for the user
    ├── InvalidArgumentError            misuse: a bad value (also a ValueError)
    └── ArgumentTypeError               misuse: a wrong type (also a TypeError)

A WebSocket handshake that the server refuses with a status belongs to both families,
as the official SDK's documentation and the HTTP calls both promise: a wrong key at the
handshake is caught by ``except SessionError``, ``except SessionConnectionError`` and
``except AuthenticationError`` alike, and carries ``status_code``. Sessions never retry
a refused handshake's 401 or 403 (the key will not get better), and retry 429 and 5xx.

Messages say what happened and what to do next. They never contain the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from .events import SessionEvent

__all__ = [
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
    "SessionRefusedError",
    "SessionForkedError",
    "ConversationalRunActionRequiredError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "SessionHandshakeError",
    "HandshakeBadRequestError",
    "HandshakeAuthenticationError",
    "HandshakePermissionDeniedError",
    "HandshakeNotFoundError",
    "HandshakeUnprocessableEntityError",
    "HandshakeRateLimitError",
    "HandshakeInternalServerError",
    "api_error_for_status",
    "handshake_error_for_status",
]


class VectorshiftError(Exception):
    """Root of every error raised by vectorshift_sync."""


# --- HTTP API -----------------------------------------------------------------


class ApiConnectionError(VectorshiftError):
    """The API could not be reached (DNS, refused connection, TLS, dropped socket)."""


class ApiTimeoutError(ApiConnectionError, TimeoutError):
    """The API did not answer within the configured timeout."""


class VectorshiftApiError(VectorshiftError):
    """The API answered with an error status.

    ``status_code``, ``method``, ``endpoint`` (path without base or query),
    ``raw_response`` (body text) and ``error_message`` (the server's explanation,
    when it gave one) describe what happened.
    """

    _title = "API Error"
    _hint: Optional[str] = None

    def __init__(
        self,
        status_code: int,
        *,
        method: str = "GET",
        endpoint: str = "",
        raw_response: str = "",
        error_message: str = "",
    ) -> None:
        self.status_code = status_code
        self.method = method
        self.endpoint = endpoint
        self.raw_response = raw_response
        self.error_message = error_message
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"VectorShift {self._title} ({self.status_code})"]
        if self.endpoint:
            lines.append(f"  Endpoint: {self.method} {self.endpoint}")
        if self.error_message:
            lines.append(f"  Detail: {self.error_message}")
        if self._hint:
            lines.append(f"  Hint: {self._hint}")
        return "\n".join(lines)

    def __reduce__(self) -> Any:
        return (
            _rebuild_api_error,
            (
                type(self),
                self.status_code,
                self.method,
                self.endpoint,
                self.raw_response,
                self.error_message,
            ),
        )


def _rebuild_api_error(
    cls: type[VectorshiftApiError],
    status_code: int,
    method: str,
    endpoint: str,
    raw_response: str,
    error_message: str,
) -> VectorshiftApiError:
    return cls(
        status_code,
        method=method,
        endpoint=endpoint,
        raw_response=raw_response,
        error_message=error_message,
    )


#: The official SDK's alternative name for :class:`VectorshiftApiError`.
ApiStatusError = VectorshiftApiError


class BadRequestError(VectorshiftApiError):
    """HTTP 400: the request was malformed."""

    _title = "API Bad Request"


class AuthenticationError(VectorshiftApiError):
    """HTTP 401: the API key is missing or wrong."""

    _title = "API Unauthorized"
    _hint = (
        "check the API key (the api_key argument, vectorshift_sync.api_key or the "
        "VECTORSHIFT_API_KEY environment variable)"
    )


class PermissionDeniedError(VectorshiftApiError):
    """HTTP 403: the key is valid but may not use this resource."""

    _title = "API Forbidden"


class NotFoundError(VectorshiftApiError):
    """HTTP 404: no such resource (or not visible to this key)."""

    _title = "API Not Found"
    _hint = "check the resource id or name, and the username/org_name it lives under"


class UnprocessableEntityError(VectorshiftApiError):
    """HTTP 422: the request was well-formed but its values were rejected."""

    _title = "API Validation Error"


class RateLimitError(VectorshiftApiError):
    """HTTP 429: too many requests; retry later."""

    _title = "API Rate Limited"
    _hint = "slow down and retry after a pause"


class InternalServerError(VectorshiftApiError):
    """HTTP 5xx: the server failed."""

    _title = "API Error"

    def _render(self) -> str:
        if self.status_code == 500:
            self._title = "API Internal Server Error"
            self._hint = "this is a server-side failure; retry later"
        return super()._render()


_STATUS_CLASSES: dict[int, type[VectorshiftApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def api_error_for_status(
    status_code: int,
    *,
    method: str = "GET",
    endpoint: str = "",
    raw_response: str = "",
    error_message: str = "",
) -> VectorshiftApiError:
    """Build the exception that stands for an HTTP error status."""
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else VectorshiftApiError
    return cls(
        status_code,
        method=method,
        endpoint=endpoint,
        raw_response=raw_response,
        error_message=error_message,
    )


# --- Sessions -----------------------------------------------------------------


class SessionError(VectorshiftError):
    """A real-time session failed; ``message`` says how."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class SessionDisconnectedError(SessionError):
    """The session is not connected: never connected, closed, or the link dropped."""


class SessionConnectionError(SessionDisconnectedError):
    """The WebSocket could not be opened (refused, unreachable, DNS, TLS, proxy)."""


class SessionRefusedError(SessionError):
    """The engine refused to create or attach the session (unknown or terminated id,
    unknown owner); retrying the same request will not help."""


class SessionTimeoutError(SessionError, TimeoutError):
    """A session operation did not complete within its timeout."""


class SessionForkedError(SessionError):
    """A session object was inherited across ``fork()``; open a new one in the child."""


class SessionHandshakeError(VectorshiftApiError, SessionConnectionError):
    """The server refused the WebSocket upgrade with an HTTP error status.

    Both a :class:`SessionConnectionError` (so a :class:`SessionError`) and a
    :class:`VectorshiftApiError` with ``status_code``, ``endpoint``, ``raw_response``
    and ``error_message``; each status has a subclass that is also the HTTP status
    class (:class:`HandshakeAuthenticationError` is an :class:`AuthenticationError`).
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    retry_after: Optional[float] = None

    def __reduce__(self) -> Any:
        return (
            _rebuild_handshake_error,
            (
                type(self),
                self.status_code,
                self.endpoint,
                self.raw_response,
                self.error_message,
                self.retry_after,
            ),
        )


def _rebuild_handshake_error(
    cls: type[SessionHandshakeError],
    status_code: int,
    endpoint: str,
    raw_response: str,
    error_message: str,
    retry_after: Optional[float],
) -> SessionHandshakeError:
    error = cls(
        status_code,
        method="GET",
        endpoint=endpoint,
        raw_response=raw_response,
        error_message=error_message,
    )
    error.retry_after = retry_after
    return error


class HandshakeBadRequestError(BadRequestError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 400."""


class HandshakeAuthenticationError(AuthenticationError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 401: the API key is missing or wrong."""


class HandshakePermissionDeniedError(PermissionDeniedError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 403."""


class HandshakeNotFoundError(NotFoundError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 404 (wrong ``VECTORSHIFT_WS_URL``?)."""


class HandshakeUnprocessableEntityError(UnprocessableEntityError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 422."""


class HandshakeRateLimitError(RateLimitError, SessionHandshakeError):
    """The WebSocket upgrade was refused with 429: too many connections; retry later."""


class HandshakeInternalServerError(InternalServerError, SessionHandshakeError):
    """The WebSocket upgrade was refused with a 5xx status."""


_HANDSHAKE_CLASSES: dict[type[VectorshiftApiError], type[SessionHandshakeError]] = {
    BadRequestError: HandshakeBadRequestError,
    AuthenticationError: HandshakeAuthenticationError,
    PermissionDeniedError: HandshakePermissionDeniedError,
    NotFoundError: HandshakeNotFoundError,
    UnprocessableEntityError: HandshakeUnprocessableEntityError,
    RateLimitError: HandshakeRateLimitError,
    InternalServerError: HandshakeInternalServerError,
}


def handshake_error_for_status(
    status_code: int,
    *,
    endpoint: str = "",
    raw_response: str = "",
    error_message: str = "",
    headers: Optional[Mapping[str, str]] = None,
) -> SessionHandshakeError:
    """Build the exception that stands for a WebSocket upgrade refused with a status;
    ``headers`` (the response's) give ``retry_after`` from ``Retry-After``."""
    retry_after = _retry_after(headers)
    family = type(api_error_for_status(status_code))
    cls = _HANDSHAKE_CLASSES.get(family, SessionHandshakeError)
    return _rebuild_handshake_error(
        cls, status_code, endpoint, raw_response, error_message, retry_after
    )


class ConversationalRunActionRequiredError(VectorshiftError, RuntimeError):
    """A one-shot conversational run stopped because the agent needs the user.

    ``event`` is the approval or re-authorisation request, ``session_id`` the session
    to resume (``agent.resume_session(session_id)``) to answer it.
    """

    def __init__(self, event: SessionEvent, session_id: str) -> None:
        self.event = event
        self.session_id = session_id
        super().__init__(
            f"Conversational run requires action ({event.type.value}); use "
            f"agent.resume_session({session_id!r}) to handle it."
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.event, self.session_id))


# --- Misuse -------------------------------------------------------------------


class InvalidArgumentError(VectorshiftError, ValueError):
    """An argument has an unacceptable value."""


class ArgumentTypeError(VectorshiftError, TypeError):
    """An argument has the wrong type."""


def _retry_after(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    # Only the delay-seconds form; an HTTP date is rare on a refused upgrade and a
    # reconnect has its own bounded backoff anyway.
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                seconds = float(str(value).strip())
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None
