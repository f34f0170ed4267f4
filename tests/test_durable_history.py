"""Durable history: real SQLite files, restarts, resume with `since`, retention."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import StartServer, server_starter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import TRIO_CHAT, clean_env, serving
from wsclient import RawClient

from trio_chat.core.history import RoomHistory, StoredEvent
from trio_chat.stores import sqlite as sqlite_store
from trio_chat.stores.sqlite import Lasting, PendingEvents, Report, SqliteHistoryStore


async def replay_of(client: RawClient, welcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The history replay that follows a welcome (it ends with our own join)."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["id"] != welcome["last_id"]:
        events.append(await client.next_event())
    return events


def stored_ids(path: Path, room: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT id FROM events WHERE room = ? ORDER BY id", (room,))
        return [row[0] for row in rows]


async def test_history_and_ids_survive_a_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "chat.db")
    first = await start_server(db=db, rate_limit=0)
    alice = await first.joined("alice")
    for text in ("one", "two", "three"):
        await alice.say(text)
    said = [await alice.next_event() for _ in range(3)]
    await first.stop()

    second = await start_server(db=db, rate_limit=0)
    bob = await second.client()
    welcome = await bob.hello("bob", since=0)
    assert welcome["recovered"] is True
    replay = await replay_of(bob, welcome)
    # alice's join and messages, her leave at shutdown, then bob's join: ids 1..6.
    assert [(e["id"], e["type"]) for e in replay] == [
        (1, "join"),
        (2, "message"),
        (3, "message"),
        (4, "message"),
        (5, "leave"),
        (6, "join"),
    ]
    assert replay[1:4] == said  # byte for byte the events clients saw live
    assert replay[4]["reason"] == "shutdown"
    await bob.say("four")
    assert (await bob.next_event())["id"] == 7  # numbering continues, never reused


async def test_the_epoch_outlives_a_restart_and_a_new_file_is_a_new_one(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    first = await start_server(db=str(db), rate_limit=0)
    alice = await first.client()
    epoch = (await alice.hello("alice"))["epoch"]
    assert isinstance(epoch, str)
    assert epoch
    await alice.say("one")
    await alice.next_event()
    await alice.next_event()
    await first.stop()

    second = await start_server(db=str(db), rate_limit=0)
    bob = await second.client()
    welcome = await bob.hello("bob", since=2, epoch=epoch)
    assert (welcome["epoch"], welcome["recovered"]) == (epoch, True)
    assert [e["type"] for e in await replay_of(bob, welcome)] == ["leave", "join"]
    await second.stop()

    db.unlink()  # the history is gone: numbering starts over in a new epoch
    third = await start_server(db=str(db), rate_limit=0)
    carol = await third.client()
    await (await third.joined("dave")).say("in the new epoch")
    welcome = await carol.hello("carol", since=1, epoch=epoch)
    # since=1 exists in the new numbering too, but belongs to the old one:
    # the normal replay, not "everything after 1".
    assert welcome["epoch"] != epoch
    assert welcome["recovered"] is False
    assert [e["id"] for e in await replay_of(carol, welcome)] == [1, 2, 3]


async def test_a_file_from_before_epochs_gets_one_and_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # a file as the first schema made it
        db.execute("CREATE TABLE rooms (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE events (room TEXT, id INTEGER, line BLOB, PRIMARY KEY (room, id))"
        )
        db.execute("INSERT INTO rooms VALUES ('r', 7)")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    store = await SqliteHistoryStore.open(str(path), 10)
    epoch = store.epoch
    assert (await store.load("r")).last_id == 7
    await store.aclose()
    again = await SqliteHistoryStore.open(str(path), 10)
    assert again.epoch == epoch
    await again.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # older servers still open it


async def test_a_room_is_read_back_after_it_emptied(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(db=str(tmp_path / "chat.db"), rate_limit=0)
    alice = await server.joined("alice", "quiet")
    await alice.say("before")
    await alice.next_event()
    await alice.aclose()
    carol = await server.joined("carol", "elsewhere")  # the server carries on meanwhile
    await carol.say("hi")
    await carol.next_event()
    bob = await server.client()
    welcome = await bob.hello("bob", "quiet", since=1)
    assert welcome["recovered"] is True
    assert [(e["type"], e.get("text")) for e in await replay_of(bob, welcome)] == [
        ("message", "before"),
        ("leave", None),
        ("join", None),
    ]


async def test_retention_keeps_history_limit_and_reports_what_was_lost(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "chat.db"
    server = await start_server(db=str(path), history_limit=5, rate_limit=0)
    alice = await server.joined("alice")
    for n in range(20):
        await alice.say(f"m{n}")
    for _ in range(20):
        await alice.next_event()
    await server.stop()
    assert stored_ids(path, "lobby") == [18, 19, 20, 21, 22]  # 20 messages, join, leave

    again = await start_server(db=str(path), history_limit=5, rate_limit=0)
    bob = await again.client()
    welcome = await bob.hello("bob", since=3)
    assert welcome["recovered"] is False
    assert [e["id"] for e in await replay_of(bob, welcome)] == [19, 20, 21, 22, 23]


async def test_many_rooms_keep_their_own_numbering(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "chat.db")
    server = await start_server(db=db, rate_limit=0)
    for n in range(30):
        client = await server.joined(f"user{n}", f"room{n}")
        for m in range(n % 4):
            await client.say(f"{n}.{m}")
            await client.next_event()
    await server.stop()
    again = await start_server(db=db, rate_limit=0)
    for n in range(30):
        client = await again.client()
        welcome = await client.hello("late", f"room{n}")
        # join, n % 4 messages, leave at shutdown, then this join.
        assert welcome["last_id"] == n % 4 + 3


async def test_since_beyond_what_was_stored_is_not_recovered(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(db=str(tmp_path / "chat.db"))
    client = await server.client()
    welcome = await client.hello("alice", since=99)
    assert (welcome["recovered"], welcome["last_id"]) == (False, 1)


# -- the store on its own --------------------------------------------------------


async def test_store_evicts_released_rooms_only_once_committed(tmp_path: Path) -> None:
    store = await SqliteHistoryStore.open(str(tmp_path / "h.db"), limit=3)
    try:
        window = await store.load("r")
        store.install("r", window)
        assert store.acquire("r") is window
        for n in range(1, 6):
            event = StoredEvent(n, f'{{"id":{n}}}'.encode())
            window.append(event)
            store.record("r", event)
        store.release("r")
        assert store.acquire("r") is window  # not committed yet: must stay
        store.release("r")
        await store.flush()
        assert store.acquire("r") is None  # committed and released: evicted
        reloaded = await store.load("r")
        assert reloaded.last_id == 5
        assert [e.id for e in reloaded.after(0)] == [3, 4, 5]
        assert store.statistics().committed == 5
    finally:
        await store.aclose()


@settings(max_examples=100, deadline=None)
@given(
    event_ids=st.sets(st.integers(min_value=1, max_value=30), max_size=20),
    lost_at_end=st.integers(min_value=0, max_value=2),
    limit=st.integers(min_value=1, max_value=8),
    since=st.integers(min_value=0, max_value=35),
)
async def test_load_returns_the_contiguous_newest_run_of_what_is_on_disk(
    event_ids: set[int], lost_at_end: int, limit: int, since: int
) -> None:
    """Rows with gaps (events dropped while writes failed) never replay wrongly."""
    recorded = max(event_ids, default=0) + lost_at_end
    store = await SqliteHistoryStore.open(":memory:", limit=limit)
    try:

        def fill(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO events (room, id, line) VALUES ('r', ?, ?)",
                [(i, f"event {i}".encode()) for i in event_ids],
            )
            db.execute("INSERT INTO rooms (name, last_id) VALUES ('r', ?)", (recorded,))

        await store._run(fill)
        window = await store.load("r")
    finally:
        await store.aclose()
    run: list[int] = []
    while len(run) < limit and recorded - len(run) in event_ids:
        run.insert(0, recorded - len(run))
    assert [e.id for e in window.after(0)] == run
    assert all(e.line == f"event {e.id}".encode() for e in window.after(0))
    assert window.last_id == recorded
    join = StoredEvent(recorded + 1, b"join")
    window.append(join)
    replay = window.replay_for_join(since, 50)
    if since <= recorded:
        missed = list(range(since + 1, recorded + 2))
        retained = [*run, join.id][-limit:]
        assert replay.recovered is ([e.id for e in replay.events] == missed)
        assert replay.recovered is (set(missed) <= set(retained))
    else:
        assert replay.recovered is False


async def limit_pages(store: SqliteHistoryStore, extra: int | None) -> None:
    """Let the store's file grow by `extra` pages at most (None: no limit).

    SQLite then fails writes with SQLITE_FULL, "database or disk is full",
    exactly as on a full disk.
    """

    def apply(db: sqlite3.Connection) -> None:
        if extra is None:
            db.execute("PRAGMA max_page_count = 4294967294")
        else:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages + extra}")

    await store._run(apply)


async def test_a_failed_write_raises_its_real_cause_and_keeps_the_events(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = await SqliteHistoryStore.open(str(path), limit=100)
    try:
        window = await store.load("r")
        store.install("r", window)
        await limit_pages(store, 0)
        for n in range(1, 41):
            event = StoredEvent(n, b"x" * 2000)
            window.append(event)
            store.record("r", event)
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            await store.flush()
        assert store.statistics().pending == 40
        await limit_pages(store, None)  # room again
        await store.flush()
        assert store.statistics().pending == 0
    finally:
        await store.aclose()
    assert stored_ids(path, "r") == list(range(1, 41))


# -- bookkeeping of failing writes ------------------------------------------------


def test_lasting_speaks_at_once_then_at_most_every_period() -> None:
    trouble = Lasting(60)
    assert trouble.end(0) is None  # nothing was going on
    said = [trouble.note(t) for t in (10, 11, 69, 70, 100, 131, 200)]
    assert said == [Report.FIRST, None, None, Report.AGAIN, None, Report.AGAIN, Report.AGAIN]
    assert trouble.lasted(250) == 240
    assert trouble.end(250) == 240
    assert trouble.note(251) is Report.FIRST  # a new trouble is told at once


def pending_cost(room: str, line: bytes) -> int:
    return len(room) + len(line) + sqlite_store._EVENT_OVERHEAD


# ("add", size), ("take", 0), ("done", 0) or ("fail", 0)
Op = tuple[str, int]


@settings(max_examples=300)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 300)),
            st.tuples(st.sampled_from(["take", "done", "fail"]), st.just(0)),
        ),
        max_size=60,
    )
)
def test_pending_events_stay_bounded_and_drop_only_the_oldest(ops: list[Op]) -> None:
    bound = 4000
    pending = PendingEvents(bound)
    model: list[tuple[str, int, bytes]] = []  # what waits, oldest first
    batch: list[tuple[str, int, bytes]] | None = None
    next_id = 0
    accounted: list[int] = []  # ids committed or dropped, in that order per kind
    dropped_ids: list[int] = []
    committed_ids: list[int] = []

    def drop(dropped: Sequence[tuple[str, int]]) -> None:
        for room, event_id in dropped:
            oldest = model.pop(0)  # always the oldest waiting event
            assert (room, event_id) == oldest[:2]
            dropped_ids.append(event_id)

    for op, size in ops:
        if op == "add":
            next_id += 1
            model.append(("r", next_id, b"x" * size))
            drop(pending.add("r", next_id, b"x" * size))
        elif op == "take" and batch is None:
            batch = pending.take()
            assert batch == model[: len(batch)]
            assert bool(batch) == bool(model)
            del model[: len(batch)]
        elif op == "done" and batch is not None:
            pending.done()
            committed_ids.extend(e[1] for e in batch)
            batch = None
        elif op == "fail" and batch is not None:
            model[:0] = batch
            drop(pending.put_back(batch))
            batch = None
        kept = model + (batch or [])
        assert pending.nbytes == sum(pending_cost(r, line) for r, _i, line in kept)
        assert len(pending) == len(kept)
        assert pending.waiting == len(model)
        assert pending.nbytes <= bound or not model  # only a batch being written exceeds
    accounted = sorted(committed_ids + dropped_ids + [e[1] for e in model + (batch or [])])
    assert accounted == list(range(1, next_id + 1))  # nothing lost unreported, nothing twice


def fill_window(store: SqliteHistoryStore, room: str, window: RoomHistory, count: int) -> None:
    for _ in range(count):
        event = StoredEvent(window.last_id + 1, b"x" * 1000)
        window.append(event)
        store.record(room, event)


async def test_ids_of_dropped_events_are_never_numbered_again(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = await SqliteHistoryStore.open(str(path), limit=100, max_pending_bytes=8000)
    try:
        window = await store.load("r")
        store.install("r", window)
        fill_window(store, "r", window, 3)
        await store.flush()
        await limit_pages(store, 0)
        fill_window(store, "r", window, 40)  # far past the bound: the oldest are dropped
        stats = store.statistics()
        assert stats.dropped > 0
        assert stats.pending == 40 - stats.dropped
        with pytest.raises(sqlite3.OperationalError):
            await store.flush()
        store.release("r")
        assert store.acquire("r") is window  # its newest events are still pending
        store.release("r")
        # The disk still says 3, but the room must go on from 43.
        await limit_pages(store, None)
        await store.flush()
        assert store.acquire("r") is None  # settled: evicted
        reloaded = await store.load("r")
        assert reloaded.last_id == 43
        assert [e.id for e in reloaded.after(0)] == list(range(44 - stats.pending, 44))
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT last_id FROM rooms").fetchall() == [(43,)]


async def test_emptied_rooms_waiting_on_a_failing_disk_are_bounded(tmp_path: Path) -> None:
    store = await SqliteHistoryStore.open(str(tmp_path / "h.db"), limit=100, unsaved_idle_rooms=3)
    try:
        await limit_pages(store, 0)
        for n in range(10):
            room = f"r{n}"
            window = await store.load(room)
            store.install(room, window)
            fill_window(store, room, window, 2)
            store.release(room)
            assert store.statistics().rooms_in_memory <= 3
        assert store.acquire("r9") is not None  # the most recently emptied stay
        assert store.acquire("r0") is None
        # An evicted room's numbering goes on after its unsaved events.
        assert (await store.load("r0")).last_id == 2
        await limit_pages(store, None)
        await store.flush()
        assert store.statistics().pending == 0
        assert [e.id for e in (await store.load("r1")).after(0)] == [1, 2]
    finally:
        await store.aclose()


async def test_an_unexpected_write_error_gets_one_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Jump only once Trio has been idle a little: the store's thread work
    # looks idle to Trio, and the clock must not race ahead of it. If a
    # thread is slow anyway, the ticker keeps the next deadline near.
    mock_clock.autojump_threshold = 0.005

    async def tick() -> None:
        while True:  # noqa: ASYNC110 (no event to wait for: a deadline is the point)
            await trio.sleep(1)

    def broken(*args: object) -> None:
        raise sqlite3.IntegrityError("injected")

    store = await SqliteHistoryStore.open(str(tmp_path / "h.db"), limit=10)
    monkeypatch.setattr(sqlite_store, "_write_batch", broken)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await nursery.start(store.serve_writer)
        window = await store.load("r")
        store.install("r", window)
        fill_window(store, "r", window, 1)
        start = trio.current_time()
        await trio.sleep(150)
        minutes = (trio.current_time() - start) / 60
        nursery.cancel_scope.cancel()
    await store.aclose()
    first, *reminders = [r for r in caplog.records if r.name == "trio_chat.stores.sqlite"]
    assert first.levelname == "ERROR"
    assert first.exc_info is not None  # a bug: where it happened matters
    assert 1 <= len(reminders) <= minutes  # once a minute, not once a second
    assert all(r.levelname == "WARNING" and not r.exc_info for r in reminders)
    assert all("injected" in r.getMessage() for r in [first, *reminders])


# -- any interleaving of events and reconnects ---------------------------------------

# ("say", speaker), ("drop", listener), ("back", listener) or ("restart", 0)
Step = tuple[str, int]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.integers(0, 2)),
        st.tuples(st.sampled_from(["drop", "back"]), st.integers(0, 2)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
async def test_reconnecting_with_since_recovers_exactly_what_was_missed(plan: list[Step]) -> None:
    """Three clients talk, drop, come back with `since`, across server restarts."""
    async with server_starter() as start_server:
        await _reconnect_scenario(start_server, plan)


async def _reconnect_scenario(start_server: StartServer, plan: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "chat.db")
        server = await start_server(db=db, rate_limit=0, history_limit=10_000)
        connected: dict[int, RawClient] = {}
        last_seen: dict[int, int] = {}
        log: dict[int, dict[str, Any]] = {}  # every stored event any client saw, by id
        newest = 0  # the id the room's last stored event must have by now

        def note(event: dict[str, Any]) -> None:
            assert log.setdefault(event["id"], event) == event  # same event for one id

        async def connect(n: int) -> None:
            nonlocal newest
            client = await server.client()
            welcome = await client.hello(f"c{n}", since=last_seen.get(n))
            newest += 1
            assert welcome["last_id"] == newest
            replay = await replay_of(client, welcome)
            if n in last_seen:
                assert welcome["recovered"] is True
                # Exactly what it missed: nothing twice, no gap.
                assert [e["id"] for e in replay] == list(range(last_seen[n] + 1, newest + 1))
            for event in replay:
                note(event)
            last_seen[n] = newest
            connected[n] = client

        async def settle() -> None:
            """Every connected client reads, in order, up to the newest id."""
            for n, client in connected.items():
                while last_seen[n] < newest:
                    event = await client.next_event()
                    if "id" in event:
                        assert event["id"] == last_seen[n] + 1
                        note(event)
                        last_seen[n] = event["id"]

        with trio.fail_after(60):
            for n in range(3):
                await connect(n)
                await settle()
            for action, n in plan:
                if action == "say" and n in connected:
                    await connected[n].say(f"from c{n}")
                    newest += 1
                elif action == "drop" and n in connected:
                    await connected.pop(n).aclose()
                    newest += 1  # its leave
                elif action == "back" and n not in connected:
                    await connect(n)
                elif action == "restart":
                    await server.stop()
                    newest += len(connected)  # a leave (shutdown) each
                    connected.clear()
                    server = await start_server(db=db, rate_limit=0, history_limit=10_000)
                await settle()
            await server.stop()
        assert sorted(log) == list(range(1, len(log) + 1))


# -- the program: bad files, flush on SIGTERM, SIGKILL mid-stream --------------------


def serve_with_db(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIO_CHAT, "serve", "--port", "0", "--db", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=False,
    )


def make_newer_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")


def make_foreign_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        (lambda p: p.write_bytes(b"this is not a database, just text " * 100), "not a database"),
        (make_newer_schema, "newer trio-chat"),
        (make_foreign_database, "not a trio-chat history database"),
        (lambda p: p.mkdir(), "unable to open"),
    ],
    ids=["garbage", "newer-schema", "foreign", "directory"],
)
def test_unusable_database_stops_serve_with_one_line(
    tmp_path: Path, prepare: Callable[[Path], object], expected: str
) -> None:
    path = tmp_path / "chat.db"
    prepare(path)
    result = serve_with_db(path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert expected in lines[0]


def test_missing_folder_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = serve_with_db(tmp_path / "no" / "such" / "folder" / "chat.db")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "unable to open" in result.stderr


async def test_a_second_server_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with serving("--db", str(path)) as (process, _port, _output):
        result = await trio.to_thread.run_sync(serve_with_db, path)
        assert result.returncode == 2
        assert "locked (is another trio-chat serving it?)" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


async def test_sigterm_flushes_every_event(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with serving("--db", str(path), "--rate-limit", "0") as (process, port, _output):
        client = await RawClient.connect(port)
        await client.hello("alice")
        assert (await client.next_event())["id"] == 1  # the replay: our own join
        for n in range(300):
            await client.say(f"m{n}")
        seen = [(await client.next_event())["id"] for _ in range(300)]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert (await client.closed()).code == 1001
            assert await process.wait() == 0
        await client.aclose()
    assert seen == list(range(2, 302))
    # Everything the client saw, then its leave (reason shutdown) as event 302.
    assert stored_ids(path, "lobby") == list(range(1, 303))
    with contextlib.closing(sqlite3.connect(path)) as db:
        (line,) = db.execute("SELECT line FROM events WHERE id = 302").fetchone()
    assert json.loads(line)["reason"] == "shutdown"


CRASH_WINDOW = 0.25  # seconds: what the README promises a hard crash loses at most


async def test_sigkill_mid_stream_loses_at_most_the_last_moments(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    seen: list[tuple[float, int]] = []  # (when the echo arrived, id)
    async with serving("--db", str(path), "--rate-limit", "0") as (process, port, _output):
        client = await RawClient.connect(port)
        await client.hello("alice")
        await client.next_event()
        with trio.move_on_after(1.0):  # talk for a second, as fast as echoes come
            for n in range(1_000_000):
                await client.say(f"m{n}")
                event = await client.next_event()
                seen.append((trio.current_time(), event["id"]))
        process.kill()
        killed_at = trio.current_time()
        await process.wait()
        await client.aclose()
    assert len(seen) > 50
    ids = stored_ids(path, "lobby")
    # The newest events, at most 1,000 (the default history limit), gap-free.
    assert ids == list(range(max(ids[-1] - 999, 1), ids[-1] + 1))
    with contextlib.closing(sqlite3.connect(path)) as db:
        (last_id,) = db.execute("SELECT last_id FROM rooms WHERE name = 'lobby'").fetchone()
    assert last_id == ids[-1]
    old_enough = [event_id for when, event_id in seen if when < killed_at - CRASH_WINDOW]
    assert old_enough, "the test must have seen events before the crash window"
    assert ids[-1] >= old_enough[-1], "an event older than the crash window was lost"

    # And the server starts again on that file, numbering after the last stored id.
    async with serving("--db", str(path)) as (process, port, _output):
        client = await RawClient.connect(port)
        welcome = await client.hello("bob")
        assert welcome["last_id"] == ids[-1] + 1
        process.send_signal(signal.SIGTERM)
        await client.closed()
        assert await process.wait() == 0
        await client.aclose()
