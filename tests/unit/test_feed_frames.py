"""The read workers' feed (httpcoord.workers.feed): what the node writes the
worker reads back, a damaged frame is refused (never misread), and the
node's backlog for a worker hands out txns in order, in bounded frames, and
cuts off a worker that falls too far behind or whose tree was replaced."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpcoord.workers.feed import (
    FEED_BYTES_MAX,
    FRAME_BYTES_MAX,
    Backlog,
    FeedCut,
    parse_txns_frame,
    txns_frame,
)

txn_lists = st.lists(st.binary(max_size=64), max_size=20)


@given(st.integers(0, 2**32 - 1), txn_lists)
def test_a_frame_reads_back_as_written(leader: int, txns: list[bytes]) -> None:
    assert parse_txns_frame(txns_frame(leader, txns)) == (leader, txns)


@given(st.integers(0, 2**32 - 1), txn_lists.filter(lambda t: any(t)), st.data())
def test_a_truncated_frame_is_refused(leader: int, txns: list[bytes], data: st.DataObject) -> None:
    frame = txns_frame(leader, txns)
    cut = data.draw(st.integers(1, len(frame) - 1))
    try:
        got = parse_txns_frame(frame[:cut])
    except ValueError:
        return
    # A cut exactly between two txns is a shorter, whole frame: a prefix.
    assert got[0] == leader and got[1] == txns[: len(got[1])]


@pytest.mark.parametrize("frame", [b"", b"T", b"T\x00\x00", b"S\x00\x00\x00\x01", b"\xff" * 9])
def test_what_is_not_a_txns_frame_is_refused(frame: bytes) -> None:
    with pytest.raises(ValueError):
        parse_txns_frame(frame)


# ---- the node's backlog for one worker ------------------------------------------------------


async def test_the_backlog_hands_out_txns_in_order_in_bounded_frames() -> None:
    backlog = Backlog()
    txns = [bytes([i % 256]) * (FRAME_BYTES_MAX // 3) for i in range(7)]
    for txn in txns:
        backlog.push(txn)
    taken: list[bytes] = []
    while len(taken) < len(txns):
        frame = await backlog.take(idle_s=0.0)
        assert frame, "a frame with nothing while txns wait"
        assert sum(map(len, frame)) <= FRAME_BYTES_MAX
        taken += frame
    assert taken == txns
    assert await backlog.take(idle_s=0.0) == []  # idle: an empty frame, not a wait


async def test_a_worker_too_far_behind_is_cut_off() -> None:
    backlog = Backlog()
    txn = b"x" * (1024 * 1024)
    for _ in range(FEED_BYTES_MAX // len(txn) + 1):
        backlog.push(txn)
    with pytest.raises(FeedCut, match="behind"):
        await backlog.take(idle_s=0.0)
    backlog.push(b"late")  # ignored once cut: the worker starts over
    with pytest.raises(FeedCut):
        await backlog.take(idle_s=0.0)


async def test_a_replaced_tree_cuts_the_feed() -> None:
    backlog = Backlog()
    backlog.push(b"txn")
    backlog.cut(1234)  # reset_listeners pass the new zxid
    with pytest.raises(FeedCut):
        await backlog.take(idle_s=1.0)
