"""How fast the backplane numbers, stores and publishes says, three ways.

    redis-server --port 6390 --save "" --appendonly no &
    python benchmarks/backplane_say.py --url redis://127.0.0.1:6390/0 [--runs 3]
        [--says 4096] [--batches 1,16,64,256] [--rooms 1,8] [--in-flight 4]

Use a server of its own (the script reads its `INFO` counters, which count
every client) with persistence off; it writes keys `tc:{bench-...}:*` only
and deletes them at the end. Each way is measured for every batch size and
room count, about `--says` says per measurement, after one warm-up batch:

* `per-say`: the old path's shape, one pipeline of one script call per say
  (a `SAY_MANY` of one post: the five commands the old `SAY` ran);
* `say-many`: `Backplane.say_many`, one pipeline of one `SAY_MANY` per room;
* `in-flight`: `--in-flight` tasks of one task group, each calling
  `say_many` with its own batch as soon as its last one is answered.

Says go round-robin over the rooms, one member each. The same backplane is
subscribed to every room (as a hub is) and a task drains its events, so the
fan-out of each PUBLISH to one subscriber is part of the cost, and each
measurement ends once its events have arrived. `--no-subscribe` leaves the
subscription out, to see what sending costs alone.

Columns: says per second and wall-clock microseconds per say (min-max over
the runs), this process's CPU per say (glide's threads included), the
server's time per say (`INFO commandstats`: EVALSHA's usec, the script's
inner commands included), EVALSHA calls and commands run inside the scripts
per say, and bytes per say received and sent by the server (`INFO stats`
total_net_input_bytes / total_net_output_bytes, less the `INFO` requests'
own bytes). All but the first two are medians over the runs.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from trio_chat.backplane import keys, scripts
from trio_chat.backplane.redis import Backplane, open_backplane
from trio_chat.backplane.scripts import Post
from trio_chat.backplane.url import parse_backplane_url
from trio_chat.core import protocol

TS = protocol.format_timestamp(1_700_000_000)
WAYS = ("per-say", "say-many", "in-flight")
DRAIN_WAIT = 30.0  # seconds for the published events to reach the subscriber


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement: `says` says of one way, batch size and room count."""

    says: int
    wall: float  # seconds
    cpu: float  # seconds of this process's CPU
    server_usec: float  # EVALSHA usec, inner commands included
    evalsha: int
    inner: int  # commands the scripts ran
    bytes_in: int
    bytes_out: int


class Info:
    """`INFO stats commandstats` over a connection of its own, as numbers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.overhead_in = 0
        self.overhead_out = 0

    async def read(self) -> dict[str, float]:
        await self._stream.send_all(b"*3\r\n$4\r\nINFO\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n")
        head = await self._line()
        if not head.startswith(b"$"):
            raise SystemExit(f"INFO failed: {head.decode(errors='replace')}")
        body = await self._exactly(int(head[1:]) + 2)
        found: dict[str, float] = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(":")
            if name.startswith("cmdstat_"):
                fields = dict(part.split("=") for part in value.split(","))
                found[f"{name}.calls"] = float(fields["calls"])
                found[f"{name}.usec"] = float(fields["usec"])
            elif name in {"total_net_input_bytes", "total_net_output_bytes"}:
                found[name] = float(value)
        return found

    async def calibrate(self) -> None:
        """The bytes two back-to-back reads add to the counters themselves."""
        first = await self.read()
        second = await self.read()
        self.overhead_in = int(second["total_net_input_bytes"] - first["total_net_input_bytes"])
        self.overhead_out = int(second["total_net_output_bytes"] - first["total_net_output_bytes"])

    async def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._buffer += await self._receive()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += await self._receive()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def _receive(self) -> bytes:
        data = await self._stream.receive_some(65536)
        if not data:
            raise SystemExit("the server closed the INFO connection")
        return data


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def inner_calls(after: dict[str, float], before: dict[str, float]) -> int:
    """Commands run inside scripts: every command but those a client sends here."""
    sent = {"cmdstat_evalsha", "cmdstat_info", "cmdstat_set", "cmdstat_ping"}
    return int(
        sum(
            delta(after, before, key)
            for key in after
            if key.endswith(".calls") and key.removesuffix(".calls") not in sent
        )
    )


class Bench:
    """One backplane with a member in each of `rooms` rooms, subscribed to them."""

    def __init__(
        self,
        backplane: Backplane,
        info: Info,
        rooms: Sequence[str],
        *,
        in_flight: int,
        subscribe: bool,
    ) -> None:
        self.bp = backplane
        self.subscribe = subscribe
        self.info = info
        self.rooms = list(rooms)
        self.in_flight = in_flight
        self.published = 0
        self.heard = 0
        self._arrived = trio.Event()
        self._counter = 0

    async def join_all(self) -> None:
        for n, room in enumerate(self.rooms):
            if self.subscribe:
                await self.bp.subscribe(room)
            line = protocol.join_event(0, room, f"m{n}", TS)
            await self.bp.join(room, self.token(n), f"m{n}", line)
            self.published += 1

    def token(self, n: int) -> str:
        return keys.member_token(self.bp.node, n)

    def posts(self, count: int, rooms: int) -> list[Post]:
        found = []
        for _ in range(count):
            self._counter += 1
            n = self._counter % rooms
            room = self.rooms[n]
            text = f"say {self._counter} of a benchmark, about as long as a line of chat"
            line = protocol.message_event(0, room, f"m{n}", text, TS, ref=None)
            found.append(Post(room, self.token(n), line))
        return found

    async def per_say(self, posts: Sequence[Post]) -> None:
        candidate = secrets.token_hex(8)
        limit = self.bp.history_limit
        calls = [
            scripts.say_many_call(p.room, [p], candidate=candidate, history_limit=limit)
            for p in posts
        ]
        # The old path's shape, kept here as the baseline: `_run` sends any calls.
        replies = await self.bp._run(calls)
        assert all(scripts.parse_say_many_reply(reply, 1) != [None] for reply in replies)

    async def say_many(self, posts: Sequence[Post]) -> None:
        assert None not in await self.bp.say_many(posts)

    async def serve_drain(self) -> None:
        """Take every event the subscription hears, waking `wait_published`."""
        async for _event in self.bp.events:
            self.heard += 1
            self._arrived.set()

    async def wait_published(self) -> None:
        if not self.subscribe:
            return
        with trio.fail_after(DRAIN_WAIT):
            while self.heard + self.bp.statistics().overflowed < self.published:
                self._arrived = trio.Event()
                await self._arrived.wait()

    async def measure(self, way: str, batch: int, rooms: int, says: int) -> Sample:
        in_flight = self.in_flight if way == "in-flight" else 1
        send: Callable[[Sequence[Post]], Awaitable[None]]
        send = self.per_say if way == "per-say" else self.say_many
        calls_each = max(1, -(-says // (batch * in_flight)))
        await send(self.posts(batch, rooms))  # warm-up
        self.published += batch
        await self.wait_published()
        total = calls_each * batch * in_flight
        before = await self.info.read()
        cpu, wall = time.process_time(), time.perf_counter()

        async def worker() -> None:
            for _ in range(calls_each):
                await send(self.posts(batch, rooms))

        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker)
        self.published += total
        await self.wait_published()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = await self.info.read()
        return Sample(
            says=total,
            wall=wall,
            cpu=cpu,
            server_usec=delta(after, before, "cmdstat_evalsha.usec"),
            evalsha=int(delta(after, before, "cmdstat_evalsha.calls")),
            inner=inner_calls(after, before),
            bytes_in=int(delta(after, before, "total_net_input_bytes")) - self.info.overhead_in,
            bytes_out=int(delta(after, before, "total_net_output_bytes")) - self.info.overhead_out,
        )


async def clean(info_stream: trio.SocketStream, rooms: Sequence[str]) -> None:
    names = [f(room) for room in rooms for f in (keys.seq, keys.epoch, keys.log)]
    names += [f(room) for room in rooms for f in (keys.members, keys.names)]
    parts = [b"DEL", *(name.encode() for name in names)]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    await info_stream.send_all(request)
    await info_stream.receive_some(1024)


def format_range(values: Sequence[float], digits: int = 0) -> str:
    """`low-high`, rounded to `digits` places (negative: to tens, hundreds...)."""
    places = max(digits, 0)
    low, high = (f"{round(value, digits):.{places}f}" for value in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def report(results: dict[tuple[str, int, int], list[Sample]]) -> None:
    print(
        "| way | rooms | batch | says/s | us/say | client CPU us/say | server us/say "
        "| EVALSHA/say | script cmds/say | in B/say | out B/say |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (way, rooms, batch), samples in results.items():

        def median(field: Callable[[Sample], float], samples: list[Sample] = samples) -> float:
            return statistics.median(field(s) / s.says for s in samples)

        rates = [s.says / s.wall for s in samples]
        per_say = [s.wall / s.says * 1e6 for s in samples]
        print(
            f"| {way} | {rooms} | {batch} | {format_range(rates, -2)} "
            f"| {format_range(per_say, 1 if max(per_say) < 100 else 0)} "
            f"| {median(lambda s: s.cpu * 1e6):.0f} "
            f"| {median(lambda s: s.server_usec):.1f} "
            f"| {median(lambda s: s.evalsha):.3f} "
            f"| {median(lambda s: s.inner):.2f} "
            f"| {median(lambda s: s.bytes_in):.0f} "
            f"| {median(lambda s: s.bytes_out):.0f} |"
        )


async def main(args: argparse.Namespace) -> None:
    url = parse_backplane_url(args.url)
    batches = [int(b) for b in args.batches.split(",")]
    room_counts = [int(r) for r in args.rooms.split(",")]
    node = f"bench-{secrets.token_hex(4)}"
    rooms = [f"{node}-{n}" for n in range(max(room_counts))]
    results: dict[tuple[str, int, int], list[Sample]] = {}
    info_stream = await trio.open_tcp_stream(url.host, url.port)
    async with (
        info_stream,
        open_backplane(url, node, channel_size=1 << 20) as backplane,
        trio.open_nursery() as nursery,
    ):
        info = Info(info_stream)
        await info.calibrate()
        bench = Bench(
            backplane, info, rooms, in_flight=args.in_flight, subscribe=not args.no_subscribe
        )
        nursery.start_soon(bench.serve_drain)
        await bench.join_all()
        for _run in range(args.runs):
            for way in WAYS:
                for room_count in room_counts:
                    for batch in batches:
                        sample = await bench.measure(way, batch, room_count, args.says)
                        results.setdefault((way, room_count, batch), []).append(sample)
        await clean(info_stream, rooms)
        nursery.cancel_scope.cancel()
    report(results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure the backplane's say path.")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--says", type=int, default=4096, help="says per measurement, about")
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--rooms", default="1,8")
    parser.add_argument("--in-flight", type=int, default=4, help="say_many calls kept in flight")
    parser.add_argument("--no-subscribe", action="store_true", help="measure sending alone")
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
