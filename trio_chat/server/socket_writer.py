"""The one way bytes reach a client's socket: awaited, or straight away.

A session's writer task sends with `send_all`, which waits for the socket.
The hub, though, flushes a burst to every idle client without a task switch
(`send_nowait`): one `os.write` on the socket's descriptor, which Trio keeps
non-blocking, taking whatever the kernel accepts now. That shortcut is what
keeps a broadcast cheap (measured: it is most of the difference between one
write per client per burst and one task switch per client per burst), and it
is safe only because this class checks its own preconditions in code:

* never while a `send_all` is in progress: the bytes would interleave
  (`trio.BusyResourceError`, a bug in the caller);
* never after `close_nowait`, so a descriptor number the kernel has reused
  for another client is never written to (`trio.ClosedResourceError`);
* OS errors become Trio's stream errors (`trio.BrokenResourceError`), as
  `send_all` reports them, so a reset connection is never mistaken for a
  full socket;
* only on a plain TCP socket on POSIX: elsewhere (a TLS stream, Windows)
  `send_nowait` writes nothing and the caller falls back to `send_all`.
"""

from __future__ import annotations

import os

import trio


class SocketWriter:
    """Serialises every write to one stream; see the module docstring."""

    __slots__ = ("_fd", "_sending", "_stream", "written")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        direct = os.name == "posix" and isinstance(stream, trio.SocketStream)
        self._fd = (
            stream.socket.fileno() if isinstance(stream, trio.SocketStream) and direct else -1
        )
        self._sending = False
        self.written = 0  # bytes the socket has taken

    @property
    def direct(self) -> bool:
        """Whether `send_nowait` can write at all (a plain socket, not closed)."""
        return self._fd >= 0

    @property
    def sending(self) -> bool:
        """Whether a `send_all` is in progress."""
        return self._sending

    async def send_all(self, data: bytes) -> None:
        """Send all of `data`, waiting for the socket as needed.

        Raises:
            trio.BrokenResourceError: the connection is broken.
            trio.ClosedResourceError: the stream was closed.
        """
        self._sending = True
        try:
            await self._stream.send_all(data)
            self.written += len(data)
        finally:
            self._sending = False

    def send_nowait(self, data: bytes) -> int:
        """Write what the socket takes now, without waiting; return how much.

        Returns 0 when the socket is full, and when direct writes are not
        available here (`direct` is False): the caller then sends the rest
        with `send_all`, after any bytes written here.

        Raises:
            trio.BusyResourceError: a `send_all` is in progress.
            trio.ClosedResourceError: after `close_nowait`.
            trio.BrokenResourceError: the connection is broken (reset, EPIPE).
        """
        if self._sending:
            raise trio.BusyResourceError("a send_all is in progress on this socket")
        if self._fd == -2:
            raise trio.ClosedResourceError("the socket writer was closed")
        if self._fd < 0:
            return 0
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self.written += written
        return written

    def close_nowait(self) -> None:
        """No direct write from now on; call it before the stream is closed."""
        self._fd = -2
