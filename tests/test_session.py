"""Every row of the protocol over real sockets: joining, events, errors, closes."""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer
from wsclient import RawClient
from wsproto.events import BytesMessage, CloseConnection, Message

from trio_chat.core import protocol

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# -- joining -------------------------------------------------------------------


async def test_hello_gets_welcome_then_replay_ending_with_own_join(server: RunningServer) -> None:
    bob = await server.joined("bob")
    alice = await server.client()
    welcome = await alice.hello("alice")
    epoch = welcome.get("epoch")
    assert isinstance(epoch, str)
    assert epoch
    assert welcome == {
        "type": "welcome",
        "room": "lobby",
        "name": "alice",
        "members": ["bob", "alice"],
        "last_id": 2,
        "epoch": epoch,
    }
    replay = [await alice.next_event(), await alice.next_event()]
    assert [(e["type"], e["id"], e["name"]) for e in replay] == [
        ("join", 1, "bob"),
        ("join", 2, "alice"),
    ]
    assert TS.fullmatch(replay[1]["ts"])
    announced = await bob.next_event()
    assert announced == replay[1]


async def test_say_reaches_every_member_with_ref_and_trimmed_text(server: RunningServer) -> None:
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    await alice.next_of("join")  # bob's
    await alice.say("  hello\nworld \u3000", ref="c-1")
    mine, theirs = await alice.next_event(), await bob.next_event()
    assert mine == theirs
    assert mine["type"] == "message"
    assert mine["text"] == "hello\nworld"
    assert mine["ref"] == "c-1"
    assert mine["id"] == 3
    assert mine["name"] == "alice"


async def test_rooms_are_separate(server: RunningServer) -> None:
    alice = await server.joined("alice", "one")
    bob = await server.joined("alice", "two")  # same name, other room: fine
    await alice.say("in one")
    await bob.say("in two")
    assert (await alice.next_event())["text"] == "in one"
    event = await bob.next_event()
    assert (event["text"], event["room"], event["id"]) == ("in two", "two", 2)


async def test_typing_goes_to_others_once_per_second(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server(rate_limit=0)
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    await alice.next_of("join")
    await alice.send_json({"type": "typing"})
    await alice.send_json({"type": "typing"})  # within a second: dropped
    await alice.say("done")
    assert await bob.next_event() == {"type": "typing", "room": "lobby", "name": "alice"}
    assert (await bob.next_event())["type"] == "message"
    assert (await alice.next_event())["type"] == "message"  # no typing echo
    mock_clock.jump(1.0)
    await alice.send_json({"type": "typing"})
    assert (await bob.next_event())["type"] == "typing"


async def test_leave_events_carry_the_reason_quit(server: RunningServer) -> None:
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    await alice.next_of("join")
    await bob.send_raw(bob.ws.send(CloseConnection(code=1000)))
    assert (await bob.closed()).code == 1000
    leave = await alice.next_event()
    assert (leave["type"], leave["name"], leave["reason"], leave["id"]) == (
        "leave",
        "bob",
        "quit",
        3,
    )
    carol = await server.joined("carol")
    await carol.aclose()  # TCP gone without a close frame: also quit
    assert (await alice.next_of("leave"))["reason"] == "quit"


async def test_name_is_free_again_after_leave(server: RunningServer) -> None:
    first = await server.joined("alice")
    await first.aclose()
    with trio.fail_after(5):
        while True:
            client = await server.client()
            await client.send_json({"type": "hello", "name": "ALICE"})
            event = await client.next_event()
            if event["type"] == "welcome":
                break
            assert event["code"] == "name_taken"
            await client.aclose()
            await trio.sleep(0.01)


# -- resuming with since -------------------------------------------------------


async def test_resume_with_since_replays_exactly_what_was_missed(server: RunningServer) -> None:
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    await bob.say("one")
    seen = (await bob.next_event())["id"]
    await bob.aclose()
    await alice.next_of("leave")
    for text in ("two", "three"):
        await alice.say(text)
    assert [(await alice.next_event())["text"] for _ in range(2)] == ["two", "three"]
    back = await server.client()
    welcome = await back.hello("bob", since=seen)
    assert welcome["recovered"] is True
    replay: list[dict[str, object]] = []
    while not replay or replay[-1]["id"] != welcome["last_id"]:
        replay.append(await back.next_event())
    assert [e["id"] for e in replay] == list(range(seen + 1, welcome["last_id"] + 1))
    assert [e.get("text") for e in replay if e["type"] == "message"] == ["two", "three"]


async def test_since_older_than_history_is_not_recovered(start_server: StartServer) -> None:
    server = await start_server(history_limit=3, rate_limit=0)
    alice = await server.joined("alice")
    for n in range(5):
        await alice.say(f"m{n}")
    bob = await server.client()
    welcome = await bob.hello("bob", since=1)
    assert welcome["recovered"] is False
    replay = [await bob.next_event() for _ in range(3)]
    assert [e["id"] for e in replay] == [5, 6, 7]  # what is retained, ending with bob's join


async def test_since_beyond_history_is_answered_like_no_since(server: RunningServer) -> None:
    alice = await server.client()
    welcome = await alice.hello("alice", since=500)
    assert welcome["recovered"] is False
    assert welcome["last_id"] == 1
    assert (await alice.next_event())["id"] == 1


async def test_replay_without_since_is_bounded_by_history_replay(
    start_server: StartServer,
) -> None:
    server = await start_server(history_replay=3, rate_limit=0)
    alice = await server.joined("alice")
    for n in range(10):
        await alice.say(f"m{n}")
    bob = await server.client()
    welcome = await bob.hello("bob")
    assert "recovered" not in welcome
    replay = [await bob.next_event() for _ in range(3)]
    assert [e["id"] for e in replay] == [10, 11, 12]
    assert replay[-1]["type"] == "join"


# -- errors keep the connection open -------------------------------------------

ERROR_CASES = [
    # (frames sent before, frame, expected code) -- "J" joins first
    ("", "not json", "bad_json"),
    ("", "[1, 2]", "bad_json"),
    ("", '{"type": "say", "text": "hi"}', "not_joined"),
    ("", '{"type": "nonsense"}', "not_joined"),
    ("", '{"type": "hello"}', "bad_request"),
    ("", '{"type": "hello", "name": 5}', "bad_request"),
    ("", '{"type": "hello", "name": "ok", "since": -1}', "bad_request"),
    ("", '{"type": "hello", "name": "  "}', "bad_name"),
    ("", '{"type": "hello", "name": "' + "x" * 33 + '"}', "bad_name"),
    ("", '{"type": "hello", "name": "a\\u0007b"}', "bad_name"),
    ("", '{"type": "hello", "name": "ok", "room": "no spaces"}', "bad_room"),
    ("", '{"type": "hello", "name": "ok", "room": "' + "r" * 65 + '"}', "bad_room"),
    ("J", '{"type": "hello", "name": "again"}', "already_joined"),
    ("J", '{"type": "dance"}', "bad_request"),
    ("J", '{"type": "say"}', "bad_request"),
    ("J", '{"type": "say", "text": ["x"]}', "bad_request"),
    ("J", '{"type": "say", "text": "x", "ref": 7}', "bad_request"),
    ("J", '{"type": "say", "text": "\\ud800"}', "bad_request"),
    ("J", '{"type": "say", "text": " \\n\\t "}', "empty_text"),
    ("J", '{"type": "say", "text": "' + "y" * 4001 + '"}', "text_too_long"),
    ("J", "[[[[" * 5000, "bad_json"),
    ("J", '{"type": "say", "text": "x", "n": 1' + "0" * 5000 + "}", "bad_json"),
]


@pytest.mark.parametrize(("before", "frame", "code"), ERROR_CASES)
async def test_each_error_code(server: RunningServer, before: str, frame: str, code: str) -> None:
    witness = await server.joined("witness")
    client = await server.joined("me") if before == "J" else await server.client()
    await client.send_text(frame)
    error = await client.next_event()
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str)
    # The connection stays usable, and others are unaffected.
    if before == "J":
        await client.say("still here")
        assert (await client.next_of("message"))["text"] == "still here"
    else:
        await client.hello("late")
    await witness.say("fine")
    assert (await witness.next_of("message"))["text"] in ("still here", "fine")


async def test_error_echoes_ref(server: RunningServer) -> None:
    client = await server.joined("alice")
    await client.send_json({"type": "say", "text": "   ", "ref": "r-9"})
    assert await client.next_event() == {
        "type": "error",
        "code": "empty_text",
        "message": "text is empty",
        "ref": "r-9",
    }


async def test_a_refused_hello_echoes_its_ref(server: RunningServer) -> None:
    await server.joined("alice")
    client = await server.client()
    await client.send_json({"type": "hello", "name": "alice", "ref": "h-1"})
    error = await client.next_event()
    assert (error["code"], error.get("ref")) == ("name_taken", "h-1")


async def test_name_taken_is_case_insensitive_and_hello_can_be_retried(
    server: RunningServer,
) -> None:
    await server.joined("Alice")
    client = await server.client()
    await client.send_json({"type": "hello", "name": "aLiCe"})
    assert (await client.next_event())["code"] == "name_taken"
    welcome = await client.hello("alice2")
    assert welcome["members"] == ["Alice", "alice2"]


async def test_nul_and_markup_are_just_text(server: RunningServer) -> None:
    client = await server.joined("alice")
    text = "<img src=x onerror=alert(1)>\x00end"
    await client.say(text)
    assert (await client.next_event())["text"] == text


async def test_rate_limit_burst_then_rate(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server(rate_limit=10, rate_burst=20)
    client = await server.joined("alice")
    for n in range(22):
        await client.say(f"m{n}", ref=str(n))
    events = [await client.next_event() for _ in range(22)]
    assert [e["type"] for e in events].count("message") == 20
    limited = [e for e in events if e["type"] == "error"]
    assert [(e["code"], e["ref"]) for e in limited] == [
        ("rate_limited", "20"),
        ("rate_limited", "21"),
    ]
    mock_clock.jump(0.15)  # one token back at 10 per second
    await client.say("again")
    await client.say("too soon", ref="late")
    # Errors go straight back; messages travel through the hub: either may come first.
    events = sorted([await client.next_event() for _ in range(2)], key=lambda e: e["type"])
    assert [(e["type"], e.get("text"), e.get("ref")) for e in events] == [
        ("error", None, "late"),
        ("message", "again", None),
    ]


async def test_typing_does_not_count_against_the_rate_limit(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server(rate_limit=10, rate_burst=1)
    client = await server.joined("alice")
    await client.send_json({"type": "typing"})
    await client.say("first")
    assert (await client.next_event())["text"] == "first"


async def test_persistent_abuse_is_closed_with_1008(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server()
    witness = await server.joined("witness")
    abuser = await server.joined("abuser")
    for _ in range(101):
        await abuser.send_text("nope")
    received = await abuser.events_until_closed()
    assert [e["code"] for e in received] == ["bad_json"] * 100
    assert abuser.close_code == 1008
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("abuser", "error")


async def test_errors_spread_over_time_are_not_abuse(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server()
    client = await server.joined("alice")
    for _ in range(3):
        for _ in range(60):
            await client.send_text("nope")
        for _ in range(60):
            assert (await client.next_event())["code"] == "bad_json"
        mock_clock.jump(10.5)
    await client.say("still welcome")
    assert (await client.next_event())["type"] == "message"


# -- closes ----------------------------------------------------------------------


async def test_binary_frame_closes_with_1003(server: RunningServer) -> None:
    witness = await server.joined("witness")
    client = await server.joined("alice")
    await client.send_raw(client.ws.send(BytesMessage(data=b"\x00\x01")))
    assert (await client.closed()).code == 1003
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("alice", "error")


async def test_message_over_the_limit_closes_with_1009_even_in_fragments(
    start_server: StartServer,
) -> None:
    server = await start_server(max_message_size=1000)
    client = await server.joined("alice")
    ok = json.dumps({"type": "say", "text": "é" * 400}, ensure_ascii=False)  # 800+ bytes
    await client.send_text(ok)
    assert (await client.next_event())["type"] == "message"
    # 600 characters, but over 1000 bytes once encoded, split over 3 fragments.
    big = json.dumps({"type": "say", "text": "é" * 600}, ensure_ascii=False)
    third = len(big) // 3
    for start, end, last in (
        (0, third, False),
        (third, 2 * third, False),
        (2 * third, None, True),
    ):
        await client.send_raw(client.ws.send(Message(data=big[start:end], message_finished=last)))
    assert (await client.closed()).code == 1009


async def test_invalid_utf8_closes_with_1007(server: RunningServer) -> None:
    client = await server.joined("alice")
    # A masked text frame whose payload is not UTF-8 (mask key 0 leaves it as is).
    await client.send_raw(b"\x81\x82\x00\x00\x00\x00\xc3\x28")
    assert (await client.closed()).code == 1007


async def test_no_hello_within_the_handshake_timeout_closes_with_1008(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(handshake_timeout=10.0)
    client = await server.client()
    start = trio.current_time()
    closed = await client.closed()
    assert closed.code == 1008
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.01)


async def test_unexpected_error_closes_only_that_client_with_1011(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_parse = protocol.parse_command

    def faulty_parse(frame: str, *, joined: bool, token_mode: bool = False) -> protocol.Command:
        if "boom" in frame:
            raise RuntimeError("injected fault")
        return real_parse(frame, joined=joined, token_mode=token_mode)

    monkeypatch.setattr(protocol, "parse_command", faulty_parse)
    witness = await server.joined("witness")
    client = await server.joined("victim")
    await client.say("boom")
    assert (await client.closed()).code == 1011
    assert "injected fault" in caplog.text
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("victim", "error")
    await witness.say("server still fine")
    assert (await witness.next_event())["text"] == "server still fine"


async def test_silent_client_is_dropped_after_the_pong_wait(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(ping_period=5.0, pong_wait=6.0, write_wait=1.0)
    witness = await server.joined("witness")
    silent = await server.joined("silent", auto_pong=False)
    start = trio.current_time()
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("silent", "timeout")
    assert trio.current_time() - start == pytest.approx(6.0, abs=0.01)
    closed = await silent.closed()
    assert closed.code is None  # dropped without a close handshake
    assert silent.pings == 1
    # The witness answered its pings throughout and is still connected.
    assert witness.pings >= 1
    await witness.say("alive")
    assert (await witness.next_event())["text"] == "alive"


async def test_answering_pings_keeps_a_quiet_client(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(ping_period=5.0, pong_wait=6.0)
    client = await server.joined("quiet")
    with trio.move_on_after(60):
        await client.next_event()  # nothing comes: pings are answered inside
    assert client.pings >= 10
    other = await server.joined("other")
    await other.say("hello after a minute")
    assert (await client.next_of("message"))["text"] == "hello after a minute"


async def test_slow_consumer_is_closed_with_1013(start_server: StartServer) -> None:
    server = await start_server(send_queue_size=8, rate_limit=0, write_wait=600.0)
    sender = await server.joined("sender")
    # A small receive buffer: the kernel's share fills in a few messages,
    # however large the machine's loopback buffers may grow.
    slow = await server.joined("slow", receive_buffer=4096)
    await sender.next_of("join")
    text = "x" * 4000
    # Enough to fill the kernel's socket buffers, then the send queue. The
    # sender reads its echoes as it goes, as a healthy client does: one that
    # stopped reading for 50 messages could overflow its own queue too.
    leaves: list[dict[str, object]] = []
    with trio.fail_after(60):
        while not leaves:
            for _ in range(4):
                await sender.say(text)
            events = [await sender.next_event() for _ in range(4)]
            while events[-1]["type"] != "message":  # a leave took a message's place
                events.append(await sender.next_event())
            leaves = [e for e in events if e["type"] == "leave"]
    assert [(e["name"], e["reason"]) for e in leaves] == [("slow", "slow")]
    # The slow client gets what was written before, then the close frame.
    received = await slow.events_until_closed()
    assert slow.close_code == 1013
    ids = [e["id"] for e in received]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap before the drop


async def test_shutdown_closes_every_client_with_1001(server: RunningServer) -> None:
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    pending = await server.client()  # connected, no hello yet
    server.shutdown.set()
    with trio.fail_after(5):
        assert (await alice.closed()).code == 1001
        assert (await bob.closed()).code == 1001
        assert (await pending.closed()).code == 1001
        await server.stopped.wait()
    with pytest.raises(OSError, match="all attempts to connect"):
        await RawClient.connect(server.port)
