"""The client side of WebSocket, without I/O: the opening handshake's request
and its check, frame encoding (masked, as a client must) and an incremental
`FrameReader` over received bytes.

For clients that own their sockets and want every byte's cost in view (the
load generator's epoll reactor): they feed bytes through these. The terminal
client speaks through trio-websocket instead, and the tests' raw client
through wsproto, which can also send what a server must refuse.
"""

from __future__ import annotations

import random
from typing import Final

from wsproto.utilities import generate_accept_token

from ..core.errors import TrioChatError
from .url import ServerUrl

# -- WebSocket, client side ----------------------------------------------------

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
MAX_RESPONSE_HEAD: Final = 65536  # bytes of the handshake's response head


class ConnectFailure(TrioChatError):
    """A connection could not be opened or joined; `reason` says why in a few
    words (the load generator counts failures by it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FramingError(TrioChatError):
    """The server's bytes break RFC 6455 framing."""


def handshake_request(target: ServerUrl, key: bytes) -> bytes:
    return (
        f"GET {target.resource} HTTP/1.1\r\nHost: {target.authority}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode('ascii')}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def check_handshake(head: bytes, key: bytes) -> None:
    """Check the server's response head (up to the blank line).

    Raises:
        ConnectFailure: `HTTP <status>` if it refused, or why the 101 is unusable.
    """
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectFailure("not an HTTP response")
    status = int(status_line[1])
    if status != 101:
        raise ConnectFailure(f"HTTP {status}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != generate_accept_token(key):
        raise ConnectFailure("bad Sec-WebSocket-Accept")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A final client frame: masked, as RFC 6455 requires of clients.

    The mask is fresh per frame (`random`, not a cryptographic source: it
    protects intermediaries from chosen plaintext, which a benchmark's
    fixed text does not threaten).
    """
    if mask is None:
        mask = random.randbytes(4)  # noqa: S311 (see above)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    if not length:
        return head + mask
    key = (mask * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return head + mask + masked.to_bytes(length, "big")


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload (1005: none given)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


class FrameReader:
    """Splits the server's byte stream into messages: `(opcode, payload)`.

    Server frames are unmasked. Fragments are reassembled; control frames
    come out as they arrive. Text is not decoded: the generator slices bytes.
    """

    __slots__ = ("_buffer", "_fragments", "_opcode", "idle")

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0
        self.idle = True  # nothing buffered: the next bytes start a new message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                raise FramingError("a masked frame from the server")
            if first & 0x70:
                raise FramingError("reserved bits set")
            length, start = second & 0x7F, pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if end - start < length:
                break
            payload = buf[start : start + length]
            pos = start + length
            opcode, final = first & 0x0F, first & 0x80
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if not self._fragments:
                    raise FramingError("a continuation frame without a start")
                self._fragments.append(payload)
                if final:
                    out.append((self._opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif self._fragments:
                raise FramingError("a new message inside a fragmented one")
            elif final:
                out.append((opcode, payload))
            else:
                self._opcode = opcode
                self._fragments = [payload]
        self._buffer = buf[pos:]
        self.idle = not self._buffer and not self._fragments
        return out
