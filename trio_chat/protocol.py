"""The wire format of protocol v1: parsing client frames, encoding server events.

Pure and I/O-free (no Trio import): everything here is a function from text
to values or from values to bytes, so hypothesis can hammer it directly.

Client frames are parsed into frozen command values (`Hello`, `Say`,
`Typing`); anything wrong raises `ProtocolError`, which carries the error code
the session sends back. Server events are built as compact JSON lines, encoded
to UTF-8 exactly once: the same bytes go to every recipient and into history.
"""

from __future__ import annotations

import enum
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

PROTOCOL_VERSION: Final = 1

DEFAULT_ROOM: Final = "lobby"
MAX_NAME_LENGTH: Final = 32
MAX_ROOM_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 4000
MAX_REF_LENGTH: Final = 64

_ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
# Control characters (Cc), lone surrogates (Cs) and the line/paragraph
# separators would let a name break the layout of every client's member list.
_FORBIDDEN_NAME_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` event; the connection stays open."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    BAD_NAME = "bad_name"
    NAME_TAKEN = "name_taken"
    BAD_ROOM = "bad_room"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"
    RATE_LIMITED = "rate_limited"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002  # malformed framing, reported by wsproto
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007  # a text frame that is not UTF-8, reported by wsproto
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class LeaveReason(enum.StrEnum):
    """Why a member left its room (the `reason` of a `leave` event)."""

    QUIT = "quit"
    TIMEOUT = "timeout"
    SLOW = "slow"
    ERROR = "error"
    SHUTDOWN = "shutdown"


class ProtocolError(Exception):
    """A client frame the server refuses with an `error` event.

    Like wsproto's `event_hint`, it carries what the session needs to answer:
    the error code, a human-readable message, and the frame's `ref` if it had
    a usable one.
    """

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame of a session: who joins which room, resuming where."""

    name: str
    room: str = DEFAULT_ROOM
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Say:
    """A chat message to broadcast to the sender's room."""

    text: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """ "I am typing", forwarded to the other members (throttled)."""


Command = Hello | Say | Typing


# --------------------------------------------------------------------------
# Parsing client frames


def parse_command(frame: str, *, joined: bool) -> Command:
    """Parse one client message (a complete text frame) into a command.

    Args:
        frame: the reassembled text of the frame.
        joined: whether the session has completed its hello; it decides
            between `not_joined` and `already_joined` and the other errors,
            in the precedence the protocol states.

    Raises:
        ProtocolError: with the code the client should receive.
    """
    obj = _decode_object(frame)
    ref = _usable_ref(obj.get("ref"))
    kind = obj.get("type")
    if not joined:
        if kind != "hello":
            raise ProtocolError(ErrorCode.NOT_JOINED, "send hello first", ref)
        return _parse_hello(obj, ref)
    if kind == "say":
        return _parse_say(obj, ref)
    if kind == "typing":
        return Typing()
    if kind == "hello":
        raise ProtocolError(ErrorCode.ALREADY_JOINED, "this connection already joined", ref)
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown type {_preview(kind)}", ref)


def _decode_object(frame: str) -> dict[str, Any]:
    try:
        obj = json.loads(frame, parse_constant=_reject_constant)
    except RecursionError:
        # json's C scanner recurses per nesting level: `[[[[...` of a few
        # thousand levels exhausts the stack. It is the client's bad JSON.
        raise ProtocolError(ErrorCode.BAD_JSON, "JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, and int() refusing a 5,000-digit number
        raise ProtocolError(ErrorCode.BAD_JSON, "not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a message must be a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _usable_ref(ref: object) -> str | None:
    """Return `ref` if it can be echoed back, else None."""
    if isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH and _is_encodable(ref):
        return ref
    return None


def _parse_hello(obj: dict[str, Any], ref: str | None) -> Hello:
    name = obj.get("name")
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "hello needs a string 'name'", ref)
    room = obj.get("room", DEFAULT_ROOM)
    if room is None:
        room = DEFAULT_ROOM
    if not isinstance(room, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'room' must be a string", ref)
    since = obj.get("since")
    if since is not None and (type(since) is not int or since < 0):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since' must be an integer >= 0", ref)
    return Hello(name=normalize_name(name, ref), room=validate_room(room, ref), since=since)


def normalize_name(name: str, ref: str | None = None) -> str:
    """Return the canonical form of a display name, or raise `bad_name`.

    NFC first, so that the same visible name typed on two keyboards is one
    name; then trimmed; then 1 to 32 characters with no control characters.
    """
    if not _is_encodable(name):
        raise ProtocolError(ErrorCode.BAD_NAME, "name is not valid Unicode", ref)
    name = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_NAME, f"name must be 1 to {MAX_NAME_LENGTH} characters", ref
        )
    if any(unicodedata.category(c) in _FORBIDDEN_NAME_CATEGORIES for c in name):
        raise ProtocolError(ErrorCode.BAD_NAME, "name must not contain control characters", ref)
    return name


def name_key(name: str) -> str:
    """The form in which names are compared for uniqueness in a room."""
    return name.casefold()


def validate_room(room: str, ref: str | None = None) -> str:
    """Return `room` unchanged if it is a valid room name, or raise `bad_room`."""
    if _ROOM_PATTERN.fullmatch(room) is None:
        raise ProtocolError(
            ErrorCode.BAD_ROOM,
            f"room must be 1 to {MAX_ROOM_LENGTH} characters of A-Z a-z 0-9 _ - .",
            ref,
        )
    return room


def _parse_say(obj: dict[str, Any], ref: str | None) -> Say:
    text = obj.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "say needs a string 'text'", ref)
    raw_ref = obj.get("ref")
    if raw_ref is not None and ref is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"'ref' must be a string of at most {MAX_REF_LENGTH}", ref
        )
    if not _is_encodable(text):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "text is not valid Unicode", ref)
    text = text.strip()
    if not text:
        raise ProtocolError(ErrorCode.EMPTY_TEXT, "text is empty", ref)
    if len(text) > MAX_TEXT_LENGTH:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG, f"text is longer than {MAX_TEXT_LENGTH} characters", ref
        )
    return Say(text=text, ref=ref)


def _is_encodable(text: str) -> bool:
    # JSON lets a client send "\ud800"; such a lone surrogate cannot be
    # encoded as UTF-8, so it must never reach an event.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _preview(value: object) -> str:
    return repr(value)[:40]


# --------------------------------------------------------------------------
# Encoding server events

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(event: dict[str, Any]) -> bytes:
    """One event as a compact JSON line (no newline inside, none at the end)."""
    return _dumps(event).encode("utf-8")


def format_timestamp(epoch_seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. `2026-11-27T19:48:58.123Z`."""
    millis = int(epoch_seconds * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def message_event(
    event_id: int, room: str, name: str, text: str, ts: str, *, ref: str | None
) -> bytes:
    event: dict[str, Any] = {
        "type": "message",
        "id": event_id,
        "room": room,
        "name": name,
        "text": text,
        "ts": ts,
    }
    if ref is not None:
        event["ref"] = ref
    return encode(event)


def join_event(event_id: int, room: str, name: str, ts: str) -> bytes:
    return encode({"type": "join", "id": event_id, "room": room, "name": name, "ts": ts})


def leave_event(event_id: int, room: str, name: str, ts: str, reason: LeaveReason) -> bytes:
    return encode(
        {
            "type": "leave",
            "id": event_id,
            "room": room,
            "name": name,
            "ts": ts,
            "reason": str(reason),
        }
    )


def typing_event(room: str, name: str) -> bytes:
    return encode({"type": "typing", "room": room, "name": name})


def error_event(code: ErrorCode, message: str, ref: str | None = None) -> bytes:
    event: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if ref is not None:
        event["ref"] = ref
    return encode(event)


def welcome_event(
    room: str, name: str, members: list[str], last_id: int, *, recovered: bool | None
) -> bytes:
    event: dict[str, Any] = {
        "type": "welcome",
        "room": room,
        "name": name,
        "members": members,
        "last_id": last_id,
    }
    if recovered is not None:
        event["recovered"] = recovered
    return encode(event)
