"""Token mode and reserved names, over real sockets: only token holders
join, under the token's name and into the rooms it grants; every spoofing
attempt is refused with `unauthorized` and close 1008; a token that expires
closes its connection (MockClock); without a key nothing changes.

Design choices the tests pin down: a `name` in the hello that differs from
the token's is refused (`name_mismatch`), not silently replaced; reserved
names are refused in open mode as `name_taken`, and bind open mode only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import time
from typing import Any

import jwt
import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from wsclient import Closed, RawClient, http_request

from trio_chat.core.auth import LEEWAY, ReservedNames, public_key_verifier, secret_verifier
from trio_chat.terminal import add_connect_arguments, run_connect

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
GRACE = 10.0

Event = dict[str, Any]


def sign(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def claims_for(name: str = "alice", ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": name, "iat": now, "exp": now + ttl, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, as an attacker would: `none`, or HS256 with any key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def token_server(start_server: StartServer, **overrides: Any) -> RunningServer:
    settings: dict[str, Any] = {"auth": secret_verifier(SECRET), "rate_limit": 0}
    return await start_server(**(settings | overrides))


async def hello(server: RunningServer, token: str | None, **fields: Any) -> RawClient:
    client = await server.client()
    frame: dict[str, Any] = {"type": "hello", "room": "lobby", **fields}
    if token is not None:
        frame["token"] = token
    await client.send_json(frame)
    return client


async def refused(client: RawClient) -> tuple[Event, Closed]:
    """The `unauthorized` error, then the close."""
    with trio.fail_after(10):
        error = await client.next_event()
        closed = await client.closed()
    assert (error["type"], error["code"]) == ("error", "unauthorized"), error
    assert closed.code == 1008
    return error, closed


async def welcomed(client: RawClient, *, replay: bool = True) -> Event:
    """The welcome; and the replay, which ends with the event `last_id`, is skipped."""
    with trio.fail_after(10):
        welcome = await client.next_event()
        assert welcome["type"] == "welcome", welcome
        while replay and (await client.next_event())["id"] != welcome["last_id"]:
            pass
    return welcome


async def scrape(server: RunningServer) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in (await http_request(server.port, "/metrics")).body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


# -- who joins -------------------------------------------------------------------


async def test_a_token_holder_joins_under_the_tokens_name(start_server: StartServer) -> None:
    server = await token_server(start_server)
    alice = await hello(server, sign(claims_for("alice")))
    welcome = await welcomed(alice)
    assert (welcome["name"], welcome["members"]) == ("alice", ["alice"])
    # The same name in the hello is fine too; the token's name is what counts.
    bob = await hello(server, sign(claims_for("bob")), name="bob")
    assert (await welcomed(bob))["members"] == ["alice", "bob"]
    join = await alice.next_of("join")
    assert join["name"] == "bob"
    await bob.say("hi")
    assert (await alice.next_of("message"))["name"] == "bob"


async def test_a_name_other_than_the_tokens_is_refused(start_server: StartServer) -> None:
    server = await token_server(start_server)
    client = await hello(server, sign(claims_for("alice")), name="bob", ref="h1")
    error, _ = await refused(client)
    assert error["ref"] == "h1"
    assert "alice" in error["message"]
    # Not even a case variant: the name is the token's, spelled its way.
    client = await hello(server, sign(claims_for("alice")), name="Alice")
    await refused(client)
    samples = await scrape(server)
    assert samples['trio_chat_refused_hellos_total{reason="name_mismatch"}'] == 2


def _expired() -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now - 7200, "exp": now - 3600}


def _future(claim: str) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", claim: now + 600, "exp": now + 3600}


def _without(claim: str) -> dict[str, Any]:
    claims = claims_for("alice")
    del claims[claim]
    return claims


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(None, "missing_token", id="no token"),
        pytest.param("", "bad_token", id="empty"),
        pytest.param(42, "bad_token", id="not a string"),
        pytest.param("not.a.jwt", "bad_token", id="garbage"),
        pytest.param(
            sign(claims_for(), b"another secret, just as long as ours!!"),
            "bad_token",
            id="wrong secret",
        ),
        pytest.param(
            handmade({"alg": "none", "typ": "JWT"}, claims_for(), None), "bad_token", id="none"
        ),
        pytest.param(
            handmade({"alg": "HS512", "typ": "JWT"}, claims_for(), SECRET), "bad_token", id="HS512"
        ),
        pytest.param(sign(_expired()), "expired", id="expired"),
        pytest.param(sign(_future("nbf")), "not_yet_valid", id="nbf in the future"),
        pytest.param(sign(_future("iat")), "not_yet_valid", id="iat in the future"),
        pytest.param(sign(_without("sub")), "bad_token", id="no sub"),
        pytest.param(sign(_without("exp")), "bad_token", id="no exp"),
        pytest.param(sign(claims_for("a\u202eb")), "bad_token", id="sub no valid name"),
        pytest.param(sign(claims_for(exp="tomorrow")), "bad_token", id="exp not a number"),
        pytest.param(sign(claims_for(rooms="lobby")), "bad_token", id="rooms not a list"),
        pytest.param(sign(claims_for(rooms=["team-*"])), "room_not_granted", id="room"),
        pytest.param(sign(claims_for(rooms=[])), "room_not_granted", id="no rooms"),
    ],
)
async def test_every_bad_token_is_refused_with_1008(
    start_server: StartServer, token: Any, reason: str
) -> None:
    server = await token_server(start_server)
    client = await hello(server, token, name="alice")
    error, closed = await refused(client)
    assert closed.reason == "unauthorized"
    if isinstance(token, str) and token:
        assert token not in error["message"]  # never echoed
    samples = await scrape(server)
    assert samples[f'trio_chat_refused_hellos_total{{reason="{reason}"}}'] == 1
    assert samples['trio_chat_client_errors_total{code="unauthorized"}'] == 1
    assert samples["trio_chat_members"] == 0


async def test_only_granted_rooms_and_patterns(start_server: StartServer) -> None:
    server = await token_server(start_server)
    token = sign(claims_for("alice", rooms=["lobby", "team-*"]))
    for room in ("lobby", "team-red", "team-"):
        assert (await welcomed(await hello(server, token, room=room)))["room"] == room
    for room in ("Lobby", "team", "red-team-x", "lobby2"):
        await refused(await hello(server, token, room=room))


async def test_a_tokens_name_is_unique_per_room(start_server: StartServer) -> None:
    server = await token_server(start_server)
    await welcomed(await hello(server, sign(claims_for("alice"))))
    twin = await hello(server, sign(claims_for("alice")), ref="again")
    with trio.fail_after(10):
        error = await twin.next_event()
    assert (error["code"], error["ref"]) == ("name_taken", "again")
    # Another room: fine.
    await welcomed(await hello(server, sign(claims_for("alice")), room="other"))


async def test_leeway_admits_a_token_a_little_early_or_late(start_server: StartServer) -> None:
    server = await token_server(start_server)
    now = time.time()
    late = sign({"sub": "late", "exp": int(now - LEEWAY / 2)})
    early = sign({"sub": "early", "nbf": int(now + LEEWAY / 2), "exp": int(now + 3600)})
    await welcomed(await hello(server, late))
    await welcomed(await hello(server, early))


# -- public keys: RS256 and ES256, and no key confusion ----------------------------


async def test_rs256_with_a_public_key(
    start_server: StartServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    server = await token_server(start_server, auth=public_key_verifier(public_pem(rsa_key)))
    await welcomed(await hello(server, sign(claims_for("alice"), rsa_key, "RS256")))
    # The public key as an HMAC secret: the classic key confusion.
    confused = handmade({"alg": "HS256", "typ": "JWT"}, claims_for("eve"), public_pem(rsa_key))
    await refused(await hello(server, confused))
    await refused(await hello(server, handmade({"alg": "none"}, claims_for("eve"), None)))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await refused(await hello(server, sign(claims_for("eve"), other, "RS256")))
    await refused(await hello(server, sign(claims_for("eve"))))  # our HS256 secret: no


async def test_es256_with_a_public_key(start_server: StartServer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    server = await token_server(start_server, auth=public_key_verifier(public_pem(key)))
    await welcomed(await hello(server, sign(claims_for("alice"), key, "ES256")))
    other = ec.generate_private_key(ec.SECP256R1())
    await refused(await hello(server, sign(claims_for("eve"), other, "ES256")))


# -- expiry while connected --------------------------------------------------------


async def test_a_connection_closes_when_its_token_expires(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await token_server(start_server, ping_period=500, pong_wait=600)
    bob = await hello(server, sign(claims_for("bob", ttl=3 * 3600)))
    await welcomed(bob)
    alice = await hello(server, sign(claims_for("alice", ttl=100)))
    await welcomed(alice)
    start = trio.current_time()
    await bob.next_of("join")
    events = await alice.events_until_closed()
    lasted = trio.current_time() - start
    assert alice.close_code == 1008
    assert events[-1]["code"] == "unauthorized"
    assert "expired" in events[-1]["message"]
    # exp + leeway, counted in Trio time from the wall clock at the hello.
    assert lasted == pytest.approx(100 + LEEWAY, abs=2)
    leave = await bob.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("alice", "error")
    assert (await scrape(server))["trio_chat_token_expiries_total"] == 1
    await bob.say("still here")  # bob's token runs on
    assert (await bob.next_of("message"))["text"] == "still here"


async def test_a_fresh_token_resumes_the_expired_place(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await token_server(start_server, presence_grace=GRACE, ping_period=500, pong_wait=600)
    bob = await hello(server, sign(claims_for("bob", ttl=3 * 3600)))
    await welcomed(bob)
    alice = await hello(server, sign(claims_for("alice", ttl=60)))
    welcome = await welcomed(alice)
    await bob.next_of("join")
    await alice.closed()
    assert alice.close_code == 1008
    # Mallory's token with Alice's secret: the secret is for Alice's name only.
    mallory = await hello(server, sign(claims_for("mallory")), resume=welcome["resume"])
    joined = await welcomed(mallory)
    assert (joined["name"], "alice" in joined["members"]) == ("mallory", True)
    assert joined["resume"] != welcome["resume"]
    assert (await bob.next_of("join"))["name"] == "mallory"
    # Alice, with a fresh token and her secret: her place back, no leave or join.
    back = await hello(
        server,
        sign(claims_for("alice")),
        since=welcome["last_id"],
        epoch=welcome["epoch"],
        resume=welcome["resume"],
    )
    resumed = await welcomed(back, replay=False)
    assert (resumed["name"], resumed["resume"]) == ("alice", welcome["resume"])
    await back.say("back")
    assert (await bob.next_event())["text"] == "back"  # nothing in between


# -- open mode ---------------------------------------------------------------------


async def test_without_a_key_nothing_changes(server: RunningServer) -> None:
    alice = await hello(server, None, name="alice")
    assert (await welcomed(alice))["name"] == "alice"
    # A token sent to an open server is ignored, as by any v1 server.
    bob = await hello(server, sign(claims_for("mallory")), name="bob")
    assert (await welcomed(bob))["name"] == "bob"
    # And the name is still required.
    nameless = await hello(server, sign(claims_for("mallory")))
    with trio.fail_after(10):
        error = await nameless.next_event()
    assert error["code"] == "bad_request"
    samples = await scrape(server)
    assert all(
        value == 0 for name, value in samples.items() if name.startswith("trio_chat_refused_hello")
    )


async def test_reserved_names_are_refused_in_open_mode(start_server: StartServer) -> None:
    server = await start_server(reserved_names=ReservedNames.of(["admin", "Moderator"]))
    # The name itself, a case variant, a look-alike (Cyrillic a), the other.
    for number, name in enumerate(("admin", "ADMIN", "\u0430dmin", "moderator")):
        client = await hello(server, None, name=name, ref="r")
        with trio.fail_after(10):
            error = await client.next_event()
        assert (error["type"], error["code"], error["ref"]) == ("error", "name_taken", "r")
        assert "reserved" in error["message"]
        # The connection stays open for another name, as for any name_taken.
        await client.send_json({"type": "hello", "name": f"user {number}"})
        assert (await welcomed(client))["name"] == f"user {number}"
    samples = await scrape(server)
    assert samples['trio_chat_refused_hellos_total{reason="reserved_name"}'] == 4


async def test_reserved_names_do_not_bind_tokens(start_server: StartServer) -> None:
    server = await token_server(start_server, reserved_names=ReservedNames.of(["admin"]))
    assert (await welcomed(await hello(server, sign(claims_for("admin")))))["name"] == "admin"


# -- the terminal client -----------------------------------------------------------


async def run_terminal(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="trio-chat connect")
    add_connect_arguments(parser)
    keyboard, receive = trio.testing.memory_stream_one_way_pair()
    await keyboard.send_all(stdin)
    await keyboard.aclose()
    stdout, stderr = io.StringIO(), io.StringIO()
    status = await run_connect(parser.parse_args(argv), receive, stdout, stderr)
    return status, stdout.getvalue(), stderr.getvalue()


async def test_the_terminal_client_joins_with_a_token(start_server: StartServer) -> None:
    server = await token_server(start_server)
    alice = await hello(server, sign(claims_for("alice")))
    await welcomed(alice)
    url = f"ws://127.0.0.1:{server.port}/ws"
    with trio.fail_after(10):
        status, _, err = await run_terminal(
            url, "--token", sign(claims_for("bot")), stdin=b"hello from a bot\n"
        )
        assert (status, err) == (0, "")
        echo = await alice.next_of("message")
    assert (echo["name"], echo["text"]) == ("bot", "hello from a bot")
    with trio.fail_after(10):
        status, _, err = await run_terminal(url, "--token", "forged", stdin=b"hi\n")
    assert status == 1
    assert "unauthorized" in err
