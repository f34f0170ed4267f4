"""Tests of room history: retention, reads, and the protocol's replay rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.core.history import (
    MemoryHistoryStore,
    MemoryStoreStatistics,
    RoomHistory,
    StoredEvent,
)


def event(event_id: int) -> StoredEvent:
    return StoredEvent(event_id, f"event {event_id}".encode())


def filled(limit: int, count: int) -> RoomHistory:
    """A history of `limit` retained events after `count` appends."""
    history = RoomHistory(limit)
    for event_id in range(1, count + 1):
        history.append(event(event_id))
    return history


def ids(events: list[StoredEvent]) -> list[int]:
    return [e.id for e in events]


def assert_lines_match_ids(events: list[StoredEvent]) -> None:
    assert [e.line for e in events] == [event(e.id).line for e in events]


# --------------------------------------------------------------------------
# Appending and retention


def test_empty_history() -> None:
    history = RoomHistory(5)
    assert (len(history), history.last_id, history.first_id) == (0, 0, 1)
    assert history.after(0) == []
    assert history.tail(3) == []


def test_append_assigns_contiguous_ids() -> None:
    history = filled(10, 3)
    history.append(event(4))
    assert (history.last_id, history.first_id, len(history)) == (4, 1, 4)
    assert ids(history.after(0)) == [1, 2, 3, 4]


@pytest.mark.parametrize("bad_id", [0, 3, 5, 100])
def test_append_refuses_a_gap_or_a_repeat(bad_id: int) -> None:
    history = filled(10, 3)
    with pytest.raises(AssertionError):
        history.append(event(bad_id))
    assert history.last_id == 3


@pytest.mark.parametrize(
    ("limit", "count", "first", "size"),
    [(1, 1, 1, 1), (1, 5, 5, 1), (3, 2, 1, 2), (3, 3, 1, 3), (3, 10, 8, 3), (50, 49, 1, 49)],
)
def test_retention_keeps_the_last_limit_events(
    limit: int, count: int, first: int, size: int
) -> None:
    history = filled(limit, count)
    assert len(history) == size
    assert (history.first_id, history.last_id) == (first, count)
    retained = history.after(0)
    assert ids(retained) == list(range(first, count + 1))
    assert_lines_match_ids(retained)


def test_constructor_keeps_the_newest_of_given_events() -> None:
    history = RoomHistory(3, [event(i) for i in range(4, 9)])
    assert (history.first_id, history.last_id, len(history)) == (6, 8, 3)
    history.append(event(9))
    assert ids(history.after(0)) == [7, 8, 9]


# --------------------------------------------------------------------------
# Windows read back from storage, where ids may have gaps


def stored(*event_ids: int) -> list[StoredEvent]:
    return [event(i) for i in event_ids]


@pytest.mark.parametrize(
    ("event_ids", "recorded", "limit", "window", "last_id"),
    [
        ((), 0, 5, [], 0),  # a new room
        ((), 7, 5, [], 7),  # every event lost: the numbering goes on
        ((1, 2, 3), 3, 5, [1, 2, 3], 3),
        ((1, 2, 3), 3, 2, [2, 3], 3),  # no more than the limit
        ((1, 2, 5, 6), 6, 5, [5, 6], 6),  # only after the gap
        ((1, 2, 5, 6), 8, 5, [], 8),  # the newest were lost
        ((1, 2, 5, 6), 0, 5, [5, 6], 6),  # never below what is stored
        ((4, 6, 8), 8, 5, [8], 8),
    ],
)
def test_from_storage_keeps_the_contiguous_newest_run(
    event_ids: tuple[int, ...], recorded: int, limit: int, window: list[int], last_id: int
) -> None:
    history = RoomHistory.from_storage(limit, stored(*event_ids), recorded)
    assert ids(history.after(0)) == window
    assert history.last_id == last_id
    history.append(event(last_id + 1))  # numbering continues after the real last id
    assert ids(history.after(0))[-1] == last_id + 1


@settings(max_examples=500)
@given(
    event_ids=st.sets(st.integers(min_value=1, max_value=40)),
    lost_at_end=st.integers(min_value=0, max_value=3),
    limit=st.integers(min_value=1, max_value=12),
    replay_limit=st.integers(min_value=0, max_value=15),
    since=st.none() | st.integers(min_value=0, max_value=50),
)
def test_replay_after_a_gap_is_never_wrong(
    event_ids: set[int], lost_at_end: int, limit: int, replay_limit: int, since: int | None
) -> None:
    """Whatever ids storage lost, a join replays only events that really follow `since`."""
    recorded = max(event_ids, default=0) + lost_at_end
    history = RoomHistory.from_storage(limit, stored(*sorted(event_ids)), recorded)

    run: list[int] = []  # the model: the newest contiguous ids ending at `recorded`
    while len(run) < limit and recorded - len(run) in event_ids:
        run.insert(0, recorded - len(run))
    assert ids(history.after(0)) == run
    assert history.last_id == recorded

    own_join = recorded + 1
    history.append(event(own_join))
    retained = [*run, own_join][-limit:]
    replay = history.replay_for_join(since, replay_limit)
    replayed = ids(replay.events)
    assert_lines_match_ids(replay.events)
    assert replayed == list(range(replayed[0], own_join + 1))  # contiguous, ends with the join
    if since is None or since >= own_join:
        assert replayed == retained[-max(replay_limit, 1) :]
        assert replay.recovered is (None if since is None else False)
    else:
        assert replayed == [i for i in retained if i > since]
        # Recovered exactly when nothing after `since` is missing.
        assert replay.recovered is (replayed == list(range(since + 1, own_join + 1)))


# --------------------------------------------------------------------------
# after, tail


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (0, [6, 7, 8, 9, 10]),
        (4, [6, 7, 8, 9, 10]),
        (5, [6, 7, 8, 9, 10]),
        (6, [7, 8, 9, 10]),
        (9, [10]),
        (10, []),
        (500, []),
    ],
)
def test_after(since: int, expected: list[int]) -> None:
    assert ids(filled(5, 10).after(since)) == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, []), (1, [10]), (3, [8, 9, 10]), (5, [6, 7, 8, 9, 10]), (99, [6, 7, 8, 9, 10])],
)
def test_tail(count: int, expected: list[int]) -> None:
    assert ids(filled(5, 10).tail(count)) == expected


# --------------------------------------------------------------------------
# Replay for a join (the history ends with the joiner's own join event)


@pytest.mark.parametrize(
    ("replay_limit", "expected"),
    [
        (0, [20]),  # never fewer than the own join
        (1, [20]),
        (3, [18, 19, 20]),
        (10, [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
        (50, [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),  # what is retained
    ],
)
def test_replay_without_since(replay_limit: int, expected: list[int]) -> None:
    replay = filled(10, 20).replay_for_join(None, replay_limit)
    assert ids(replay.events) == expected
    assert replay.recovered is None


def test_replay_of_the_first_join_of_a_room() -> None:
    replay = filled(10, 1).replay_for_join(None, 50)
    assert ids(replay.events) == [1]
    replay = filled(10, 1).replay_for_join(0, 50)
    assert (ids(replay.events), replay.recovered) == ([1], True)


@pytest.mark.parametrize(
    ("since", "expected", "recovered"),
    [
        (19, [20], True),  # nothing missed but the own join
        (15, [16, 17, 18, 19, 20], True),
        (10, list(range(11, 21)), True),  # exactly everything retained
        (9, list(range(11, 21)), False),  # event 10 was dropped
        (0, list(range(11, 21)), False),
    ],
)
def test_replay_with_since(since: int, expected: list[int], recovered: bool) -> None:
    # replay_limit does not cap a replay with since.
    replay = filled(10, 20).replay_for_join(since, 2)
    assert ids(replay.events) == expected
    assert replay.recovered is recovered


@pytest.mark.parametrize("since", [20, 21, 1000])
@pytest.mark.parametrize(("replay_limit", "expected"), [(0, [20]), (3, [18, 19, 20])])
def test_replay_with_since_beyond_history_is_like_no_since_unrecovered(
    since: int, replay_limit: int, expected: list[int]
) -> None:
    replay = filled(10, 20).replay_for_join(since, replay_limit)
    assert ids(replay.events) == expected
    assert replay.recovered is False


@pytest.mark.parametrize("since", [0, 5, 19])
def test_replay_with_since_from_another_epoch_is_like_no_since_unrecovered(since: int) -> None:
    replay = filled(10, 20).replay_for_join(since, 3, same_epoch=False)
    assert ids(replay.events) == [18, 19, 20]
    assert replay.recovered is False
    assert filled(10, 20).replay_for_join(None, 3, same_epoch=False).recovered is None


@settings(max_examples=300)
@given(
    limit=st.integers(min_value=1, max_value=12),
    count=st.integers(min_value=1, max_value=40),
    replay_limit=st.integers(min_value=0, max_value=15),
    since=st.none() | st.integers(min_value=0, max_value=45),
    same_epoch=st.booleans(),
)
def test_replay_matches_a_model(
    limit: int, count: int, replay_limit: int, since: int | None, same_epoch: bool
) -> None:
    everything = list(range(1, count + 1))  # every id the room ever had
    own_join = everything[-1]
    retained = everything[-limit:]
    if since is None or not same_epoch or since > own_join - 1:
        expected = retained[-max(replay_limit, 1) :]
        recovered = None if since is None else False
    else:
        missed = [i for i in everything if i > since]
        expected = [i for i in retained if i > since]
        recovered = expected == missed

    replay = filled(limit, count).replay_for_join(since, replay_limit, same_epoch=same_epoch)

    assert ids(replay.events) == expected
    assert replay.recovered is recovered
    assert ids(replay.events)[-1] == own_join
    assert_lines_match_ids(replay.events)


# --------------------------------------------------------------------------
# MemoryHistoryStore


def test_memory_store_keeps_one_history_per_room() -> None:
    store = MemoryHistoryStore(limit=2)
    lobby = store.acquire("lobby")
    assert store.acquire("lobby") is lobby
    assert store.acquire("other") is not lobby
    for i in range(1, 4):
        lobby.append(event(i))
    assert ids(store.acquire("lobby").after(0)) == [2, 3]
    assert store.acquire("other").last_id == 0


def test_memory_store_keeps_the_most_recently_emptied_rooms_only() -> None:
    store = MemoryHistoryStore(limit=5, max_idle_rooms=2)
    busy = store.acquire("busy")  # in use throughout: never forgotten
    busy.append(event(1))
    for name, count in (("a", 3), ("b", 1), ("c", 2)):
        room = store.acquire(name)
        for i in range(1, count + 1):
            room.append(event(i))
        store.release(name)
    assert store.statistics() == MemoryStoreStatistics(rooms_in_memory=3, idle_rooms=2)
    assert ids(store.acquire("b").after(0)) == [1]  # kept, and in use again
    # The least recently emptied was forgotten; its ids are not handed out again.
    forgotten = store.acquire("a")
    assert (len(forgotten), forgotten.last_id) == (0, 3)
    store.release("a")
    store.release("b")  # now the most recently emptied: "c" goes first
    store.release("d")  # a room whose every hello was refused
    assert store.statistics().idle_rooms == 2
    assert len(store.acquire("c")) == 0
    assert ids(store.acquire("b").after(0)) == [1]
    assert store.acquire("busy") is busy
    # A room new to the store numbers on from the highest forgotten id too.
    assert store.acquire("new").last_id == 3


@settings(max_examples=200)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=80),
    max_idle=st.integers(0, 4),
)
def test_memory_store_never_forgets_a_room_in_use(
    steps: list[tuple[bool, int]], max_idle: int
) -> None:
    store = MemoryHistoryStore(limit=3, max_idle_rooms=max_idle)
    in_use: dict[str, RoomHistory] = {}
    for join, n in steps:
        room = f"r{n}"
        if join and room not in in_use:
            in_use[room] = store.acquire(room)
            in_use[room].append(event(in_use[room].last_id + 1))
        elif not join and room in in_use:
            del in_use[room]
            store.release(room)
        for name, history in in_use.items():
            assert store.acquire(name) is history
        stats = store.statistics()
        assert stats.idle_rooms <= max_idle
        assert stats.rooms_in_memory <= len(in_use) + max_idle
