"""Tests of the wire format: parsing client frames and encoding server events."""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from glyphguard import ucd
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from trio_chat.core import protocol
from trio_chat.core.protocol import (
    DEFAULT_ROOM,
    Command,
    ErrorCode,
    Hello,
    LeaveReason,
    ProtocolError,
    Say,
    Typing,
    error_event,
    format_timestamp,
    join_event,
    leave_event,
    message_event,
    name_key,
    name_keys,
    normalize_name,
    parse_command,
    typing_event,
    welcome_event,
)

# --------------------------------------------------------------------------
# Helpers


def frame(**fields: Any) -> str:
    """A client frame holding `fields` (ASCII JSON, so lone surrogates survive)."""
    return json.dumps(fields)


def refused(text: str, *, joined: bool) -> ProtocolError:
    """The ProtocolError `parse_command` raises for `text` (fails if it parses)."""
    with pytest.raises(ProtocolError) as info:
        parse_command(text, joined=joined)
    return info.value


def error_code(text: str, *, joined: bool) -> ErrorCode:
    return refused(text, joined=joined).code


def hello(**fields: Any) -> Command:
    return parse_command(frame(type="hello", **fields), joined=False)


def say(**fields: Any) -> Command:
    return parse_command(frame(type="say", **fields), joined=True)


# --------------------------------------------------------------------------
# bad_json

NOT_A_JSON_OBJECT = [
    pytest.param("[]", id="array"),
    pytest.param('"x"', id="string"),
    pytest.param("1", id="number"),
    pytest.param("null", id="null"),
    pytest.param("true", id="true"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("{", id="truncated"),
    pytest.param("{'type': 'hello'}", id="single-quotes"),
    pytest.param('{"type": "hello"} {}', id="two-objects"),
    pytest.param('{"type": "hello",}', id="trailing-comma"),
    pytest.param("NaN", id="nan"),
    pytest.param('{"type": "say", "text": NaN}', id="nan-inside"),
    pytest.param('{"type": "say", "text": Infinity}', id="infinity-inside"),
    pytest.param('{"type": "say", "text": -Infinity}', id="minus-infinity-inside"),
    pytest.param("[" * 100_000, id="deep-nesting-recursion"),
    pytest.param('{"type": ' + "[" * 100_000 + "]" * 100_000 + "}", id="deep-nested-value"),
    pytest.param("1" * 5000, id="5000-digit-int"),
    pytest.param('{"type": "hello", "since": ' + "9" * 5000 + "}", id="5000-digit-since"),
]


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("text", NOT_A_JSON_OBJECT)
def test_not_a_json_object_is_bad_json(text: str, joined: bool) -> None:
    error = refused(text, joined=joined)
    assert error.code is ErrorCode.BAD_JSON
    assert error.ref is None


# --------------------------------------------------------------------------
# not_joined and already_joined

BEFORE_HELLO = [
    pytest.param(frame(type="say", text="hi"), id="say"),
    pytest.param(frame(type="say"), id="say-without-text"),
    pytest.param(frame(type="say", text=5), id="say-with-number-text"),
    pytest.param(frame(type="say", text=""), id="say-empty"),
    pytest.param(frame(type="typing"), id="typing"),
    pytest.param(frame(type="bogus"), id="unknown-type"),
    pytest.param(frame(), id="no-type"),
    pytest.param(frame(type=1), id="number-type"),
    pytest.param(frame(type=None), id="null-type"),
    pytest.param(frame(type="HELLO", name="alice"), id="hello-in-capitals"),
]


@pytest.mark.parametrize("text", BEFORE_HELLO)
def test_anything_but_hello_before_join_is_not_joined(text: str) -> None:
    assert error_code(text, joined=False) is ErrorCode.NOT_JOINED


@pytest.mark.parametrize(
    "text",
    [
        frame(type="hello", name="alice"),
        frame(type="hello"),
        frame(type="hello", name=5, room=[]),
    ],
)
def test_hello_after_join_is_already_joined(text: str) -> None:
    assert error_code(text, joined=True) is ErrorCode.ALREADY_JOINED


# --------------------------------------------------------------------------
# bad_request

BAD_HELLO = [
    pytest.param({}, id="no-name"),
    pytest.param({"name": None}, id="null-name"),
    pytest.param({"name": 5}, id="number-name"),
    pytest.param({"name": ["alice"]}, id="list-name"),
    pytest.param({"name": "alice", "room": 5}, id="number-room"),
    pytest.param({"name": "alice", "room": ["lobby"]}, id="list-room"),
    pytest.param({"name": "alice", "room": True}, id="bool-room"),
    pytest.param({"name": "alice", "since": True}, id="since-true"),
    pytest.param({"name": "alice", "since": False}, id="since-false"),
    pytest.param({"name": "alice", "since": -1}, id="since-negative"),
    pytest.param({"name": "alice", "since": 1.0}, id="since-float-integral"),
    pytest.param({"name": "alice", "since": 1.5}, id="since-float"),
    pytest.param({"name": "alice", "since": "3"}, id="since-string"),
    pytest.param({"name": "alice", "since": [3]}, id="since-list"),
    pytest.param({"name": "alice", "epoch": 5}, id="number-epoch"),
    pytest.param({"name": "alice", "epoch": ""}, id="empty-epoch"),
    pytest.param({"name": "alice", "epoch": "e" * 65}, id="long-epoch"),
    pytest.param({"name": "alice", "epoch": ["e"]}, id="list-epoch"),
    pytest.param({"name": "alice", "resume": 5}, id="number-resume"),
    pytest.param({"name": "alice", "resume": ""}, id="empty-resume"),
    pytest.param({"name": "alice", "resume": "r" * 65}, id="long-resume"),
    pytest.param({"name": "alice", "resume": {"s": 1}}, id="object-resume"),
]


@pytest.mark.parametrize("fields", BAD_HELLO)
def test_malformed_hello_is_bad_request(fields: dict[str, Any]) -> None:
    assert error_code(frame(type="hello", **fields), joined=False) is ErrorCode.BAD_REQUEST


BAD_SAY = [
    pytest.param({}, id="no-text"),
    pytest.param({"text": None}, id="null-text"),
    pytest.param({"text": 5}, id="number-text"),
    pytest.param({"text": ["hi"]}, id="list-text"),
    pytest.param({"text": {"a": "hi"}}, id="object-text"),
    pytest.param({"text": "hi", "ref": 17}, id="number-ref"),
    pytest.param({"text": "hi", "ref": True}, id="bool-ref"),
    pytest.param({"text": "hi", "ref": ["c-1"]}, id="list-ref"),
    pytest.param({"text": "hi", "ref": "r" * 65}, id="65-char-ref"),
    pytest.param({"text": "hi", "ref": "\ud800"}, id="lone-surrogate-ref"),
    pytest.param({"text": "hi \ud800"}, id="lone-surrogate-text"),
]


@pytest.mark.parametrize("fields", BAD_SAY)
def test_malformed_say_is_bad_request(fields: dict[str, Any]) -> None:
    assert error_code(frame(type="say", **fields), joined=True) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(frame(type="bogus"), id="unknown-type"),
        pytest.param(frame(text="hi"), id="no-type"),
        pytest.param(frame(type=None), id="null-type"),
        pytest.param(frame(type=["say"]), id="list-type"),
        pytest.param(frame(type="SAY", text="hi"), id="say-in-capitals"),
        pytest.param(frame(type="say ", text="hi"), id="say-with-space"),
    ],
)
def test_unknown_type_after_join_is_bad_request(text: str) -> None:
    assert error_code(text, joined=True) is ErrorCode.BAD_REQUEST


def test_deeply_nested_unknown_type_is_still_a_protocol_error() -> None:
    # Nested just below what json accepts: the error message previews `type`.
    for depth in (100, 900, 990):
        text = '{"type": ' + "[" * depth + "]" * depth + "}"
        assert error_code(text, joined=True) in (ErrorCode.BAD_REQUEST, ErrorCode.BAD_JSON)


# --------------------------------------------------------------------------
# bad_name, name normalisation

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("\u3000\t\n", id="unicode-blank"),
    pytest.param("a" * 33, id="33-chars"),
    pytest.param(" " + "a" * 33 + " ", id="33-chars-after-trim"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\x85b", id="c1-control"),
    pytest.param("a\u2028b", id="line-separator"),
    pytest.param("a\u2029b", id="paragraph-separator"),
    pytest.param("al\ud800ice", id="lone-surrogate"),
    pytest.param("\udfff", id="lone-low-surrogate"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name(name: str) -> None:
    error = refused(frame(type="hello", name=name, ref="h-1"), joined=False)
    assert error.code is ErrorCode.BAD_NAME
    assert error.ref == "h-1"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("alice", "alice", id="plain"),
        pytest.param("  alice \t", "alice", id="trimmed"),
        pytest.param("\u3000alice\u00a0", "alice", id="unicode-trimmed"),
        pytest.param("Alice Smith", "Alice Smith", id="inner-space-kept"),
        pytest.param("e\u0301ve", "\u00e9ve", id="nfc-composed"),
        pytest.param("\u212b", "\u00c5", id="angstrom-sign-to-a-ring"),
        pytest.param("a" * 32, "a" * 32, id="32-chars"),
        pytest.param("  " + "b" * 32 + "  ", "b" * 32, id="32-chars-after-trim"),
        pytest.param("e\u0301" * 32, "\u00e9" * 32, id="64-code-points-32-after-nfc"),
        pytest.param("\U0001f600", "\U0001f600", id="emoji"),
    ],
)
def test_name_is_nfc_normalised_and_trimmed(name: str, expected: str) -> None:
    assert hello(name=name) == Hello(name=expected)


# --------------------------------------------------------------------------
# Invisible, direction-control and look-alike names (Unicode UTS #39)

INVISIBLE = "name must not contain invisible or direction-control characters"

INVISIBLE_NAMES = [
    pytest.param("\u200b", id="zero-width-space-only"),
    pytest.param("alice\u200b", id="alice-zero-width-space"),
    pytest.param("al\u200bice", id="zero-width-space-inside"),
    pytest.param("\u200b\u200c\u200d", id="zero-width-only"),
    pytest.param("\u2060alice", id="word-joiner"),
    pytest.param("\ufeffalice", id="bom"),
    pytest.param("ali\u00adce", id="soft-hyphen"),
    pytest.param("a\u2062b", id="invisible-times"),
    pytest.param("alice\U000e0041", id="tag-letter"),
    pytest.param("a\u180eb", id="mongolian-vowel-separator"),
    pytest.param("\u202eecila", id="right-to-left-override"),
    pytest.param("alice\u202e", id="trailing-right-to-left-override"),
    pytest.param("\u202dalice", id="left-to-right-override"),
    pytest.param("\u202aalice\u202c", id="lre-pdf"),
    pytest.param("\u202balice", id="right-to-left-embedding"),
    pytest.param("\u2066alice\u2069", id="lri-pdi"),
    pytest.param("\u2067alice", id="right-to-left-isolate"),
    pytest.param("\u2068alice", id="first-strong-isolate"),
    pytest.param("alice\u200e", id="left-to-right-mark"),
    pytest.param("\u200falice", id="right-to-left-mark"),
    pytest.param("alice\u061c", id="arabic-letter-mark"),
    pytest.param("\u3164", id="hangul-filler-only"),
    pytest.param("alice\u3164", id="hangul-filler-after"),
    pytest.param("\uffa0", id="halfwidth-hangul-filler"),
    pytest.param("\u115f\u1160", id="hangul-choseong-jungseong-fillers"),
    pytest.param("\u2800", id="braille-blank-only"),
    pytest.param("alice\u2800\u2800", id="braille-blank-after"),
    pytest.param("\U0001d159", id="musical-null-notehead"),
    pytest.param("\U00016fe4", id="khitan-filler"),
    pytest.param("a\u034fb", id="combining-grapheme-joiner"),
    pytest.param("\u1780\u17b4", id="khmer-inherent-vowel"),
    # ZWJ, ZWNJ and variation selectors out of place.
    pytest.param("\u200d", id="zwj-only"),
    pytest.param("alice\u200d", id="trailing-zwj"),
    pytest.param("\u200calice", id="leading-zwnj"),
    pytest.param("a\u200d\u200db", id="two-zwj"),
    pytest.param("a \u200db", id="zwj-after-space"),
    pytest.param("a\u200c b", id="zwnj-before-space"),
    pytest.param("a\u200d\u0301", id="zwj-before-a-mark"),
    pytest.param("\ufe0falice", id="leading-variation-selector"),
    pytest.param("a \ufe0fb", id="variation-selector-after-space"),
    pytest.param("\u2764\ufe0f\ufe0f", id="two-variation-selectors"),
    pytest.param("q\u0301\ufe0f", id="variation-selector-after-a-mark"),
]


@pytest.mark.parametrize("name", INVISIBLE_NAMES)
def test_invisible_and_direction_controls_are_refused(name: str) -> None:
    error = refused(frame(type="hello", name=name, ref="h-3"), joined=False)
    assert (error.code, error.message, error.ref) == (ErrorCode.BAD_NAME, INVISIBLE, "h-3")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("\ue000", "unassigned or private-use", id="private-use"),
        pytest.param("alice\U000f0000", "unassigned or private-use", id="private-use-plane-15"),
        pytest.param("a\u0378", "unassigned or private-use", id="unassigned"),
        pytest.param("\ufdd0", "unassigned or private-use", id="noncharacter"),
        pytest.param("\u0301alice", "start with a combining mark", id="leading-mark"),
        pytest.param("\u0301\u0302", "start with a combining mark", id="marks-only"),
        pytest.param("\u20e3", "start with a combining mark", id="enclosing-mark-only"),
    ],
)
def test_unknown_characters_and_leading_marks_are_refused(name: str, message: str) -> None:
    error = refused(frame(type="hello", name=name), joined=False)
    assert error.code is ErrorCode.BAD_NAME
    assert message in error.message


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("\u05d0\u05dc\u05d9\u05e1", id="hebrew"),
        pytest.param("\u0639\u0644\u064a", id="arabic"),
        pytest.param("Ali \u0639\u0644\u064a", id="latin-and-arabic"),
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="persian-zwnj"),
        pytest.param("\u0915\u094d\u200d\u0937", id="devanagari-virama-zwj"),
        pytest.param("\u0dc1\u0dca\u200d\u0dbb\u0dd3", id="sinhala-virama-zwj"),
        pytest.param("\U0001f468\u200d\U0001f469\u200d\U0001f467", id="emoji-family-zwj"),
        pytest.param("\u2764\ufe0f\u200d\U0001f525", id="emoji-heart-on-fire"),
        pytest.param("\U0001f3f3\ufe0f\u200d\U0001f308", id="emoji-rainbow-flag"),
        pytest.param("\U0001f9d1\U0001f3fd\u200d\U0001f680", id="emoji-skin-tone-zwj"),
        pytest.param("#\ufe0f\u20e3", id="emoji-keycap"),
        pytest.param("\U0001f1eb\U0001f1f7", id="emoji-flag"),
        pytest.param("\u2764\ufe0f", id="emoji-presentation-selector"),
        pytest.param("\u845b\U000e0100", id="ideographic-variation-sequence"),
        pytest.param("\uff21lice", id="fullwidth-kept-as-typed"),
        pytest.param("\u0430lice", id="cyrillic-kept-as-typed"),
        pytest.param("al ice", id="inner-space"),
        pytest.param(".", id="punctuation"),
        pytest.param("\u00b0", id="symbol"),
    ],
)
def test_right_to_left_emoji_and_joined_scripts_are_accepted(name: str) -> None:
    assert hello(name=name) == Hello(name=name)


def clash(a: str, b: str) -> bool:
    """Whether `a` and `b` count as one name in a room."""
    return not name_keys(a).isdisjoint(name_keys(b))


LOOK_ALIKES_OF_ALICE = [
    pytest.param("alice", id="same"),
    pytest.param("ALICE", id="capitals"),
    pytest.param("Alice", id="capital-a"),
    pytest.param("\uff21lice", id="fullwidth-capital-a"),
    pytest.param("\uff41lice", id="fullwidth-a"),
    pytest.param("\uff41\uff4c\uff49\uff43\uff45", id="all-fullwidth"),
    pytest.param("\u0430lice", id="cyrillic-a"),
    pytest.param("alic\u0435", id="cyrillic-e"),
    pytest.param("al\u0456ce", id="cyrillic-i"),
    pytest.param("\U0001d41alice", id="mathematical-bold-a"),
    pytest.param("aIice", id="capital-i-for-l"),
    pytest.param("a1ice", id="digit-one-for-l"),
    pytest.param("al\u200dice", id="zwj-between-letters"),
    pytest.param("al\u200cice", id="zwnj-between-letters"),
    pytest.param("a\ufe0flice", id="variation-selector"),
]


@pytest.mark.parametrize("name", LOOK_ALIKES_OF_ALICE)
def test_look_alikes_are_accepted_as_typed_but_clash(name: str) -> None:
    assert normalize_name(name) == name
    assert clash(name, "alice")
    assert clash("alice", name)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("Bob", "\u0412ob", id="cyrillic-capital-ve"),
        pytest.param("bob", "\u0412OB", id="cyrillic-capital-ve-in-capitals"),
        pytest.param("mary", "rnary", id="r-n-for-m"),
        pytest.param("paypal", "\u0440\u0430ypal", id="cyrillic-er-a"),
        pytest.param("Olga", "0lga", id="zero-for-o"),
        pytest.param("al ice", "al  ice", id="two-spaces"),
        pytest.param("al ice", "al\u00a0ice", id="no-break-space"),
        pytest.param("\u00e9ve", "e\u0301ve", id="nfc"),
        pytest.param("stra\u00dfe", "STRASSE", id="sharp-s"),
    ],
)
def test_other_look_alikes_clash(a: str, b: str) -> None:
    assert clash(a, b)


@pytest.mark.parametrize(
    "name",
    [
        "bob",
        "alicia",
        "malice",
        "alice2",
        "al ice",
        "aiice",
        "al\u00ecce",
        "\u0430\u043b\u0438\u0441\u0430",
    ],
)
def test_different_names_do_not_clash(name: str) -> None:
    assert not clash(name, "alice")


def test_name_keys_fold_case_before_and_after_the_skeleton() -> None:
    assert name_keys("alice") == {"alice"}
    assert name_keys("aIice") == {"aiice", "alice"}  # a capital i looks like l
    assert name_keys("ALICE") == {"alice", "allce"}
    assert name_keys("\u0412OB") == {"\u0299ob", "bob"}  # Cyrillic capital Ve looks like B
    assert name_key("\uff21LICE") == name_key("alice") == "alice"


DEFAULT_IGNORABLE = [
    chr(code)
    for start, end in ucd.property_ranges("DEFAULT_IGNORABLE")
    for code in range(start, end + 1)
]
JOINERS_AND_SELECTORS = {
    c
    for c in DEFAULT_IGNORABLE
    if ucd.is_join_control(ord(c)) or ucd.is_variation_selector(ord(c))
}


def test_every_default_ignorable_is_refused_or_ignored() -> None:
    """Each Default_Ignorable_Code_Point of Unicode, between two letters."""
    assert len(DEFAULT_IGNORABLE) > 4000
    assert len(JOINERS_AND_SELECTORS) == 2 + 4 + 16 + 240
    for c in DEFAULT_IGNORABLE:
        name = f"a{c}b"
        if c in JOINERS_AND_SELECTORS:
            assert normalize_name(name) == name
            assert name_keys(name) == name_keys("ab")
        else:
            with pytest.raises(ProtocolError) as info:
                normalize_name(name)
            assert info.value.code is ErrorCode.BAD_NAME, hex(ord(c))


def test_every_format_character_but_the_joiners_is_refused() -> None:
    for code in range(0x110000):
        c = chr(code)
        if unicodedata.category(c) == "Cf" and c not in "\u200c\u200d":
            with pytest.raises(ProtocolError, match="invisible or direction-control"):
                normalize_name(f"a{c}b")


def test_name_key_settles_for_every_character() -> None:
    """Case folding and skeleton settle: the key of a key is itself."""
    for code in range(0x110000):
        c = chr(code)
        if unicodedata.category(c) not in ("Cn", "Cs", "Co"):
            key = name_key(c)
            assert name_key(key) == key, hex(code)
            assert name_key(c.upper()) == name_key(c.lower()) == key, hex(code)


# Names a person might pick: letters of several scripts, digits, marks,
# emoji and spaces (the rules decide which are valid).
name_characters = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Cf", "Zl", "Zp"))
names = st.text(name_characters, min_size=1, max_size=16) | st.sampled_from(
    ["alice", "Bob", "\u05d0\u05dc\u05d9\u05e1", "\U0001f468\U0001f469\U0001f467", "\u0915\u0937"]
)


def valid(name: str) -> str:
    """`name` normalised, or the example is skipped if it is not a valid name."""
    try:
        return normalize_name(name)
    except ProtocolError:
        assume(False)
        raise


@settings(max_examples=300)
@given(name=names, ignorable=st.sampled_from(DEFAULT_IGNORABLE), at=st.integers(0, 32))
@example(name="alice", ignorable="\u200d", at=2).via("zwj between letters")
@example(name="\u00e9", ignorable="\ufe0f", at=1).via("selector after a composed letter")
def test_an_inserted_ignorable_is_refused_or_changes_no_key(
    name: str, ignorable: str, at: int
) -> None:
    name = valid(name)
    at = min(at, len(name))
    longer = name[:at] + ignorable + name[at:]
    outcome = name_or_error(longer)
    if isinstance(outcome, ProtocolError):
        assert outcome.code is ErrorCode.BAD_NAME
    else:
        assert name_keys(outcome) == name_keys(name)


def name_or_error(name: str) -> str | ProtocolError:
    try:
        return normalize_name(name)
    except ProtocolError as error:
        return error


@settings(max_examples=300)
@given(text=st.text())
def test_name_key_is_a_normal_form_and_ignores_case(text: str) -> None:
    key = name_key(text)
    assert name_key(key) == key
    assert name_key(text.casefold()) == name_key(text.upper()) == name_key(text.lower()) == key
    assert key in name_keys(text)
    assert all(name_key(other) == other for other in name_keys(text))


@settings(max_examples=300)
@given(name=names)
def test_a_valid_name_has_a_visible_character_and_no_format_one_out_of_place(name: str) -> None:
    name = valid(name)
    categories = [unicodedata.category(c) for c in name]
    assert any(cat[0] in "LNPS" for cat in categories)
    assert not categories[0].startswith("M")
    for i, c in enumerate(name):
        if categories[i] == "Cf":
            assert c in "\u200c\u200d"
            assert 0 < i < len(name) - 1


# --------------------------------------------------------------------------
# bad_room, room default

BAD_ROOMS = [
    pytest.param("", id="empty"),
    pytest.param("r" * 65, id="65-chars"),
    pytest.param("two words", id="space"),
    pytest.param(" lobby", id="leading-space"),
    pytest.param("a/b", id="slash"),
    pytest.param("a:b", id="colon"),
    pytest.param("caf\u00e9", id="unicode-letter"),
    pytest.param("\uff41", id="fullwidth-letter"),
    pytest.param("\u0661", id="arabic-digit"),
    pytest.param("lobby\n", id="trailing-newline"),
    pytest.param("\nlobby", id="leading-newline"),
    pytest.param("lob\x00by", id="nul"),
]


@pytest.mark.parametrize("room", BAD_ROOMS)
def test_bad_room(room: str) -> None:
    error = refused(frame(type="hello", name="alice", room=room, ref="h-2"), joined=False)
    assert error.code is ErrorCode.BAD_ROOM
    assert error.ref == "h-2"


@pytest.mark.parametrize(
    "room", ["a", "lobby", "Room_1", "a-b.c", "r" * 64, "0", ".", "A-Za-z0-9_-."]
)
def test_valid_room_is_kept_verbatim(room: str) -> None:
    assert hello(name="alice", room=room) == Hello(name="alice", room=room)


@pytest.mark.parametrize("fields", [{}, {"room": None}])
def test_missing_or_null_room_means_default(fields: dict[str, Any]) -> None:
    assert hello(name="alice", **fields) == Hello(name="alice", room=DEFAULT_ROOM)
    assert DEFAULT_ROOM == "lobby"


@pytest.mark.parametrize(
    ("fields", "since"),
    [({}, None), ({"since": None}, None), ({"since": 0}, 0), ({"since": 41}, 41)],
)
def test_since(fields: dict[str, Any], since: int | None) -> None:
    assert hello(name="alice", **fields) == Hello(name="alice", since=since)


@pytest.mark.parametrize(
    ("fields", "epoch"),
    [({}, None), ({"epoch": None}, None), ({"epoch": "e"}, "e"), ({"epoch": "é" * 64}, "é" * 64)],
)
def test_epoch(fields: dict[str, Any], epoch: str | None) -> None:
    assert hello(name="alice", since=3, **fields) == Hello(name="alice", since=3, epoch=epoch)


@pytest.mark.parametrize(
    ("fields", "resume"),
    [
        ({}, None),
        ({"resume": None}, None),
        ({"resume": "s"}, "s"),
        ({"resume": "é" * 64}, "é" * 64),
    ],
)
def test_resume(fields: dict[str, Any], resume: str | None) -> None:
    assert hello(name="alice", **fields) == Hello(name="alice", resume=resume)


def test_huge_since_is_accepted_as_an_integer() -> None:
    assert hello(name="alice", since=10**30) == Hello(name="alice", since=10**30)


# --------------------------------------------------------------------------
# say: empty_text, text_too_long, trimming, ref


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" ", id="space"),
        pytest.param("\n\t\r ", id="ascii-white-space"),
        pytest.param("\u3000\u00a0", id="ideographic-and-nbsp"),
        pytest.param("\u2003\u2028\u2029\u0085\u1680", id="more-unicode-white-space"),
    ],
)
def test_blank_text_is_empty_text(text: str) -> None:
    error = refused(frame(type="say", text=text, ref="c-1"), joined=True)
    assert error.code is ErrorCode.EMPTY_TEXT
    assert error.ref == "c-1"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * 4001, id="4001"),
        pytest.param(" " + "x" * 4001 + "\n", id="4001-after-trim"),
        pytest.param("\U0001f600" * 4001, id="4001-astral"),
    ],
)
def test_long_text_is_text_too_long(text: str) -> None:
    error = refused(frame(type="say", text=text, ref="c-2"), joined=True)
    assert error.code is ErrorCode.TEXT_TOO_LONG
    assert error.ref == "c-2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("hi", "hi", id="plain"),
        pytest.param("x" * 4000, "x" * 4000, id="4000"),
        pytest.param("\n  " + "x" * 4000 + "\u3000", "x" * 4000, id="4000-after-trim"),
        pytest.param("  line1\nline2\n\n", "line1\nline2", id="inner-newline-kept"),
        pytest.param("\u00a0a  \t b\u3000", "a  \t b", id="inner-white-space-kept"),
    ],
)
def test_say_text_is_trimmed(text: str, expected: str) -> None:
    assert say(text=text) == Say(text=expected)


@pytest.mark.parametrize("ref", ["", "c-17", "r" * 64, "\u00e9\U0001f600"])
def test_say_ref_is_kept(ref: str) -> None:
    assert say(text="hi", ref=ref) == Say(text="hi", ref=ref)


def test_say_null_ref_is_no_ref() -> None:
    assert say(text="hi", ref=None) == Say(text="hi", ref=None)


def test_typing() -> None:
    assert parse_command(frame(type="typing"), joined=True) == Typing()


# --------------------------------------------------------------------------
# ref echoed in errors


@pytest.mark.parametrize(
    ("text", "joined", "code"),
    [
        (frame(type="say", text="hi", ref="r1"), False, ErrorCode.NOT_JOINED),
        (frame(type="hello", name="a", ref="r1"), True, ErrorCode.ALREADY_JOINED),
        (frame(type="nope", ref="r1"), True, ErrorCode.BAD_REQUEST),
        (frame(type="say", text=3, ref="r1"), True, ErrorCode.BAD_REQUEST),
        (frame(type="hello", name=3, ref="r1"), False, ErrorCode.BAD_REQUEST),
        (frame(type="hello", name="a", room="?", ref="r1"), False, ErrorCode.BAD_ROOM),
        (frame(type="say", text="", ref="r1"), True, ErrorCode.EMPTY_TEXT),
    ],
)
def test_usable_ref_is_echoed_in_the_error(text: str, joined: bool, code: ErrorCode) -> None:
    error = refused(text, joined=joined)
    assert (error.code, error.ref) == (code, "r1")


@pytest.mark.parametrize("ref", [17, "r" * 65, "\ud800", ["r1"]])
def test_unusable_ref_is_not_echoed(ref: object) -> None:
    error = refused(frame(type="nope", ref=ref), joined=True)
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)


# --------------------------------------------------------------------------
# Property: any input is either a command or a ProtocolError


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis reads its source to check that it uses
    # `children`, which a lambda over several lines does not always allow.
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=5), children, max_size=4
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities become the NaN / Infinity constants
    | st.text(st.characters(exclude_categories=())),  # lone surrogates included
    json_containers,
    max_leaves=12,
)
FIELDS = ["type", "name", "room", "since", "epoch", "resume", "text", "ref"]
command_like = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=3),
    st.sampled_from(["hello", "say", "typing"]) | json_values,
    max_size=6,
)
frames = (
    st.text()
    | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))
    | json_values.map(json.dumps)
    | command_like.map(json.dumps)
    | command_like.map(lambda obj: json.dumps(obj, ensure_ascii=False))
)


@settings(max_examples=400, deadline=None)
@given(text=frames, joined=st.booleans())
def test_any_frame_is_a_command_or_a_protocol_error(text: str, joined: bool) -> None:
    outcome = parse_or_error(text, joined=joined)  # any other exception fails the test
    if isinstance(outcome, ProtocolError):
        assert isinstance(outcome.code, ErrorCode)
        assert outcome.ref is None or len(outcome.ref) <= 64
    elif joined:
        assert isinstance(outcome, Say | Typing)
    else:
        assert isinstance(outcome, Hello)


def parse_or_error(text: str, *, joined: bool) -> Command | ProtocolError:
    try:
        return parse_command(text, joined=joined)
    except ProtocolError as error:
        return error


# --------------------------------------------------------------------------
# Encoders

TS = "2026-11-27T19:48:58.123Z"
NASTY = 'a\nb\r\n\u2028\u2029\x00\x1f"\\ \U0001f600 </script>'


def decode_line(line: bytes) -> dict[str, Any]:
    """The event in `line`, checking it is one compact JSON line."""
    assert isinstance(line, bytes)
    assert b"\n" not in line
    assert b"\r" not in line
    event = json.loads(line.decode("utf-8"))
    assert isinstance(event, dict)
    return event


@pytest.mark.parametrize("text", ["hi", NASTY, "x" * 4000])
@pytest.mark.parametrize("ref", [None, "c-1"])
def test_message_event(text: str, ref: str | None) -> None:
    event = decode_line(message_event(7, "lobby", "al\nice", text, TS, ref=ref))
    expected: dict[str, Any] = {
        "type": "message",
        "id": 7,
        "room": "lobby",
        "name": "al\nice",
        "text": text,
        "ts": TS,
    }
    if ref is not None:
        expected["ref"] = ref
    assert event == expected


def test_join_event() -> None:
    assert decode_line(join_event(1, "r", NASTY, TS)) == {
        "type": "join",
        "id": 1,
        "room": "r",
        "name": NASTY,
        "ts": TS,
    }


@pytest.mark.parametrize("reason", list(LeaveReason))
def test_leave_event(reason: LeaveReason) -> None:
    assert decode_line(leave_event(99, "r", NASTY, TS, reason)) == {
        "type": "leave",
        "id": 99,
        "room": "r",
        "name": NASTY,
        "ts": TS,
        "reason": reason.value,
    }


def test_typing_event() -> None:
    assert decode_line(typing_event("r", NASTY)) == {"type": "typing", "room": "r", "name": NASTY}
    assert protocol.typing_sender(typing_event("r", NASTY)) == NASTY


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"typing"',
        b"null",
        b'{"type": "typing"}',
        b'{"type": "typing", "name": 7}',
        b'{"type": "message", "name": "a"}',
        b'{"type": "typing", "name": "a"',
    ],
)
def test_typing_sender_refuses_what_is_not_a_typing_event(line: bytes) -> None:
    # Lines heard from a backplane: whatever they hold, a ValueError, never a crash.
    with pytest.raises(ValueError):  # noqa: PT011 (json's own messages vary)
        protocol.typing_sender(line)


@given(st.binary(max_size=64))
def test_typing_sender_raises_only_value_error(line: bytes) -> None:
    with contextlib.suppress(ValueError):  # anything else fails the test
        protocol.typing_sender(line)


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("ref", [None, "r\n1"])
def test_error_event(code: ErrorCode, ref: str | None) -> None:
    expected: dict[str, Any] = {"type": "error", "code": code.value, "message": NASTY}
    if ref is not None:
        expected["ref"] = ref
    assert decode_line(error_event(code, NASTY, ref)) == expected


@pytest.mark.parametrize("recovered", [None, True, False])
def test_welcome_event(recovered: bool | None) -> None:
    event = decode_line(
        welcome_event("r", "bob", ["alice", NASTY, "bob"], 57, epoch="e1", recovered=recovered)
    )
    expected: dict[str, Any] = {
        "type": "welcome",
        "room": "r",
        "name": "bob",
        "members": ["alice", NASTY, "bob"],
        "last_id": 57,
        "epoch": "e1",
    }
    if recovered is not None:
        expected["recovered"] = recovered
    assert event == expected
    assert ("recovered" in event) is (recovered is not None)


@settings(max_examples=200)
@given(
    text=st.text(),
    name=st.text(),
    room=st.text(),
    event_id=st.integers(min_value=0, max_value=2**53),
    ref=st.none() | st.text(max_size=64),
)
def test_encoded_events_are_single_lines(
    text: str, name: str, room: str, event_id: int, ref: str | None
) -> None:
    lines = [
        message_event(event_id, room, name, text, TS, ref=ref),
        join_event(event_id, room, name, TS),
        leave_event(event_id, room, name, TS, LeaveReason.QUIT),
        typing_event(room, name),
        error_event(ErrorCode.BAD_REQUEST, text, ref),
        welcome_event(room, name, [name, text], event_id, epoch=text, recovered=True),
    ]
    for line in lines:
        event = decode_line(line)
        assert event.get("name", name) == name
        assert event.get("room", room) == room
    assert decode_line(lines[0])["text"] == text
    assert decode_line(lines[0]).get("ref") == ref
    assert decode_line(lines[4])["message"] == text


# --------------------------------------------------------------------------
# Timestamps

RFC3339_MILLIS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1.5, "1970-01-01T00:00:01.500Z"),
        (59.9999, "1970-01-01T00:00:59.999Z"),  # truncated, never rounded up
        (951_782_400.25, "2000-02-29T00:00:00.250Z"),
        (1_795_808_938.125, "2026-11-27T19:48:58.125Z"),
        (4_102_444_799.0, "2099-12-31T23:59:59.000Z"),
    ],
)
def test_format_timestamp_examples(epoch: float, expected: str) -> None:
    assert format_timestamp(epoch) == expected


@given(epoch=st.floats(min_value=0, max_value=4_102_444_800))
def test_format_timestamp_is_rfc3339_millis_utc(epoch: float) -> None:
    ts = format_timestamp(epoch)
    assert RFC3339_MILLIS.fullmatch(ts), ts
    shown = datetime.fromisoformat(ts)
    assert shown.utcoffset() == timedelta(0)
    actual = datetime.fromtimestamp(epoch, UTC)
    # Truncated to the millisecond (a timestamp is never later than the
    # event); a microsecond of slack absorbs float representation error.
    assert timedelta(microseconds=-1) <= actual - shown < timedelta(milliseconds=1, microseconds=1)
