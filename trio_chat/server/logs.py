"""Log lines as JSON objects (`--log-format json`), one per line.

Every object has the same four keys first: `ts` (UTC, ISO 8601 with
milliseconds and `Z`), `level` (`DEBUG`, `INFO`, ...), `logger` and
`message` (the formatted text, as the text format shows it). The fields a
call gives with `extra=` follow under their own names, so that a log
pipeline can filter on them (`event`, `client`, `room`, ...); a field that
would shadow one of the four is prefixed with `extra_`. A traceback is one
string under `exc`. Values JSON cannot hold are written as their `str`.

A formatter rather than a dependency: the standard library's `logging` and
`json` do all of it in a few lines, and the keys stay ours to keep stable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Final

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime", "taskName"}
_KEYS: Final = ("ts", "level", "logger", "message")


def utc_timestamp(created: float) -> str:
    """`created` (seconds since the epoch) as `2026-11-27T19:48:58.123Z`."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON; see the module docstring.

    `static` fields are added to every line after the four stable keys (a
    worker of `serve --workers N` adds its number and pid this way).
    """

    def __init__(self, static: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(self._static)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[f"extra_{key}" if key in _KEYS else key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # ASCII escapes keep each object on one line whatever the terminal's encoding.
        return json.dumps(line, default=str)
