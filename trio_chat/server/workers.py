"""`serve --workers N`: a parent process that keeps N `serve` processes on one port.

Theory of operation: the parent serves nothing itself and loads neither the
hub nor the backplane client. It reserves the port (`reuseport`), then runs
each worker as a child process through a command the caller builds (the
command line: `python -m trio_chat serve` with the parent's own arguments,
one worker and the reserved port). A worker listens with SO_REUSEPORT, logs
to the stderr it shares with the parent, and writes one line on its stdout,
a pipe to the parent, once it serves.

- Worker 1 starts alone. A bad setting or an unreachable backplane, which
  every worker would meet, stops it with status 2 and one line on stderr,
  and the parent stops with it: one line, not N. Once it serves, the others
  start together; the parent logs its own "serving on" line when all have.
- A worker that exits is started again after the delay
  `core.restarts.RestartPolicy` decides, with a WARNING naming its exit
  status; when the policy gives up, every worker is stopped and
  `serve_workers` raises `WorkersFailed`.
- `shutdown` set: each worker gets SIGTERM (it closes its clients with 1001
  and exits 0), nothing is restarted, and a worker still running after
  `stop_deadline` is killed. Workers run in sessions of their own, so that a
  terminal's Ctrl-C reaches the parent alone, and the parent's SIGTERM is
  the only signal they get: a second one would cut their shutdown short.
- A worker's stdin is a pipe the parent holds open and never writes to: if
  the parent is killed, the worker sees its end and shuts down, instead of
  keeping the port with no one to restart or stop it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from ..config import Settings
from ..core.errors import TrioChatError
from ..core.restarts import GiveUp, RestartPolicy, WorkerExit, describe_status
from .reuseport import reserve_port

log = logging.getLogger(__name__)

# A worker's command line, from its number (1..N) and the port it must bind.
WorkerCommand = Callable[[int, int], Sequence[str]]


class WorkersFailed(TrioChatError):
    """The workers could not be kept running; the parent exits with `status`.

    `reason` is one line for stderr, or None when a worker already wrote it.
    """

    def __init__(self, status: int, reason: str | None) -> None:
        super().__init__(reason or f"a worker stopped with status {status}")
        self.status = status
        self.reason = reason


@dataclass
class _Worker:
    number: int
    process: trio.Process | None = None  # while one runs


async def _first_of(*events: trio.Event) -> None:
    """Return as soon as any of `events` is set."""

    async def wait(event: trio.Event, race: trio.CancelScope) -> None:
        await event.wait()
        race.cancel()

    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(wait, event, nursery.cancel_scope)


class Supervisor:
    """Runs `settings.workers` workers; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        command: WorkerCommand,
        *,
        stop_deadline: float,
        restarts: RestartPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._command = command
        self._stop_deadline = stop_deadline
        self._restarts = restarts or RestartPolicy()
        self._workers = [_Worker(number) for number in range(1, settings.workers + 1)]
        self._serving: set[int] = set()  # workers that have served once
        self._first_serving = trio.Event()
        self._all_serving = trio.Event()
        self._stopping = trio.Event()
        self._failure: WorkersFailed | None = None
        self._killed = 0  # workers killed at the stop deadline
        self._reserved: tuple[list[trio.socket.SocketType], int] | None = None

    async def reserve_port(self) -> int:
        """Bind the port for the workers now, and return it; `serve_workers`
        does it otherwise, and closes the sockets when it returns.

        Raises:
            OSError: the port is taken or cannot be bound.
        """
        if self._reserved is None:
            self._reserved = await reserve_port(self._settings.host, self._settings.port)
        return self._reserved[1]

    def forward_signal(self, signum: int) -> None:
        """Send `signum` to every running worker (a second SIGTERM makes
        them cut their graceful shutdown short)."""
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def serve_workers(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the workers until `shutdown` is set and they have stopped.

        Reports the port through `task_status` once every worker serves.
        Returns when all have exited; on cancellation, kills them.

        Raises:
            OSError: the port cannot be bound (before any worker starts).
            WorkersFailed: the restart policy gave up (every worker has been
                stopped), or a worker had to be killed at the stop deadline.
        """
        port = await self.reserve_port()
        assert self._reserved is not None
        try:
            async with trio.open_nursery() as watcher:
                watcher.start_soon(self._stop_when_set, shutdown)
                async with trio.open_nursery() as workers:
                    workers.start_soon(self._keep_running, self._workers[0], port)
                    await _first_of(self._first_serving, self._stopping)
                    if not self._stopping.is_set():
                        for worker in self._workers[1:]:
                            workers.start_soon(self._keep_running, worker, port)
                        await _first_of(self._all_serving, self._stopping)
                    if not self._stopping.is_set():
                        self._announce(port)
                        task_status.started(port)
                    await self._stopping.wait()
                    self.forward_signal(signal.SIGTERM)
                    # The workers have their own deadline; past ours, each one
                    # still running is cancelled, which kills it (`_kill`).
                    workers.cancel_scope.deadline = trio.current_time() + self._stop_deadline
                watcher.cancel_scope.cancel()
        finally:
            for sock in self._reserved[0]:
                sock.close()
        if self._failure is not None:
            raise self._failure
        if self._killed:
            raise WorkersFailed(
                1,
                f"killed {self._killed} of the workers: still running {self._stop_deadline:g}s "
                "after SIGTERM",
            )
        log.info("all workers stopped")

    def _announce(self, port: int) -> None:
        host = self._settings.host
        log.info(
            "trio-chat serving on http://%s:%d/ (WebSocket at /ws) with %d workers",
            f"[{host}]" if ":" in host else host,
            port,
            len(self._workers),
        )

    async def _stop_when_set(self, shutdown: trio.Event) -> None:
        await shutdown.wait()
        self._stop(None)

    def _stop(self, failure: WorkersFailed | None) -> None:
        if not self._stopping.is_set():
            self._failure = failure
            self._stopping.set()

    async def _kill(self, process: trio.Process) -> None:
        """`run_process`'s answer to cancellation: kill at once."""
        log.warning("worker process %d did not stop in time: killing it", process.pid)
        self._killed += 1
        process.kill()

    async def _keep_running(self, worker: _Worker, port: int) -> None:
        """Run `worker`, and start it again each time it exits, until stopping."""
        while not self._stopping.is_set():
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        list(self._command(worker.number, port)),
                        stdin=subprocess.PIPE,  # held open: its end tells the worker we died
                        stdout=subprocess.PIPE,
                        check=False,
                        start_new_session=True,
                        deliver_cancel=self._kill,
                    )
                )
                worker.process = process
                log.debug("worker %d started (pid %d)", worker.number, process.pid)
                if self._stopping.is_set():  # stopped while it was starting
                    process.send_signal(signal.SIGTERM)
                served = await self._read_serving(worker, process)
            if process.stdin is not None:
                await process.stdin.aclose()
            worker.process = None
            assert process.returncode is not None  # run_process returned: it exited
            ended = WorkerExit(process.returncode, trio.current_time() - started, served)
            if self._stopping.is_set():
                self._log_stopped(worker.number, process.pid, ended.status)
                return
            decision = self._restarts.after_exit(worker.number, ended)
            if isinstance(decision, GiveUp):
                # Its reason is the parent's last line; a worker refusing its
                # settings has written its own.
                self._stop(WorkersFailed(decision.status, decision.reason))
                return
            log.warning(
                "worker %d (pid %d) exited with %s after %.1fs; restarting it in %gs",
                worker.number,
                process.pid,
                describe_status(ended.status),
                ended.ran_for,
                decision.delay,
            )
            with trio.move_on_after(decision.delay):
                await self._stopping.wait()

    async def _read_serving(self, worker: _Worker, process: trio.Process) -> bool:
        """Wait for the worker's line saying it serves, then for the end of
        its stdout (its exit): reading on keeps the pipe open for it.
        Returns whether the line came."""
        assert process.stdout is not None
        async with process.stdout:
            serving = False
            async for chunk in process.stdout:
                if not serving and b"\n" in chunk:
                    serving = True
                    self._on_serving(worker, process.pid)
        return serving

    def _on_serving(self, worker: _Worker, pid: int) -> None:
        self._restarts.serving(worker.number)
        if worker.number in self._serving:
            log.info("worker %d (pid %d) serving again", worker.number, pid)
            return
        self._serving.add(worker.number)
        log.debug("worker %d (pid %d) serving", worker.number, pid)
        self._first_serving.set()
        if len(self._serving) == len(self._workers):
            self._all_serving.set()

    def _log_stopped(self, number: int, pid: int, status: int) -> None:
        if status == 0:
            log.debug("worker %d (pid %d) stopped", number, pid)
        else:
            log.warning("worker %d (pid %d) stopped with %s", number, pid, describe_status(status))
