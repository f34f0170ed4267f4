"""Reading a room's history further back than the join's replay: the
terminal client's `/history [N]` command and the pages it asks for.

Theory of operation: the client remembers the oldest id it has shown (live,
replayed or from a page). `/history N` asks the server for the N events
before it (`history` with `before` = that id; without one, from the
newest), and the answer is shown oldest first, each line marked as history;
its first id becomes the oldest shown, so the next `/history` reads on from
there. A page with nothing in it, or `more` false, is the beginning of the
room's history. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

HISTORY_COMMAND: Final = "/history"
DEFAULT_PAGE: Final = 20
MAX_PAGE: Final = 100  # the protocol's largest page
MARK: Final = "[history] "
BEGINNING: Final = "-- beginning of the room's history"
USAGE: Final = f"usage: {HISTORY_COMMAND} [N], N from 1 to {MAX_PAGE} (default {DEFAULT_PAGE})"


@dataclass(frozen=True, slots=True)
class ShowHistory:
    """The person asked for the `count` events before the oldest shown."""

    count: int


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command typed wrong: `usage` says how to type it."""

    usage: str


def parse_command(text: str) -> ShowHistory | BadCommand | None:
    """What a typed line (trimmed) asks for: None for a message to send.

    Only `/history` and `/history N` are commands; any other line, `/`
    included, is a message, as it always was.
    """
    word, _, rest = text.partition(" ")
    if word != HISTORY_COMMAND:
        return None
    rest = rest.strip()
    if not rest:
        return ShowHistory(DEFAULT_PAGE)
    if not rest.isascii() or not rest.isdigit() or not 1 <= int(rest) <= MAX_PAGE:
        return BadCommand(USAGE)
    return ShowHistory(int(rest))


def mark(lines: str) -> str:
    """An event's lines (`display.format_event`) marked as history, the
    continuation lines indented to match."""
    return MARK + lines.replace("\n", "\n" + " " * len(MARK))


class Scrollback:
    """The oldest id shown, and the page request on its way (one at a time)."""

    __slots__ = ("_asked", "_count", "oldest", "pending", "wanted")

    def __init__(self) -> None:
        self.oldest: int | None = None  # the oldest id shown
        self.wanted: int | None = None  # events asked for, not requested yet
        self.pending: str | None = None  # the ref of the request on its way
        self._asked = 0  # events it asked for
        self._count = 0

    def shown(self, event: Mapping[str, object]) -> None:
        """A numbered event was shown: the oldest may move back."""
        ident = event.get("id")
        if type(ident) is int and (self.oldest is None or ident < self.oldest):
            self.oldest = ident

    def renumbered(self) -> None:
        """The room's ids started over: the oldest shown means nothing now."""
        self.oldest = None

    def request(self) -> dict[str, Any] | None:
        """The `history` frame to send now, or None if none is wanted."""
        if self.wanted is None:
            return None
        self._count += 1
        self.pending = f"h-{self._count}"
        self._asked = self.wanted
        frame: dict[str, Any] = {"type": "history", "limit": self.wanted, "ref": self.pending}
        if self.oldest is not None:
            frame["before"] = self.oldest
        self.wanted = None
        return frame

    def lost(self) -> None:
        """The connection dropped: a request on its way goes again on the next."""
        if self.pending is not None and self.wanted is None:
            self.wanted = self._asked
        self.pending = None

    def answered(self, event: Mapping[str, object]) -> tuple[list[dict[str, Any]], bool] | None:
        """A `history` event: None if it does not answer our request; else its
        stored events, oldest first, older than what was shown, and whether
        this is the beginning of the room's history."""
        if self.pending is None or event.get("ref") != self.pending:
            return None
        self.pending = None
        raw = event.get("events")
        events = [
            e
            for e in (raw if isinstance(raw, list) else [])
            if isinstance(e, dict)
            and type(e.get("id")) is int
            and (self.oldest is None or e["id"] < self.oldest)
        ]
        events.sort(key=lambda e: e["id"])
        if events:
            self.oldest = events[0]["id"]
        return events, not events or event.get("more") is not True

    def refused(self, ref: object) -> bool:
        """An `error` answered `ref`: whether it was our request (then forgotten)."""
        if self.pending is None or ref != self.pending:
            return False
        self.pending = None
        return True
