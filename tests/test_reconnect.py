"""Reconnects nobody notices, over real sockets: presence grace, `resume`,
exactly-once `say`, seats kept across a graceful restart, and `/api/rooms`.

The clock is trio's MockClock (autojump) wherever the grace period matters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer
from wsclient import RawClient, http_request, metric
from wsproto.events import CloseConnection

from trio_chat.server import app

GRACE = 15.0
Event = dict[str, Any]


async def joined(
    server: RunningServer, name: str, room: str = "lobby", **extra: Any
) -> tuple[RawClient, Event]:
    """A client that has joined, its welcome, and its replay read."""
    client = await server.client()
    welcome = await client.hello(name, room, **extra)
    if "recovered" not in welcome or welcome["last_id"] > extra.get("since", 0):
        while True:
            event = await client.next_event()
            if event["id"] == welcome["last_id"]:
                break
    return client, welcome


async def goodbye(client: RawClient, code: int) -> None:
    """Close with a close frame of `code`, then the TCP connection."""
    await client.send_raw(client.ws.send(CloseConnection(code)))
    await client.aclose()


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """MockClock time for a server on a history file: it jumps only after a
    real half second with every task waiting. The file is read and written
    in worker threads, and an autojump clock would run on while they work
    (time enough for pings to go unanswered and the pong wait to end)."""
    return trio.testing.MockClock(autojump_threshold=0.5)


async def quiet_for(client: RawClient, seconds: float) -> list[Event]:
    """Whatever `client` receives in the next `seconds` (MockClock time)."""
    got: list[Event] = []
    with trio.move_on_after(seconds):
        while True:
            got.append(await client.next_event())
    return got


async def test_a_dropped_member_comes_back_without_leave_or_join(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE, rate_limit=0)
    bob, _ = await joined(server, "bob")
    alice, welcome = await joined(server, "alice")
    assert isinstance(welcome["resume"], str)
    assert (await bob.next_event())["name"] == "alice"  # her join
    await alice.aclose()  # gone without a word: a network drop
    await bob.say("did you get this?")
    said = await bob.next_event()
    await trio.sleep(GRACE - 1)
    back = await server.client()
    resumed = await back.hello(
        "alice", since=welcome["last_id"], epoch=welcome["epoch"], resume=welcome["resume"]
    )
    assert resumed["members"] == ["bob", "alice"]
    assert (resumed["recovered"], resumed["resume"]) == (True, welcome["resume"])
    assert resumed["last_id"] == said["id"]
    assert await back.next_event() == said  # what she missed, nothing more
    # Bob saw nothing at all: no leave, no join.
    assert await quiet_for(bob, 2 * GRACE) == []
    await back.say("yes, I'm back")
    assert (await bob.next_event())["text"] == "yes, I'm back"


async def test_a_member_who_does_not_come_back_leaves_when_the_grace_ends(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE, ping_period=50, pong_wait=60)
    bob, _ = await joined(server, "bob")
    alice, welcome = await joined(server, "alice")
    await bob.next_event()
    dropped = trio.current_time()
    await alice.aclose()
    leave = await bob.next_event()
    assert (leave["type"], leave["name"], leave["reason"]) == ("leave", "alice", "quit")
    assert trio.current_time() - dropped == pytest.approx(GRACE, abs=0.1)
    # The secret is worth nothing now: a new seat, announced.
    again = await server.client()
    fresh = await again.hello("alice", resume=welcome["resume"])
    assert fresh["resume"] != welcome["resume"]
    join = await bob.next_event()
    assert (join["type"], join["name"]) == ("join", "alice")


async def test_a_held_name_is_refused_to_a_stranger(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE)
    alice, welcome = await joined(server, "alice")
    await alice.aclose()
    # No secret, a guessed one, or hers under a look-alike name: all refused.
    for extra in ({}, {"resume": "guessed"}, {"resume": welcome["resume"]}):
        stranger = await server.client()
        await stranger.send_json({"type": "hello", "name": "Alice", **extra})
        refusal = await stranger.next_event()
        assert (refusal["type"], refusal["code"]) == ("error", "name_taken")


async def test_a_timed_out_member_is_held_and_leaves_with_reason_timeout(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE, ping_period=5.0, pong_wait=6.0)
    bob, _ = await joined(server, "bob")
    client = await server.client(auto_pong=False)
    await client.hello("silent")
    start = trio.current_time()
    leave = await bob.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("silent", "timeout")
    assert trio.current_time() - start == pytest.approx(6.0 + GRACE, abs=0.1)


@pytest.mark.parametrize(("code", "held"), [(1000, False), (1001, True), (1005, False)])
async def test_a_goodbye_leaves_at_once_and_going_away_is_held(
    start_server: StartServer, autojump_clock: trio.testing.MockClock, code: int, held: bool
) -> None:
    """A close frame 1000, or one without a status (the browser's `close()`),
    is a goodbye; 1001 is a page going away (a reload, a closed tab): held."""
    server = await start_server(presence_grace=GRACE)
    bob, _ = await joined(server, "bob")
    alice, _ = await joined(server, "alice")
    await bob.next_event()
    start = trio.current_time()
    if code == 1005:
        await alice.send_raw(alice.ws.send(CloseConnection(1005)))  # sent without a status
        await alice.aclose()
    else:
        await goodbye(alice, code)
    leave = await bob.next_event()
    assert (leave["type"], leave["name"], leave["reason"]) == ("leave", "alice", "quit")
    waited = trio.current_time() - start
    assert waited == pytest.approx(GRACE if held else 0.0, abs=0.1)


async def test_a_resume_replaces_a_connection_that_is_still_open(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE)
    bob, _ = await joined(server, "bob")
    alice, welcome = await joined(server, "alice")
    await bob.next_event()
    phone = await server.client()  # the same person, on a new network
    await phone.hello("alice", since=welcome["last_id"], resume=welcome["resume"])
    closed = await alice.closed()
    assert (closed.code, closed.reason) == (1000, "replaced by a newer connection")
    await phone.say("from the phone")
    said = await bob.next_event()
    assert (said["name"], said["text"]) == ("alice", "from the phone")
    assert await quiet_for(bob, 2 * GRACE) == []  # no leave for the old connection


async def test_a_say_sent_twice_with_one_ref_is_stored_once(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE, rate_limit=0)
    bob, _ = await joined(server, "bob")
    alice, welcome = await joined(server, "alice")
    await bob.next_event()
    await alice.say("only once", ref="m-1")
    first = await alice.next_event()
    assert (await bob.next_event()) == first
    # The echo was lost with the connection: she sends it again on a new one.
    await alice.aclose()
    back = await server.client()
    await back.hello("alice", since=welcome["last_id"], resume=welcome["resume"])
    assert await back.next_event() == first  # in her replay already
    await back.say("only once", ref="m-1")
    await back.say("and this", ref="m-2")
    assert await back.next_event() == first  # the original again, same id
    second = await back.next_event()
    assert (second["id"], second["text"]) == (first["id"] + 1, "and this")
    assert await bob.next_event() == second  # bob saw "only once" once


async def test_seats_are_kept_across_a_graceful_restart(
    start_server: StartServer, tmp_path: Path, patient_clock: trio.testing.MockClock
) -> None:
    db = str(tmp_path / "chat.db")
    server = await start_server(presence_grace=GRACE, db=db, rate_limit=0)
    alice, a_welcome = await joined(server, "alice")
    bob, b_welcome = await joined(server, "bob")
    await alice.next_event()
    await alice.say("before the restart", ref="r-1")
    said = await alice.next_event()
    await bob.next_event()
    await server.stop()  # SIGTERM: everyone closed with 1001, history flushed
    restarted = await start_server(presence_grace=GRACE, db=db, rate_limit=0)
    back = await restarted.client()
    welcome = await back.hello(
        "alice", since=said["id"], epoch=a_welcome["epoch"], resume=a_welcome["resume"]
    )
    assert welcome["members"] == ["alice", "bob"]  # bob's place is kept too
    assert (welcome["recovered"], welcome["last_id"]) == (True, said["id"])
    await back.say("before the restart", ref="r-1")  # a resend across the restart
    assert await back.next_event() == said
    # Bob never comes back: he leaves when the grace ends, as at shutdown.
    leave = await back.next_event()
    assert (leave["type"], leave["name"], leave["reason"]) == ("leave", "bob", "shutdown")
    assert leave["id"] == said["id"] + 1  # no join or leave line before it
    taken = await restarted.client()
    await taken.send_json({"type": "hello", "name": "carol"})
    assert (await taken.next_event())["members"] == ["alice", "carol"]
    assert b_welcome["resume"] != a_welcome["resume"]


async def test_a_restart_without_grace_lets_the_kept_members_leave_at_once(
    start_server: StartServer, tmp_path: Path, patient_clock: trio.testing.MockClock
) -> None:
    db = str(tmp_path / "chat.db")
    server = await start_server(presence_grace=GRACE, db=db)
    await joined(server, "alice")
    await joined(server, "bob")
    assert await metric(server.port, "trio_chat_members") == 2
    await server.stop()
    restarted = await start_server(presence_grace=0.0, db=db)
    await trio.sleep(0.1)  # the kept places run out as the hub starts
    assert await metric(restarted.port, "trio_chat_held_members") == 0
    carol = await restarted.client()
    welcome = await carol.hello("carol", since=0)
    assert welcome["members"] == ["carol"]
    replay = [(e["type"], e["name"], e.get("reason")) for e in await quiet_for(carol, 1.0)]
    assert replay == [
        ("join", "alice", None),
        ("join", "bob", None),
        ("leave", "alice", "shutdown"),
        ("leave", "bob", "shutdown"),
        ("join", "carol", None),
    ]


async def test_held_members_are_counted_in_metrics(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(presence_grace=GRACE)
    alice, _ = await joined(server, "alice")
    await joined(server, "bob")
    await alice.aclose()
    await trio.sleep(1.0)
    assert await metric(server.port, "trio_chat_held_members") == 1
    assert await metric(server.port, "trio_chat_members") == 1
    await trio.sleep(GRACE)
    assert await metric(server.port, "trio_chat_held_members") == 0


async def test_api_rooms_lists_rooms_with_members_busiest_first(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server()
    for name, room in [("a", "big"), ("b", "big"), ("c", "small"), ("d", "zzz"), ("e", "aaa")]:
        await joined(server, name, room)
    monkeypatch.setattr(app, "ROOMS_LISTED", 3)
    response = await http_request(server.port, "/api/rooms")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {
        "rooms": [
            {"name": "big", "members": 2},
            {"name": "aaa", "members": 1},
            {"name": "small", "members": 1},
        ],
        "more": True,
    }
