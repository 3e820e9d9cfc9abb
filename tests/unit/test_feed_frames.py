"""The read workers' feed frames (httpcoord.workers.feed): what the node
writes the worker reads back, and a damaged frame is refused, never misread."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpcoord.workers.feed import parse_txns_frame, txns_frame

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
