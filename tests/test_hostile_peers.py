"""Hostile peers against sessions and the hub: one regression test per finding.

Each test reproduces what an attacker did to an earlier version and fails if
the protection it checks is removed. Over real sockets, on 127.0.0.1, with
settings shrunk (queues, buffers) so that what took thousands of sockets
takes a few hundred. The run at full scale is `nox -s stall`.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer, wait_until
from test_hub import RecordingPeer
from wsclient import Closed, RawClient, Rejected, metric, reset_on_close
from wsproto.events import CloseConnection, Message
from wsproto.frame_protocol import FrameProtocol

from trio_chat.config import Settings
from trio_chat.core.history import MemoryHistoryStore
from trio_chat.core.protocol import CloseCode, Hello, LeaveReason, Say
from trio_chat.core.rooms import Chat
from trio_chat.server.app import serve_chat
from trio_chat.server.hub import Broadcast, open_hub
from trio_chat.server.outbox import Outbox

BIG = "x" * 4000


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def assert_gap_free(events: list[dict[str, object]]) -> list[int]:
    ids = [e["id"] for e in events if "id" in e]
    assert all(isinstance(i, int) for i in ids)
    numbers = [int(str(i)) for i in ids]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    return numbers


def count(events: list[dict[str, Any]], **match: object) -> int:
    """How many of `events` have every field of `match`."""
    return sum(all(e.get(k) == v for k, v in match.items()) for e in events)


# -- 1, 2: a whole room that stops reading at once ------------------------------


class StalledPeer(RecordingPeer):
    """A member that takes every event until `stalled` is set, then none."""

    stalled = False  # one switch for all: the whole room stops reading at once

    def deliver_nowait(self, line: bytes) -> bool:
        return not StalledPeer.stalled


async def test_a_cascade_of_slow_drops_longer_than_the_stack_is_iterative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(StalledPeer, "stalled", False)
    # Python's default recursion limit is 1,000: a cascade of 3,000 drops
    # overflowed the stack when each drop delivered the next leave recursively.
    stalled = [StalledPeer(f"s{i}", Outbox(4)) for i in range(3000)]
    reader = RecordingPeer("reader", Outbox(16))
    with trio.fail_after(60):
        async with (
            open_hub(MemoryHistoryStore(5000), replay_limit=0, send_queue_size=16) as hub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(reader.consume, [False])
            await hub.join(reader, Hello("reader", "big"))
            for peer in stalled:
                await hub.join(peer, Hello(peer.name, "big"))
            assert hub.statistics().members == 3001
            StalledPeer.stalled = True
            await hub.say(reader, Say("go"))
            await wait_until(lambda: hub.statistics().members == 1)
            stats = hub.statistics()
            # Every leave reached the reader, who was never overflowed.
            await wait_until(lambda: count(reader.received, type="leave") == 3000)
            reader.done.set()
    assert stats.slow_drops == 3000  # once each, not once per leave seen
    assert reader.dropped == []
    assert all(peer.dropped == [(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)] for peer in stalled)
    live = [e for e in reader.received if e["type"] in ("message", "leave", "join")]
    ids = assert_gap_free(live)
    assert ids[-1] == 3000 + 1 + 1 + 3000  # joins, the message, the leaves
    assert len([e for e in live if e["type"] == "leave"]) == 3000


async def test_a_burst_applies_every_command_it_takes_from_the_inbox() -> None:
    # Commands that deliver nothing (a stranger's says) leave the burst's
    # budget whole, so the hub takes a burst's worth of them in one go; the
    # last one it takes must be applied, not dropped with the burst's end.
    member = RecordingPeer("member", Outbox(16))
    stranger = RecordingPeer("stranger", Outbox(16))  # never joins
    with trio.fail_after(10):
        async with (
            open_hub(MemoryHistoryStore(100), replay_limit=0, send_queue_size=16) as hub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(member.consume, [False])
            await hub.join(member, Hello("member", "r"))
            for burst_position in range(1, 9):  # whatever the position in a burst
                for n in range(burst_position):
                    hub.broadcast.send_nowait(Broadcast(stranger, Say(f"ignored {n}")))
                hub.broadcast.send_nowait(Broadcast(member, Say(f"said {burst_position}")))
                await wait_until(lambda: count(member.received, type="message") >= 1)
                [said] = [e["text"] for e in member.received if e["type"] == "message"]
                assert said == f"said {burst_position}"
                member.received.clear()
            member.done.set()


def test_leave_all_addresses_only_those_who_remain() -> None:
    chat: Chat[str] = Chat(MemoryHistoryStore(100), replay_limit=0)
    for name in ("a", "b", "c", "d"):
        chat.join(name, Hello(name, "r"), "ts")
    leaves = chat.leave_all(["b", "x", "c", "b"], LeaveReason.SLOW, "ts")
    assert [json.loads(d.line)["name"] for d in leaves] == ["b", "c"]
    assert [json.loads(d.line)["id"] for d in leaves] == [5, 6]
    assert all(d.recipients == ("a", "d") for d in leaves)
    assert chat.statistics().members == 2


async def test_a_room_that_stalls_at_once_is_dropped_and_others_go_on(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    stalled_count = 120
    server = await start_server(send_queue_size=16, rate_limit=0, write_wait=120.0)
    reader = await server.joined("reader", "big")
    talker = await server.joined("talker", "big")
    stalled = [
        await server.joined(f"stalled{i}", "big", receive_buffer=4096)
        for i in range(stalled_count)
    ]
    carol, dave = [await server.joined(name, "other") for name in ("carol", "dave")]
    heard: dict[str, list[dict[str, object]]] = {"reader": [], "talker": []}

    async def read_all(client: RawClient, into: list[dict[str, object]]) -> None:
        while True:
            into.append(await client.next_event())

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, reader, heard["reader"])
            nursery.start_soon(read_all, talker, heard["talker"])
            said = 0
            while await metric(server.port, "trio_chat_slow_drops_total") < stalled_count:
                for _ in range(10):
                    await talker.say(BIG)
                    said += 1
                await wait_until(
                    partial(lambda n: count(heard["talker"], type="message") >= n, said)
                )
                # Another room chats throughout.
                await carol.say(f"still here {said}")
                for client in (carol, dave):
                    event = await client.next_of("message")
                    assert event["text"] == f"still here {said}"
            # Every stalled member was counted once, and left with reason slow.
            assert await metric(server.port, "trio_chat_slow_drops_total") == stalled_count
            await wait_until(lambda: count(heard["reader"], type="leave") >= stalled_count)
            nursery.cancel_scope.cancel()
    received = heard["reader"]
    leaves = [e for e in received if e["type"] == "leave"]
    assert sorted(str(e["name"]) for e in leaves) == sorted(
        f"stalled{i}" for i in range(stalled_count)
    )
    assert {e["reason"] for e in leaves} == {"slow"}
    assert_gap_free(received)
    assert count(heard["talker"], type="leave") == stalled_count  # it read them all too
    # A stalled member that reads again finds its 1013 close frame.
    for client in stalled[:5]:
        with trio.fail_after(30):
            await client.events_until_closed()
        assert client.close_code == 1013
    assert not errors(caplog), caplog.text


async def test_a_member_dropped_for_a_slow_write_counts_as_a_slow_drop(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    # A queue too long to overflow: the write wait is what drops this member.
    server = await start_server(send_queue_size=100_000, write_wait=5.0, rate_limit=0)
    talker = await server.joined("talker")
    await server.joined("stalled", receive_buffer=4096)
    await talker.next_of("join")
    seen: list[dict[str, Any]] = []
    for _ in range(60):  # far more than the socket buffers hold
        await talker.say(BIG)
        while (event := await talker.next_event())["type"] != "message":
            seen.append(event)  # the talker itself keeps reading
    while not count(seen, type="leave"):
        seen.append(await talker.next_event())
    [leave] = [e for e in seen if e["type"] == "leave"]
    assert (leave["name"], leave["reason"]) == ("stalled", "slow")
    assert await metric(server.port, "trio_chat_slow_drops_total") == 1


# -- 4: a client that vanishes right after a say ------------------------------


@pytest.mark.parametrize("how", ["reset", "fin"])
async def test_vanishing_right_after_a_say_logs_no_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    witness = await server.joined("witness")
    heard: list[dict[str, object]] = []

    async def read_all() -> None:
        while True:
            heard.append(await witness.next_event())

    async def say_and_vanish(n: int) -> None:
        client = await server.joined(f"v{n}")
        if how == "reset":
            reset_on_close(client.stream)
        await client.say("bye")
        await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as reading:
            reading.start_soon(read_all)
            for round_ in range(10):
                async with trio.open_nursery() as nursery:
                    for n in range(30):
                        nursery.start_soon(say_and_vanish, round_ * 30 + n)
            # Each left exactly once, and the witness is still served.
            await wait_until(lambda: count(heard, type="leave") >= 300)
            await witness.say("still here")
            await wait_until(lambda: count(heard, text="still here") > 0)
            reading.cancel_scope.cancel()
    assert sum(e["type"] == "leave" for e in heard) == 300
    assert_gap_free(heard)
    assert not errors(caplog), caplog.text


# -- 5: fragments -----------------------------------------------------------------


@pytest.mark.parametrize("payload", ["", "ab"], ids=["empty", "two-bytes"])
async def test_tiny_or_empty_fragments_count_toward_the_limit(
    server: RunningServer, payload: str
) -> None:
    # 300 fragments: 600 bytes of payload at most, far below 64 KiB, but each
    # one cost the server a Python object; now each counts 256 bytes more.
    client = await server.joined("alice")
    frames = FrameProtocol(client=True, extensions=[])
    data = b"".join(bytes(frames.send_data(payload, fin=False)) for _ in range(300))
    with trio.fail_after(30):
        await client.send_raw(data)
        assert (await client.closed()).code == 1009


async def test_a_message_in_a_few_large_fragments_is_fine(server: RunningServer) -> None:
    client = await server.joined("alice")
    text = json.dumps({"type": "say", "text": "y" * 3990})
    pieces = [text[i : i + 100] for i in range(0, len(text), 100)]  # 40 fragments
    for n, piece in enumerate(pieces):
        finished = n == len(pieces) - 1
        await client.send_raw(client.ws.send(Message(data=piece, message_finished=finished)))
    assert (await client.next_of("message"))["text"] == "y" * 3990


# -- 6: a hello in the same packet as the upgrade request ------------------------


async def test_hello_in_the_same_write_as_the_upgrade(server: RunningServer) -> None:
    frames = FrameProtocol(client=True, extensions=[])
    hello = frames.send_data(json.dumps({"type": "hello", "name": "eager"}), fin=True)
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(request + hello)
            data = b""
            while b'"welcome"' not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b'"name":"eager"' in data


# -- closes that held the connection too long ----------------------------------


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (b"\x81\x02hi", 1002),  # an unmasked client frame
        (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # masked, but not UTF-8
    ],
)
async def test_a_failed_connection_is_closed_at_once(
    start_server: StartServer, bad_frame: bytes, code: int
) -> None:
    # With a long write wait, only an immediate close passes the fail_after.
    server = await start_server(write_wait=300.0)
    client = await server.joined("alice")
    with trio.fail_after(20):
        await client.send_raw(bad_frame)
        assert (await client.closed()).code == code  # and the client answered it
        assert await client.stream.receive_some(1024) == b""


async def test_a_client_that_never_says_hello_frees_its_slot_soon(
    start_server: StartServer,
) -> None:
    server = await start_server(handshake_timeout=1.0, write_wait=300.0, max_connections=1)
    client = await server.client()
    # Never answers the close either: the server must not wait the write wait.
    with trio.fail_after(20):
        while True:
            data = await client.stream.receive_some(65536)
            if not data:
                break
        while True:  # the slot is freed right after the socket is closed
            try:
                replacement = await server.client()
            except Rejected:
                await trio.sleep(0.01)
            else:
                break
        welcome = await replacement.hello("next")
    assert welcome["type"] == "welcome"


# -- the hub failing is never a silent wedge ---------------------------------


async def test_an_internal_error_in_the_hub_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_say = Chat.say

    def faulty_say(
        self: Chat[object], handle: object, say: Say, ts: str, *, now: float = 0.0
    ) -> object:
        if say.text == "boom":
            raise RuntimeError("injected hub fault")
        return real_say(self, handle, say, ts, now=now)

    monkeypatch.setattr(Chat, "say", faulty_say)
    settings = Settings(host="127.0.0.1", port=0, db=":memory:", rate_limit=0)
    with trio.fail_after(30), pytest.raises(BaseExceptionGroup) as stopped:  # noqa: PT012
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_chat, settings, trio.Event())
            alice = await RawClient.connect(port)
            await alice.hello("alice")
            await alice.say("boom")
            await trio.sleep_forever()  # cancelled when the server fails
    assert stopped.group_contains(RuntimeError, match="injected hub fault")
    assert "internal error in the hub" in caplog.text
    # Its connections went down with it.
    assert (await alice.closed()).code is None
    await alice.aclose()


# -- the ping flood and other control frames stay cheap ------------------------


async def test_control_frames_alone_do_not_hold_a_message_open(server: RunningServer) -> None:
    """Pings between fragments are allowed (RFC 6455 5.4) and answered."""
    client = await server.joined("alice")
    frames = FrameProtocol(client=True, extensions=[])
    text = json.dumps({"type": "say", "text": "between pings"})
    await client.send_raw(bytes(frames.send_data(text[:10], fin=False)))
    for _ in range(50):
        await client.send_raw(bytes(frames.ping(b"p")))
    await client.send_raw(bytes(frames.send_data(text[10:], fin=True)))
    assert (await client.next_of("message"))["text"] == "between pings"


async def test_close_answer_is_echoed_and_the_member_leaves_quit(server: RunningServer) -> None:
    witness = await server.joined("witness")
    client = await server.joined("alice")
    await witness.next_of("join")
    await client.send_raw(client.ws.send(CloseConnection(code=4000, reason="bye")))
    closed = await client.closed()
    assert isinstance(closed, Closed)
    assert closed.code == 4000
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("alice", "quit")
