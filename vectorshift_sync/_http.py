"""The REST boundary: the one place where ``requests`` is called and its errors translated.

Everything that talks to the VectorShift HTTP API goes through :func:`request_json`. It

* resolves the API key (explicit argument, ``vectorshift_sync.api_key``,
  ``VECTORSHIFT_API_KEY``) and refuses to send a request without one: the official
  SDK sends ``Authorization: Bearer None`` and lets the server answer 401;
* always passes a finite timeout to ``requests`` unless the caller asks for ``None``
  (requests itself waits forever by default, and so does the official SDK's sync path);
* maps ``requests`` exceptions to :class:`~vectorshift_sync.errors.ApiTimeoutError` /
  :class:`~vectorshift_sync.errors.ApiConnectionError`, and a status >= 400 to the class
  :func:`~vectorshift_sync.errors.api_error_for_status` picks, chaining the cause, so
  callers never need ``import requests`` to write an ``except`` clause;
* turns a success body that is not a JSON object into a clear
  :class:`~vectorshift_sync.errors.VectorshiftError` instead of a bare ``JSONDecodeError``;
* keeps the API key out of every message it builds, including text the server echoes.

A ``requests.Session`` may be injected (``http=``) for connection reuse, proxies, custom
adapters, or tests; it is used as given and never closed here. Without one, each call
uses a short-lived session of its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import requests

from ._config import base_url, mask_key, resolve_api_key
from .errors import (
    ApiConnectionError,
    ApiTimeoutError,
    ArgumentTypeError,
    InvalidArgumentError,
    VectorshiftError,
    api_error_for_status,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "check_http",
    "check_session_id",
    "check_timeout",
    "error_message_from_body",
    "fetch_object",
    "optional_str",
    "plain_id",
    "request_json",
]

logger = logging.getLogger(__name__)

#: Seconds allowed to connect, and then for each wait for response data (requests'
#: timeout semantics: not a bound on the whole transfer). ``None`` waits forever.
DEFAULT_TIMEOUT = 30.0

# Keys tried, in order, for the server's explanation in an error body (as the SDK does).
_ERROR_KEYS = ("error", "message", "detail", "errors")
# A Detail line longer than this (an HTML error page from a proxy, say) is cut short;
# the whole body stays available as ``raw_response``.
_MAX_DETAIL = 1000
_MAX_SNIPPET = 200

_KEY_HELP = (
    "pass api_key=..., set vectorshift_sync.api_key, or set the "
    "VECTORSHIFT_API_KEY environment variable"
)


def check_timeout(timeout: object) -> float | None:
    """Validate a ``timeout`` argument: ``None`` (wait forever) or a positive number."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ArgumentTypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    value = float(timeout)
    if math.isnan(value) or value <= 0:
        raise InvalidArgumentError(
            f"timeout must be a positive number of seconds or None (wait forever), got {timeout!r}"
        )
    if math.isinf(value):
        return None
    return value


def check_http(http: object) -> requests.Session | None:
    """Validate an ``http`` argument: ``None`` or a ``requests.Session``."""
    if http is None or isinstance(http, requests.Session):
        return http
    raise ArgumentTypeError(f"http must be a requests.Session or None, not {type(http).__name__}")


def _check_optional_str(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str or None, not {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string or None")
    return value


def _scrub(text: str, key: str | None) -> str:
    """Replace every standalone occurrence of the key in ``text`` by its masked form.

    Only whole tokens are replaced, so a short (test) key such as ``"x"`` does not
    garble the words that happen to contain it.
    """
    if key and key in text:
        token = re.compile(r"(?<![A-Za-z0-9_\-])" + re.escape(key) + r"(?![A-Za-z0-9_\-])")
        return token.sub(mask_key(key), text)
    return text


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _stringify(value: Any) -> str:
    """Turn one error field (string, list, nested object) into readable text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(_stringify(item) for item in value if item)
    if isinstance(value, dict):
        for key in _ERROR_KEYS + ("msg",):
            nested = value.get(key)
            if nested:
                return _stringify(nested)
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def error_message_from_body(text: str) -> str:
    """Extract the server's explanation from an error response body.

    For a JSON object: the first truthy value of ``error``, ``message``, ``detail``,
    ``errors`` (a list joined with ``"; "``); an object with none of them is shown
    whole, pretty-printed. Anything else (not JSON, or JSON that is not an object):
    the body text itself, stripped.
    """
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    if not isinstance(body, dict):
        return text.strip()
    for key in _ERROR_KEYS:
        value = body.get(key)
        if value:
            return _stringify(value)
    if not body:
        return ""
    return json.dumps(body, indent=2, sort_keys=True, default=str)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def request_json(
    method: str,
    path: str,
    *,
    params: Sequence[tuple[str, Any]] = (),
    json_body: Any = None,
    api_key: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    http: requests.Session | None = None,
) -> dict[str, Any]:
    """Send one request to ``{base}{path}`` and return the JSON object it answers.

    ``params`` are sent in the given order; pairs whose value is ``None`` are left
    out, and booleans are sent as ``"true"``/``"false"``. ``json_body``, when not
    ``None``, is sent as the JSON request body.

    ``timeout`` bounds connecting and each wait for data, in seconds; ``None`` waits
    forever. The call blocks the calling thread; any thread may call it (an injected
    ``http`` session is shared state: requests does not promise it is thread-safe).

    Raises:
        InvalidArgumentError: no API key is configured (nothing is sent), or a bad
            ``timeout``.
        ArgumentTypeError: ``timeout`` or ``http`` has the wrong type.
        ApiTimeoutError: the API did not answer in time.
        ApiConnectionError: the API could not be reached.
        VectorshiftApiError: the API answered with a status >= 400 (the subclass
            matching the status).
        VectorshiftError: a success answer whose body is not a JSON object.
    """
    timeout = check_timeout(timeout)
    http = check_http(http)
    key = resolve_api_key(api_key)
    if not key:
        raise InvalidArgumentError(
            f"No VectorShift API key is configured, so {method} {path} was not sent: {_KEY_HELP}."
        )

    base = base_url()
    url = base + path
    query = [(name, _query_value(value)) for name, value in params if value is not None]
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    logger.debug("%s %s params=%s timeout=%s", method, path, query, timeout)

    try:
        if http is not None:
            response = http.request(
                method,
                url,
                params=query,
                json=json_body,
                headers=headers,
                timeout=timeout,
            )
        else:
            with requests.Session() as own:
                response = own.request(
                    method,
                    url,
                    params=query,
                    json=json_body,
                    headers=headers,
                    timeout=timeout,
                )
    # ConnectTimeout is both a Timeout and a ConnectionError: test Timeout first.
    except requests.Timeout as exc:
        logger.debug("%s %s timed out", method, path)
        raise ApiTimeoutError(
            f"Timed out after {timeout}s: {method} {path}: {_scrub(str(exc), key)}. "
            f"Check your network and that {base} is reachable, or pass a larger "
            f"timeout=."
        ) from exc
    except requests.RequestException as exc:
        # ConnectionError (DNS, refused, TLS, proxy, dropped), and also InvalidURL /
        # MissingSchema from a malformed VECTORSHIFT_BASE_URL, TooManyRedirects, a body
        # cut short: all "could not talk to the API".
        logger.debug("%s %s failed: %s", method, path, type(exc).__name__)
        raise ApiConnectionError(
            f"Connection error: {method} {path}: {_scrub(str(exc), key)}. "
            f"Check your network connection, proxy settings, and the API base URL "
            f"{base} (VECTORSHIFT_BASE_URL)."
        ) from exc

    status = response.status_code
    text = response.text
    logger.debug("%s %s -> %s (%d bytes)", method, path, status, len(response.content))

    if status >= 400:
        raise api_error_for_status(
            status,
            method=method,
            endpoint=path,
            raw_response=_scrub(text, key),
            error_message=_clip(_scrub(error_message_from_body(text), key), _MAX_DETAIL),
        )

    try:
        body = json.loads(text)
    except ValueError as exc:
        content_type = response.headers.get("Content-Type", "no Content-Type")
        snippet = _clip(_scrub(text.strip(), key), _MAX_SNIPPET) or "<empty>"
        raise VectorshiftError(
            f"Unexpected answer to {method} {path}: status {status} with a body that is "
            f"not JSON ({content_type}): {snippet!r}. Check that the API base URL {base} "
            f"(VECTORSHIFT_BASE_URL) points at the VectorShift API."
        ) from exc
    if not isinstance(body, dict):
        raise VectorshiftError(
            f"Unexpected answer to {method} {path}: status {status} with a JSON "
            f"{type(body).__name__} where an object was expected."
        )
    return body


def fetch_object(
    path: str,
    *,
    id: str | None,
    name: str | None,
    username: str | None,
    org_name: str | None,
    api_key: str | None,
    timeout: float | None,
    http: requests.Session | None,
) -> dict[str, Any]:
    """``GET {base}{path}?id=&name=&username=&org_name=`` and return its ``"object"``.

    Validates the arguments before anything is sent: each is a non-empty ``str`` or
    ``None``, and at least one of ``id`` and ``name`` is given.
    """
    id = _check_optional_str("id", id)
    name = _check_optional_str("name", name)
    username = _check_optional_str("username", username)
    org_name = _check_optional_str("org_name", org_name)
    api_key = _check_optional_str("api_key", api_key)
    if id is None and name is None:
        raise InvalidArgumentError("Either id or name must be given")

    body = request_json(
        "GET",
        path,
        params=(
            ("id", id),
            ("name", name),
            ("username", username),
            ("org_name", org_name),
        ),
        api_key=api_key,
        timeout=timeout,
        http=http,
    )
    obj = body.get("object")
    if not isinstance(obj, dict):
        if "object" not in body:
            found = "no 'object' key"
        elif obj is None:
            found = "'object' is null"
        else:
            found = f"'object' is a JSON {type(obj).__name__}"
        raise VectorshiftError(
            f"Unexpected answer to GET {path}: {found}, where the resource was expected "
            f"as a JSON object."
        )
    return obj


# --- Reading resources and checking resource-method arguments ----------------


def plain_id(value: Any) -> str | None:
    """An id as a string; Mongo extended JSON ``{"$oid": "..."}`` is unwrapped."""
    if isinstance(value, dict):
        value = value.get("$oid")
    if value is None or value == "":
        return None
    return str(value)


def optional_str(value: Any) -> str | None:
    """A text field as ``str`` (a number the server sent is shown, not rejected)."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def check_session_id(session_id: object) -> str:
    """Validate a ``session_id`` argument: a non-empty ``str``."""
    if not isinstance(session_id, str):
        raise ArgumentTypeError(f"session_id must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidArgumentError("session_id must be a non-empty string")
    return session_id
