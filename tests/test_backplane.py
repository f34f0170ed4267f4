"""The Redis backplane: its pure parts, and its scripts on a real `redis-server`.

The server runs as a child process for the session (`tests/redis_server.py`);
every test uses rooms of its own, or starts from an empty server. Waits are on
conditions (the subscription callback's counters), bounded by `fail_after`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import command, free_port

from trio_chat.backplane import keys, scripts
from trio_chat.backplane.errors import BackplaneError
from trio_chat.backplane.redis import Backplane, RoomState, open_backplane
from trio_chat.backplane.scripts import Admitted, NameTaken, Post, Resend
from trio_chat.backplane.url import BackplaneUrl, BackplaneUrlError, parse_backplane_url
from trio_chat.core import protocol
from trio_chat.core.errors import TrioChatError
from trio_chat.core.history import RoomHistory, StoredEvent
from trio_chat.core.protocol import LeaveReason

TS = protocol.format_timestamp(1_700_000_000)
WAIT = 10  # seconds any one test step may take, on a busy machine

# -- URLs (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://localhost", BackplaneUrl("localhost")),
        ("redis://127.0.0.1:6380", BackplaneUrl("127.0.0.1", 6380)),
        ("redis://h:1/3", BackplaneUrl("h", 1, db=3)),
        ("redis://h/", BackplaneUrl("h")),
        ("REDIS://h", BackplaneUrl("h")),
        ("rediss://cache.example:6390/2", BackplaneUrl("cache.example", 6390, db=2, tls=True)),
        ("redis://:pw@h", BackplaneUrl("h", password="pw")),
        ("redis://user:pw@h:7/1", BackplaneUrl("h", 7, db=1, password="pw", username="user")),
        ("redis://:p%40ss%3Aw%2Fd@h", BackplaneUrl("h", password="p@ss:w/d")),
        ("redis://:a@b@h", BackplaneUrl("h", password="a@b")),
        ("redis://user@h", BackplaneUrl("h", username="user")),
        ("redis://[::1]:6379/0", BackplaneUrl("::1")),
        ("redis://[::1]", BackplaneUrl("::1")),
        ("  redis://h  ", BackplaneUrl("h")),
    ],
)
def test_backplane_urls(text: str, expected: BackplaneUrl) -> None:
    assert parse_backplane_url(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must start with redis://"),
        ("localhost:6379", "must start with redis://"),
        ("http://h", "must start with redis://"),
        ("unix://redis.sock", "must start with redis://"),
        ("redis://", "names no host"),
        ("redis://:6379", "names no host"),
        ("redis://:pw@", "names no host"),
        ("redis://h:", "port must be a number"),
        ("redis://h:x", "port must be a number"),
        ("redis://h:0", "port must be a number"),
        ("redis://h:65536", "port must be a number"),
        ("redis://h:-1", "port must be a number"),
        ("redis://h/x", "database number"),
        ("redis://h/1/2", "database number"),
        ("redis://h/-1", "database number"),
        ("redis://h/0?ssl=true", "no query or fragment"),
        ("redis://h#x", "no query or fragment"),
        ("redis://h h", "not a valid host name"),
        ("redis://[::1", "malformed IPv6"),
        ("redis://[zz]", "malformed IPv6"),
        ("redis://[::1]x", "port must be a number"),
    ],
)
def test_bad_backplane_urls(text: str, reason: str) -> None:
    with pytest.raises(BackplaneUrlError, match=reason) as caught:
        parse_backplane_url(text)
    assert isinstance(caught.value, TrioChatError)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:sekr1t@h:1/2", "redis://:***@h:1/2"),
        ("rediss://bob:sekr1t@h", "rediss://bob:***@h:6379/0"),
    ],
)
def test_the_password_is_never_shown(text: str, shown: str) -> None:
    url = parse_backplane_url(text)
    assert url.password == "sekr1t"
    assert str(url) == shown
    for text_of_url in (repr(url), f"{url}", f"{url!r}", str([url])):
        assert "sekr1t" not in text_of_url


@pytest.mark.parametrize(
    "text", ["redis://:sekr1t@h:x", "redis://:sekr1t@h/x", "redis://:sekr1t@"]
)
def test_a_refused_url_does_not_show_its_password(text: str) -> None:
    with pytest.raises(BackplaneUrlError) as caught:
        parse_backplane_url(text)
    assert "sekr1t" not in str(caught.value)


# -- keys and lines (pure) ---------------------------------------------------


def test_every_key_of_a_room_is_in_one_hash_slot() -> None:
    room = "a.b-c_9"
    names = [keys.seq(room), keys.epoch(room), keys.log(room), keys.members(room)]
    names += [keys.names(room), keys.channel(room), keys.secrets(room), keys.held(room)]
    names += [keys.refs(room), keys.ref_order(room)]
    assert all(name.count("{") == 1 and "{a.b-c_9}" in name for name in names)
    assert len(set(names)) == len(names)
    assert keys.room_of_channel(keys.channel(room).encode()) == room
    assert keys.room_of_channel("tc:{x}:seq") is None
    assert keys.room_of_channel("tc:{a}b}:events") is None
    node = "n-1"
    assert {keys.lease(node), keys.node_rooms(node), keys.reaper(node)} == {
        "tc:node:{n-1}",
        "tc:node:{n-1}:rooms",
        "tc:node:{n-1}:reaper",
    }
    assert keys.node_of_token(keys.member_token(node, 7)) == node


@pytest.mark.parametrize("node", ["", "a/b", "a{b", "x" * 65, "é"])
def test_bad_node_names(node: str) -> None:
    with pytest.raises(keys.BadNodeName):
        keys.validate_node(node)


@settings(max_examples=200)
@given(
    event_id=st.integers(1, 2**53),
    text=st.text(min_size=1),
    name=st.text(min_size=1),
    ref=st.none() | st.text(),
)
def test_a_line_splits_around_its_id(event_id: int, text: str, name: str, ref: str | None) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")
    name = name.encode("utf-8", "replace").decode("utf-8")
    ref = None if ref is None else ref.encode("utf-8", "replace").decode("utf-8")
    builders: list[Callable[[int], bytes]] = [
        lambda i: protocol.message_event(i, "r", name, text, TS, ref=ref),
        lambda i: protocol.join_event(i, "r", name, TS),
        lambda i: protocol.leave_event(i, "r", name, TS, LeaveReason.TIMEOUT),
    ]
    for build in builders:
        assert scripts.with_id(build(0), event_id) == build(event_id)


def test_a_line_without_the_placeholder_id_is_refused() -> None:
    for line in (protocol.join_event(5, "r", "a", TS), b"", protocol.typing_event("r", "a")):
        with pytest.raises(scripts.BadTemplate):
            scripts.split_line(line)


@settings(max_examples=300)
@given(
    event_id=st.integers(0, 2**53),
    text=st.text(),
    name=st.text(min_size=1),
    ref=st.none() | st.text(),
    room=st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True),
)
def test_the_id_of_a_line_is_read_as_json_reads_it(
    event_id: int, text: str, name: str, ref: str | None, room: str
) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")
    name = name.encode("utf-8", "replace").decode("utf-8")
    ref = None if ref is None else ref.encode("utf-8", "replace").decode("utf-8")
    lines = [
        protocol.message_event(event_id, room, name, text, TS, ref=ref),
        protocol.join_event(event_id, room, name, TS),
        protocol.leave_event(event_id, room, name, TS, LeaveReason.QUIT),
        protocol.typing_event(room, name),
        protocol.typing_event(room, f',"id":{event_id},'),  # an id-like name
        protocol.error_event(protocol.ErrorCode.BAD_JSON, text, ref),
        protocol.welcome_event(room, name, [name], event_id, epoch="e", recovered=None),
    ]
    for line in lines:
        assert scripts.event_id_of(line) == json.loads(line).get("id")


def test_lines_that_are_not_numbered_events_have_no_id() -> None:
    for line in (b"", b"{", b'{"type":"message","id":-1,', b'{"type":"x","id":01,', b"[1]"):
        assert scripts.event_id_of(line) is None


@given(
    rooms=st.lists(st.sampled_from(["a", "b", "c"]), max_size=40),
    size=st.integers(1, 5),
)
def test_posts_are_grouped_by_room_in_order(rooms: list[str], size: int) -> None:
    posts = [Post(room, "n/1", b"") for room in rooms]
    groups = scripts.group_posts(posts, size)
    assert sorted(i for group in groups for i in group) == list(range(len(posts)))
    for group in groups:
        assert 1 <= len(group) <= size
        assert group == sorted(group)
        assert len({posts[i].room for i in group}) == 1
    firsts = [posts[group[0]].room for group in groups]
    assert list(dict.fromkeys(firsts)) == list(dict.fromkeys(rooms))


def test_a_say_many_call_takes_posts_of_its_room_only() -> None:
    line = said("r", "a", "x")
    for posts in ([], [Post("r", "n/1", line), Post("s", "n/1", line)]):
        with pytest.raises(ValueError, match="all of its room"):
            scripts.say_many_call("r", posts, candidate="c", history_limit=10)
    with pytest.raises(scripts.BadTemplate):
        scripts.say_many_call(
            "r",
            [Post("r", "n/1", line.replace(b'"id":0', b'"id":1'))],
            candidate="c",
            history_limit=10,
        )


def test_ranges_read_in_both_reply_shapes() -> None:
    expected = [StoredEvent(4, b"x"), StoredEvent(5, b"y")]
    assert scripts.parse_range([[b"4-0", [b"e", b"x"]], [b"5-0", [b"e", b"y"]]]) == expected
    assert scripts.parse_range({b"5-0": [[b"e", b"y"]], b"4-0": [[b"e", b"x"]]}) == expected


# -- a real server -------------------------------------------------------------

_rooms = itertools.count()


def new_room() -> str:
    """A room no other test (or example) uses."""
    return f"room-{next(_rooms)}"


@asynccontextmanager
async def backplanes(url: str, *nodes: str, **options: int) -> AsyncIterator[list[Backplane]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_backplane(url, n, **options)) for n in nodes]


def join_line(room: str, name: str) -> bytes:
    return protocol.join_event(0, room, name, TS)


def leave_line(room: str, name: str) -> bytes:
    return protocol.leave_event(0, room, name, TS, LeaveReason.QUIT)


def said(room: str, name: str, text: str) -> bytes:
    return protocol.message_event(0, room, name, text, TS, ref=None)


async def admit(bp: Backplane, room: str, token: str, name: str) -> Admitted:
    result = await bp.join(room, token, name, join_line(room, name))
    assert isinstance(result, Admitted), result
    return result


async def wait_for_events(bp: Backplane, count: int) -> None:
    """Until `count` events in all reached the subscription callback."""
    with trio.fail_after(WAIT):
        await wait_until(lambda: (s := bp.statistics()).received + s.overflowed >= count)


def drain(bp: Backplane) -> list[tuple[str, bytes]]:
    found = []
    while True:
        try:
            found.append(bp.events.receive_nowait())
        except trio.WouldBlock:
            return found


async def stream(bp: Backplane, room: str) -> list[StoredEvent]:
    """The room's whole log."""
    return await bp.read_range(room, 0, 2**53)


def leaves_in(events: list[StoredEvent]) -> list[dict[str, str]]:
    found = [json.loads(e.line) for e in events]
    return sorted((e for e in found if e["type"] == "leave"), key=lambda e: e["name"])


async def test_joins_says_and_leaves_number_one_order(redis_url: str, redis_port: int) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", "b") as (a, b):
        await a.subscribe(room)
        alice = await admit(a, room, "a/1", "alice")
        assert (alice.join_id, alice.members, alice.recovered) == (1, ["alice"], None)
        assert alice.replay == [StoredEvent(1, protocol.join_event(1, room, "alice", TS))]
        bob = await admit(b, room, "b/1", "bob")
        assert (bob.join_id, bob.members, bob.epoch) == (2, ["alice", "bob"], alice.epoch)
        assert [e.id for e in bob.replay] == [1, 2]
        posts = [Post(room, "a/1", said(room, "alice", f"m{i}")) for i in range(3)]
        assert await a.say_many(posts) == [3, 4, 5]
        assert await a.say_many([]) == []
        leave = protocol.leave_event(0, room, "bob", TS, LeaveReason.QUIT)
        assert await b.leave(room, "b/1", "bob", leave) == 6
        assert await a.epoch(room) == alice.epoch
        assert await a.last_id(room) == 6
        assert await a.epoch(new_room()) is None
        await wait_for_events(a, 6)
        lines = [line for _room, line in drain(a)]
        assert lines == [e.line for e in await a.read_range(room, 0, 6)]
        assert lines[5] == protocol.leave_event(6, room, "bob", TS, LeaveReason.QUIT)
        assert await a.read_range(room, 2, 4) == [
            StoredEvent(3, protocol.message_event(3, room, "alice", "m0", TS, ref=None)),
            StoredEvent(4, protocol.message_event(4, room, "alice", "m1", TS, ref=None)),
        ]
        assert await a.read_range(room, 4, 4) == []
        # A token that is not a member says nothing; joining twice is an error.
        assert await b.say_many([Post(room, "b/1", said(room, "bob", "gone"))]) == [None]
        with pytest.raises(BackplaneError, match="already joined") as caught:
            await a.join(room, "a/1", "alice2", join_line(room, "alice2"))
        assert "\n" not in str(caught.value)
        stats = a.statistics()
        assert stats.subscribed_rooms == 1
        assert stats.overflowed == 0


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bursts=st.lists(st.lists(st.integers(1, 12), max_size=5), min_size=2, max_size=2),
    pauses=st.lists(st.integers(0, 3), min_size=10, max_size=10),
)
async def test_ids_rise_by_one_under_concurrent_says_from_two_nodes(
    redis_url: str, bursts: list[list[int]], pauses: list[int]
) -> None:
    room, other = new_room(), new_room()
    async with backplanes(redis_url, "a", "b", "c") as (a, b, c):
        await c.subscribe(room)
        await admit(a, room, "a/1", "alice")
        await admit(b, room, "b/1", "bob")
        await admit(b, other, "b/2", "bob")
        got: dict[str, list[int]] = {"a": [], "b": []}
        sent: dict[int, bytes] = {}

        async def talk(bp: Backplane, token: str, name: str, sizes: list[int]) -> None:
            for n, size in enumerate(sizes):
                for _ in range(pauses[n % len(pauses)]):
                    await trio.lowlevel.checkpoint()
                lines = [said(room, name, f"{name} {n}.{i}") for i in range(size)]
                noise = (
                    [Post(other, "b/2", said(other, "bob", "elsewhere"))] if token == "b/1" else []
                )
                replies = await bp.say_many([*(Post(room, token, line) for line in lines), *noise])
                assert None not in replies
                ids = [event_id for event_id in replies[:size] if isinstance(event_id, int)]
                assert len(ids) == size  # no ref, so nothing is taken for a resend
                got[name[0]].extend(ids)
                for event_id, line in zip(ids, lines, strict=True):
                    sent[event_id] = scripts.with_id(line, event_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk, a, "a/1", "alice", bursts[0])
            nursery.start_soon(talk, b, "b/1", "bob", bursts[1])

        total = sum(bursts[0]) + sum(bursts[1])
        for ids in got.values():  # each node's says keep their order
            assert ids == sorted(ids)
        assert sorted(got["a"] + got["b"]) == list(range(3, 3 + total))
        await wait_for_events(c, 2 + total)
        received = drain(c)
        assert {r for r, _line in received} == {room}  # nothing of the other room
        lines = [line for _room, line in received]
        assert lines[2:] == [sent[i] for i in range(3, 3 + total)]  # every event, in id order
        assert [e.line for e in await stream(c, room)] == lines  # the log holds what was published


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    room_count=st.integers(1, 3),
    members=st.sets(st.tuples(st.integers(0, 2), st.integers(0, 3))),
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=12),
        min_size=1,
        max_size=4,
    ),
)
async def test_say_many_numbers_as_the_pure_model_does(
    redis_url: str,
    room_count: int,
    members: set[tuple[int, int]],
    batches: list[list[tuple[int, int]]],
) -> None:
    """Posts of members and non-members (token n/T in room R: a member iff
    (R, T) is in `members`), mixed across rooms in each `say_many`."""
    rooms = [new_room() for _ in range(room_count)]
    joined = sorted((r, t) for r, t in members if r < room_count)
    last = dict.fromkeys(rooms, 0)  # the model: each room's last id...
    lines: dict[str, list[bytes]] = {room: [] for room in rooms}  # ...and its events
    async with backplanes(redis_url, "a", "c") as (a, c):
        for room in rooms:
            await c.subscribe(room)
        for r, t in joined:
            room = rooms[r]
            admitted = await admit(a, room, f"a/{t}", f"m{t}")
            last[room] += 1
            assert admitted.join_id == last[room]
            lines[room].append(protocol.join_event(last[room], room, f"m{t}", TS))
        for n, batch in enumerate(batches):
            posts = [
                Post(
                    rooms[r % room_count],
                    f"a/{t}",
                    said(rooms[r % room_count], f"m{t}", f"{n}.{i}"),
                )
                for i, (r, t) in enumerate(batch)
            ]
            expected: list[int | None] = []
            for (r, t), post in zip(batch, posts, strict=True):
                if (r % room_count, t) not in members:
                    expected.append(None)
                    continue
                last[post.room] += 1
                expected.append(last[post.room])
                lines[post.room].append(scripts.with_id(post.line, last[post.room]))
            assert await a.say_many(posts) == expected
        await wait_for_events(c, sum(len(found) for found in lines.values()))
        heard: dict[str, list[bytes]] = {room: [] for room in rooms}
        for room, line in drain(c):
            heard[room].append(line)
        assert heard == lines  # every accepted post, in id order, and nothing else
        for room in rooms:
            assert [e.line for e in await stream(a, room)] == lines[room]
            assert await a.last_id(room) == last[room]
            if not last[room]:  # refused posts start no numbering
                assert await a.epoch(room) is None


async def test_a_burst_larger_than_one_call_keeps_its_order(redis_url: str) -> None:
    room, other = new_room(), new_room()
    size = scripts.MAX_POSTS_PER_CALL
    async with backplanes(redis_url, "a") as (a,):
        await admit(a, room, "a/1", "alice")
        await admit(a, other, "a/2", "alice")
        posts = []
        for i in range(2 * size + 5):  # 344 posts in `room` (two calls), 173 in `other`
            where, token = (room, "a/1") if i % 3 else (other, "a/2")
            posts.append(Post(where, token, said(where, "alice", f"{i}")))
        before = a.statistics()
        ids = await a.say_many(posts)
        after = a.statistics()
        in_room = [
            event_id for event_id, post in zip(ids, posts, strict=True) if post.room == room
        ]
        in_other = [
            event_id for event_id, post in zip(ids, posts, strict=True) if post.room == other
        ]
        assert in_room == list(range(2, 2 + len(in_room)))
        assert in_other == list(range(2, 2 + len(in_other)))
        assert after.round_trips - before.round_trips == 1
        assert after.scripts - before.scripts == 3


async def test_typing_is_published_unnumbered_and_unstored(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", "b") as (a, b):
        await b.subscribe(room)
        await admit(a, room, "a/1", "alice")
        typing = protocol.typing_event(room, "alice")
        assert await a.say_many([], [(room, typing)]) == []
        assert await a.say_many([Post(room, "a/1", said(room, "alice", "hi"))]) == [2]
        await a.say_many([], [(new_room(), typing)])  # nobody listens: lost, harmlessly
        with pytest.raises(scripts.BadTemplate):
            await a.say_many([], [(room, protocol.join_event(3, room, "alice", TS))])
        await wait_for_events(b, 3)
        heard = drain(b)
        assert [line for _room, line in heard] == [
            protocol.join_event(1, room, "alice", TS),
            typing,
            protocol.message_event(2, room, "alice", "hi", TS, ref=None),
        ]
        assert {r for r, _line in heard} == {room}
        assert [scripts.event_id_of(line) for _room, line in heard] == [1, None, 2]
        assert await a.last_id(room) == 2
        assert [e.id for e in await stream(a, room)] == [1, 2]


async def test_room_states_tell_a_restarted_numbering_and_lost_members(
    redis_url: str, redis_port: int
) -> None:
    room, empty = new_room(), new_room()
    async with backplanes(redis_url, "a") as (a,):
        alice = await admit(a, room, "a/1", "alice")
        await admit(a, room, "a/2", "bob")
        bob_left = protocol.leave_event(0, room, "bob", TS, LeaveReason.QUIT)
        await a.leave(room, "a/2", "bob", bob_left)
        states = await a.room_states({room: ["a/1", "a/2"], empty: ["a/3"]})
        assert states[room] == RoomState(alice.epoch, 3, frozenset({"a/1"}))
        assert states[empty] == RoomState(None, 0, frozenset())
        assert command(redis_port, "FLUSHALL") == b"+OK"  # the server loses everything
        assert (await a.room_states({room: ["a/1"]}))[room] == RoomState(None, 0, frozenset())
        # The next event starts a new numbering, under another epoch.
        bob = await admit(a, room, "a/4", "bob")
        assert bob.join_id == 1
        assert bob.epoch != alice.epoch
        state = (await a.room_states({room: ["a/1", "a/4"]}))[room]
        assert state == RoomState(bob.epoch, 1, frozenset({"a/4"}))
        assert await a.room_states({}) == {}


async def test_the_log_is_capped_and_replay_reads_its_window(
    redis_url: str, redis_port: int
) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", history_limit=10) as (a,):
        await admit(a, room, "a/1", "alice")
        for burst in range(5):
            posts = [Post(room, "a/1", said(room, "alice", f"{burst}.{i}")) for i in range(50)]
            await a.say_many(posts)
        length = int(command(redis_port, "XLEN", keys.log(room)).lstrip(b":"))
        assert 10 <= length <= 10 + 100  # MAXLEN ~ trims whole nodes (100 entries each)
        bob = await a.join(room, "a/2", "bob", join_line(room, "bob"), since=0, replay_limit=1000)
        assert isinstance(bob, Admitted)
        assert bob.join_id == 252
        assert [e.id for e in bob.replay] == list(range(243, 253))  # the last 10 only
        assert bob.recovered is False
        retained = await a.read_range(room, 0, 252)
        assert [e.id for e in retained] == list(range(252 - length, 253))  # and bob's join


async def test_a_subscriber_gets_its_rooms_only_and_stops_on_unsubscribe(
    redis_url: str, redis_port: int
) -> None:
    mine, theirs = new_room(), new_room()
    async with backplanes(redis_url, "a", "b") as (a, b):
        await a.subscribe(mine)
        await admit(b, mine, "b/1", "bob")
        await admit(b, theirs, "b/2", "bob")
        await b.say_many(
            [
                Post(theirs, "b/2", said(theirs, "bob", "t")),
                Post(mine, "b/1", said(mine, "bob", "m")),
            ]
        )
        await wait_for_events(a, 2)
        assert [(r, e.id) for r, e in ((r, scripts_id(line)) for r, line in drain(a))] == [
            (mine, 1),
            (mine, 2),
        ]
        await a.unsubscribe(mine)
        assert a.statistics().subscribed_rooms == 0
        await a.subscribe(theirs)  # a marker: once it arrives, nothing of `mine` came
        await b.say_many([Post(mine, "b/1", said(mine, "bob", "x"))])
        await b.say_many([Post(theirs, "b/2", said(theirs, "bob", "y"))])
        await wait_for_events(a, 3)
        assert [r for r, _line in drain(a)] == [theirs]


def scripts_id(line: bytes) -> StoredEvent:
    event = json.loads(line)
    return StoredEvent(event["id"], line)


LOOK_ALIKES = ["alice", "ALICE", "Alice", "aIice", "\uff41lice", "\u0430lice", "al\u0456ce"]


async def test_look_alike_names_racing_from_two_nodes_admit_exactly_one(
    redis_url: str, redis_port: int
) -> None:
    alice = protocol.name_keys("alice")
    assert all(protocol.name_keys(name) & alice for name in LOOK_ALIKES)
    rooms = [new_room() for _ in range(8)]
    async with backplanes(redis_url, "a", "b") as (a, b):
        results: dict[str, list[tuple[str, str, Admitted | NameTaken]]] = {r: [] for r in rooms}

        async def attempt(bp: Backplane, room: str, n: int, name: str) -> None:
            token = keys.member_token(bp.node, f"{room}.{n}")
            outcome = await bp.join(room, token, name, join_line(room, name))
            results[room].append((name, token, outcome))

        async with trio.open_nursery() as nursery:
            for room in rooms:
                for n, name in enumerate(LOOK_ALIKES):
                    nursery.start_soon(attempt, a, room, n, name)
                    nursery.start_soon(attempt, b, room, n, name)
        for room in rooms:
            winners = [(name, t, r) for name, t, r in results[room] if isinstance(r, Admitted)]
            assert len(winners) == 1, winners
            winner, _token, admitted = winners[0]
            assert admitted.members == [winner]
            assert admitted.join_id == 1
            holders = {r.holder for _n, _t, r in results[room] if isinstance(r, NameTaken)}
            assert holders == {winner}
            assert await a.last_id(room) == 1
        # Once the winner leaves, the name is free again, on either node.
        room = rooms[0]
        name, token, _admitted = next(w for w in results[room] if isinstance(w[2], Admitted))
        leave = protocol.leave_event(0, room, name, TS, LeaveReason.QUIT)
        assert await a.leave(room, token, name, leave) == 2
        assert isinstance(await b.join(room, "b/new", "ALICE", join_line(room, "ALICE")), Admitted)


async def test_a_member_leaves_once_when_two_nodes_race(redis_url: str, redis_port: int) -> None:
    room = new_room()
    names = [f"m{i}" for i in range(20)]
    async with backplanes(redis_url, "a", "b") as (a, b):
        for name in names:
            await admit(a, room, f"a/{name}", name)
        ids: list[int | None] = []

        async def remove(bp: Backplane, name: str) -> None:
            line = protocol.leave_event(0, room, name, TS, LeaveReason.TIMEOUT)
            ids.append(await bp.leave(room, f"a/{name}", name, line))

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(remove, a, name)
                nursery.start_soon(remove, b, name)
                nursery.start_soon(remove, b, name)
        leaves = leaves_in(await stream(a, room))
    assert sorted(i for i in ids if i is not None) == list(range(21, 41))
    assert ids.count(None) == 40
    assert [leave["name"] for leave in leaves] == sorted(names)


# The hypothesis comparison of JOIN's replay against the pure model.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("join"), st.integers(-1, 30), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(1, 6), replay_limit=st.integers(0, 8), plan=steps)
async def test_join_replays_as_the_pure_model_does(
    redis_url: str, limit: int, replay_limit: int, plan: list[tuple[str, int, int]]
) -> None:
    room = new_room()
    model = RoomHistory(limit)
    async with backplanes(redis_url, "a", history_limit=limit) as (a,):
        first = await admit(a, room, "a/first", "first")
        epoch = first.epoch
        model.append(first.replay[-1])
        for n, (kind, amount, epoch_choice) in enumerate(plan):
            if kind == "say":
                posts = [
                    Post(room, "a/first", said(room, "first", f"{n}.{i}")) for i in range(amount)
                ]
                for event_id, post in zip(await a.say_many(posts), posts, strict=True):
                    assert isinstance(event_id, int)
                    model.append(StoredEvent(event_id, scripts.with_id(post.line, event_id)))
                continue
            since = None if amount < 0 else amount
            client_epoch = [None, epoch, "another"][epoch_choice]
            name = f"m{n}"
            result = await a.join(
                room,
                f"a/{n}",
                name,
                join_line(room, name),
                since=since,
                client_epoch=client_epoch,
                replay_limit=replay_limit,
            )
            assert isinstance(result, Admitted)
            model.append(
                StoredEvent(result.join_id, protocol.join_event(result.join_id, room, name, TS))
            )
            expected = model.replay_for_join(
                since, replay_limit, same_epoch=client_epoch in (None, epoch)
            )
            assert result.replay == expected.events
            assert result.recovered == expected.recovered
            assert result.epoch == epoch
            assert result.join_id == model.last_id


async def test_a_flushed_server_starts_a_new_numbering(redis_url: str, redis_port: int) -> None:
    room = new_room()
    async with backplanes(redis_url, "a") as (a,):
        before = await admit(a, room, "a/1", "alice")
        await a.say_many([Post(room, "a/1", said(room, "alice", "one"))])
        assert command(redis_port, "FLUSHALL") == b"+OK"
        # The member is gone with everything else: its says are refused...
        assert await a.say_many([Post(room, "a/1", said(room, "alice", "two"))]) == [None]
        assert await a.epoch(room) is None
        # ...until it joins again, as id 1 of a new numbering.
        again = await a.join(
            room, "a/1", "alice", join_line(room, "alice"), since=2, client_epoch=before.epoch
        )
        assert isinstance(again, Admitted)
        assert again.join_id == 1
        assert again.epoch != before.epoch
        assert again.recovered is False
        assert [e.id for e in again.replay] == [1]
        assert await a.say_many([Post(room, "a/1", said(room, "alice", "three"))]) == [2]


async def test_a_full_subscription_channel_counts_its_overflow(
    redis_url: str, redis_port: int
) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", "b", channel_size=2) as (a, b):
        await admit(b, room, "b/1", "bob")
        await a.subscribe(room)
        await b.say_many([Post(room, "b/1", said(room, "bob", f"{i}")) for i in range(10)])
        await wait_for_events(a, 10)
        stats = a.statistics()
        assert (stats.received, stats.overflowed) == (2, 8)
        assert a.take_overflowed_rooms() == {room}
        assert a.take_overflowed_rooms() == set()
        queued = [scripts_id(line).id for _room, line in drain(a)]
        assert queued == [2, 3]
        # The repair: what overflowed is in the log.
        assert [e.id for e in await a.read_range(room, 3, 11)] == list(range(4, 12))


async def test_scripts_are_loaded_again_after_the_server_forgets_them(
    redis_url: str, redis_port: int
) -> None:
    room = new_room()
    async with backplanes(redis_url, "a") as (a,):
        await admit(a, room, "a/1", "alice")
        assert command(redis_port, "SCRIPT", "FLUSH") == b"+OK"
        posts = [Post(room, "a/1", said(room, "alice", f"{i}")) for i in range(3)]
        assert await a.say_many(posts) == [2, 3, 4]
        assert a.statistics().script_loads == 2


async def test_the_lease_is_renewed_and_its_loss_noticed(redis_url: str, redis_port: int) -> None:
    async with backplanes(redis_url, "a") as (a,):
        assert await a.renew_lease()
        ttl = int(command(redis_port, "PTTL", keys.lease("a")).lstrip(b":"))
        assert 0 < ttl <= 10_000
        assert await a.renew_lease()
        assert command(redis_port, "DEL", keys.lease("a")) == b":1"
        assert not await a.renew_lease()  # expired meanwhile: the members may be reaped
        stats = a.statistics()
        assert (stats.lease_renewals, stats.leases_lost, stats.lease_failures) == (3, 1, 0)


async def test_the_members_of_a_dead_node_leave_once_with_reason_timeout(
    redis_url: str, redis_port: int
) -> None:
    rooms = [new_room(), new_room()]
    async with backplanes(redis_url, "a", "b", "c") as (a, b, c):
        for bp in (a, b, c):
            await bp.renew_lease()
        await admit(a, rooms[0], "a/1", "alice")
        for n, room in enumerate(rooms):
            await admit(b, room, f"b/{n}.1", "bob")
            await admit(b, room, f"b/{n}.2", "bert")
        assert await a.dead_nodes(rooms) == set()
        assert await a.reap("b", TS) == []  # alive: nothing to do
        assert command(redis_port, "DEL", keys.lease("b")) == b":1"  # b dies
        assert await a.dead_nodes(rooms) == {"b"}
        assert await c.dead_nodes(rooms) == {"b"}
        reaped: list[int] = []

        async def reap(bp: Backplane) -> None:
            reaped.extend(await bp.reap("b", TS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reap, a)
            nursery.start_soon(reap, c)
        assert len(reaped) == 4
        assert await a.dead_nodes(rooms) == set()
        assert await a.reap("b", TS) == []
        for room in rooms:
            leaves = leaves_in(await stream(a, room))
            assert [leave["name"] for leave in leaves] == ["bert", "bob"]
            assert {leave["reason"] for leave in leaves} == {"timeout"}
        # Their names are free again; alice stayed.
        assert isinstance(
            await a.join(rooms[0], "a/2", "bob", join_line(rooms[0], "bob")), Admitted
        )
        assert await a.say_many([Post(rooms[0], "a/1", said(rooms[0], "alice", "hi"))]) == [7]


async def test_a_wrong_password_fails_in_one_line_without_showing_it(
    redis_url: str, redis_port: int
) -> None:
    url = redis_url.replace("redis://", "redis://nobody:Wr0ng-pass@")  # no such user
    with trio.fail_after(WAIT), pytest.raises(BackplaneError) as caught:
        async with open_backplane(url, "a"):
            pass
    assert "Wr0ng-pass" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_connecting_to_a_silent_server_can_be_cancelled(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    with trio.move_on_after(0.3) as scope:
        async with open_backplane(url, "a"):
            pytest.fail("connected to nothing")
    assert scope.cancelled_caught


# -- held places and exactly-once says ---------------------------------------


def said_with_ref(room: str, name: str, text: str, ref: str) -> bytes:
    return protocol.message_event(0, room, name, text, TS, ref=ref)


def test_a_moved_notice_is_told_from_typing() -> None:
    assert scripts.moved_token(b'{"type":"moved","token":"n-1/7"}') == "n-1/7"
    for line in (protocol.typing_event("r", "moved"), b'{"type":"moved","token":"x"', b""):
        assert scripts.moved_token(line) is None
    assert scripts.event_id_of(b'{"type":"moved","token":"n-1/7"}') is None


async def test_a_held_member_resumes_under_a_new_token_with_no_event(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", "b") as (a, b):
        await b.subscribe(room)
        first = await a.join(room, "a/1", "alice", join_line(room, "alice"), secret="s3cret")
        assert isinstance(first, Admitted)
        assert not first.resumed
        await admit(b, room, "b/1", "bob")
        await a.say_many([Post(room, "a/1", said(room, "alice", "hi"))])
        assert await a.hold(room, "a/1", LeaveReason.TIMEOUT)
        # Held: the name stays taken, without the secret or with a wrong one.
        for resume in (None, "wrong"):
            refused = await b.join(room, "b/2", "alice", join_line(room, "alice"), resume=resume)
            assert refused == NameTaken("alice")
        # A look-alike name with the right secret is not that member.
        look_alike = await b.join(room, "b/3", "Alice", join_line(room, "Alice"), resume="s3cret")
        assert look_alike == NameTaken("alice")
        resumed = await b.join(
            room, "b/4", "alice", join_line(room, "alice"), resume="s3cret", since=1
        )
        assert isinstance(resumed, Admitted)
        assert resumed.resumed
        assert (resumed.join_id, resumed.members, resumed.recovered) == (3, ["alice", "bob"], True)
        assert [e.id for e in resumed.replay] == [2, 3]
        assert [e.id for e in await stream(a, room)] == [1, 2, 3]  # no event at all
        # The old token is gone: its hold, say and leave do nothing.
        assert not await a.hold(room, "a/1", LeaveReason.TIMEOUT)
        assert await a.say_many([Post(room, "a/1", said(room, "alice", "x"))]) == [None]
        assert await a.leave(room, "a/1", "alice", leave_line(room, "alice")) is None
        assert await b.say_many([Post(room, "b/4", said(room, "alice", "back"))]) == [4]
        # The process holding the old token heard which one moved.
        await wait_for_events(b, 5)
        heard = [line for _room, line in drain(b)]
        assert b'{"type":"moved","token":"a/1"}' in heard
        # The secret moved along: the place can be taken back again.
        again = await a.join(room, "a/5", "alice", join_line(room, "alice"), resume="s3cret")
        assert isinstance(again, Admitted)
        assert again.resumed
        assert await a.leave(room, "a/5", "alice", leave_line(room, "alice")) == 5
        # Gone for good: the name is free, the old secret resumes nothing.
        fresh = await b.join(room, "b/6", "alice", join_line(room, "alice"), resume="s3cret")
        assert isinstance(fresh, Admitted)
        assert not fresh.resumed
        assert fresh.join_id == 6


async def test_a_resume_replay_follows_the_resume_rules(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a") as (a,):
        await a.join(room, "a/1", "alice", join_line(room, "alice"), secret="s")
        await a.say_many([Post(room, "a/1", said(room, "alice", f"{i}")) for i in range(5)])
        cases: list[tuple[int | None, str | None, int, list[int], bool | None]] = [
            # since, client epoch, replay limit -> replay ids, recovered
            (None, None, 2, [5, 6], None),
            (6, None, 2, [], True),  # a since at the last id: nothing missed
            (7, None, 2, [5, 6], False),  # beyond what exists: a lost history
            (3, "another", 2, [5, 6], False),
            (3, None, 0, [4, 5, 6], True),
            (None, None, 0, [], None),
        ]
        for n, (since, client_epoch, limit, ids, recovered) in enumerate(cases):
            reply = await a.join(
                room,
                f"a/{n + 2}",
                "alice",
                join_line(room, "alice"),
                resume="s",
                since=since,
                client_epoch=client_epoch,
                replay_limit=limit,
            )
            assert isinstance(reply, Admitted)
            assert reply.resumed
            assert ([e.id for e in reply.replay], reply.recovered) == (ids, recovered), n
            assert reply.join_id == 6


async def test_a_ref_is_stored_once_per_member(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", "b") as (a, b):
        await a.join(room, "a/1", "alice", join_line(room, "alice"), secret="s")
        await admit(b, room, "b/1", "bob")
        hi = said_with_ref(room, "alice", "hi", "r1")
        assert await a.say_many([Post(room, "a/1", hi, "r1")]) == [3]
        original = Resend(3, scripts.with_id(hi, 3))
        # Again, twice in one call, and from another process after a resume.
        again = await a.say_many([Post(room, "a/1", hi, "r1"), Post(room, "a/1", hi, "r1")])
        assert again == [original, original]
        await b.join(room, "b/2", "alice", join_line(room, "alice"), resume="s")
        assert await b.say_many([Post(room, "b/2", hi, "r1")]) == [original]
        # The same ref from another member, or a new one in one call: stored.
        bob = said_with_ref(room, "bob", "hi", "r1")
        two = said_with_ref(room, "alice", "two", "r2")
        replies = await b.say_many(
            [
                Post(room, "b/1", bob, "r1"),
                Post(room, "b/2", two, "r2"),
                Post(room, "b/2", two, "r2"),
            ]
        )
        assert replies == [4, 5, Resend(5, scripts.with_id(two, 5))]
        # No ref: never taken for a resend.
        plain = [Post(room, "b/2", said(room, "alice", "x"))] * 2
        assert await b.say_many(plain) == [6, 7]
        assert [e.id for e in await stream(a, room)] == list(range(1, 8))
        # A member who left and came back under the same name is another member.
        await b.leave(room, "b/2", "alice", leave_line(room, "alice"))
        await admit(a, room, "a/9", "alice")
        assert await a.say_many([Post(room, "a/9", hi, "r1")]) == [10]


async def test_refs_are_forgotten_once_their_event_is_out_of_the_log(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", history_limit=10) as (a,):
        await admit(a, room, "a/1", "alice")
        hi = said_with_ref(room, "alice", "hi", "r")
        assert await a.say_many([Post(room, "a/1", hi, "r")]) == [2]
        for k in range(2):  # refs are forgotten at the end of each call
            await a.say_many(
                [Post(room, "a/1", said(room, "alice", "x"), f"n{k}.{i}") for i in range(6)]
            )
        assert await a.say_many([Post(room, "a/1", hi, "r")]) == [15]
        remembered = await a._command("HLEN", keys.refs(room))
        assert 0 < remembered <= 11  # the last history-limit events' refs, about


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["say", "resume"]), st.integers(0, 1), st.integers(0, 3)),
        min_size=1,
        max_size=30,
    )
)
async def test_a_ref_resent_any_number_of_times_yields_one_event(
    redis_url: str, steps: list[tuple[str, int, int]]
) -> None:
    """Says with a few refs, sent again and again through either of two
    processes, the member resuming from one to the other in between: each
    ref is stored once, and every resend answers with that one event."""
    room = new_room()
    async with backplanes(redis_url, "a", "b") as nodes:
        tokens = itertools.count(2)
        token, where = "a/1", 0
        first = await nodes[0].join(room, token, "alice", join_line(room, "alice"), secret="s")
        assert isinstance(first, Admitted)
        made: dict[str, int] = {}
        for kind, node, ref_number in steps:
            if kind == "resume":
                token, where = f"{'ab'[node]}/{next(tokens)}", node
                reply = await nodes[node].join(
                    room, token, "alice", join_line(room, "alice"), resume="s"
                )
                assert isinstance(reply, Admitted)
                assert reply.resumed
                continue
            ref = f"r{ref_number}"
            line = said_with_ref(room, "alice", ref, ref)
            (result,) = await nodes[where].say_many([Post(room, token, line, ref)])
            if ref in made:
                assert result == Resend(made[ref], scripts.with_id(line, made[ref]))
            else:
                assert isinstance(result, int)
                made[ref] = result
        texts = [json.loads(e.line).get("ref") for e in await stream(nodes[0], room)]
        assert sorted(r for r in texts if r) == sorted(made)


async def test_a_held_member_of_a_dead_node_leaves_for_its_own_reason(
    redis_url: str, redis_port: int
) -> None:
    room = new_room()
    async with backplanes(redis_url, "live") as (live,):
        async with backplanes(redis_url, "dead") as (dead,):
            await admit(dead, room, "dead/1", "alice")
            await admit(dead, room, "dead/2", "bob")
            assert await dead.hold(room, "dead/1", LeaveReason.SHUTDOWN)
        await admit(live, room, "live/1", "carol")
        command(redis_port, "DEL", keys.lease("dead"))
        assert await live.dead_nodes([room]) == {"dead"}
        assert len(await live.reap("dead", TS)) == 2
        assert [(e["name"], e["reason"]) for e in leaves_in(await stream(live, room))] == [
            ("alice", "shutdown"),
            ("bob", "timeout"),
        ]
        assert command(redis_port, "HLEN", keys.held(room)) == b":0"


async def test_pages_of_the_log_read_back_from_any_point(redis_url: str) -> None:
    room = new_room()
    async with backplanes(redis_url, "a", history_limit=1000) as (a,):
        await admit(a, room, "a/1", "alice")
        await a.say_many([Post(room, "a/1", said(room, "alice", f"{i}")) for i in range(29)])
        log = await stream(a, room)  # ids 1..30
        assert await a.read_page(room, None, 10) == (log[20:], True)
        assert await a.read_page(room, 21, 10) == (log[10:20], True)
        assert await a.read_page(room, 11, 10) == (log[:10], False)
        assert await a.read_page(room, 5, 100) == (log[:4], False)
        assert await a.read_page(room, 1, 10) == ([], False)
        assert await a.read_page(room, 10**12, 3) == (log[27:], True)
        assert await a.read_page(new_room(), None, 10) == ([], False)
