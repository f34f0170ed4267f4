"""A terminal for the client: read key by key without echo, and the live
area at the bottom of the screen (pending lines and the input line),
redrawn under everything printed above it."""

from __future__ import annotations

import contextlib
import os
import termios
from collections.abc import Iterator
from typing import TextIO

from ..client.display import clean
from ..client.lineedit import PROMPT, LineEditor, erase, live_rows, repaint


@contextlib.contextmanager
def keys_mode(fd: int) -> Iterator[None]:
    """Read the terminal `fd` key by key, without its echo, for the time of
    the block; Ctrl-C and Ctrl-Z still send their signals. Put back as it
    was on the way out, whatever happens."""
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSADRAIN, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Screen:
    """The bottom of a terminal: pending lines and the input line, redrawn
    under everything printed (`client.lineedit` computes what to write)."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.editor = LineEditor()
        self._stdout = stdout
        self._stderr = stderr
        self._drawn = 0  # rows of the live area on the screen now
        self._pending: list[str] = []

    def _width(self) -> int:
        try:
            return max(10, os.get_terminal_size(self._stdout.fileno()).columns)
        except (OSError, ValueError):
            return 80

    def _frame(self, above: list[str]) -> str:
        width = self._width()
        line, column = self.editor.render(width)
        rows = live_rows(self._pending, line, width)
        text = repaint(self._drawn, above, rows, column)
        self._drawn = len(rows)
        return text

    def show(self, text: str) -> None:
        """Print `text` (one or more lines) above the live area."""
        self._stdout.write(self._frame([text]))
        self._stdout.flush()

    def warn(self, text: str) -> None:
        """Print `text` on standard error, above the live area."""
        self._stdout.write(erase(self._drawn))
        self._stdout.flush()
        self._drawn = 0
        self._stderr.write(text + "\n")
        self._stderr.flush()
        self.redraw()

    def redraw(self, pending: list[str] | None = None) -> None:
        if pending is not None:
            self._pending = pending
        self._stdout.write(self._frame([]))
        self._stdout.flush()

    def close(self, *, interrupted: bool) -> None:
        """Leave the screen for the shell: the live area erased, the line being
        typed left as it was (with `^C` after an interrupt), and the cursor on
        a line of its own."""
        self._stdout.write(erase(self._drawn))
        self._drawn = 0
        typed = self.editor.text
        if typed or interrupted:
            self._stdout.write(PROMPT + clean(typed) + ("^C" if interrupted else "") + "\n")
        self._stdout.flush()
