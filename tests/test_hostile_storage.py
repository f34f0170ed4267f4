"""The history store under hostile conditions, over real sockets.

One regression test (at least) per finding: a full disk, the history file
deleted or replaced while serving, and rooms created without bound with
`--db :memory:`. The disk really fails (SQLite's `max_page_count` gives
SQLITE_FULL, as a full disk does); nothing is mocked.

Periodic behaviour runs on a mock clock that jumps to the next deadline once
Trio has been idle for a few real milliseconds: not at once, because the
store's work in a worker thread looks idle to Trio, and a clock jumping
during it would race ahead of the store. If a thread is slow anyway, a
ticker keeps the next deadline within a second, and the assertions count in
virtual time, so an extra jump never fails a test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RunningServer, StartServer, wait_until
from processes import serving
from test_durable_history import limit_pages, replay_of
from wsclient import RawClient, http_request

from trio_chat.config import Settings
from trio_chat.core.history import HistoryStore, MemoryHistoryStore
from trio_chat.server.app import serve_chat
from trio_chat.stores.sqlite import SqliteHistoryStore

# Timers that must not fire while the clock jumps: only the store's matter here.
QUIET: dict[str, Any] = {"ping_period": 3600.0, "pong_wait": 3601.0, "handshake_timeout": 3600.0}


@asynccontextmanager
async def serving_store(
    store: HistoryStore, db: str, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """The server on `store` (which it closes), in a nursery of its own."""
    base = Settings(host="127.0.0.1", port=0, db=db, rate_limit=0, presence_grace=0.0, **QUIET)
    settings = dataclasses.replace(base, **overrides)
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        try:
            await serve_chat(settings, shutdown, store=store, task_status=task_status)
        finally:
            stopped.set()

    async def tick() -> None:
        while True:  # noqa: ASYNC110 (no event to wait for: a deadline is the point)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        server = RunningServer(await nursery.start(run), settings, shutdown, stopped)
        try:
            yield server
            await server.stop()
        finally:
            for client in server.clients:
                await client.aclose()
            nursery.cancel_scope.cancel()


@pytest.fixture
def clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    mock_clock.autojump_threshold = 0.005
    return mock_clock


async def until(condition: Callable[[], bool]) -> None:
    await wait_until(condition, 0.1)  # the store has no event for this: poll it


async def readiness(port: int) -> tuple[int, str | None]:
    """`/readyz`: its status and, when unready, the reason it gives."""
    response = await http_request(port, "/readyz")
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.body)
    assert body["status"] == ("ready" if response.status == 200 else "unready")
    return response.status, body.get("reason")


def store_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_chat.stores.sqlite"]


# -- a full disk -------------------------------------------------------------------

BOUND = 32 * 1024  # bytes of unsaved events the store may keep in these tests


async def test_a_full_disk_is_logged_once_bounded_in_memory_and_survived(
    start_server: StartServer,
    tmp_path: Path,
    clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "chat.db"
    store = await SqliteHistoryStore.open(str(path), limit=1000, max_pending_bytes=BOUND)
    seen: dict[int, dict[str, Any]] = {}
    with trio.fail_after(3600):
        async with serving_store(store, str(path)) as server:
            alice = await server.joined("alice")  # event 1
            await alice.say("before the disk filled")
            seen[2] = await alice.next_event()
            await until(lambda: store.statistics().pending == 0)
            assert await readiness(server.port) == (200, None)

            await limit_pages(store, 0)  # the disk is full from now on
            full_since = trio.current_time()
            for n in range(60):  # about twice the bound
                await alice.say(f"{n} " + "x" * 1000)
                event = await alice.next_event()  # the chat goes on
                seen[event["id"]] = event
                assert store.statistics().pending_bytes <= BOUND
            await trio.sleep(130)  # minutes of a full disk
            status, reason = await readiness(server.port)
            assert status == 503
            assert reason is not None
            assert "cannot be written" in reason
            assert "disk is full" in reason
            stats = store.statistics()
            assert 0 < stats.pending_bytes <= BOUND
            assert stats.dropped > 0

            await limit_pages(store, None)  # room again
            await until(lambda: store.statistics().pending == 0)
            assert await readiness(server.port) == (200, None)
            minutes = (trio.current_time() - full_since) / 60
            await alice.say("after")
            seen[63] = await alice.next_event()
            await until(lambda: store.statistics().pending == 0)

    records = store_records(caplog)
    text = "\n".join(r.getMessage() for r in records)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, text
    assert "database or disk is full" in errors[0].getMessage()
    assert "cannot rollback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a full disk"
    reminders = [r for r in records if "still cannot be written" in r.getMessage()]
    # Once a minute, not once a second. (At least one: the writer's attempts
    # run in a thread, and on a loaded machine the mock clock can run far
    # ahead while one of them is in flight, so the count of minutes between
    # attempts is not exact.)
    assert 1 <= len(reminders) <= minutes + 1, text
    assert all(r.levelno == logging.WARNING for r in reminders)
    assert "dropped the oldest" in text
    assert any(r.levelno == logging.INFO and "again" in r.getMessage() for r in records), text

    # The file has a gap where events were dropped; a resume from before it
    # is not recovered, and nothing is ever replayed wrongly.
    again = await start_server(db=str(path), **QUIET)
    bob = await again.client()
    welcome = await bob.hello("bob", since=2)
    assert welcome["recovered"] is False
    assert welcome["last_id"] == 65  # after alice's leave: ids are never reused
    replay = await replay_of(bob, welcome)
    ids = [e["id"] for e in replay]
    assert ids == list(range(ids[0], 66))
    assert ids[0] > 3  # the oldest unsaved events were dropped
    assert all(seen[e["id"]] == e for e in replay if e["id"] in seen)
    carol = await again.client()
    welcome = await carol.hello("carol", since=ids[0] - 1)
    assert welcome["recovered"] is True


# -- the history file deleted or replaced while serving --------------------------------


def restored(caplog: pytest.LogCaptureFixture) -> bool:
    return any("restored the history database" in r.getMessage() for r in store_records(caplog))


async def say_and_see(client: RawClient, text: str) -> dict[str, Any]:
    await client.say(text)
    event = await client.next_event()
    assert event["text"] == text
    return event


async def resume_from_start(server: RunningServer) -> list[dict[str, Any]]:
    """A client resuming from event 1; asserts everything after it is there."""
    client = await server.client()
    welcome = await client.hello("bob", since=1)
    assert welcome["recovered"] is True
    replay = await replay_of(client, welcome)
    assert [e["id"] for e in replay] == list(range(2, welcome["last_id"] + 1))
    return replay


async def test_a_deleted_history_file_is_restored_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    """The issue's scenario: `rm chat.db` while serving, then a restart."""
    path = tmp_path / "chat.db"
    async with contextlib.AsyncExitStack() as clients:
        with trio.fail_after(30):
            async with serving("--db", str(path), "--rate-limit", "0") as (process, port, output):
                alice = await RawClient.connect(port)
                clients.push_async_callback(alice.aclose)
                await alice.hello("alice")
                await alice.next_event()  # the replay: our own join, 1
                for n in range(5):
                    await say_and_see(alice, f"before {n}")
                path.unlink()  # the journal beside it stays, as with `rm chat.db`
                for n in range(5):  # each commit checks the file
                    await say_and_see(alice, f"after {n}")
                restored = b"restored the history database"
                with trio.fail_after(5):  # long before the periodic check, 10 s after start
                    while restored not in b"".join(output):  # noqa: ASYNC110 (polls its log)
                        await trio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                assert (await alice.closed()).code == 1001
                assert await process.wait() == 0
            log = b"".join(output).decode()
            assert log.count(" ERROR ") == 1, log
            assert f"the history database {str(path)!r} is gone" in log

            async with serving("--db", str(path)) as (process, port, _output):
                bob = await RawClient.connect(port)
                clients.push_async_callback(bob.aclose)
                welcome = await bob.hello("bob", since=1)
                assert (welcome["recovered"], welcome["last_id"]) == (True, 13)
                replay = await replay_of(bob, welcome)
                texts = [e.get("text") for e in replay if e["type"] == "message"]
                expected = [f"before {n}" for n in range(5)] + [f"after {n}" for n in range(5)]
                assert texts == expected
                process.send_signal(signal.SIGTERM)
                assert (await bob.closed()).code == 1001
                assert await process.wait() == 0


async def test_a_deleted_file_is_restored_while_idle_too(
    start_server: StartServer,
    tmp_path: Path,
    clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "chat.db"
    store = await SqliteHistoryStore.open(str(path), limit=1000)
    with trio.fail_after(600):
        async with serving_store(store, str(path)) as server:
            alice = await server.joined("alice")
            await say_and_see(alice, "kept")
            await until(lambda: store.statistics().pending == 0)
            for leftover in (path, path.with_name("chat.db-wal")):  # rm chat.db*
                leftover.unlink()
            with trio.fail_after(30):  # no commit: the periodic check finds it
                await until(lambda: restored(caplog))
            assert path.exists()
            await say_and_see(alice, "written to the restored file")
    records = store_records(caplog)
    assert [r.levelname for r in records] == ["ERROR", "INFO"], caplog.text
    assert "restored" in records[1].getMessage()

    replay = await resume_from_start(await start_server(db=str(path), **QUIET))
    assert [e.get("text") for e in replay[:2]] == ["kept", "written to the restored file"]


async def test_restoring_into_a_missing_folder_is_retried(
    start_server: StartServer,
    tmp_path: Path,
    clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "chat.db"
    store = await SqliteHistoryStore.open(str(path), limit=1000)
    with trio.fail_after(600):
        async with serving_store(store, str(path)) as server:
            alice = await server.joined("alice")
            shutil.rmtree(folder)
            start = trio.current_time()
            for n in range(30):  # the chat goes on, history in the open file
                await say_and_see(alice, f"{n}")
                await trio.sleep(5)
            minutes = (trio.current_time() - start) / 60
            failures = [r for r in store_records(caplog) if "cannot restore" in r.getMessage()]
            assert 2 <= len(failures) <= minutes + 1  # once, then once a minute
            assert [r.levelname for r in failures[:2]] == ["ERROR", "WARNING"]
            status, reason = await readiness(server.port)
            assert (status, reason and "is gone" in reason) == (503, True)
            folder.mkdir()
            with trio.fail_after(30):  # the next periodic check
                await until(lambda: restored(caplog))
            assert path.exists()
            assert await readiness(server.port) == (200, None)
    records = store_records(caplog)
    assert [r.levelname for r in records if "cannot restore" not in r.getMessage()] == [
        "ERROR",
        "INFO",
    ]
    assert not [r for r in caplog.records if r.exc_info]
    replay = await resume_from_start(await start_server(db=str(path), **QUIET))
    assert [e.get("text") for e in replay[:30]] == [f"{n}" for n in range(30)]


def make_other_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('not a chat')")
        db.commit()


async def test_a_replaced_history_file_is_left_alone(
    tmp_path: Path, clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.db"
    store = await SqliteHistoryStore.open(str(path), limit=1000)
    with trio.fail_after(600):
        async with serving_store(store, str(path)) as server:
            alice = await server.joined("alice")
            await say_and_see(alice, "before")
            make_other_database(tmp_path / "other.db")
            (tmp_path / "other.db").rename(path)  # `mv other.db chat.db`
            start = trio.current_time()
            for n in range(20):
                await say_and_see(alice, f"{n}")
                await trio.sleep(10)
            minutes = (trio.current_time() - start) / 60
            status, reason = await readiness(server.port)
            assert (status, reason and "replaced by another file" in reason) == (503, True)
    errors = [r for r in store_records(caplog) if r.levelno >= logging.ERROR]
    assert 2 <= len(errors) <= minutes + 1  # repeated, but at most once a minute
    assert all("replaced by another file" in r.getMessage() for r in errors)
    # Nothing of ours went into it, not even through our journal beside it.
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
        assert db.execute("SELECT text FROM notes").fetchall() == [("not a chat",)]


# -- rooms without end with --db :memory: ------------------------------------------


async def test_memory_history_keeps_a_bounded_number_of_emptied_rooms() -> None:
    store = MemoryHistoryStore(1000, max_idle_rooms=5)
    with trio.fail_after(30):
        async with serving_store(store, ":memory:") as server:
            first = await server.joined("first", "busy")
            await say_and_see(first, "before")
            await first.aclose()  # "busy" is emptied once...
            await until(lambda: store.statistics().idle_rooms == 1)
            keeper = await server.joined("keeper", "busy")  # ...then in use all along
            said: dict[str, int] = {}  # room -> id of mallory's message there
            for n in range(40):  # an attacker creating room after room
                client = await server.joined("mallory", f"room{n}")
                said[f"room{n}"] = (await say_and_see(client, f"in room{n}"))["id"]
                await client.aclose()
                stats = store.statistics()
                assert stats.idle_rooms <= 5
                # "busy", this room, and the last one if its leave is still on its way.
                assert stats.rooms_in_memory <= 5 + 3
            await say_and_see(keeper, "still here")

            # A forgotten room lost its history, but its ids are not handed
            # out again: a client resuming from its message is not "recovered"
            # into another generation of the room under the same ids.
            forgotten = await server.client()
            welcome = await forgotten.hello("back", "room0", since=said["room0"])
            assert welcome["recovered"] is False
            assert welcome["last_id"] > said["room0"] + 1  # its leave was id 3
            # A recently emptied one kept its history: message, leave, new join.
            recent = await server.client()
            welcome = await recent.hello("back", "room39", since=said["room39"] - 1)
            assert (welcome["last_id"], welcome["recovered"]) == (said["room39"] + 2, True)
            # The room in use lost nothing, even once emptied again.
            await keeper.aclose()
            late = await server.client()
            welcome = await late.hello("late", "busy", since=0)
            assert welcome["recovered"] is True
            replay = await replay_of(late, welcome)
            texts = [e.get("text") for e in replay if e["type"] == "message"]
            assert texts == ["before", "still here"]
