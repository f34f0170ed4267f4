"""What the generator learns about the server: its `/metrics` text parsed into a
`ServerSample`, its CPU, memory and scheduler wait read from `/proc`, and the
Trio probe that fetches both over HTTP (`http_request`, which the test suite
uses too).

The parsing and `/proc` reads are plain functions; only `http_request` and
`sample_server` do network I/O, from the coordinator, where nothing is hot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h11
import trio

from ..client.url import ServerUrl
from .plan import BenchError

# -- server metrics ------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: the value of every unlabelled sample by name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if "{" in name:
            continue
        try:
            values[name] = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
    return values


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The server's counters at one instant; None where no source had them."""

    cpu_seconds: float | None = None
    rss_bytes: float | None = None
    deliveries: float | None = None  # trio_chat_deliveries: events queued to clients
    slow_drops: float | None = None
    connections: float | None = None
    wait_seconds: float | None = None  # runnable, waiting for a CPU (--server-pid only)


def sample_from_metrics(metrics: Mapping[str, float]) -> ServerSample:
    def first(*names: str) -> float | None:
        return next((metrics[name] for name in names if name in metrics), None)

    return ServerSample(
        cpu_seconds=first("process_cpu_seconds_total"),
        rss_bytes=first("process_resident_memory_bytes"),
        deliveries=first("trio_chat_deliveries_total", "trio_chat_deliveries"),
        slow_drops=first("trio_chat_slow_drops_total", "trio_chat_slow_drops"),
        connections=first("trio_chat_connections"),
    )


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


def proc_wait_seconds(pid: int | str = "self") -> float | None:
    """Time the process's main thread spent runnable but waiting for a CPU
    (/proc/PID/schedstat); None where Linux does not say."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def proc_sample(pids: Sequence[int]) -> ServerSample:
    """CPU, resident memory and CPU wait of a server made of the processes
    `pids` (a parent and its workers, say), each summed over them; no
    /metrics counters, which one process cannot answer for the others.

    Raises:
        BenchError: a process is gone or /proc cannot be read.
    """
    cpu = rss = 0.0
    wait: float | None = 0.0
    for pid in pids:
        try:
            cpu += proc_cpu_seconds(pid)
            rss += proc_rss_bytes(pid)
        except (OSError, IndexError, ValueError) as error:
            raise BenchError(f"cannot read process {pid} (--server-pid): {error}") from None
        waited = proc_wait_seconds(pid)
        wait = None if wait is None or waited is None else wait + waited
    return ServerSample(cpu_seconds=cpu, rss_bytes=rss, wait_seconds=wait)


def proc_children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, in pid order (from /proc/*/stat,
    which every Linux has; /proc/PID/task/*/children needs a kernel option)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# -- the server probe ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole HTTP response; header names in lower case."""

    status: int
    headers: dict[str, str]
    body: bytes


async def http_request(
    target: ServerUrl,
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
) -> HttpResponse:
    """One request on its own connection, and the whole response.

    Raises:
        OSError: the server cannot be reached.
        h11.RemoteProtocolError: the answer is not HTTP/1.1.
        trio.BrokenResourceError: the connection broke.
    """
    stream = await trio.open_tcp_stream(target.host, target.port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method=method,
            target=path,
            headers=[("Host", target.authority), ("Connection", "close"), *headers],
        )
        await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status, response_headers, body = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {
                    name.decode("latin-1"): value.decode("latin-1")
                    for name, value in event.headers
                }
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return HttpResponse(status, response_headers, b"".join(body))


async def sample_server(target: ServerUrl, pids: Sequence[int] = ()) -> ServerSample:
    """The server's counters: CPU and memory from /proc, summed, when `pids`
    are given, else from `/metrics`; the trio_chat_* counters from `/metrics`
    if it answers, and only for a server of one process (with several
    sharing a port, /metrics answers for whichever took the connection).

    Raises:
        BenchError: the server cannot be reached at all, or a process in
            `pids` cannot be read.
    """
    try:
        response = await http_request(target, "/metrics")
        status, body = response.status, response.body
    except OSError as error:
        raise BenchError(f"cannot reach the server at {target.authority}: {error}") from None
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        status, body = 0, b""
    sample = sample_from_metrics(parse_metrics(body.decode("utf-8", "replace")))
    if status != 200:
        sample = ServerSample()
    if pids:
        counted = sample if len(pids) == 1 else ServerSample()
        sample = replace(
            proc_sample(pids),
            deliveries=counted.deliveries,
            slow_drops=counted.slow_drops,
            connections=counted.connections,
        )
    return sample
