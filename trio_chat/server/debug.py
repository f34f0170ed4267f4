"""Debug mode (`--debug`): the live task tree, the heap and a CPU profile.

The Python counterparts of Go's pprof endpoints, served on the chat's own
port under `/debug/` and nowhere else; without `--debug` they do not exist
(404, as any unknown path).

* `/debug/tasks`: every Trio task, nested under the nurseries it runs in,
  from the root task down (`trio.lowlevel.current_root_task`, then each
  task's `child_nurseries` and their `child_tasks`), each with what it
  serves (a session's client address, member name and room, read from the
  `Session` its coroutine frames hold) and where it waits (its await
  frames, outermost first). Plain text, or JSON with `?format=json`.
* `/debug/heap`: the top allocation sites (`tracemalloc`, started by
  `DebugEndpoints.start` only in debug mode, since tracing slows every
  allocation) and their growth since the previous call, whose snapshot is
  kept here. `?limit=N` sites (1..100, 25 by default); `?format=json`.
* `/debug/profile?seconds=N` (1..60): a CPU profile of the whole server for
  N seconds with pyinstrument, as HTML or speedscope JSON
  (`?format=speedscope`). The request's task only sleeps meanwhile, so the
  event loop runs on; one profile at a time (409 otherwise).

Who may ask: with `--debug-token`, any client sending `Authorization:
Bearer TOKEN` (compared in constant time); without, loopback clients only,
and never a request that came through a proxy (`Forwarded` or
`X-Forwarded-For`): a proxy on the same machine connects from loopback on
behalf of anyone.

This is the one module of the package that uses `trio.lowlevel` (task and
nursery introspection is what it is for); a test holds that line.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio
import trio.lowlevel

from .session import Session

if TYPE_CHECKING:
    from .http import Request

PROFILE_SECONDS = (1.0, 60.0)  # the bounds of /debug/profile?seconds=N
PROFILE_INTERVAL = 0.001  # seconds between pyinstrument's samples
HEAP_LIMIT = 25  # allocation sites /debug/heap lists by default
HEAP_MAX_LIMIT = 100
TRACEMALLOC_FRAMES = 1  # frames kept per allocation: sites are lines; more costs more
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PACKAGE = Path(__file__).resolve().parent.parent  # trio_chat/
_TRAPS = trio.lowlevel.wait_task_rescheduled.__code__.co_filename
# What tracemalloc itself allocates while snapshotting is not the server's.
_HEAP_FILTERS = (
    tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib._bootstrap*>"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<unknown>"),
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response for the server to send."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class DebugEndpoints:
    """The `/debug/` routes of one server in debug mode; see the module docstring."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()
        self._last_heap: tracemalloc.Snapshot | None = None
        self._profiling = False
        self._started_tracing = False

    # -- lifetime ------------------------------------------------------------

    def start(self) -> None:
        """Start tracing allocations (if nothing traces them yet)."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACEMALLOC_FRAMES)
            self._started_tracing = True

    def stop(self) -> None:
        """Stop the tracing `start` began (the server is done)."""
        if self._started_tracing:
            tracemalloc.stop()
            self._started_tracing = False
        self._last_heap = None

    # -- requests ------------------------------------------------------------

    async def answer(self, request: Request, stream: trio.abc.Stream) -> Answer:
        """The answer to a request under `/debug/`: a refusal, or the page.

        `/debug/profile` takes its `seconds`; cancelling it (the server
        shutting down) stops the profiler too.
        """
        refusal = self._refusal(request, stream)
        if refusal is not None:
            return refusal
        query = parse_qs(request.query, keep_blank_values=True)
        form = query.get("format", [""])[-1]
        if request.path == "/debug/tasks":
            return self._tasks(form)
        if request.path == "/debug/heap":
            return await self._heap(form, query.get("limit", [str(HEAP_LIMIT)])[-1])
        if request.path == "/debug/profile":
            return await self._profile(form, query.get("seconds", ["10"])[-1])
        return Answer(404, b"not found\n")

    def _refusal(self, request: Request, stream: trio.abc.Stream) -> Answer | None:
        if self._token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, credentials = given.partition(" ")
            if not given or scheme.lower() != "bearer":
                return Answer(
                    401,
                    b"debug endpoints need the header 'Authorization: Bearer TOKEN' "
                    b"(the server's --debug-token)\n",
                    headers=(("WWW-Authenticate", 'Bearer realm="trio-chat debug"'),),
                )
            if not hmac.compare_digest(credentials.strip().encode(), self._token):
                return Answer(403, b"wrong debug token\n")
            return None
        if "forwarded" in request.headers or "x-forwarded-for" in request.headers:
            return Answer(
                403,
                b"debug endpoints answer loopback clients only, never through a proxy "
                b"(set --debug-token to allow others)\n",
            )
        if not _is_loopback(stream):
            return Answer(
                403,
                b"debug endpoints answer loopback clients only "
                b"(set --debug-token to allow others)\n",
            )
        return None

    # -- /debug/tasks --------------------------------------------------------

    def _tasks(self, form: str) -> Answer:
        root_task = trio.lowlevel.current_root_task()
        assert root_task is not None  # called from a task: trio is running
        root = _task_node(root_task)
        if form == "json":
            body = json.dumps({"tasks": _count(root), "root": root}, indent=1)
            return _json(body)
        if form not in ("", "text"):
            return _bad_format(form, "text, json")
        lines = [f"{_count(root)} tasks"]
        _render(root, 0, lines)
        return _text("\n".join(lines))

    # -- /debug/heap ---------------------------------------------------------

    async def _heap(self, form: str, limit_text: str) -> Answer:
        if form not in ("", "text", "json"):
            return _bad_format(form, "text, json")
        if not (_NUMBER.fullmatch(limit_text) and 1 <= float(limit_text) <= HEAP_MAX_LIMIT):
            return Answer(400, f"limit must be from 1 to {HEAP_MAX_LIMIT}\n".encode())
        if not tracemalloc.is_tracing():
            return Answer(409, b"allocations are not being traced (tracemalloc is off)\n")
        limit = int(float(limit_text))
        previous = self._last_heap
        # Snapshots and their statistics take a while with many allocations:
        # off the event loop's thread, so the chat only slows, never stops.
        snapshot, top, growth = await trio.to_thread.run_sync(_heap_report, previous, limit)
        self._last_heap = snapshot
        current, peak = tracemalloc.get_traced_memory()
        report: dict[str, Any] = {
            "traced_bytes": current,
            "peak_bytes": peak,
            "top": [_site(stat.traceback, stat.size, stat.count) for stat in top],
            "growth": None
            if growth is None
            else [
                _site(diff.traceback, diff.size, diff.count, diff.size_diff, diff.count_diff)
                for diff in growth
            ],
        }
        if form == "json":
            return _json(json.dumps(report, indent=1))
        lines = [
            f"traced now {_size(current)}, peak {_size(peak)}",
            "",
            f"top {len(top)} allocation sites, by size:",
            *(
                f"  {_size(site['size']):>10} {site['count']:>9} blocks  {site['where']}"
                for site in report["top"]
            ),
            "",
        ]
        if report["growth"] is None:
            lines.append("growth since the last call: none yet (this call is the baseline)")
        else:
            lines.append("growth since the last call, by size:")
            lines += [
                f"  {_signed_size(site['size_diff']):>11} {site['count_diff']:>+9} blocks  "
                f"{site['where']} (now {_size(site['size'])})"
                for site in report["growth"]
            ]
        return _text("\n".join(lines))

    # -- /debug/profile ------------------------------------------------------

    async def _profile(self, form: str, seconds_text: str) -> Answer:
        low, high = PROFILE_SECONDS
        if not (_NUMBER.fullmatch(seconds_text) and low <= float(seconds_text) <= high):
            return Answer(400, f"seconds must be a number from {low:g} to {high:g}\n".encode())
        if form not in ("", "html", "speedscope"):
            return _bad_format(form, "html, speedscope")
        if self._profiling:
            return Answer(409, b"a profile is already running: try again when it is done\n")
        # Imported here: only debug mode loads the profiler.
        from pyinstrument import Profiler  # noqa: PLC0415
        from pyinstrument.renderers import HTMLRenderer, SpeedscopeRenderer  # noqa: PLC0415

        # async_mode "disabled": sample whatever the thread runs, every task
        # and the event loop. ("enabled" would follow this request's own
        # task, which does nothing but sleep.)
        profiler = Profiler(interval=PROFILE_INTERVAL, async_mode="disabled")
        self._profiling = True
        try:
            profiler.start()
            try:
                await trio.sleep(float(seconds_text))
            finally:
                profiler.stop()
        finally:
            self._profiling = False
        if form == "speedscope":
            return _json(profiler.output(SpeedscopeRenderer()))
        return Answer(200, profiler.output(HTMLRenderer()).encode(), "text/html; charset=utf-8")


# -- the task tree -----------------------------------------------------------------


def _task_node(task: trio.lowlevel.Task) -> dict[str, Any]:
    # Outermost first. Trio's trap frames end every waiting stack: noise.
    frames = [
        (frame, line)
        for frame, line in task.iter_await_frames()
        if frame.f_code.co_filename != _TRAPS
    ]
    running = task is trio.lowlevel.current_task()
    return {
        "name": task.name,
        "serves": _serves(frames),
        "state": "running (this request)" if running else "waiting",
        "waiting": [] if running else [_frame(frame, line) for frame, line in frames],
        "nurseries": [
            {"tasks": [_task_node(child) for child in _ordered(nursery.child_tasks)]}
            for nursery in task.child_nurseries
        ],
    }


def _ordered(tasks: frozenset[trio.lowlevel.Task]) -> list[trio.lowlevel.Task]:
    """A nursery's tasks by name, so that two dumps compare line by line."""
    return sorted(tasks, key=lambda task: task.name)


def _serves(frames: list[tuple[FrameType, int]]) -> str | None:
    """Who a task works for: the session one of its frames belongs to, or
    the client of a connection still speaking plain HTTP."""
    label = None
    for frame, _line in frames:
        local = frame.f_locals
        session = local.get("self")
        if not isinstance(session, Session):
            session = local.get("session")
        if isinstance(session, Session):
            return session.describe()
        if label is None and frame.f_code.co_name == "handle_connection":
            label = local.get("label")
    return None if label is None else f"client {label} (HTTP)"


def _frame(frame: FrameType, line: int) -> dict[str, Any]:
    return {"function": frame.f_code.co_qualname, "file": _where(frame), "line": line}


def _where(frame: FrameType) -> str:
    return _short_path(frame.f_code.co_filename)


def _short_path(filename: str) -> str:
    """A source file's path from its package (`trio_chat/...`, `trio/...`)."""
    path = Path(filename)
    if path.is_relative_to(_PACKAGE.parent):
        return str(path.relative_to(_PACKAGE.parent))
    # A library or the standard library: from the deepest import folder
    # holding it (site-packages lies inside the standard library's folder).
    folders = [folder for folder in sys.path if folder and path.is_relative_to(folder)]
    return str(path.relative_to(max(folders, key=len))) if folders else str(path)


def _count(node: dict[str, Any]) -> int:
    return 1 + sum(_count(child) for nursery in node["nurseries"] for child in nursery["tasks"])


def _render(node: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    serves = f"  [{node['serves']}]" if node["serves"] else ""
    lines.append(f"{pad}task {node['name']}{serves}")
    if not node["waiting"]:
        lines.append(f"{pad}  {node['state']}")
    else:
        # The headline: the innermost frame of our own code, where the task
        # chose to wait; then the whole stack, outermost first.
        ours = [f for f in node["waiting"] if f["file"].startswith("trio_chat/")]
        spot = (ours or node["waiting"])[-1]
        lines.append(f"{pad}  waiting in {spot['function']} ({spot['file']}:{spot['line']})")
        lines += [
            f"{pad}    {frame['function']} ({frame['file']}:{frame['line']})"
            for frame in node["waiting"]
        ]
    for number, nursery in enumerate(node["nurseries"], 1):
        count = len(nursery["tasks"])
        lines.append(f"{pad}  nursery {number}: {count} task{'s' * (count != 1)}")
        for child in nursery["tasks"]:
            _render(child, depth + 2, lines)


def _is_loopback(stream: trio.abc.Stream) -> bool:
    if not isinstance(stream, trio.SocketStream):
        return False
    try:
        host = stream.socket.getpeername()[0]
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (OSError, ValueError, TypeError, IndexError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# -- the heap ------------------------------------------------------------------------


def _heap_report(
    previous: tracemalloc.Snapshot | None, limit: int
) -> tuple[
    tracemalloc.Snapshot, list[tracemalloc.Statistic], list[tracemalloc.StatisticDiff] | None
]:
    """In a worker thread: a snapshot, its top sites, and the top changes
    since `previous` (None on the first call)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(_HEAP_FILTERS)
    top = snapshot.statistics("lineno")[:limit]
    growth = None
    if previous is not None:
        growth = [diff for diff in snapshot.compare_to(previous, "lineno") if diff.size_diff][
            :limit
        ]
    return snapshot, top, growth


def _site(
    traceback: tracemalloc.Traceback,
    size: int,
    count: int,
    size_diff: int | None = None,
    count_diff: int | None = None,
) -> dict[str, Any]:
    frame = traceback[0]
    where = f"{_short_path(frame.filename)}:{frame.lineno}"
    site: dict[str, Any] = {"where": where, "size": size, "count": count}
    if size_diff is not None:
        site["size_diff"] = size_diff
        site["count_diff"] = count_diff
    return site


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def _signed_size(nbytes: int) -> str:
    return ("+" if nbytes >= 0 else "-") + _size(abs(nbytes))


# -- answers ---------------------------------------------------------------------------


def _text(body: str) -> Answer:
    return Answer(200, (body + "\n").encode())


def _json(body: str) -> Answer:
    return Answer(200, body.encode(), "application/json")


def _bad_format(form: str, choices: str) -> Answer:
    shown = form if len(form) <= 20 and form.isprintable() else form[:20] + "..."
    return Answer(400, f"format {shown!r} is not one of {choices}\n".encode())
