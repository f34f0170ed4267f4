"""A quick local measurement: idle memory per connection, and broadcast time.

Starts `trio-chat serve` as a child process (rate limit off, so the numbers
show the server and not the limiter) and measures:

* server RSS before and after opening N idle, joined connections (spread over
  rooms so that one room's join storm does not dominate), in KB per
  connection;
* how long C clients in one room take to receive M messages from one sender.

Usage: python benchmarks/quick_measure.py [--idle 1000] [--clients 100] [--messages 1000]
This is a smoke measurement; `trio-chat bench` (a later issue) is the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

SERVING = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)/")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def join(ws: WebSocketConnection, name: str, room: str) -> None:
    await ws.send_message(json.dumps({"type": "hello", "name": name, "room": room}))
    while True:  # until the replay's last event, our own join
        frame = await ws.get_message()
        assert isinstance(frame, str)
        if '"type":"join","id"' in frame.rsplit("\n", 1)[-1] and f'"name":"{name}"' in frame:
            return


async def measure_idle(port: int, pid: int, count: int) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    before = rss_kb(pid)
    ready = trio.Semaphore(0)
    hold = trio.Event()

    async def idle_client(n: int) -> None:
        async with open_websocket_url(url) as ws:
            await join(ws, f"idle{n}", f"room{n % 100}")
            ready.release()
            await hold.wait()

    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        for n in range(count):
            nursery.start_soon(idle_client, n)
        for _ in range(count):
            await ready.acquire()
        elapsed = time.perf_counter() - start
        await trio.sleep(1)
        after = rss_kb(pid)
        print(
            f"idle: {count} joined connections in {elapsed:.2f} s; server RSS {before} KB -> "
            f"{after} KB = {(after - before) / count:.1f} KB per connection"
        )
        hold.set()


async def measure_broadcast(port: int, pid: int, clients: int, messages: int) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    all_joined = trio.Semaphore(0)
    finished: list[float] = []
    all_done = trio.Event()

    async def receiver(n: int) -> None:
        async with open_websocket_url(url) as ws:
            await join(ws, f"r{n}", "bench")
            all_joined.release()
            seen = 0
            while seen < messages:
                frame = await ws.get_message()
                assert isinstance(frame, str)
                seen += frame.count('"type":"message"')
            finished.append(time.perf_counter())
            if len(finished) == clients:
                all_done.set()

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(receiver, n)
        for _ in range(clients):
            await all_joined.acquire()
        async with open_websocket_url(url) as sender:
            await join(sender, "sender", "bench")
            start, cpu_start = time.perf_counter(), cpu_seconds(pid)
            for n in range(messages):
                await sender.send_message(json.dumps({"type": "say", "text": f"m{n:060d}"}))
            await all_done.wait()
            cpu = cpu_seconds(pid) - cpu_start
    elapsed = max(finished) - start
    deliveries = clients * messages
    print(
        f"broadcast: {clients} clients received {messages} messages each in {elapsed:.2f} s "
        f"({deliveries / elapsed:,.0f} deliveries/s; server CPU {cpu:.2f} s, "
        f"{cpu / deliveries * 1e6:.1f} us per delivery)"
    )


async def main(args: argparse.Namespace) -> None:
    command = [sys.executable, "-m", "trio_chat", "serve", "--port", "0", "--rate-limit", "0"]
    command += ["--max-connections", str(args.idle + args.clients + 10)]
    # One Python process of clients reads slower than the server writes; a
    # large queue keeps it from being dropped as slow, so we time delivery.
    command += ["--send-queue-size", str(args.queue)]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False)
        )
        assert process.stderr is not None
        output = b""
        while (match := SERVING.search(output)) is None:
            output += await process.stderr.receive_some()
        port = int(match.group(1))
        await measure_idle(port, process.pid, args.idle)
        await trio.sleep(2)  # let the server finish closing the idle connections
        await measure_broadcast(port, process.pid, args.clients, args.messages)
        process.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--queue", type=int, default=2000, help="server --send-queue-size")
    trio.run(main, parser.parse_args())
