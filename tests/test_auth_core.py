"""Token mode's pure parts (claims, room patterns, reserved names, hello
parsing), its settings (key files, reserved names) and `trio-chat token` as
a real child process."""

from __future__ import annotations

import argparse
import fnmatch
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from processes import run_trio_chat as run

from trio_chat.config import SettingError, add_serve_arguments, load_settings
from trio_chat.core import protocol
from trio_chat.core.auth import (
    LEEWAY,
    BadKey,
    ReservedNames,
    check_claims,
    issue_token,
    public_key_verifier,
    room_granted,
    secret_verifier,
)
from trio_chat.core.protocol import ErrorCode, Hello, RefusalReason, Unauthorized

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
NOW = 1_800_000_000.0

# -- claims ----------------------------------------------------------------------

times = st.one_of(st.none(), st.integers(-1000, 1000).map(lambda delta: NOW + delta))


@given(exp=st.integers(-1000, 1000), nbf=times, iat=times, now=st.integers(-1000, 1000))
def test_claims_admit_exactly_inside_the_leeway_window(
    exp: int, nbf: float | None, iat: float | None, now: int
) -> None:
    claims: dict[str, Any] = {"sub": "alice", "exp": NOW + exp}
    if nbf is not None:
        claims["nbf"] = nbf
    if iat is not None:
        claims["iat"] = iat
    at = NOW + now
    if at >= NOW + exp + LEEWAY:
        expected: RefusalReason | None = RefusalReason.EXPIRED
    elif any(t is not None and at < t - LEEWAY for t in (nbf, iat)):
        expected = RefusalReason.NOT_YET_VALID
    else:
        expected = None
    if expected is not None:
        with pytest.raises(Unauthorized) as caught:
            check_claims(claims, at)
        assert (caught.value.reason, caught.value.code) == (expected, ErrorCode.UNAUTHORIZED)
        return
    grant = check_claims(claims, at)
    assert (grant.name, grant.rooms, grant.expires) == ("alice", None, NOW + exp)
    assert grant.closes_in(at) == pytest.approx(NOW + exp + LEEWAY - at)
    assert grant.closes_in(at) > 0


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": NOW + 60},
        {"sub": 7, "exp": NOW + 60},
        {"sub": "", "exp": NOW + 60},
        {"sub": "alice"},
        {"sub": "alice", "exp": True},
        {"sub": "alice", "exp": "soon"},
        {"sub": "alice", "exp": NOW + 60, "nbf": [1]},
        {"sub": "alice", "exp": NOW + 60, "rooms": "lobby"},
        {"sub": "alice", "exp": NOW + 60, "rooms": ["lobby", 3]},
        {"sub": "alice", "exp": NOW + 60, "rooms": ["x"] * 1000},
    ],
)
def test_ill_shaped_claims_are_bad_tokens(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized) as caught:
        check_claims(claims, NOW)
    assert caught.value.reason is RefusalReason.BAD_TOKEN


def test_the_name_is_normalised_like_any_name() -> None:
    grant = check_claims({"sub": "  Ame\u0301lie ", "exp": NOW + 60}, NOW)
    assert grant.name == "Am\u00e9lie"


# -- room patterns -----------------------------------------------------------------

patterns = st.text(alphabet="ab*", min_size=1, max_size=8)
rooms = st.text(alphabet="ab", min_size=1, max_size=8)


@given(st.lists(patterns, max_size=3), rooms)
def test_room_patterns_match_like_a_star_only_glob(pattern_list: list[str], room: str) -> None:
    expected = any(
        re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), room)
        for pattern in pattern_list
    )
    assert room_granted(tuple(pattern_list), room) == expected
    # Over room characters and `*` alone, the same as fnmatch's case-sensitive match.
    assert expected == any(fnmatch.fnmatchcase(room, pattern) for pattern in pattern_list)


@pytest.mark.parametrize(
    ("pattern", "room", "granted"),
    [
        ("lobby", "lobby", True),
        ("lobby", "Lobby", False),  # room names are case-sensitive
        ("team-*", "team-red", True),
        ("team-*", "team-", True),
        ("team-*", "team", False),
        ("*", "anything", True),
        ("a.b", "aXb", False),  # a dot is a dot
        ("a?b", "aXb", False),  # no fnmatch `?`: literal
        ("[ab]", "a", False),  # nor `[...]`
    ],
)
def test_room_pattern_examples(pattern: str, room: str, granted: bool) -> None:
    assert room_granted((pattern,), room) is granted


def test_no_rooms_claim_grants_every_room_and_an_empty_one_none() -> None:
    assert room_granted(None, "anything")
    assert not room_granted((), "lobby")


# -- reserved names ------------------------------------------------------------------


@given(st.sampled_from(["admin", "Moderator", "sysop"]), st.data())
def test_a_reserved_name_is_held_in_every_case_and_look_alike(name: str, data: Any) -> None:
    reserved = ReservedNames.of(["admin", "moderator", "SysOp"])
    variant = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in name)
    assert reserved.holds(variant)
    assert reserved.holds(variant.replace("a", "\u0430"))  # a Cyrillic a
    assert reserved.holds(variant.replace("o", "0"))  # a digit zero looks like an o
    assert not reserved.holds(variant + "x")


@given(st.text(min_size=1, max_size=10))
def test_holds_is_exactly_a_shared_name_key(name: str) -> None:
    reserved = ReservedNames.of(["admin", "root"])
    try:
        normal = protocol.normalize_name(name)
    except protocol.ProtocolError:
        return
    keys = protocol.name_keys("admin") | protocol.name_keys("root")
    assert reserved.holds(normal) == bool(keys & protocol.name_keys(normal))


def test_no_reserved_names_hold_nothing() -> None:
    assert not ReservedNames().holds("admin")


# -- hello parsing ---------------------------------------------------------------------


def test_token_mode_makes_the_token_required_and_the_name_optional() -> None:
    frame = '{"type": "hello", "token": "t.o.k", "room": "x"}'
    assert protocol.parse_command(frame, joined=False, token_mode=True) == Hello(
        name="", room="x", token="t.o.k"
    )
    with pytest.raises(Unauthorized) as missing:
        protocol.parse_command('{"type": "hello", "name": "a"}', joined=False, token_mode=True)
    assert missing.value.reason is RefusalReason.MISSING_TOKEN
    for token in ('""', "3", '["a"]', '"' + "x" * 5000 + '"'):
        with pytest.raises(Unauthorized) as bad:
            protocol.parse_command(
                f'{{"type": "hello", "token": {token}}}', joined=False, token_mode=True
            )
        assert bad.value.reason is RefusalReason.BAD_TOKEN


def test_open_mode_ignores_a_token() -> None:
    hello = protocol.parse_command(
        '{"type": "hello", "name": "a", "token": 3}', joined=False, token_mode=False
    )
    assert hello == Hello(name="a")


# -- keys and settings ---------------------------------------------------------------


def settings_from(*argv: str, **environ: str) -> Any:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return load_settings(parser.parse_args(list(argv)), environ)


def rsa_pem(bits: int = 2048, *, private: bool = False) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if private:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_secret_file_turns_token_mode_on(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    settings = settings_from("--auth-secret-file", str(path))
    assert settings.auth is not None
    assert settings.auth.algorithm == "HS256"
    assert SECRET.decode() not in repr(settings)  # never in a repr, so never in a log
    from_env = settings_from(TRIO_CHAT_AUTH_SECRET_FILE=str(path))
    assert from_env.auth == settings.auth
    assert settings_from().auth is None


def test_public_keys_pin_their_algorithm(tmp_path: Path) -> None:
    assert public_key_verifier(rsa_pem()).algorithm == "RS256"
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert public_key_verifier(ec_pem).algorithm == "ES256"
    path = tmp_path / "key.pem"
    path.write_bytes(ec_pem)
    assert settings_from("--auth-public-key", str(path)).auth is not None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"short", "at least 32 bytes"),
        (b"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n", "PEM key"),
    ],
)
def test_bad_secret_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SettingError) as caught:
        settings_from("--auth-secret-file", str(path))
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert "--auth-secret-file" in message


def test_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="cannot read it"):
        settings_from(TRIO_CHAT_AUTH_PUBLIC_KEY=str(tmp_path / "nothing.pem"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a key at all", "not a PEM public key"),
        (rsa_pem(private=True), "private key"),
        (rsa_pem(1024), "at least 2048 bits"),
        (SECRET, "not a PEM public key"),
    ],
)
def test_bad_public_keys(content: bytes, reason: str) -> None:
    with pytest.raises(BadKey, match=reason):
        public_key_verifier(content)


def test_secret_and_public_key_together_are_refused(tmp_path: Path) -> None:
    secret, public = tmp_path / "secret", tmp_path / "key.pem"
    secret.write_bytes(SECRET)
    public.write_bytes(rsa_pem())
    with pytest.raises(SettingError, match="not both"):
        settings_from("--auth-secret-file", str(secret), "--auth-public-key", str(public))


def test_reserved_names_from_a_list_or_a_file(tmp_path: Path) -> None:
    listed = settings_from("--reserved-names", "admin, Moderator ,,root")
    assert listed.reserved_names.names == ("admin", "Moderator", "root")
    path = tmp_path / "names"
    path.write_text("# staff\nadmin\n\n  sysop  \n", encoding="utf-8")
    from_file = settings_from(TRIO_CHAT_RESERVED_NAMES=f"@{path}")
    assert from_file.reserved_names.names == ("admin", "sysop")
    assert from_file.reserved_names.holds("SYSOP")
    with pytest.raises(SettingError, match="cannot read"):
        settings_from("--reserved-names", f"@{tmp_path / 'missing'}")
    with pytest.raises(SettingError, match="no valid name"):
        settings_from("--reserved-names", "ok,a\u202eb")


# -- trio-chat token -----------------------------------------------------------------


def test_token_command_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    done = run("token", "alice", "--rooms", "lobby,team-*", "--ttl", "10m",
               TRIO_CHAT_AUTH_SECRET_FILE=str(path))  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    grant = secret_verifier(SECRET).verify(token, time.time())
    assert (grant.name, grant.rooms) == ("alice", ("lobby", "team-*"))
    assert grant.expires == pytest.approx(time.time() + 600, abs=5)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    # The flag works as well as the variable; without --rooms, every room.
    flagged = run("token", "bob", "--auth-secret-file", str(path))
    assert secret_verifier(SECRET).verify(flagged.stdout.strip(), time.time()).rooms is None


def test_token_command_refusals(tmp_path: Path) -> None:
    secret, public = tmp_path / "secret", tmp_path / "key.pem"
    secret.write_bytes(SECRET)
    public.write_bytes(rsa_pem())
    for args, env, says in [
        (["alice"], {}, "no secret"),
        (["alice"], {"TRIO_CHAT_AUTH_PUBLIC_KEY": str(public)}, "only a public key"),
        (["alice", "--auth-secret-file", str(tmp_path / "no")], {}, "cannot read"),
        (["a\u202eb", "--auth-secret-file", str(secret)], {}, "invalid NAME"),
        (["alice", "--ttl", "0s", "--auth-secret-file", str(secret)], {}, "--ttl"),
        (["alice", "--rooms", "bad/room", "--auth-secret-file", str(secret)], {}, "--rooms"),
    ]:
        done = run("token", *args, **env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert says in done.stderr
        assert SECRET.decode() not in done.stderr


def test_issue_token_refuses_a_bad_name() -> None:
    with pytest.raises(protocol.ProtocolError):
        issue_token(SECRET, "\u202e", now=NOW, ttl=60)


def test_connect_needs_a_name_or_a_token() -> None:
    done = run("connect", "ws://127.0.0.1:9/ws")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--name is required" in done.stderr
    # TRIO_CHAT_TOKEN names us: the client goes on (to a port where nobody listens).
    tried = run("connect", "ws://127.0.0.1:9/ws", TRIO_CHAT_TOKEN="a.b.c")
    assert tried.returncode == 1
    assert "cannot connect" in tried.stderr
