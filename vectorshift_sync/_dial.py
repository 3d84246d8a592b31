"""Opening the WebSocket: the HTTP upgrade, on the caller's thread.

websocket-client does the upgrade in general: the request and its headers, the
response checks, redirects, proxies and TLS options (its TLS context is built once per
setting by :mod:`._tls`). The upgraded socket is then handed to a
:class:`~._connection.Connection`.

A direct ``ws://`` connection to this machine (a loopback address or ``localhost``:
the local engine, a development server; no proxy given or in ``http_proxy``/``HTTP_PROXY``,
no credentials in the URL, websocket-client's trace off) is upgraded by websockets'
sans-I/O ``ClientProtocol`` instead, the library that already frames every
connection: websocket-client reads the response one byte per Python call, about
0.5 ms of a 1.5 ms local connect. The TCP connection gets websocket-client's socket
options; the response is peeked at and only its header block taken from the kernel,
so the first frames stay in the socket. A redirect, or any response websockets does
not take, is left to websocket-client, which asks again. Over TLS the handshake
costs milliseconds and the same change saves about 0.1 ms, so ``wss://`` keeps
websocket-client's path; so does any other host, which may sit behind a proxy or a
load balancer that keeps cookies (websocket-client keeps them).

This module is where the dialling errors of websocket-client, websockets and the
socket become ours.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
from typing import Any, Dict, Mapping, Optional

import websocket
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from ._redaction import masking
from ._tls import with_shared_context
from .errors import (
    SessionConnectionError,
    SessionError,
    SessionTimeoutError,
    VectorshiftError,
    handshake_error_for_status,
)

__all__ = ["open_socket"]

#: How much of the response one read takes or looks at.
_PEEK = 4096
#: Redirect statuses: the direct upgrade hands them to websocket-client, which follows
#: 301, 302 and 303 (307 and 308 too, from 1.6.4) and reports any other.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def open_socket(
    url: str,
    api_key: str,
    *,
    timeout: float,
    sslopt: Optional[Mapping[str, Any]] = None,
    proxy: Optional[Mapping[str, Any]] = None,
) -> socket.socket:
    """Dial ``url`` with the Bearer header; return the upgraded socket (caller's thread).

    ``timeout`` bounds connecting and each read and write, as websocket-client's
    ``timeout`` does (name resolution has no bound of its own). Raises a
    :class:`SessionHandshakeError` that is also the HTTP status class (e.g.
    :class:`AuthenticationError`) when the upgrade is refused,
    :class:`SessionTimeoutError` when ``timeout`` runs out, and
    :class:`SessionConnectionError` for any other failure to connect.
    """
    options: Dict[str, Any] = dict(proxy or {})
    direct = _direct_target(url, proxy)
    try:
        if direct is not None:
            upgraded = _upgrade_direct(direct, api_key, timeout)
            if upgraded is not None:
                return upgraded
        with masking(api_key):  # websocket-client's trace logs the Authorization header
            ws = websocket.create_connection(
                url,
                timeout=timeout,
                header=[f"Authorization: Bearer {api_key}"],
                suppress_origin=True,
                skip_utf8_validation=True,
                sslopt=with_shared_context(url, sslopt),
                **options,
            )
    except BaseException as exc:
        _raise_ours(exc, url, timeout)
        raise
    sock = ws.sock
    if sock is None:  # pragma: no cover - websocket-client always sets it on success
        raise SessionError("websocket-client returned no socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # websocket-client reads the handshake response one byte at a time, so nothing of
    # the first frames is left in its buffers: the socket is ours from here.
    return sock


def _direct_target(url: str, proxy: Optional[Mapping[str, Any]]) -> Optional[WebSocketURI]:
    """``url``, parsed, if it is a ``ws://`` URL to this machine (a loopback address
    or ``localhost``: the local engine, a development server) that websocket-client
    would dial without a proxy (none given, none in the variables it reads for
    ``ws://``), with no credentials in it, while websocket-client's trace is off
    (whoever turned it on wants to see the handshake in it). Anything else may sit
    behind a proxy or a load balancer that keeps cookies, which websocket-client
    handles: None."""
    if proxy or not url.startswith("ws://") or websocket.isEnabledForTrace():
        return None
    if os.environ.get("http_proxy", os.environ.get("HTTP_PROXY", "")).strip():
        return None
    try:
        uri = parse_uri(url)
    except (WebSocketException, ValueError):  # e.g. a port that is not a number
        return None  # websocket-client reports it, as ever
    if uri.user_info is not None:
        return None
    if uri.host.lower() == "localhost":
        return uri
    try:
        return uri if ipaddress.ip_address(uri.host).is_loopback else None
    except ValueError:
        return None


def _upgrade_direct(uri: WebSocketURI, api_key: str, timeout: float) -> Optional[socket.socket]:
    """Open the TCP connection websocket-client would open (its default socket
    options: no delay, keepalive) and upgrade it with websockets' ``ClientProtocol``;
    ``timeout`` bounds connecting and each read and write. Returns the socket, or
    None for websocket-client to ask again: a redirect (it follows the usual ones)
    or any response websockets does not take (an ``HTTP/1.0`` status line, a
    ``101`` that fails its checks, an end mid-header, a refusal whose body has no
    length). Raises websockets' ``InvalidStatus`` for a refusal, an
    ``InvalidHandshake`` when the connection ends before a response, and the
    socket's errors.
    """
    sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
    try:
        for option in websocket.DEFAULT_SOCKET_OPTION:
            sock.setsockopt(*option)
        protocol = ClientProtocol(uri, max_size=None)
        request = protocol.connect()
        request.headers["Authorization"] = f"Bearer {api_key}"
        # Sent as bytes, not through send_request(), which logs the headers at DEBUG.
        sock.sendall(request.serialize())
        answered = _read_response(sock, protocol)
        failure = protocol.handshake_exc
        if answered and failure is None:
            return sock
        sock.close()
        if not answered:
            return None
        if isinstance(failure, InvalidStatus):
            if failure.response.status_code in _REDIRECTS:
                return None
            raise failure
        raise _no_response(failure)
    except BaseException:
        sock.close()
        raise


def _read_response(sock: socket.socket, protocol: ClientProtocol) -> bool:
    """Feed ``protocol`` the response until it accepts or refuses the upgrade, or
    the connection ends before any response. The header block is peeked at and
    taken exactly; a refusal's body is read when its length is given. False when
    websocket-client should ask again instead: a response websockets does not take
    (unparsed, or failing its checks), or a refusal without a ``Content-Length``
    (websockets would wait for the connection to end, websocket-client does not)."""
    block = b""  # the header block, as taken so far
    while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
        if block.endswith(b"\r\n\r\n"):
            if b"\ncontent-length:" not in block.lower():
                return False
            data = sock.recv(_PEEK)  # the refusal's body
        else:
            data = sock.recv(_PEEK, socket.MSG_PEEK)
            if data:
                seen = block[-3:] + data
                end = seen.find(b"\r\n\r\n")
                data = sock.recv(end + 4 - len(block[-3:]) if end >= 0 else len(data))
                block += data
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
    failure = protocol.handshake_exc
    return not (block and failure is not None and not isinstance(failure, InvalidStatus))


def _no_response(failure: Optional[BaseException]) -> WebSocketException:
    """The connection ended before a response: websockets' ``InvalidMessage`` from
    version 15, its parser's own ``EOFError`` in 14 (wrapped here in the
    ``InvalidHandshake`` they share; ``InvalidMessage`` is deprecated in 14)."""
    if isinstance(failure, WebSocketException):
        return failure
    error = InvalidHandshake("did not receive a valid HTTP response")
    error.__cause__ = failure
    return error


def _raise_ours(exc: BaseException, url: str, timeout: float) -> None:
    """Raise the error of ours that ``exc`` (raised while dialling) means, if any."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        body = exc.resp_body or b""
        _raise_refused(url, exc.status_code, body, getattr(exc, "resp_headers", None))
    if isinstance(exc, InvalidStatus):
        response = exc.response
        headers = dict(response.headers.raw_items())
        _raise_refused(url, response.status_code, response.body or b"", headers)
    if isinstance(exc, (websocket.WebSocketTimeoutException, socket.timeout)):
        raise SessionTimeoutError(
            f"timed out after {timeout:.1f}s opening the WebSocket to {_safe(url)}"
        ) from exc
    if isinstance(exc, VectorshiftError):
        return
    if isinstance(exc, (OSError, websocket.WebSocketException, WebSocketException, ValueError)):
        hint = (
            "pass sslopt={'ca_certs': <CA bundle>} (or set WEBSOCKET_CLIENT_CA_BUNDLE) "
            "if the server's certificate is signed by a private CA"
            if isinstance(exc, ssl.SSLCertVerificationError)
            else "check the network and VECTORSHIFT_WS_URL / VECTORSHIFT_BASE_URL"
        )
        raise SessionConnectionError(
            f"could not open the WebSocket to {_safe(url)}: {exc}; {hint}"
        ) from exc


def _raise_refused(
    url: str, status: int, body: Any, headers: Optional[Mapping[str, str]]
) -> None:
    """Raise the handshake error for a refused upgrade: the status class, with the
    body's explanation and the headers' ``Retry-After``."""
    if isinstance(body, (bytes, bytearray)):  # websockets' body may be a bytearray
        text = bytes(body).decode("utf-8", "replace")
    else:
        text = str(body)
    raise handshake_error_for_status(
        status,
        endpoint=_path_of(url),
        raw_response=text,
        error_message=_error_message(text),
        headers=headers,
    ) from None


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def _safe(url: str) -> str:
    # A URL may carry credentials (user:pass@host); never show them.
    scheme, _, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()
