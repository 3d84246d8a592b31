"""Request/reply matching: a call blocked on the engine's answer to one request.

The protocol's replies carry no request id, so one request is outstanding at a time:
the acknowledgement of ``create_session``/``connect_session`` while connecting, or
one ``get_messages()``. The waiter is registered before the request is sent, so the
reply cannot race it; the I/O thread hands the reply over; a lost connection wakes
the waiter with nothing. The caller waits on its own queue, in slices (Ctrl-C).
"""

from __future__ import annotations

import queue
from typing import Callable, Optional

from . import _protocol as proto
from ._deadline import Deadline
from .errors import SessionDisconnectedError, SessionTimeoutError

__all__ = ["Waiter", "ReplyDesk"]


class Waiter:
    """A call blocked on the reply to one request of ``kind``."""

    __slots__ = ("kind", "replies", "accept_untyped")

    def __init__(self, kind: str, *, accept_untyped: bool) -> None:
        self.kind = kind
        self.replies: "queue.Queue[Optional[proto.Reply]]" = queue.Queue()
        self.accept_untyped = accept_untyped

    def accepts(self, reply: proto.Reply) -> bool:
        if reply.request_type is None:
            return self.accept_untyped
        return reply.request_type == self.kind

    def wait(self, deadline: Deadline, what: str, lost: Callable[[], str]) -> proto.Reply:
        """Block until the reply (any thread but the I/O thread).

        Raises :class:`SessionTimeoutError` past ``deadline`` and
        :class:`SessionDisconnectedError` (with ``lost()`` as the reason) when the
        connection ends first.
        """
        while True:
            if deadline.expired:
                raise SessionTimeoutError(f"timed out waiting for {what}")
            try:
                reply = self.replies.get(timeout=deadline.slice())
            except queue.Empty:
                continue
            if reply is None:
                reason = lost()
                raise SessionDisconnectedError(
                    f"the connection closed while waiting for {what}"
                    + (f" ({reason})" if reason else "")
                )
            return reply


class ReplyDesk:
    """Where the I/O thread leaves replies. Methods ``*_locked`` need the session's lock."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: Optional[Waiter] = None

    def expect_locked(self, kind: str, *, accept_untyped: bool) -> Waiter:
        waiter = Waiter(kind, accept_untyped=accept_untyped)
        self.waiter = waiter
        return waiter

    def forget_locked(self, waiter: Waiter) -> None:
        if self.waiter is waiter:
            self.waiter = None

    def deliver_locked(self, reply: proto.Reply) -> bool:
        """Hand ``reply`` to the waiting call if it is the one waited for."""
        waiter = self.waiter
        if waiter is None or not waiter.accepts(reply):
            return False
        self.waiter = None
        waiter.replies.put(reply)
        return True

    def fail_locked(self) -> None:
        """The connection ended: wake the waiting call, if any, with nothing."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.replies.put(None)
