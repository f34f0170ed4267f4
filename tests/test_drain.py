"""Deploys without dropped messages: `/readyz` fails at the shutdown signal,
the server serves on for `--drain-delay`, then closes its clients with 1001.

In-process over real sockets, under Trio's MockClock (autojump): the clock
jumps only when every task waits, so `trio.current_time()` tells exactly
what happened before the delay ran out, and the tests take no real time.
"""

from __future__ import annotations

import json

import trio
import trio.testing
from conftest import RunningServer, StartServer
from wsclient import http_request

DRAIN = 30.0


async def readiness(server: RunningServer) -> tuple[int, dict[str, str]]:
    response = await http_request(server.port, "/readyz")
    return response.status, json.loads(response.body)


async def test_readyz_fails_first_then_clients_are_closed_after_the_delay(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(drain_delay=DRAIN, rate_limit=0)
    alice = await server.joined("alice")
    bob = await server.joined("bob")
    await alice.next_of("join")  # bob's
    assert await readiness(server) == (200, {"status": "ready"})

    server.shutdown.set()
    signalled = trio.current_time()
    await trio.testing.wait_all_tasks_blocked()  # the server has seen it
    assert await readiness(server) == (503, {"status": "unready", "reason": "shutting down"})
    assert (await http_request(server.port, "/healthz")).status == 200  # alive all along
    # Everyone is still served: messages flow, and a new client may join
    # (a load balancer may have sent it before it saw /readyz fail).
    await alice.say("still here")
    assert (await bob.next_of("message"))["text"] == "still here"
    carol = await server.joined("carol")
    assert (await alice.next_of("join"))["name"] == "carol"
    await carol.say("just in time")
    assert (await bob.next_of("message"))["text"] == "just in time"
    assert trio.current_time() - signalled < DRAIN
    assert not server.drain_ended.is_set()

    with trio.fail_after(DRAIN + 10):
        for client in (alice, bob, carol):
            closed = await client.closed()
            assert closed.code == 1001
            assert trio.current_time() - signalled >= DRAIN
        await server.stopped.wait()
    assert server.drain_ended.is_set()


async def test_ending_the_drain_early_closes_clients_at_once(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(drain_delay=3600.0)
    alice = await server.joined("alice")
    server.shutdown.set()
    await trio.sleep(1)
    assert (await readiness(server))[0] == 503
    server.drain_ended.set()  # what a second signal does
    ended = trio.current_time()
    with trio.fail_after(10):
        assert (await alice.closed()).code == 1001
        await server.stopped.wait()
    assert trio.current_time() - ended < 10


async def test_without_a_drain_delay_clients_are_closed_at_once(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server()
    alice = await server.joined("alice")
    server.shutdown.set()
    signalled = trio.current_time()
    with trio.fail_after(10):
        assert (await alice.closed()).code == 1001
    assert trio.current_time() - signalled < 1
    assert server.drain_ended.is_set()
