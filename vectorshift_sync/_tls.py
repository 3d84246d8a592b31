"""TLS for the ``wss://`` dial: one ``SSLContext`` per setting, not one per connect.

websocket-client builds a new ``SSLContext`` from ``sslopt`` for every connection,
and with no CA given it loads the system's CA bundle into it: 35 ms of CPU per
connect on a 2-core VM, paid again by every reconnect (aiohttp, under the official
SDK, builds its default context once). Here the common settings (none, or any of
``ca_certs``, ``ca_cert_path``, ``cert_reqs``, ``check_hostname``) are made into a
context once, by websocket-client's own rules, and handed to it as its documented
``context`` option. Any other setting (a client certificate, ciphers, a context of
the user's) or a setting that fails leaves ``sslopt`` as given, so websocket-client
builds the context, and reports errors, exactly as before.

A context is reused while its inputs are unchanged: the settings, the environment
variables websocket-client and OpenSSL read (``WEBSOCKET_CLIENT_CA_BUNDLE``,
``SSLKEYLOGFILE``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``), and the CA file's
modification time (a renewed bundle is read again). Runs on the dialling
thread; nothing here blocks but the first load of a CA file.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import Any, Dict, Mapping, Optional

__all__ = ["with_shared_context"]

logger = logging.getLogger(__name__)

#: Settings the shared context is built from.
_BUILT_FROM = frozenset({"ca_certs", "ca_cert_path", "cert_reqs", "check_hostname"})
#: Settings websocket-client applies when wrapping the socket, context or not.
_AT_WRAP = frozenset({"server_hostname", "do_handshake_on_connect", "suppress_ragged_eofs"})


def with_shared_context(url: str, sslopt: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """websocket-client's ``sslopt`` for dialling ``url``: a copy of ``sslopt`` with
    a shared ``context`` added when ``url`` is ``wss://`` and its settings allow,
    else the copy alone (``None`` for no settings)."""
    given: Dict[str, Any] = dict(sslopt) if sslopt else {}
    if not url.lower().startswith("wss:") or not set(given) <= _BUILT_FROM | _AT_WRAP:
        return given or None
    ca_certs = given.get("ca_certs")
    ca_cert_path = given.get("ca_cert_path")
    bundle = os.environ.get("WEBSOCKET_CLIENT_CA_BUNDLE")  # as websocket-client reads it
    if bundle and os.path.isfile(bundle) and ca_certs is None:
        ca_certs = bundle
    elif bundle and os.path.isdir(bundle) and ca_cert_path is None:
        ca_cert_path = bundle
    try:
        context = _context(
            ca_certs,
            ca_cert_path,
            given.get("cert_reqs", ssl.CERT_REQUIRED),
            given.get("check_hostname"),
            os.environ.get("SSLKEYLOGFILE"),
            _modified(ca_certs),
            # OpenSSL's default store, read when no CA is given
            os.environ.get("SSL_CERT_FILE"),
            os.environ.get("SSL_CERT_DIR"),
        )
    except Exception as exc:  # websocket-client builds it again and reports the error
        logger.debug("TLS settings left to websocket-client: %s", exc)
        return given
    given["context"] = context
    return given


def _modified(path: Any) -> Optional[int]:
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, TypeError, ValueError):
        return None  # loading it fails below, and websocket-client says why


@functools.lru_cache(maxsize=16)
def _context(
    ca_certs: Any,
    ca_cert_path: Any,
    cert_reqs: Any,
    check_hostname: Any,
    keylog: Optional[str],
    *cache_key: Any,  # what else decides what is loaded: only part of the cache key
) -> ssl.SSLContext:
    """A client context made as websocket-client 1.x makes it from these settings
    (``check_hostname`` None: not given). Raises for a setting it would refuse."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if keylog is not None:
        context.keylog_filename = keylog
    if cert_reqs != ssl.CERT_NONE:
        if ca_certs or ca_cert_path:
            context.load_verify_locations(cafile=ca_certs, capath=ca_cert_path)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_reqs == ssl.CERT_NONE and not check_hostname:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    hostname = True if check_hostname is None else bool(check_hostname)
    if hostname and cert_reqs == ssl.CERT_NONE:
        raise ValueError("check_hostname cannot be enabled when cert_reqs is CERT_NONE")
    context.check_hostname = hostname
    context.verify_mode = cert_reqs
    return context
