"""Several `trio-chat serve` processes sharing their rooms through one real `redis-server`.

Each test starts its servers as child processes (`serve --backplane`) and
talks to them over real sockets, as users' clients do. What it checks is
what the protocol promises wherever a member is connected: one gap-free
order of ids per room, the same events for every member, a sender's messages
in the order it sent them, replay and resume on any process, the members of
a killed process leaving once, names unique under racing hellos, and what
clients see when Redis goes away, comes back (empty or not) or is flushed.

Waits poll for a condition under a generous deadline (`WAIT`), never a fixed
sleep. A server process costs about a second of CPU to start (the Redis
client's import), so each test starts its servers once and shares them
between its steps.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import wait_until
from processes import serving
from redis_server import RedisProcess, command
from wsclient import Closed, RawClient, http_request, metric

from trio_chat.backplane.redis import LEASE_TTL
from trio_chat.bench.metrics import HttpResponse
from trio_chat.core.auth import issue_token

Event = dict[str, Any]

WAIT = 20.0  # seconds any one step may take on a busy 2-core machine
SERVE_ARGS = ("--rate-limit", "0")  # senders burst; the limit is tested elsewhere
LEASE_PERIOD = 3.0  # the servers' lease renewal period, and so their reaper's


# -- servers and members --------------------------------------------------------


@dataclass
class Server:
    """A `trio-chat serve --backplane` child process."""

    process: trio.Process
    port: int
    output: list[bytes]  # its stderr so far

    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")


@dataclass
class Member:
    """A joined client; its reader task (`read`) records all it receives."""

    name: str
    room: str
    server: Server
    client: RawClient
    welcome: Event
    events: list[Event] = field(default_factory=list)  # after the welcome, replay first
    closed: Closed | None = None  # how the connection ended, once it has

    async def read(self) -> None:
        try:
            while True:
                self.events.append(await self.client.next_event())
        except Closed as closed:
            self.closed = closed
        except trio.ClosedResourceError:  # closed by the test (`quit`)
            self.closed = Closed(None, "closed by the test")

    async def say(self, text: str, ref: str | None = None) -> None:
        await self.client.say(text, **({} if ref is None else {"ref": ref}))

    async def quit(self) -> None:
        """Say goodbye: close 1000 (the server's leave reason: `quit`)."""
        await self.client.goodbye()

    async def drop(self) -> None:
        """Vanish without a close frame: the server holds the member's place."""
        await self.client.aclose()

    def stored(self) -> list[Event]:
        return [e for e in self.events if "id" in e]

    def ids(self) -> list[int]:
        return [e["id"] for e in self.stored()]

    def last_id(self) -> int:
        """The highest id received, as a client keeps it for `since`."""
        return max(self.ids(), default=0)

    def replay(self) -> list[Event]:
        """The welcome's replay: the stored events up to the own join."""
        own_join = self.welcome["last_id"]
        return [e for e in self.stored() if e["id"] <= own_join]

    def has_replay(self) -> bool:
        return self.last_id() >= int(self.welcome["last_id"])

    def of_type(self, kind: str, name: str | None = None) -> list[Event]:
        return [
            e for e in self.events if e["type"] == kind and (name is None or e["name"] == name)
        ]

    def texts(self, name: str | None = None) -> list[str]:
        return [e["text"] for e in self.of_type("message", name)]

    def saw(self, text: str) -> bool:
        return text in self.texts()

    def errors(self) -> list[Event]:
        return self.of_type("error")


@dataclass
class Cluster:
    """Servers on one backplane and their clients, in one test's nursery."""

    url: str
    nursery: trio.Nursery
    stack: AsyncExitStack
    servers: list[Server] = field(default_factory=list)
    clients: list[RawClient] = field(default_factory=list)

    async def start(self, count: int, url: str | None = None, *args: str) -> list[Server]:
        """Start `count` servers, one after the other (each is ready when returned)."""
        started = []
        for _ in range(count):
            process, port, output = await self.stack.enter_async_context(
                serving("--backplane", url or self.url, *SERVE_ARGS, *args)
            )
            started.append(Server(process, port, output))
        self.servers.extend(started)
        return started

    async def connect(self, server: Server) -> RawClient:
        with trio.fail_after(WAIT):
            client = await RawClient.connect(server.port)
        self.clients.append(client)
        return client

    async def join(self, server: Server, name: str, room: str, **hello: object) -> Member:
        """Connect, say hello (with `since`, `epoch`...) and start reading."""
        client = await self.connect(server)
        with trio.fail_after(WAIT):
            welcome = await client.hello(name, room, **hello)
        member = Member(name, room, server, client, welcome)
        self.nursery.start_soon(member.read)
        return member


@asynccontextmanager
async def open_cluster(url: str) -> AsyncIterator[Cluster]:
    """A `Cluster`: on exit its clients are closed and its servers killed."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        cluster = Cluster(url, nursery, stack)
        try:
            yield cluster
        finally:
            for client in cluster.clients:
                await client.aclose()
            for server in cluster.servers:
                if server.process.returncode is None:
                    server.process.kill()


async def until(what: str, done: Callable[[], bool], seconds: float = WAIT) -> None:
    """Poll `done` (state the reader tasks fill in) until it holds, at most `seconds`."""
    try:
        with trio.fail_after(seconds):
            await wait_until(done)
    except trio.TooSlowError:
        raise AssertionError(f"not within {seconds:g} s: {what}") from None


async def until_status(server: Server, path: str, status: int) -> HttpResponse:
    """GET `path` until it answers `status`; that response."""
    try:
        with trio.fail_after(WAIT):
            while True:
                response = await http_request(server.port, path)
                if response.status == status:
                    return response
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"GET {path} not {status} within {WAIT:g} s") from None


async def until_lease_found_lost(server: Server) -> None:
    """Wait until `server` renewed a lease that had lapsed: from then on it
    holds a lease again, and no reaper takes its members for dead."""
    try:
        with trio.fail_after(WAIT):
            while True:
                if await metric(server.port, "trio_chat_backplane_leases_lost_total") >= 1:
                    return
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"no lost lease renewed within {WAIT:g} s") from None


def saw_join(member: Member, names: list[str]) -> Callable[[], bool]:
    """Whether `member` has seen each of `names` join."""
    return lambda: all(member.of_type("join", name) for name in names)


def heard(member: Member, count: int) -> Callable[[], bool]:
    """Whether `member` has received `count` messages."""
    return lambda: len(member.texts()) >= count


def one_order(members: list[Member]) -> list[Event]:
    """Check that the members saw one room: each its own gap-free run of ids,
    the same event wherever two saw the same id, its own join where its
    welcome says. Returns the room's events as they saw them, in id order."""
    room: dict[int, Event] = {}
    for member in members:
        ids = member.ids()
        assert ids, f"{member.name} received no event"
        assert ids == list(range(ids[0], ids[0] + len(ids))), (member.name, ids)
        for event in member.stored():
            assert event["room"] == member.room
            assert room.setdefault(event["id"], event) == event, (member.name, event)
        own_join = room[member.welcome["last_id"]]
        assert (own_join["type"], own_join["name"]) == ("join", member.name)
    ids = sorted(room)
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    return [room[i] for i in ids]


# -- two and three processes -----------------------------------------------------


async def test_two_processes_share_members_and_one_numbering(redis_url: str) -> None:
    room = "lobby"
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2)
        alice = await cluster.join(a, "alice", room)
        assert (alice.welcome["members"], alice.welcome["last_id"]) == (["alice"], 1)
        bob = await cluster.join(b, "bob", room)
        assert sorted(bob.welcome["members"]) == ["alice", "bob"]
        assert bob.welcome["last_id"] == 2
        assert bob.welcome["epoch"] == alice.welcome["epoch"]
        await until("alice sees bob join", lambda: bool(alice.of_type("join", "bob")))
        assert alice.of_type("join", "bob")[0]["id"] == 2

        await alice.say("hi from a", ref="a-1")
        await until("bob hears alice", lambda: bob.saw("hi from a"))
        await bob.say("hi from b")
        await until("alice hears bob", lambda: alice.saw("hi from b"))
        (heard,) = bob.of_type("message", "alice")
        assert heard == alice.of_type("message", "alice")[0]  # same id, ts and ref
        assert (heard["id"], heard["ref"]) == (3, "a-1")

        carol = await cluster.join(a, "carol", room)
        assert sorted(carol.welcome["members"]) == ["alice", "bob", "carol"]
        await bob.quit()
        await until("bob's leave reaches a", lambda: bool(carol.of_type("leave", "bob")))
        await until("and alice", lambda: bool(alice.of_type("leave", "bob")))
        log = one_order([alice, bob, carol])
        assert [(e["type"], e["name"]) for e in log] == [
            ("join", "alice"),
            ("join", "bob"),
            ("message", "alice"),
            ("message", "bob"),
            ("join", "carol"),
            ("leave", "bob"),
        ]
        assert [e["id"] for e in log] == list(range(1, 7))
        assert log[-1]["reason"] == "quit"
        assert alice.ids() == list(range(1, 7))
        assert carol.replay() == log[:5]
        dave = await cluster.join(b, "dave", room)
        assert sorted(dave.welcome["members"]) == ["alice", "carol", "dave"]


SCHEDULES = range(4)  # seeds of random schedules, each in a room of its own


async def test_concurrent_senders_on_three_processes_see_one_order(redis_url: str) -> None:
    async with open_cluster(redis_url) as cluster:
        servers = await cluster.start(3)
        for seed in SCHEDULES:
            await run_schedule(cluster, servers, seed)


async def run_schedule(cluster: Cluster, servers: list[Server], seed: int) -> None:
    """Members on every process join at once, then send at once with random
    pauses; one more joins on a random process in the middle of it."""
    rng = random.Random(seed)
    room = f"schedule-{seed}"
    homes = {
        f"s{seed}-{index}-{n}": server
        for index, server in enumerate(servers)
        for n in range(rng.randint(1, 3))
    }
    names = list(homes)
    plan = {
        name: [rng.choice([0.0, 0.0, 0.001, 0.003]) for _ in range(rng.randint(0, 12))]
        for name in names
    }
    members: dict[str, Member] = {}
    sent: dict[str, list[str]] = {name: [] for name in names}

    async def join(name: str, delay: float) -> None:
        await trio.sleep(delay)
        members[name] = await cluster.join(homes[name], name, room)

    async def send(member: Member, pauses: list[float]) -> None:
        for n, pause in enumerate(pauses):
            text = f"{member.name}:{n}"
            await member.say(text, ref=f"{member.name}/{n}")
            sent[member.name].append(text)
            await trio.sleep(pause)  # 0: just a checkpoint

    async with trio.open_nursery() as joining:
        for name in names:
            joining.start_soon(join, name, rng.choice([0.0, 0.001, 0.005]))
    total = sum(len(pauses) for pauses in plan.values())
    late_server = rng.choice(servers)
    late_delay = rng.choice([0.0, 0.002, 0.01])
    late: list[Member] = []

    async def join_late() -> None:
        await trio.sleep(late_delay)
        late.append(await cluster.join(late_server, f"s{seed}-late", room))

    async with trio.open_nursery() as sending:
        for name, pauses in plan.items():
            sending.start_soon(send, members[name], pauses)
        sending.start_soon(join_late)
    everyone = [*members.values(), *late]

    def settled() -> bool:
        if not all(len(m.texts()) == total for m in members.values()):
            return False
        return all(m.last_id() == len(names) + 1 + total for m in everyone)

    await until(f"schedule {seed}: every member has every event", settled)
    log = one_order(everyone)
    assert [e["id"] for e in log] == list(range(1, len(names) + 2 + total)), seed
    for member in everyone:
        assert member.stored()[-1] == log[-1]  # nobody is missing the end
    for member in members.values():
        assert member.stored()[0] == log[0], "a replay from the room's first event"
        for name in names:  # each sender's messages in the order sent
            assert member.texts(name) == sent[name], (seed, member.name, name)
    for event in log:
        if event["type"] == "message":
            name, n = event["text"].split(":")
            assert event["ref"] == f"{name}/{n}"
    assert sorted(e["name"] for e in log if e["type"] == "join") == sorted(
        [*names, f"s{seed}-late"]
    )
    for member in everyone:  # nothing but the room's events and no error
        assert all("id" in e for e in member.events), member.events
        await member.quit()


# -- replay and resume across processes ---------------------------------------------


async def test_a_client_resumes_on_another_process(redis_url: str) -> None:
    room = "resume"
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2)
        watcher = await cluster.join(b, "watcher", room)
        alice = await cluster.join(a, "alice", room)
        await alice.say("before", ref="r0")
        await until("alice's message comes back", lambda: alice.saw("before"))
        since, epoch = alice.last_id(), alice.welcome["epoch"]
        await alice.quit()
        await until("alice's leave", lambda: bool(watcher.of_type("leave", "alice")))

        bob = await cluster.join(a, "bob", room)
        for n in range(3):
            await bob.say(f"missed {n}")
        await until("bob's messages", lambda: watcher.saw("missed 2"))

        back = await cluster.join(b, "alice", room, since=since, epoch=epoch)
        assert back.welcome["recovered"] is True
        assert back.welcome["epoch"] == epoch
        assert sorted(back.welcome["members"]) == ["alice", "bob", "watcher"]
        await until("alice's replay", back.has_replay)
        await until("the watcher sees her join", lambda: watcher.last_id() >= back.last_id())
        missed = [e for e in watcher.stored() if since < e["id"] <= back.welcome["last_id"]]
        assert back.replay() == missed
        assert [(e["type"], e["name"]) for e in missed] == [
            ("leave", "alice"),
            ("join", "bob"),
            *[("message", "bob")] * 3,
            ("join", "alice"),
        ]
        assert missed[0]["reason"] == "quit"
        assert missed[0]["id"] == since + 1

        # A `since` from another numbering (epoch) is not trusted.
        stranger = await cluster.join(a, "carol", room, since=since, epoch=f"x{epoch}")
        assert stranger.welcome["recovered"] is False
        assert stranger.welcome["epoch"] == epoch
        await until("carol's replay", stranger.has_replay)
        await until("the watcher sees her join", lambda: watcher.last_id() >= stranger.last_id())
        assert stranger.replay() == watcher.stored()[: stranger.welcome["last_id"]]
        assert stranger.replay()[0]["id"] == 1  # the whole room (under 50 events)

        # Both resumed clients take part in the same numbering, live.
        await back.say("I'm back")
        await until("everyone hears it", lambda: all(m.saw("I'm back") for m in (stranger, bob)))
        one_order([watcher, alice, bob, back, stranger])


# -- places held across processes ---------------------------------------------------


async def test_a_dropped_client_resumes_on_another_process_unnoticed(redis_url: str) -> None:
    """Alice's connection to a vanishes; her client comes back through b
    with its secret: nobody sees her leave or join, she misses nothing, and
    the message she sent twice (before and after) is stored once."""
    room = "held"
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2, None, "--presence-grace", "60")
        watcher = await cluster.join(b, "watcher", room)
        alice = await cluster.join(a, "alice", room)
        secret = alice.welcome["resume"]
        await alice.say("sent once", ref="r1")
        await until("alice's message comes back", lambda: alice.saw("sent once"))
        since, epoch = alice.last_id(), alice.welcome["epoch"]
        await alice.drop()
        await watcher.say("while she was away")
        taken = await cluster.connect(b)
        await taken.send_json({"type": "hello", "name": "alice", "room": room})
        refusal = await taken.next_event()  # held: the name is still hers
        assert (refusal["type"], refusal["code"]) == ("error", "name_taken")

        back = await cluster.join(b, "alice", room, since=since, epoch=epoch, resume=secret)
        assert back.welcome["resume"] == secret
        assert back.welcome["recovered"] is True
        assert sorted(back.welcome["members"]) == ["alice", "watcher"]
        await until("her replay", lambda: back.saw("while she was away"))
        await back.say("sent once", ref="r1")  # her outbox sends it again
        await back.say("back")
        await until("everyone hears her", lambda: watcher.saw("back") and back.saw("back"))
        assert watcher.texts("alice") == ["sent once", "back"]
        assert [e["id"] for e in back.of_type("message", "alice")] == [3, 5]  # 3: sent again
        assert not watcher.of_type("leave")
        assert len(watcher.of_type("join")) == 2
        assert one_order([watcher])[-1] == back.of_type("message")[-1]


async def test_a_restarted_process_members_resume_and_the_others_leave_in_time(
    redis_url: str,
) -> None:
    """Server a stops gracefully (SIGTERM): its members are held for the
    grace period. One comes back through b, unnoticed; the other never
    does, and leaves (reason `shutdown`) once the grace period is over."""
    room = "restart"
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2, None, "--presence-grace", "2")
        watcher = await cluster.join(b, "watcher", room)
        alice = await cluster.join(a, "alice", room)
        carol = await cluster.join(a, "carol", room)
        await until("the watcher sees them", saw_join(watcher, ["alice", "carol"]))
        a.process.terminate()
        await until("a closes its clients", lambda: None not in (alice.closed, carol.closed))
        assert alice.closed is not None
        assert alice.closed.code == 1001
        back = await cluster.join(
            b,
            "alice",
            room,
            since=alice.last_id(),
            epoch=alice.welcome["epoch"],
            resume=alice.welcome["resume"],
        )
        assert back.welcome["recovered"] is True
        await until("carol leaves", lambda: bool(watcher.of_type("leave", "carol")))
        (leave,) = watcher.of_type("leave")
        assert (leave["name"], leave["reason"]) == ("carol", "shutdown")
        await until("alice hears it too", lambda: bool(back.of_type("leave", "carol")))
        assert len(watcher.of_type("join")) == 3  # watcher, alice, carol: once each
        assert back.stored() == one_order([watcher])[back.ids()[0] - 1 :]


# -- token mode -----------------------------------------------------------------


async def test_token_mode_holds_on_every_process(redis_url: str, tmp_path: Path) -> None:
    """The token's checks run before a hello reaches the shared hub: with a
    backplane as without, only token holders join, under the token's name
    and into the rooms it grants, whichever process they reach."""
    secret = b"a shared secret of at least thirty-two bytes"
    key = tmp_path / "secret"
    key.write_bytes(secret)
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2, None, "--auth-secret-file", str(key))
        now = time.time()
        alice = issue_token(secret, "alice", now=now, ttl=3600, rooms=["ops-*"])
        on_a = await cluster.join(a, "alice", "ops-1", token=alice)
        assert on_a.welcome["name"] == "alice"
        refusals = [
            ({"room": "ops-1"}, "no token"),
            ({"room": "ops-1", "token": alice + "x"}, "bad signature"),
            ({"room": "lobby", "token": alice}, "room not granted"),
            ({"room": "ops-1", "token": alice, "name": "mallory"}, "another name"),
        ]
        for hello, why in refusals:
            client = await cluster.connect(b)
            await client.send_json({"type": "hello", **hello})
            error = await client.next_event()
            assert (error["type"], error["code"]) == ("error", "unauthorized"), why
            assert (await client.closed()).code == 1008, why
        # The same token on the other process: the name is taken there too.
        taken = await cluster.connect(b)
        await taken.send_json({"type": "hello", "room": "ops-1", "token": alice})
        assert (await taken.next_event())["code"] == "name_taken"
        bob = issue_token(secret, "bob", now=now, ttl=3600)
        on_b = await cluster.join(b, "bob", "ops-1", token=bob)
        assert sorted(on_b.welcome["members"]) == ["alice", "bob"]
        await on_b.say("hello from b")
        await until("alice hears bob", lambda: on_a.saw("hello from b"))


# -- a process that dies -----------------------------------------------------------


async def test_the_members_of_a_killed_process_leave_once_with_reason_timeout(
    redis_url: str,
) -> None:
    room, other = "doomed", "doomed-too"
    async with open_cluster(redis_url) as cluster:
        a, b, c = await cluster.start(3)
        on_b = await cluster.join(b, "on-b", room)
        on_c = await cluster.join(c, "on-c", room)
        other_b = await cluster.join(b, "other-b", other)
        victims = [await cluster.join(a, name, room) for name in ("v1", "v2")]
        victims.append(await cluster.join(a, "v3", other))
        watchers = [(on_b, ["v1", "v2"]), (on_c, ["v1", "v2"]), (other_b, ["v3"])]
        for watcher, names in watchers:
            await until(f"{watcher.name} sees the victims join", saw_join(watcher, names))

        a.process.kill()  # SIGKILL: no leave, no goodbye
        killed = trio.current_time()

        def all_gone() -> bool:
            return all(w.of_type("leave", name) for w, names in watchers for name in names)

        await until("every victim leaves", all_gone, seconds=20)
        took = trio.current_time() - killed
        assert 10 - LEASE_PERIOD <= took <= 20  # not before its lease could lapse
        assert all(v.closed is not None and v.closed.code is None for v in victims)

        # A duplicate would come from a second reaper round: let two pass,
        # then mark the end of what we look at with a message.
        await trio.sleep(2 * LEASE_PERIOD)
        await on_b.say("after")
        await other_b.say("after")
        await until("the marks", lambda: all(w.saw("after") for w, _ in watchers))
        for watcher, names in watchers:
            leaves = watcher.of_type("leave")
            assert sorted(e["name"] for e in leaves) == names, leaves
            assert {e["reason"] for e in leaves} == {"timeout"}
        assert on_b.of_type("leave") == on_c.of_type("leave")
        one_order([on_b, on_c])
        one_order([other_b])

        # The names are free again; the members lists know who is left.
        again = await cluster.join(c, "v1", room)
        assert sorted(again.welcome["members"]) == ["on-b", "on-c", "v1"]
        await until("b sees v1 come back", lambda: len(on_b.of_type("join", "v1")) == 2)


# -- unique names ------------------------------------------------------------------

RACES = 30


async def race_hellos(clients: list[RawClient], names: list[str], room: str) -> list[Event]:
    """Each client says hello with its name at the same time; their answers."""
    answers: dict[int, Event] = {}

    async def hello(side: int) -> None:
        await clients[side].send_json({"type": "hello", "name": names[side], "room": room})
        answers[side] = await clients[side].next_event()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as race:
            for side in range(len(clients)):
                race.start_soon(hello, side)
    return [answers[side] for side in range(len(clients))]


async def test_racing_hellos_for_one_name_on_two_processes_admit_one(redis_url: str) -> None:
    room = "race"
    async with open_cluster(redis_url) as cluster:
        a, b = await cluster.start(2)
        winners: list[str] = []
        for n in range(RACES):
            name = f"racer{n}"
            rival = name if n % 2 else name.upper()  # the same, or a look-alike
            clients = [await cluster.connect(a), await cluster.connect(b)]
            answers = await race_hellos(clients, [name, rival], room)
            kinds = [answer["type"] for answer in answers]
            assert sorted(kinds) == ["error", "welcome"], answers
            winner = kinds.index("welcome")
            loser = answers[1 - winner]
            assert loser["code"] == "name_taken", loser
            winners.append(answers[winner]["name"])
            await clients[1 - winner].aclose()
        checker = await cluster.join(a, "checker", room)
        assert sorted(checker.welcome["members"]) == sorted([*winners, "checker"])
        await until("the replay", checker.has_replay)
        joins = [e["name"] for e in checker.stored() if e["type"] == "join"]
        assert joins[-RACES - 1 :] == [*winners, "checker"]  # the replay holds the last 50


# -- Redis going away ------------------------------------------------------------------


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A `redis-server` of this test's own, without persistence."""
    redis = RedisProcess(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A `redis-server` of this test's own that writes every change to its
    append-only file before answering, so a restart keeps all of it."""
    redis = RedisProcess(tmp_path, persistent=True)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


async def chatting_pair(cluster: Cluster, room: str) -> tuple[Member, Member]:
    """Alice on the first server, Bob on the second, having said hello."""
    a, b = cluster.servers
    alice = await cluster.join(a, "alice", room)
    bob = await cluster.join(b, "bob", room)
    await alice.say("hello bob")
    await bob.say("hello alice")
    for member in (alice, bob):
        await until(f"{member.name} hears both", heard(member, 2))
    return alice, bob


async def check_unavailable(cluster: Cluster, alice: Member, bob: Member) -> None:
    """Redis is down: connections stay, a say is refused, a hello closed (1013),
    /readyz 503 with the reason, /healthz 200; on both processes at once."""
    async with trio.open_nursery() as checks:
        for member in (alice, bob):
            checks.start_soon(check_refused, cluster, member)
    assert (alice.closed, bob.closed) == (None, None)
    for member in (alice, bob):
        assert not any(text.startswith("into the void") for text in member.texts())


async def check_refused(cluster: Cluster, member: Member) -> None:
    """`member`'s say, and a newcomer's hello on its server, are refused."""
    ref = f"lost-{member.name}"
    await member.say(f"into the void from {member.name}", ref=ref)
    await until(f"{member.name}'s say refused", lambda: bool(member.errors()))
    assert [(e["code"], e.get("ref")) for e in member.errors()] == [("unavailable", ref)]
    unready = await until_status(member.server, "/readyz", 503)
    body = json.loads(unready.body)
    assert body["status"] == "unready"
    assert "backplane" in body["reason"]
    healthy = await http_request(member.server.port, "/healthz")
    assert healthy.status == 200
    newcomer = await cluster.connect(member.server)
    await newcomer.send_json({"type": "hello", "name": "newcomer", "room": member.room})
    with trio.fail_after(WAIT):
        closed = await newcomer.closed()
    assert closed.code == 1013


async def reconnect(cluster: Cluster, member: Member, server: Server) -> Member:
    """The same client again, on `server`, with what it kept: `since` and `epoch`."""
    return await cluster.join(
        server, member.name, member.room, since=member.last_id(), epoch=member.welcome["epoch"]
    )


async def check_started_over(cluster: Cluster, alice: Member, bob: Member, what: str) -> None:
    """The backplane lost the room: both members are closed with 1012, come
    back (each on the other process) to a new numbering, and chat again."""
    a, b = cluster.servers
    await until(f"{what}: alice and bob closed", lambda: bool(alice.closed and bob.closed))
    assert alice.closed is not None
    assert bob.closed is not None
    assert (alice.closed.code, bob.closed.code) == (1012, 1012)
    alice2 = await reconnect(cluster, alice, b)
    bob2 = await reconnect(cluster, bob, a)
    for old, new in ((alice, alice2), (bob, bob2)):
        assert new.welcome["recovered"] is False
        assert new.welcome["epoch"] != old.welcome["epoch"]
    assert alice2.welcome["last_id"] == 1  # the numbering starts over
    assert sorted(bob2.welcome["members"]) == ["alice", "bob"]
    await alice2.say("again")
    await until("bob hears alice again", lambda: bob2.saw("again"))
    log = one_order([alice2, bob2])
    assert [(e["id"], e["type"], e["name"]) for e in log] == [
        (1, "join", "alice"),
        (2, "join", "bob"),
        (3, "message", "alice"),
    ]


async def test_redis_restarted_empty_closes_members_with_1012(
    redis_process: RedisProcess,
) -> None:
    async with open_cluster(redis_process.url) as cluster:
        await cluster.start(2)
        alice, bob = await chatting_pair(cluster, "outage")
        await trio.to_thread.run_sync(redis_process.kill)
        await check_unavailable(cluster, alice, bob)

        await trio.to_thread.run_sync(redis_process.start)  # persistence off: empty
        for server in cluster.servers:
            await until_status(server, "/readyz", 200)
        await check_started_over(cluster, alice, bob, "after an empty restart")


async def test_flushall_closes_members_with_1012(redis_url: str, redis_port: int) -> None:
    async with open_cluster(redis_url) as cluster:
        await cluster.start(2)
        alice, bob = await chatting_pair(cluster, "flushed")
        assert command(redis_port, "FLUSHALL") == b"+OK"
        # Noticed at the next lease renewal (every 3 s): well within 15 s.
        await check_started_over(cluster, alice, bob, "after FLUSHALL")
        for server in cluster.servers:
            ready = await http_request(server.port, "/readyz")
            assert (ready.status, json.loads(ready.body)) == (200, {"status": "ready"})


async def test_redis_restarted_with_its_data_loses_nothing(
    persistent_redis: RedisProcess,
) -> None:
    async with open_cluster(persistent_redis.url) as cluster:
        a, b = await cluster.start(2)
        alice, bob = await chatting_pair(cluster, "persisted")
        epoch = alice.welcome["epoch"]
        sent: dict[str, list[str]] = {"alice": [], "bob": []}
        stop = trio.Event()

        async def keep_saying(member: Member) -> None:
            n = 0
            while not stop.is_set():
                text = f"{member.name}:{n}"
                await member.say(text, ref=text)
                sent[member.name].append(text)
                n += 1
                await trio.sleep(0.02)  # a lively room, not a flood

        async with trio.open_nursery() as talking:
            talking.start_soon(keep_saying, alice)
            talking.start_soon(keep_saying, bob)
            await until("some talk", lambda: len(bob.texts("alice")) >= 5)
            said = {name: len(texts) for name, texts in sent.items()}
            await trio.to_thread.run_sync(persistent_redis.kill)
            # Talk on into the outage, and bring Redis back well before a
            # lease (renewed every 3 s, lasting 10 s) can lapse.
            await until(
                "talk into the outage", lambda: all(len(sent[n]) >= said[n] + 10 for n in said)
            )
            await trio.to_thread.run_sync(persistent_redis.start)
            for server in (a, b):
                await until_status(server, "/readyz", 200)
            marks = {m.name: len(m.texts(m.name)) for m in (alice, bob)}
            await until(
                "talk after the restart",
                lambda: all(len(m.texts(m.name)) >= marks[m.name] + 5 for m in (alice, bob)),
            )
            stop.set()

        def refused() -> set[str]:
            return {e["ref"] for m in (alice, bob) for e in m.errors()}

        def accounted() -> bool:
            return all(
                set(texts) - refused() <= set(m.texts(name))
                for m in (alice, bob)
                for name, texts in sent.items()
            )

        await until("every message heard by both, or refused", accounted)
        assert (alice.closed, bob.closed) == (None, None)
        log = one_order([alice, bob])
        assert log[0]["id"] == 1  # the same numbering throughout
        assert {e["code"] for m in (alice, bob) for e in m.errors()} <= {"unavailable"}
        for member in (alice, bob):
            for name, texts in sent.items():
                heard = [t for t in member.texts(name) if t.startswith(f"{name}:")]
                # Each text once, in the order sent; none lost unless refused.
                assert heard == [t for t in texts if t in heard], (member.name, name)
                assert set(texts) - set(heard) <= refused(), (member.name, name)
        # The whole conversation is still there, in the same numbering.
        newcomer = await cluster.join(a, "carol", "persisted", since=0, epoch=epoch)
        assert newcomer.welcome["recovered"] is True
        assert newcomer.welcome["epoch"] == epoch
        await until("carol's replay", newcomer.has_replay)
        assert newcomer.replay()[:-1] == log  # what alice and bob saw, said before carol came


async def test_redis_back_with_its_data_after_the_leases_lapsed(
    persistent_redis: RedisProcess,
) -> None:
    """An outage longer than a lease: each process may reap the other's
    members once Redis is back. A reaped member is closed with 1012, never
    kept as a ghost whose says vanish; it resumes where it was (same epoch,
    `recovered: true`), and everyone chats again in one numbering."""
    room = "lapsed"
    async with open_cluster(persistent_redis.url) as cluster:
        a, b = await cluster.start(2)
        alice, bob = await chatting_pair(cluster, room)
        carol = await cluster.join(a, "carol", room)
        epoch = alice.welcome["epoch"]
        await until("carol's join reaches bob", saw_join(bob, ["carol"]))
        await trio.to_thread.run_sync(persistent_redis.kill)
        killed = trio.current_time()
        await check_unavailable(cluster, alice, bob)
        # The outage outlasts both leases (renewed every 3 s, lasting 10 s):
        # its length is what this test is about, not a wait for something.
        await trio.sleep_until(killed + LEASE_TTL + 1)
        await trio.to_thread.run_sync(persistent_redis.start)
        for server in (a, b):
            await until_status(server, "/readyz", 200)
            await until_lease_found_lost(server)

        members = [alice, bob, carol]
        for member in members:
            if member.closed is None:
                await member.say(f"still {member.name}", ref=f"still-{member.name}")

        def settled(member: Member) -> bool:
            """Closed, or heard by every member still connected."""
            if member.closed is not None:
                return True
            return all(m.saw(f"still {member.name}") for m in members if m.closed is None)

        await until("each member is heard or closed", lambda: all(map(settled, members)))
        again: list[Member] = []
        for member in members:
            if member.closed is None:
                again.append(member)
                continue
            assert member.closed.code == 1012, (member.name, member.closed)
            other = b if member.server is a else a
            back = await reconnect(cluster, member, other)
            assert back.welcome["recovered"] is True, member.name
            assert back.welcome["epoch"] == epoch
            await until(f"{member.name}'s replay", back.has_replay)
            assert back.replay()[0]["id"] == member.last_id() + 1
            again.append(back)
        for member in again:
            await member.say(f"final {member.name}")
        await until(
            "everyone hears everyone",
            lambda: all(m.saw(f"final {n.name}") for m in again for n in again),
        )
        one_order(again)
        watcher = await cluster.join(b, "watcher", room, since=0, epoch=epoch)
        assert watcher.welcome["recovered"] is True
        await until("the watcher's replay", watcher.has_replay)
        log = one_order([watcher])
        assert log[0]["id"] == 1
        reaped = {e["name"] for e in log if e["type"] == "leave"}
        closed = {m.name for m in members if m.closed is not None}
        assert reaped == closed, log
        assert {e["reason"] for e in log if e["type"] == "leave"} <= {"timeout"}
