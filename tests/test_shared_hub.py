"""The shared hub: two hubs, two nodes, one real `redis-server`, one order per room.

Each test runs two `SharedHub`s in one Trio run, each on its own backplane
connection (node), as two server processes would; members on either must see
every room's events once, in one gap-free id order, whatever hub they are on.
Waits are on conditions (what the members received, what the log holds),
bounded by `fail_after`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.lowlevel
from conftest import wait_until
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from redis_server import command
from test_hub import RecordingPeer

from trio_chat.backplane import keys
from trio_chat.backplane.errors import BackplaneError
from trio_chat.backplane.redis import Backplane, open_backplane
from trio_chat.backplane.scripts import Admitted, NameTaken
from trio_chat.config import Settings
from trio_chat.core.protocol import (
    CloseCode,
    ErrorCode,
    Hello,
    HistoryRequest,
    LeaveReason,
    ProtocolError,
    Say,
)
from trio_chat.core.protocol import Typing as TypingCommand
from trio_chat.core.rooms import Joined
from trio_chat.server import shared_state
from trio_chat.server.app import ChatServer
from trio_chat.server.hub import Unavailable
from trio_chat.server.outbox import Outbox
from trio_chat.server.shared_hub import SharedHub, open_shared_hub

WAIT = 10  # seconds any one test step may take, on a busy machine
_names = itertools.count()


def new_name(prefix: str) -> str:
    """A room or node name no other test (or example) uses."""
    return f"{prefix}-{next(_names)}"


@asynccontextmanager
async def backplanes(url: str, count: int = 2) -> AsyncIterator[list[Backplane]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_backplane(url, new_name("node")))
            for _ in range(count)
        ]


@asynccontextmanager
async def hubs(
    bps: list[Backplane], queue: int = 1000, **options: float
) -> AsyncIterator[list[SharedHub]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_shared_hub(bp, replay_limit=10_000, send_queue_size=queue, **options)
            )
            for bp in bps
        ]


def peer(name: str, queue: int = 1000) -> RecordingPeer:
    return RecordingPeer(name, Outbox(queue))


def stored(peer: RecordingPeer) -> list[dict[str, Any]]:
    return [e for e in peer.received if "id" in e]


def last_seen(peer: RecordingPeer) -> int:
    ids = [e["id"] for e in stored(peer)]
    return ids[-1] if ids else 0


async def room_log(bp: Backplane, room: str) -> list[dict[str, Any]]:
    return [json.loads(e.line) for e in await bp.read_range(room, 0, 2**53)]


def check_member(peer: RecordingPeer, room: str, log: list[dict[str, Any]]) -> None:
    """Welcome, then replay and live events: one gap-free run of the log's events."""
    assert peer.received, f"{peer.name} got no welcome"
    welcome, rest = peer.received[0], peer.received[1:]
    assert (welcome["type"], welcome["room"], welcome["name"]) == ("welcome", room, peer.name)
    assert all(e["room"] == room for e in rest), "an event of another room"
    events = [e for e in rest if "id" in e]
    ids = [e["id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), (peer.name, ids)
    by_id = {e["id"]: e for e in log}
    for found in events:
        assert by_id[found["id"]] == found, "not the log's event"
    own_join = by_id[welcome["last_id"]]
    assert (own_join["type"], own_join["name"]) == ("join", peer.name)
    assert ids[0] <= welcome["last_id"] <= ids[-1]
    assert not any(e["type"] == "typing" and e["name"] == peer.name for e in rest)


# -- two hubs on one Redis ---------------------------------------------------


async def test_members_on_two_hubs_see_one_order(redis_url: str) -> None:
    room = new_name("room")
    alice, bob, carol = peer("alice"), peer("bob"), peer("carol")
    async with backplanes(redis_url) as bps:
        async with hubs(bps) as (a, b), trio.open_nursery() as tasks:
            for p in (alice, bob, carol):
                tasks.start_soon(p.consume, [])
            assert (await a.join(alice, Hello("alice", room))).join_id == 1
            assert (await b.join(bob, Hello("bob", room))).join_id == 2
            await a.say(alice, Say("hi", ref="r1"))
            await b.say(bob, Say("hello"))
            await b.say(bob, TypingCommand())  # to every hub's members but bob
            joined = await a.join(carol, Hello("carol", room))
            assert joined.room == room
            await a.say(carol, Say("hey"))
            with trio.fail_after(WAIT):
                await wait_until(lambda: all(last_seen(p) >= 6 for p in (alice, bob, carol)))
            log = await room_log(bps[0], room)
            assert [e["id"] for e in log] == list(range(1, 7))
            assert sorted((e["type"], e["name"]) for e in log) == [
                ("join", "alice"),
                ("join", "bob"),
                ("join", "carol"),
                ("message", "alice"),
                ("message", "bob"),
                ("message", "carol"),
            ]
            for p in (alice, bob, carol):
                check_member(p, room, log)
            assert next(e for e in log if e["name"] == "alice" and "text" in e)["ref"] == "r1"
            with trio.fail_after(WAIT):  # not numbered: it may come after later events
                await wait_until(lambda: any(e["type"] == "typing" for e in alice.received))
            assert [e["name"] for e in alice.received if e["type"] == "typing"] == ["bob"]
            assert [e["name"] for e in bob.received if e["type"] == "typing"] == []
            assert (a.statistics().members, a.statistics().rooms) == (2, 1)
            assert b.statistics().events >= 2
            tasks.cancel_scope.cancel()
        # Closing the hubs made everyone leave, through the backplane.
        leaves = [e for e in await room_log(bps[0], room) if e["type"] == "leave"]
        assert sorted((e["name"], e["reason"]) for e in leaves) == [
            ("alice", "shutdown"),
            ("bob", "shutdown"),
            ("carol", "shutdown"),
        ]


async def test_a_name_is_taken_across_hubs(redis_url: str) -> None:
    room = new_name("room")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b):
        await a.join(peer("alice"), Hello("alice", room))
        for name, message in [
            ("alice", f"the name 'alice' is taken in {room!r}"),
            ("ALICE", f"the name 'ALICE' is taken in {room!r} (it looks like 'alice')"),
        ]:
            with pytest.raises(ProtocolError) as caught:
                await b.join(peer(name), Hello(name, room))
            assert caught.value.code is ErrorCode.NAME_TAKEN
            assert caught.value.message == message
        assert b.statistics().rooms == 0  # refused everywhere: unsubscribed again
        # The same connection cannot join twice.
        twice = peer("bob")
        await b.join(twice, Hello("bob", room))
        with pytest.raises(ProtocolError) as caught:
            await b.join(twice, Hello("bob2", room))
        assert caught.value.code is ErrorCode.ALREADY_JOINED


@pytest.mark.parametrize("window", [256, 2])
async def test_a_join_answered_late_misses_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """The room's events that hub b let through before the joiner's reply came
    back still reach it, right after its replay: from the room's window, or
    from the log when the window no longer holds them."""
    monkeypatch.setattr(shared_state, "JOIN_WINDOW", window)
    room = new_name("room")
    observer, sender, joiner = peer("observer"), peer("sender"), peer("joiner")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (observer, sender, joiner):
            tasks.start_soon(p.consume, [])
        await b.join(observer, Hello("observer", room))
        await a.join(sender, Hello("sender", room))
        real_join = bps[1].join
        answered = trio.Event()

        async def late_join(*args: Any, **kwargs: Any) -> Admitted | NameTaken:
            reply = await real_join(*args, **kwargs)
            assert isinstance(reply, Admitted)
            # Hold the reply until hub b has delivered several later events.
            await wait_until(lambda: last_seen(observer) > reply.join_id + 4)
            answered.set()
            return reply

        monkeypatch.setattr(bps[1], "join", late_join)
        stop = trio.Event()

        sent_count = 0

        async def keep_saying() -> None:
            nonlocal sent_count
            while not stop.is_set():
                await a.say(sender, Say(f"m{sent_count}"))
                sent_count += 1
                await trio.sleep(0.001)  # a busy room, not a flood

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as saying:
                saying.start_soon(keep_saying)
                joined = await b.join(joiner, Hello("joiner", room))
                await answered.wait()
                goal = last_seen(observer) + 10
                await wait_until(lambda: last_seen(joiner) >= goal)
                stop.set()
            # The sayer is done: once all three hold its last message, the
            # log holds everything they were sent (a say still on its way
            # when they looked would reach them after the log was read).
            last_text = f"m{sent_count - 1}"
            await wait_until(
                lambda: all(
                    stored(p)[-1].get("text") == last_text for p in (observer, sender, joiner)
                )
            )
        log = await room_log(bps[0], room)
        for p in (observer, sender, joiner):
            check_member(p, room, log)
        assert last_seen(joiner) > joined.join_id + 4
        tasks.cancel_scope.cancel()


async def test_a_leave_is_seen_once_by_everyone(redis_url: str) -> None:
    room = new_name("room")
    members = [peer(f"m{i}") for i in range(4)]
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for i, p in enumerate(members):
            tasks.start_soon(p.consume, [])
            await (a, b)[i % 2].join(p, Hello(p.name, room))
        leaver = members[0]
        await a.leave(leaver, LeaveReason.QUIT)
        await a.leave(leaver, LeaveReason.TIMEOUT)  # only the first one counts
        await a.say(leaver, Say("too late"))  # no longer a member: nothing is said
        with trio.fail_after(WAIT):  # the hubs order nothing between each other
            await wait_until(lambda: all(last_seen(p) >= 5 for p in members[1:]))
        await b.say(members[1], Say("after"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: all(last_seen(p) >= 6 for p in members[1:]))
        log = await room_log(bps[0], room)
        assert [(e["type"], e["name"]) for e in log[4:]] == [("leave", "m0"), ("message", "m1")]
        assert log[4]["reason"] == "quit"
        for p in members:
            check_member(p, room, log)
        for p in members[1:]:
            assert [e for e in stored(p) if e["type"] == "leave"] == [log[4]]
        assert last_seen(leaver) <= 4
        tasks.cancel_scope.cancel()


async def test_a_slow_member_is_dropped_without_disturbing_the_others(redis_url: str) -> None:
    room = new_name("room")
    healthy_a, healthy_b, speaker = peer("ha"), peer("hb"), peer("speaker")
    slow = peer("slow", queue=4)  # never read: its outbox fills up
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (healthy_a, healthy_b, speaker):
            tasks.start_soon(p.consume, [])
        await a.join(healthy_a, Hello("ha", room))
        await a.join(slow, Hello("slow", room))
        await b.join(healthy_b, Hello("hb", room))
        await b.join(speaker, Hello("speaker", room))
        for n in range(30):
            await b.say(speaker, Say(f"m{n}"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(slow.dropped))
            # 4 joins, 30 messages and the slow member's leave.
            await wait_until(lambda: all(last_seen(p) >= 35 for p in (healthy_a, healthy_b)))
        assert slow.dropped == [(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)]
        log = await room_log(bps[0], room)
        assert [e["id"] for e in log] == list(range(1, 36))
        leaves = [e for e in log if e["type"] == "leave"]
        assert [(e["name"], e["reason"]) for e in leaves] == [("slow", "slow")]
        for p in (healthy_a, healthy_b, speaker):
            check_member(p, room, log)
            assert [e for e in stored(p) if e["type"] == "leave"] == leaves
        assert a.statistics().slow_drops == 1
        assert a.statistics().members == 1
        await a.leave(slow, LeaveReason.SLOW)  # the session's own leave: a no-op
        tasks.cancel_scope.cancel()


async def test_an_unreachable_backplane_refuses_the_hello(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = new_name("room")
    async with backplanes(redis_url, 1) as (bp,), hubs([bp]) as (hub,):

        async def failing_join(*args: Any, **kwargs: Any) -> Admitted | NameTaken:
            raise BackplaneError("ConnectionError: gone")

        monkeypatch.setattr(bp, "join", failing_join)
        with pytest.raises(Unavailable) as caught:
            await hub.join(peer("alice"), Hello("alice", room))
        assert caught.value.close_code == CloseCode.TRY_AGAIN_LATER
        monkeypatch.undo()
        # Hellos are refused at once until a call succeeds again: the lease
        # renewal probes every half second once the backplane fails.
        with trio.fail_after(2.0):
            await wait_until(lambda: hub.trouble() is None)
        alice = peer("alice")
        assert (await hub.join(alice, Hello("alice", room))).join_id == 1


def scrape(server: ChatServer) -> dict[str, float]:
    """The server's `/metrics`, as name -> value (series without labels)."""
    text = generate_latest(server.metrics).decode()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if not name.startswith("#") and "{" not in name
    }


def errors(peer: RecordingPeer) -> list[dict[str, Any]]:
    return [e for e in peer.received if e["type"] == "error"]


def failing(message: str) -> Any:
    """A stand-in for a `Backplane` method that cannot reach the server."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        raise BackplaneError(message)

    return call


async def test_a_say_the_backplane_cannot_take_is_answered_unavailable(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await b.join(bob, Hello("bob", room))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 2 and last_seen(bob) >= 2)
        assert a.trouble() is None
        server = ChatServer(Settings(), a)
        assert server.readiness() is None

        monkeypatch.setattr(bps[0], "say_many", failing("ConnectionError: gone"))
        refs = ["r0", "r1", None, "r3"]
        for n, ref in enumerate(refs):
            await a.say(alice, Say(f"lost {n}", ref=ref))
        with trio.fail_after(WAIT):
            await wait_until(lambda: len(errors(alice)) == len(refs))
        assert [(e["code"], e.get("ref")) for e in errors(alice)] == [
            ("unavailable", ref) for ref in refs
        ]
        trouble = a.trouble()
        assert trouble is not None
        assert trouble.startswith("backplane unreachable for ")
        assert trouble.endswith(" s: ConnectionError: gone")
        assert "\n" not in trouble
        assert server.readiness() == trouble
        assert b.trouble() is None  # its own calls have not failed
        metrics = scrape(server)
        assert metrics["trio_chat_backplane_up"] == 0
        assert metrics["trio_chat_backplane_refused_posts_total"] == len(refs)
        assert scrape(server)["trio_chat_backplane_publish_seconds_count"] == 0

        # Says are refused at once until a call succeeds again: the lease's
        # renewal, which probes every half second while the backplane fails.
        await a.say(alice, Say("refused at once", ref="r3b"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: len(errors(alice)) == len(refs) + 1)
        monkeypatch.undo()
        with trio.fail_after(WAIT):
            await wait_until(lambda: a.trouble() is None)
        await a.say(alice, Say("back", ref="r4"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 3 and last_seen(bob) >= 3)
        assert a.trouble() is None
        assert server.readiness() is None
        with trio.fail_after(WAIT):  # the rooms are checked once it answers again
            await wait_until(lambda: scrape(server)["trio_chat_backplane_recoveries_total"] >= 1)
        metrics = scrape(server)
        assert metrics["trio_chat_backplane_up"] == 1
        assert metrics["trio_chat_backplane_resubscriptions_total"] >= 1
        assert metrics["trio_chat_backplane_publish_seconds_count"] >= 1
        assert metrics["trio_chat_backplane_publish_seconds_sum"] > 0
        assert metrics["trio_chat_backplane_lost_members_total"] == 0
        await b.say(bob, Say("welcome back"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 4 and last_seen(bob) >= 4)
        log = await room_log(bps[0], room)
        assert [(e["type"], e["name"], e.get("text")) for e in log] == [
            ("join", "alice", None),
            ("join", "bob", None),
            ("message", "alice", "back"),
            ("message", "bob", "welcome back"),
        ]
        assert log[2]["ref"] == "r4"
        # Alice: her replay, Bob's join, the four errors, then the room's order.
        assert [e["type"] for e in alice.received] == [
            "welcome",
            "join",
            "join",
            *["error"] * (len(refs) + 1),
            "message",
            "message",
        ]
        assert stored(alice) == log
        check_member(bob, room, log)
        assert all("id" in e for e in bob.received[1:])  # nothing of the lost posts
        tasks.cancel_scope.cancel()


async def test_a_sender_gone_before_its_say_failed_is_not_told(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = new_name("room")
    alice, bob, carol = peer("alice"), peer("bob"), peer("carol")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (alice, bob, carol):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await b.join(bob, Hello("bob", room))
        release = trio.Event()

        async def say_many_failing_late(*args: Any) -> list[int | None]:
            await release.wait()
            raise BackplaneError("ConnectionError: gone")

        monkeypatch.setattr(bps[0], "say_many", say_many_failing_late)
        await a.say(alice, Say("lost", ref="r0"))
        await a.leave(alice, LeaveReason.QUIT)
        release.set()
        with trio.fail_after(WAIT):  # her leave runs after the failed say
            await wait_until(lambda: last_seen(bob) >= 3)
        # The failure reached the hub before this hello did.
        await a.join(carol, Hello("carol", room))
        assert errors(alice) == []
        assert not alice.dropped
        log = await room_log(bps[0], room)
        assert [(e["type"], e["name"]) for e in log] == [
            ("join", "alice"),
            ("join", "bob"),
            ("leave", "alice"),
            ("join", "carol"),
        ]
        tasks.cancel_scope.cancel()


# -- a process that dies ------------------------------------------------------

LEASE_PERIOD = 0.2  # short leases, so that a dead process is noticed in about a second
LEASE_TTL = 1.0
REAP_PERIOD = 0.2
SHORT_LEASES = {"lease_period": LEASE_PERIOD, "lease_ttl": LEASE_TTL, "reap_period": REAP_PERIOD}


def leaves_of(peer: RecordingPeer, name: str) -> list[dict[str, Any]]:
    return [e for e in stored(peer) if e["type"] == "leave" and e["name"] == name]


async def test_the_members_of_a_dead_process_leave_once_with_reason_timeout(
    redis_url: str,
) -> None:
    """Process b dies (its hub and backplane are cancelled: no leave is sent,
    no lease renewed); once its lease lapses, the two survivors' reapers race
    and its member leaves once, reason `timeout`, and its name is free."""
    room = new_name("room")
    alice, bob, carol = peer("alice"), peer("bob"), peer("carol")
    async with (
        backplanes(redis_url) as (bp_a, bp_c),
        open_shared_hub(bp_a, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as a,
        open_shared_hub(bp_c, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as c,
        trio.open_nursery() as tasks,
    ):
        for p in (alice, bob, carol):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await c.join(carol, Hello("carol", room))

        async def process_b(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as killed:
                async with (
                    open_backplane(redis_url, new_name("node")) as bp_b,
                    open_shared_hub(
                        bp_b, replay_limit=100, send_queue_size=1000, **SHORT_LEASES
                    ) as b,
                ):
                    await b.join(bob, Hello("bob", room))
                    task_status.started(killed)
                    await trio.sleep_forever()

        kill = await tasks.start(process_b)
        with trio.fail_after(WAIT):
            await wait_until(lambda: all(last_seen(p) >= 3 for p in (alice, carol)))
        kill.cancel()
        died = trio.current_time()
        with trio.fail_after(LEASE_TTL + REAP_PERIOD + 2.0):  # 2 s: a busy machine's round trips
            await wait_until(lambda: bool(leaves_of(alice, "bob") and leaves_of(carol, "bob")))
        # Not before the lease lapsed: its last renewal was at most a period before.
        assert trio.current_time() - died >= LEASE_TTL - 2 * LEASE_PERIOD
        # More reaper rounds on both survivors announce nothing more.
        await trio.sleep(3 * REAP_PERIOD)
        log = await room_log(bp_a, room)
        leaves = [e for e in log if e["type"] == "leave"]
        assert [(e["name"], e["reason"]) for e in leaves] == [("bob", "timeout")]
        for p in (alice, carol):
            assert leaves_of(p, "bob") == leaves
            check_member(p, room, log)
        # The name is free again.
        bob_again = peer("bob")
        tasks.start_soon(bob_again.consume, [])
        joined = await a.join(bob_again, Hello("bob", room))
        assert joined.join_id == leaves[0]["id"] + 1
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(carol) == joined.join_id)
        tasks.cancel_scope.cancel()


async def test_a_failing_reaper_warns_once_a_while_and_keeps_going(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    room = new_name("room")
    async with (
        backplanes(redis_url, 1) as (bp,),
        open_shared_hub(bp, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as hub,
    ):
        await hub.join(peer("alice"), Hello("alice", room))
        calls = 0

        async def failing_dead_nodes(rooms: Any) -> set[str]:
            nonlocal calls
            calls += 1
            raise BackplaneError("ConnectionError: gone")

        monkeypatch.setattr(bp, "dead_nodes", failing_dead_nodes)
        with trio.fail_after(WAIT):
            await wait_until(lambda: calls >= 3)
        warnings = [r for r in caplog.records if "cannot reap" in r.getMessage()]
        assert [r.levelname for r in warnings if r.levelname == "WARNING"] == ["WARNING"]
        assert hub.statistics().members == 1


async def test_a_flushed_backplane_closes_the_members_for_them_to_join_again(
    redis_url: str, redis_port: int
) -> None:
    """The server loses everything (FLUSHALL, or a restart without
    persistence): each hub finds its lease gone, sees the room's numbering
    restarted, and closes its members with 1012; joining again with the old
    `since` and `epoch` gives `recovered: false` and the new numbering."""
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with (
        backplanes(redis_url) as (bp_a, bp_b),
        open_shared_hub(bp_a, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as a,
        open_shared_hub(bp_b, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as b,
        trio.open_nursery() as tasks,
    ):
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await b.join(bob, Hello("bob", room))
        await a.say(alice, Say("before"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 3 and last_seen(bob) >= 3)
        old_epoch = alice.received[0]["epoch"]
        assert command(redis_port, "FLUSHALL") == b"+OK"
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(alice.dropped and bob.dropped))
        for p in (alice, bob):
            assert p.dropped == [(CloseCode.SERVICE_RESTART, LeaveReason.SHUTDOWN)]
        assert (a.statistics().members, b.statistics().members) == (0, 0)

        again = peer("alice")
        tasks.start_soon(again.consume, [])
        joined = await a.join(again, Hello("alice", room, since=3, epoch=old_epoch))
        assert joined.join_id == 1
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(again.received))
        welcome = again.received[0]
        assert welcome["recovered"] is False
        assert welcome["epoch"] != old_epoch
        assert welcome["members"] == ["alice"]
        carol = peer("carol")
        tasks.start_soon(carol.consume, [])
        await b.join(carol, Hello("carol", room))
        await b.say(carol, Say("after"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(again) >= 3 and last_seen(carol) >= 3)
        log = await room_log(bp_a, room)
        assert [(e["type"], e["name"]) for e in log] == [
            ("join", "alice"),
            ("join", "carol"),
            ("message", "carol"),
        ]
        for p in (again, carol):
            check_member(p, room, log)
        tasks.cancel_scope.cancel()


async def test_a_member_the_backplane_lost_is_closed_and_the_others_stay(
    redis_url: str, redis_port: int
) -> None:
    """A member reaped while its process was cut off (its lease lapsed): its
    say is refused (`unavailable`, then 1012); once the hub finds its lease
    lost, the members the backplane still holds stay, in the same numbering."""
    room = new_name("room")
    alice, bob, carol, dave = peer("alice"), peer("bob"), peer("carol"), peer("dave")
    async with (
        backplanes(redis_url) as (bp_a, bp_b),
        open_shared_hub(bp_a, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as a,
        open_shared_hub(bp_b, replay_limit=100, send_queue_size=1000, **SHORT_LEASES) as b,
        trio.open_nursery() as tasks,
    ):
        for p in (alice, bob, carol, dave):
            tasks.start_soon(p.consume, [])
        for p in (alice, bob, dave):
            await a.join(p, Hello(p.name, room))
        await b.join(carol, Hello("carol", room))
        with trio.fail_after(WAIT):
            await wait_until(lambda: all(last_seen(p) >= 4 for p in (alice, bob, carol, dave)))
        # Alice and Dave were reaped (as another process would, by the book).
        for n in (1, 3):  # the tokens of hub a's first and third members
            token = keys.member_token(bp_a.node, n)
            assert command(redis_port, "HDEL", keys.members(room), token) == b":1"
        await a.say(alice, Say("lost", ref="r1"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(alice.dropped))
        assert [(e["code"], e.get("ref")) for e in errors(alice)] == [("unavailable", "r1")]
        assert alice.dropped == [(CloseCode.SERVICE_RESTART, LeaveReason.SHUTDOWN)]
        # Dave is found when the hub learns that its lease was lost.
        assert command(redis_port, "DEL", keys.lease(bp_a.node)) == b":1"
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(dave.dropped))
        assert dave.dropped == [(CloseCode.SERVICE_RESTART, LeaveReason.SHUTDOWN)]
        assert not bob.dropped
        await a.say(bob, Say("still here"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(carol) >= 5)
        await b.say(carol, Say("me too"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(bob) >= 6 and last_seen(carol) >= 6)
        log = await room_log(bp_a, room)
        assert [(e["type"], e["name"]) for e in log[4:]] == [
            ("message", "bob"),
            ("message", "carol"),
        ]
        for p in (bob, carol):
            check_member(p, room, log)
        assert "lost" not in [e.get("text") for e in log]
        tasks.cancel_scope.cancel()


async def test_lines_on_a_room_channel_that_are_no_events_are_ignored(
    redis_url: str, redis_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the scripts publish on a room's channel; whatever else appears
    there (another program sharing the server) is logged and dropped, and
    the room goes on."""
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await b.join(bob, Hello("bob", room))
        for junk in ("junk", "[1, 2]", '{"type": "typing"}', '{"type": "typing", "name": 7}'):
            assert command(redis_port, "PUBLISH", keys.channel(room), junk) == b":2"
        await a.say(alice, Say("still fine"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 3 and last_seen(bob) >= 3)
        log = await room_log(bps[0], room)
        for p in (alice, bob):
            check_member(p, room, log)
            assert all("id" in e for e in p.received[1:]), "a junk line reached a member"
        ignored = [r for r in caplog.records if "no id" in r.getMessage()]
        assert len(ignored) == 8  # four lines, heard by each hub
        assert all(r.levelname == "WARNING" for r in ignored)
        tasks.cancel_scope.cancel()


async def test_leases_must_outlive_their_period(redis_url: str) -> None:
    async with backplanes(redis_url, 1) as (bp,):
        with pytest.raises(ValueError, match="lease_period < lease_ttl"):
            async with open_shared_hub(
                bp, replay_limit=100, send_queue_size=1000, lease_period=1.0, lease_ttl=1.0
            ):
                pass  # pragma: no cover


# -- the property --------------------------------------------------------------

ROOMS = 2


@dataclass
class Plan:
    hub: int
    room: int
    says: int
    typing: bool
    leaves: bool
    strays: int  # says after leaving: nothing may come of them
    pauses: list[bool]
    reads: bool  # False: its outbox is read only now and then (it may be dropped)


plans = st.builds(
    Plan,
    hub=st.integers(0, 1),
    room=st.integers(0, ROOMS - 1),
    says=st.integers(0, 8),
    typing=st.booleans(),
    leaves=st.booleans(),
    strays=st.integers(0, 2),
    pauses=st.lists(st.booleans(), min_size=1, max_size=6),
    reads=st.sampled_from([True, True, True, False]),
)


async def run_plan(
    hub: SharedHub, peer: RecordingPeer, room: str, plan: Plan, sent: list[str]
) -> None:
    await hub.join(peer, Hello(peer.name, room))
    for n in range(plan.says):
        text = f"{peer.name}:{n}"
        await hub.say(peer, Say(text))
        sent.append(text)
        if plan.typing and n == 0:
            await hub.say(peer, TypingCommand())
        if plan.pauses[n % len(plan.pauses)]:
            await trio.lowlevel.checkpoint()
    if plan.leaves:
        await hub.leave(peer, LeaveReason.QUIT)
        for n in range(plan.strays):
            await hub.say(peer, Say(f"{peer.name}:stray{n}"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(plans, min_size=1, max_size=6), queue=st.sampled_from([4, 1000]))
async def test_every_member_on_either_hub_sees_one_gap_free_order(
    redis_url: str, script: list[Plan], queue: int
) -> None:
    rooms = [new_name("room") for _ in range(ROOMS)]
    peers = [peer(f"c{i}", queue) for i in range(len(script))]
    sent: dict[str, list[str]] = {p.name: [] for p in peers}
    async with backplanes(redis_url) as bps:
        async with hubs(bps, queue) as two, trio.open_nursery() as consumers:
            for p, plan in zip(peers, script, strict=True):
                if plan.reads:
                    consumers.start_soon(p.consume, plan.pauses[::-1])
            async with trio.open_nursery() as clients:
                for p, plan in zip(peers, script, strict=True):
                    clients.start_soon(
                        run_plan, two[plan.hub], p, rooms[plan.room], plan, sent[p.name]
                    )

            async def settled() -> bool:
                """Every message and leave is stored, and every member still
                there has received the room's last event."""
                for p, plan in zip(peers, script, strict=True):
                    if not plan.reads:  # now and then
                        _pong, lines = p.outbox.take()
                        p.received.extend(json.loads(line) for line in lines)
                for index, room in enumerate(rooms):
                    log = await room_log(bps[0], room)
                    texts = {e.get("text") for e in log}
                    left = {e["name"] for e in log if e["type"] == "leave"}
                    last = log[-1]["id"] if log else 0
                    for p, plan in zip(peers, script, strict=True):
                        if plan.room != index:
                            continue
                        gone = plan.leaves or p.dropped
                        if gone and p.name not in left:
                            return False
                        if not p.dropped and not set(sent[p.name]) <= texts:
                            return False
                        if not gone and last_seen(p) != last:
                            return False
                return True

            with trio.fail_after(WAIT):
                while not await settled():  # noqa: ASYNC110 (polls the server's log)
                    await trio.sleep(0.01)
            for p in peers:
                p.done.set()
            event("a slow member was dropped" if any(p.dropped for p in peers) else "no drops")

        # The hubs are closed: whoever stayed has left (reason `shutdown`).
        for index, room in enumerate(rooms):
            log = await room_log(bps[0], room)
            in_room = [(p, plan) for p, plan in zip(peers, script, strict=True)]
            in_room = [(p, plan) for p, plan in in_room if plan.room == index]
            check_room(room, log, in_room, sent)


def check_room(
    room: str,
    log: list[dict[str, Any]],
    members: list[tuple[RecordingPeer, Plan]],
    sent: dict[str, list[str]],
) -> None:
    if not members:
        assert log == []
        return
    assert [e["id"] for e in log] == list(range(1, len(log) + 1))
    assert not any(":stray" in e.get("text", "") for e in log), "a non-member was heard"
    hub_of = {p.name: plan.hub for p, plan in members}
    for p, plan in members:
        check_member(p, room, log)
        joins = [e for e in log if e["type"] == "join" and e["name"] == p.name]
        leaves = [e for e in log if e["type"] == "leave" and e["name"] == p.name]
        said = [e for e in log if e["type"] == "message" and e["name"] == p.name]
        assert len(joins) == 1
        assert len(leaves) == 1, "everyone leaves once: by choice, as slow, or at shutdown"
        reason = "slow" if p.dropped else "quit" if plan.leaves else "shutdown"
        assert leaves[0]["reason"] == reason
        assert all(joins[0]["id"] < e["id"] < leaves[0]["id"] for e in said)
        texts = [e["text"] for e in said]
        assert texts == sent[p.name][: len(texts)]
        if p.dropped:
            assert p.dropped == [(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)]
        else:
            assert texts == sent[p.name], "a member that was never dropped lost a message"
        # Typing notices come from the room's other members, on either hub.
        typists = {e["name"] for e in p.received if e["type"] == "typing"}
        assert typists <= set(hub_of) - {p.name}


# -- held places and exactly-once says across processes ----------------------

GRACE = 60.0  # seconds: never reached unless a test jumps the clock


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real time, which a test may jump forward past a grace period (the
    backplane's own round trips keep their real timeouts)."""
    return trio.testing.MockClock(rate=1.0)


def welcome_of(joined: Joined[Any]) -> dict[str, Any]:
    welcome: dict[str, Any] = json.loads(joined.welcome[0])
    assert welcome["type"] == "welcome"
    return welcome


async def test_a_dropped_member_resumes_on_the_other_hub_unnoticed(redis_url: str) -> None:
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with (
        backplanes(redis_url) as bps,
        hubs(bps, grace=GRACE) as (a, b),
        trio.open_nursery() as tasks,
    ):
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        secret = welcome_of(await a.join(alice, Hello("alice", room)))["resume"]
        assert secret != welcome_of(await b.join(bob, Hello("bob", room)))["resume"]
        await a.say(alice, Say("before", ref="r1"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(bob) >= 3)
        await a.leave(alice, LeaveReason.TIMEOUT, hold=True)  # the connection dropped
        with trio.fail_after(WAIT):
            await wait_until(lambda: a.statistics().held == 1)
        # Held: nobody else may take the name, on either hub.
        for hub in (a, b):
            with pytest.raises(ProtocolError) as caught:
                await hub.join(peer("alice"), Hello("alice", room))
            assert caught.value.code is ErrorCode.NAME_TAKEN
        await b.say(bob, Say("while away"))
        back = peer("alice")
        tasks.start_soon(back.consume, [])
        joined = await b.join(back, Hello("alice", room, since=3, resume=secret))
        assert joined.join_id == 4
        welcome = welcome_of(joined)
        assert (welcome["resume"], welcome["last_id"], welcome["recovered"]) == (secret, 4, True)
        assert welcome["members"] == ["alice", "bob"]
        assert [json.loads(line)["text"] for line in joined.welcome[1:]] == ["while away"]
        # The ref it used before it dropped is still its own, from hub b too.
        await b.say(back, Say("before", ref="r1"))
        await b.say(back, Say("after"))
        with trio.fail_after(WAIT):  # the resent event may come before or after id 5
            await wait_until(lambda: last_seen(bob) >= 5 and len(stored(back)) >= 3)
        log = await room_log(bps[0], room)
        assert [(e["type"], e["name"]) for e in log] == [
            ("join", "alice"),
            ("join", "bob"),
            ("message", "alice"),
            ("message", "bob"),
            ("message", "alice"),
        ]
        resent = [e for e in back.received if e.get("ref") == "r1"]
        assert resent == [log[2]]  # the original, to its sender alone
        assert [e["text"] for e in stored(bob) if e["type"] == "message"] == [
            "before",
            "while away",
            "after",
        ]
        tasks.cancel_scope.cancel()


async def test_a_connection_resumed_elsewhere_is_replaced_without_a_leave(
    redis_url: str,
) -> None:
    room = new_name("room")
    first, bob = peer("alice"), peer("bob")
    async with (
        backplanes(redis_url) as bps,
        hubs(bps, grace=GRACE) as (a, b),
        trio.open_nursery() as tasks,
    ):
        for p in (first, bob):
            tasks.start_soon(p.consume, [])
        secret = welcome_of(await a.join(first, Hello("alice", room)))["resume"]
        await a.join(bob, Hello("bob", room))
        second = peer("alice")  # the same person, in another tab, through hub b
        tasks.start_soon(second.consume, [])
        await b.join(second, Hello("alice", room, resume=secret))
        with trio.fail_after(WAIT):
            await wait_until(lambda: bool(first.dropped))
        assert first.dropped == [(CloseCode.NORMAL, LeaveReason.QUIT)]
        await a.leave(first, LeaveReason.QUIT)  # its session's own leave: nothing
        assert a.statistics().members == 1
        await b.say(second, Say("still here"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(bob) >= 3)
        log = await room_log(bps[0], room)
        assert [(e["type"], e["name"]) for e in log] == [
            ("join", "alice"),
            ("join", "bob"),
            ("message", "alice"),
        ]
        tasks.cancel_scope.cancel()


async def test_a_held_member_leaves_when_its_grace_ends(
    redis_url: str, clock: trio.testing.MockClock
) -> None:
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with (
        backplanes(redis_url) as bps,
        hubs(bps, grace=GRACE) as (a, b),
        trio.open_nursery() as tasks,
    ):
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        secret = welcome_of(await a.join(alice, Hello("alice", room)))["resume"]
        await b.join(bob, Hello("bob", room))
        await a.leave(alice, LeaveReason.TIMEOUT, hold=True)
        with trio.fail_after(WAIT):
            await wait_until(lambda: a.statistics().held == 1)
        clock.jump(GRACE)
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(bob) >= 3)
        leave = stored(bob)[-1]
        assert (leave["type"], leave["name"], leave["reason"]) == ("leave", "alice", "timeout")
        assert a.statistics().held == 0
        # Gone: the name is free, and the secret takes nothing back.
        again = peer("alice")
        tasks.start_soon(again.consume, [])
        joined = await b.join(again, Hello("alice", room, resume=secret))
        assert joined.join_id == 4
        assert welcome_of(joined)["resume"] != secret
        tasks.cancel_scope.cancel()


async def test_a_graceful_exit_holds_its_members_for_the_grace_period(redis_url: str) -> None:
    """Hub a exits: its members are held, not gone. One comes back through
    hub b unnoticed; the other is reaped by hub b once a's lease, set to last
    the grace period, has lapsed, and leaves for the reason it was held for."""
    room = new_name("room")
    alice, carol, bob = peer("alice"), peer("carol"), peer("bob")
    grace = 1.0  # real seconds: the lease lapses on the server's clock
    async with backplanes(redis_url) as (bp_a, bp_b), trio.open_nursery() as tasks:
        for p in (alice, carol, bob):
            tasks.start_soon(p.consume, [])
        async with hubs([bp_b], grace=grace, reap_period=0.1) as (b,):
            async with hubs([bp_a], grace=grace) as (a,):
                secret = welcome_of(await a.join(alice, Hello("alice", room)))["resume"]
                await a.join(carol, Hello("carol", room))
                await b.join(bob, Hello("bob", room))
            back = peer("alice")
            tasks.start_soon(back.consume, [])
            joined = await b.join(back, Hello("alice", room, since=3, resume=secret))
            assert joined.join_id == 3
            with trio.fail_after(WAIT):
                await wait_until(lambda: last_seen(bob) >= 4)
            log = await room_log(bp_b, room)
            assert [(e["type"], e["name"], e.get("reason")) for e in log] == [
                ("join", "alice", None),
                ("join", "carol", None),
                ("join", "bob", None),
                ("leave", "carol", "shutdown"),
            ]
            assert [e["id"] for e in stored(back)] == [4]
        tasks.cancel_scope.cancel()


async def test_a_history_page_is_read_from_the_log_for_its_sender_alone(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = new_name("room")
    alice, bob = peer("alice"), peer("bob")
    async with backplanes(redis_url) as bps, hubs(bps) as (a, b), trio.open_nursery() as tasks:
        for p in (alice, bob):
            tasks.start_soon(p.consume, [])
        await a.join(alice, Hello("alice", room))
        await b.join(bob, Hello("bob", room))
        for n in range(10):
            await b.say(bob, Say(f"m{n}"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: last_seen(alice) >= 12)
        await a.say(alice, HistoryRequest(before=12, limit=5, ref="p"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: any(e["type"] == "history" for e in alice.received))
        (page,) = [e for e in alice.received if e["type"] == "history"]
        log = await room_log(bps[0], room)
        assert page == {
            "type": "history",
            "room": room,
            "events": log[6:11],
            "more": True,
            "ref": "p",
        }
        assert not any(e["type"] == "history" for e in bob.received)

        async def unreadable(*args: Any) -> Any:
            raise BackplaneError("the server went away")

        monkeypatch.setattr(bps[0], "read_page", unreadable)
        await a.say(alice, HistoryRequest(ref="q"))
        with trio.fail_after(WAIT):
            await wait_until(lambda: any(e.get("ref") == "q" for e in alice.received))
        (error,) = [e for e in alice.received if e.get("ref") == "q"]
        assert (error["type"], error["code"]) == ("error", "unavailable")
        tasks.cancel_scope.cancel()
