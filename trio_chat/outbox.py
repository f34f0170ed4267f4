"""One client's bounded send queue, filled without blocking, drained in batches.

The hub must never wait for a slow client, so it appends with
`put_nowait`, which refuses (returns False) once `limit` live events are
waiting: the caller then drops that client. The writer task takes everything
queued at once and sends it as one frame, so a burst costs one write per
client rather than one per event. Appending is the hub's only per-recipient
work, so it stays a list append, plus a wake-up only when the writer is
actually waiting.
"""

from __future__ import annotations

import trio


class Outbox:
    """Encoded event lines and control frames waiting for one client's writer."""

    __slots__ = ("_front", "_kicked", "_limit", "_lines", "_ping", "_pong", "_waiting", "_wakeup")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: list[bytes] = []
        self._front: list[bytes] = []  # welcome and replay: not counted against the limit
        self._ping: bytes | None = None
        self._pong: bytes | None = None
        self._kicked = False
        self._waiting = False  # the writer is parked in `wait`
        self._wakeup = trio.Event()

    def put_nowait(self, line: bytes) -> bool:
        """Queue one live event; False if `limit` are already waiting."""
        lines = self._lines
        if len(lines) >= self._limit:
            return False
        lines.append(line)
        if self._waiting:
            self._wake()
        return True

    def put_front(self, lines: list[bytes]) -> None:
        """Queue a welcome and its replay, ahead of every live event."""
        self._front.extend(lines)
        self._wake()

    def put_ping(self, frame: bytes) -> None:
        """Queue a ping frame, sent ahead of any events."""
        self._ping = frame
        self._wake()

    def put_pong(self, frame: bytes) -> None:
        """Queue a pong frame; only the newest is kept (RFC 6455 5.5.3)."""
        self._pong = frame
        self._wake()

    def kick(self) -> None:
        """Wake the writer even though nothing is queued (to let it close)."""
        self._kicked = True
        self._wake()

    def __len__(self) -> int:
        return len(self._lines)

    async def wait(self) -> None:
        """Return once something is queued or `kick` was called."""
        if self._lines or self._front or self._ping or self._pong or self._kicked:
            return
        self._wakeup = trio.Event()
        self._waiting = True
        await self._wakeup.wait()

    def take(self) -> tuple[bytes, list[bytes]]:
        """Remove and return the pending control frames and every queued line."""
        control = (self._ping or b"") + (self._pong or b"")
        self._ping = self._pong = None
        lines = self._front
        lines += self._lines
        self._front = []
        self._lines = []
        return control, lines

    def _wake(self) -> None:
        self._waiting = False
        self._wakeup.set()
