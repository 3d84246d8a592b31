"""Keep the API key out of websocket-client's log records, trace included.

websocket-client logs through the ``websocket`` logger, and with
``websocket.enableTrace(True)`` it logs the whole handshake request, whose
``Authorization: Bearer <key>`` header is the API key in clear. We cannot stop it
from writing that line, so we rewrite the record before any handler sees it.

Design
------
* **One filter, installed once, never removed.** A filter on a *logger* runs in
  ``Logger.handle()`` before the record reaches any handler: the logger's own (the
  trace's ``StreamHandler``) and every ancestor's reached by propagation (root,
  pytest's ``caplog``). The filter is added to the ``websocket`` logger the first time
  a key is registered and stays: adding and removing filters while another thread
  logs through the same logger is not safe (``Filterer.filter`` iterates the list
  that ``removeFilter`` mutates), and an idle filter costs one attribute read per
  record. It never drops a record and touches no other logger, handler or level.
* **A registry of the keys in flight**, with a count per key: :func:`masking` adds a
  key for the duration of one handshake (the only time websocket-client sees it; after
  the handshake the socket is read and written by our transport, not by
  websocket-client) and takes it away after, so the process does not hold on to keys
  it no longer uses, and concurrent handshakes with one key or different keys
  compose. The filter reads an immutable tuple of compiled patterns that is replaced
  under a lock whenever the registry changes, so logging threads never take the lock.
  In a child process after ``fork()`` the lock is new and the registry empty: the
  parent's threads that held them do not exist there.
* **Masking** replaces the key by :func:`mask_key`'s form (``***`` and at most the
  last four characters). A key of 8 characters or more is replaced wherever it
  occurs; a shorter one (a test key) only as a whole token, so it cannot garble the
  words that happen to contain it. A record whose message contains a key is frozen:
  its formatted text replaces ``msg`` and ``args`` become empty.

Use::

    with masking(api_key):
        ws = websocket.create_connection(url, header=[f"Authorization: Bearer {api_key}"])
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from typing import Dict, Iterator, Optional, Pattern, Tuple

from ._config import mask_key

__all__ = ["KeyRedactingFilter", "masking", "WEBSOCKET_LOGGER"]

#: The logger websocket-client writes everything to, its trace included.
WEBSOCKET_LOGGER = "websocket"

#: Keys shorter than this are masked as whole tokens only.
_WHOLE_TOKEN_BELOW = 8

_Rule = Tuple[Pattern[str], str]


def _rule(key: str) -> _Rule:
    escaped = re.escape(key)
    if len(key) < _WHOLE_TOKEN_BELOW:
        escaped = r"(?<![A-Za-z0-9_\-])" + escaped + r"(?![A-Za-z0-9_\-])"
    return re.compile(escaped), mask_key(key)


class KeyRedactingFilter(logging.Filter):
    """Masks registered keys in every record of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = {}
        # Longest first, so a key that contains another is masked whole.
        self._rules: Tuple[_Rule, ...] = ()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._rebuild()

    def discard(self, key: str) -> None:
        with self._lock:
            count = self._counts.get(key, 0) - 1
            if count > 0:
                self._counts[key] = count
            else:
                self._counts.pop(key, None)
            self._rebuild()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._counts = {}
        self._rules = ()

    def _rebuild(self) -> None:
        # Called with self._lock held; the tuple is swapped in one assignment.
        keys = sorted(self._counts, key=len, reverse=True)
        self._rules = tuple(_rule(key) for key in keys)

    @property
    def active(self) -> int:
        """How many distinct keys are registered right now."""
        return len(self._rules)

    def filter(self, record: logging.LogRecord) -> bool:
        rules = self._rules  # one read: a consistent snapshot without the lock
        if not rules:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report
            message = str(record.msg)
        masked = message
        for pattern, mask in rules:
            masked = pattern.sub(mask, masked)
        if masked != message:
            record.msg = masked
            record.args = ()
        return True


_install_lock = threading.Lock()
_filter: Optional[KeyRedactingFilter] = None


def _installed() -> KeyRedactingFilter:
    """The process's one filter, attached to the ``websocket`` logger on first use."""
    global _filter
    current = _filter
    if current is not None:
        return current
    with _install_lock:
        if _filter is None:
            created = KeyRedactingFilter()
            logging.getLogger(WEBSOCKET_LOGGER).addFilter(created)
            _filter = created
        return _filter


def _after_fork_in_child() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    if _filter is not None:
        _filter._forget_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def masking(key: Optional[str]) -> Iterator[None]:
    """Mask ``key`` in websocket-client's log records while the block runs.

    Thread-safe and reentrant: concurrent blocks with the same or different keys each
    keep their key masked until they end. An empty key does nothing.
    """
    if not key:
        yield
        return
    active = _installed()
    active.add(key)
    try:
        yield
    finally:
        active.discard(key)
