"""Durable history in SQLite, written behind the hub and loaded on demand.

The hub never waits for the disk. `record` appends to a pending queue; one
writer task commits what is pending, in transactions of up to a few MiB, in a
worker thread, so under load many events share a commit. Rooms are read from
disk only when a room gets its first member (`load`), and a room's window
leaves memory once it has no members and everything it recorded is committed
(or dropped, below; past `UNSAVED_IDLE_ROOMS` such rooms, the least recently
emptied leaves memory anyway and its events stay pending).

All SQLite calls run in worker threads, one at a time (a capacity limiter of
one), on a single connection that holds the database file's lock for the life
of the server (`locking_mode=EXCLUSIVE`): a second server on the same file is
refused at start instead of numbering the same rooms twice.

What a hard crash loses: events recorded but not yet committed, which is the
batch being gathered (`BATCH_DELAY`) or written, about the last 20 ms under
normal load. With WAL and `synchronous=NORMAL`, a power loss can also
lose the last commits, never the file's consistency. SIGINT/SIGTERM flush
everything before exit.

When writes fail (disk full, I/O errors, a read-only file), clients notice
nothing: events stay pending and the writer retries every second. The cause
is logged once as an error, then a warning at most every minute while it
lasts, and an info line when writes succeed again. What is pending is bounded
by `MAX_PENDING_BYTES` (64 MiB): past it, the oldest pending events are
dropped (and logged), so that a disk that stays full cannot exhaust memory.
Their ids stay used: the room's numbering never repeats them, and its
recorded last id covers them once writes resume. The file then has a gap in
the room's ids; loading keeps only the newest contiguous run
(`RoomHistory.from_storage`), so a client resuming from before the gap gets
`recovered: false`, never a wrong replay. A room that stays in use meanwhile
keeps its whole window in memory and replays it in full until it empties.
Besides the bound, an outage holds the windows of at most
`UNSAVED_IDLE_ROOMS` emptied rooms, and a last id per room whose events were
dropped, until writes resume.

If the file is deleted while serving, the connection still has it open and
every write would go to a file that no longer exists, lost at exit. The
writer compares the path's device and inode with the file it opened, after
each commit and every `FILE_CHECK_PERIOD` while idle. A missing file is
logged once as an error and restored: the open database is copied to the
path (`Connection.backup`, into a new file linked into place, so that it
never replaces a file that appeared meanwhile) and the store switches to it,
as `_connect` opens it. Until that succeeds (the folder is gone...), the
store keeps serving from the open handle and retries at each check. A path
that now holds a different file is never overwritten: that is logged as an
error (at most once a minute), since history written meanwhile is not in it,
and our write-ahead log beside it is removed, as SQLite would apply it to
the new file when it is next opened.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import secrets
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from ..core.errors import TrioChatError
from ..core.histogram import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from ..core.history import RoomHistory, StoredEvent
from ..core.protocol import LeaveReason
from ..core.rooms import HeldSeat

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
# Added without a schema version of its own, so that an older trio-chat still
# opens the file: created when missing, on every open.
_META = """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL                   -- 'epoch': this file's numbering, see `epoch`
) WITHOUT ROWID"""
# The seats held at the last graceful shutdown (core/rooms.py `HeldSeat`),
# for the next start to restore; emptied as they are read. Also created when
# missing, so older files and older trio-chats are unaffected.
_PRESENCE = """CREATE TABLE IF NOT EXISTS presence (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    secret TEXT NOT NULL,
    reason TEXT NOT NULL,                 -- the leave reason once the grace ends
    held_until REAL NOT NULL,             -- Unix time the grace ends
    joined_id INTEGER NOT NULL,
    PRIMARY KEY (room, name)
) WITHOUT ROWID"""
_RETRY_DELAY = 1.0  # seconds before retrying a failed commit
# Seconds the writer lets events gather after the first one before committing:
# fewer, larger transactions, and fewer hand-offs of the GIL between the
# event loop and the writer thread. It bounds what a hard crash loses too.
BATCH_DELAY = 0.02
# Most bytes of events kept pending (waiting or being written), counting each
# event's line and room name plus `_EVENT_OVERHEAD`; past it the oldest are
# dropped. One transaction writes at most a sixteenth of it.
MAX_PENDING_BYTES = 64 * 2**20
_EVENT_OVERHEAD = 128  # bytes of a pending event beyond its line: tuple, int, bytes header
# Rooms without members whose window waits in memory for its last events to
# be committed; past it, the least recently emptied is evicted regardless.
UNSAVED_IDLE_ROOMS = 10_000
REMIND_EVERY = 60.0  # seconds between warnings about a trouble that lasts
FILE_CHECK_PERIOD = 10.0  # seconds between checks that the file is still at its path

T = TypeVar("T")


class HistoryError(TrioChatError):
    """The history database cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    pending: int  # events recorded but not yet committed
    pending_bytes: int  # what they cost, as bounded by MAX_PENDING_BYTES
    dropped: int  # pending events dropped since start (past the bound)
    commits: int
    committed: int  # events committed since start
    rooms_in_memory: int


class FileState(enum.Enum):
    """What is at the database's path, compared with the file the store has open."""

    SAME = "same"
    MISSING = "missing"  # deleted (or its folder), or cannot be looked at
    REPLACED = "replaced"  # another file


@dataclass(frozen=True, slots=True)
class FileIds:
    """(st_dev, st_ino) of the database file and of its write-ahead log.

    `_connect` leaves the log open (WAL mode) for the life of the connection.
    """

    database: tuple[int, int]
    journal: tuple[int, int] | None


class Report(enum.Enum):
    """What to say about a trouble that lasts."""

    FIRST = "first"  # it has just begun: say what it is
    AGAIN = "again"  # still going on, and it is time for a reminder


class Lasting:
    """Rate limit for logging a trouble that goes on (a full disk, a lost file).

    Pure: the caller passes the time. `note` is called each time the trouble
    is seen and says whether to log (at once, then at most every `every`
    seconds); `end` is called when it is over and says how long it lasted.
    """

    __slots__ = ("_said", "every", "since")

    def __init__(self, every: float) -> None:
        self.every = every
        self.since: float | None = None
        self._said = 0.0

    def note(self, now: float) -> Report | None:
        if self.since is None:
            self.since = self._said = now
            return Report.FIRST
        if now - self._said >= self.every:
            self._said = now
            return Report.AGAIN
        return None

    def lasted(self, now: float) -> float:
        """How long the trouble has lasted so far (0 if there is none)."""
        return 0.0 if self.since is None else now - self.since

    def end(self, now: float) -> float | None:
        """How long the trouble lasted (None if there was none)."""
        lasted = None if self.since is None else self.lasted(now)
        self.since = None
        return lasted


Pending = tuple[str, int, bytes]  # room, id, line


def _cost(room: str, line: bytes) -> int:
    return len(line) + len(room) + _EVENT_OVERHEAD


class PendingEvents:
    """Events recorded but not yet committed, oldest first, bounded in bytes.

    Pure bookkeeping. The writer `take`s the oldest events for one
    transaction and then calls `done` or, if the commit failed, `put_back`.
    Whenever what is kept, waiting or being written, costs more than
    `max_bytes`, the oldest waiting events are dropped; `add` and `put_back`
    return them as (room, id) so that the caller can keep their ids used.
    """

    __slots__ = ("_batch_bytes", "_taken", "_taken_bytes", "_waiting", "max_bytes", "nbytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._batch_bytes = max(max_bytes // 16, 1)
        self._waiting: deque[Pending] = deque()
        self._taken = 0  # events being written
        self._taken_bytes = 0
        self.nbytes = 0  # what the waiting and the taken events cost

    def __len__(self) -> int:
        return len(self._waiting) + self._taken

    @property
    def waiting(self) -> int:
        """Events not yet handed to the writer."""
        return len(self._waiting)

    def add(self, room: str, event_id: int, line: bytes) -> Sequence[tuple[str, int]]:
        """Queue an event; returns the events dropped to stay within the bound."""
        self._waiting.append((room, event_id, line))
        self.nbytes += _cost(room, line)
        return self._trim() if self.nbytes > self.max_bytes else ()

    def take(self) -> list[Pending]:
        """The oldest waiting events for one transaction (at least one if any wait)."""
        batch: list[Pending] = []
        size = 0
        while self._waiting and size < self._batch_bytes:
            item = self._waiting.popleft()
            batch.append(item)
            size += _cost(item[0], item[2])
        self._taken, self._taken_bytes = len(batch), size
        return batch

    def done(self) -> None:
        """The batch from `take` is committed."""
        self.nbytes -= self._taken_bytes
        self._taken = self._taken_bytes = 0

    def put_back(self, batch: list[Pending]) -> Sequence[tuple[str, int]]:
        """The batch from `take` failed: it goes first again; returns what was dropped."""
        self._waiting.extendleft(reversed(batch))
        self._taken = self._taken_bytes = 0
        return self._trim()

    def _trim(self) -> list[tuple[str, int]]:
        dropped: list[tuple[str, int]] = []
        while self.nbytes > self.max_bytes and self._waiting:
            room, event_id, line = self._waiting.popleft()
            self.nbytes -= _cost(room, line)
            dropped.append((room, event_id))
        return dropped


class SqliteHistoryStore:
    """History of every room in one SQLite file. Create with `open`."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: str,
        limit: int,
        *,
        epoch: str,
        files: FileIds | None = None,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        unsaved_idle_rooms: int = UNSAVED_IDLE_ROOMS,
    ) -> None:
        self._db = connection
        self._path = path
        self._epoch = epoch
        self._files = files  # what the connection has open; None: nothing to watch
        self._limit = limit
        self._serial = trio.CapacityLimiter(1)
        self._windows: dict[str, RoomHistory] = {}
        # Rooms without members whose window waits for its events to be
        # committed, least recently emptied first.
        self._released: dict[str, None] = {}
        self._unsaved_idle_rooms = unsaved_idle_rooms
        # For each room with a window: its newest id that is no longer pending.
        self._settled_id: dict[str, int] = {}
        # Ids in use that the file may not show yet (dropped events, evicted
        # windows with pending events): the next commit records them as the
        # rooms' last ids, and `load` never numbers below them.
        self._floor_id: dict[str, int] = {}
        self._pending = PendingEvents(max_pending_bytes)
        self._wakeup = trio.Event()
        self._commits = 0
        self._committed = 0
        # Read by /metrics: seconds per committed transaction, events in it.
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self.commit_sizes = Histogram(SIZE_BUCKETS)
        self._dropped = 0
        self._dropped_by_last_write = 0  # `_dropped` when a write last succeeded
        self._unreported_drops = 0
        self._write_trouble = Lasting(REMIND_EVERY)
        self._write_error = ""  # why the last write failed, while `_write_trouble` lasts
        self._drop_trouble = Lasting(REMIND_EVERY)
        self._file_trouble = Lasting(REMIND_EVERY)
        self._file_state = FileState.SAME
        self._restore_trouble = Lasting(REMIND_EVERY)
        self._next_restore = -math.inf  # a failed restore waits a check period

    @classmethod
    async def open(cls, path: str, limit: int, **options: int) -> SqliteHistoryStore:
        """Open (or create) the database at `path` and lock it.

        `options` are the keyword arguments of the constructor (bounds).

        Raises:
            HistoryError: the file is not a usable trio-chat database (corrupt,
                unreadable, locked by another process, from a newer version).
        """
        try:
            connection, files, epoch = await trio.to_thread.run_sync(_open, path)
        except (sqlite3.Error, OSError) as exc:
            reason = _reason(exc)
            raise HistoryError(f"cannot use the history database {path!r}: {reason}") from None
        return cls(connection, path, limit, epoch=epoch, files=files, **options)

    # -- HistoryStore --------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The file's numbering: made when the file is created (or first
        opened by a trio-chat that knows epochs), kept in its `meta` table.
        A new or replaced file is a new epoch; a restored copy keeps it."""
        return self._epoch

    def acquire(self, room: str) -> RoomHistory | None:
        self._released.pop(room, None)
        return self._windows.get(room)

    async def load(self, room: str) -> RoomHistory:
        floor = self._floor_id.get(room, 0)
        recorded, rows = await self._run(_read_room, room, self._limit)
        # A commit during the read may have cleared the floor (it is then on
        # disk) and a drop may have raised it: take the highest of all three.
        recorded = max(recorded, floor, self._floor_id.get(room, 0))
        events = [StoredEvent(event_id, bytes(line)) for event_id, line in rows]
        # Ids on disk may have gaps (events dropped while writes failed).
        history = RoomHistory.from_storage(self._limit, events, recorded)
        self._settled_id.setdefault(room, history.last_id)
        return history

    def install(self, room: str, history: RoomHistory) -> None:
        self._windows[room] = history

    async def take_presence(self) -> list[HeldSeat]:
        """The seats the last graceful shutdown kept (`keep_presence`), with
        what remains of their grace now; they are deleted from the file, so
        that a crash later does not bring them back twice."""
        rows = await self._run(_take_presence)
        now = time.time()
        seats: list[HeldSeat] = []
        for room, name, secret, reason, held_until, joined_id in rows:
            try:
                why = LeaveReason(reason)
            except ValueError:
                why = LeaveReason.SHUTDOWN  # a reason this version does not know
            seats.append(HeldSeat(room, name, secret, why, held_until - now, joined_id))
        return seats

    async def keep_presence(self, seats: Sequence[HeldSeat]) -> None:
        """Write the seats held at shutdown down, for the next start.

        Raises:
            sqlite3.Error: the file cannot be written.
        """
        now = time.time()
        rows = [
            (s.room, s.name, s.secret, str(s.reason), now + s.remaining, s.joined_id)
            for s in seats
        ]
        await self._run(_keep_presence, rows)

    def record(self, room: str, event: StoredEvent) -> None:
        dropped = self._pending.add(room, event.id, event.line)
        if dropped:
            self._forget(dropped)
        self._wakeup.set()

    def release(self, room: str) -> None:
        self._released.pop(room, None)
        self._released[room] = None  # the most recently emptied last
        self._evict_if_settled(room)
        while len(self._released) > self._unsaved_idle_rooms:
            oldest = next(iter(self._released))
            window = self._windows.get(oldest)
            if window is not None:  # its pending events are still written later
                self._raise_floor(oldest, window.last_id)
            self._evict(oldest)

    # -- the writer ----------------------------------------------------------

    async def serve_writer(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Commit recorded events until cancelled (then call `flush`).

        Failures are logged here (see the module docstring) and retried. The
        file is checked after each commit and every `FILE_CHECK_PERIOD`.
        """
        task_status.started()
        next_check = trio.current_time() + FILE_CHECK_PERIOD
        while True:
            with trio.move_on_at(next_check):
                await self._wakeup.wait()
            wrote = False
            if self._wakeup.is_set():
                await trio.sleep(BATCH_DELAY)
                wrote = await self._write()
                if not wrote:
                    await trio.sleep(_RETRY_DELAY)
            if wrote or trio.current_time() >= next_check:
                await self._check_file()
                next_check = trio.current_time() + FILE_CHECK_PERIOD

    async def flush(self) -> None:
        """Commit everything recorded so far.

        Raises:
            sqlite3.Error: a commit failed; what it held is pending again
                (within the bound), and the writer will retry.
        """
        self._wakeup = trio.Event()
        while self._pending.waiting or self._floor_id:
            batch = self._pending.take()
            last_ids = dict(self._floor_id)
            for room, event_id, _line in batch:
                last_ids[room] = max(last_ids.get(room, 0), event_id)
            started = time.perf_counter()
            try:
                await self._run(_write_batch, batch, last_ids, self._limit)
            except BaseException:
                self._forget(self._pending.put_back(batch))
                self._wakeup.set()
                raise
            self._pending.done()
            self._commits += 1
            self._committed += len(batch)
            # From the call to the end of the commit: waiting for the
            # worker thread is part of what a commit costs.
            self.commit_seconds.observe(time.perf_counter() - started)
            self.commit_sizes.observe(len(batch))
            for room, last_id in last_ids.items():
                if self._floor_id.get(room, 0) <= last_id:
                    self._floor_id.pop(room, None)
                self._settle(room, last_id)

    async def _check_file(self) -> None:
        """Make sure history goes to the file at the path; restore it if deleted.

        Logs what it finds (see the module docstring).
        """
        if self._files is None:
            return
        files = self._files
        state, reason = await trio.to_thread.run_sync(_file_state, self._path, files)
        now = trio.current_time()
        if state is not self._file_state:
            self._file_trouble.end(now)  # a new trouble is told at once
            self._file_state = state
        if state is FileState.SAME:
            self._restore_trouble.end(now)
            return
        report = self._file_trouble.note(now)
        if state is FileState.REPLACED:
            # Our write-ahead log beside it would be applied to the new file
            # when it is next opened, as if it were its own: take it away.
            await trio.to_thread.run_sync(_remove_journal, self._path, files)
            if report is not None:
                log.error(
                    "the history database %r has been replaced by another file, which is left"
                    " alone: history written from now on is not in it, and is lost at exit",
                    self._path,
                )
            return
        if report is Report.FIRST:
            log.error(
                "the history database %r is gone (%s); restoring it from the open connection",
                self._path,
                reason,
            )
        if now < self._next_restore:
            return
        try:
            await self._run(self._restore)
        except (OSError, sqlite3.Error) as exc:
            self._next_restore = now + FILE_CHECK_PERIOD
            report = self._restore_trouble.note(now)
            if report is not None:
                log.log(
                    logging.ERROR if report is Report.FIRST else logging.WARNING,
                    "cannot restore the history database %r: %s; history goes on in the"
                    " deleted file, lost at exit unless restored (retrying every %g s)",
                    self._path,
                    _reason(exc),
                    FILE_CHECK_PERIOD,
                )
            return
        self._file_state = FileState.SAME
        self._file_trouble.end(now)
        self._restore_trouble.end(now)
        log.info("restored the history database %r from the open connection", self._path)

    def trouble(self) -> str | None:
        """Why history is not reaching the file now, in one line; None if it is.

        For readiness checks: events are kept meanwhile (see the module
        docstring), but a restart now would lose them.
        """
        if self._write_trouble.since is not None:
            return f"history cannot be written to {self._path!r}: {self._write_error}"
        if self._file_state is FileState.REPLACED:
            return f"the history database {self._path!r} was replaced by another file"
        if self._file_state is not FileState.SAME:
            return f"the history database {self._path!r} is gone and not restored yet"
        return None

    async def aclose(self) -> None:
        """Close the database (after a final `flush`, by the caller)."""
        await self._run(sqlite3.Connection.close)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            pending=len(self._pending),
            pending_bytes=self._pending.nbytes,
            dropped=self._dropped,
            commits=self._commits,
            committed=self._committed,
            rooms_in_memory=len(self._windows),
        )

    async def _write(self) -> bool:
        """Flush, and log how writing goes; False if it failed."""
        try:
            await self.flush()
        except sqlite3.Error as exc:
            self._write_failed(exc, trio.current_time())
            return False
        now = trio.current_time()
        self._report_drops(now)
        lasted = self._write_trouble.end(now)
        dropped, self._dropped_by_last_write = (
            self._dropped - self._dropped_by_last_write,
            self._dropped,
        )
        if lasted is not None:
            self._drop_trouble.end(now)
            log.info(
                "history is written to %r again, after %.0f s%s",
                self._path,
                lasted,
                f"; {dropped} unsaved events were dropped meanwhile" if dropped else "",
            )
        return True

    def _write_failed(self, exc: sqlite3.Error, now: float) -> None:
        self._write_error = _describe(exc)
        report = self._write_trouble.note(now)
        if report is Report.FIRST:
            # The environment (a full disk, an I/O error, a read-only file)
            # needs no traceback; anything else is a bug and gets one, once.
            log.error(
                "cannot write history to %r: %s; retrying every %g s, %s pending",
                self._path,
                _describe(exc),
                _RETRY_DELAY,
                self._pending_text(),
                exc_info=None if isinstance(exc, sqlite3.OperationalError) else exc,
            )
        elif report is Report.AGAIN:
            log.warning(
                "history still cannot be written to %r, for %.0f s: %s; %s pending",
                self._path,
                self._write_trouble.lasted(now),
                _describe(exc),
                self._pending_text(),
            )
        self._report_drops(now)

    def _report_drops(self, now: float) -> None:
        if self._unreported_drops and self._drop_trouble.note(now) is not None:
            log.warning(
                "unsaved history passed %s: dropped the oldest %d events (the history file"
                " will have a gap there)",
                _size(self._pending.max_bytes),
                self._unreported_drops,
            )
            self._unreported_drops = 0

    def _pending_text(self) -> str:
        return f"{len(self._pending)} events ({_size(self._pending.nbytes)})"

    # -- which windows stay in memory ------------------------------------------

    def _forget(self, dropped: Sequence[tuple[str, int]]) -> None:
        """Pending events were dropped: their ids stay used, never pending again."""
        self._dropped += len(dropped)
        self._unreported_drops += len(dropped)
        for room, event_id in dropped:
            self._raise_floor(room, event_id)
            self._settle(room, event_id)

    def _raise_floor(self, room: str, event_id: int) -> None:
        if event_id > self._floor_id.get(room, 0):
            self._floor_id[room] = event_id

    def _settle(self, room: str, event_id: int) -> None:
        if event_id > self._settled_id.get(room, event_id):
            self._settled_id[room] = event_id
        self._evict_if_settled(room)

    def _evict_if_settled(self, room: str) -> None:
        if room not in self._released:
            return
        window = self._windows.get(room)
        if window is None or self._settled_id.get(room, 0) >= window.last_id:
            self._evict(room)

    def _evict(self, room: str) -> None:
        self._windows.pop(room, None)
        self._settled_id.pop(room, None)
        self._released.pop(room, None)

    def _restore(self, old: sqlite3.Connection) -> None:
        # In the worker thread, holding the limiter: no other call sees a
        # connection that is being replaced.
        self._db, self._files = _restore(old, self._path)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(connection, *args)` in a worker thread, one call at a time."""
        return await trio.to_thread.run_sync(lambda: fn(self._db, *args), limiter=self._serial)


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def _size(nbytes: int) -> str:
    if nbytes < 2**20:
        return f"{nbytes / 2**10:.1f} KiB"
    return f"{nbytes / 2**20:.1f} MiB"


# -- what runs in the worker thread ------------------------------------------


def _open(path: str) -> tuple[sqlite3.Connection, FileIds | None, str]:
    """`_connect`, which files it opened (None for a memory database), and
    the file's epoch."""
    db = _connect(path)
    try:
        (epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        return db, None if path in ("", ":memory:") else _file_ids(path), epoch
    except BaseException:
        db.close()
        raise


def _identity(path: str) -> tuple[int, int]:
    found = Path(path).stat()
    return found.st_dev, found.st_ino


def _file_ids(path: str) -> FileIds:
    try:
        journal: tuple[int, int] | None = _identity(f"{path}-wal")
    except FileNotFoundError:
        journal = None
    return FileIds(_identity(path), journal)


def _file_state(path: str, files: FileIds) -> tuple[FileState, str]:
    """What is at `path` compared with the database of `files`, and why if missing."""
    try:
        found = _identity(path)
    except OSError as exc:
        return FileState.MISSING, exc.strerror or type(exc).__name__
    return (FileState.SAME if found == files.database else FileState.REPLACED), ""


def _remove_journal(path: str, files: FileIds) -> None:
    """Unlink `path`-wal if it is the log of our connection (which keeps it open)."""
    journal = f"{path}-wal"
    with contextlib.suppress(OSError):
        if files.journal is not None and _identity(journal) == files.journal:
            Path(journal).unlink()


def _restore(old: sqlite3.Connection, path: str) -> tuple[sqlite3.Connection, FileIds]:
    """Copy the database `old` still has open to `path`, where it was deleted.

    The copy is made in a new file beside it, then linked into place, which,
    unlike a rename, never replaces a file that appeared at `path` meanwhile
    (FileExistsError). Returns the new file opened as `_connect` does, and its
    files, and closes `old`; on any failure `old` stays open and usable.
    """
    target = Path(path)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with contextlib.closing(sqlite3.connect(name)) as copy:
            old.backup(copy)
        target.hardlink_to(name)
    finally:
        for leftover in (name, f"{name}-wal", f"{name}-shm"):
            Path(leftover).unlink(missing_ok=True)
    # A journal left at the path belongs to the deleted file (its connection
    # no longer writes through the path): the new file must not replay it.
    for leftover in (f"{path}-wal", f"{path}-shm"):
        Path(leftover).unlink(missing_ok=True)
    try:
        db = _connect(path)
    except BaseException:
        target.unlink(missing_ok=True)  # ours: the next check finds it missing, retries
        raise
    old.close()
    return db, _file_ids(path)


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
    db.execute(_META)
    db.execute(_PRESENCE)
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT (key) DO NOTHING",
        (secrets.token_hex(8),),
    )
    # Read both tables through, so that a damaged file fails here, at start.
    db.execute("SELECT count(*), max(last_id) FROM rooms").fetchone()
    db.execute("SELECT count(*) FROM events").fetchone()
    db.execute("COMMIT")


def _take_presence(db: sqlite3.Connection) -> list[tuple[str, str, str, str, float, int]]:
    with db:
        rows = db.execute(
            "SELECT room, name, secret, reason, held_until, joined_id FROM presence"
        ).fetchall()
        db.execute("DELETE FROM presence")
    return rows


def _keep_presence(
    db: sqlite3.Connection, rows: list[tuple[str, str, str, str, float, int]]
) -> None:
    with db:
        db.execute("DELETE FROM presence")
        db.executemany(
            "INSERT OR REPLACE INTO presence"
            " (room, name, secret, reason, held_until, joined_id) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


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
            " ON CONFLICT (name) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
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


def _reason(exc: sqlite3.Error | OSError) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.strerror}: {exc.filename!r}"
    text = str(exc) or type(exc).__name__
    if "locked" in text:
        return f"{text} (is another trio-chat serving it?)"
    return text
