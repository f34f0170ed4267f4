"""Tests of the ``serve`` settings: sources, precedence, parsing and the error messages."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.backplane.url import BackplaneUrl
from trio_chat.config import (
    SettingError,
    Settings,
    add_serve_arguments,
    available_cores,
    load_settings,
    parse_duration,
)

BARE_ALIASES = {
    "port",
    "write-wait",
    "pong-wait",
    "ping-period",
    "read-buffer-size",
    "write-buffer-size",
    "debug",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trio-chat serve")
    add_serve_arguments(p)
    return p


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    return load_settings(parser().parse_args(argv or []), env or {})


def load_error(argv: list[str] | None = None, env: dict[str, str] | None = None) -> SettingError:
    with pytest.raises(SettingError) as info:
        load(argv, env)
    message = str(info.value)
    assert "\n" not in message
    assert "\r" not in message
    value = info.value.value
    assert repr(value if len(value) <= 80 else value[:77] + "...") in message  # long ones are cut
    return info.value


def flag(setting: str) -> str:
    singular = {
        "allowed-origins": "--allowed-origin",
        "allowed-hosts": "--allowed-host",
        "trusted-proxies": "--trusted-proxy",
    }
    return singular.get(setting, f"--{setting}")


def env_name(setting: str, *, bare: bool = False) -> str:
    name = setting.upper().replace("-", "_")
    return name if bare else f"TRIO_CHAT_{name}"


def field(setting: str) -> str:
    return setting.replace("-", "_")


# --- defaults and the parser -------------------------------------------------------------


def test_defaults_match_cli_md() -> None:
    assert load() == Settings()
    assert Settings() == Settings(
        host="127.0.0.1",
        port=8080,
        write_wait=10.0,
        pong_wait=60.0,
        ping_period=54.0,
        read_buffer_size=1024,
        write_buffer_size=1024,
        max_message_size=65536,
        send_queue_size=256,
        handshake_timeout=10.0,
        rate_limit=10.0,
        rate_burst=20,
        max_connections=10000,
        allowed_origins=(),
        allowed_hosts=(),
        history_limit=1000,
        history_replay=50,
        presence_grace=15.0,
        backplane=None,
        workers=1,
        trusted_proxies=(),
        drain_delay=0.0,
        log_level="info",
        log_format="text",
        debug=False,
        debug_token=None,
    )


def test_settings_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_namespace_without_the_flags_gives_defaults() -> None:
    assert load_settings(argparse.Namespace(), {}) == Settings()


def test_flags_not_given_are_none() -> None:
    args = vars(parser().parse_args([]))
    # Token mode's one verifier comes from either of two key files.
    fields = {f.name for f in dataclasses.fields(Settings)} - {"auth"}
    assert set(args) == fields | {"auth_secret_file", "auth_public_key"}
    assert all(value is None for value in args.values())


def test_flags_are_strings() -> None:
    args = parser().parse_args(["--port", "80", "--allowed-origin", "*", "--debug"])
    assert args.port == "80"
    assert args.allowed_origins == ["*"]
    assert args.debug is True


def test_help_names_every_flag_default_and_variable() -> None:
    text = " ".join(parser().format_help().split())  # undo argparse's line wrapping
    for f in dataclasses.fields(Settings):
        setting = f.name.replace("_", "-")
        assert flag(setting) in text
        assert env_name(setting) in text
        if setting in BARE_ALIASES:
            assert f"{env_name(setting)} or {env_name(setting, bare=True)}" in text
    for default in ("127.0.0.1", "8080", "10s", "60s", "54s", "65536", "10", "none", "info"):
        assert f"(default: {default}; env" in text
    assert "at most 24h" in text


# --- the backplane ----------------------------------------------------------------------


def test_a_backplane_password_never_reaches_an_error() -> None:
    with pytest.raises(SettingError) as info:
        load([], {"TRIO_CHAT_BACKPLANE": "redis://user:s3cr3t@host:99999/0"})
    assert "s3cr3t" not in str(info.value)
    assert "'redis://user:***@host:99999/0'" in str(info.value)
    assert "port must be a number" in info.value.reason
    with pytest.raises(SettingError) as info:
        load(["--backplane", "rediss://:p%40ss@host/x"])
    assert "p%40ss" not in str(info.value)
    assert "'rediss://:***@host/x'" in str(info.value)


# --- every setting, from every source ----------------------------------------------------

VALID = [
    ("host", "0.0.0.0", "0.0.0.0"),
    ("host", "::1", "::1"),
    ("port", "0", 0),
    ("port", "65535", 65535),
    ("port", "08080", 8080),
    ("db", "chat.db", "chat.db"),
    ("db", ":memory:", ":memory:"),
    ("write-wait", "250ms", 0.25),
    ("pong-wait", "2m", 120.0),
    ("ping-period", "1.5s", 1.5),
    ("read-buffer-size", "1", 1),
    ("write-buffer-size", "4096", 4096),
    ("max-message-size", "1048576", 1048576),
    ("send-queue-size", "2147483647", 2**31 - 1),
    ("handshake-timeout", "1m30s", 90.0),
    ("rate-limit", "2.5", 2.5),
    ("rate-limit", "0", 0.0),
    ("rate-burst", "1", 1),
    ("max-connections", "5", 5),
    ("allowed-origins", "https://example.com", ("https://example.com",)),
    ("allowed-hosts", "Chat.Example.org", ("chat.example.org",)),
    ("allowed-hosts", ".example.org", (".example.org",)),
    ("allowed-hosts", "*", ("*",)),
    ("history-limit", "10", 10),
    ("history-replay", "0", 0),
    ("history-replay", "5000", 5000),  # above the history limit is fine
    ("backplane", "redis://localhost:6379/0", BackplaneUrl("localhost")),
    ("backplane", "rediss://:pw@[::1]/2", BackplaneUrl("::1", db=2, password="pw", tls=True)),
    ("workers", "1", 1),
    ("presence-grace", "0", 0.0),
    ("presence-grace", "30s", 30.0),
    ("trusted-proxies", "10.0.0.0/8", (ipaddress.ip_network("10.0.0.0/8"),)),
    ("trusted-proxies", "192.0.2.7", (ipaddress.ip_network("192.0.2.7/32"),)),
    (
        "trusted-proxies",
        "fd00::/8, 127.0.0.1,10.0.0.0/8",
        tuple(map(ipaddress.ip_network, ["fd00::/8", "127.0.0.1/32", "10.0.0.0/8"])),
    ),
    ("drain-delay", "0", 0.0),
    ("drain-delay", "15s", 15.0),
    ("drain-delay", "1m30s", 90.0),
    ("log-level", "WARNING", "warning"),
    ("log-level", "error", "error"),
    ("log-format", "json", "json"),
    ("log-format", "TEXT", "text"),
    ("debug", "true", True),
    ("debug", "0", False),
    ("debug-token", "0123456789abcdef", "0123456789abcdef"),
]


@pytest.mark.parametrize(("setting", "text", "expected"), VALID)
def test_setting_from_flag(setting: str, text: str, expected: object) -> None:
    argv = ["--debug"] if setting == "debug" else [flag(setting), text]
    value = True if setting == "debug" else expected
    assert getattr(load(argv), field(setting)) == value


@pytest.mark.parametrize(("setting", "text", "expected"), VALID)
def test_setting_from_prefixed_variable(setting: str, text: str, expected: object) -> None:
    assert getattr(load(env={env_name(setting): text}), field(setting)) == expected


@pytest.mark.parametrize(
    ("setting", "text", "expected"), [v for v in VALID if v[0] in BARE_ALIASES]
)
def test_setting_from_bare_alias(setting: str, text: str, expected: object) -> None:
    assert getattr(load(env={env_name(setting, bare=True): text}), field(setting)) == expected


@pytest.mark.parametrize(
    "setting", ["host", "max-message-size", "send-queue-size", "rate-limit", "log-level"]
)
def test_settings_without_a_bare_alias_ignore_the_bare_name(setting: str) -> None:
    assert load(env={env_name(setting, bare=True): "nonsense"}) == Settings()


# --- precedence ----------------------------------------------------------------------------


def test_flag_beats_prefixed_beats_bare() -> None:
    env = {"TRIO_CHAT_PORT": "2", "PORT": "3"}
    assert load(["--port", "1"], env).port == 1
    assert load([], env).port == 2
    assert load([], {"PORT": "3"}).port == 3


def test_flag_wins_even_over_bad_variables() -> None:
    assert load(["--port", "1"], {"TRIO_CHAT_PORT": "x", "PORT": "y"}).port == 1


def test_empty_variables_count_as_unset() -> None:
    assert load([], {"TRIO_CHAT_PORT": "", "PORT": "3"}).port == 3
    assert load([], {"TRIO_CHAT_PORT": "", "PORT": ""}).port == 8080
    assert load([], {"TRIO_CHAT_HOST": "", "TRIO_CHAT_LOG_LEVEL": ""}) == Settings()


def test_empty_flag_is_a_value() -> None:
    error = load_error(["--host", ""])
    assert str(error) == "invalid value '' for --host (TRIO_CHAT_HOST): must not be empty"


def test_unrelated_variables_are_ignored() -> None:
    assert load([], {"HOST": "0.0.0.0", "DB": "x", "LOG_LEVEL": "x"}) == Settings()


# --- bad values ----------------------------------------------------------------------------

INVALID = [
    ("host", "", "must not be empty"),
    ("port", "abc", "not an integer"),
    ("port", "8080.0", "not an integer"),
    ("port", "0x10", "not an integer"),
    ("port", " ", "not an integer"),
    ("port", " 80", "not an integer"),
    ("port", "1e3", "not an integer"),
    ("port", "+80", "not an integer"),
    ("port", "-1", "not an integer"),
    ("port", "1_000", "not an integer"),
    ("port", "\u0661", "not an integer"),  # an Arabic-Indic digit, which int() accepts
    ("port", "65536", "must be at most 65535"),
    ("port", "9" * 5000, "must be at most 65535"),
    ("write-wait", "0", "must be above zero"),
    ("write-wait", "0s", "must be above zero"),
    ("pong-wait", "25h", "must be at most 24h"),
    ("pong-wait", "10x", "not a duration"),
    ("ping-period", "-5s", "negative"),
    ("handshake-timeout", "inf", "not a duration"),
    ("handshake-timeout", "nan", "not a duration"),
    ("handshake-timeout", "9" * 400, "too large"),
    ("read-buffer-size", "0", "must be at least 1"),
    ("write-buffer-size", "0", "must be at least 1"),
    ("max-message-size", "2147483648", "must be at most 2147483647"),
    ("send-queue-size", "0", "must be at least 1"),
    ("rate-limit", "-1", "not a number"),
    ("rate-limit", "fast", "not a number"),
    ("rate-limit", "1e3", "not a number"),
    ("rate-limit", "nan", "not a number"),
    ("rate-limit", "2000000", "must be at most 1e+06"),
    ("rate-burst", "0", "must be at least 1"),
    ("max-connections", "0", "must be at least 1"),
    ("allowed-origins", "example.com", "not an origin"),
    ("allowed-origins", "ftp://example.com", "scheme must be http or https"),
    ("allowed-origins", "https://example.com/", "no path"),
    ("allowed-origins", "https://example.com/app", "no path"),
    ("allowed-origins", "https://example.com:0", "port must be between 1 and 65535"),
    ("allowed-origins", "https://example.com:70000", "port must be between 1 and 65535"),
    ("allowed-origins", "https://user@example.com", "not an origin"),
    ("allowed-origins", "https://", "not an origin"),
    ("allowed-origins", "https://exa mple.com", "not an origin"),
    ("allowed-hosts", "exa mple.org", "not a host name or IP address"),
    ("allowed-hosts", "http://example.org", "not a host name or IP address"),
    ("allowed-hosts", "example.org/", "not a host name or IP address"),
    ("allowed-hosts", "*.example.org", "write .example.org for a domain and its subdomains"),
    ("allowed-hosts", ".example.org:80", "not a domain"),
    ("allowed-hosts", "[::1", "not a host name or IP address"),
    ("history-limit", "0", "must be at least 1"),
    ("history-replay", "-1", "not an integer"),
    ("presence-grace", "-1s", "negative durations are not allowed"),
    ("presence-grace", "25h", "must be at most 24h"),
    ("presence-grace", "soon", "not a duration"),
    ("trusted-proxies", "10.0.0.1/8", "host bits are set (the network is 10.0.0.0/8)"),
    ("trusted-proxies", "10.0.0.0/40", "not a network"),
    ("trusted-proxies", "proxy.internal", "not a network"),
    ("drain-delay", "-1s", "negative durations are not allowed"),
    ("drain-delay", "25h", "must be at most 24h"),
    ("drain-delay", "soon", "not a duration"),
    ("backplane", "http://localhost:6379", "must start with redis:// or rediss://"),
    ("backplane", "redis://", "names no host"),
    ("backplane", "redis://host:0", "port must be a number from 1 to 65535"),
    ("backplane", "redis://host/zero", "must be a database number"),
    ("workers", "0", "must be at least 1"),
    ("workers", "two", "not an integer (or auto: one per core)"),
    ("workers", "2000", "must be at most 1024"),
    ("log-level", "verbose", "must be one of debug, info, warning, error"),
    ("log-level", "critical", "must be one of"),
    ("log-format", "logfmt", "must be one of text, json"),
    ("log-format", "", "must be one of text, json"),
    ("debug", "maybe", "not a boolean"),
    ("debug", "2", "not a boolean"),
]


@pytest.mark.parametrize(("setting", "text", "reason"), [v for v in INVALID if v[0] != "debug"])
def test_bad_flag(setting: str, text: str, reason: str) -> None:
    error = load_error([f"{flag(setting)}={text}"])  # "=" lets a value start with "-"
    assert (error.setting, error.value, error.source) == (setting, text, flag(setting))
    assert reason in error.reason
    assert f" for {flag(setting)} ({env_name(setting)}): " in str(error)
    assert str(error).endswith(error.reason)


@pytest.mark.parametrize(("setting", "text", "reason"), [v for v in INVALID if v[1]])
def test_bad_prefixed_variable(setting: str, text: str, reason: str) -> None:
    error = load_error([], {env_name(setting): text})
    assert (error.setting, error.value, error.source) == (setting, text, env_name(setting))
    assert reason in error.reason
    assert f" for {env_name(setting)} ({flag(setting)}): {error.reason}" in str(error)


@pytest.mark.parametrize(
    ("setting", "text", "reason"), [v for v in INVALID if v[0] in BARE_ALIASES]
)
def test_bad_bare_alias(setting: str, text: str, reason: str) -> None:
    bare = env_name(setting, bare=True)
    error = load_error([], {bare: text})
    assert error.source == bare
    assert reason in error.reason
    assert f" for {bare} ({flag(setting)}): " in str(error)


def test_exact_messages() -> None:
    assert str(load_error(["--ping-period", "70s"])) == (
        "invalid value '70s' for --ping-period (TRIO_CHAT_PING_PERIOD): "
        "must be below the pong wait (60s)"
    )
    assert str(load_error([], {"TRIO_CHAT_PORT": "abc"})) == (
        "invalid value 'abc' for TRIO_CHAT_PORT (--port): not an integer"
    )
    assert str(load_error([], {"PORT": "abc"})) == (
        "invalid value 'abc' for PORT (--port): not an integer"
    )


def test_message_stays_one_line_and_short() -> None:
    error = load_error([], {"TRIO_CHAT_LOG_LEVEL": "info\nerror" + "x" * 500})
    assert "\\n" in str(error)
    assert len(str(error)) < 200
    assert error.value.startswith("info\nerror")  # the attribute keeps the whole value


def test_first_bad_value_is_reported() -> None:
    error = load_error(["--port", "x", "--log-level", "y"])
    assert error.setting == "port"


# --- ping period against pong wait ---------------------------------------------------------


def test_ping_period_must_be_below_pong_wait() -> None:
    assert load(["--ping-period", "59.999s"]).ping_period == pytest.approx(59.999)
    error = load_error(["--ping-period", "60s"])
    assert error.setting == "ping-period"
    assert error.value == "60s"


def test_short_pong_wait_blames_the_default_ping_period() -> None:
    error = load_error(["--pong-wait", "30s"])
    assert (error.setting, error.value, error.source) == ("ping-period", "54s", "default")
    assert str(error) == (
        "invalid default '54s' for --ping-period (TRIO_CHAT_PING_PERIOD): "
        "must be below the pong wait (30s)"
    )


def test_ping_period_from_variable_against_pong_wait_from_flag() -> None:
    error = load_error(["--pong-wait", "500ms"], {"PING_PERIOD": "1s"})
    assert str(error) == (
        "invalid value '1s' for PING_PERIOD (--ping-period): must be below the pong wait (500ms)"
    )


def test_short_timeouts_together() -> None:
    settings = load(["--pong-wait", "500ms", "--ping-period", "100ms", "--write-wait", "50ms"])
    assert (settings.pong_wait, settings.ping_period, settings.write_wait) == (0.5, 0.1, 0.05)


# --- workers -----------------------------------------------------------------------------

BACKPLANE = ["--backplane", "redis://127.0.0.1:6379/0"]


def test_workers_default_to_one_and_auto_is_the_cores() -> None:
    assert load().workers == 1
    assert load(["--workers", "auto", *BACKPLANE]).workers == available_cores()
    assert load(["--workers", "3", *BACKPLANE]).workers == 3


def test_several_workers_need_a_backplane() -> None:
    assert load(["--workers", "1"]).workers == 1
    error = load_error(["--workers", "2"])
    assert (error.setting, error.value, error.source) == ("workers", "2", "--workers")
    assert "--backplane" in str(error)
    error = load_error([], {"TRIO_CHAT_WORKERS": "2"})
    assert error.source == "TRIO_CHAT_WORKERS"


def test_several_workers_need_so_reuseport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)  # as on Windows
    assert load(["--workers", "1", *BACKPLANE]).workers == 1
    error = load_error(["--workers", "2", *BACKPLANE])
    assert error.setting == "workers"
    assert "SO_REUSEPORT" in str(error)


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("2m", 120.0),
        ("1.5s", 1.5),
        ("90", 90.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("1h2m3s4ms", 3723.004),
        ("1h30m", 5400.0),
        ("1m500ms", 60.5),
        ("2h0.5m", 7230.0),
        ("1ms", 0.001),
        ("007s", 7.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        " 10s",
        "10s ",
        "10 s",
        "-1s",
        "-5",
        "+5s",
        "10x",
        "s",
        "ms",
        "h1",
        "1s1s",  # each unit at most once
        "30s1m",  # units in falling order
        "1ms1s",
        "1d",
        "1us",
        "1S",
        ".5s",
        "1.s",
        "1e3",
        "1e3s",
        "1,5s",
        "nan",
        "inf",
        "infs",
        "1_000s",
        "\u0661s",
        "9" * 400 + "h",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]+$"):
        parse_duration(text)


def format_duration(hours: int, minutes: int, seconds: int, millis: int) -> str:
    parts = zip((hours, minutes, seconds, millis), ("h", "m", "s", "ms"), strict=True)
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 100_000), st.integers(0, 999))
def test_parse_duration_round_trip(hours: int, minutes: int, seconds: int, millis: int) -> None:
    text = format_duration(hours, minutes, seconds, millis)
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert math.isclose(parse_duration(text), expected, rel_tol=1e-12, abs_tol=1e-9)


@given(st.floats(0, 1e9, allow_nan=False, allow_infinity=False))
def test_parse_duration_plain_seconds(seconds: float) -> None:
    text = f"{seconds:f}"  # positional notation: the grammar has no exponents
    assert math.isclose(parse_duration(text), float(text))


@given(st.text(max_size=20))
def test_parse_duration_gives_a_finite_duration_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        reason = str(exc)
    else:
        assert math.isfinite(seconds)
        assert seconds >= 0
        return
    assert reason
    assert "\n" not in reason


# --- allowed origins -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("*", "*"),
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://localhost:80", "http://localhost"),  # browsers omit the default port
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("https://example.com:08443", "https://example.com:8443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("http://[::1]", "http://[::1]"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_origin_normalisation(text: str, origin: str) -> None:
    assert load(["--allowed-origin", text]).allowed_origins == (origin,)
    assert load([], {"TRIO_CHAT_ALLOWED_ORIGINS": text}).allowed_origins == (origin,)


def test_origin_flag_is_repeatable_and_keeps_order() -> None:
    argv = ["--allowed-origin", "https://b.example", "--allowed-origin", "https://a.example"]
    assert load(argv).allowed_origins == ("https://b.example", "https://a.example")


def test_origin_variable_is_comma_separated_and_skips_blanks() -> None:
    env = {"TRIO_CHAT_ALLOWED_ORIGINS": " https://a.example, ,http://b.example:81,, "}
    assert load([], env).allowed_origins == ("https://a.example", "http://b.example:81")
    assert load([], {"TRIO_CHAT_ALLOWED_ORIGINS": " , "}).allowed_origins == ()


def test_origin_flag_also_takes_commas() -> None:
    argv = ["--allowed-origin", "https://a.example,https://b.example"]
    assert load(argv).allowed_origins == ("https://a.example", "https://b.example")


def test_origins_are_deduplicated_after_normalising() -> None:
    env = {"TRIO_CHAT_ALLOWED_ORIGINS": "https://A.example,https://a.example:443,*,*"}
    assert load([], env).allowed_origins == ("https://a.example", "*")


def test_origin_flag_replaces_the_variable() -> None:
    env = {"TRIO_CHAT_ALLOWED_ORIGINS": "https://a.example"}
    assert load(["--allowed-origin", "https://b.example"], env).allowed_origins == (
        "https://b.example",
    )
    assert load(["--allowed-origin", ""], env).allowed_origins == ()


def test_origin_has_no_bare_alias() -> None:
    assert load([], {"ALLOWED_ORIGINS": "https://a.example"}).allowed_origins == ()


def test_bad_origin_names_the_item() -> None:
    env = {"TRIO_CHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example/"}
    assert str(load_error([], env)) == (
        "invalid value 'https://b.example/' for TRIO_CHAT_ALLOWED_ORIGINS (--allowed-origin): "
        "an origin has no path, query or fragment (drop any trailing '/')"
    )


# --- allowed hosts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("*", "*"),
        ("chat.example.org", "chat.example.org"),
        ("CHAT.Example.ORG", "chat.example.org"),
        ("chat.example.org.", "chat.example.org"),  # the fully qualified form
        ("chat.example.org:8443", "chat.example.org"),  # any port is accepted
        (".Example.org", ".example.org"),
        ("10.0.0.5", "10.0.0.5"),
        ("10.0.0.5:8080", "10.0.0.5"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("[0:0::1]:8080", "[::1]"),
        ("2001:DB8::1", "[2001:db8::1]"),
        ("localhost", "localhost"),
    ],
)
def test_allowed_host_normalisation(text: str, host: str) -> None:
    assert load(["--allowed-host", text]).allowed_hosts == (host,)
    assert load([], {"TRIO_CHAT_ALLOWED_HOSTS": text}).allowed_hosts == (host,)


def test_allowed_host_is_repeatable_comma_separated_and_deduplicated() -> None:
    argv = ["--allowed-host", "b.example", "--allowed-host", "a.example,B.example:80"]
    assert load(argv).allowed_hosts == ("b.example", "a.example")
    env = {"TRIO_CHAT_ALLOWED_HOSTS": " a.example, ,.b.example,, "}
    assert load([], env).allowed_hosts == ("a.example", ".b.example")


def test_allowed_host_flag_replaces_the_variable() -> None:
    env = {"TRIO_CHAT_ALLOWED_HOSTS": "a.example"}
    assert load(["--allowed-host", "b.example"], env).allowed_hosts == ("b.example",)
    assert load(["--allowed-host", ""], env).allowed_hosts == ()  # back to the default


def test_allowed_host_has_no_bare_alias() -> None:
    assert load([], {"ALLOWED_HOSTS": "a.example"}).allowed_hosts == ()


def test_bad_allowed_host_names_the_item() -> None:
    env = {"TRIO_CHAT_ALLOWED_HOSTS": "a.example, *.b.example"}
    assert str(load_error([], env)) == (
        "invalid value '*.b.example' for TRIO_CHAT_ALLOWED_HOSTS (--allowed-host): "
        "write .b.example for a domain and its subdomains"
    )


def test_help_says_what_the_allowed_hosts_default_depends_on() -> None:
    text = " ".join(parser().format_help().split())
    assert "--allowed-host HOST" in text
    assert "[::1] if bound to loopback, else any; env TRIO_CHAT_ALLOWED_HOSTS)" in text


# --- debug and log level -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["true", "TRUE", "1", "yes", "Yes", "on", "ON"])
def test_debug_true_values(text: str) -> None:
    assert load([], {"TRIO_CHAT_DEBUG": text}).debug is True
    assert load([], {"DEBUG": text}).debug is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "NO", "off", "Off"])
def test_debug_false_values(text: str) -> None:
    assert load([], {"TRIO_CHAT_DEBUG": text}).debug is False
    assert load([], {"DEBUG": text}).debug is False


def test_prefixed_debug_beats_bare() -> None:
    assert load([], {"TRIO_CHAT_DEBUG": "off", "DEBUG": "on"}).debug is False


def test_debug_forces_the_debug_log_level() -> None:
    settings = load(["--debug", "--log-level", "error"])
    assert (settings.debug, settings.log_level) == (True, "debug")
    settings = load([], {"DEBUG": "1", "TRIO_CHAT_LOG_LEVEL": "warning"})
    assert (settings.debug, settings.log_level) == (True, "debug")


def test_debug_off_keeps_the_log_level() -> None:
    settings = load(["--log-level", "Error"], {"TRIO_CHAT_DEBUG": "false"})
    assert (settings.debug, settings.log_level) == (False, "error")


def test_bad_log_level_is_reported_even_with_debug() -> None:
    assert load_error(["--debug", "--log-level", "loud"]).setting == "log-level"


# --- logs and the debug token -------------------------------------------------------------


def test_log_format_default_and_choices() -> None:
    assert load().log_format == "text"
    assert load(["--log-format", "json"]).log_format == "json"
    assert load([], {"TRIO_CHAT_LOG_FORMAT": "json"}).log_format == "json"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must not be empty"),
        ("short", "at least 16 characters"),
        ("has a space in it, long enough", "visible ASCII"),
        ("tab\tinside-a-long-token", "visible ASCII"),
        ("non-ascii-\u00e9-long-enough", "visible ASCII"),
    ],
)
def test_bad_debug_token_is_never_quoted(text: str, reason: str) -> None:
    with pytest.raises(SettingError) as info:
        load([f"--debug-token={text}"])
    message = str(info.value)
    assert reason in message
    assert "--debug-token (TRIO_CHAT_DEBUG_TOKEN)" in message
    assert "\n" not in message
    if text:
        assert text not in message
        assert "(hidden)" in message


def test_debug_token_from_the_variable() -> None:
    token = "s3cr3t-token-0123456789"
    assert load([], {"TRIO_CHAT_DEBUG_TOKEN": token}).debug_token == token
    assert load([], {"TRIO_CHAT_DEBUG_TOKEN": ""}).debug_token is None  # empty: unset
    assert load([], {"DEBUG_TOKEN": token}).debug_token is None  # no bare alias
