"""`RoomFeed`: a room's events from a lossy, repeating, reordering channel,
delivered exactly once and in id order, gaps filled from the room's log."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.core.feed import Fill, RoomFeed, catch_up, recipients_of
from trio_chat.core.history import StoredEvent


def event(event_id: int) -> StoredEvent:
    return StoredEvent(event_id, b'{"id":%d}' % event_id)


def ids(events: list[StoredEvent]) -> list[int]:
    return [e.id for e in events]


def test_in_order_events_go_straight_through() -> None:
    feed = RoomFeed(last_id=10)
    assert ids(feed.receive(event(11)).events) == [11]
    assert ids(feed.receive(event(12)).events) == [12]
    assert feed.last_id == 12
    assert not feed.filling


def test_repeats_are_dropped() -> None:
    feed = RoomFeed(last_id=10)
    feed.receive(event(11))
    for repeat in (11, 10, 3):
        step = feed.receive(event(repeat))
        assert (step.events, step.fill) == ([], None)
    assert feed.statistics().repeats == 3


def test_a_gap_is_held_and_filled_from_the_log() -> None:
    feed = RoomFeed(last_id=10)
    step = feed.receive(event(13))
    assert (step.events, step.fill) == ([], Fill(10, 12))
    assert feed.receive(event(14)).fill is None  # one fill at a time
    assert ids(feed.receive(event(11)).events) == [11]  # the channel caught up by itself
    step = feed.filled([event(11), event(12)])
    assert ids(step.events) == [12, 13, 14]
    assert step.fill is None
    assert feed.last_id == 14


def test_ids_gone_from_the_log_are_skipped() -> None:
    feed = RoomFeed(last_id=10)
    feed.receive(event(15))
    step = feed.filled([event(13), event(14)])  # 11 and 12 were trimmed
    assert ids(step.events) == [13, 14, 15]
    assert feed.statistics().skipped == 2


def test_a_gap_left_after_a_fill_is_asked_for_next() -> None:
    feed = RoomFeed(last_id=0)
    assert feed.receive(event(3)).fill == Fill(0, 2)
    feed.receive(event(6))
    step = feed.filled([event(1), event(2)])
    assert ids(step.events) == [1, 2, 3]
    assert step.fill == Fill(3, 5)


def test_resync_reads_everything_after_the_last_id() -> None:
    feed = RoomFeed(last_id=4)
    assert feed.resync().fill == Fill(4, None)
    feed.receive(event(9))  # heard while the resync is on its way
    step = feed.filled([event(6), event(7), event(8), event(9)])  # 5 trimmed
    assert ids(step.events) == [6, 7, 8, 9]
    assert (step.fill, feed.statistics().skipped) == (None, 1)


def test_an_empty_resync_changes_nothing() -> None:
    feed = RoomFeed(last_id=4)
    feed.resync()
    step = feed.filled([])
    assert (step.events, step.fill, feed.last_id) == ([], None, 4)


def test_a_fill_answer_without_a_fill_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        RoomFeed(last_id=0).filled([])


@settings(max_examples=400)
@given(
    data=st.data(),
    count=st.integers(min_value=0, max_value=40),
    start=st.integers(min_value=0, max_value=5),
)
def test_every_retained_event_is_delivered_once_in_order(
    data: st.DataObject, count: int, start: int
) -> None:
    """Events start+1..start+count are published; the channel drops, repeats
    and reorders them at will; the log has lost some (trimmed). Whatever the
    interleaving of channel events and fill answers, the feed delivers ids
    that only rise, every id the log still holds, and nothing twice."""
    published = list(range(start + 1, start + count + 1))
    trimmed = set(
        data.draw(st.lists(st.sampled_from(published), unique=True)) if published else []
    )
    log = [event(i) for i in published if i not in trimmed]
    carried = data.draw(
        st.lists(st.sampled_from(published), max_size=60) if published else st.just([])
    )

    feed = RoomFeed(last_id=start)
    delivered: list[int] = []
    outstanding: list[Fill] = []  # at most one

    def apply(step_events: list[StoredEvent], fill: Fill | None) -> None:
        delivered.extend(ids(step_events))
        if fill is not None:
            assert not outstanding
            outstanding.append(fill)

    def answer() -> None:
        fill = outstanding.pop()
        upper = fill.up_to_id if fill.up_to_id is not None else start + count
        step = feed.filled([e for e in log if fill.after_id < e.id <= upper])
        apply(step.events, step.fill)

    for event_id in carried:
        step = feed.receive(event(event_id))
        apply(step.events, step.fill)
        answer_now = data.draw(st.booleans())
        if outstanding and answer_now:
            answer()
    # The channel is done; what it lost is found by a resync, as the shell
    # does after an overflow or on its timer.
    while outstanding:
        answer()
    step = feed.resync()
    apply(step.events, step.fill)
    while outstanding:
        answer()

    assert delivered == sorted(set(delivered))  # rising, never twice
    # Every event the log holds arrives; one it lost may still have come over
    # the channel, unless a fill had already skipped past it.
    assert {e.id for e in log} <= set(delivered) <= set(published)
    assert start + len(log) <= feed.last_id <= start + count


def test_members_receive_what_follows_their_join() -> None:
    members = {"a": 3, "b": 5, "c": 9}
    assert recipients_of(members, 5) == ["a"]
    assert recipients_of(members, 6) == ["a", "b"]
    assert recipients_of(members, 10) == ["a", "b", "c"]
    assert recipients_of({}, 1) == []


def test_catch_up_reads_the_window_or_says_it_cannot() -> None:
    window = deque(StoredEvent(i, b"%d" % i) for i in range(5, 9))
    assert catch_up(window, 6, 8) == [StoredEvent(7, b"7"), StoredEvent(8, b"8")]
    assert catch_up(window, 4, 5) == [StoredEvent(5, b"5")]
    assert catch_up(window, 8, 8) == []
    assert catch_up(window, 3, 8) is None  # id 4 is no longer in the window
    assert catch_up(deque(), 2, 2) == []
    assert catch_up(deque(), 2, 3) is None
