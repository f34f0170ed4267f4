"""What a room's events look like on a terminal: plain text, a line each.

Nothing from the server reaches the terminal raw: control characters in
names and texts are shown escaped, so that a message cannot move the cursor,
change colours or redraw someone's screen.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

# C0 controls but tab and newline, DEL, C1 controls: escape sequences and
# carriage returns that would let a message redraw someone's terminal.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NO_TIME: Final = "--:--:--"


def format_event(event: dict[str, Any]) -> str | None:
    """The lines a numbered event is shown as, or None if it is not shown.

    Every line starts with the event's time (`HH:MM:SS`, local time):
    `HH:MM:SS name: text` for a message, continuation lines indented under
    the text; `HH:MM:SS -- name joined` and `HH:MM:SS -- name left (reason)`
    (no reason for a plain `quit`) for the rest.
    """
    kind = event.get("type")
    name = clean(str(event.get("name", "?")))
    time = local_time(event.get("ts"))
    if kind == "message":
        prefix = f"{time} {name}: "
        lines = clean(str(event.get("text", "")).replace("\r\n", "\n")).split("\n")
        return ("\n" + " " * len(prefix)).join([prefix + lines[0], *lines[1:]])
    if kind == "join":
        return f"{time} -- {name} joined"
    if kind == "leave":
        reason = event.get("reason")
        if reason in (None, "quit"):
            return f"{time} -- {name} left"
        return f"{time} -- {name} left ({clean(str(reason))})"
    return None


def clean(text: str) -> str:
    """`text` with control characters (but tab and newline) shown as `\\xNN`."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def local_time(ts: object) -> str:
    """`HH:MM:SS` in local time of an RFC 3339 timestamp, `--:--:--` if there is none."""
    if not isinstance(ts, str):
        return NO_TIME
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return NO_TIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%H:%M:%S")
