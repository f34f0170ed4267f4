"""The terminal client's line editor and screen layout, without I/O.

Theory of operation: when standard input is a terminal, the client reads it
key by key (the terminal's own echo and line editing are off) and keeps the
line being typed here, in a `LineEditor`. The bottom of the screen is a
*live area*: the lines still pending delivery, then the input line. Anything
printed (an incoming message, a warning) goes above it: `repaint` erases the
live area, writes the new lines, and draws the live area again under them, so
a half-typed line is never split by an incoming one.

Invariants:

* `0 <= cursor <= len(text)`, and every edit keeps it so.
* Feeding the same characters in any chunking gives the same state: an
  escape sequence cut between two reads waits in `_escape` for the rest.
* Every row of the live area is narrower than the terminal (the input line
  scrolls sideways around the cursor, pending lines are cut), so the area is
  exactly as many rows as it has lines, and erasing it means going up that
  many rows less one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

ERASE_BELOW: Final = "\x1b[J"  # from the cursor to the end of the screen
DIM: Final = "\x1b[2m"
NORMAL: Final = "\x1b[0m"
PROMPT: Final = "> "
MAX_PENDING_SHOWN: Final = 3
_HISTORY: Final = 500  # submitted lines kept for the up and down arrows

# CSI (ESC [ params final) and SS3 (ESC O final): the keys below; the rest is ignored.
_CSI: Final = re.compile(r"\x1b\[([0-9;]*)([\x40-\x7e])|\x1bO([\x40-\x7e])")
_CSI_PREFIX: Final = re.compile(r"\x1b(\[[0-9;]*|O)?")
_KEYS: Final = {
    ("", "A"): "up",
    ("", "B"): "down",
    ("", "C"): "right",
    ("", "D"): "left",
    ("", "H"): "home",
    ("", "F"): "end",
    ("1", "~"): "home",
    ("7", "~"): "home",
    ("4", "~"): "end",
    ("8", "~"): "end",
    ("3", "~"): "delete",
}
_CONTROL_KEYS: Final = {
    "\r": "enter",
    "\n": "enter",
    "\x7f": "backspace",
    "\x08": "backspace",
    "\x01": "home",
    "\x05": "end",
    "\x02": "left",
    "\x06": "right",
    "\x10": "up",
    "\x0e": "down",
    "\x0b": "kill_end",
    "\x15": "kill_start",
    "\x17": "kill_word",
    "\x04": "eof_or_delete",
    "\x0c": "redraw",
}


@dataclass(frozen=True, slots=True)
class Submitted:
    """Enter: the line typed (as typed; the caller trims and checks it)."""

    text: str


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """Ctrl-D on an empty line: the user is done typing."""


@dataclass(frozen=True, slots=True)
class Redraw:
    """Ctrl-L: draw the live area again."""


Action = Submitted | EndOfInput | Redraw


class LineEditor:
    """The line being typed, its cursor and the lines typed before it.

    Call `feed` with decoded characters as they arrive; it returns what the
    caller must do besides redrawing (which it should do after every `feed`).
    """

    __slots__ = ("_escape", "_history", "_history_at", "_stash", "cursor", "text")

    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0
        self._escape = ""  # an escape sequence begun but not yet complete
        self._history: list[str] = []
        self._history_at = 0  # == len(_history) when editing a new line
        self._stash = ""  # the new line, kept while browsing the history

    def feed(self, chars: str) -> list[Action]:
        """Apply typed characters; returns the actions they complete, in order."""
        actions: list[Action] = []
        data = self._escape + chars
        self._escape = ""
        i = 0
        while i < len(data):
            char = data[i]
            if char == "\x1b":
                match = _CSI.match(data, i)
                if match is None:
                    prefix = _CSI_PREFIX.match(data, i)
                    if prefix is not None and prefix.end() == len(data):
                        self._escape = data[i:]  # the rest comes with the next read
                        break
                    i += 1  # a lone ESC (or Alt-something): ignored
                    continue
                params, final, ss3 = match.groups()
                key = _KEYS.get(("", ss3) if ss3 else (params.split(";")[0], final))
                if key is not None:
                    self._key(key, actions)
                i = match.end()
                continue
            key = _CONTROL_KEYS.get(char)
            if key is not None:
                self._key(key, actions)
            elif char == "\t" or unicodedata.category(char)[0] != "C":
                self.text = self.text[: self.cursor] + char + self.text[self.cursor :]
                self.cursor += 1
            i += 1
        return actions

    def _key(self, key: str, actions: list[Action]) -> None:
        text, cursor = self.text, self.cursor
        if key == "enter":
            actions.append(Submitted(text))
            if text.strip():
                self._history = [*self._history[-(_HISTORY - 1) :], text]
            self._history_at, self._stash = len(self._history), ""
            self.text, self.cursor = "", 0
        elif key == "backspace" and cursor:
            self.text, self.cursor = text[: cursor - 1] + text[cursor:], cursor - 1
        elif key == "delete" or (key == "eof_or_delete" and text):
            self.text = text[:cursor] + text[cursor + 1 :]
        elif key == "eof_or_delete":
            actions.append(EndOfInput())
        elif key == "left":
            self.cursor = max(0, cursor - 1)
        elif key == "right":
            self.cursor = min(len(text), cursor + 1)
        elif key == "home":
            self.cursor = 0
        elif key == "end":
            self.cursor = len(text)
        elif key == "kill_end":
            self.text = text[:cursor]
        elif key == "kill_start":
            self.text, self.cursor = text[cursor:], 0
        elif key == "kill_word":
            start = len(text[:cursor].rstrip())
            while start and not text[start - 1].isspace():
                start -= 1
            self.text, self.cursor = text[:start] + text[cursor:], start
        elif key in ("up", "down"):
            self._browse(-1 if key == "up" else 1)
        elif key == "redraw":
            actions.append(Redraw())

    def _browse(self, step: int) -> None:
        at = self._history_at + step
        if not 0 <= at <= len(self._history):
            return
        if self._history_at == len(self._history):
            self._stash = self.text
        self._history_at = at
        self.text = self._history[at] if at < len(self._history) else self._stash
        self.cursor = len(self.text)

    def render(self, width: int) -> tuple[str, int]:
        """The input line as drawn on a terminal `width` cells wide (prompt
        included), and the cursor's column: narrower than `width`, scrolled
        sideways so that the cursor is always in view."""
        room = max(1, width - 1 - len(PROMPT))
        shown = [_visible(char) for char in self.text]
        widths = [cell_width(char) for char in shown]
        start = 0
        # Keep the cursor (and the cell it stands on) inside `room` cells.
        while sum(widths[start : self.cursor]) + 1 > room and start < self.cursor:
            start += 1
        end, used = start, 0
        while end < len(shown) and used + widths[end] <= room:
            used += widths[end]
            end += 1
        column = len(PROMPT) + sum(widths[start : self.cursor])
        return PROMPT + "".join(shown[start:end]), column


def cell_width(char: str) -> int:
    """Terminal cells a character takes: 0 for combining marks, 2 for wide ones."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit(text: str, width: int) -> str:
    """`text` cut to fewer than `width` cells (an ellipsis marks a cut)."""
    limit = max(1, width - 1)
    if sum(cell_width(char) for char in text) <= limit:
        return text
    used, out = 0, []
    for char in text:
        cells = cell_width(char)
        if used + cells > limit - 1:
            break
        used += cells
        out.append(char)
    return "".join(out) + "…"


def _visible(char: str) -> str:
    return " " if char == "\t" else char


def live_rows(pending: Sequence[str], input_line: str, width: int) -> list[str]:
    """The rows of the live area: pending lines (dim, at most
    `MAX_PENDING_SHOWN`, then a count), and the input line last."""
    rows = []
    for text in pending[:MAX_PENDING_SHOWN]:
        row = fit("(pending) " + " ".join(text.split()), width)
        rows.append(DIM + row + NORMAL)
    if len(pending) > MAX_PENDING_SHOWN:
        rows.append(DIM + fit(f"(and {len(pending) - MAX_PENDING_SHOWN} more pending)", width))
        rows[-1] += NORMAL
    rows.append(input_line)
    return rows


def repaint(drawn: int, above: Sequence[str], rows: Sequence[str], column: int) -> str:
    """What to write to go from a live area of `drawn` rows (cursor on its
    last row; 0 if none is drawn) to `above` printed and `rows` drawn below
    it, the cursor on the last row at `column`."""
    out = ["\r"]
    if drawn > 1:
        out.append(f"\x1b[{drawn - 1}A")
    out.append(ERASE_BELOW)
    out.extend(line + "\n" for line in above)
    out.append("\n".join(rows))
    out.append("\r")
    if column:
        out.append(f"\x1b[{column}C")
    return "".join(out)


def erase(drawn: int) -> str:
    """What to write to erase a live area of `drawn` rows, leaving the cursor
    at the start of its first row."""
    return "\r" + (f"\x1b[{drawn - 1}A" if drawn > 1 else "") + ERASE_BELOW
