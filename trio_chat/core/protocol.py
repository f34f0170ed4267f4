"""The wire format of protocol v1: parsing client frames, encoding server events.

Pure and I/O-free (no Trio import): everything here is a function from text
to values or from values to bytes, so hypothesis can hammer it directly.

Client frames are parsed into frozen command values (`Hello`, `Say`,
`Typing`); anything wrong raises `ProtocolError`, which carries the error code
the session sends back. Server events are built as compact JSON lines, encoded
to UTF-8 exactly once: the same bytes go to every recipient and into history.

Names follow the Unicode identifier-security rules (UTS #39): a name may hold
no invisible or direction-control character, and two names clash when they
look alike (`name_keys`), not only when they are spelled alike.
"""

from __future__ import annotations

import enum
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from glyphguard import skeleton

from .errors import TrioChatError

PROTOCOL_VERSION: Final = 1

DEFAULT_ROOM: Final = "lobby"
MAX_NAME_LENGTH: Final = 32
MAX_ROOM_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 4000
MAX_REF_LENGTH: Final = 64
MAX_EPOCH_LENGTH: Final = 64  # an epoch is opaque to clients; ours are 16 hex digits
MAX_RESUME_LENGTH: Final = 64  # a resume secret is opaque to clients too
MAX_HISTORY_PAGE: Final = 100  # events in one `history` answer
HISTORY_PAGE: Final = 50  # events in one when the client gives no `limit`
# A signed token (JWT) of a few claims is a few hundred characters; an RSA
# signature adds about 350. More is no token we issue or expect.
MAX_TOKEN_LENGTH: Final = 4096

_ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
# Control characters (Cc), lone surrogates (Cs) and the line/paragraph
# separators would let a name break the layout of every client's member list.
_FORBIDDEN_NAME_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Private-use (Co) and unassigned (Cn) code points have no agreed look, and an
# unassigned one may gain a decomposition later, so NFC could not be trusted.
_UNKNOWN_NAME_CATEGORIES: Final = frozenset({"Co", "Cn"})
# Characters that draw nothing yet are not format characters (Cf): the Hangul
# fillers, the combining grapheme joiner and the Khmer inherent vowels (all
# Default_Ignorable_Code_Point), the Braille blank, the Khitan filler and the
# musical null notehead. Every Cf is refused as well (see `normalize_name`).
_BLANK_CHARACTERS: Final = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0\U00016fe4\U0001d159"
)
# ZWNJ and ZWJ: format characters that Persian, Indic scripts and emoji
# sequences need, so they are allowed inside a name (see `_joiner_fits`).
_JOINERS: Final = frozenset("\u200c\u200d")
# How many rounds of case folding and skeleton `name_key` may take to settle:
# three settle every single code point (a test checks that all settle), the
# rest is a margin.
_MAX_KEY_ROUNDS: Final = 8


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
    UNAVAILABLE = "unavailable"  # only from a server sharing rooms through a backplane
    UNAUTHORIZED = "unauthorized"  # token mode: the hello's token does not admit it (then 1008)


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
    SERVICE_RESTART = 1012  # the backplane lost the room's state: join again
    TRY_AGAIN_LATER = 1013


class LeaveReason(enum.StrEnum):
    """Why a member left its room (the `reason` of a `leave` event)."""

    QUIT = "quit"
    TIMEOUT = "timeout"
    SLOW = "slow"
    ERROR = "error"
    SHUTDOWN = "shutdown"


class ProtocolError(TrioChatError):
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


class RefusalReason(enum.StrEnum):
    """Why a hello was refused before it reached the rooms: the label of
    `/metrics`' refused hellos. All but the last are `unauthorized`."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 (a label, no password)
    BAD_TOKEN = "bad_token"  # noqa: S105 (a label, no password); malformed, badly signed, or claims of the wrong shape
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # `nbf` or `iat` in the future
    ROOM_NOT_GRANTED = "room_not_granted"
    NAME_MISMATCH = "name_mismatch"  # the hello's `name` is not the token's
    RESERVED_NAME = "reserved_name"  # open mode: refused as `name_taken`


class Unauthorized(ProtocolError):
    """A hello refused in token mode: `unauthorized`, and the session closes
    with 1008 (no second try on the same connection: a client with a bad
    token has nothing better to send). `reason` says why, for metrics; the
    message never quotes the token."""

    def __init__(self, reason: RefusalReason, message: str, ref: str | None = None) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message, ref)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame of a session: who joins which room, resuming where.

    In token mode `name` is what the client asked for ("" when it left it
    out, as it may); the session replaces it with the token's name.
    """

    name: str
    room: str = DEFAULT_ROOM
    since: int | None = None
    epoch: str | None = None  # the numbering `since` belongs to (the welcome's `epoch`)
    ref: str | None = None  # echoed in an error refusing the hello (e.g. `name_taken`)
    resume: str | None = None  # the welcome's `resume` secret: take one's place back
    token: str | None = None  # token mode only: the signed token, verified by the session


@dataclass(frozen=True, slots=True)
class Say:
    """A chat message to broadcast to the sender's room."""

    text: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """ "I am typing", forwarded to the other members (throttled)."""


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A page of the room's retained history, for the sender alone: up to
    `limit` events with ids below `before` (below none: the newest)."""

    before: int | None = None
    limit: int = HISTORY_PAGE
    ref: str | None = None


Command = Hello | Say | Typing | HistoryRequest


# --------------------------------------------------------------------------
# Parsing client frames


def parse_command(frame: str, *, joined: bool, token_mode: bool = False) -> Command:
    """Parse one client message (a complete text frame) into a command.

    Args:
        frame: the reassembled text of the frame.
        joined: whether the session has completed its hello; it decides
            between `not_joined` and `already_joined` and the other errors,
            in the precedence the protocol states.
        token_mode: whether the server requires a token: then a hello must
            carry one (a string), and its `name` is optional; otherwise any
            `token` is ignored, as a v1 server would.

    Raises:
        ProtocolError: with the code the client should receive;
            `Unauthorized` (a subclass) for a hello in token mode without a
            usable token: the session then closes with 1008.
    """
    obj = _decode_object(frame)
    ref = _usable_ref(obj.get("ref"))
    kind = obj.get("type")
    if not joined:
        if kind != "hello":
            raise ProtocolError(ErrorCode.NOT_JOINED, "send hello first", ref)
        return _parse_hello(obj, ref, token_mode=token_mode)
    if kind == "say":
        return _parse_say(obj, ref)
    if kind == "typing":
        return Typing()
    if kind == "history":
        return _parse_history(obj, ref)
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


def _parse_hello(obj: dict[str, Any], ref: str | None, *, token_mode: bool) -> Hello:
    token: str | None = None
    if token_mode:
        raw_token = obj.get("token")
        if raw_token is None:
            raise Unauthorized(
                RefusalReason.MISSING_TOKEN, "this server requires a 'token' in hello", ref
            )
        if not (isinstance(raw_token, str) and 0 < len(raw_token) <= MAX_TOKEN_LENGTH):
            raise Unauthorized(RefusalReason.BAD_TOKEN, "the token is malformed", ref)
        token = raw_token
    name = obj.get("name")
    if token is not None and name is None:
        name = ""  # the token names its holder
    elif not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "hello needs a string 'name'", ref)
    room = obj.get("room", DEFAULT_ROOM)
    if room is None:
        room = DEFAULT_ROOM
    if not isinstance(room, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'room' must be a string", ref)
    since = obj.get("since")
    if since is not None and (type(since) is not int or since < 0):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since' must be an integer >= 0", ref)
    epoch = obj.get("epoch")
    if epoch is not None and not (isinstance(epoch, str) and 0 < len(epoch) <= MAX_EPOCH_LENGTH):
        message = f"'epoch' must be a string of 1 to {MAX_EPOCH_LENGTH} characters"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, ref)
    resume = obj.get("resume")
    if resume is not None and not (
        isinstance(resume, str) and 0 < len(resume) <= MAX_RESUME_LENGTH
    ):
        message = f"'resume' must be a string of 1 to {MAX_RESUME_LENGTH} characters"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, ref)
    return Hello(
        name=normalize_name(name, ref) if name or token is None else "",
        room=validate_room(room, ref),
        since=since,
        epoch=epoch,
        ref=ref,
        resume=resume,
        token=token,
    )


def normalize_name(name: str, ref: str | None = None) -> str:
    """Return the canonical form of a display name, or raise `bad_name`.

    NFC first, so that the same visible name typed on two keyboards is one
    name; then trimmed; then 1 to 32 characters of which none is a control,
    private-use or unassigned character (in this Python's Unicode version), and
    none is invisible: no format character (Cf: direction controls, zero-width
    spaces, BOM, tags...) and no blank filler. The exceptions that scripts and
    emoji need: ZWNJ and ZWJ between a visible character (or its combining
    marks) and a visible character, and a variation selector right after a
    visible character. The name must not start with a combining mark, which
    would attach to whatever a client shows before it, and must contain at
    least one visible character: a letter, number, punctuation or symbol.
    The name is otherwise kept as typed: a fullwidth `A` stays fullwidth.
    """
    if not _is_encodable(name):
        raise ProtocolError(ErrorCode.BAD_NAME, "name is not valid Unicode", ref)
    name = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_NAME, f"name must be 1 to {MAX_NAME_LENGTH} characters", ref
        )
    categories = [unicodedata.category(c) for c in name]
    if not _FORBIDDEN_NAME_CATEGORIES.isdisjoint(categories):
        raise ProtocolError(ErrorCode.BAD_NAME, "name must not contain control characters", ref)
    if not _UNKNOWN_NAME_CATEGORIES.isdisjoint(categories):
        raise ProtocolError(
            ErrorCode.BAD_NAME, "name must not contain unassigned or private-use characters", ref
        )
    for i, c in enumerate(name):
        if c in _JOINERS:
            fits = _joiner_fits(name, i)
        elif _is_variation_selector(c):
            fits = i > 0 and _is_visible(name[i - 1])
        else:
            fits = categories[i] != "Cf" and c not in _BLANK_CHARACTERS
        if not fits:
            raise ProtocolError(
                ErrorCode.BAD_NAME,
                "name must not contain invisible or direction-control characters",
                ref,
            )
    if categories[0].startswith("M"):
        raise ProtocolError(ErrorCode.BAD_NAME, "name must not start with a combining mark", ref)
    if not any(_is_visible(c) for c in name):
        raise ProtocolError(
            ErrorCode.BAD_NAME,
            "name must contain a letter, number, punctuation mark or symbol",
            ref,
        )
    return name


def _is_visible(c: str) -> bool:
    """A letter, number, punctuation or symbol that draws something."""
    return unicodedata.category(c)[0] in "LNPS" and c not in _BLANK_CHARACTERS


def _joiner_fits(name: str, i: int) -> bool:
    """Whether the ZWNJ or ZWJ at `name[i]` joins two visible characters.

    What comes before may be a combining mark: a virama (Devanagari KA,
    VIRAMA, ZWJ, SSA) or an emoji presentation selector (HEAVY BLACK HEART,
    VS16, ZWJ, FIRE) sits between the visible character and the joiner. Marks
    only ever follow a visible character or a space, since a name cannot start
    with one.
    """
    if not 0 < i < len(name) - 1:
        return False
    before = name[i - 1]
    return (_is_visible(before) or unicodedata.category(before).startswith("M")) and _is_visible(
        name[i + 1]
    )


def _is_variation_selector(c: str) -> bool:
    code = ord(c)
    return (
        0x180B <= code <= 0x180D  # Mongolian free variation selectors
        or code == 0x180F
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
    )


def name_keys(name: str) -> frozenset[str]:
    """The forms in which a name is compared with the other names of its room.

    Two names clash when they share a key. Each key is a UTS #39 skeleton with
    case folded until it settles (see `name_key`), reached in one of two ways:

    1. `name_key`, case folded first: `ALICE` and `alice` share `alice`.
    2. The skeleton first: `aIice` (a capital i) looks like `alice`, `BOB`
       spelled with a Cyrillic capital Ve looks like `BOB`, and so like `bob`.
       Folding first would lose both: `i` does not look like `l`, and the
       small Cyrillic ve does not look like `b`.

    Both drop invisible characters and map look-alikes (a fullwidth `A`, a
    Cyrillic `a`) to one prototype. Never show a key: it is for comparison.
    """
    return frozenset((name_key(name), name_key(_looks(name))))


def name_key(name: str) -> str:
    """The case-insensitive look of a name: equal keys mean look-alike names.

    The UTS #39 skeleton of the case-folded name, repeated until it settles
    (a skeleton may hold capitals: `0` looks like `O`, which folds to `o`), so
    that `name_key(name_key(x)) == name_key(x)`. Runs of white space count as
    one space, as a browser shows them.
    """
    key = name
    for _ in range(_MAX_KEY_ROUNDS):
        folded = _looks(key.casefold())
        if folded == key:
            break
        key = folded
    return key


def _looks(name: str) -> str:
    return " ".join(skeleton(name).split())


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


def _parse_history(obj: dict[str, Any], ref: str | None) -> HistoryRequest:
    before = obj.get("before")
    if before is not None and (type(before) is not int or before < 1):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'before' must be an integer >= 1", ref)
    limit = obj.get("limit", HISTORY_PAGE)
    if type(limit) is not int or not 1 <= limit <= MAX_HISTORY_PAGE:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"'limit' must be an integer from 1 to {MAX_HISTORY_PAGE}", ref
        )
    return HistoryRequest(before, limit, ref)


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


def typing_sender(line: bytes) -> str:
    """The `name` of a `typing_event` line (as heard from another process).

    Raises:
        ValueError: `line` is not a typing event.
    """
    event = json.loads(line)
    if not isinstance(event, dict) or event.get("type") != "typing":
        raise ValueError("not a typing event")
    name = event.get("name")
    if not isinstance(name, str):
        raise ValueError("a typing event with no name")  # noqa: TRY004 (bad data, not a bad call)
    return name


def error_event(code: ErrorCode, message: str, ref: str | None = None) -> bytes:
    event: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if ref is not None:
        event["ref"] = ref
    return encode(event)


def history_event(room: str, lines: list[bytes], *, more: bool, ref: str | None = None) -> bytes:
    """The answer to a `history` request: the stored event `lines`, oldest
    first, embedded as they are (each is already a JSON object), and whether
    older ones are retained."""
    head = encode({"type": "history", "room": room})[:-1]
    tail = {"more": more} if ref is None else {"more": more, "ref": ref}
    return b'%s,"events":[%s],%s' % (head, b",".join(lines), encode(tail)[1:])


def welcome_event(
    room: str,
    name: str,
    members: list[str],
    last_id: int,
    *,
    epoch: str,
    recovered: bool | None,
    resume: str | None = None,
) -> bytes:
    event: dict[str, Any] = {
        "type": "welcome",
        "room": room,
        "name": name,
        "members": members,
        "last_id": last_id,
        "epoch": epoch,
    }
    if recovered is not None:
        event["recovered"] = recovered
    if resume is not None:
        event["resume"] = resume
    return encode(event)


_MESSAGE_HEAD: Final = b'{"type":"message",'


def message_author_and_ref(line: bytes) -> tuple[str, str] | None:
    """The `name` and `ref` of a stored `message` line that carries a ref, else
    None (other events, messages without a ref, or a line that is no event)."""
    if not line.startswith(_MESSAGE_HEAD) or b'"ref":' not in line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    name, ref = event.get("name"), event.get("ref")
    if isinstance(name, str) and isinstance(ref, str):
        return name, ref
    return None
