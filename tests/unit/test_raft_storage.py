"""The LogStorage contract, against MemoryStorage (the SQLite edge should
pass the same checks)."""

from __future__ import annotations

import pytest

from httpcoord.cluster.raft.messages import ConfState, Entry, EntryKind, HardState
from httpcoord.cluster.raft.storage import (
    CompactedError,
    MemoryStorage,
    UnavailableError,
    bootstrap_state,
)


def _e(i: int, t: int, data: bytes = b"d") -> Entry:
    return Entry(i, t, EntryKind.NORMAL, data)


def test_empty_storage() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    assert s.initial_state() == (HardState(0, 0, 0), ConfState())


def test_bootstrap_is_one_committed_membership_entry() -> None:
    hs, entries = bootstrap_state([1, 2, 3])
    assert hs.commit == 1 and len(entries) == 1 and entries[0].kind == EntryKind.CONF
    assert ConfState.decode(entries[0].data).voters == {1, 2, 3}


def test_save_overwrites_a_conflicting_suffix() -> None:
    s = MemoryStorage()
    s.save(HardState(1, 0, 0), None, [_e(1, 1), _e(2, 1), _e(3, 1)])
    s.save(None, None, [_e(2, 2)])
    assert s.last_index() == 2 and s.term(2) == 2
    with pytest.raises(UnavailableError):
        s.term(3)


def test_entries_respect_max_bytes_but_return_at_least_one() -> None:
    s = MemoryStorage()
    s.save(None, None, [_e(i, 1, b"x" * 100) for i in range(1, 11)])
    assert len(s.entries(1, 11, 1)) == 1
    assert len(s.entries(1, 11, 350)) == 3
    assert len(s.entries(1, 11, 1 << 20)) == 10


def test_snapshot_then_compact() -> None:
    s = MemoryStorage()
    s.save(HardState(2, 0, 8), None, [_e(i, 1 + i // 5) for i in range(1, 11)])
    conf = ConfState(frozenset({1}))
    snap = s.create_snapshot(6, conf, b"state")
    assert (snap.meta.index, snap.meta.term) == (6, 2)
    s.compact(6)
    assert s.first_index() == 7 and s.term(6) == 2
    with pytest.raises(CompactedError):
        s.term(5)
    with pytest.raises(CompactedError):
        s.entries(5, 8, 1 << 20)
    assert s.initial_state()[1] == conf


def test_snapshot_of_an_uncommitted_index_is_refused() -> None:
    s = MemoryStorage()
    s.save(HardState(1, 0, 2), None, [_e(1, 1), _e(2, 1), _e(3, 1)])
    with pytest.raises(AssertionError):
        s.create_snapshot(3, ConfState(), b"")


def test_saved_snapshot_replaces_the_log() -> None:
    a = MemoryStorage()
    a.save(HardState(1, 0, 5), None, [_e(i, 1) for i in range(1, 6)])
    snap = a.create_snapshot(5, ConfState(frozenset({1})), b"s")
    b = MemoryStorage()
    b.save(HardState(1, 0, 5), snap, [_e(6, 1)])
    assert (b.first_index(), b.last_index(), b.term(5)) == (6, 6, 1)
    assert b.snapshot() == snap
