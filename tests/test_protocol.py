"""The pure protocol module: command in, exact frame text out; frame text in, event out.

Every outbound frame is compared byte for byte with what PROTOCOL.md §3 says the official
SDK sends (``json.dumps`` defaults: ``", "``/``": "`` separators, non-ASCII escaped, keys
in the documented order). Every inbound row of §4.2/§4.3 is fed in and its event and/or
private reply checked field by field. No sockets, no threads, no clocks.
"""

from __future__ import annotations

import io
import json
import os
import types
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from conftest import INBOUND_FRAME_TYPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectorshift_sync._protocol import (
    DEFAULT_DENY_REASON,
    OVERFLOW_ERROR,
    FrameError,
    Parsed,
    Reply,
    UnknownFrameError,
    UserSessionMessage,
    encode_approval,
    encode_connect_session,
    encode_content,
    encode_create_session,
    encode_disconnect,
    encode_get_messages,
    encode_ping,
    encode_post_message,
    encode_post_messages,
    encode_send,
    encode_send_many,
    encode_terminate,
    parse_frame,
    read_frame,
)
from vectorshift_sync.errors import ArgumentTypeError, InvalidArgumentError, VectorshiftError
from vectorshift_sync.events import (
    MessageSender,
    SessionEvent,
    SessionEventType,
    SessionMessage,
    SessionMessageRole,
    SessionMessageStatus,
)

SID = "69de3cbd9b196c7bf0a75f20"
OWN = "own_session"  # the Session's own id, passed to parse_frame as the fallback

PNG = b"PNGDATA"  # base64: UE5HREFUQQ==
PDF = b"%PDF-1.4"  # base64: JVBERi0xLjQ=


def _file(b64: str, name: str, mime: str) -> Dict[str, Any]:
    return {
        "type_string": "file",
        "value": {"raw_bytes": b64, "metadata": {"name": name, "mime_type": mime}},
    }


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    path = tmp_path / "chart.png"
    path.write_bytes(PNG)
    return path


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(PDF)
    return path


def _parse(frame: Any, session_id: str = OWN) -> Parsed:
    text = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
    return parse_frame(text, session_id)


def _event(frame: Any, session_id: str = OWN) -> SessionEvent:
    parsed = _parse(frame, session_id)
    assert parsed.event is not None, parsed
    return parsed.event


def _notification(content: Any, **message: Any) -> Dict[str, Any]:
    message.setdefault("id", "m1")
    message["content"] = content
    return {"type": "message_notification", "session_id": SID, "message": message}


# --- §3.2 the simple frames, byte for byte ------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            encode_create_session("agent", "ag_1"),
            '{"type": "create_session", "object_type": "agent", "object_id": "ag_1"}',
        ),
        (
            encode_create_session("chatbot", "cb_2"),
            '{"type": "create_session", "object_type": "chatbot", "object_id": "cb_2"}',
        ),
        (encode_connect_session(SID), '{"type": "connect_session", "session_id": "%s"}' % SID),
        (encode_get_messages("sess_1"), '{"type": "get_messages", "session_id": "sess_1"}'),
        (encode_ping("sess_1"), '{"type": "ping_session", "session_id": "sess_1"}'),
        (encode_disconnect("sess_1"), '{"type": "disconnect_session", "session_id": "sess_1"}'),
        (encode_terminate("sess_1"), '{"type": "terminate_session", "session_id": "sess_1"}'),
    ],
)
def test_simple_frames_byte_for_byte(text: str, expected: str) -> None:
    assert text == expected


def test_post_message_plain_string_byte_for_byte() -> None:
    assert encode_send("sess_1", "hello") == (
        '{"type": "post_message", "session_id": "sess_1", "content": "hello"}'
    )
    assert encode_post_message("sess_1", "hello") == encode_send("sess_1", "hello")


def test_non_ascii_is_escaped_like_json_dumps_defaults() -> None:
    text = encode_send("s", 'h\u00e9llo \u2603 \U0001f600 "q" \\ \n')
    assert text == (
        '{"type": "post_message", "session_id": "s", '
        '"content": "h\\u00e9llo \\u2603 \\ud83d\\ude00 \\"q\\" \\\\ \\n"}'
    )
    assert text.isascii()


def test_post_message_parent_id_comes_after_content_and_is_omitted_when_falsy() -> None:
    assert encode_post_message("s", "x", parent_message_id="msg_9") == (
        '{"type": "post_message", "session_id": "s", "content": "x", "parent_message_id": "msg_9"}'
    )
    for falsy in (None, ""):
        assert encode_post_message("s", "x", parent_message_id=falsy) == (
            '{"type": "post_message", "session_id": "s", "content": "x"}'
        )


def test_post_messages_key_order() -> None:
    assert encode_post_messages("s", ["a", {"type_string": "string", "value": "b"}]) == (
        '{"type": "post_messages", "session_id": "s", '
        '"messages": ["a", {"type_string": "string", "value": "b"}]}'
    )


# --- §3.3 content encoding ----------------------------------------------------------


def test_plain_string_is_the_bare_string() -> None:
    assert encode_content("hello") == "hello"
    assert encode_content("") == ""


def test_string_with_mime_type_is_typed() -> None:
    assert encode_content('{"a":1}', mime_type="application/json") == {
        "type_string": "application/json",
        "value": '{"a":1}',
    }
    assert encode_send("s", '{"a":1}', mime_type="application/json") == (
        '{"type": "post_message", "session_id": "s", "content": '
        '{"type_string": "application/json", "value": "{\\"a\\":1}"}}'
    )


def test_string_with_empty_mime_type_is_typed_as_string() -> None:
    assert encode_content("hi", mime_type="") == {"type_string": "string", "value": "hi"}


def test_string_ignores_filename() -> None:
    assert encode_content("hi", filename="x.txt") == "hi"


def test_path_reads_the_file_with_its_name_and_guessed_mime(chart: Path) -> None:
    assert encode_content(chart) == _file("UE5HREFUQQ==", "chart.png", "image/png")


def test_path_frame_byte_for_byte(chart: Path) -> None:
    assert encode_send("sess_1", chart) == (
        '{"type": "post_message", "session_id": "sess_1", "content": '
        '{"type_string": "file", "value": {"raw_bytes": "UE5HREFUQQ==", '
        '"metadata": {"name": "chart.png", "mime_type": "image/png"}}}}'
    )


def test_path_filename_renames_but_mime_is_guessed_from_the_path(chart: Path) -> None:
    # §3.3 rule 3: the MIME guess looks at the path, not at the filename argument.
    assert encode_content(chart, filename="renamed.csv") == _file(
        "UE5HREFUQQ==", "renamed.csv", "image/png"
    )


def test_path_mime_type_argument_wins(chart: Path) -> None:
    assert encode_content(chart, mime_type="application/x-custom") == _file(
        "UE5HREFUQQ==", "chart.png", "application/x-custom"
    )


@pytest.mark.parametrize("name", ["blob.zzqq", "noextension"])
def test_path_unknown_type_is_octet_stream(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01\x02")
    assert encode_content(path) == _file("AAEC", name, "application/octet-stream")


def test_empty_file_is_sent_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert encode_content(path) == _file("", "empty.txt", "text/plain")


def test_missing_path_raises_invalid_argument(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(InvalidArgumentError) as info:
        encode_content(missing)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, VectorshiftError)
    assert str(missing) in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_directory_path_raises_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        encode_content(tmp_path)


def test_missing_attachment_fails_the_whole_send(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        encode_send("s", "primary", files=[b"ok", tmp_path / "missing.pdf"])
    with pytest.raises(InvalidArgumentError):
        encode_send_many(
            "s", ["a", UserSessionMessage(content="c", files=[tmp_path / "missing.pdf"])]
        )


def test_bytes_default_name_and_type() -> None:
    assert encode_content(b"hello") == _file("aGVsbG8=", "file", "application/octet-stream")


def test_bytes_mime_is_guessed_from_filename() -> None:
    assert encode_content(b"hello", filename="notes.txt") == _file(
        "aGVsbG8=", "notes.txt", "text/plain"
    )


def test_bytes_mime_type_argument_wins() -> None:
    assert encode_content(b"hello", filename="notes.txt", mime_type="text/markdown") == _file(
        "aGVsbG8=", "notes.txt", "text/markdown"
    )


def test_bytearray_is_encoded_like_bytes() -> None:
    assert encode_content(bytearray(b"hello"), filename="a.json") == _file(
        "aGVsbG8=", "a.json", "application/json"
    )


def test_base64_is_standard_and_padded() -> None:
    # Standard alphabet (+ and /), not the URL-safe one, and '=' padding kept.
    assert encode_content(b"\xfb\xff")["value"]["raw_bytes"] == "+/8="
    assert encode_content(b"zz")["value"]["raw_bytes"] == "eno="


def test_bytesio_reads_from_the_current_position_and_is_not_closed() -> None:
    handle = io.BytesIO(b"abcdef")
    handle.seek(2)
    assert encode_content(handle) == _file("Y2RlZg==", "file", "application/octet-stream")
    assert handle.tell() == 6
    assert not handle.closed


def test_bytesio_filename_and_mime() -> None:
    assert encode_content(io.BytesIO(b"hello"), filename="a.txt") == _file(
        "aGVsbG8=", "a.txt", "text/plain"
    )
    assert encode_content(io.BytesIO(b"hello"), mime_type="image/png") == _file(
        "aGVsbG8=", "file", "image/png"
    )


def test_stringio_is_encoded_as_utf8() -> None:
    assert encode_content(io.StringIO("h\u00e9llo")) == _file(
        "aMOpbGxv", "file", "application/octet-stream"
    )


def test_binary_open_handle_sends_only_the_base_name(report: Path) -> None:
    # D15: the SDK sends the handle's .name, the full local path; we send the base name.
    with open(report, "rb") as handle:
        encoded = encode_content(handle)
        assert not handle.closed
    assert encoded == _file("JVBERi0xLjQ=", "report.pdf", "application/pdf")
    with open(report, "rb") as handle:
        frame = encode_send("s", "see attached", files=[handle])
    assert '"name": "report.pdf"' in frame
    assert str(report.parent).replace("\\", "\\\\") not in frame
    assert report.parent.name not in frame


def test_text_open_handle_is_utf8_with_base_name(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "notes.txt"
    path.parent.mkdir()
    path.write_text("h\u00e9llo", encoding="utf-8")
    with open(path, encoding="utf-8") as handle:
        encoded = encode_content(handle)
    assert encoded == _file("aMOpbGxv", "notes.txt", "text/plain")


def test_open_handle_filename_argument_wins(report: Path) -> None:
    with open(report, "rb") as handle:
        assert encode_content(handle, filename="x.txt") == _file(
            "JVBERi0xLjQ=", "x.txt", "text/plain"
        )


def test_file_descriptor_handle_is_named_file(report: Path) -> None:
    fd = os.open(str(report), os.O_RDONLY)
    with io.FileIO(fd, "rb") as handle:
        assert isinstance(handle.name, int)
        assert encode_content(handle) == _file("JVBERi0xLjQ=", "file", "application/octet-stream")


def test_file_like_with_a_path_name_attribute_sends_the_base_name() -> None:
    handle = io.BytesIO(b"hello")
    handle.name = os.path.join(os.sep, "home", "me", "secret", "plan.txt")  # type: ignore[attr-defined]
    assert encode_content(handle) == _file("aGVsbG8=", "plan.txt", "text/plain")


def test_empty_filename_counts_as_absent_for_every_kind_of_file(chart: Path) -> None:
    # Path and bytes already fall back on "" (``filename or ...``); a file object must
    # not be the one kind that sends a nameless file.
    assert encode_content(chart, filename="")["value"]["metadata"]["name"] == "chart.png"
    assert encode_content(b"x", filename="")["value"]["metadata"]["name"] == "file"
    assert encode_content(io.BytesIO(b"x"), filename="")["value"]["metadata"]["name"] == "file"
    with open(chart, "rb") as handle:
        assert encode_content(handle, filename="")["value"]["metadata"] == {
            "name": "chart.png",
            "mime_type": "image/png",
        }


@pytest.mark.parametrize("name", ["", "/", "some/dir/"])
def test_file_like_name_without_a_base_name_is_file(name: str) -> None:
    handle = io.BytesIO(b"x")
    handle.name = name  # type: ignore[attr-defined]
    assert encode_content(handle)["value"]["metadata"]["name"] == "file"


def test_file_like_whose_read_returns_none_is_refused() -> None:
    class NonBlocking(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> Optional[int]:
            return None  # "no data available right now"

    with pytest.raises(ArgumentTypeError):
        encode_content(NonBlocking())


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},
        ["a"],
        ("a",),
        7,
        1.5,
        True,
        None,
        object(),
        memoryview(b"x"),
        len,  # a callable
    ],
    ids=lambda v: type(v).__name__,
)
def test_unsupported_content_types_are_refused(value: Any) -> None:
    # The SDK sends str(value) (a dict goes out as its Python repr); we refuse.
    with pytest.raises(ArgumentTypeError) as info:
        encode_content(value)
    assert isinstance(info.value, TypeError)
    assert type(value).__name__ in str(info.value)
    with pytest.raises(ArgumentTypeError):
        encode_send("s", value)


# --- §3.4 send() with files ---------------------------------------------------------


@pytest.mark.parametrize("files", [None, [], ()])
def test_send_without_files_is_one_post_message(files: Any) -> None:
    assert encode_send("s", "hi", files=files) == (
        '{"type": "post_message", "session_id": "s", "content": "hi"}'
    )


def test_send_with_files_is_post_messages_verified_example(chart: Path) -> None:
    text = encode_send("sess_1", "summarize", files=[chart, b"b"])
    assert text == (
        '{"type": "post_messages", "session_id": "sess_1", "messages": ["summarize", '
        '{"type_string": "file", "value": {"raw_bytes": "UE5HREFUQQ==", '
        '"metadata": {"name": "chart.png", "mime_type": "image/png"}}}, '
        '{"type_string": "file", "value": {"raw_bytes": "Yg==", '
        '"metadata": {"name": "file", "mime_type": "application/octet-stream"}}}]}'
    )


def test_send_mime_type_and_filename_apply_only_to_the_primary_content() -> None:
    frame = json.loads(
        encode_send(
            "s", b"main", files=[b"att", "text attachment"], mime_type="text/x-a", filename="m.txt"
        )
    )
    assert frame["messages"] == [
        _file("bWFpbg==", "m.txt", "text/x-a"),
        _file("YXR0", "file", "application/octet-stream"),
        "text attachment",
    ]


@pytest.mark.parametrize(
    "files",
    ["a.txt", b"bytes", bytearray(b"x"), Path("a.txt"), io.BytesIO(b"x"), 5, {"a": 1}],
    ids=lambda v: type(v).__name__,
)
def test_send_files_must_be_a_list(files: Any) -> None:
    with pytest.raises(ArgumentTypeError):
        encode_send("s", "hi", files=files)


def test_send_files_generator_is_refused() -> None:
    with pytest.raises(ArgumentTypeError):
        encode_send("s", "hi", files=(b for b in [b"x"]))  # type: ignore[arg-type]


def test_send_unsupported_attachment_is_refused() -> None:
    with pytest.raises(ArgumentTypeError):
        encode_send("s", "hi", files=[{"a": 1}])  # type: ignore[list-item]


# --- §3.5 send_many() ---------------------------------------------------------------


def test_send_many_verified_example(chart: Path, report: Path) -> None:
    with_text = SessionMessage.from_dict(
        {
            "id": "h1",
            "sender": {"object_id": "ag_1", "object_type": "agent"},
            "content": {"type": "data_type_message", "value": "from history", "status": "Complete"},
        }
    )
    without_text = SessionMessage.from_dict(
        {"id": "h2", "content": {"type": "tool_call", "status": "Running"}}
    )
    assert without_text.text is None
    text = encode_send_many(
        "sess_1",
        [
            "a",
            chart,
            b"b",
            UserSessionMessage(content="c", files=[report], references={"doc": "REFERENCE"}),
            UserSessionMessage(),
            UserSessionMessage(content=b"zz", filename="z.csv"),
            with_text,
            without_text,
        ],
    )
    assert json.loads(text) == {
        "type": "post_messages",
        "session_id": "sess_1",
        "messages": [
            "a",
            _file("UE5HREFUQQ==", "chart.png", "image/png"),
            _file("Yg==", "file", "application/octet-stream"),
            "c",
            _file("JVBERi0xLjQ=", "report.pdf", "application/pdf"),
            _file("eno=", "z.csv", "text/csv"),
            "from history",
        ],
    }
    assert "REFERENCE" not in text  # references are never sent
    assert text.startswith('{"type": "post_messages", "session_id": "sess_1", "messages": ["a", ')


def test_send_many_empty_list() -> None:
    assert (
        encode_send_many("s", []) == '{"type": "post_messages", "session_id": "s", "messages": []}'
    )


def test_send_many_user_message_details() -> None:
    text = encode_send_many(
        "s",
        (
            UserSessionMessage(content=""),  # an empty string is sent
            UserSessionMessage(content="{}", mime_type="application/json"),
            UserSessionMessage(content="", mime_type=""),
            UserSessionMessage(files=[b"x"]),  # no content: only the file
            UserSessionMessage(content=b"{}", mime_type="application/json", files=[b"y"]),
        ),
    )
    assert json.loads(text)["messages"] == [
        "",
        {"type_string": "application/json", "value": "{}"},
        {"type_string": "string", "value": ""},
        _file("eA==", "file", "application/octet-stream"),
        _file("e30=", "file", "application/json"),
        # the item's mime_type/filename apply to its content, not its files
        _file("eQ==", "file", "application/octet-stream"),
    ]


@pytest.mark.parametrize(
    "messages", ["abc", b"abc", 5, None, (m for m in ["a"])], ids=lambda v: type(v).__name__
)
def test_send_many_needs_a_list(messages: Any) -> None:
    with pytest.raises(ArgumentTypeError):
        encode_send_many("s", messages)


def test_send_many_bad_items_are_refused() -> None:
    with pytest.raises(ArgumentTypeError):
        encode_send_many("s", ["ok", {"a": 1}])
    with pytest.raises(ArgumentTypeError):
        encode_send_many("s", [UserSessionMessage(content="c", files="notalist")])  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        encode_send_many("s", [UserSessionMessage(content=7)])  # type: ignore[arg-type]


# --- §3.6 approvals -----------------------------------------------------------------


def test_approve_byte_for_byte() -> None:
    assert encode_approval("sess_1", "msg_9", approved=True) == (
        '{"type": "post_message", "session_id": "sess_1", "content": '
        '{"type_string": "response_message", "value": {"tool_call_approval": {"confirm": {}}}}, '
        '"parent_message_id": "msg_9"}'
    )


def test_approve_with_confirm_values() -> None:
    assert encode_approval("sess_1", "msg_9", approved=True, confirm={"num_results": 5}) == (
        '{"type": "post_message", "session_id": "sess_1", "content": '
        '{"type_string": "response_message", "value": {"tool_call_approval": '
        '{"confirm": {"num_results": 5}}}}, "parent_message_id": "msg_9"}'
    )
    proxy = types.MappingProxyType({"k": "v"})
    assert json.loads(encode_approval("s", "m", approved=True, confirm=proxy))["content"] == {
        "type_string": "response_message",
        "value": {"tool_call_approval": {"confirm": {"k": "v"}}},
    }


@pytest.mark.parametrize("confirm", [None, {}])
def test_approve_empty_confirm_is_an_empty_object(confirm: Any) -> None:
    frame = json.loads(encode_approval("s", "m", approved=True, confirm=confirm))
    assert frame["content"]["value"] == {"tool_call_approval": {"confirm": {}}}


def test_deny_default_reason_byte_for_byte() -> None:
    assert DEFAULT_DENY_REASON == "User denied tool call."
    assert encode_approval("sess_1", "msg_9", approved=False) == (
        '{"type": "post_message", "session_id": "sess_1", "content": '
        '{"type_string": "response_message", "value": {"tool_call_approval": '
        '{"deny": "User denied tool call."}}}, "parent_message_id": "msg_9"}'
    )


def test_deny_with_reason_ignores_confirm() -> None:
    frame = json.loads(
        encode_approval("s", "m", approved=False, confirm={"x": 1}, deny_reason="not now")
    )
    assert frame["content"]["value"] == {"tool_call_approval": {"deny": "not now"}}


@pytest.mark.parametrize("parent", [None, ""])
def test_approval_parent_id_omitted_when_falsy(parent: Optional[str]) -> None:
    assert encode_approval("s", parent, approved=True) == (
        '{"type": "post_message", "session_id": "s", "content": '
        '{"type_string": "response_message", "value": {"tool_call_approval": {"confirm": {}}}}}'
    )


# --- §4.2 inbound frames --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["connect_session", "post_message", "post_messages"])
def test_failed_ack_becomes_error(kind: str) -> None:
    parsed = _parse({"type": kind, "session_id": SID, "success": False, "error": "nope"})
    assert parsed.event == SessionEvent(
        SessionEventType.ERROR, SID, None, {"error": "nope", "request_type": kind}
    )
    if kind == "connect_session":
        assert parsed.reply == Reply("connect_session", False, SID, "nope")
    else:
        assert parsed.reply is None


@pytest.mark.parametrize("kind", ["connect_session", "post_message", "post_messages"])
@pytest.mark.parametrize("error", [{}, {"error": None}, {"error": ""}])
def test_failed_ack_default_error(kind: str, error: Dict[str, Any]) -> None:
    event = _event({"type": kind, "success": False, **error})
    assert event.data == {"error": f"{kind} failed", "request_type": kind}
    assert event.session_id == OWN


def test_failed_ack_with_structured_error_is_json_text() -> None:
    event = _event({"type": "post_message", "success": False, "error": {"code": 7}})
    assert event.error == '{"code": 7}'


@pytest.mark.parametrize("success", [True, "false", 0, None, "no"])
def test_only_json_false_fails_an_ack(success: Any) -> None:
    assert _event({"type": "connect_session", "success": success}).type == (
        SessionEventType.SESSION_CONNECTED
    )
    assert _event({"type": "post_message", "success": success}).type == (
        SessionEventType.MESSAGE_POSTED
    )
    assert _event({"type": "post_messages", "success": success}).type == (
        SessionEventType.MESSAGES_POSTED
    )


def test_session_created() -> None:
    frame = {"type": "session_created", "session_id": SID}
    parsed = _parse(frame, session_id="")
    assert parsed.event == SessionEvent(SessionEventType.SESSION_CREATED, SID, None, frame)
    assert parsed.reply == Reply("create_session", True, SID)


def test_session_created_id_wins_over_own_id() -> None:
    parsed = _parse({"type": "session_created", "session_id": "new", "success": True})
    assert parsed.event is not None and parsed.event.session_id == "new"
    assert parsed.reply == Reply("create_session", True, "new")


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "session_created"},
        {"type": "session_created", "session_id": ""},
        {"type": "session_created", "session_id": None},
        {"type": "session_created", "session_id": 42},
    ],
)
def test_session_created_without_id_is_an_error_reply(frame: Dict[str, Any]) -> None:
    parsed = _parse(frame, session_id="")
    error = "session_created carried no session_id"
    assert parsed.reply == Reply("create_session", False, "", error)
    assert parsed.event == SessionEvent(
        SessionEventType.ERROR, "", None, {"error": error, "request_type": "create_session"}
    )


def test_session_created_with_success_false_is_an_error_reply() -> None:
    parsed = _parse(
        {"type": "session_created", "session_id": SID, "success": False, "error": "quota"}
    )
    assert parsed.reply == Reply("create_session", False, SID, "quota")
    assert parsed.event is not None
    assert parsed.event.type is SessionEventType.ERROR
    assert parsed.event.data == {"error": "quota", "request_type": "create_session"}


def test_connect_session_ack() -> None:
    frame = {"type": "connect_session", "session_id": SID, "success": True}
    parsed = _parse(frame)
    assert parsed.event == SessionEvent(SessionEventType.SESSION_CONNECTED, SID, None, frame)
    assert parsed.reply == Reply("connect_session", True, SID)


def test_message_delta() -> None:
    frame = {
        "type": "message_delta",
        "session_id": SID,
        "message_id": "m1",
        "index": 0,
        "value": "Hel",
    }
    assert _event(frame) == SessionEvent(
        SessionEventType.MESSAGE_DELTA, SID, "m1", {"delta": "Hel", "index": 0}
    )
    assert _parse(frame).reply is None


def test_message_delta_missing_fields() -> None:
    assert _event({"type": "message_delta"}) == SessionEvent(
        SessionEventType.MESSAGE_DELTA, OWN, None, {"delta": None, "index": None}
    )
    assert _event({"type": "message_delta", "message_id": 5}).message_id is None


@pytest.mark.parametrize(
    "kind, event_type",
    [
        ("post_message", SessionEventType.MESSAGE_POSTED),
        ("post_messages", SessionEventType.MESSAGES_POSTED),
        ("pong", SessionEventType.PONG),
    ],
)
def test_whole_frame_events(kind: str, event_type: SessionEventType) -> None:
    frame = {"type": kind, "session_id": SID, "success": True, "extra": [1, {"x": None}]}
    parsed = _parse(frame)
    assert parsed.event == SessionEvent(event_type, SID, None, frame)
    assert parsed.reply is None


def test_get_messages_is_a_private_reply_never_an_event() -> None:
    history = [
        {
            "id": "h1",
            "session_id": SID,
            "sender": {"user_id": "u1"},
            "content": {"type": "data_type_message", "value": "hi", "status": "Complete"},
        },
        {
            "id": "h2",
            "session_id": SID,
            "sender": {"object_id": "ag_1", "object_type": "agent"},
            "content": {"type": "data_type_message", "value": "Hello!", "status": "Complete"},
        },
    ]
    parsed = _parse({"type": "get_messages", "session_id": SID, "messages": history})
    assert parsed.event is None
    assert parsed.reply is not None
    assert (parsed.reply.request_type, parsed.reply.ok, parsed.reply.session_id) == (
        "get_messages",
        True,
        SID,
    )
    assert parsed.reply.error is None
    assert [(m.id, m.text, m.is_user, m.is_agent) for m in parsed.reply.messages] == [
        ("h1", "hi", True, False),
        ("h2", "Hello!", False, True),
    ]
    assert parsed.reply.messages[1].status is SessionMessageStatus.COMPLETE
    assert parsed.reply.messages[0].raw == history[0]


@pytest.mark.parametrize(
    "frame", [{"type": "get_messages"}, {"type": "get_messages", "messages": None}]
)
def test_get_messages_absent_or_null_is_empty(frame: Dict[str, Any]) -> None:
    assert _parse(frame) == Parsed(None, Reply("get_messages", True, OWN, None, []))


def test_get_messages_skips_non_object_items() -> None:
    parsed = _parse({"type": "get_messages", "messages": [1, "x", None, [], {"id": "ok"}]})
    assert parsed.reply is not None
    assert [m.id for m in parsed.reply.messages] == ["ok"]


def test_get_messages_failure_is_a_failed_reply() -> None:
    assert _parse({"type": "get_messages", "success": False}) == Parsed(
        None, Reply("get_messages", False, OWN, "get_messages failed")
    )
    assert _parse({"type": "get_messages", "success": False, "error": "denied"}) == Parsed(
        None, Reply("get_messages", False, OWN, "denied")
    )


@pytest.mark.parametrize("messages", [{"a": 1}, "x", 3])
def test_get_messages_not_a_list_is_a_failed_reply(messages: Any) -> None:
    parsed = _parse({"type": "get_messages", "messages": messages})
    assert parsed.event is None
    assert parsed.reply is not None
    assert parsed.reply.ok is False
    assert parsed.reply.error == f"history is a {type(messages).__name__}, expected a list"


def test_participant_status() -> None:
    frame = {"type": "participant_status", "session_id": SID, "message": {"status": "Processing"}}
    event = _event(frame)
    assert event == SessionEvent(
        SessionEventType.PARTICIPANT_STATUS, SID, None, {"status": "Processing"}
    )
    assert _parse(frame).reply is None


@pytest.mark.parametrize(
    "frame", [{"type": "participant_status"}, {"type": "participant_status", "message": None}]
)
def test_participant_status_without_message_is_empty(frame: Dict[str, Any]) -> None:
    event = _event(frame)
    assert event.data == {}
    assert event.participant_status is None


@pytest.mark.parametrize("message", ["Idle", 1, [1]])
def test_participant_status_message_must_be_an_object(message: Any) -> None:
    with pytest.raises(FrameError):
        _parse({"type": "participant_status", "message": message})


def test_error_frame() -> None:
    parsed = _parse(
        {"type": "error", "session_id": SID, "error": "bad request", "request_type": "post_message"}
    )
    assert parsed.event == SessionEvent(
        SessionEventType.ERROR, SID, None, {"error": "bad request", "request_type": "post_message"}
    )
    assert parsed.reply is None  # nobody waits for a post_message answer


@pytest.mark.parametrize("request_type", ["create_session", "connect_session", "get_messages"])
def test_error_frame_for_a_request_is_also_a_reply(request_type: str) -> None:
    parsed = _parse({"type": "error", "error": "boom", "request_type": request_type})
    assert parsed.reply == Reply(request_type, False, OWN, "boom")
    assert parsed.event is not None
    assert parsed.event.data == {"error": "boom", "request_type": request_type}


@pytest.mark.parametrize("request_type", [None, 5, ["get_messages"]])
def test_error_frame_without_request_type(request_type: Any) -> None:
    frame: Dict[str, Any] = {"type": "error", "error": "boom"}
    if request_type is not None:
        frame["request_type"] = request_type
    parsed = _parse(frame)
    assert parsed.event == SessionEvent(
        SessionEventType.ERROR, OWN, None, {"error": "boom", "request_type": None}
    )
    assert parsed.reply == Reply(None, False, OWN, "boom")


@pytest.mark.parametrize("extra", [{}, {"error": None}, {"error": ""}])
def test_error_frame_default_text(extra: Dict[str, Any]) -> None:
    assert _event({"type": "error", **extra}).error == "Unknown error"


def test_error_frame_structured_error_is_json_text() -> None:
    assert _event({"type": "error", "error": {"code": 1, "msg": "\u00e9"}}).error == (
        '{"code": 1, "msg": "\\u00e9"}'
    )


@pytest.mark.parametrize("kind", ["disconnect_session", "terminate_session"])
def test_goodbye_frames_are_dropped(kind: str) -> None:
    assert _parse({"type": kind, "session_id": SID}) == Parsed(None, None)


@pytest.mark.parametrize("kind", ["typing", "", "SESSION_CREATED", "message"])
def test_unknown_type_raises_unknown_frame_error(kind: str) -> None:
    with pytest.raises(UnknownFrameError) as info:
        _parse({"type": kind, "session_id": SID})
    assert info.value.kind == kind
    assert isinstance(info.value, FrameError)
    assert repr(kind) in str(info.value)


@pytest.mark.parametrize("frame", [{}, {"type": None}, {"type": 5}, {"type": ["pong"]}])
def test_missing_or_non_string_type_is_a_frame_error(frame: Dict[str, Any]) -> None:
    with pytest.raises(FrameError) as info:
        _parse(frame)
    assert type(info.value) is FrameError


@pytest.mark.parametrize(
    "frame_sid, expected",
    [(SID, SID), (None, OWN), ("", OWN), (7, OWN), ({"a": 1}, OWN)],
)
def test_event_session_id_is_always_a_string(frame_sid: Any, expected: str) -> None:
    assert _event({"type": "pong", "session_id": frame_sid}).session_id == expected
    assert _event({"type": "pong"}).session_id == OWN
    assert _event({"type": "pong"}, session_id="").session_id == ""


def test_bytes_frames_are_accepted() -> None:
    text = json.dumps({"type": "message_delta", "message_id": "m", "value": "\u00e9"})
    assert _event(text.encode("utf-8")).delta == "\u00e9"
    raw_utf8 = '{"type": "message_delta", "value": "\u00e9"}'.encode("utf-8")
    assert _event(raw_utf8).delta == "\u00e9"


# --- §4.3 message_notification ---------------------------------------------------------


def test_complete_message_with_sender_kept() -> None:
    sender = {"object_id": "agent_1", "object_type": "agent"}
    event = _event(
        _notification(
            {"type": "data_type_message", "value": "Hello!", "status": "Complete"}, sender=sender
        )
    )
    assert event == SessionEvent(
        SessionEventType.MESSAGE_COMPLETE,
        SID,
        "m1",
        {"text": "Hello!", "status": "complete", "sender": sender},
    )
    assert event.text == "Hello!"
    assert event.sender == MessageSender(SessionMessageRole.OBJECT, None, "agent_1", "agent")
    assert event.is_from_agent is True


def test_user_echo_is_told_apart() -> None:
    event = _event(
        _notification(
            {"type": "data_type_message", "value": "question", "status": "Complete"},
            sender={"user_id": "u1"},
        )
    )
    assert event.type is SessionEventType.MESSAGE_COMPLETE
    assert event.data["sender"] == {"user_id": "u1"}
    assert event.sender == MessageSender(SessionMessageRole.USER, user_id="u1")
    assert event.is_from_agent is False


@pytest.mark.parametrize("sender", [{}, None, "u1", 5, ["user_id"]])
def test_empty_or_non_object_sender_is_not_kept(sender: Any) -> None:
    event = _event(
        _notification(
            {"type": "data_type_message", "value": "x", "status": "Complete"}, sender=sender
        )
    )
    assert event.data == {"text": "x", "status": "complete"}
    assert event.sender is None
    assert event.is_from_agent is True


@pytest.mark.parametrize("status", ["Streaming", "complete", "COMPLETE", None, 1, "Error"])
def test_data_message_not_exactly_complete_is_streaming(status: Any) -> None:
    event = _event(_notification({"type": "data_type_message", "value": "Hel", "status": status}))
    assert event == SessionEvent(
        SessionEventType.MESSAGE_STREAMING, SID, "m1", {"text": "Hel", "status": "streaming"}
    )


def test_data_message_missing_status_is_streaming() -> None:
    event = _event(_notification({"type": "data_type_message", "value": "Hel"}))
    assert event.type is SessionEventType.MESSAGE_STREAMING
    assert event.data == {"text": "Hel", "status": "streaming"}


def test_data_message_value_is_passed_raw() -> None:
    event = _event(_notification({"type": "data_type_message", "value": 7, "status": "Complete"}))
    assert event.data == {"text": 7, "status": "complete"}
    event = _event(_notification({"type": "data_type_message", "status": "Complete"}))
    assert event.data == {"text": None, "status": "complete"}


def test_error_message_has_no_request_type() -> None:
    event = _event(_notification({"type": "error_message", "error": "tool exploded"}))
    assert event == SessionEvent(SessionEventType.ERROR, SID, "m1", {"error": "tool exploded"})
    assert _event(_notification({"type": "error_message"})).data == {"error": "Unknown error"}


def test_tool_call_keeps_its_fields() -> None:
    content = {
        "type": "tool_call",
        "tool_name": "exa_ai_search",
        "tool_id": "t1",
        "status": "Running",
        "arguments": {"q": "x"},
    }
    event = _event(_notification(content))
    assert event == SessionEvent(
        SessionEventType.TOOL_CALL,
        SID,
        "m1",
        {
            "tool_name": "exa_ai_search",
            "tool_id": "t1",
            "status": "Running",
            "arguments": {"q": "x"},
        },
    )
    assert event.tool_name == "exa_ai_search"
    assert event.status is None  # "Running" is no message status


def test_tool_call_missing_fields_default_to_none() -> None:
    assert _event(_notification({"type": "tool_call"})).data == {
        "tool_name": None,
        "tool_id": None,
        "status": None,
    }


@pytest.mark.parametrize(
    "status", ["Completed", "complete", "SUCCESS", "succeeded", "done", "Failed", "error"]
)
def test_finished_tool_call_is_a_tool_result(status: str) -> None:
    # Documented deviation: the SDK folds this into TOOL_CALL and never yields TOOL_RESULT.
    event = _event(
        _notification({"type": "tool_call", "tool_name": "calc", "tool_id": "t1", "status": status})
    )
    assert event.type is SessionEventType.TOOL_RESULT
    assert event.data == {"tool_name": "calc", "tool_id": "t1", "status": status}
    assert event.tool_name == "calc"


def test_tool_call_with_a_result_is_a_tool_result() -> None:
    event = _event(
        _notification(
            {"type": "tool_call", "tool_name": "calc", "status": "Running", "result": None}
        )
    )
    assert event.type is SessionEventType.TOOL_RESULT
    assert event.data == {"tool_name": "calc", "tool_id": None, "status": "Running", "result": None}


@pytest.mark.parametrize("status", ["Running", "pending", "", None, 3, {"done": True}])
def test_unfinished_tool_call_stays_a_tool_call(status: Any) -> None:
    event = _event(_notification({"type": "tool_call", "tool_name": "calc", "status": status}))
    assert event.type is SessionEventType.TOOL_CALL


def test_thinking() -> None:
    event = _event(_notification({"type": "thinking", "content": "hmm", "summary": "s", "x": 1}))
    assert event == SessionEvent(
        SessionEventType.THINKING, SID, "m1", {"content": "hmm", "summary": "s"}
    )
    assert _event(_notification({"type": "thinking"})).data == {"content": None, "summary": None}


@pytest.mark.parametrize(
    "content, text",
    [
        ({"value": "v", "content": "c"}, "v"),
        ({"value": "", "content": "c"}, "c"),
        ({"value": None, "content": "c"}, "c"),
        ({"content": "c"}, "c"),
        ({}, None),
    ],
)
def test_reasoning_is_thinking_with_text(content: Dict[str, Any], text: Optional[str]) -> None:
    event = _event(_notification({"type": "reasoning", **content}))
    assert event == SessionEvent(SessionEventType.THINKING, SID, "m1", {"text": text})


@pytest.mark.parametrize(
    "content, text",
    [({"value": "v", "content": "c"}, "v"), ({"value": 0, "content": "c"}, "c"), ({}, None)],
)
def test_agent_task_is_streaming_text(content: Dict[str, Any], text: Any) -> None:
    event = _event(_notification({"type": "agent_task", **content}))
    assert event == SessionEvent(SessionEventType.MESSAGE_STREAMING, SID, "m1", {"text": text})


@pytest.mark.parametrize(
    "kind, event_type",
    [
        ("tool_call_approval", SessionEventType.APPROVAL_REQUEST),
        ("reauthorization_request", SessionEventType.REAUTH_REQUEST),
        ("search_message", SessionEventType.SEARCH_RESULT),
        ("some_future_type", SessionEventType.MESSAGE_STREAMING),
    ],
)
def test_whole_content_events(kind: str, event_type: SessionEventType) -> None:
    content = {"type": kind, "tool_id": "t1", "tool_name": "exa_ai_search", "tool_call_id": "tc1"}
    event = _event(_notification(content, id="m2"))
    assert event == SessionEvent(event_type, SID, "m2", content)


def test_approval_request_with_sender_does_not_touch_the_content_fields() -> None:
    content = {"type": "tool_call_approval", "tool_id": "t1"}
    event = _event(_notification(content, id="m2", sender={"object_id": "a"}))
    assert event.data == {
        "type": "tool_call_approval",
        "tool_id": "t1",
        "sender": {"object_id": "a"},
    }
    assert event.requires_action is True


@pytest.mark.parametrize("content", [{}, {"type": None}, {"type": 5, "x": 1}, None])
def test_content_without_a_known_type_is_streaming_whole(content: Any) -> None:
    event = _event(_notification(content))
    assert event.type is SessionEventType.MESSAGE_STREAMING
    assert event.data == (content or {})


def test_notification_message_null_is_empty() -> None:
    for frame in (
        {"type": "message_notification", "message": None},
        {"type": "message_notification"},
        {"type": "message_notification", "message": {}},
    ):
        assert _parse(frame) == Parsed(
            SessionEvent(SessionEventType.MESSAGE_STREAMING, OWN, None, {}), None
        )


@pytest.mark.parametrize("message_id", [None, 5, ["m"], {"id": "m"}])
def test_notification_non_string_id_is_none(message_id: Any) -> None:
    event = _event(_notification({"type": "search_message"}, id=message_id))
    assert event.message_id is None


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message_notification", "message": "x"},
        {"type": "message_notification", "message": [1]},
        {"type": "message_notification", "message": 0},
        {"type": "message_notification", "message": {"content": "x"}},
        {"type": "message_notification", "message": {"content": ["type"]}},
        {"type": "message_notification", "message": {"content": 1.5}},
    ],
)
def test_notification_wrong_shapes_are_frame_errors(frame: Dict[str, Any]) -> None:
    with pytest.raises(FrameError) as info:
        _parse(frame)
    assert type(info.value) is FrameError


# --- malformed frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '"str"',
        "1",
        "null",
        "true",
        "",
        "   ",
        "{",
        "not json",
        "{'type': 'pong'}",
        '{"type": "pong"} trailing',
        b"\xff\xfe\xfa",
        b'{"type": "pong", "x": "\xff"}',
        b"\xc3\x28",
        b"",
        "[" * 100_000,  # deeper than the recursion limit
        "{}" * 3,
    ],
    ids=lambda text: repr(text[:24]),
)
def test_malformed_frames_raise_frame_error_only(text: Any) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(text, OWN)
    assert type(info.value) is FrameError


def _deepest_loadable() -> int:
    """The deepest array nesting json.loads accepts from this stack depth."""
    low, high = 0, 10_000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads("[" * middle + "]" * middle)
        except RecursionError:
            high = middle - 1
        else:
            low = middle
    return low


@pytest.mark.parametrize(
    "template",
    [
        '{"type": "error", "error": %s}',
        '{"type": "post_message", "success": false, "error": %s}',
        '{"type": "session_created", "success": false, "error": %s}',
        '{"type": "get_messages", "success": false, "error": %s}',
        '{"type": "message_notification", "message": {"content": '
        '{"type": "error_message", "error": %s}}}',
        '{"type": "pong", "x": %s}',
        '{"type": "get_messages", "messages": [{"content": {"type": "data_type_message", '
        '"value": %s}}]}',
    ],
)
def test_nesting_at_the_recursion_limit_raises_frame_error_only(template: str) -> None:
    # Right at the edge json.loads still succeeds but writing the value back with
    # json.dumps (a structured error text) does not; both must end in FrameError.
    edge = _deepest_loadable()
    for depth in range(max(0, edge - 12), edge + 3):
        text = template % ("[" * depth + "]" * depth)
        try:
            parsed = parse_frame(text, OWN)
        except FrameError:
            continue
        _check_parsed(parsed)


def test_frame_errors_are_value_errors() -> None:
    # The reader catches FrameError; being a ValueError keeps it out of the misuse families.
    assert issubclass(FrameError, ValueError)
    assert issubclass(UnknownFrameError, FrameError)
    assert OVERFLOW_ERROR == "subscriber queue overflow"


# --- robustness: parse_frame raises nothing but FrameError ----------------------------

_CONTENT_TYPES = [
    "data_type_message",
    "error_message",
    "tool_call",
    "thinking",
    "reasoning",
    "tool_call_approval",
    "reauthorization_request",
    "search_message",
    "agent_task",
    "other",
    "",
]
_TOP_KEYS = [
    "session_id",
    "success",
    "error",
    "request_type",
    "message_id",
    "index",
    "value",
    "message",
    "messages",
]
_CONTENT_KEYS = ["type", "value", "status", "content", "summary", "error", "tool_name", "result"]
_ODD = [None, 0, 1, -1.5, True, False, "", "x", "Complete", "done", [], [1], {}, {"a": 1}]


def _check_parsed(parsed: Parsed) -> None:
    assert isinstance(parsed, Parsed)
    event = parsed.event
    if event is not None:
        assert isinstance(event.type, SessionEventType)
        assert isinstance(event.session_id, str)
        assert event.message_id is None or isinstance(event.message_id, str)
        assert isinstance(event.data, dict)
        # Every helper property answers without raising on anything the parser made.
        for name in (
            "delta",
            "text",
            "tool_name",
            "status",
            "is_complete",
            "participant_status",
            "is_turn_end",
            "requires_action",
            "error",
            "sender",
            "is_from_agent",
        ):
            getattr(event, name)
        hash(event)
    reply = parsed.reply
    if reply is not None:
        assert isinstance(reply.ok, bool)
        assert isinstance(reply.session_id, str)
        assert reply.error is None or isinstance(reply.error, str)
        assert all(isinstance(m, SessionMessage) for m in reply.messages)
        for message in reply.messages:
            repr(message)


def _parse_or_frame_error(text: Any) -> None:
    try:
        parsed = parse_frame(text, OWN)
    except FrameError as exc:
        # The I/O thread's form refuses the same frames with the same error.
        with pytest.raises(type(exc)) as again:
            read_frame(text, OWN)
        assert str(again.value) == str(exc)
        return
    _check_parsed(parsed)
    _check_read_frame_agrees(text, parsed)


def _check_read_frame_agrees(text: Any, parsed: Parsed) -> None:
    """read_frame gives the same meaning as parse_frame: the bare event exactly when
    the frame is an event and nothing else, the whole Parsed otherwise."""
    meaning = read_frame(text, OWN)
    if parsed.event is not None and parsed.reply is None:
        assert type(meaning) is SessionEvent and meaning == parsed.event
    else:
        assert type(meaning) is Parsed and meaning == parsed


def test_read_frame_gives_a_bare_event_only_when_there_is_no_reply() -> None:
    delta = json.dumps(
        {"type": "message_delta", "session_id": "s", "message_id": "m", "value": "hi", "index": 3}
    )
    event = read_frame(delta, OWN)
    assert type(event) is SessionEvent
    assert event == SessionEvent(
        SessionEventType.MESSAGE_DELTA, "s", "m", {"delta": "hi", "index": 3}
    )
    assert parse_frame(delta, OWN) == Parsed(event)
    created = read_frame(json.dumps({"type": "session_created", "session_id": "new"}), OWN)
    assert type(created) is Parsed and created.reply == Reply("create_session", True, "new")
    assert read_frame(json.dumps({"type": "disconnect_session"}), OWN) == Parsed()
    # A refused post has no waiter: an event alone; a refused connect has one.
    refused = read_frame(json.dumps({"type": "post_message", "success": False}), OWN)
    assert type(refused) is SessionEvent and refused.type is SessionEventType.ERROR
    refused = read_frame(json.dumps({"type": "connect_session", "success": False}), OWN)
    assert type(refused) is Parsed and refused.reply is not None and not refused.reply.ok
    for text in (delta, '{"type": "pong"}', '{"type": "error", "error": "x"}'):
        _check_read_frame_agrees(text, parse_frame(text, OWN))


def test_the_fuzzed_frame_types_are_the_types_the_parser_knows() -> None:
    from vectorshift_sync._protocol import _HANDLERS

    assert set(_HANDLERS) <= set(INBOUND_FRAME_TYPES)
    for kind in INBOUND_FRAME_TYPES:
        try:
            parse_frame(json.dumps({"type": kind, "session_id": "s"}), "s")
        except FrameError as exc:
            assert not isinstance(exc, UnknownFrameError), kind


# Deterministic sweep: every field of every frame/content type, with every odd value.


@pytest.mark.parametrize("kind", INBOUND_FRAME_TYPES)
def test_every_top_level_field_with_every_odd_value(kind: str) -> None:
    for key in _TOP_KEYS:
        for value in _ODD:
            for base in ({}, {"success": False}):
                _parse_or_frame_error(json.dumps({"type": kind, **base, key: value}))


@pytest.mark.parametrize("kind", _CONTENT_TYPES)
def test_every_content_field_with_every_odd_value(kind: str) -> None:
    for key in _CONTENT_KEYS:
        for value in _ODD:
            content = {"type": kind, key: value}
            _parse_or_frame_error(json.dumps(_notification(content, sender={"user_id": value})))
            item = {"content": content, "id": value, "sender": {"object_id": value}}
            _parse_or_frame_error(json.dumps({"type": "get_messages", "messages": [item]}))


def test_every_message_field_with_every_odd_value() -> None:
    for key in ("id", "session_id", "content", "sender", "status"):
        for value in _ODD:
            _parse_or_frame_error(
                json.dumps({"type": "message_notification", "message": {key: value}})
            )
            _parse_or_frame_error(json.dumps({"type": "get_messages", "messages": [{key: value}]}))


# Property-based: random text, bytes, JSON values and frame-shaped objects.

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["Complete", "complete", "Idle", "streaming", "error", "result"])
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(_CONTENT_KEYS) | st.text(max_size=4), children, max_size=4
        )
    ),
    max_leaves=8,
)
_content = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(_CONTENT_TYPES) | _scalars,
    st.dictionaries(st.sampled_from(_CONTENT_KEYS), _json, max_size=5),
)
_message = st.dictionaries(
    st.sampled_from(["id", "content", "sender", "session_id", "status"]),
    _content | _json,
    max_size=4,
)
_frames = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(INBOUND_FRAME_TYPES),
    st.dictionaries(
        st.sampled_from(_TOP_KEYS), _json | _message | st.lists(_message, max_size=3), max_size=5
    ),
)

_HYPOTHESIS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_HYPOTHESIS
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    _parse_or_frame_error(text)


@_HYPOTHESIS
@given(st.binary())
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parse_or_frame_error(data)


@settings(_HYPOTHESIS, max_examples=60)
@given(_json)
def test_fuzz_arbitrary_json_values(value: Any) -> None:
    _parse_or_frame_error(json.dumps(value))


@settings(_HYPOTHESIS, max_examples=40)
@given(_frames)
def test_fuzz_frames_of_known_types(frame: Dict[str, Any]) -> None:
    _parse_or_frame_error(json.dumps(frame))


@settings(_HYPOTHESIS, max_examples=40)
@given(_message)
def test_fuzz_notifications(message: Dict[str, Any]) -> None:
    _parse_or_frame_error(json.dumps({"type": "message_notification", "message": message}))
