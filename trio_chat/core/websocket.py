"""WebSocket details wsproto leaves to the server: upgrade checks and framing.

Pure. wsproto parses client frames and encodes control frames; this module
adds what a server deciding on an upgrade needs (which request is a valid
upgrade, which `Host` it may name, which origin may connect) and the one
frame the hot path writes: a
server's unmasked text frame, built here directly from bytes that are already
UTF-8, so a batch of pre-encoded events is never decoded and re-encoded.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from wsproto.utilities import generate_accept_token

from .errors import TrioChatError

DEFAULT_PORT: Final = 8080  # what `trio-chat serve` listens on unless told otherwise
# The port a URL of each scheme means when it names none:
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# RFC 9110 15.5.22: a 426 names the protocol to upgrade to, and (7.8) whoever
# sends Upgrade also lists it in Connection.
UPGRADE_REQUIRED: Final = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


class UpgradeRefused(TrioChatError):
    """The request asked for /ws but is not a WebSocket upgrade we accept.

    Attributes:
        status: the HTTP status to answer with.
        reason: a short text for the response body and the log.
        headers: response headers the status calls for (a 426 says which
            upgrade it wants).
    """

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


def upgrade_required(reason: str) -> UpgradeRefused:
    """A 426 refusal naming WebSocket version 13 as the upgrade to make.

    RFC 6455 4.2.2 asks for `Sec-WebSocket-Version` with the versions the
    server speaks when the client's is not one of them; sending it with every
    426 also tells a client that sent none.
    """
    return UpgradeRefused(426, reason, (*UPGRADE_REQUIRED, ("Sec-WebSocket-Version", "13")))


def accept_upgrade(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Check a WebSocket upgrade request; return the 101 response headers.

    `headers` maps lower-case names to values (repeated headers joined with
    ", "). v1 negotiates no extensions and no subprotocol.

    Raises:
        UpgradeRefused: 426 if it is not an upgrade to WebSocket version 13
            (with the headers that say so), 400 if it lacks a usable key.
    """
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if headers.get("upgrade", "").strip().lower() != "websocket" or "upgrade" not in connection:
        raise upgrade_required("this path takes WebSocket upgrades only")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise upgrade_required("only WebSocket version 13 is supported")
    key = headers.get("sec-websocket-key", "").strip()
    if not _is_websocket_key(key):
        raise UpgradeRefused(400, "missing or malformed Sec-WebSocket-Key")
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
    ]


def _is_websocket_key(key: str) -> bool:
    """RFC 6455 4.1: the key is 16 random bytes, base64-encoded (24 characters)."""
    if len(key) != 24 or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with a default port dropped.

    Returns None for anything that is not an http(s) origin, including the
    opaque origin `null` that sandboxed pages and file:// pages send.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host or parts.path not in ("", "/"):
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """The protocol's origin policy for an upgrade request.

    No `Origin` (a non-browser client) is allowed; an origin whose host and
    port equal the request's `Host` is allowed; any other origin must be in
    `allowed` (normalised origins, or `*` for all).
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    normal = normalize_origin(origin)
    if normal is None:
        return False
    if normal in allowed:
        return True
    if host is None:
        return False
    scheme = normal.split(":", 1)[0]
    return normalize_origin(f"{scheme}://{host.strip()}") == normal


# -- Host: the DNS-rebinding guard -------------------------------------------
#
# A page on evil.example can point its own name at 127.0.0.1 and then open a
# WebSocket to it: the browser sends `Host: evil.example:PORT` and an Origin
# that matches it, so the origin policy alone lets it in. Only the Host header
# tells that the browser thinks it is talking to someone else.

_HOST: Final = re.compile(
    r"(?P<name>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)


def host_name(host: str) -> str | None:
    """The name in a `Host` value, normalised for comparing: lower case, the
    port and a trailing dot dropped, an IPv6 literal compressed and bracketed.

    Returns None if `host` is not `name[:port]`, `IPv4[:port]` or `[IPv6][:port]`.
    """
    match = _HOST.fullmatch(host.strip().lower())
    if match is None:
        return None
    name = match["name"]
    if name.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(name[1:-1]).compressed}]"
        except ValueError:
            return None
    return name.removesuffix(".") or None


def is_loopback_name(name: str) -> bool:
    """Whether a normalised host name can only mean this machine: `localhost`
    and its subdomains (RFC 6761), 127.0.0.0/8 and [::1]."""
    if name == "localhost" or name.endswith(".localhost") or name == "[::1]":
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


def is_loopback_address(host: str) -> bool:
    """Whether a bind address (`--host`) is loopback: 127.0.0.0/8, ::1 or `localhost`."""
    name = host.strip().lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def normalize_allowed_host(text: str) -> str:
    """One `--allowed-host` value in the form `HostPolicy` compares.

    `*` (any host); `.example.org` (the domain and all its subdomains); or a
    host name or IP address, with or without a port (any port is accepted).

    Raises:
        ValueError: with a short reason, if `text` is none of these.
    """
    text = text.strip().lower()
    if text == "*":
        return text
    if text.startswith("*."):
        raise ValueError(f"write {text[1:]} for a domain and its subdomains")
    if text.startswith("."):
        name = host_name(text[1:])
        if name is None or name.startswith("[") or ":" in text:
            raise ValueError("not a domain (use .example.org, without a port)")
        return f".{name}"
    try:  # a bare IPv6 address, which would not parse as host:port
        return f"[{ipaddress.IPv6Address(text).compressed}]"
    except ValueError:
        pass
    name = host_name(text)
    if name is None:
        raise ValueError("not a host name or IP address (use e.g. chat.example.org or 10.0.0.5)")
    return name


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which `Host` an upgrade request may name, compared without its port.

    Build it with `for_server`; `allows` answers for one request.
    """

    names: frozenset[str] = frozenset()  # exact names, normalised
    domains: tuple[str, ...] = ()  # ".example.org": that domain and its subdomains
    any_host: bool = False
    loopback: bool = False  # the loopback names: localhost, *.localhost, 127.x.x.x, [::1]

    @classmethod
    def for_server(cls, allowed_hosts: Iterable[str], bind_host: str) -> HostPolicy:
        """The policy of a server bound to `bind_host` with these `--allowed-host` values.

        Given values (normalised by `normalize_allowed_host`) are the whole
        policy. Without any: a server bound to a loopback address accepts
        only the loopback names, since no one else can reach it but a browser
        page whose name was rebound to it; a server bound elsewhere accepts
        any Host.
        """
        allowed = [normalize_allowed_host(value) for value in allowed_hosts]
        if not allowed:
            return cls(loopback=True) if is_loopback_address(bind_host) else cls(any_host=True)
        return cls(
            names=frozenset(value for value in allowed if not value.startswith(".")),
            domains=tuple(value for value in allowed if value.startswith(".")),
            any_host="*" in allowed,
        )

    def allows(self, host: str | None) -> bool:
        """Whether a request with this `Host` header (None: none) may upgrade."""
        if self.any_host:
            return True
        name = None if host is None else host_name(host)
        if name is None:
            return False
        if name in self.names:
            return True
        if any(name == domain[1:] or name.endswith(domain) for domain in self.domains):
            return True
        return self.loopback and is_loopback_name(name)


def encode_text_frame(payload: bytes) -> bytes:
    """A complete, unmasked text frame (FIN set) carrying UTF-8 `payload`."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload
