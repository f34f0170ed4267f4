"""What a user may type for the server, parsed into one `ServerUrl`.

One set of rules for every client, so that `trio-chat connect` and
`trio-chat bench` accept the same addresses:

* `ws://` and `wss://` URLs are kept; an empty path becomes `/ws`;
* `http://` and `https://` (the page's address) become `ws://` and `wss://`,
  with `/ws` appended to the path unless it already ends with it;
* `HOST:PORT` and `HOST` are taken as `ws://`, on `DEFAULT_PORT` when no
  port is given, and `:PORT` means this machine.

A URL without a port uses its scheme's (80 or 443).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import TrioChatError
from ..core.websocket import DEFAULT_PORT, DEFAULT_PORTS

_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SECURE: Final = {"ws": False, "http": False, "wss": True, "https": True}


class ServerUrlError(TrioChatError, ValueError):
    """Not something that names a trio-chat server; the message says why."""


@dataclass(frozen=True, slots=True)
class ServerUrl:
    """Where a trio-chat server's WebSocket endpoint is."""

    host: str
    port: int
    path: str = "/ws"
    secure: bool = False
    query: str = ""

    @property
    def authority(self) -> str:
        """`host:port` as a Host header writes it (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def resource(self) -> str:
        """The request target of the upgrade request: the path and any query."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def url(self) -> str:
        """The `ws://` or `wss://` URL; the port is left out when it is the default."""
        scheme = "wss" if self.secure else "ws"
        netloc = self.authority
        if self.port == DEFAULT_PORTS[scheme]:
            netloc = netloc.rpartition(":")[0]
        return urlunsplit((scheme, netloc, self.path, self.query, ""))


def parse_server_url(text: str) -> ServerUrl:
    """The server `text` names, by the rules in this module's docstring.

    Raises:
        ServerUrlError: for an empty text, another scheme, a bad port, or a
            URL with no host.
    """
    text = text.strip()
    if not text:
        raise ServerUrlError("the URL is empty")
    bare = _SCHEME.match(text) is None
    parts = urlsplit(f"ws://{text}" if bare else text)
    scheme = parts.scheme.lower()
    secure = _SECURE.get(scheme)
    if secure is None:
        raise ServerUrlError(
            f"{text!r}: use a ws://, wss://, http:// or https:// URL, or HOST:PORT"
        )
    try:
        port = parts.port
    except ValueError:
        raise ServerUrlError(f"{text!r}: not a valid port") from None
    host = parts.hostname
    if not host:
        if not bare:
            raise ServerUrlError(f"{text!r} names no host")
        host = "127.0.0.1"
    if port is None:
        port = DEFAULT_PORT if bare else DEFAULT_PORTS[scheme]
    path = parts.path
    if scheme in ("ws", "wss") and not bare:
        path = path if path not in ("", "/") else "/ws"
    elif not path.endswith("/ws"):
        path = path.rstrip("/") + "/ws"
    return ServerUrl(host, port, path, secure, parts.query)
