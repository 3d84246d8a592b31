"""A session's settings, checked once when the ``Session`` is built.

Bad values raise here, on the caller's thread, before anything is dialled: a
``TypeError`` (:class:`ArgumentTypeError`) for a wrong type, a ``ValueError``
(:class:`InvalidArgumentError`) for a value out of range. The API key is not kept
here: it stays in a private attribute of the session, out of every repr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

from ._callbacks import CallbackErrorHook
from ._recovery import ReconnectHook, ReconnectPolicy
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["SessionOptions", "check_str", "check_positive"]


@dataclass(frozen=True)
class SessionOptions:
    """What a session was built with (see :class:`~vectorshift_sync.Session`).

    ``policy`` is the reconnect policy, ``None`` when the session never reconnects.
    """

    owner_type: str
    owner_id: str
    connect_timeout: float
    request_timeout: float
    write_timeout: float
    close_timeout: float
    ping_interval: float
    idle_timeout: float
    backlog: int
    max_message_size: Optional[int]
    sslopt: Optional[Dict[str, Any]]
    proxy: Optional[Dict[str, Any]]
    on_callback_error: Optional[CallbackErrorHook]
    policy: Optional[ReconnectPolicy]
    on_reconnect: Optional[ReconnectHook]

    @classmethod
    def checked(
        cls,
        *,
        owner_type: str,
        owner_id: str,
        connect_timeout: float,
        request_timeout: float,
        write_timeout: float,
        close_timeout: float,
        ping_interval: float,
        idle_timeout: float,
        backlog: int,
        max_message_size: Optional[int],
        sslopt: Optional[Mapping[str, Any]],
        proxy: Optional[Mapping[str, Any]],
        on_callback_error: Optional[CallbackErrorHook],
        reconnect: Union[bool, ReconnectPolicy],
        on_reconnect: Optional[ReconnectHook],
    ) -> SessionOptions:
        """Check every value and normalise it (seconds as floats, copies of the
        mappings, ``reconnect=True`` as the default policy)."""
        check_str("owner_type", owner_type)
        check_str("owner_id", owner_id, optional=True)
        timeouts = {
            "connect_timeout": connect_timeout,
            "request_timeout": request_timeout,
            "write_timeout": write_timeout,
            "close_timeout": close_timeout,
            "ping_interval": ping_interval,
            "idle_timeout": idle_timeout,
        }
        for name, value in timeouts.items():
            check_positive(name, value)
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise InvalidArgumentError(f"backlog must be a positive int, got {backlog!r}")
        if on_callback_error is not None and not callable(on_callback_error):
            raise ArgumentTypeError("on_callback_error must be callable")
        if on_reconnect is not None and not callable(on_reconnect):
            raise ArgumentTypeError("on_reconnect must be callable")
        if not isinstance(reconnect, (bool, ReconnectPolicy)):
            raise ArgumentTypeError("reconnect must be True, False or a ReconnectPolicy")
        policy = ReconnectPolicy() if reconnect is True else (reconnect or None)
        return cls(
            owner_type=owner_type,
            owner_id=owner_id or "",
            connect_timeout=float(connect_timeout),
            request_timeout=float(request_timeout),
            write_timeout=float(write_timeout),
            close_timeout=float(close_timeout),
            ping_interval=float(ping_interval),
            idle_timeout=float(idle_timeout),
            backlog=backlog,
            max_message_size=max_message_size,
            sslopt=dict(sslopt) if sslopt else None,
            proxy=dict(proxy) if proxy else None,
            on_callback_error=on_callback_error,
            policy=policy,
            on_reconnect=on_reconnect,
        )


def check_str(name: str, value: Any, *, optional: bool = False) -> None:
    """Raise :class:`ArgumentTypeError` unless ``value`` is a str (or ``None`` when
    ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")


def check_positive(name: str, value: Any) -> None:
    """Raise unless ``value`` is a positive number of seconds (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number of seconds, not {value!r}")
    if not value > 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")
