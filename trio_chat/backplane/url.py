"""Where the backplane's Redis (or Valkey) server is: `--backplane URL`, parsed.

Accepted, and nothing else:

* `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, and `rediss://` for TLS;
* HOST a name, an IPv4 address or a bracketed IPv6 literal; PORT 1 to 65535
  (default 6379); DB a decimal database number (default 0); USER and
  PASSWORD percent-encoded where they hold `@`, `:` or `/`.

The password is a secret that must never reach a log: `BackplaneUrl` leaves
it out of its `repr` and `str` (`str` is the URL with the password masked),
and no error message here quotes the URL it refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from ..core.errors import TrioChatError

DEFAULT_PORT: Final = 6379
_SCHEMES: Final = {"redis": False, "rediss": True}
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)
_IPV6: Final = re.compile(r"\[[0-9A-Fa-f:.]+\]", re.ASCII)
_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)


class BackplaneUrlError(TrioChatError, ValueError):
    """Not a Redis URL the backplane accepts; the one-line message says why."""


@dataclass(frozen=True, slots=True)
class BackplaneUrl:
    """A Redis server's address and credentials (the password is never shown)."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        """The URL with the password masked: safe to log."""
        scheme = "rediss" if self.tls else "redis"
        user = ""
        if self.password is not None:
            user = f"{self.username or ''}:***@"
        elif self.username is not None:
            user = f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


def parse_backplane_url(text: str) -> BackplaneUrl:
    """The server `text` names, by the rules in this module's docstring.

    Raises:
        BackplaneUrlError: for another scheme, no host, a bad port, a database
            that is not a number, or a stray path, query or fragment.
    """
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise BackplaneUrlError("the backplane URL must start with redis:// or rediss://")
    tls = _SCHEMES[scheme.lower()]
    if "?" in rest or "#" in rest:
        raise BackplaneUrlError("the backplane URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    host, port = _host_and_port(hostport)
    return BackplaneUrl(
        host=host, port=port, db=_db(path), password=password, username=username, tls=tls
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    username = unquote(user) if user else None
    if not colon:
        return username, None
    return username, unquote(password)


def _host_and_port(hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, rest = hostport[:end], hostport[end:]
        if not end or _IPV6.fullmatch(host) is None:
            raise BackplaneUrlError("the backplane URL has a malformed IPv6 address")
        host = host[1:-1]
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
        if host and _HOST_NAME.fullmatch(host) is None:
            raise BackplaneUrlError("the backplane URL's host is not a valid host name")
    if not host:
        raise BackplaneUrlError("the backplane URL names no host")
    if not rest:
        return host, DEFAULT_PORT
    port_text = rest[1:]
    if not rest.startswith(":") or _DIGITS.fullmatch(port_text) is None:
        raise BackplaneUrlError("the backplane URL's port must be a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BackplaneUrlError("the backplane URL's port must be a number from 1 to 65535")
    return host, port


def _db(path: str) -> int:
    if not path:
        return 0
    if _DIGITS.fullmatch(path) is None or len(path) > 9:
        raise BackplaneUrlError(
            "the backplane URL's path must be a database number (e.g. /0) and nothing else"
        )
    return int(path)
