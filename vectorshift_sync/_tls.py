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
variables websocket-client reads (``WEBSOCKET_CLIENT_CA_BUNDLE``, ``SSLKEYLOGFILE``),
and the CA files and directories it loads (the given ones, or OpenSSL's default store
as ``SSL_CERT_FILE``/``SSL_CERT_DIR`` choose it): their inode, size, times and mode,
so a renewed, replaced or re-permissioned bundle, or a CA added to or removed from a
directory, is loaded again on the next connect. Runs on the dialling
thread; nothing here blocks but the first load of a CA file.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["with_shared_context"]

logger = logging.getLogger(__name__)

#: Settings the shared context is built from.
_BUILT_FROM = frozenset({"ca_certs", "ca_cert_path", "cert_reqs", "check_hostname"})
#: Settings websocket-client applies when wrapping the socket, context or not.
_AT_WRAP = frozenset({"server_hostname", "do_handshake_on_connect", "suppress_ragged_eofs"})
#: ``check_hostname`` not given (websocket-client's default then depends on ``cert_reqs``).
_ABSENT = object()


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
    cert_reqs = given.get("cert_reqs", ssl.CERT_REQUIRED)
    check_hostname = given.get("check_hostname", _ABSENT)
    if not (
        type(cert_reqs) in (int, ssl.VerifyMode)
        and (check_hostname is _ABSENT or check_hostname is None or type(check_hostname) is bool)
        and all(p is None or isinstance(p, (str, os.PathLike)) for p in (ca_certs, ca_cert_path))
    ):
        return given  # unusual values: websocket-client makes of them what it makes
    stores: Tuple[Any, ...]
    if ca_certs or ca_cert_path:
        stores = (_stamp(ca_certs), _stamp(ca_cert_path))
    else:  # OpenSSL's default store (SSL_CERT_FILE and SSL_CERT_DIR choose it)
        paths = ssl.get_default_verify_paths()
        stores = (paths.cafile, _stamp(paths.cafile), paths.capath, _stamp(paths.capath))
    try:
        context = _context(
            ca_certs,
            ca_cert_path,
            cert_reqs,
            check_hostname,
            os.environ.get("SSLKEYLOGFILE"),
            *stores,
        )
    except Exception as exc:  # websocket-client builds it again and reports the error
        logger.debug("TLS settings left to websocket-client: %s", exc)
        return given
    given["context"] = context
    return given


def _stamp(path: Any) -> Optional[Tuple[int, int, int, int, int]]:
    """What changes when a CA file or directory is replaced, rewritten, renamed into,
    or has its permissions changed: so a cached context is never staler than that."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None  # loading it fails below, and websocket-client says why
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


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
    (``check_hostname`` ``_ABSENT``: not given). Raises for a setting it refuses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if keylog is not None:
        context.keylog_filename = keylog
    if cert_reqs != ssl.CERT_NONE:
        if ca_certs or ca_cert_path:
            context.load_verify_locations(cafile=ca_certs, capath=ca_cert_path)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_reqs == ssl.CERT_NONE and (check_hostname is _ABSENT or not check_hostname):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    hostname = True if check_hostname is _ABSENT else bool(check_hostname)
    if hostname and cert_reqs == ssl.CERT_NONE:
        raise ValueError("check_hostname cannot be enabled when cert_reqs is CERT_NONE")
    context.check_hostname = hostname
    context.verify_mode = cert_reqs
    return context
