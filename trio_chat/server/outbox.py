"""One client's bounded send queue, filled without blocking, drained in batches.

The hub must never wait for a slow client, so it appends with
`put_nowait`, which refuses (returns False) once `limit` live events are
waiting: the caller then drops that client. Appending is the hub's only
per-recipient work: it does not wake anyone. Once per burst the hub asks each
recipient to flush (see `Session.flush_nowait`), which either writes the whole
batch straight to the socket or wakes the writer task to do it, so a burst
costs one write per client, not one per event, and usually no task switch.
"""

from __future__ import annotations

import trio

from ..core.websocket import encode_text_frame


class Outbox:
    """Encoded event lines and control frames waiting for one client's writer."""

    __slots__ = (
        "_front",
        "_kicked",
        "_limit",
        "_lines",
        "_ping",
        "_pong",
        "_raw",
        "_waiting",
        "_wakeup",
        "frames",
    )

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: list[bytes] = []
        self._front: list[bytes] = []  # welcome and replay: not counted against the limit
        self._raw = b""  # the unwritten end of a frame: goes out before anything else
        self._ping: bytes | None = None
        self._pong: bytes | None = None
        self._kicked = False
        self._waiting = False  # the writer is parked in `wait`
        self._wakeup = trio.Event()
        self.frames = 0  # frames taken for writing (close frames are counted by the caller)

    def put_nowait(self, line: bytes) -> bool:
        """Queue one live event; False if `limit` are already waiting."""
        lines = self._lines
        if len(lines) >= self._limit:
            return False
        lines.append(line)
        return True

    def put_front(self, lines: list[bytes]) -> None:
        """Queue a welcome and its replay, ahead of every live event."""
        self._front.extend(lines)

    def put_raw(self, data: bytes) -> None:
        """Queue the rest of a partly written frame, and wake the writer."""
        self._raw = data
        self.wake()

    def put_ping(self, frame: bytes) -> None:
        """Queue a ping frame, and wake the writer."""
        self._ping = frame
        self.wake()

    def put_pong(self, frame: bytes) -> None:
        """Queue a pong frame, and wake the writer; only the newest is kept."""
        self._pong = frame  # RFC 6455 5.5.3 allows answering the latest ping only
        self.wake()

    def kick(self) -> None:
        """Wake the writer even though nothing is queued (to let it close)."""
        self._kicked = True
        self.wake()

    def wake(self) -> None:
        """Let the writer run if it is parked and has something to do."""
        if self._waiting and self._ready():
            self._waiting = False
            self._wakeup.set()

    @property
    def parked(self) -> bool:
        """Whether the writer is waiting, so it is not in the middle of a write."""
        return self._waiting

    def __len__(self) -> int:
        return len(self._lines)

    async def wait(self) -> None:
        """Return once something is queued and `wake` was called, or `kick`."""
        if self._ready():
            return
        self._wakeup = trio.Event()
        self._waiting = True
        await self._wakeup.wait()

    def take(self) -> tuple[bytes, list[bytes]]:
        """Remove and return the pending raw bytes and control frames, and every line."""
        data = self._raw + (self._ping or b"") + (self._pong or b"")
        self.frames += (self._ping is not None) + (self._pong is not None)
        self._raw = b""
        self._ping = self._pong = None
        lines = self._front
        lines += self._lines
        self._front = []
        self._lines = []
        return data, lines

    def take_wire(self) -> bytes:
        """Like `take`, as the bytes to write: control frames, then one text frame."""
        data, lines = self.take()
        if lines:
            data += encode_text_frame(b"\n".join(lines))
            self.frames += 1
        return data

    def _ready(self) -> bool:
        return bool(
            self._lines or self._front or self._raw or self._ping or self._pong or self._kicked
        )
