"""WebSocket details wsproto leaves to the server: upgrade checks and framing.

Pure. wsproto parses client frames and encodes control frames; this module
adds what a server deciding on an upgrade needs (which request is a valid
upgrade, which origin may connect) and the one frame the hot path writes: a
server's unmasked text frame, built here directly from bytes that are already
UTF-8, so a batch of pre-encoded events is never decoded and re-encoded.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

from wsproto.utilities import generate_accept_token

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# RFC 9110 15.5.22: a 426 names the protocol to upgrade to, and (7.8) whoever
# sends Upgrade also lists it in Connection.
UPGRADE_REQUIRED: Final = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


class UpgradeRefused(Exception):
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
    if port is None or port == _DEFAULT_PORTS[scheme]:
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
