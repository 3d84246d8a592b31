"""``vectorshift-sync chat``: talk to an Agent or Chatbot from the terminal.

``python -m vectorshift_sync chat`` (or the ``vectorshift-sync`` console script) picks
an agent by name (default ``"Demo Agent"``), a chatbot, or an existing session, then
reads one turn per line: typed at a prompt, piped on stdin, or given with
``--message``. The reply streams token by token; thinking, tool calls, tool results
and search results are shown as dim ``[kind] ...`` lines; an approval request asks
``Approve tool(args)? [y/N]`` and, on no, for an optional reason.

With no API key anywhere, an embedded local engine is started in this process and the
library is pointed at it, so the command works without a VectorShift account.

This is the only module of the package that prints. Everything runs on the main
thread: the session's reader thread only queues events (or the main thread reads
them itself while it waits), and this module takes them from ``Session.stream()``,
so Ctrl-C (a ``KeyboardInterrupt`` in the main thread)
reaches it wherever it waits, including mid-stream; it disconnects and exits 130.

Streams: the conversation (reply, side lines, prompts, /history) goes to stdout;
status lines (engine, session ids) and errors go to stderr, an error as one line with
no traceback. Colour only on a terminal, never with ``NO_COLOR``. Leaving always
disconnects, never terminates, so a session can be resumed with ``--session``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    Tuple,
    Union,
)

from . import __version__
from ._config import resolve_api_key
from .agent import Agent
from .chatbot import Chatbot
from .errors import SessionTimeoutError, VectorshiftApiError, VectorshiftError
from .events import ParticipantStatus, SessionEvent, SessionEventType, SessionMessage
from .session import Session

__all__ = ["main"]

logger = logging.getLogger(__name__)

E = SessionEventType

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

DEFAULT_AGENT = "Demo Agent"
DEMO_CHATBOT = "Demo Chatbot"
DEFAULT_TURN_TIMEOUT = 300.0
DEMO_STREAM_DELAY = 0.03

_ENV_NAMES = ("VECTORSHIFT_API_KEY", "VECTORSHIFT_BASE_URL", "VECTORSHIFT_WS_URL")
_YES = frozenset({"y", "yes"})
_ARG_LIMIT = 60  # characters of one argument shown in a tool call line
_LINE_LIMIT = 240  # characters of a tool result shown
_SEARCH_LIMIT = 5  # search results listed


class _CliError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


# --- output -------------------------------------------------------------------


def _wants_colour(stream: IO[str], choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):  # https://no-color.org
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class _Style:
    """ANSI styling, or none at all."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled and text else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)


class _Console:
    """Where everything the command shows goes: the conversation on stdout,
    status and errors on stderr. Remembers whether a stdout line is still open
    (a reply mid-stream) so that a side line never lands inside the reply."""

    def __init__(self, out: TextIO, err: TextIO, colour: str) -> None:
        self.out = out
        self.err = err
        self.style = _Style(_wants_colour(out, colour))
        self.err_style = _Style(_wants_colour(err, colour))
        self._open = False

    def write(self, text: str) -> None:
        """Stream part of a reply."""
        if text:
            self.out.write(text)
            self.out.flush()
            self._open = not text.endswith("\n")

    def end_line(self) -> None:
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False

    def line(self, text: str = "") -> None:
        self.end_line()
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, kind: str, text: str, *, error: bool = False) -> None:
        """A side line of a turn: ``[kind] text``, dim (red for errors)."""
        body = f"[{kind}] {text}" if text else f"[{kind}]"
        self.line(self.style.red(body) if error else self.style.dim(body))

    def prompt(self, text: str) -> None:
        self.end_line()
        self.out.write(text)
        self.out.flush()

    def info(self, text: str) -> None:
        self.end_line()
        self.err.write(self.err_style.dim(text) + "\n")
        self.err.flush()

    def error(self, text: str) -> None:
        self.end_line()
        self.err.write(self.err_style.red(f"error: {text}") + "\n")
        self.err.flush()


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _describe(exc: BaseException) -> str:
    """One line for an exception, built from its attributes where it has them."""
    if isinstance(exc, VectorshiftApiError):
        lines = str(exc).splitlines()
        text = lines[0] if lines else f"VectorShift API error ({exc.status_code})"
        if exc.error_message:
            text += f": {exc.error_message}"
        hint = getattr(exc, "_hint", None)
        if isinstance(hint, str) and hint:
            text += f"; {hint}"
        return _one_line(text)
    return _one_line(str(exc)) or type(exc).__name__


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = _one_line(text) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_text(name: str, arguments: Any) -> str:
    """``tool(a='x', b=2)`` with every argument cut to a readable length."""
    if isinstance(arguments, Mapping):
        shown = []
        for key, value in arguments.items():
            text = (
                repr(_short(value, _ARG_LIMIT))
                if isinstance(value, str)
                else _short(value, _ARG_LIMIT)
            )
            shown.append(f"{key}={text}")
        return f"{name}({', '.join(shown)})"
    if arguments is None:
        return f"{name}()"
    return f"{name}({_short(arguments, _ARG_LIMIT)})"


# --- input --------------------------------------------------------------------


class _Input:
    """Turns and answers, from ``--message`` values, a terminal, or piped stdin.

    ``next_turn()`` returns None when there is nothing more (EOF, or the last
    ``--message``). ``answer()`` reads one line for a question; None at EOF.
    """

    def __init__(self, console: _Console, stdin: TextIO, messages: Optional[List[str]]) -> None:
        self._console = console
        self._stdin = stdin
        self._messages: Optional[Iterator[str]] = iter(messages) if messages else None
        isatty = getattr(stdin, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.interactive = self._messages is None and self.terminal
        self._eof = False
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:  # pragma: no cover - Windows
                pass

    @property
    def exhausted(self) -> bool:
        return self._eof

    @property
    def reads_commands(self) -> bool:
        """True when turns come from stdin (where /history etc. work), not --message."""
        return self._messages is None

    def next_turn(self) -> Optional[str]:
        if self._messages is not None:
            return next(self._messages, None)
        # No colour in the prompt: escape codes there confuse readline's cursor maths.
        return self._read("> " if self.interactive else None)

    def answer(self, question: str) -> Optional[str]:
        return self._read(question, echo=not self.terminal)

    def _read(self, prompt: Optional[str], *, echo: bool = False) -> Optional[str]:
        if self._eof:
            return None
        if self.terminal:
            try:
                # input() handles line editing; its prompt goes to stdout.
                self._console.end_line()
                return input(prompt or "")
            except EOFError:
                self._eof = True
                self._console.line()
                return None
        if prompt:
            self._console.prompt(prompt)
        line = self._stdin.readline()
        if not line:
            self._eof = True
            if prompt:
                self._console.line()
            return None
        line = line.rstrip("\r\n")
        if prompt and echo:
            self._console.line(line)  # a readable transcript when stdin is piped
        return line


# --- what we talk to ----------------------------------------------------------


class _Target:
    """The agent or chatbot of the chat, and how to open sessions with it."""

    def __init__(
        self,
        kind: str,
        name: Optional[str],
        resource: Union[Agent, Chatbot, None],
        owner_id: Optional[str] = None,
    ) -> None:
        self.kind = kind  # "agent" or "chatbot"
        self.name = name
        self.resource = resource  # Agent, Chatbot, or None (a bare --session)
        self.owner_id = owner_id

    @property
    def label(self) -> str:
        return f'{self.kind} "{self.name}"' if self.name else self.kind

    def new_session(self) -> Session:
        if self.resource is not None:
            return self.resource.create_session()
        if self.owner_id:
            return Session(owner_type=self.kind, owner_id=self.owner_id)
        raise _CliError(
            "cannot start a new session: this chat resumed a session without naming its "
            f"{self.kind}; pass --{self.kind} NAME together with --session"
        )

    def resume(self, session_id: str) -> Session:
        if self.resource is not None:
            return self.resource.resume_session(session_id)
        return Session(session_id=session_id)


def _fetch_target(args: argparse.Namespace) -> _Target:
    if args.chatbot is not None:
        kind, name = "chatbot", args.chatbot
    elif args.agent is not None or args.session is None:
        kind, name = "agent", args.agent if args.agent is not None else DEFAULT_AGENT
    else:
        return _Target("chatbot" if args.chatbot_session else "agent", None, None)
    try:
        resource: Union[Agent, Chatbot]
        if kind == "chatbot":
            resource = Chatbot.fetch(name=name, username=args.username, org_name=args.org_name)
        else:
            resource = Agent.fetch(name=name, username=args.username, org_name=args.org_name)
    except VectorshiftError as exc:
        raise _CliError(f'could not fetch {kind} "{name}": {_describe(exc)}') from exc
    return _Target(kind, name, resource)


# --- a turn -------------------------------------------------------------------


class _TurnView:
    """Renders one turn's events; the reply streams, the rest are side lines."""

    def __init__(self, console: _Console) -> None:
        self.console = console
        self.processing = False
        self.failed = False
        self._shown: Dict[str, str] = {}  # reply text printed so far, per message id

    def show(self, event: SessionEvent) -> bool:
        """Render one event; return True when the turn cannot go on (a refused post)."""
        kind = event.type
        data = event.data
        if kind is E.MESSAGE_DELTA:
            if event.is_from_agent and isinstance(event.delta, str):
                self._reply(event.message_id or "", event.delta, delta=True)
        elif kind is E.MESSAGE_COMPLETE:
            self._complete(event)
        elif kind is E.MESSAGE_STREAMING:
            self._streaming(event)
        elif kind is E.PARTICIPANT_STATUS:
            if event.participant_status is ParticipantStatus.PROCESSING:
                self.processing = True
        elif kind is E.THINKING:
            text = data.get("content") or data.get("text") or data.get("summary")
            self.console.note("thinking", str(text).strip() if text else "")
        elif kind is E.TOOL_CALL:
            self.console.note("tool", _call_text(_name(data), data.get("arguments")))
        elif kind is E.TOOL_RESULT:
            self._tool_result(data)
        elif kind is E.SEARCH_RESULT:
            self._search(data)
        elif kind is E.ERROR:
            return self._error(event)
        else:
            logger.debug("not shown: %s event", kind.value)
        return False

    def finish(self) -> None:
        self.console.end_line()

    def _reply(self, key: str, text: str, *, delta: bool) -> None:
        shown = self._shown.get(key)
        if shown is None:
            self.console.end_line()
            shown = ""
        if delta:
            self.console.write(text)
            self._shown[key] = shown + text
        elif text.startswith(shown):
            self.console.write(text[len(shown) :])
            self._shown[key] = text

    def _complete(self, event: SessionEvent) -> None:
        text = event.text
        key = event.message_id or ""
        if text is None or not event.is_from_agent:
            return  # the echo of the user's own post
        if event.sender is None and not self.processing and key not in self._shown:
            return  # no sender given: a message before the agent started is the echo
        text = text if isinstance(text, str) else str(text)
        shown = self._shown.get(key, "")
        if shown and not text.startswith(shown):
            # Deltas were lost or differ: the complete message is authoritative.
            self.console.end_line()
            shown = ""
        if key not in self._shown:
            self.console.end_line()
        self.console.write(text[len(shown) :])
        self.console.end_line()
        self._shown[key] = text

    def _streaming(self, event: SessionEvent) -> None:
        data = event.data
        text = data.get("text")
        if not isinstance(text, str) or not event.is_from_agent:
            logger.debug("not shown: message_streaming %r", data)
        elif "status" in data:  # a partial data_type_message: the text so far
            self._reply(event.message_id or "", text, delta=False)
        else:  # an agent task
            self.console.note("task", text)

    def _tool_result(self, data: Mapping[str, Any]) -> None:
        name = _name(data)
        if "result" in data:
            self.console.note("tool result", f"{name} -> {_short(data['result'], _LINE_LIMIT)}")
        else:
            self.console.note("tool result", f"{name}: {data.get('status') or 'done'}")

    def _search(self, data: Mapping[str, Any]) -> None:
        query = data.get("query")
        results = data.get("results")
        items = results if isinstance(results, list) else []
        head = f"{_short(query, _ARG_LIMIT)!r}: " if isinstance(query, str) else ""
        self.console.note("search", f"{head}{len(items)} result{'' if len(items) == 1 else 's'}")
        for item in items[:_SEARCH_LIMIT]:
            if isinstance(item, Mapping):
                title = item.get("title") or item.get("name") or item.get("snippet") or ""
                url = item.get("url") or item.get("link") or ""
                text = " ".join(str(part) for part in (title, f"<{url}>" if url else "") if part)
            else:
                text = str(item)
            self.console.line(self.console.style.dim(f"  - {_short(text, _LINE_LIMIT)}"))
        if len(items) > _SEARCH_LIMIT:
            self.console.line(self.console.style.dim(f"  ... {len(items) - _SEARCH_LIMIT} more"))

    def _error(self, event: SessionEvent) -> bool:
        if event.data.get("error") == "connection lost":
            return False  # the stream raises SessionDisconnectedError next; reported once
        self.failed = True
        self.console.note("error", _short(event.error or "unknown error", _LINE_LIMIT), error=True)
        # A refused post (post_message failed, bad request...) starts no turn to wait for.
        return event.data.get("request_type") is not None


def _name(data: Mapping[str, Any]) -> str:
    name = data.get("tool_name")
    return name if isinstance(name, str) and name else "tool"


# --- the chat -----------------------------------------------------------------


class _Chat:
    def __init__(
        self,
        console: _Console,
        reader: _Input,
        target: _Target,
        *,
        approve: Optional[bool],
        timeout: Optional[float],
    ) -> None:
        self.console = console
        self.input = reader
        self.target = target
        self.approve = approve
        self.timeout = timeout
        self.session: Optional[Session] = None

    def open(self, resume: Optional[str]) -> None:
        session = self.target.resume(resume) if resume else self.target.new_session()
        self.session = session  # set first: an interrupted connect still gets closed
        session.connect()
        what = "resumed session" if resume else "session"
        commands = " Commands: /history, /new, /quit." if self.input.reads_commands else ""
        self.console.info(
            f"Chatting with {self.target.label} in {what} {session.session_id}.{commands}"
        )

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.disconnect()

    def new(self) -> None:
        """Start a fresh session with the same agent or chatbot."""
        if self.target.resource is None and not self.target.owner_id and self.session:
            self._learn_owner(self.session.get_messages())
        session = self.target.new_session()  # may refuse before anything is closed
        old = self.session
        old_id = old.session_id if old is not None else None
        self.close()
        self.session = session
        session.connect()
        self.console.info(
            f"New session {session.session_id} with {self.target.label}"
            + (f" (resume the previous one with --session {old_id})." if old_id else ".")
        )

    def history(self) -> None:
        session = self._session()
        messages = session.get_messages()
        if not messages:
            self.console.line(self.console.style.dim("(no messages yet)"))
        for message in messages:
            self.console.line(self._history_line(message))
        if self.target.resource is None and not self.target.owner_id:
            self._learn_owner(messages)

    def _history_line(self, message: SessionMessage) -> str:
        style = self.console.style
        if message.is_user:
            role = "user"
        elif message.is_agent:
            role = message.sender.object_type or self.target.kind
        else:
            role = "unknown"
        if message.content_type == "data_type_message":
            return f"{style.bold(role)}: {message.text or ''}"
        marker = style.dim(f"[{message.content_type or 'message'}]")
        return f"{style.bold(role)}: {marker}" + (f" {message.text}" if message.text else "")

    def _learn_owner(self, messages: Sequence[SessionMessage]) -> None:
        # A bare --session: the agent's own messages name it, which lets /new work.
        for message in messages:
            sender = message.sender
            if message.is_agent and sender.object_id:
                if sender.object_type in ("agent", "chatbot"):
                    self.target.kind = sender.object_type
                self.target.owner_id = sender.object_id
                return

    def turn(self, text: str) -> bool:
        """Send one message and show the turn; False if the turn reported an error."""
        session = self._session()
        view = _TurnView(self.console)
        events = session.stream(text, timeout=self.timeout)
        try:
            for event in events:
                if event.type is E.APPROVAL_REQUEST:
                    view.finish()
                    self._answer_approval(session, event)
                elif event.type is E.REAUTH_REQUEST:
                    # respond() answers approvals only; re-authorising happens elsewhere.
                    view.failed = True
                    what = event.data.get("integration") or event.data.get("provider")
                    self.console.note(
                        "reauth",
                        f"{self.target.label} needs you to re-authorise "
                        f"{_short(what, _ARG_LIMIT) if what else 'an integration'}; do that "
                        "in VectorShift, then send your message again",
                        error=True,
                    )
                    break
                elif view.show(event):
                    break
        finally:
            close = getattr(events, "close", None)
            if callable(close):
                close()  # unsubscribes even when Ctrl-C or an error ended the loop
            view.finish()
        return not view.failed

    def _answer_approval(self, session: Session, event: SessionEvent) -> None:
        call = _call_text(_name(event.data), event.data.get("arguments"))
        reason: Optional[str] = None
        if self.approve is not None:
            approved = self.approve
            verdict = "approved (--yes)" if approved else "denied (--no)"
            self.console.note("approval", f"{call}: {verdict}")
        else:
            answer = self.input.answer(f"Approve {call}? [y/N] ")
            approved = answer is not None and answer.strip().lower() in _YES
            if not approved and answer is not None:
                given = self.input.answer("Reason (optional): ")
                reason = given.strip() if given and given.strip() else None
            if answer is None:
                self.console.note("approval", f"{call}: denied (no answer before end of input)")
        session.respond(event, approved=approved, deny_reason=reason)

    def _session(self) -> Session:
        if self.session is None:
            raise _CliError("no session is open")
        return self.session


_HELP = """\
/history  show this session's messages
/new      start a new session with the same {kind}
/quit     leave (end of input and Ctrl-D too); the session stays resumable
//text    send a message that starts with /"""


def _repl(chat: _Chat, reader: _Input) -> int:
    """Read turns and commands until /quit or the end of input.

    A step that fails without ending the session (a turn that reports an error or
    times out, a refused /new) is reported in one line; at a terminal the chat goes
    on, otherwise it stops with exit status 1. Anything worse propagates.
    """
    failed = False
    first = True
    while not reader.exhausted:
        line = reader.next_turn()
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        command = text.split()[0].lower() if text.startswith("/") else ""
        if command.startswith("//"):
            command, text = "", text[1:]
        if command in ("/quit", "/exit"):
            break
        if not first and not reader.interactive:
            chat.console.line()  # a blank line between the steps of a transcript
        first = False
        ok = True
        try:
            if command == "/history":
                chat.history()
            elif command == "/new":
                chat.new()
            elif command == "/help":
                chat.console.line(chat.console.style.dim(_HELP.format(kind=chat.target.kind)))
            elif command:
                chat.console.error(f"unknown command {command}; try /history, /new, /quit")
            else:
                ok = chat.turn(text)
        except (_CliError, SessionTimeoutError) as exc:
            chat.console.error(str(exc) if isinstance(exc, _CliError) else _describe(exc))
            ok = False
        if not ok:
            failed = True
            if not reader.interactive:
                break  # a script must not carry on after a failed step
    return EXIT_ERROR if failed and not reader.interactive else EXIT_OK


# --- the embedded engine ----------------------------------------------------------


class _Embedded:
    """The local engine, run in this process when no API key is configured."""

    def __init__(self, stream_delay: float) -> None:
        from .testing import LocalEngine  # only loaded when needed

        self.engine = LocalEngine(stream_delay=stream_delay)
        self._saved: Dict[str, Optional[str]] = {}

    def start(self) -> str:
        self.engine.start()
        for name in _ENV_NAMES:
            self._saved[name] = os.environ.get(name)
        os.environ.update(self.engine.env)
        return str(self.engine.base_url)

    def stop(self) -> None:
        try:
            self.engine.stop()
        finally:
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# --- entry point ------------------------------------------------------------------


def _parser() -> Tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``chat`` sub-parser."""
    parser = argparse.ArgumentParser(
        prog="vectorshift-sync",
        description="Talk to VectorShift conversational Agents and Chatbots.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = commands.add_parser(
        "chat",
        help="chat with an agent or chatbot",
        description=(
            f'Chat with a conversational agent (default: "{DEFAULT_AGENT}"), a chatbot, '
            "or an existing session. Each line of input is one message; /history, /new "
            "and /quit are commands. With no API key (VECTORSHIFT_API_KEY), an embedded "
            "local engine with a demo agent and chatbot is used."
        ),
        epilog=(
            "Approvals: without --yes/--no, the question is answered on the terminal "
            "or, when input is piped, by the next line (y or n), followed after n by a "
            "line with the reason (may be empty). Leaving (end of input, /quit, Ctrl-C) "
            "disconnects: the session stays resumable with --session ID. Exit status: "
            "0 done, 1 error (or a failed turn when not on a terminal), 2 usage, "
            "130 Ctrl-C."
        ),
    )
    who = chat.add_mutually_exclusive_group()
    who.add_argument("--agent", metavar="NAME", help=f'agent to chat with ("{DEFAULT_AGENT}")')
    who.add_argument("--chatbot", metavar="NAME", help="chatbot to chat with")
    chat.add_argument(
        "--session",
        metavar="ID",
        help="resume this session (with --agent/--chatbot: one of theirs, which /new reuses)",
    )
    chat.add_argument(
        "--chatbot-session",
        action="store_true",
        help="with a bare --session: the session is a chatbot's, not an agent's",
    )
    chat.add_argument("--username", help="the user the agent or chatbot NAME belongs to")
    chat.add_argument("--org-name", help="the organisation the agent or chatbot NAME belongs to")
    chat.add_argument(
        "-m",
        "--message",
        action="append",
        metavar="TEXT",
        help="send this message as a turn, then exit (repeatable; sent in order)",
    )
    answers = chat.add_mutually_exclusive_group()
    answers.add_argument(
        "--yes", dest="approve", action="store_const", const=True, help="approve every tool call"
    )
    answers.add_argument(
        "--no", dest="approve", action="store_const", const=False, help="deny every tool call"
    )
    chat.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TURN_TIMEOUT,
        metavar="SECONDS",
        help=f"longest wait for one turn, approvals included ({DEFAULT_TURN_TIMEOUT:g}; "
        "0: no limit)",
    )
    chat.add_argument(
        "--local",
        action="store_true",
        help="use the embedded local engine even if an API key is set",
    )
    chat.add_argument(
        "--stream-delay",
        type=float,
        default=DEMO_STREAM_DELAY,
        metavar="SECONDS",
        help=f"embedded engine only: pause between streamed chunks ({DEMO_STREAM_DELAY:g})",
    )
    chat.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour: auto (default) uses it on a terminal unless NO_COLOR is set",
    )
    chat.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    return parser, chat


def _parse(argv: Optional[Sequence[str]]) -> Tuple[Optional[argparse.Namespace], int]:
    """Parse the command line; on --help, --version or a usage error, the exit code."""
    parser, chat = _parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        if args.command is None:
            parser.print_usage(sys.stderr)
            parser.exit(EXIT_USAGE, f"{parser.prog}: error: a command is needed: chat\n")
        if args.chatbot_session and (args.session is None or args.agent or args.chatbot):
            chat.error("--chatbot-session goes with --session ID and no --agent/--chatbot")
        if args.timeout < 0:
            chat.error("--timeout must be 0 (no limit) or more")
        if args.stream_delay < 0:
            chat.error("--stream-delay must be 0 or more")
    except SystemExit as exit_:  # argparse has printed what it had to say
        code = exit_.code
        return None, code if isinstance(code, int) else EXIT_USAGE
    return args, EXIT_OK


class _Logging:
    """--verbose: every record to stderr. Otherwise nothing at all, not even what
    Python's last-resort handler would print for libraries without a handler.
    Undone when the command ends, for callers of main() in their own process."""

    def __init__(self, verbose: bool) -> None:
        self.root = logging.getLogger()
        self.level = self.root.level
        self.handler: logging.Handler
        if verbose:
            self.handler = logging.StreamHandler(sys.stderr)
            self.handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            self.root.setLevel(logging.DEBUG)
        else:
            self.handler = logging.NullHandler()
        self.root.addHandler(self.handler)

    def restore(self) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)


def _run_chat(args: argparse.Namespace, console: _Console, stdin: TextIO) -> int:
    embedded: Optional[_Embedded] = None
    chat: Optional[_Chat] = None
    try:
        if args.local or not resolve_api_key(None):
            embedded = _Embedded(args.stream_delay)
            url = embedded.start()
            reason = "--local given" if args.local else "No VECTORSHIFT_API_KEY set"
            console.info(
                f"{reason}: using the embedded local engine at {url} "
                f'(demo agent "{DEFAULT_AGENT}", demo chatbot "{DEMO_CHATBOT}").'
            )
        target = _fetch_target(args)
        reader = _Input(console, stdin, args.message)
        chat = _Chat(
            console,
            reader,
            target,
            approve=args.approve,
            timeout=args.timeout or None,
        )
        chat.open(args.session)
        return _repl(chat, reader)
    finally:
        _cleanup(chat, embedded)


def _cleanup(chat: Optional[_Chat], embedded: Optional[_Embedded]) -> None:
    """Disconnect and stop the engine; a second Ctrl-C cannot cut this short.

    Both steps are bounded (a few close timeouts each), so ignoring SIGINT while
    they run costs at most a couple of seconds and never leaves a thread behind.
    """
    previous: Any = None
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        if chat is not None:
            try:
                chat.close()
            except VectorshiftError as exc:
                logger.debug("disconnect failed: %s", exc)
        if embedded is not None:
            embedded.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status (never raises, never exits).

    0: done; 1: an error (one line on stderr) or, without a terminal, a failed
    turn; 2: a usage error; 130: interrupted with Ctrl-C.
    """
    args, code = _parse(argv)
    if args is None:
        return code
    logs = _Logging(args.verbose)
    out, err = sys.stdout, sys.stderr
    for stream in (out, err):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(errors="replace")  # a reply never dies on an unencodable character
    console = _Console(out, err, args.color)
    try:
        return _run_chat(args, console, sys.stdin)
    except KeyboardInterrupt:
        _quiet(console.end_line)
        return EXIT_INTERRUPTED
    except _CliError as exc:
        message = str(exc)
    except VectorshiftError as exc:
        message = _describe(exc)
    except BrokenPipeError:
        # stdout went away (`| head`): stop quietly, and keep Python's final flush
        # from failing again at exit.
        _quiet(lambda: os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()))
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line, the traceback only with --verbose
        logger.debug("unexpected failure", exc_info=True)
        message = f"unexpected {type(exc).__name__}: {_describe(exc)}"
        if not args.verbose:
            message += " (run with --verbose for the traceback)"
    finally:
        logs.restore()
    _quiet(lambda: console.error(message))
    return EXIT_ERROR


def _quiet(action: Callable[[], object]) -> None:
    """Run a last bit of output that may fail because the stream is gone."""
    try:
        action()
    except (OSError, ValueError):
        pass
