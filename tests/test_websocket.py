"""Tests of the WebSocket helpers: text framing, upgrade checks, origin policy."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from trio_chat.core.websocket import (
    HostPolicy,
    UpgradeRefused,
    accept_upgrade,
    encode_text_frame,
    host_name,
    is_loopback_address,
    normalize_allowed_host,
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


# --------------------------------------------------------------------------
# Host: the DNS-rebinding guard


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("localhost:8080", "localhost"),
        ("LocalHost", "localhost"),
        ("chat.example.org.", "chat.example.org"),
        ("chat.example.org.:443", "chat.example.org"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[::FFFF:127.0.0.1]", "[::ffff:7f00:1]"),
        (" evil.example ", "evil.example"),
        ("", None),
        ("::1", None),  # a Host header brackets an IPv6 literal
        ("[::1", None),
        ("[nope]:80", None),
        ("localhost:", None),
        ("localhost:http", None),
        ("a b", None),
        ("user@localhost", None),
        ("localhost, evil.example", None),  # two Host headers, joined
        ("localhost/x", None),
        (".", None),
        ("..", None),
    ],
)
def test_host_name(host: str, name: str | None) -> None:
    assert host_name(host) == name


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("chat.example.org", False),
        ("", False),
    ],
)
def test_is_loopback_address(bind: str, loopback: bool) -> None:
    assert is_loopback_address(bind) is loopback


LOOPBACK_ONLY = HostPolicy.for_server((), "127.0.0.1")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("localhost", True),
        ("LOCALHOST:1", True),
        ("localhost.:8080", True),
        ("app.localhost:8080", True),
        ("a.b.localhost", True),
        ("127.0.0.1:8080", True),
        ("127.255.0.7", True),
        ("[::1]:8080", True),
        ("[::1]", True),
        # A rebound name, or any name or address that is not loopback's own.
        ("evil.example:8080", False),
        ("localhost.evil.example", False),
        ("evil-localhost", False),
        ("evillocalhost:8080", False),
        ("128.0.0.1:8080", False),
        ("0.0.0.0:8080", False),
        ("10.0.0.1", False),
        ("[::2]:8080", False),
        ("[::ffff:127.0.0.1]", False),
        ("127.1", False),  # not a dotted quad: browsers never send it
        ("", False),
        (None, False),
        ("localhost, evil.example", False),
    ],
)
def test_loopback_bind_accepts_only_loopback_names(host: str | None, allowed: bool) -> None:
    assert LOOPBACK_ONLY.allows(host) is allowed
    assert HostPolicy.for_server((), "::1").allows(host) is allowed
    assert HostPolicy.for_server((), "localhost").allows(host) is allowed


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.10", "chat.example.org"])
@pytest.mark.parametrize("host", ["evil.example:8080", "localhost", "10.0.0.1", "", None])
def test_other_binds_accept_any_host_by_default(bind: str, host: str | None) -> None:
    assert HostPolicy.for_server((), bind).allows(host)


@pytest.mark.parametrize(
    ("allowed", "host", "expected"),
    [
        (["chat.example.org"], "chat.example.org", True),
        (["chat.example.org"], "Chat.Example.Org:8443", True),
        (["chat.example.org"], "chat.example.org.", True),
        (["chat.example.org"], "example.org", False),
        (["chat.example.org"], "a.chat.example.org", False),
        (["chat.example.org"], "chat.example.org.evil", False),
        ([".example.org"], "example.org", True),
        ([".example.org"], "chat.example.org:80", True),
        ([".example.org"], "a.b.example.org", True),
        ([".example.org"], "badexample.org", False),
        ([".example.org"], "example.org.evil", False),
        (["10.0.0.5"], "10.0.0.5:8080", True),
        (["10.0.0.5"], "10.0.0.50", False),
        (["::1"], "[::1]:8080", True),
        (["*"], "anything.example", True),
        (["*"], None, True),
        (["chat.example.org"], None, False),
        (["chat.example.org"], "", False),
        # Given values replace the loopback default, even when bound to loopback.
        (["chat.example.org"], "localhost:8080", False),
        (["chat.example.org", "localhost"], "localhost:8080", True),
    ],
)
def test_allowed_hosts(allowed: list[str], host: str | None, expected: bool) -> None:
    assert HostPolicy.for_server(allowed, "127.0.0.1").allows(host) is expected
    assert HostPolicy.for_server(allowed, "0.0.0.0").allows(host) is expected


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.none() | st.integers(1, 65535)
allowed_values = st.lists(
    names | names.map(lambda name: f".{name}") | st.just("*") | st.just("localhost"),
    max_size=4,
)


def with_port(name: str, port: int | None) -> str:
    return name if port is None else f"{name}:{port}"


@given(allowed=allowed_values, name=names, port=ports, other_port=ports, bind=st.booleans())
def test_a_host_is_judged_by_its_name_alone(
    allowed: list[str], name: str, port: int | None, other_port: int | None, bind: bool
) -> None:
    policy = HostPolicy.for_server(allowed, "127.0.0.1" if bind else "0.0.0.0")
    verdict = policy.allows(with_port(name, port))
    assert policy.allows(with_port(name.upper(), other_port)) is verdict
    assert policy.allows(with_port(name + ".", other_port)) is verdict


@given(allowed=allowed_values, name=names, port=ports)
def test_allowed_hosts_match_exactly_or_by_domain(
    allowed: list[str], name: str, port: int | None
) -> None:
    values = [normalize_allowed_host(value) for value in allowed]
    expected = (
        not values
        or "*" in values
        or any(
            name == value
            or (value.startswith(".") and (name == value[1:] or name.endswith(value)))
            for value in values
        )
    )
    assert HostPolicy.for_server(allowed, "0.0.0.0").allows(with_port(name, port)) is expected


@given(name=names, port=ports)
def test_loopback_default_refuses_every_other_name(name: str, port: int | None) -> None:
    assume(name != "localhost" and not name.endswith(".localhost"))
    assume(not name.startswith("127."))
    assert not LOOPBACK_ONLY.allows(with_port(name, port))


@given(address=st.tuples(*[st.integers(0, 255)] * 3), port=ports)
def test_loopback_default_accepts_all_of_127_8(
    address: tuple[int, int, int], port: int | None
) -> None:
    assert LOOPBACK_ONLY.allows(with_port("127.{}.{}.{}".format(*address), port))


@given(host=st.text(max_size=40))
def test_any_host_header_is_judged_without_error(host: str) -> None:
    verdict = LOOPBACK_ONLY.allows(host)
    name = host_name(host)
    assert verdict is (name is not None and LOOPBACK_ONLY.allows(name))
