"""Property tests of the real Trio hub: many concurrent clients, random scheduling.

Trio deliberately varies the order in which ready tasks run; on top of that,
hypothesis inserts checkpoints at random points in every producer and
consumer. Whatever the interleaving, the invariants of the protocol's
guarantee must hold for what each member actually received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_chat.core.history import MemoryHistoryStore
from trio_chat.core.protocol import CloseCode, Hello, LeaveReason, Say, Typing
from trio_chat.server.hub import Hub, open_hub
from trio_chat.server.outbox import Outbox

ROOMS = ("a", "b")


@dataclass(eq=False)
class RecordingPeer:
    """A hub member whose outbox is drained by a consumer task, like a writer."""

    name: str
    outbox: Outbox
    received: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[CloseCode, LeaveReason]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)

    def deliver_nowait(self, line: bytes) -> bool:
        return self.outbox.put_nowait(line)

    def deliver_welcome(self, lines: list[bytes]) -> None:
        self.outbox.put_front(lines)

    def flush_nowait(self) -> None:
        self.outbox.wake()

    def drop(self, code: CloseCode, reason: LeaveReason, text: str = "") -> None:
        self.dropped.append((code, reason))
        self.outbox.kick()

    async def consume(self, pauses: list[bool]) -> None:
        """Drain the outbox like a writer would, pausing where told."""
        step = 0
        while not (self.done.is_set() or self.dropped):
            with trio.move_on_after(0.01):  # re-check `done` when idle
                await self.outbox.wait()
            _pong, lines = self.outbox.take()
            self.received.extend(json.loads(line) for line in lines)
            step += 1
            if pauses and pauses[step % len(pauses)]:
                await trio.lowlevel.checkpoint()


@dataclass
class Script:
    room: str
    says: int
    leaves: bool
    pauses: list[bool]
    strays: int  # says after leaving: commands that deliver nothing


scripts = st.builds(
    Script,
    room=st.sampled_from(ROOMS),
    says=st.integers(0, 12),
    leaves=st.booleans(),
    pauses=st.lists(st.booleans(), min_size=1, max_size=8),
    strays=st.integers(0, 3),
)


async def run_client(
    hub: Hub, peer: RecordingPeer, script: Script, sent: list[str], nursery: trio.Nursery
) -> None:
    nursery.start_soon(peer.consume, script.pauses[::-1])
    pauses = script.pauses
    joined = await hub.join(peer, Hello(name=peer.name, room=script.room))
    assert joined.room == script.room
    for n in range(script.says):
        text = f"{peer.name}:{n}"
        await hub.say(peer, Say(text=text))
        sent.append(text)
        if n % 3 == 0:
            await hub.say(peer, Typing())
        if pauses[n % len(pauses)]:
            await trio.lowlevel.checkpoint()
    if script.leaves:
        await hub.leave(peer, LeaveReason.QUIT)
        for n in range(script.strays):  # no longer a member: nothing to deliver
            await hub.say(peer, Say(text=f"{peer.name}:stray{n}"))
            if pauses[n % len(pauses)]:
                await trio.lowlevel.checkpoint()


def stored(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "id" in e]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans=st.lists(scripts, min_size=1, max_size=7), queue=st.sampled_from([4, 1000]))
async def test_every_member_sees_one_gap_free_order(plans: list[Script], queue: int) -> None:
    peers = [RecordingPeer(f"c{i}", Outbox(queue)) for i in range(len(plans))]
    sent: dict[str, list[str]] = {peer.name: [] for peer in peers}
    async with open_hub(
        MemoryHistoryStore(10_000), replay_limit=10_000, send_queue_size=queue
    ) as hub:
        async with trio.open_nursery() as consumers:
            async with trio.open_nursery() as clients:
                for peer, plan in zip(peers, plans, strict=True):
                    clients.start_soon(run_client, hub, peer, plan, sent[peer.name], consumers)
            # Let the hub apply everything queued, then let consumers drain.
            while hub.statistics().inbox:
                await trio.lowlevel.checkpoint()
            await trio.sleep(0.02)
            for peer in peers:
                peer.done.set()
        # Whoever is still a member leaves now, as at shutdown.
        for peer in peers:
            await hub.leave(peer, LeaveReason.SHUTDOWN)

    for room in ROOMS:
        in_room = [(p, plan) for p, plan in zip(peers, plans, strict=True) if plan.room == room]
        check_room(room, in_room, sent)


def check_room(
    room: str, members: list[tuple[RecordingPeer, Script]], sent: dict[str, list[str]]
) -> None:
    if not members:
        return
    by_id: dict[int, dict[str, Any]] = {}
    for peer, _plan in members:
        events = peer.received
        assert events, f"{peer.name} got no welcome"
        welcome, rest = events[0], events[1:]
        assert welcome["type"] == "welcome"
        assert welcome["room"] == room
        assert all(e["room"] == room for e in rest), "an event of another room"
        ids = [e["id"] for e in stored(rest)]
        # Replay then live: one gap-free, duplicate-free run of ids...
        assert ids == list(range(ids[0], ids[0] + len(ids))), (peer.name, ids)
        # ...in which the replay ends with the member's own join.
        assert welcome["last_id"] in ids
        own_join = next(e for e in stored(rest) if e["id"] == welcome["last_id"])
        assert (own_join["type"], own_join["name"]) == ("join", peer.name)
        for event in stored(rest):  # every member saw the same event for an id
            assert by_id.setdefault(event["id"], event) == event
        assert not any(e["type"] == "typing" and e["name"] == peer.name for e in rest)
        assert not any(":stray" in e.get("text", "") for e in rest), "a non-member was heard"
        if peer.dropped:
            assert peer.dropped == [(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)]

    log = [by_id[i] for i in sorted(by_id)]
    assert [e["id"] for e in log] == list(range(log[0]["id"], log[0]["id"] + len(log)))
    for peer, _plan in members:
        joins = [e for e in log if e["type"] == "join" and e["name"] == peer.name]
        leaves = [e for e in log if e["type"] == "leave" and e["name"] == peer.name]
        said = [e["text"] for e in log if e["type"] == "message" and e["name"] == peer.name]
        assert len(joins) == 1
        assert len(leaves) <= 1  # exactly once (the last leave may be after the log ends)
        # A sender's messages keep their order and never precede its join or follow its leave.
        assert said == sent[peer.name][: len(said)]
        first_message = [e["id"] for e in log if e["type"] == "message" and e["name"] == peer.name]
        if first_message:
            assert joins[0]["id"] < first_message[0]
            if leaves:
                assert first_message[-1] < leaves[0]["id"]
        if not peer.dropped:
            assert said == sent[peer.name], "a member that was never dropped lost a message"
