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

import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RunningServer, StartServer
from wsclient import RawClient

from trio_chat.config import Settings
from trio_chat.history import HistoryStore
from trio_chat.server import serve_chat
from trio_chat.sqlite_store import SqliteHistoryStore

# Timers that must not fire while the clock jumps: only the store's matter here.
QUIET: dict[str, Any] = {"ping_period": 3600.0, "pong_wait": 3601.0, "handshake_timeout": 3600.0}


@asynccontextmanager
async def serving(store: HistoryStore, db: str, **overrides: Any) -> AsyncIterator[RunningServer]:
    """The server on `store` (which it closes), in a nursery of its own."""
    base = Settings(host="127.0.0.1", port=0, db=db, rate_limit=0, **QUIET)
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
    while not condition():  # noqa: ASYNC110 (the store has no event for this: poll it)
        await trio.sleep(0.1)


async def limit_pages(store: SqliteHistoryStore, extra: int | None) -> None:
    """Let the store's file grow by `extra` pages at most (None: no limit)."""

    def apply(db: sqlite3.Connection) -> None:
        if extra is None:
            db.execute("PRAGMA max_page_count = 4294967294")
        else:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages + extra}")

    await store._run(apply)


async def replay_of(client: RawClient, welcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The history replay that follows a welcome (it ends with our own join)."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["id"] != welcome["last_id"]:
        events.append(await client.next_event())
    return events


def store_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_chat.sqlite_store"]


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
        async with serving(store, str(path)) as server:
            alice = await server.joined("alice")  # event 1
            await alice.say("before the disk filled")
            seen[2] = await alice.next_event()
            await until(lambda: store.statistics().pending == 0)

            await limit_pages(store, 0)  # the disk is full from now on
            full_since = trio.current_time()
            for n in range(60):  # about twice the bound
                await alice.say(f"{n} " + "x" * 1000)
                event = await alice.next_event()  # the chat goes on
                seen[event["id"]] = event
                assert store.statistics().pending_bytes <= BOUND
            await trio.sleep(130)  # minutes of a full disk
            stats = store.statistics()
            assert 0 < stats.pending_bytes <= BOUND
            assert stats.dropped > 0

            await limit_pages(store, None)  # room again
            await until(lambda: store.statistics().pending == 0)
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
    assert 2 <= len(reminders) <= minutes + 1, text  # once a minute, not once a second
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
