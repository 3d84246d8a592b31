"""A session's settings are checked when the Session is built, before any dialling."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from vectorshift_sync import ArgumentTypeError, InvalidArgumentError
from vectorshift_sync.session import ReconnectPolicy, Session


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"owner_type": 1}, ArgumentTypeError, "owner_type must be a str"),
        ({"owner_id": 5}, ArgumentTypeError, "owner_id must be a str"),
        ({"session_id": b"id"}, ArgumentTypeError, "session_id must be a str"),
        ({"api_key": 123}, ArgumentTypeError, "api_key must be a str"),
        ({"connect_timeout": "5"}, ArgumentTypeError, "connect_timeout must be a number"),
        ({"request_timeout": True}, ArgumentTypeError, "request_timeout must be a number"),
        ({"write_timeout": 0}, InvalidArgumentError, "write_timeout must be positive"),
        ({"close_timeout": -1.0}, InvalidArgumentError, "close_timeout must be positive"),
        ({"ping_interval": float("nan")}, InvalidArgumentError, "ping_interval must be positive"),
        ({"idle_timeout": None}, ArgumentTypeError, "idle_timeout must be a number"),
        ({"backlog": 0}, InvalidArgumentError, "backlog must be a positive int"),
        ({"backlog": True}, InvalidArgumentError, "backlog must be a positive int"),
        ({"on_callback_error": "log"}, ArgumentTypeError, "on_callback_error must be callable"),
        ({"on_reconnect": 3}, ArgumentTypeError, "on_reconnect must be callable"),
        ({"reconnect": "yes"}, ArgumentTypeError, "reconnect must be True, False or a"),
    ],
)
def test_a_bad_setting_raises_naming_it(kwargs: Dict[str, Any], error: type, words: str) -> None:
    args: Dict[str, Any] = {"owner_type": "agent", "owner_id": "a1", **kwargs}
    with pytest.raises(error, match=words):
        Session(**args)


def test_settings_are_normalised_and_copied() -> None:
    sslopt = {"ca_certs": "/tmp/ca.pem"}
    session = Session(owner_type="agent", owner_id="a1", connect_timeout=2, sslopt=sslopt)
    options = session._options
    assert options.connect_timeout == 2.0 and isinstance(options.connect_timeout, float)
    assert options.policy == ReconnectPolicy()  # reconnect=True: the default policy
    sslopt["ca_certs"] = "changed"
    assert options.sslopt == {"ca_certs": "/tmp/ca.pem"}  # the caller's dict is not kept
    assert Session(owner_type="agent", owner_id="a1", reconnect=False)._options.policy is None
    mine = ReconnectPolicy(max_attempts=2)
    assert Session(owner_type="agent", owner_id="a1", reconnect=mine)._options.policy is mine
    with pytest.raises(Exception, match="frozen|cannot assign"):
        options.connect_timeout = 1.0  # type: ignore[misc]
