"""The worker processes: spawning them (each runs a `Reactor`), and the pipe
calls through which the coordinator drives them all at once.

Workers are started with the `spawn` method, so their entry point,
`_worker_main`, must stay importable at module level from here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import trio

from ..client.url import ServerUrl
from .plan import BenchError, ConnSpec
from .reactor import CLOSE_WAIT, Command, FleetStatistics, Reactor, WorkerPlan

# -- workers: spawned processes, each running a reactor ---------------------------

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    traceback: str


@dataclass(frozen=True, slots=True)
class WorkerReady:
    pass


class Worker:
    """A reactor in a spawned process, reached over a pipe; its progress
    counters sit in shared memory, three per worker."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        counters: Any,
        slot: int,
    ) -> None:
        self.process = process
        self._conn = conn
        self._counters = counters
        self._slot = slot

    async def receive(self) -> object:
        try:
            reply: object = await trio.to_thread.run_sync(self._conn.recv, abandon_on_cancel=True)
        except EOFError:
            raise BenchError(
                f"worker process {self._slot} died (exit code {self.process.exitcode})"
            ) from None
        if isinstance(reply, WorkerFailed):
            raise BenchError(f"worker process {self._slot} failed:\n{reply.traceback}")
        return reply

    async def call(self, command: Command) -> object:
        await trio.to_thread.run_sync(self._conn.send, command)
        return await self.receive()

    def statistics(self) -> FleetStatistics:
        base = 3 * self._slot
        return FleetStatistics(*(int(self._counters[base + k]) for k in range(3)))


def _worker_main(plan: WorkerPlan, conn: Connection, counters: Any) -> None:
    """A spawned worker process: one reactor, driven by the coordinator's commands."""
    raise_open_file_limit()
    with contextlib.suppress(KeyboardInterrupt):
        reactor: Reactor | None = None
        try:
            reactor = Reactor(plan, conn, counters)
            conn.send(WorkerReady())
            reactor.run()
        except Exception as error:  # noqa: BLE001 (reported to the coordinator)
            with contextlib.suppress(OSError):
                conn.send(WorkerFailed("".join(traceback.format_exception(error))))
        finally:
            if reactor is not None:
                reactor.close()


@asynccontextmanager
async def open_workers(
    target: ServerUrl, plan: Sequence[list[ConnSpec]], *, size: int
) -> AsyncIterator[list[Worker]]:
    """One spawned worker process per entry of `plan` (terminated on exit if
    they have not finished by then)."""
    context = multiprocessing.get_context("spawn")
    counters = context.RawArray("q", 3 * len(plan))
    workers: list[Worker] = []
    try:
        for slot, specs in enumerate(plan):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(WorkerPlan(target, specs, size, slot), child_end, counters),
                name=f"trio-chat-bench-{slot}",
                daemon=True,
            )
            await trio.to_thread.run_sync(process.start)
            child_end.close()
            workers.append(Worker(process, parent_end, counters, slot))
        for worker in workers:
            ready = await worker.receive()
            assert isinstance(ready, WorkerReady), ready
        yield list(workers)
    except BaseException:
        for worker in workers:  # do not wait for workers that were not told to close
            if worker.process.is_alive():
                worker.process.terminate()
        raise
    finally:
        with trio.CancelScope(shield=True):
            for worker in workers:
                await trio.to_thread.run_sync(worker.process.join, CLOSE_WAIT)
                if worker.process.is_alive():
                    worker.process.terminate()
                    await trio.to_thread.run_sync(worker.process.join, CLOSE_WAIT)


async def _call_all(workers: Sequence[Worker], command: Command, kind: type[_T]) -> list[_T]:
    """The same command to every worker at once; their replies in worker order."""
    replies: list[object] = [None] * len(workers)

    async def call(index: int) -> None:
        replies[index] = await workers[index].call(command)

    async with trio.open_nursery() as nursery:
        for index in range(len(workers)):
            nursery.start_soon(call, index)
    typed: list[_T] = []
    for reply in replies:
        if not isinstance(reply, kind):
            raise BenchError(f"a worker answered {reply!r} to {command!r}")
        typed.append(reply)
    return typed


def raise_open_file_limit() -> None:
    """Thousands of connections need thousands of file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
