"""Tests of the WebSocket helpers: text framing, upgrade checks, origin policy."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from trio_chat.websocket import (
    UpgradeRefused,
    accept_upgrade,
    encode_text_frame,
    normalize_origin,
    origin_allowed,
)

# --------------------------------------------------------------------------
# Text frames, read back by wsproto's client side


def client_reads(data: bytes, *, chunk: int | None = None) -> list[str]:
    """The complete text messages a wsproto client parses from `data`."""
    client = Connection(ConnectionType.CLIENT)
    step = chunk or max(len(data), 1)
    messages: list[str] = []
    parts: list[str] = []
    for start in range(0, len(data), step):
        client.receive_data(data[start : start + step])
        for event in client.events():
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                messages.append("".join(parts))
                parts = []
    assert parts == []  # no half-read message left over
    return messages


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)],
)
def test_text_frame_round_trips_through_wsproto(size: int, header: int) -> None:
    payload = ("x" * size).encode()
    frame = encode_text_frame(payload)
    assert len(frame) == header + size  # the shortest length encoding
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] & 0x80 == 0  # a server's frames are not masked
    assert client_reads(frame) == ["x" * size]


def test_several_frames_in_one_read() -> None:
    lines = ['{"type":"typing"}', "é" * 200, "", "z" * 70000]
    data = b"".join(encode_text_frame(line.encode()) for line in lines)
    assert client_reads(data) == lines
    assert client_reads(data, chunk=997) == lines


@settings(max_examples=150, deadline=None)
@given(
    text=st.text() | st.text(min_size=100, max_size=300).map(lambda s: s * 300),
    chunk=st.none() | st.integers(min_value=1, max_value=4096),
)
def test_any_text_round_trips_through_wsproto(text: str, chunk: int | None) -> None:
    assert client_reads(encode_text_frame(text.encode()), chunk=chunk) == [text]


# --------------------------------------------------------------------------
# Upgrade requests

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


def upgrade_headers(**changes: str | None) -> dict[str, str]:
    """A valid upgrade request's headers; a None value removes that header."""
    headers = {
        "host": "localhost:8080",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-version": "13",
        "sec-websocket-key": RFC_KEY,
    }
    for field, value in changes.items():
        name = field.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def refusal(headers: dict[str, str]) -> int:
    with pytest.raises(UpgradeRefused) as info:
        accept_upgrade(headers)
    return info.value.status


def test_rfc6455_example_key() -> None:
    assert accept_upgrade(upgrade_headers()) == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", RFC_ACCEPT),
    ]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"upgrade": "WebSocket"}, id="upgrade-mixed-case"),
        pytest.param({"connection": "keep-alive, Upgrade"}, id="connection-list"),
        pytest.param({"connection": "upgrade"}, id="connection-lower-case"),
        pytest.param({"sec_websocket_key": f" {RFC_KEY} "}, id="key-with-spaces-around"),
    ],
)
def test_valid_upgrade_variants(changes: dict[str, str]) -> None:
    accept = dict(accept_upgrade(upgrade_headers(**changes)))
    assert accept["Sec-WebSocket-Accept"] == RFC_ACCEPT


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"upgrade": None}, id="no-upgrade"),
        pytest.param({"upgrade": "h2c"}, id="other-upgrade"),
        pytest.param({"upgrade": "websocket2"}, id="websocket-prefix"),
        pytest.param({"connection": None}, id="no-connection"),
        pytest.param({"connection": "keep-alive"}, id="connection-without-upgrade"),
        pytest.param({"sec_websocket_version": None}, id="no-version"),
        pytest.param({"sec_websocket_version": "8"}, id="version-8"),
        pytest.param({"sec_websocket_version": "12"}, id="version-12"),
        pytest.param({"sec_websocket_version": "13, 8"}, id="version-list"),
    ],
)
def test_not_a_websocket_13_upgrade_is_426(changes: dict[str, str | None]) -> None:
    assert refusal(upgrade_headers(**changes)) == 426
    with pytest.raises(UpgradeRefused) as info:
        accept_upgrade(upgrade_headers(**changes))
    # RFC 9110 15.5.22 and 7.8: a 426 names the upgrade; RFC 6455 4.2.2: the version.
    assert dict(info.value.headers) == {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
    }


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("abc", id="short"),
        pytest.param(RFC_KEY[:-1], id="23-chars"),
        pytest.param(RFC_KEY + "A", id="25-chars"),
        pytest.param("\u00e9" * 24, id="non-ascii"),
        # RFC 6455 4.2.1: the key must be base64 of 16 bytes, or 400.
        pytest.param("not a websocket key!!!!!", id="24-chars-not-base64"),
        pytest.param("A" * 24, id="24-chars-decoding-to-18-bytes"),
    ],
)
def test_bad_key_is_400(key: str | None) -> None:
    assert refusal(upgrade_headers(sec_websocket_key=key)) == 400


# --------------------------------------------------------------------------
# Origins


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("HTTP://LocalHost:8080", "http://localhost:8080"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://example.com:443", "http://example.com:443"),
        ("http://example.com/", "http://example.com"),
        (" https://example.com ", "https://example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("null", None),
        ("", None),
        ("example.com", None),
        ("ws://example.com", None),
        ("file:///etc/passwd", None),
        ("chrome-extension://abcdef", None),
        ("http://example.com/path", None),
        ("http://example.com:99999", None),
        ("http://example.com:port", None),
        ("http://", None),
        ("http://[::1", None),
    ],
)
def test_normalize_origin(origin: str, expected: str | None) -> None:
    assert normalize_origin(origin) == expected


ALLOWED = ("https://chat.example.com",)


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        # No Origin: a non-browser client.
        (None, "localhost:8080", (), True),
        (None, None, (), True),
        # Same host and port as the request.
        ("http://localhost:8080", "localhost:8080", (), True),
        ("http://LOCALHOST:8080", "localhost:8080", (), True),
        ("http://localhost:8080", "LocalHost:8080", (), True),
        ("http://example.com", "example.com:80", (), True),
        ("http://example.com:80", "example.com", (), True),
        ("https://example.com", "example.com:443", (), True),
        ("https://example.com:443", "example.com", (), True),
        ("http://[::1]:8080", "[::1]:8080", (), True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", (), True),
        # Different port or host.
        ("http://localhost:8081", "localhost:8080", (), False),
        ("http://localhost:8080", "localhost", (), False),
        ("http://example.com", "example.com:443", (), False),
        ("http://[::1]:8081", "[::1]:8080", (), False),
        ("http://evil.com:8080", "localhost:8080", (), False),
        ("http://localhost.evil.com:8080", "localhost:8080", (), False),
        ("http://localhost:8080", None, (), False),
        # Opaque and malformed origins.
        ("null", "localhost:8080", (), False),
        ("file://", "localhost:8080", (), False),
        ("http://localhost:8080/x", "localhost:8080", (), False),
        # The allowed list: exact match of the normalised origin.
        ("https://chat.example.com", "localhost:8080", ALLOWED, True),
        ("https://CHAT.example.com:443", "localhost:8080", ALLOWED, True),
        ("http://chat.example.com", "localhost:8080", ALLOWED, False),
        ("https://chat.example.com:8443", "localhost:8080", ALLOWED, False),
        ("https://chat.example.com.evil.com", "localhost:8080", ALLOWED, False),
        ("https://evil.com", "localhost:8080", ALLOWED, False),
        ("https://example.com", "localhost:8080", ALLOWED, False),
        # "*" allows every origin.
        ("https://evil.com", "localhost:8080", ("*",), True),
        ("null", "localhost:8080", ("*",), True),
        ("https://evil.com", None, ("*",), True),
    ],
)
def test_origin_allowed(
    origin: str | None, host: str | None, allowed: Collection[str], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected
