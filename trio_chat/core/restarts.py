"""When a worker process of ``serve --workers N`` is restarted, and when the
parent gives up: pure rules, no clock and no processes.

Theory of operation: the supervisor tells a :class:`RestartPolicy` when a
worker reports serving (:meth:`~RestartPolicy.serving`) and when one exits
(:meth:`~RestartPolicy.after_exit`, with how long it ran); the answer is
either :class:`Restart` after a delay or :class:`GiveUp` with the parent's
exit status. Invariants:

- A worker that exits before it served, or within ``quick`` seconds of
  starting, failed to start. Each such exit in a row (per worker) doubles
  the delay before its restart, from ``first_delay`` up to ``max_delay``;
  the ``give_up_after``-th in a row gives up with status 1, since the next
  one would fail the same way.
- A worker that served and ran longer than ``quick`` ends its worker's
  streak: it is restarted after ``first_delay``, whatever its status.
- Status 2 is a worker refusing its settings or its backplane at start
  (one line on stderr, already written). Before any worker has served, that
  is the parent's answer too: it gives up at once with status 2. Once the
  service has been up, it counts as any other failure (a backplane that is
  down for a moment must not stop the workers that still serve).
- Delays are always within ``[first_delay, max_delay]``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

EXIT_USAGE = 2  # the exit status of a bad setting, as the command line uses it

QUICK_EXIT = 5.0  # seconds: a worker that exits sooner failed to start
FIRST_DELAY = 0.5  # seconds before the first restart
MAX_DELAY = 10.0  # seconds: the cap of the doubling delay
GIVE_UP_AFTER = 5  # quick exits in a row (of one worker) that stop the parent


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """One worker's exit, as the supervisor saw it."""

    status: int  # as `subprocess` reports it: negative for the signal that killed it
    ran_for: float  # seconds from its start to its exit
    served: bool = True  # it had reported serving before it exited


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the worker again after `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop every worker and exit with `status`.

    `reason` is one line for stderr, or None when the worker already wrote
    why (status 2 at start).
    """

    status: int
    reason: str | None


def describe_status(status: int) -> str:
    """A worker's exit status in words: ``status 3``, ``signal SIGKILL``."""
    if status >= 0:
        return f"status {status}"
    try:
        return f"signal {signal.Signals(-status).name}"
    except ValueError:
        return f"signal {-status}"


class RestartPolicy:
    """The restart rules of the module docstring, with each worker's streak.

    Call :meth:`serving` when a worker reports serving, :meth:`after_exit`
    when one exits (not while the parent is stopping them), and act on the
    answer.
    """

    def __init__(
        self,
        *,
        quick: float = QUICK_EXIT,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        give_up_after: int = GIVE_UP_AFTER,
    ) -> None:
        if not 0 < first_delay <= max_delay:
            raise ValueError("need 0 < first_delay <= max_delay")
        if give_up_after < 1:
            raise ValueError("give_up_after must be at least 1")
        self.quick = quick
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self._streaks: dict[int, int] = {}  # worker -> quick exits in a row
        self._served = False  # some worker has reported serving

    def serving(self, worker: int) -> None:
        """`worker` reports serving: the service is up."""
        del worker  # any worker will do: the settings and the backplane work
        self._served = True

    def after_exit(self, worker: int, ended: WorkerExit) -> Restart | GiveUp:
        """What to do now that `worker` has exited."""
        if ended.status == EXIT_USAGE and not self._served:
            return GiveUp(EXIT_USAGE, None)
        if ended.served and ended.ran_for >= self.quick:
            self._streaks[worker] = 0
            return Restart(self.first_delay)
        streak = self._streaks.get(worker, 0) + 1
        self._streaks[worker] = streak
        if streak >= self.give_up_after:
            return GiveUp(
                1,
                f"worker {worker} failed {streak} times in a row at start (last: "
                f"{describe_status(ended.status)}); giving up",
            )
        # 2 ** streak grows without bound, but the cap is reached long before
        # it overflows a float: stop doubling once past it.
        delay = self.first_delay
        for _ in range(streak - 1):
            delay *= 2
            if delay >= self.max_delay:
                break
        return Restart(min(delay, self.max_delay))
