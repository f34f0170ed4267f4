"""The mass stall at real scale: 1,500 members of one room stop reading at once.

An earlier version overflowed the stack on this and wedged the process. This
runs `trio-chat serve` on its defaults as a child process, joins 1,500
members with small receive buffers that never read, and has one member say
1,000-character messages as fast as the server echoes them while two members
of another room keep chatting. It is slow (about a minute), so it runs in
its own nox session, `nox -s stall`, and prints what it measured.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from functools import partial
from typing import Any

import pytest
import trio
from conftest import wait_until
from processes import serving
from wsclient import RawClient, metric

from trio_chat.cli import SHUTDOWN_DEADLINE

pytestmark = pytest.mark.scale

# `TRIO_CHAT_STALL_MEMBERS=5000 nox -s stall` runs a larger room.
MEMBERS = int(os.environ.get("TRIO_CHAT_STALL_MEMBERS", "1500"))


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    """This process holds a socket per member: raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = MEMBERS + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:  # noqa: PTH123 (a tiny procfs read)
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_a_room_of_1500_that_stalls_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    # Defaults but two: no rate limit for the talker, and pings far apart,
    # because these members discard what they read (pings included) and a
    # large room takes longer than a pong wait to fill.
    settings = {"TRIO_CHAT_RATE_LIMIT": "0", "TRIO_CHAT_PONG_WAIT": "1h"}
    settings["TRIO_CHAT_PING_PERIOD"] = "50m"
    async with serving(**settings) as (process, port, output):
        with trio.fail_after(120 + MEMBERS / 10):
            talker = await RawClient.connect(port)
            await talker.hello("talker", "big")
            talker_events: list[dict[str, Any]] = []
            latencies: list[float] = []
            said = 0

            def count(kind: str) -> int:
                return sum(e["type"] == kind for e in talker_events)

            async def listen() -> None:  # the talker reads everything, always
                while True:
                    talker_events.append(await talker.next_event())

            async def talk() -> None:
                nonlocal said
                while True:
                    for _ in range(20):
                        await talker.say("m" * 1000)
                        said += 1
                    await wait_until(partial(lambda n: count("message") >= n, said), 0.001)

            async def chat_elsewhere() -> None:
                n = 0
                while True:
                    sent = time.monotonic()
                    await carol.say(f"elsewhere {n}")
                    for client in (carol, dave):
                        event = await client.next_of("message")
                        assert event["text"] == f"elsewhere {n}"
                    latencies.append(time.monotonic() - sent)
                    n += 1
                    await trio.sleep(0.05)

            async def drain(client: RawClient) -> None:
                while await client.stream.receive_some(65536):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                stalled: list[RawClient] = []
                # The members read (and discard) while the room fills up...
                async with trio.open_nursery() as reading:
                    for n in range(MEMBERS):
                        client = await RawClient.connect(port, receive_buffer=4096)
                        await client.hello(f"member{n}", "big")
                        stalled.append(client)
                        reading.start_soon(drain, client)
                    await wait_until(lambda: count("join") >= MEMBERS, 0.01)
                    await trio.sleep(0.5)  # ...until every join reached every member,
                    reading.cancel_scope.cancel()  # then all stop at the same moment.
                assert await metric(port, "trio_chat_slow_drops_total") == 0
                carol = await RawClient.connect(port)
                await carol.hello("carol", "other")
                dave = await RawClient.connect(port)
                await dave.hello("dave", "other")
                await dave.next_of("join")  # its own
                start = time.monotonic()
                nursery.start_soon(talk)
                nursery.start_soon(chat_elsewhere)
                with trio.move_on_after(120):
                    while True:  # until only the talker and the other room remain
                        if await metric(port, "trio_chat_members") <= 3:
                            break
                        await trio.sleep(0.2)
                members = await metric(port, "trio_chat_members")
                drops = await metric(port, "trio_chat_slow_drops_total")
                assert (members, drops) == (3, MEMBERS), (said, count("message"), count("leave"))
                dropped_after = time.monotonic() - start
                said_until_dropped = said
                # Keep going a little: the server must still serve both rooms.
                await trio.sleep(2)
                nursery.cancel_scope.cancel()
            assert await metric(port, "trio_chat_slow_drops_total") == MEMBERS
            assert await metric(port, "trio_chat_members") == 3  # talker, carol, dave
            rss = peak_rss_mib(process.pid)
            leaves = count("leave")
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The server exits by itself within SHUTDOWN_DEADLINE, with status 1
            # if its graceful path overran it: wait a little longer than that,
            # to see which, rather than race its own deadline.
            with trio.fail_after(SHUTDOWN_DEADLINE + 5):
                status = await process.wait()
            stopped_in = time.monotonic() - signalled
            assert status == 0, (status, stopped_in)
            for client in [talker, carol, dave, *stalled]:
                await client.aclose()
    log = b"".join(output).decode()
    assert "Traceback" not in log
    assert " ERROR " not in log
    assert " CRITICAL " not in log
    assert leaves == MEMBERS  # the talker saw each stalled member leave, once
    with capsys.disabled():
        print(
            f"\nmass stall: {MEMBERS} members stalled, {said_until_dropped} messages said in "
            f"{dropped_after:.1f}s ({said_until_dropped / dropped_after:.0f}/s) until all "
            f"were dropped; "
            f"peak RSS {rss:.0f} MiB; stopped {stopped_in:.1f}s after SIGTERM; "
            f"other room: {len(latencies)} round trips, "
            f"max {max(latencies) * 1000:.0f} ms, "
            f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms"
        )
