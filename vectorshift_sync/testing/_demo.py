"""The demo behaviour: a turn worth watching, used when an agent has no script.

Per turn: thinking, a visible ``word_count`` tool call and its result, and a streamed
answer that quotes the user. When the message contains the word "approve", the agent
also asks to run ``send_email`` and waits for the user's decision.
"""

from __future__ import annotations

import re
from typing import Any, Dict

from ._frames import new_id
from ._turns import TurnContext

__all__ = ["demo_turn"]

_APPROVE = re.compile(r"\bapprove\b", re.IGNORECASE)
_QUOTE_LIMIT = 200
_EMAIL_TO = "team@example.com"


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _send_email(ctx: TurnContext, text: str) -> str:
    """The approval-gated tool; returns the sentence the answer gets about it."""
    arguments: Dict[str, Any] = {
        "to": _EMAIL_TO,
        "subject": "A message from the VectorShift demo",
        "body": text,
    }
    answer = ctx.approval("send_email", arguments=arguments)
    if "confirm" in answer:
        fields = answer["confirm"] if isinstance(answer["confirm"], dict) else {}
        tool_id = ctx.tool_call("send_email", arguments={**arguments, **fields})
        receipt = {"status": "sent", "email_id": new_id()}
        ctx.tool_result("send_email", receipt, tool_id=tool_id)
        return (
            f"You approved send_email, so I sent your message to {_EMAIL_TO} "
            f"(receipt {receipt['email_id']})."
        )
    reason = answer.get("deny") or "no reason given"
    return f'You denied send_email, so nothing was sent. Your reason: "{reason}".'


def demo_turn(ctx: TurnContext) -> None:
    """Think, count words with a tool, maybe ask for approval, stream the answer."""
    text = ctx.text.strip()
    words = len(text.split())
    ctx.thinking(
        f"The user wrote {_plural(words, 'word')}. I will count them with the word_count "
        "tool and answer with what I found.",
        summary="Counting words, then answering",
    )
    tool_id = ctx.tool_call("word_count", arguments={"text": text})
    ctx.tool_result("word_count", {"words": words, "characters": len(text)}, tool_id=tool_id)

    parts = [
        f'You said: "{_quote(text)}".' if text else "You sent no text.",
        f"That is {_plural(words, 'word')} and {_plural(len(text), 'character')}, "
        "as counted by the word_count tool.",
    ]
    if ctx.files:
        listed = ", ".join(f"{f.name} ({f.mime_type}, {len(f.data)} bytes)" for f in ctx.files)
        parts.append(f"You attached {listed}.")
    if _APPROVE.search(text):
        parts.append(_send_email(ctx, text))
    else:
        parts.append('Include the word "approve" to see a tool that needs your approval.')
    user_messages = sum(1 for item in ctx.history if "user_id" in (item.get("sender") or {}))
    who = "Demo Agent" if ctx.owner_type == "agent" else "Demo Chatbot"
    parts.append(
        f"This is message {user_messages} of this session; I am {ctx.owner_name or who}, "
        "running on the local VectorShift engine."
    )
    ctx.stream(" ".join(parts), chunk=8)
