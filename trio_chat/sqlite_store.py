"""Durable history in SQLite, written behind the hub and loaded on demand.

The hub never waits for the disk. `record` appends to a pending list; one
writer task commits whatever is pending as a single transaction in a worker
thread, so under load many events share a commit. Rooms are read from disk
only when a room gets its first member (`load`), and a room's window leaves
memory once it has no members and everything it recorded is committed.

All SQLite calls run in worker threads, one at a time (a capacity limiter of
one), on a single connection that holds the database file's lock for the life
of the server (`locking_mode=EXCLUSIVE`): a second server on the same file is
refused at start instead of numbering the same rooms twice.

What a hard crash loses: events recorded but not yet committed, which is the
batch being gathered (`BATCH_DELAY`) or written, about the last 20 ms under
normal load. With WAL and `synchronous=NORMAL`, a power loss can also
lose the last commits, never the file's consistency. SIGINT/SIGTERM flush
everything before exit.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from .history import RoomHistory, StoredEvent

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL          -- the room's last assigned event id
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        room TEXT NOT NULL,
        id INTEGER NOT NULL,
        line BLOB NOT NULL,               -- the event exactly as sent on the wire
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_RETRY_DELAY = 1.0  # seconds before retrying a failed commit
# Seconds the writer lets events gather after the first one before committing:
# fewer, larger transactions, and fewer hand-offs of the GIL between the
# event loop and the writer thread. It bounds what a hard crash loses too.
BATCH_DELAY = 0.02

T = TypeVar("T")


class HistoryError(Exception):
    """The history database cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    pending: int  # events recorded but not yet committed
    commits: int
    committed: int  # events committed since start
    rooms_in_memory: int


class SqliteHistoryStore:
    """History of every room in one SQLite file. Create with `open`."""

    def __init__(self, connection: sqlite3.Connection, path: str, limit: int) -> None:
        self._db = connection
        self._path = path
        self._limit = limit
        self._serial = trio.CapacityLimiter(1)
        self._windows: dict[str, RoomHistory] = {}
        self._released: set[str] = set()
        self._committed_id: dict[str, int] = {}
        self._pending: list[tuple[str, int, bytes]] = []
        self._wakeup = trio.Event()
        self._commits = 0
        self._committed = 0

    @classmethod
    async def open(cls, path: str, limit: int) -> SqliteHistoryStore:
        """Open (or create) the database at `path` and lock it.

        Raises:
            HistoryError: the file is not a usable trio-chat database (corrupt,
                unreadable, locked by another process, from a newer version).
        """
        try:
            connection = await trio.to_thread.run_sync(_connect, path)
        except sqlite3.Error as exc:
            reason = _reason(exc)
            raise HistoryError(f"cannot use the history database {path!r}: {reason}") from None
        return cls(connection, path, limit)

    # -- HistoryStore --------------------------------------------------------

    def acquire(self, room: str) -> RoomHistory | None:
        self._released.discard(room)
        return self._windows.get(room)

    async def load(self, room: str) -> RoomHistory:
        recorded, rows = await self._run(_read_room, self._db, room, self._limit)
        events = [StoredEvent(event_id, bytes(line)) for event_id, line in rows]
        # Ids on disk may have gaps (events dropped while writes failed).
        history = RoomHistory.from_storage(self._limit, events, recorded)
        self._committed_id.setdefault(room, history.last_id)
        return history

    def install(self, room: str, history: RoomHistory) -> None:
        self._windows[room] = history

    def record(self, room: str, event: StoredEvent) -> None:
        self._pending.append((room, event.id, event.line))
        self._wakeup.set()

    def release(self, room: str) -> None:
        self._released.add(room)
        self._evict_committed()

    # -- the writer ----------------------------------------------------------

    async def serve_writer(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Commit recorded events until cancelled (then call `flush`)."""
        task_status.started()
        while True:
            await self._wakeup.wait()
            await trio.sleep(BATCH_DELAY)
            try:
                await self.flush()
            except sqlite3.Error:
                log.exception("cannot write history to %r; retrying", self._path)
                await trio.sleep(_RETRY_DELAY)

    async def flush(self) -> None:
        """Commit everything recorded so far (on failure it stays pending)."""
        self._wakeup = trio.Event()
        batch, self._pending = self._pending, []
        if not batch:
            return
        last_ids: dict[str, int] = {}
        for room, event_id, _line in batch:
            last_ids[room] = event_id
        try:
            await self._run(_write_batch, self._db, batch, last_ids, self._limit)
        except BaseException:
            self._pending[:0] = batch  # keep order: these come first next time
            self._wakeup.set()
            raise
        self._commits += 1
        self._committed += len(batch)
        self._committed_id.update(last_ids)
        self._evict_committed()

    async def aclose(self) -> None:
        """Close the database (after a final `flush`, by the caller)."""
        await self._run(self._db.close)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            pending=len(self._pending),
            commits=self._commits,
            committed=self._committed,
            rooms_in_memory=len(self._windows),
        )

    def _evict_committed(self) -> None:
        for room in list(self._released):
            window = self._windows.get(room)
            if window is None or self._committed_id.get(room, 0) >= window.last_id:
                self._windows.pop(room, None)
                self._committed_id.pop(room, None)
                self._released.discard(room)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        # One statement at a time on the one connection, in a worker thread.
        return await trio.to_thread.run_sync(fn, *args, limiter=self._serial)


# -- what runs in the worker thread ------------------------------------------


def _connect(path: str) -> sqlite3.Connection:
    # A short busy timeout: a locked file means another server owns it.
    db = sqlite3.connect(path, timeout=0.2, isolation_level=None, check_same_thread=False)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection) -> None:
    """Lock the file, create or check the schema, and read it through."""
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] not in ("wal", "memory"):
        raise sqlite3.DatabaseError("cannot switch to WAL journal mode")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at first write
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise sqlite3.DatabaseError("not a trio-chat history database")
        for statement in _SCHEMA:  # not executescript: it would commit first
            db.execute(statement)
    elif version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"written by a newer trio-chat (schema {version}, this one knows {SCHEMA_VERSION})"
        )
    # Read both tables through, so that a damaged file fails here, at start.
    db.execute("SELECT count(*), max(last_id) FROM rooms").fetchone()
    db.execute("SELECT count(*) FROM events").fetchone()
    db.execute("COMMIT")


def _read_room(
    db: sqlite3.Connection, room: str, limit: int
) -> tuple[int, list[tuple[int, bytes]]]:
    """The room's recorded last id and its newest `limit` stored events, oldest first."""
    found = db.execute("SELECT last_id FROM rooms WHERE name = ?", (room,)).fetchone()
    rows = db.execute(
        "SELECT id, line FROM events WHERE room = ? ORDER BY id DESC LIMIT ?", (room, limit)
    ).fetchall()
    rows.reverse()
    return (0 if found is None else found[0]), rows


def _write_batch(
    db: sqlite3.Connection,
    batch: list[tuple[str, int, bytes]],
    last_ids: dict[str, int],
    limit: int,
) -> None:
    db.execute("BEGIN")
    try:
        # OR REPLACE: a batch retried after a failed commit may repeat rows.
        db.executemany("INSERT OR REPLACE INTO events (room, id, line) VALUES (?, ?, ?)", batch)
        db.executemany(
            "INSERT INTO rooms (name, last_id) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
            last_ids.items(),
        )
        # Retention, in the same transaction: keep the newest `limit` per room.
        db.executemany(
            "DELETE FROM events WHERE room = ? AND id <= ?",
            [(room, last - limit) for room, last in last_ids.items() if last > limit],
        )
        db.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back by itself (a COMMIT or an
        # insert failing with SQLITE_FULL or SQLITE_IOERR does): a ROLLBACK
        # then fails too and would hide the real error.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    if "locked" in text:
        return f"{text} (is another trio-chat serving it?)"
    return text
