"""One client's bounded send queue, filled without blocking, drained in batches.

The hub must never wait for a slow client, so it appends with
`put_nowait`, which refuses (returns False) once `limit` live events are
waiting: the caller then drops that client. The writer task takes everything
queued at once and sends it as one frame, so a burst costs one write per
client rather than one per event.
"""

from __future__ import annotations

from collections import deque

import trio


class Outbox:
    """Encoded event lines waiting for one client's writer task."""

    __slots__ = ("_front", "_limit", "_lines", "_pong", "_wakeup")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: deque[bytes] = deque()
        self._front: list[bytes] = []  # welcome and replay: not counted against the limit
        self._pong: bytes | None = None
        self._wakeup = trio.Event()

    def put_nowait(self, line: bytes) -> bool:
        """Queue one live event; False if `limit` are already waiting."""
        if len(self._lines) >= self._limit:
            return False
        self._lines.append(line)
        self._wakeup.set()
        return True

    def put_front(self, lines: list[bytes]) -> None:
        """Queue a welcome and its replay, ahead of every live event."""
        self._front.extend(lines)
        self._wakeup.set()

    def put_pong(self, frame: bytes) -> None:
        """Queue a pong frame; only the newest is kept (RFC 6455 5.5.3)."""
        self._pong = frame
        self._wakeup.set()

    def wake(self) -> None:
        """Wake the writer even though nothing is queued (to let it close)."""
        self._wakeup.set()

    def __len__(self) -> int:
        return len(self._lines)

    async def wait(self) -> None:
        """Return once something is queued or `wake` was called."""
        await self._wakeup.wait()

    def take(self) -> tuple[bytes | None, list[bytes]]:
        """Remove and return the pending pong frame and every queued line."""
        lines = self._front
        lines.extend(self._lines)
        self._front = []
        self._lines.clear()
        pong, self._pong = self._pong, None
        self._wakeup = trio.Event()
        return pong, lines
