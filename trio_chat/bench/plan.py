"""The plan of a run: the server's address, which connections to open in which
rooms, and the pacing schedule that says when each sender sends what.

Pure arithmetic, no I/O: the schedule puts message m at `start + m / R`, and
sender k of S sends the messages m with `m % S == k`, so the aggregate is
paced, not bursty. `BenchError` lives here, at the bottom of the package,
so that every layer above can raise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..client.url import ServerUrl, ServerUrlError, parse_server_url
from ..core.errors import TrioChatError


class BenchError(TrioChatError):
    """The benchmark cannot run, or its measurement is void; one line for stderr."""


# -- the plan ------------------------------------------------------------------


def parse_target(url: str) -> ServerUrl:
    """The server to measure: a URL as `trio-chat connect` takes it
    (`trio_chat.client.url`), on the server's own port (no TLS).

    Raises:
        BenchError: for anything `parse_server_url` refuses, and TLS.
    """
    try:
        target = parse_server_url(url)
    except ServerUrlError as error:
        raise BenchError(str(error)) from None
    if target.secure:
        raise BenchError(
            f"{url!r}: TLS is not supported; point the generator at the server's own "
            "port (ws:// or http://)"
        )
    return target


@dataclass(frozen=True, slots=True)
class ConnSpec:
    """One connection to open: its name is `c<index>`."""

    index: int
    room: str
    sender: int | None  # its place among the senders, or None for a pure receiver
    pager: bool = False  # it pages back through its room's history (`--pagers`)

    @property
    def name(self) -> str:
        return f"c{self.index}"


def plan_connections(
    connections: int,
    *,
    rooms: int,
    senders: int,
    procs: int,
    room_prefix: str,
    pagers: int = 0,
) -> list[list[ConnSpec]]:
    """Connection i joins room `i % rooms`, sends if `i < senders`, pages back
    through history if it is one of the last `pagers`, and lives in process
    `i % procs`: senders, pagers and rooms spread over the processes evenly."""
    plan: list[list[ConnSpec]] = [[] for _ in range(procs)]
    for i in range(connections):
        sender = i if i < senders else None
        spec = ConnSpec(i, f"{room_prefix}{i % rooms}", sender, i >= connections - pagers)
        plan[i % procs].append(spec)
    return plan


# -- the pacing schedule -------------------------------------------------------


def total_messages(rate: float, duration: float) -> int:
    """Messages in a step: message m is due at `m / rate`, for every m with
    `m / rate < duration`."""
    return max(0, math.ceil(rate * duration - 1e-9))


def messages_due(elapsed: float, rate: float, total: int) -> int:
    """How many messages of the global schedule are due `elapsed` s after the start."""
    if elapsed < 0:
        return 0
    return min(total, math.floor(elapsed * rate + 1e-9) + 1)


def sender_share(count: int, sender: int, senders: int) -> int:
    """How many of the first `count` messages are sender's: m with `m % senders == sender`."""
    return (count - sender + senders - 1) // senders if count > sender else 0


def send_offset(sender: int, n: int, senders: int, rate: float) -> float:
    """When sender's n-th message (from 0) is due, in seconds after the start."""
    return (sender + n * senders) / rate


def sweep_rates(start: float, factor: float, steps: int) -> list[float]:
    """`start`, then multiplied by `factor` each step (rounded to 3 significant digits)."""
    return [float(f"{start * factor**k:.3g}") if k else start for k in range(steps)]
