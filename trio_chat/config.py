"""Settings of ``trio-chat serve``: flags, environment variables and their checks.

Theory of operation: argparse only collects raw strings (every flag defaults to
``None``, meaning "not given"). :func:`load_settings` takes each setting from the
first source that has it -- the flag, ``TRIO_CHAT_<NAME>``, the bare alias, the
default -- and parses and checks it here, so that a bad value, wherever it came
from, yields the same one-line :class:`SettingError` naming the setting, where it
came from and the value. The README's settings table documents them. Pure
Python: no Trio.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from .backplane.url import BackplaneUrl, BackplaneUrlError, parse_backplane_url
from .core.auth import BadKey, ReservedNames, TokenVerifier, public_key_verifier, secret_verifier
from .core.errors import TrioChatError
from .core.forwarded import Network, parse_network
from .core.protocol import ProtocolError
from .core.websocket import DEFAULT_PORT, normalize_allowed_host, normalize_origin

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Hashable, Mapping

_T = TypeVar("_T")
_H = TypeVar("_H", bound="Hashable")

ENV_PREFIX = "TRIO_CHAT_"
MAX_DURATION = 24 * 3600.0  # a day: beyond it, a typo ("10h" for "10s") is likelier than intent
MAX_COUNT = 2**31 - 1  # sizes and counts: anything larger is a mistake, not a plan
MAX_RATE = 1e6  # messages per second; use 0 to turn the limit off instead
MAX_WORKERS = 1024  # processes under one parent: more is a typo, not a machine
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
MIN_DEBUG_TOKEN = 16  # characters: a bearer token anyone can guess protects nothing
MAX_KEY_FILE = 64 * 1024  # bytes: a secret or a PEM public key is far smaller

# Also read without the prefix: the names of the Go chat this project re-imagines.
_BARE_ALIASES = frozenset(
    {"port", "write-wait", "pong-wait", "ping-period", "read-buffer-size", "write-buffer-size"}
    | {"debug"}
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


# Settings whose value is a secret: never quoted in an error.
_SECRETS = frozenset({"debug-token"})

# Repeatable flags, named in the singular because each is given once per item.
_LIST_FLAGS = {
    "allowed-origins": "--allowed-origin",
    "allowed-hosts": "--allowed-host",
    "trusted-proxies": "--trusted-proxy",
}


def _flag(setting: str) -> str:
    return _LIST_FLAGS.get(setting, f"--{setting}")


def _env(setting: str) -> str:
    return ENV_PREFIX + setting.upper().replace("-", "_")


def _masked(text: str) -> str:
    """`text` with the password of a URL's user information replaced by `***`:
    a setting's value is quoted in errors, and a backplane URL may hold one."""
    return re.sub(r"(://[^@/]*?:)[^@/]*@", r"\1***@", text)


class SettingError(TrioChatError):
    """A bad setting value, found at start-up before anything is bound.

    ``str(exc)`` is one line fit for stderr. It names the source of the value
    first (the flag, or the variable it was read from), the other name in
    parentheses, the value quoted with ``repr`` (so stray spaces and newlines
    show), and why the value is bad.

    Attributes:
        setting: the setting's name, the flag without dashes (``"ping-period"``).
        value: the offending text.
        source: where it came from: the flag (``"--port"``), the variable
            (``"TRIO_CHAT_PORT"`` or the bare ``"PORT"``), or ``"default"``.
        reason: why the value is bad.
    """

    def __init__(self, setting: str, value: str, source: str, reason: str) -> None:
        shown = repr(_masked(value) if len(value) <= 80 else _masked(value)[:77] + "...")
        if setting in _SECRETS:
            shown = "(hidden)" if value else "''"
        flag, env = _flag(setting), _env(setting)
        if source == "default":
            where = f"default {shown} for {flag} ({env})"
        elif source.startswith("--"):
            where = f"value {shown} for {flag} ({env})"
        else:
            where = f"value {shown} for {source} ({flag})"
        super().__init__(f"invalid {where}: {reason}")
        self.setting = setting
        self.value = value
        self.source = source
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Settings:
    """The checked settings of ``serve``; durations are in seconds, sizes in bytes.

    Constructing it directly skips the checks of :func:`load_settings` (tests do
    that to pick short timeouts).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    write_wait: float = 10.0
    pong_wait: float = 60.0
    ping_period: float = 54.0
    read_buffer_size: int = 1024
    write_buffer_size: int = 1024
    max_message_size: int = 65536
    send_queue_size: int = 256
    handshake_timeout: float = 10.0
    rate_limit: float = 10.0
    rate_burst: int = 20
    max_connections: int = 10000
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # none: the loopback names when bound to loopback
    db: str = "trio-chat.db"
    history_limit: int = 1000
    history_replay: int = 50
    presence_grace: float = 15.0  # 0: a dropped connection is a leave
    backplane: BackplaneUrl | None = None  # none: one process, history in `db`
    workers: int = 1
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For names the client
    drain_delay: float = 0.0  # seconds between /readyz failing and clients being closed
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line
    debug: bool = False
    debug_token: str | None = None  # none: /debug/* only for loopback clients
    # Token mode: from --auth-secret-file or --auth-public-key (the key
    # itself, never shown by repr); none: open mode, anyone picks a name.
    auth: TokenVerifier | None = None
    reserved_names: ReservedNames = ReservedNames()  # noqa: RUF009 (frozen: shared safely)


_DEFAULTS = Settings()

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII only: no sign, "_", exponent, nan or inf
_DURATION = re.compile(
    rf"(?:(?P<h>{_DECIMAL.pattern})h)?(?:(?P<m>{_DECIMAL.pattern})m)?"
    rf"(?:(?P<s>{_DECIMAL.pattern})s)?(?:(?P<ms>{_DECIMAL.pattern})ms)?"
)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Parse a duration such as ``250ms``, ``10s``, ``1m30s``, ``1h`` or ``90`` into seconds.

    A plain number is seconds. Otherwise the text is one or more ``<number><unit>``
    parts with units ``h``, ``m``, ``s``, ``ms``, each at most once and in that
    order (``1h2m3s4ms``); numbers may have a fractional part (``1.5s``). This is
    stricter than Go's ``time.ParseDuration`` on purpose: ``1s1s`` or ``30s1m``
    is more likely a slip than a wish. No sign, spaces, ``nan`` or ``inf``.

    Raises:
        ValueError: with a short reason, if the text is not such a duration.
    """
    if not text:
        raise ValueError("empty duration")
    if text.startswith("-"):
        raise ValueError("negative durations are not allowed")
    if _DECIMAL.fullmatch(text):
        seconds = float(text)
    elif (match := _DURATION.fullmatch(text)) is not None:
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit]
            for unit, number in match.groupdict().items()
            if number is not None
        )
    else:
        raise ValueError("not a duration (use e.g. 250ms, 10s, 1m30s or a number of seconds)")
    if not math.isfinite(seconds):  # hundreds of digits overflow a float
        raise ValueError("duration too large")
    return seconds


def _show_duration(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def _duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be above zero")
    if seconds > MAX_DURATION:
        raise ValueError("must be at most 24h")
    return seconds


def _grace(text: str) -> float:
    """A duration that may be 0 (the feature off)."""
    seconds = parse_duration(text)
    if seconds > MAX_DURATION:
        raise ValueError("must be at most 24h")
    return seconds


def _integer(low: int, high: int = MAX_COUNT) -> Callable[[str], int]:
    def parse(text: str) -> int:
        # ASCII digits only, where int() would also take " 1", "+1", "1_0" and other scripts.
        if not re.fullmatch(r"[0-9]+", text):
            raise ValueError("not an integer")
        # The length test comes first so that int() never sees thousands of digits.
        if len(text.lstrip("0")) > len(str(high)) or int(text) > high:
            raise ValueError(f"must be at most {high}")
        if int(text) < low:
            raise ValueError(f"must be at least {low}")
        return int(text)

    return parse


def _rate(text: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise ValueError("not a number of messages per second (e.g. 10 or 2.5)")
    if float(text) > MAX_RATE:
        raise ValueError(f"must be at most {MAX_RATE:g} (use 0 to turn the limit off)")
    return float(text)


def _host(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _db(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty path")
    if "\x00" in text:
        raise ValueError("a path cannot contain NUL")
    return text


def _backplane(text: str) -> BackplaneUrl:
    try:
        return parse_backplane_url(text)
    except BackplaneUrlError as error:
        raise ValueError(str(error).removeprefix("the backplane URL ")) from None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _workers(text: str) -> int:
    if text.lower() == "auto":
        return available_cores()
    try:
        return _integer(1, MAX_WORKERS)(text)
    except ValueError as error:
        raise ValueError(f"{error} (or auto: one per core)") from None


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def _log_format(text: str) -> str:
    if text.lower() not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return text.lower()


def _debug_token(text: str) -> str:
    """A bearer token: visible ASCII (it travels in an HTTP header), long enough."""
    if not text:
        raise ValueError("must not be empty (leave it unset for loopback-only debugging)")
    if not all("!" <= char <= "~" for char in text):
        raise ValueError("must be visible ASCII characters, without spaces")
    if len(text) < MIN_DEBUG_TOKEN:
        raise ValueError(
            f"must be at least {MIN_DEBUG_TOKEN} characters (e.g. openssl rand -hex 16)"
        )
    return text


def read_key_file(path: str) -> bytes:
    """The content of a key file (a secret, or a PEM public key).

    Raises:
        ValueError: with a short reason (missing, unreadable, empty, too large).
    """
    if not path.strip() or "\x00" in path:
        raise ValueError("not a path")
    try:
        with open(path, "rb") as file:  # noqa: PTH123 (a plain read, like the others here)
            data = file.read(MAX_KEY_FILE + 1)
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror or error}") from None
    if not data.strip():
        raise ValueError("the file is empty")
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"the file is over {MAX_KEY_FILE // 1024} KiB: no key is that large")
    return data


def _secret_file(path: str) -> TokenVerifier:
    try:
        return secret_verifier(read_key_file(path))
    except BadKey as error:
        raise ValueError(str(error)) from None


def _public_key_file(path: str) -> TokenVerifier:
    try:
        return public_key_verifier(read_key_file(path))
    except BadKey as error:
        raise ValueError(str(error)) from None


def _reserved_names(text: str) -> ReservedNames:
    """A comma-separated list, or `@PATH`: a file of one name a line (blank
    lines and lines starting with `#` skipped)."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as file:  # noqa: PTH123 (as read_key_file)
                lines = file.read(MAX_KEY_FILE * 16).splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
            raise ValueError(f"cannot read {text[1:]!r}: {reason or error}") from None
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    else:
        names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return ReservedNames.of(names)
    except ProtocolError as error:
        raise ValueError(f"a reserved name is no valid name: {error.message}") from None


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("not a boolean (use true/false, 1/0, yes/no or on/off)")


_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
)


def _origin(text: str) -> str:
    """Normalise one allowed origin to the form browsers send in ``Origin``."""
    if text == "*":
        return text
    match = _ORIGIN.fullmatch(text.lower())
    if match is None:
        if "://" in text and any(c in text.split("://", 1)[1] for c in "/?#"):
            raise ValueError("an origin has no path, query or fragment (drop any trailing '/')")
        raise ValueError("not an origin (use * or scheme://host[:port])")
    scheme, port = match["scheme"], match["port"]
    if scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError("the port must be between 1 and 65535")
    normal = normalize_origin(text)  # the very form the origin check compares
    if normal is None:
        raise ValueError("not an origin (use * or scheme://host[:port])")
    return normal


class _Sources:
    """Finds each setting's raw text in the flags, then the environment."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._args = args
        self._environ = environ

    def raw(self, setting: str) -> tuple[str, str] | None:
        """Return ``(text, source)`` for a setting, or None if it was not given."""
        given = getattr(self._args, setting.replace("-", "_"), None)
        if given is True:  # --debug is a store_true flag
            return "true", _flag(setting)
        if isinstance(given, list):  # --allowed-origin and --allowed-host are repeatable
            return ",".join(given), _flag(setting)
        if given is not None:
            return str(given), _flag(setting)
        names = [_env(setting)]
        if setting in _BARE_ALIASES:
            names.append(_env(setting).removeprefix(ENV_PREFIX))
        for name in names:
            if text := self._environ.get(name, ""):  # an empty variable counts as unset
                return text, name
        return None

    def get(self, setting: str, parse: Callable[[str], _T]) -> _T:
        """Return the setting parsed from its first source, or its default."""
        found = self.raw(setting)
        if found is None:
            return cast("_T", getattr(_DEFAULTS, setting.replace("-", "_")))
        text, source = found
        try:
            return parse(text)
        except ValueError as exc:
            raise SettingError(setting, text, source, str(exc)) from None

    def items(self, setting: str, parse: Callable[[str], _H]) -> tuple[_H, ...]:
        """Return a list setting: comma-separated, blanks skipped, each item
        parsed, duplicates (after parsing) dropped."""
        found = self.raw(setting)
        if found is None:
            return ()
        text, source = found
        items: dict[_H, None] = {}  # a dict keeps the first-given order
        for item in filter(None, (part.strip() for part in text.split(","))):
            try:
                items[parse(item)] = None
            except ValueError as exc:
                raise SettingError(setting, item, source, str(exc)) from None
        return tuple(items)


def _optional(sources: _Sources, setting: str, parse: Callable[[str], _T], default: _T) -> _T:
    """A setting whose Settings field has another name or type than its flag."""
    found = sources.raw(setting)
    if found is None:
        return default
    text, source = found
    try:
        return parse(text)
    except ValueError as exc:
        raise SettingError(setting, text, source, str(exc)) from None


def _auth(sources: _Sources) -> TokenVerifier | None:
    """Token mode's verifier, from the secret file or the public key file (one of them)."""
    secret = _optional(sources, "auth-secret-file", _secret_file, None)
    public = _optional(sources, "auth-public-key", _public_key_file, None)
    if secret is not None and public is not None:
        text, source = sources.raw("auth-public-key") or ("", "default")
        reason = "set either --auth-secret-file (HS256) or --auth-public-key, not both"
        raise SettingError("auth-public-key", text, source, reason)
    return secret or public


def load_auth(args: argparse.Namespace, environ: Mapping[str, str]) -> TokenVerifier | None:
    """Only the token-mode settings (for `trio-chat token`).

    Raises:
        SettingError: a bad key file, or both set.
    """
    return _auth(_Sources(args, environ))


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Resolve every setting from flags, environment and defaults, and check it.

    Args:
        args: parsed by a parser set up with :func:`add_serve_arguments`; a
            missing attribute counts as "flag not given".
        environ: usually ``os.environ``; tests pass a plain dict.

    Raises:
        SettingError: for the first bad value, in the order of :class:`Settings`,
            or when the ping period is not below the pong wait.
    """
    sources = _Sources(args, environ)
    get = sources.get
    settings = Settings(
        host=get("host", _host),
        port=get("port", _integer(0, 65535)),
        write_wait=get("write-wait", _duration),
        pong_wait=get("pong-wait", _duration),
        ping_period=get("ping-period", _duration),
        read_buffer_size=get("read-buffer-size", _integer(1)),
        write_buffer_size=get("write-buffer-size", _integer(1)),
        max_message_size=get("max-message-size", _integer(1)),
        send_queue_size=get("send-queue-size", _integer(1)),
        handshake_timeout=get("handshake-timeout", _duration),
        rate_limit=get("rate-limit", _rate),
        rate_burst=get("rate-burst", _integer(1)),
        max_connections=get("max-connections", _integer(1)),
        allowed_origins=sources.items("allowed-origins", _origin),
        allowed_hosts=sources.items("allowed-hosts", normalize_allowed_host),
        db=get("db", _db),
        history_limit=get("history-limit", _integer(1)),
        history_replay=get("history-replay", _integer(0)),
        presence_grace=get("presence-grace", _grace),
        backplane=get("backplane", _backplane),
        workers=get("workers", _workers),
        trusted_proxies=sources.items("trusted-proxies", parse_network),
        drain_delay=get("drain-delay", _grace),
        log_level=get("log-level", _log_level),
        log_format=get("log-format", _log_format),
        debug=get("debug", _boolean),
        debug_token=get("debug-token", _debug_token),
        auth=_auth(sources),
        reserved_names=_optional(sources, "reserved-names", _reserved_names, ReservedNames()),
    )
    if settings.ping_period >= settings.pong_wait:
        # A ping must go out before the peer's pong deadline, or healthy clients get dropped.
        text, source = sources.raw("ping-period") or (
            _show_duration(settings.ping_period),
            "default",
        )
        reason = f"must be below the pong wait ({_show_duration(settings.pong_wait)})"
        raise SettingError("ping-period", text, source, reason)
    if settings.workers > 1 and settings.backplane is None:
        # Processes that share nothing would each hold their own rooms and
        # history: members behind the same port would not see each other.
        text, source = sources.raw("workers") or (str(settings.workers), "default")
        reason = "several workers share rooms through a backplane: set --backplane too"
        raise SettingError("workers", text, source, reason)
    if settings.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        # Workers share the port through SO_REUSEPORT, which Windows lacks.
        text, source = sources.raw("workers") or (str(settings.workers), "default")
        reason = "this system cannot share a port between processes (no SO_REUSEPORT)"
        raise SettingError("workers", text, source, reason)
    if settings.debug:
        settings = dataclasses.replace(settings, log_level="debug")
    return settings


_HELP = {  # setting -> (metavar, meaning); the default and variables are added below
    "host": ("ADDRESS", "address to bind"),
    "port": ("PORT", "port to bind, 0..65535; 0 picks any free port (it is logged)"),
    "write-wait": ("DURATION", "time allowed to write a frame to a client"),
    "pong-wait": ("DURATION", "time allowed for a client's pong"),
    "ping-period": ("DURATION", "interval between pings; must be below the pong wait"),
    "read-buffer-size": ("BYTES", "bytes read from a socket at a time (a minimum)"),
    "write-buffer-size": (
        "BYTES",
        "checked and accepted for compatibility, with no effect: everything queued for a "
        "client is always gathered into one write",
    ),
    "max-message-size": ("BYTES", "largest message accepted from a client"),
    "send-queue-size": ("N", "events queued for one client before it counts as too slow"),
    "handshake-timeout": ("DURATION", "time for the HTTP upgrade plus the hello"),
    "rate-limit": ("RATE", "messages per second per connection, e.g. 2.5; 0 turns it off"),
    "rate-burst": ("N", "messages a connection may send at once"),
    "max-connections": ("N", "open connections (HTTP or WebSocket) before new ones get HTTP 503"),
    "allowed-origins": (
        "ORIGIN",
        "origin allowed besides same-origin: * or http(s)://host[:port]; repeatable or "
        "comma-separated; an empty value clears the variable's list",
    ),
    "allowed-hosts": (
        "HOST",
        "Host accepted in WebSocket upgrades, a guard against DNS rebinding: a name or IP "
        "(any port), .example.org for that domain and its subdomains, or * for any; "
        "repeatable or comma-separated",
    ),
    "db": ("PATH", "SQLite file for history, created if missing; :memory: keeps none"),
    "history-limit": ("N", "events retained per room"),
    "history-replay": ("N", "events replayed to a client that joins without since"),
    "presence-grace": (
        "DURATION",
        "how long a member whose connection dropped keeps its place (and name) for a "
        "hello with its resume secret, before it leaves; 0 turns this off",
    ),
    "backplane": (
        "URL",
        "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS): a Redis or Valkey "
        "server through which several processes share rooms, members and history (which "
        "then lives there, not in --db)",
    ),
    "workers": (
        "N",
        "processes serving the port together (SO_REUSEPORT), restarted if they die; "
        "auto = one per core; above 1 needs --backplane",
    ),
    "trusted-proxies": (
        "CIDR",
        "network of reverse proxies (e.g. 10.0.0.0/8, or one address) whose X-Forwarded-For "
        "gives the client's address, for logs: the right-most address in it that is not "
        "itself a trusted proxy; repeatable or comma-separated",
    ),
    "drain-delay": (
        "DURATION",
        "on SIGTERM/SIGINT, time between /readyz turning 503 and clients being closed "
        "(1001), for a load balancer to stop sending new ones; meanwhile the server serves "
        "as before; a second signal ends it; 0 closes at once",
    ),
    "log-level": ("LEVEL", "one of debug, info, warning, error"),
    "log-format": ("FORMAT", "text, or json: one object per line"),
    "debug": (
        "",
        "debug mode: debug logging (implies --log-level debug) and the /debug/ endpoints "
        "(task tree, heap, profile), for loopback clients unless --debug-token is set",
    ),
    "debug-token": (
        "TOKEN",
        "with --debug: /debug/ endpoints answer any client that sends "
        "'Authorization: Bearer TOKEN' (at least 16 characters; prefer the variable, "
        "which other users cannot see in the process list)",
    ),
    "auth-secret-file": (
        "PATH",
        "token mode with HS256: a file holding the shared secret (at least 32 bytes); every "
        "hello must then carry a token signed with it, which names the member",
    ),
    "auth-public-key": (
        "PATH",
        "token mode with RS256 or ES256: a PEM file holding the signer's public key (RSA of "
        "2048 bits or more, or EC P-256); the server never holds the signing key",
    ),
    "reserved-names": (
        "NAMES",
        "names (and their look-alikes) that open-mode clients cannot take: comma-separated, "
        "or @PATH for a file of one name a line",
    ),
}

# Settings shown as "none" by default whose Settings field is not named for the flag.
_NO_DEFAULT = frozenset({"auth-secret-file", "auth-public-key", "reserved-names"})


def _show_default(setting: str) -> str:
    if setting in _NO_DEFAULT:
        return "none"
    value = getattr(_DEFAULTS, setting.replace("-", "_"))
    if _HELP[setting][0] == "DURATION":
        return _show_duration(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if setting == "allowed-hosts":
        return "localhost, *.localhost, 127.x.x.x and [::1] if bound to loopback, else any"
    if value == () or value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of every ``serve`` setting to ``parser``, in a "settings" group.

    Each flag takes a plain string and defaults to None, so that "not given" is
    told apart from any value and :func:`load_settings` checks every value the
    same way, whether it came from a flag or from the environment.
    """
    group = parser.add_argument_group(
        "settings",
        f"A flag beats {ENV_PREFIX}<NAME>, which beats the bare alias, which beats the "
        "default. DURATION is 250ms, 10s, 1m30s, 1h or plain seconds, above 0 and at "
        f"most 24h. Sizes and counts are at most {MAX_COUNT}.",
    )
    for setting, (metavar, meaning) in _HELP.items():
        env = _env(setting)
        names = env + (f" or {env.removeprefix(ENV_PREFIX)}" if setting in _BARE_ALIASES else "")
        help_text = f"{meaning} (default: {_show_default(setting)}; env {names})"
        dest = setting.replace("-", "_")
        if setting == "debug":
            group.add_argument(_flag(setting), action="store_true", default=None, help=help_text)
        elif setting in _LIST_FLAGS:
            group.add_argument(
                _flag(setting), action="append", dest=dest, metavar=metavar, help=help_text
            )
        else:
            group.add_argument(_flag(setting), type=str, metavar=metavar, help=help_text)
