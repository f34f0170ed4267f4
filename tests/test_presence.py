"""Presence and exactly-once sending in the pure chat state (core/rooms.py).

A dropped connection leaves its seat held for the grace period; a `hello`
with the seat's `resume` secret takes it back with no `join`/`leave` pair;
the grace ending is the member's `leave`. A `ref` the member used already
gives the original event back instead of a second one. Examples first, then
a hypothesis state machine that mixes drops, resumes, strangers, expiry,
restarts and resent refs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_chat.core.history import MemoryHistoryStore
from trio_chat.core.protocol import ErrorCode, Hello, LeaveReason, ProtocolError, Say, name_keys
from trio_chat.core.rooms import DEDUPE_WINDOW, Chat, HeldSeat, Resent

TS = "2026-12-02T10:00:00.000Z"
GRACE = 15.0
Handle = int


def parse(line: bytes) -> dict[str, Any]:
    found = json.loads(line)
    assert isinstance(found, dict)
    return found


def new_chat(
    store: MemoryHistoryStore | None = None, grace: float = GRACE, replay_limit: int = 50
) -> Chat[Handle]:
    return Chat(store or MemoryHistoryStore(100, epoch="e1"), replay_limit, grace=grace)


def refusal(chat: Chat[Handle], handle: Handle, hello: Hello, now: float) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        chat.join(handle, hello, TS, now=now, secret="unused")
    return info.value.code


def room_log(store: MemoryHistoryStore, room: str = "lobby") -> list[dict[str, Any]]:
    history = store.acquire(room)
    return [parse(e.line) for e in history.after(0)]


# --------------------------------------------------------------------------
# Examples


def test_a_welcome_carries_the_seat_secret_only_with_a_grace_period() -> None:
    with_grace = new_chat().join(1, Hello("alice"), TS, secret="s1")
    assert parse(with_grace.welcome[0])["resume"] == "s1"
    without = new_chat(grace=0).join(1, Hello("alice"), TS, secret="s1")
    assert "resume" not in parse(without.welcome[0])


def test_a_dropped_member_resumes_its_seat_without_join_or_leave() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, now=0, secret="a-secret")
    chat.join(2, Hello("bob"), TS, now=0, secret="b-secret")
    assert chat.drop(1, LeaveReason.TIMEOUT, TS, now=1.0) is None  # nothing to tell anyone
    assert chat.members("lobby") == ["alice", "bob"]  # still there, for the others
    assert chat.statistics().held == 1
    said = chat.say(2, Say("while you were away"), TS, now=2.0)
    assert said is not None
    assert said.recipients == (2,)  # a held seat receives nothing
    back = chat.join(3, Hello("alice", since=2, epoch="e1", resume="a-secret"), TS, now=5.0)
    assert back.resumed
    assert back.announce.recipients == ()
    assert back.displaced is None
    welcome = parse(back.welcome[0])
    assert welcome["members"] == ["alice", "bob"]
    assert (welcome["last_id"], welcome["recovered"], welcome["resume"]) == (3, True, "a-secret")
    assert [parse(line)["text"] for line in back.welcome[1:]] == ["while you were away"]
    assert chat.next_expiry() is None
    assert [e["type"] for e in room_log(store)] == ["join", "join", "message"]
    assert chat.statistics().held == 0


def test_a_held_name_is_refused_to_strangers_and_to_a_wrong_secret() -> None:
    chat = new_chat()
    chat.join(1, Hello("alice"), TS, now=0, secret="a-secret")
    chat.drop(1, LeaveReason.QUIT, TS, now=0)
    assert refusal(chat, 2, Hello("alice"), now=1) is ErrorCode.NAME_TAKEN
    assert refusal(chat, 2, Hello("ALICE", resume="a-secret"), now=1) is ErrorCode.NAME_TAKEN
    assert refusal(chat, 2, Hello("alice", resume="b-secret"), now=1) is ErrorCode.NAME_TAKEN
    # Another room is another seat: the secret means nothing there.
    elsewhere = chat.join(2, Hello("alice", room="elsewhere", resume="a-secret"), TS, secret="x")
    assert not elsewhere.resumed
    assert parse(elsewhere.welcome[0])["resume"] == "x"


def test_the_grace_ending_is_the_leave_with_the_reason_of_the_drop() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, now=0, secret="a")
    chat.join(2, Hello("bob"), TS, now=0, secret="b")
    chat.drop(1, LeaveReason.TIMEOUT, TS, now=10.0)
    assert chat.next_expiry() == 10.0 + GRACE
    assert chat.expire(10.0 + GRACE - 0.001, TS) == []
    (leave,) = chat.expire(10.0 + GRACE, TS)
    assert leave.recipients == (2,)
    assert parse(leave.line) | {"ts": TS} == {
        "type": "leave",
        "id": 3,
        "room": "lobby",
        "name": "alice",
        "ts": TS,
        "reason": "timeout",
    }
    assert chat.members("lobby") == ["bob"]
    assert chat.next_expiry() is None
    # Now the name is free, and the old secret is worth nothing.
    again = chat.join(3, Hello("alice", resume="a"), TS, now=30.0, secret="a2")
    assert not again.resumed
    assert parse(again.announce.line)["type"] == "join"


def test_the_last_held_member_leaving_forgets_the_room() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, now=0, secret="a")
    chat.drop(1, LeaveReason.QUIT, TS, now=0)
    assert chat.is_active("lobby")
    assert chat.rooms() == [("lobby", 1)]
    assert [parse(d.line)["reason"] for d in chat.expire(GRACE, TS)] == ["quit"]
    assert not chat.is_active("lobby")
    assert chat.rooms() == []


def test_a_resume_displaces_the_connection_that_still_holds_the_seat() -> None:
    chat = new_chat()
    chat.join(1, Hello("alice"), TS, now=0, secret="a")
    chat.join(2, Hello("bob"), TS, now=0, secret="b")
    back = chat.join(3, Hello("alice", resume="a"), TS, now=1.0)
    assert back.resumed
    assert back.displaced == 1
    assert chat.say(1, Say("old connection"), TS) is None  # no longer a member
    assert chat.leave(1, LeaveReason.QUIT, TS) is None  # and its leave is nobody's
    said = chat.say(3, Say("new connection"), TS)
    assert said is not None
    assert set(said.recipients) == {2, 3}
    assert chat.statistics().members == 2


def test_without_a_grace_period_a_drop_is_a_leave_and_resume_is_ignored() -> None:
    chat = new_chat(grace=0)
    chat.join(1, Hello("alice"), TS, secret="a")
    chat.join(2, Hello("bob"), TS, secret="b")
    dropped = chat.drop(1, LeaveReason.TIMEOUT, TS, now=0)
    assert dropped is not None
    assert parse(dropped.line)["reason"] == "timeout"
    assert chat.members("lobby") == ["bob"]
    assert refusal(chat, 3, Hello("bob", resume="b"), now=0) is ErrorCode.NAME_TAKEN


def test_a_ref_used_again_gives_the_original_event_back_to_the_sender_only() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, secret="a")
    chat.join(2, Hello("bob"), TS, secret="b")
    first = chat.say(1, Say("hello", ref="r1"), TS, now=1.0)
    assert first is not None
    assert not isinstance(first, Resent)
    again = chat.say(1, Say("hello (typed again)", ref="r1"), TS, now=2.0)
    assert isinstance(again, Resent)
    assert again.line == first.line  # the original, id and text
    assert again.recipients == (1,)
    # Another member's ref is its own; and after a resume, the ref still counts.
    other = chat.say(2, Say("mine", ref="r1"), TS, now=3.0)
    assert other is not None
    assert not isinstance(other, Resent)
    chat.drop(1, LeaveReason.QUIT, TS, now=4.0)
    chat.join(3, Hello("alice", resume="a"), TS, now=5.0)
    resent = chat.say(3, Say("hello", ref="r1"), TS, now=6.0)
    assert isinstance(resent, Resent)
    assert resent.recipients == (3,)
    assert [e.get("text") for e in room_log(store) if e["type"] == "message"] == ["hello", "mine"]


def test_a_ref_is_remembered_for_the_dedupe_window_and_while_its_event_is_retained() -> None:
    store = MemoryHistoryStore(5, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, secret="a")
    chat.say(1, Say("one", ref="r1"), TS, now=0.0)
    assert isinstance(chat.say(1, Say("one", ref="r1"), TS, now=DEDUPE_WINDOW - 1), Resent)
    stored = chat.say(1, Say("one, much later", ref="r1"), TS, now=DEDUPE_WINDOW + 1)
    assert stored is not None
    assert not isinstance(stored, Resent)
    for n in range(5):  # push r1's second event out of the 5-event window
        chat.say(1, Say(f"filler {n}"), TS, now=DEDUPE_WINDOW + 2)
    late = chat.say(1, Say("one, once more", ref="r1"), TS, now=DEDUPE_WINDOW + 3)
    assert late is not None
    assert not isinstance(late, Resent)


def test_a_namesake_who_joined_later_does_not_inherit_refs() -> None:
    chat = new_chat()
    chat.join(1, Hello("alice"), TS, secret="a")
    chat.say(1, Say("first alice", ref="c-1"), TS)
    chat.leave(1, LeaveReason.QUIT, TS)
    chat.join(2, Hello("alice"), TS, secret="a2")
    said = chat.say(2, Say("second alice", ref="c-1"), TS)
    assert said is not None
    assert not isinstance(said, Resent)
    assert parse(said.line)["text"] == "second alice"


def test_refs_stored_before_a_restart_still_count_after_it() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, now=0, secret="a")
    chat.say(1, Say("before", ref="r1"), TS, now=1.0)
    held = chat.hold_all(LeaveReason.SHUTDOWN, now=2.0)
    assert held == [HeldSeat("lobby", "alice", "a", LeaveReason.SHUTDOWN, GRACE, 1)]
    restarted = new_chat(store)  # the same history, a new process
    restarted.restore(held, now=100.0)
    assert restarted.members("lobby") == ["alice"]
    back = restarted.join(7, Hello("alice", since=2, resume="a"), TS, now=101.0)
    assert back.resumed
    assert isinstance(restarted.say(7, Say("before", ref="r1"), TS, now=102.0), Resent)


def test_restored_seats_whose_grace_is_over_leave_at_once() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    chat.join(1, Hello("alice"), TS, now=0, secret="a")
    chat.join(2, Hello("bob"), TS, now=0, secret="b")
    chat.drop(2, LeaveReason.TIMEOUT, TS, now=0)
    held = chat.hold_all(LeaveReason.SHUTDOWN, now=10.0)
    assert [(h.name, h.reason, h.remaining) for h in held] == [
        ("alice", LeaveReason.SHUTDOWN, GRACE),
        ("bob", LeaveReason.TIMEOUT, GRACE - 10.0),
    ]
    late = [HeldSeat(h.room, h.name, h.secret, h.reason, h.remaining - 8.0, 1) for h in held]
    restarted = new_chat(store)
    restarted.restore(late, now=50.0)
    assert restarted.next_expiry() == 50.0
    (bob_left,) = restarted.expire(50.0, TS)
    assert parse(bob_left.line)["reason"] == "timeout"
    assert restarted.members("lobby") == ["alice"]


def test_restore_needs_the_rooms_loaded() -> None:
    store = MemoryHistoryStore(100, epoch="e1")
    chat = new_chat(store)
    held = [HeldSeat("lobby", "alice", "a", LeaveReason.SHUTDOWN, 5.0, 1)]
    chat.restore(held, now=0)  # the memory store has every room
    assert chat.members("lobby") == ["alice"]


# --------------------------------------------------------------------------
# The state machine

NAMES = ["alice", "ALICE", "bob", "carol"]
HANDLES = list(range(6))
REFS = ["r1", "r2"]


@dataclass
class Seat:
    """What the model knows of one seat."""

    name: str
    secret: str
    handle: Handle | None  # None while held
    held_until: float = 0.0
    reason: LeaveReason = LeaveReason.QUIT
    refs: dict[str, int] = field(default_factory=dict)  # ref -> id of its event


class PresenceMachine(RuleBasedStateMachine):
    """One room, a clock, and every way a member comes and goes."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryHistoryStore(1000, epoch="e1")
        self.chat: Chat[Handle] = new_chat(self.store)
        self.now = 0.0
        self.seats: list[Seat] = []  # in join order
        self.secrets = 0
        self.visible: list[str] = []  # members as a connected client sees them

    def seat_of(self, handle: Handle) -> Seat | None:
        return next((s for s in self.seats if s.handle == handle), None)

    def record(self, line: bytes) -> dict[str, Any]:
        found = parse(line)
        if found["type"] == "join":
            self.visible.append(found["name"])
        elif found["type"] == "leave":
            self.visible.remove(found["name"])
        return found

    @rule(handle=st.sampled_from(HANDLES), name=st.sampled_from(NAMES), resume=st.booleans())
    def hello(self, handle: Handle, name: str, resume: bool) -> None:
        if self.seat_of(handle) is not None:
            return
        seat = next((s for s in self.seats if s.name == name), None)
        secret = seat.secret if seat is not None and resume else "wrong"
        self.secrets += 1
        hello = Hello(name, since=0, epoch="e1", resume=secret if resume else None)
        clash = any(set(name_keys(name)) & set(name_keys(s.name)) for s in self.seats)
        if seat is not None and resume:
            joined = self.chat.join(handle, hello, TS, now=self.now, secret="unused")
            assert joined.resumed
            assert joined.displaced == seat.handle
            event("resumed" if seat.handle is None else "displaced")
            seat.handle = handle
            assert parse(joined.welcome[0])["members"] == [s.name for s in self.seats]
            return
        if clash:
            with pytest.raises(ProtocolError) as info:
                self.chat.join(handle, hello, TS, now=self.now, secret="unused")
            assert info.value.code is ErrorCode.NAME_TAKEN
            event("name taken")
            return
        joined = self.chat.join(handle, hello, TS, now=self.now, secret=f"s{self.secrets}")
        assert not joined.resumed
        assert self.record(joined.announce.line)["name"] == name
        self.seats.append(Seat(name, f"s{self.secrets}", handle))

    @rule(handle=st.sampled_from(HANDLES), reason=st.sampled_from(LeaveReason))
    def drop(self, handle: Handle, reason: LeaveReason) -> None:
        assert self.chat.drop(handle, reason, TS, now=self.now) is None
        seat = self.seat_of(handle)
        if seat is not None:
            seat.handle, seat.held_until, seat.reason = None, self.now + GRACE, reason

    @rule(handle=st.sampled_from(HANDLES))
    def leave(self, handle: Handle) -> None:
        delivery = self.chat.leave(handle, LeaveReason.QUIT, TS)
        seat = self.seat_of(handle)
        if seat is None:
            assert delivery is None
            return
        assert delivery is not None
        self.seats.remove(seat)
        assert self.record(delivery.line)["name"] == seat.name

    @rule(seconds=st.sampled_from([0.5, 5.0, GRACE, 2 * GRACE]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        left = self.chat.expire(self.now, TS)
        gone = [s for s in self.seats if s.handle is None and s.held_until <= self.now]
        # Each once, with the reason it dropped for (seats due together may
        # leave in any order).
        assert sorted((parse(d.line)["name"], parse(d.line)["reason"]) for d in left) == sorted(
            (s.name, str(s.reason)) for s in gone
        )
        for delivery in left:
            self.record(delivery.line)
        self.seats = [s for s in self.seats if s not in gone]

    @rule(handle=st.sampled_from(HANDLES), ref=st.sampled_from(REFS))
    def say(self, handle: Handle, ref: str) -> None:
        delivery = self.chat.say(handle, Say("text", ref=ref), TS, now=self.now)
        seat = self.seat_of(handle)
        if seat is None:
            assert delivery is None
            return
        assert delivery is not None
        said = parse(delivery.line)
        if ref in seat.refs:
            assert isinstance(delivery, Resent)
            assert said["id"] == seat.refs[ref]
            assert delivery.recipients == (handle,)
            event("resent")
        else:
            assert not isinstance(delivery, Resent)
            seat.refs[ref] = said["id"]

    @precondition(lambda self: self.seats)
    @rule()
    def restart(self) -> None:
        held = self.chat.hold_all(LeaveReason.SHUTDOWN, self.now)
        for seat in self.seats:
            if seat.handle is not None:
                seat.handle, seat.reason = None, LeaveReason.SHUTDOWN
                seat.held_until = self.now + GRACE
        self.chat = new_chat(self.store)
        self.chat.restore(held, self.now)
        event("restart")

    @invariant()
    def one_seat_per_name_and_the_same_list_for_everyone(self) -> None:
        names = self.chat.members("lobby")
        assert names == [s.name for s in self.seats]
        assert names == self.visible  # presence changes only by join, leave, expiry
        keys = [key for name in names for key in name_keys(name)]
        assert len(keys) == len(set(keys))

    @invariant()
    def each_ref_was_stored_once_per_seat(self) -> None:
        log = room_log(self.store) if self.store.acquire("lobby") else []
        for seat in self.seats:
            for ref, event_id in seat.refs.items():
                stored = [e for e in log if e.get("ref") == ref and e["name"] == seat.name]
                assert [e["id"] for e in stored if e["id"] >= event_id] == [event_id]


PresenceMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestPresence = PresenceMachine.TestCase
