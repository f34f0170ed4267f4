"""Tests of the pure chat state: membership, numbering, and who receives what."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from trio_chat.core.history import MemoryHistoryStore
from trio_chat.core.protocol import (
    ErrorCode,
    Hello,
    LeaveReason,
    ProtocolError,
    Say,
    name_keys,
    normalize_name,
)
from trio_chat.core.rooms import Chat, ChatStatistics, Delivery

Handle = int | str

TS = "2026-11-27T19:48:58.123Z"


def parse(line: bytes) -> dict[str, Any]:
    event = json.loads(line)
    assert isinstance(event, dict)
    return event


EPOCH = "e1"


def new_chat(retention: int = 100, replay_limit: int = 50) -> Chat[Handle]:
    return Chat(MemoryHistoryStore(retention, epoch=EPOCH), replay_limit)


def join_error(chat: Chat[Handle], handle: Handle, hello: Hello) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        chat.join(handle, hello, TS)
    return info.value.code


# --------------------------------------------------------------------------
# Examples


def test_welcome_lists_members_with_self_and_last_id_is_own_join() -> None:
    chat = new_chat()
    alice = chat.join(1, Hello("alice"), TS)
    assert alice.join_id == 1
    assert parse(alice.welcome[0]) == {
        "type": "welcome",
        "room": "lobby",
        "name": "alice",
        "members": ["alice"],
        "last_id": 1,
        "epoch": EPOCH,
    }
    assert [parse(line)["id"] for line in alice.welcome[1:]] == [1]
    assert alice.announce.recipients == ()

    bob = chat.join(2, Hello("bob", since=0), TS)
    welcome = parse(bob.welcome[0])
    assert welcome["members"] == ["alice", "bob"]
    assert welcome["last_id"] == bob.join_id == 2
    assert welcome["recovered"] is True
    replay = [parse(line) for line in bob.welcome[1:]]
    assert [(e["type"], e["id"], e["name"]) for e in replay] == [
        ("join", 1, "alice"),
        ("join", 2, "bob"),
    ]
    assert bob.announce.recipients == (1,)
    assert bob.announce.line == bob.welcome[-1]


@pytest.mark.parametrize(("epoch", "recovered"), [(None, True), (EPOCH, True), ("other", False)])
def test_since_counts_only_in_its_own_epoch(epoch: str | None, recovered: bool) -> None:
    chat = new_chat()
    chat.join(1, Hello("alice"), TS)
    carol = chat.join(3, Hello("carol", since=1, epoch=epoch), TS)
    welcome = parse(carol.welcome[0])
    assert (welcome["epoch"], welcome["recovered"]) == (EPOCH, recovered)
    replayed = [parse(line)["id"] for line in carol.welcome[1:]]
    assert replayed == ([2] if recovered else [1, 2])  # from another epoch: the normal replay


def test_a_new_store_is_a_new_epoch() -> None:
    assert MemoryHistoryStore(10).epoch != MemoryHistoryStore(10).epoch


def test_name_taken_is_case_insensitive_and_per_room() -> None:
    chat = new_chat()
    chat.join(1, Hello("Alice"), TS)
    assert join_error(chat, 2, Hello("alice")) is ErrorCode.NAME_TAKEN
    assert join_error(chat, 2, Hello("ALICE")) is ErrorCode.NAME_TAKEN
    assert chat.members("lobby") == ["Alice"]
    chat.join(2, Hello("alice", room="dev"), TS)  # another room: fine
    chat.leave(1, LeaveReason.QUIT, TS)
    chat.join(3, Hello("alice"), TS)  # the name is free again
    assert chat.members("lobby") == ["alice"]


LOOK_ALIKES_OF_ALICE = [
    pytest.param("\uff21lice", id="fullwidth-a"),
    pytest.param("\u0430lice", id="cyrillic-a"),
    pytest.param("alic\u0435", id="cyrillic-e"),
    pytest.param("aIice", id="capital-i-for-l"),
    pytest.param("a1ice", id="digit-one-for-l"),
    pytest.param("al\u200dice", id="zwj-between-letters"),
    pytest.param("\U0001d41alice", id="mathematical-bold-a"),
    pytest.param("\uff41\uff4c\uff49\uff43\uff45", id="all-fullwidth"),
    pytest.param("ALICE", id="capitals"),
]


@pytest.mark.parametrize("look_alike", LOOK_ALIKES_OF_ALICE)
def test_a_look_alike_of_a_member_is_taken(look_alike: str) -> None:
    look_alike = normalize_name(look_alike)  # a valid name, kept as typed
    chat = new_chat()
    chat.join(1, Hello("alice"), TS)
    with pytest.raises(ProtocolError) as info:
        chat.join(2, Hello(look_alike), TS)
    assert info.value.code is ErrorCode.NAME_TAKEN
    assert "'alice'" in info.value.message
    # And the other way round: the look-alike holds the name, shown as typed.
    chat.leave(1, LeaveReason.QUIT, TS)
    joined = chat.join(2, Hello(look_alike), TS)
    assert parse(joined.welcome[0])["members"] == [look_alike]
    assert join_error(chat, 1, Hello("alice")) is ErrorCode.NAME_TAKEN
    chat.leave(2, LeaveReason.QUIT, TS)
    chat.join(1, Hello("alice"), TS)  # every key was freed
    assert chat.members("lobby") == ["alice"]


def test_names_that_only_look_alike_in_another_case_clash() -> None:
    chat = new_chat()
    chat.join(1, Hello("bob"), TS)
    # A Cyrillic capital Ve looks like B, and BOB is bob in capitals.
    assert join_error(chat, 2, Hello("\u0412OB")) is ErrorCode.NAME_TAKEN
    chat.join(2, Hello("robert"), TS)
    chat.join(3, Hello("\u05d1\u05d5\u05d1"), TS)  # Hebrew: another name
    assert chat.members("lobby") == ["bob", "robert", "\u05d1\u05d5\u05d1"]


def test_a_member_cannot_join_twice() -> None:
    chat = new_chat()
    chat.join("c", Hello("alice"), TS)
    assert join_error(chat, "c", Hello("bob", room="dev")) is ErrorCode.ALREADY_JOINED
    assert chat.members("dev") == []


def test_non_members_get_none() -> None:
    chat = new_chat()
    assert chat.say(1, Say("hi"), TS) is None
    assert chat.typing(1) is None
    assert chat.leave(1, LeaveReason.QUIT, TS) is None
    chat.join(1, Hello("alice"), TS)
    assert chat.leave(1, LeaveReason.SLOW, TS) is not None
    assert chat.leave(1, LeaveReason.QUIT, TS) is None  # only the first leave counts
    assert chat.say(1, Say("hi"), TS) is None


NO_LEAVES = dict.fromkeys(map(str, LeaveReason), 0)


def test_statistics_count_joins_resumes_and_leaves_by_reason() -> None:
    chat: Chat[Handle] = Chat(MemoryHistoryStore(100, epoch=EPOCH), 50, grace=10.0)
    chat.join(1, Hello("alice"), TS, secret="s1")
    chat.join(2, Hello("bob"), TS, secret="s2")
    chat.join(3, Hello("carol"), TS, secret="s3")
    chat.leave_all([2], LeaveReason.SLOW, TS)
    assert chat.drop(1, LeaveReason.TIMEOUT, TS, now=0.0) is None  # held: no leave yet
    chat.join(4, Hello("alice", resume="s1"), TS, now=1.0)  # back in time: no join, no leave
    chat.drop(3, LeaveReason.QUIT, TS, now=2.0)
    chat.expire(20.0, TS)  # carol's grace is over: she leaves, for the reason she dropped
    stats = chat.statistics()
    assert (stats.joins, stats.resumes) == (3, 1)
    assert stats.leaves == {**NO_LEAVES, "slow": 1, "quit": 1}


def test_history_outlives_an_emptied_room() -> None:
    chat = new_chat()
    chat.join(1, Hello("alice"), TS)
    chat.say(1, Say("hello?", ref="r"), TS)
    chat.leave(1, LeaveReason.QUIT, TS)
    assert chat.statistics() == ChatStatistics(
        rooms=0, members=0, joins=1, leaves={**NO_LEAVES, "quit": 1}
    )
    bob = chat.join(2, Hello("bob"), TS)
    replay = [parse(line) for line in bob.welcome[1:]]
    assert [(e["id"], e["type"]) for e in replay] == [
        (1, "join"),
        (2, "message"),
        (3, "leave"),
        (4, "join"),
    ]
    assert replay[1]["ref"] == "r"
    assert replay[2]["reason"] == "quit"
    stats = chat.statistics()
    assert (stats.rooms, stats.members, stats.joins) == (1, 1, 2)


@pytest.mark.parametrize(
    ("since", "replayed", "recovered"),
    [
        (1, [4, 5, 6, 7, 8], False),  # events 2 and 3 are no longer retained
        (3, [4, 5, 6, 7, 8], True),
        (5, [6, 7, 8], True),
        (7, [8], True),
        (8, [4, 5, 6, 7, 8], False),  # since beyond the history: the last 50 retained
    ],
)
def test_a_resuming_joiner_replays_what_a_live_member_received(
    since: int, replayed: list[int], recovered: bool
) -> None:
    chat = new_chat(retention=5)
    chat.join("live", Hello("alice"), TS)
    received: list[bytes] = []
    for n in range(6):
        delivery = chat.say("live", Say(f"m{n}"), TS)
        assert delivery is not None
        received.append(delivery.line)  # ids 2..7
    joined = chat.join("late", Hello("bob", since=since), TS)
    assert parse(joined.welcome[0])["recovered"] is recovered
    replay = joined.welcome[1:]
    assert [parse(line)["id"] for line in replay] == replayed
    assert replay[:-1] == received[len(received) - len(replay) + 1 :]
    assert replay[-1] == joined.announce.line


def test_typing_goes_to_the_others_only() -> None:
    chat = new_chat()
    for handle, name in enumerate(["a", "b", "c"]):
        chat.join(handle, Hello(name), TS)
    delivery = chat.typing(1)
    assert delivery is not None
    assert delivery.recipients == (0, 2)
    assert parse(delivery.line) == {"type": "typing", "room": "lobby", "name": "b"}


# --------------------------------------------------------------------------
# State machine

HANDLES: list[Handle] = [0, 1, 2, "x", "y"]
NAMES = [
    "alice",
    "Alice",
    "ALICE",
    "aIice",  # a capital i
    "\uff21lice",  # a fullwidth A
    "\u0430lice",  # a Cyrillic a
    "bob",
    "Bob",
    "\u0412ob",  # a Cyrillic capital Ve
    "carol",
    "\u00c9mile",
    "\u00e9mile",
]


def clash(a: str, b: str) -> bool:
    """The model's rule: two names clash when they share a key."""
    return not name_keys(a).isdisjoint(name_keys(b))


ROOMS = ["lobby", "r.1"]
RETENTION = 4
REPLAY = 3


@dataclass
class Member:
    """What the model knows of one connected member."""

    room: str
    name: str
    join_id: int
    stored: list[tuple[int, bytes]] = field(default_factory=list)  # live stored events
    typing: list[str] = field(default_factory=list)  # names in typing events received


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chat: Chat[Handle] = Chat(MemoryHistoryStore(RETENTION), REPLAY)
        self.members: dict[Handle, Member] = {}
        self.order: dict[str, list[Handle]] = {room: [] for room in ROOMS}
        self.log: dict[str, list[bytes]] = {room: [] for room in ROOMS}  # line of id i at i-1
        self.said = 0

    # -- helpers

    def last_id(self, room: str) -> int:
        return len(self.log[room])

    def names(self, room: str) -> list[str]:
        return [self.members[h].name for h in self.order[room]]

    def record(self, room: str, line: bytes) -> dict[str, Any]:
        """Check a newly stored event takes the room's next id; log it."""
        event = parse(line)
        assert event["id"] == self.last_id(room) + 1
        assert event["room"] == room
        self.log[room].append(line)
        return event

    def deliver(self, delivery: Delivery[Handle]) -> None:
        assert len(set(delivery.recipients)) == len(delivery.recipients)
        event = parse(delivery.line)
        for handle in delivery.recipients:
            member = self.members[handle]  # a KeyError: delivered to a non-member
            assert event["room"] == member.room
            if event["type"] == "typing":
                assert "id" not in event
                member.typing.append(event["name"])
            else:
                member.stored.append((event["id"], delivery.line))

    def expected_replay(self, join_id: int, since: int | None) -> tuple[list[int], bool | None]:
        retained = list(range(max(1, join_id - RETENTION + 1), join_id + 1))
        if since is None or since > join_id - 1:
            return retained[-max(REPLAY, 1) :], None if since is None else False
        return [i for i in retained if i > since], since + 1 >= retained[0]

    # -- rules

    @rule(
        handle=st.sampled_from(HANDLES),
        name=st.sampled_from(NAMES),
        room=st.sampled_from(ROOMS),
        back=st.none() | st.integers(min_value=-2, max_value=12),
    )
    def join(self, handle: Handle, name: str, room: str, back: int | None) -> None:
        # `since` counts back from the room's last id; negative: beyond it.
        since = None if back is None else max(self.last_id(room) - back, 0)
        hello = Hello(name=name, room=room, since=since)
        if handle in self.members:
            assert join_error(self.chat, handle, hello) is ErrorCode.ALREADY_JOINED
            return
        if any(clash(name, other) for other in self.names(room)):
            assert join_error(self.chat, handle, hello) is ErrorCode.NAME_TAKEN
            event("join: name_taken")
            return

        joined = self.chat.join(handle, hello, TS)
        join_id = self.last_id(room) + 1
        others = list(self.order[room])
        assert (joined.room, joined.name, joined.join_id) == (room, name, join_id)
        announce = self.record(room, joined.announce.line)
        assert (announce["type"], announce["name"]) == ("join", name)
        assert list(joined.announce.recipients) == others

        welcome = parse(joined.welcome[0])
        expected_ids, recovered = self.expected_replay(join_id, since)
        event(f"join: recovered={recovered}")
        assert welcome["type"] == "welcome"
        assert (welcome["room"], welcome["name"]) == (room, name)
        assert welcome["members"] == [*self.names(room), name]
        assert welcome["last_id"] == join_id
        assert welcome.get("recovered") is recovered
        assert ("recovered" in welcome) is (since is not None)

        replay = joined.welcome[1:]
        assert replay == [self.log[room][i - 1] for i in expected_ids]
        assert parse(replay[-1])["id"] == join_id
        if since is not None and since < join_id:
            # A member connected since before `since` got live what the
            # joiner is replayed (its own join aside).
            for handle_ in others:
                member = self.members[handle_]
                if member.join_id <= since:
                    seen = [line for i, line in member.stored if i > since]
                    missed = replay[:-1]
                    assert seen[len(seen) - len(missed) :] == missed
                    if recovered:
                        assert seen == missed
                    event(f"join: replay compared with a live member, recovered={recovered}")

        self.deliver(joined.announce)
        self.members[handle] = Member(room, name, join_id)
        self.order[room].append(handle)

    @rule(handle=st.sampled_from(HANDLES), reason=st.sampled_from(LeaveReason))
    def leave(self, handle: Handle, reason: LeaveReason) -> None:
        delivery = self.chat.leave(handle, reason, TS)
        member = self.members.pop(handle, None)
        if member is None:
            assert delivery is None
            return
        assert delivery is not None
        self.order[member.room].remove(handle)
        event = self.record(member.room, delivery.line)
        assert (event["type"], event["name"], event["reason"]) == ("leave", member.name, reason)
        assert list(delivery.recipients) == self.order[member.room]
        self.deliver(delivery)

    @rule(
        handle=st.sampled_from(HANDLES),
        with_ref=st.booleans(),
        count=st.integers(min_value=1, max_value=4),
    )
    def say(self, handle: Handle, with_ref: bool, count: int) -> None:
        for _ in range(count):
            self.said += 1
            text = f"{handle}#{self.said}\nline two"
            ref = f"c-{self.said}" if with_ref else None  # a ref used again: PresenceMachine
            delivery = self.chat.say(handle, Say(text, ref), TS)
            member = self.members.get(handle)
            if member is None:
                assert delivery is None
                return
            assert delivery is not None
            event = self.record(member.room, delivery.line)
            assert (event["type"], event["name"], event["text"]) == ("message", member.name, text)
            assert event.get("ref") == ref
            assert list(delivery.recipients) == self.order[member.room]  # sender included
            self.deliver(delivery)

    @rule(handle=st.sampled_from(HANDLES))
    def typing(self, handle: Handle) -> None:
        delivery = self.chat.typing(handle)
        member = self.members.get(handle)
        if member is None:
            assert delivery is None
            return
        assert delivery is not None
        assert parse(delivery.line) == {"type": "typing", "room": member.room, "name": member.name}
        assert handle not in delivery.recipients
        assert list(delivery.recipients) == [h for h in self.order[member.room] if h != handle]
        self.deliver(delivery)

    # -- invariants

    @invariant()
    def every_member_has_every_event_after_its_join_once_in_order(self) -> None:
        for member in self.members.values():
            ids = [i for i, _ in member.stored]
            assert ids == list(range(member.join_id + 1, self.last_id(member.room) + 1))
            assert [line for _, line in member.stored] == self.log[member.room][member.join_id :]

    @invariant()
    def members_are_joins_minus_leaves_in_join_order(self) -> None:
        for room in ROOMS:
            names = self.chat.members(room)
            assert names == self.names(room)
            assert not any(clash(a, b) for i, a in enumerate(names) for b in names[:i])
        busy = sum(1 for room in ROOMS if self.order[room])
        stats = self.chat.statistics()
        assert (stats.rooms, stats.members) == (busy, len(self.members))

    @invariant()
    def each_senders_messages_keep_their_order(self) -> None:
        for member in self.members.values():
            sent: dict[str, list[int]] = {}
            for _, line in member.stored:
                event = parse(line)
                if event["type"] == "message":
                    sender, _, rest = event["text"].partition("#")
                    sent.setdefault(sender, []).append(int(rest.split("\n")[0]))
            for numbers in sent.values():
                assert numbers == sorted(numbers)

    @invariant()
    def typing_never_reaches_its_sender(self) -> None:
        for member in self.members.values():
            assert member.name not in member.typing


ChatMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestChat = ChatMachine.TestCase
