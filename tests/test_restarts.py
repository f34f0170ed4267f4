"""The restart rules of `serve --workers N` (pure: no processes, no clock)."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chat.core.restarts import (
    EXIT_USAGE,
    GiveUp,
    Restart,
    RestartPolicy,
    WorkerExit,
    describe_status,
)

QUICK = WorkerExit(status=1, ran_for=0.5)
LONG = WorkerExit(status=1, ran_for=3600.0)


def test_quick_exits_double_the_delay_then_give_up() -> None:
    policy = RestartPolicy(quick=5, first_delay=0.5, max_delay=10, give_up_after=5)
    policy.serving(1)
    delays = [policy.after_exit(1, QUICK) for _ in range(4)]
    assert delays == [Restart(0.5), Restart(1.0), Restart(2.0), Restart(4.0)]
    verdict = policy.after_exit(1, WorkerExit(status=70, ran_for=0.1))
    assert verdict == GiveUp(
        1, "worker 1 failed 5 times in a row at start (last: status 70); giving up"
    )


def test_the_delay_is_capped() -> None:
    policy = RestartPolicy(first_delay=1, max_delay=3, give_up_after=100)
    delays = [policy.after_exit(2, QUICK) for _ in range(6)]
    assert delays == [Restart(1), Restart(2), Restart(3), Restart(3), Restart(3), Restart(3)]


def test_a_long_run_ends_the_streak() -> None:
    policy = RestartPolicy(first_delay=0.5, give_up_after=3)
    assert policy.after_exit(1, QUICK) == Restart(0.5)
    assert policy.after_exit(1, QUICK) == Restart(1.0)
    assert policy.after_exit(1, LONG) == Restart(0.5)
    assert policy.after_exit(1, QUICK) == Restart(0.5)
    assert policy.after_exit(1, QUICK) == Restart(1.0)
    assert isinstance(policy.after_exit(1, QUICK), GiveUp)


def test_each_worker_has_its_own_streak() -> None:
    policy = RestartPolicy(first_delay=0.5, give_up_after=2)
    assert policy.after_exit(1, QUICK) == Restart(0.5)
    assert policy.after_exit(2, QUICK) == Restart(0.5)
    assert isinstance(policy.after_exit(2, QUICK), GiveUp)


def test_an_exit_before_serving_is_a_failed_start_however_long_it_took() -> None:
    policy = RestartPolicy(quick=5, first_delay=0.5, give_up_after=2)
    slow_start = WorkerExit(status=70, ran_for=60.0, served=False)
    assert policy.after_exit(1, slow_start) == Restart(0.5)
    assert isinstance(policy.after_exit(1, slow_start), GiveUp)


def test_status_2_before_anything_served_stops_at_once_without_a_line() -> None:
    policy = RestartPolicy()
    assert policy.after_exit(1, WorkerExit(EXIT_USAGE, 0.3)) == GiveUp(EXIT_USAGE, None)


def test_status_2_once_serving_is_a_failure_like_any_other() -> None:
    policy = RestartPolicy(first_delay=0.5)
    policy.serving(1)
    assert policy.after_exit(2, WorkerExit(EXIT_USAGE, 0.3)) == Restart(0.5)


def test_a_kill_is_a_failure_like_any_other() -> None:
    policy = RestartPolicy(first_delay=0.5)
    assert policy.after_exit(1, WorkerExit(-signal.SIGKILL, 100.0)) == Restart(0.5)


@pytest.mark.parametrize(
    ("status", "words"),
    [(0, "status 0"), (70, "status 70"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM")],
)
def test_describe_status(status: int, words: str) -> None:
    assert describe_status(status) == words


def test_describe_an_unknown_signal() -> None:
    assert describe_status(-1000) == "signal 1000"


@pytest.mark.parametrize(
    "options",
    [{"first_delay": 0}, {"first_delay": 2, "max_delay": 1}, {"give_up_after": 0}],
)
def test_nonsense_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        RestartPolicy(**options)  # type: ignore[arg-type]


exits = st.tuples(
    st.integers(1, 3),  # worker
    st.builds(
        WorkerExit,
        status=st.sampled_from([0, 1, EXIT_USAGE, 70, -9, -15]),
        ran_for=st.floats(0, 100, allow_nan=False),
        served=st.booleans(),
    ),
    st.booleans(),  # some worker reports serving first
)


@given(
    st.lists(exits, max_size=60),
    st.floats(0.01, 5),
    st.floats(1, 60),
    st.integers(1, 8),
)
def test_any_history_follows_the_rules(
    history: list[tuple[int, WorkerExit, bool]],
    first_delay: float,
    cap_factor: float,
    give_up_after: int,
) -> None:
    max_delay = first_delay * cap_factor
    policy = RestartPolicy(
        quick=5.0, first_delay=first_delay, max_delay=max_delay, give_up_after=give_up_after
    )
    served = False
    streaks: dict[int, int] = {}  # the model: quick exits in a row, per worker
    last_delay: dict[int, float] = {}
    for worker, ended, reports_serving in history:
        if reports_serving:
            policy.serving(worker)
            served = True
        verdict = policy.after_exit(worker, ended)
        if ended.status == EXIT_USAGE and not served:
            assert verdict == GiveUp(EXIT_USAGE, None)
            return
        quick = ended.ran_for < 5.0 or not ended.served
        streaks[worker] = streaks.get(worker, 0) + 1 if quick else 0
        if streaks[worker] >= give_up_after:
            assert isinstance(verdict, GiveUp)
            assert verdict.status == 1
            assert verdict.reason is not None
            assert "\n" not in verdict.reason
            assert f"worker {worker} failed {give_up_after} times" in verdict.reason
            return
        assert isinstance(verdict, Restart)
        assert first_delay <= verdict.delay <= max_delay
        if not quick or streaks[worker] == 1:
            assert verdict.delay == first_delay
        else:  # a streak goes on: the delay doubles, up to the cap
            assert verdict.delay == min(last_delay[worker] * 2, max_delay)
        last_delay[worker] = verdict.delay
