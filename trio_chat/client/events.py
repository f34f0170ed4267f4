"""A server frame split into its events.

The server sends everything a client has queued as one text frame, one JSON
object a line (docs/protocol.md, "Frames"), so every client splits frames
the same way. The load generator, which measures, slices bytes instead and
decodes only the lines it must (`trio_chat.bench.counting`).
"""

from __future__ import annotations

import json
from typing import Any


def split_frame(frame: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The events in `frame`, in order, and the lines that are not a JSON
    object (a client may skip them, a test should fail on them)."""
    events: list[dict[str, Any]] = []
    bad: list[str] = []
    for line in frame.split("\n"):
        try:
            event = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(line)
    return events, bad
