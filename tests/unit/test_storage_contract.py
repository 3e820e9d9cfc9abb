"""The node's storage contract, run against both implementations:
MemoryNodeStorage and SqliteStorage (reopened from disk where a test says
"reopen"). It also covers what tests/unit/test_raft_storage.py checks of
MemoryStorage, since the node reads its log through the same LogStorage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from httpcoord.cluster.node_storage import (
    MemoryNodeStorage,
    MirroredStorage,
    NodeStorage,
    SnapshotCorrupt,
    SnapshotDescriptor,
    SnapshotMissing,
    decode_descriptor,
    describe_chunks,
    encode_descriptor,
)
from httpcoord.cluster.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from httpcoord.cluster.raft.storage import (
    EMPTY_SNAPSHOT,
    CompactedError,
    UnavailableError,
    bootstrap_state,
)
from httpcoord.cluster.sqlite_storage import SqliteStorage

CONF = ConfState(frozenset({1, 2, 3}))


def _e(i: int, t: int, data: bytes | None = None) -> Entry:
    return Entry(i, t, EntryKind.NORMAL, b"e%d-%d" % (i, t) if data is None else data)


def _chunks(tag: bytes, n: int = 3) -> list[bytes]:
    return [tag + b"-chunk-%d-" % i + b"x" * (100 * i) for i in range(n)]


async def _aiter(items: Sequence[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _read(storage: NodeStorage, snapshot: Snapshot) -> list[bytes]:
    return [c async for c in storage.snapshot_chunks(snapshot)]


def _received(
    index: int, term: int, tag: bytes, conf: ConfState = CONF
) -> tuple[SnapshotMeta, bytes, list[bytes]]:
    """A snapshot as the leader would send it: meta, descriptor, chunks."""
    chunks = _chunks(tag)
    descriptor = encode_descriptor(describe_chunks(index * 10, chunks, 1_700_000_000_000))
    return SnapshotMeta(index, term, conf), descriptor, chunks


class Backend(Protocol):
    name: str

    async def open(self, voters: Sequence[int] = ()) -> MirroredStorage: ...

    async def reopen(self, storage: MirroredStorage) -> MirroredStorage: ...

    async def chunk_sets(self, storage: MirroredStorage) -> set[int]: ...


class MemoryBackend:
    name = "memory"

    async def open(self, voters: Sequence[int] = ()) -> MirroredStorage:
        return MemoryNodeStorage(voters)

    async def reopen(self, storage: MirroredStorage) -> MirroredStorage:
        return storage  # memory survives as long as the object

    async def chunk_sets(self, storage: MirroredStorage) -> set[int]:
        assert isinstance(storage, MemoryNodeStorage)
        await storage.collect_garbage()
        return storage.chunk_sets()


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.voters: Sequence[int] = ()
        self.opened: list[MirroredStorage] = []

    async def open(self, voters: Sequence[int] = ()) -> MirroredStorage:
        self.voters = voters
        s = await SqliteStorage.open(self.path, 1, "contract", voters)
        self.opened.append(s)
        return s

    async def reopen(self, storage: MirroredStorage) -> MirroredStorage:
        await storage.close()
        return await self.open(self.voters)

    async def chunk_sets(self, storage: MirroredStorage) -> set[int]:
        assert isinstance(storage, SqliteStorage)
        await storage.collect_garbage()
        return await storage.stored_chunk_sets()


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    b = SqliteBackend(tmp_path / "data")
    yield b
    for s in b.opened:
        await s.close()


async def _views(backend: Backend, s: MirroredStorage) -> AsyncIterator[MirroredStorage]:
    """The storage as written, then as read back from disk."""
    yield s
    yield await backend.reopen(s)


async def _with_log(backend: Backend, last: int, commit: int, term: int = 1) -> MirroredStorage:
    s = await backend.open()
    await s.save(HardState(term, 0, commit), None, [_e(i, term) for i in range(1, last + 1)])
    return s


def _state(s: NodeStorage) -> tuple[object, ...]:
    """Everything the core can read."""
    first, last = s.first_index(), s.last_index()
    return (
        s.initial_state(),
        first,
        last,
        s.term(first - 1),
        s.entries(first, last + 1, 1 << 30) if last >= first else [],
        s.snapshot(),
    )


# ---- empty and bootstrapped -------------------------------------------------------------


async def test_a_fresh_storage_is_empty(backend: Backend) -> None:
    s = await backend.open()
    async for view in _views(backend, s):
        assert (view.first_index(), view.last_index(), view.term(0)) == (1, 0, 0)
        assert view.initial_state() == (HardState(0, 0, 0), ConfState())
        assert view.snapshot() == EMPTY_SNAPSHOT
        assert view.entries(1, 1, 100) == []
        with pytest.raises(UnavailableError):
            view.term(1)
        with pytest.raises(UnavailableError):
            view.entries(1, 2, 100)


async def test_a_founding_member_starts_from_the_one_committed_membership_entry(
    backend: Backend,
) -> None:
    s = await backend.open([1, 2, 3])
    hs, entries = bootstrap_state([1, 2, 3])
    async for view in _views(backend, s):
        assert view.initial_state() == (hs, ConfState())
        assert (view.first_index(), view.last_index(), view.term(1)) == (1, 1, 1)
        assert view.entries(1, 2, 1 << 20) == entries
        assert ConfState.decode(view.entries(1, 2, 1 << 20)[0].data).voters == {1, 2, 3}


# ---- the log ------------------------------------------------------------------------------------


async def test_saves_append_and_read_back(backend: Backend) -> None:
    s = await backend.open([1])
    await s.save(HardState(2, 1, 1), None, [_e(2, 2), _e(3, 2)])
    await s.save(None, None, [_e(4, 2, b"")])
    await s.save(HardState(2, 1, 4), None, [])
    async for view in _views(backend, s):
        assert view.last_index() == 4
        assert [e.data for e in view.entries(2, 5, 1 << 20)] == [b"e2-2", b"e3-2", b""]
        assert [view.term(i) for i in range(5)] == [0, 1, 2, 2, 2]
        assert view.initial_state()[0] == HardState(2, 1, 4)
    assert s.entries_saved == 3 and s.fsyncs == 3


async def test_entries_respect_max_bytes_but_return_at_least_one(backend: Backend) -> None:
    s = await backend.open()
    await s.save(None, None, [_e(i, 1, b"x" * 100) for i in range(1, 11)])
    assert len(s.entries(1, 11, 1)) == 1
    assert len(s.entries(1, 11, 350)) == 3
    assert len(s.entries(1, 11, 1 << 20)) == 10
    assert len(s.entries(4, 6, 1 << 20)) == 2


async def test_save_overwrites_a_conflicting_suffix(backend: Backend) -> None:
    s = await _with_log(backend, 5, 2)
    await s.save(HardState(2, 0, 2), None, [_e(3, 2), _e(4, 2)])
    async for view in _views(backend, s):
        assert view.last_index() == 4
        assert [view.term(i) for i in range(1, 5)] == [1, 1, 2, 2]
        assert view.entries(3, 5, 1 << 20) == [_e(3, 2), _e(4, 2)]
        with pytest.raises(UnavailableError):
            view.term(5)
    # A suffix can also be replaced by a longer one.
    s = await backend.reopen(s)
    await s.save(None, None, [_e(4, 3), _e(5, 3), _e(6, 3)])
    s = await backend.reopen(s)
    assert [s.term(i) for i in range(1, 7)] == [1, 1, 2, 3, 3, 3]


async def test_a_save_that_would_leave_a_gap_is_refused_and_changes_nothing(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 3, 1)
    before = _state(s)
    with pytest.raises(AssertionError):
        await s.save(HardState(5, 0, 1), None, [_e(5, 1)])
    assert _state(s) == before
    assert _state(await backend.reopen(s)) == before


async def test_hard_state_round_trips(backend: Backend) -> None:
    s = await backend.open()
    await s.save(HardState(7, 3, 0), None, [])
    await s.save(HardState(8, 0, 0), None, [])
    async for view in _views(backend, s):
        assert view.initial_state()[0] == HardState(8, 0, 0)
    s = await backend.reopen(s)
    with pytest.raises(AssertionError):
        await s.save(HardState(7, 0, 0), None, [])  # a term never goes back
    assert s.initial_state()[0] == HardState(8, 0, 0)


# ---- snapshots of the node's own state -------------------------------------------------------


async def test_create_snapshot_makes_it_visible_and_compacts_the_log(backend: Backend) -> None:
    s = await backend.open()
    await s.save(HardState(2, 0, 8), None, [_e(i, 1 + i // 5) for i in range(1, 11)])
    chunks = _chunks(b"own")
    snap = await s.create_snapshot(6, CONF, 42, _aiter(chunks), 1_234)
    assert snap is not None
    assert (snap.meta.index, snap.meta.term, snap.meta.conf) == (6, 2, CONF)
    assert decode_descriptor(snap.data) == describe_chunks(42, chunks, 1_234)
    async for view in _views(backend, s):
        assert view.snapshot() == snap
        assert (view.first_index(), view.last_index(), view.term(6)) == (7, 10, 2)
        assert view.initial_state() == (HardState(2, 0, 8), CONF)
        with pytest.raises(CompactedError):
            view.term(5)
        with pytest.raises(CompactedError):
            view.entries(5, 8, 1 << 20)
        with pytest.raises(UnavailableError):
            view.term(11)
        with pytest.raises(UnavailableError):
            view.entries(7, 12, 1 << 20)
        assert view.entries(7, 11, 1 << 20) == [_e(i, 1 + i // 5) for i in range(7, 11)]
        assert await _read(view, snap) == chunks


async def test_a_snapshot_of_an_uncommitted_index_is_refused(backend: Backend) -> None:
    s = await _with_log(backend, 3, 2)
    with pytest.raises(AssertionError):
        await s.create_snapshot(3, CONF, 0, _aiter(_chunks(b"a")), 0)
    assert s.snapshot() == EMPTY_SNAPSHOT and s.first_index() == 1


async def test_a_snapshot_not_newer_than_the_visible_one_is_skipped(backend: Backend) -> None:
    s = await _with_log(backend, 10, 10)
    first = await s.create_snapshot(8, CONF, 8, _aiter(_chunks(b"a")), 0)
    assert first is not None
    assert await s.create_snapshot(8, CONF, 8, _aiter(_chunks(b"b")), 0) is None
    assert await s.create_snapshot(5, CONF, 5, _aiter(_chunks(b"c")), 0) is None
    assert s.snapshot() == first
    assert len(await backend.chunk_sets(s)) == 1


async def test_snapshot_chunks_of_a_replaced_snapshot_raise_snapshot_missing(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 10, 10)
    old = await s.create_snapshot(5, CONF, 5, _aiter(_chunks(b"old")), 0)
    assert old is not None
    # A stream that began before the replacement is pinned: it completes.
    reading = s.snapshot_chunks(old)
    first = await anext(reading)
    new = await s.create_snapshot(8, CONF, 8, _aiter(_chunks(b"new")), 0)
    assert new is not None
    assert [first, *[c async for c in reading]] == _chunks(b"old")
    with pytest.raises(SnapshotMissing):
        s.snapshot_chunks(old)
    assert await _read(s, new) == _chunks(b"new")
    assert len(await backend.chunk_sets(s)) == 1  # the old set went once unpinned
    s = await backend.reopen(s)
    with pytest.raises(SnapshotMissing):
        s.snapshot_chunks(old)
    with pytest.raises(SnapshotMissing):
        s.snapshot_chunks(EMPTY_SNAPSHOT)


async def test_saves_go_on_while_a_large_snapshot_is_written(backend: Backend) -> None:
    s = await _with_log(backend, 10, 10)
    s.snapshot_txn_bytes = 1_000  # one transaction per chunk
    chunks = [b"%04d" % i + b"y" * 2_000 for i in range(40)]
    saved_while_writing = 0
    snapshot_task = asyncio.create_task(s.create_snapshot(10, CONF, 10, _aiter(chunks), 0))
    index = 11
    while not snapshot_task.done():
        await s.save(HardState(1, 0, 10), None, [_e(index, 1)])
        index += 1
        saved_while_writing += 1 if not snapshot_task.done() else 0
    snap = snapshot_task.result()
    assert snap is not None and saved_while_writing >= 3
    s = await backend.reopen(s)
    assert s.snapshot() == snap and s.last_index() == index - 1
    assert await _read(s, snap) == chunks


# ---- snapshots received from the leader ----------------------------------------------------


async def test_a_saved_received_snapshot_replaces_the_log_atomically(backend: Backend) -> None:
    s = await _with_log(backend, 10, 6)
    meta, descriptor, chunks = _received(20, 3, b"leader")
    staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    assert staged == Snapshot(meta, descriptor)
    assert await _read(s, staged) == chunks  # a staged snapshot can be read
    await s.save(HardState(3, 0, 20), staged, [_e(21, 3)])
    async for view in _views(backend, s):
        assert view.snapshot() == staged
        assert (view.first_index(), view.last_index(), view.term(20)) == (21, 21, 3)
        assert view.initial_state() == (HardState(3, 0, 20), CONF)
        assert view.entries(21, 22, 1 << 20) == [_e(21, 3)]
        with pytest.raises(CompactedError):
            view.term(10)
        assert await _read(view, staged) == chunks


async def test_a_received_snapshot_below_the_log_end_drops_the_whole_log(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 10, 3)  # a follower with a long uncommitted suffix
    meta, descriptor, chunks = _received(6, 2, b"short")
    staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    await s.save(HardState(2, 0, 6), staged, [])
    async for view in _views(backend, s):
        assert (view.first_index(), view.last_index(), view.term(6)) == (7, 6, 2)
        with pytest.raises(UnavailableError):
            view.term(7)


async def test_a_staged_snapshot_never_saved_changes_nothing(backend: Backend) -> None:
    s = await _with_log(backend, 10, 10)
    own = await s.create_snapshot(4, CONF, 4, _aiter(_chunks(b"own")), 0)
    assert own is not None
    before = _state(s)
    meta, descriptor, chunks = _received(30, 4, b"never")
    staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    assert _state(s) == before
    s = await backend.reopen(s)
    assert _state(s) == before
    assert await _read(s, own) == _chunks(b"own")
    if backend.name == "sqlite":  # reopened: the staged copy was an orphan, now gone
        assert len(await backend.chunk_sets(s)) == 1
        with pytest.raises(SnapshotMissing):
            await s.save(None, staged, [])
    else:
        s.drop_staged(staged)
        assert len(await backend.chunk_sets(s)) == 1
        with pytest.raises(SnapshotMissing):
            s.snapshot_chunks(staged)


async def test_a_snapshot_that_was_not_staged_cannot_be_saved(backend: Backend) -> None:
    s = await _with_log(backend, 3, 3)
    before = _state(s)
    meta, descriptor, _ = _received(9, 2, b"x")
    with pytest.raises(SnapshotMissing):
        await s.save(HardState(2, 0, 9), Snapshot(meta, descriptor), [_e(10, 2)])
    assert _state(s) == before


@pytest.mark.parametrize(
    "damage",
    ["flipped byte", "missing chunk", "extra chunk", "bad descriptor"],
)
async def test_a_corrupt_received_snapshot_is_refused_and_dropped(
    backend: Backend, damage: str
) -> None:
    s = await _with_log(backend, 3, 3)
    before = _state(s)
    meta, descriptor, chunks = _received(9, 2, b"bad")
    if damage == "flipped byte":
        chunks[1] = chunks[1][:-1] + b"?"
    elif damage == "missing chunk":
        del chunks[-1]
    elif damage == "extra chunk":
        chunks.append(b"more")
    else:
        descriptor = descriptor.replace(b'"format":1', b'"format":true')
    with pytest.raises(SnapshotCorrupt):
        await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    assert _state(s) == before
    assert await backend.chunk_sets(s) == set()


async def test_create_snapshot_racing_a_newer_received_snapshot_returns_none(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 10, 10)
    meta, descriptor, chunks = _received(50, 2, b"leader")
    received: list[Snapshot] = []

    async def leader_snapshot_arrives() -> None:
        staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
        await s.save(HardState(2, 0, 50), staged, [_e(51, 2)])
        received.append(staged)

    s.before_snapshot_visible = leader_snapshot_arrives
    assert await s.create_snapshot(8, CONF, 8, _aiter(_chunks(b"own")), 0) is None
    s.before_snapshot_visible = None
    async for view in _views(backend, s):
        assert view.snapshot() == received[0]
        assert (view.first_index(), view.last_index()) == (51, 51)
        assert await _read(view, received[0]) == chunks
        assert len(await backend.chunk_sets(view)) == 1  # our chunks were dropped


async def test_the_same_snapshot_staged_twice_keeps_one_copy(backend: Backend) -> None:
    s = await _with_log(backend, 3, 3)
    meta, descriptor, chunks = _received(9, 2, b"twice")
    a = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    b = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    assert a == b
    assert len(await backend.chunk_sets(s)) == 1
    await s.save(HardState(2, 0, 9), b, [])
    assert await _read(s, s.snapshot()) == chunks


async def test_a_stream_longer_than_its_descriptor_is_cut_off_at_once(backend: Backend) -> None:
    s = await _with_log(backend, 3, 3)
    meta, descriptor, _ = _received(9, 2, b"long")
    pulled = 0

    async def endless(chunk: bytes) -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 10_000:
            pulled += 1
            yield chunk

    for chunk in (b"", b"y" * 5_000):  # too many chunks; too many bytes
        pulled = 0
        with pytest.raises(SnapshotCorrupt, match="longer than its descriptor"):
            await s.stage_snapshot(meta, descriptor, endless(chunk))
        assert pulled <= 4
    assert await backend.chunk_sets(s) == set()


async def test_garbage_collection_never_takes_a_snapshot_being_written(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 10, 10)
    s.snapshot_txn_bytes = 1  # a transaction per chunk
    s.before_snapshot_visible = s.collect_garbage  # chunks written, not yet visible
    snap = await s.create_snapshot(10, CONF, 10, _aiter(_chunks(b"own", 4)), 0)
    assert snap is not None
    assert await _read(s, snap) == _chunks(b"own", 4)
    meta, descriptor, chunks = _received(20, 2, b"recv")

    async def collecting_midway() -> AsyncIterator[bytes]:
        for i, chunk in enumerate(chunks):
            if i == 2:
                await s.collect_garbage()
            yield chunk

    staged = await s.stage_snapshot(meta, descriptor, collecting_midway())
    await s.save(HardState(2, 0, 20), staged, [])
    s = await backend.reopen(s)
    assert await _read(s, s.snapshot()) == chunks


async def test_staged_snapshots_older_than_the_visible_one_are_dropped(
    backend: Backend,
) -> None:
    s = await _with_log(backend, 3, 3)
    older = await s.stage_snapshot(*_staged_args(_received(9, 2, b"older")))
    newer = await s.stage_snapshot(*_staged_args(_received(12, 2, b"newer")))
    later = await s.stage_snapshot(*_staged_args(_received(30, 3, b"later")))
    await s.save(HardState(2, 0, 12), newer, [])
    with pytest.raises(SnapshotMissing):
        s.snapshot_chunks(older)
    assert await _read(s, later) == _chunks(b"later")  # newer than the saved one: kept
    assert len(await backend.chunk_sets(s)) == 2
    await s.save(HardState(3, 0, 30), None, [_e(i, 3) for i in range(13, 31)])
    own = await s.create_snapshot(20, CONF, 20, _aiter(_chunks(b"own")), 0)
    assert own is not None
    assert await _read(s, later) == _chunks(b"later")
    own = await s.create_snapshot(30, CONF, 30, _aiter(_chunks(b"own30")), 0)
    assert own is not None
    with pytest.raises(SnapshotMissing):
        s.snapshot_chunks(later)
    assert len(await backend.chunk_sets(s)) == 1


def _staged_args(
    received: tuple[SnapshotMeta, bytes, list[bytes]],
) -> tuple[SnapshotMeta, bytes, AsyncIterator[bytes]]:
    meta, descriptor, chunks = received
    return meta, descriptor, _aiter(chunks)


# ---- all or nothing ----------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["snapshot", "entries", "hard_state"])
async def test_a_save_that_fails_midway_changes_nothing(backend: Backend, step: str) -> None:
    s = await _with_log(backend, 5, 5)
    meta, descriptor, chunks = _received(10, 2, b"fail")
    staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    before = _state(s)
    fsyncs = s.fsyncs

    def fail(at: str) -> None:
        if at == step:
            raise OSError(f"injected failure after writing the {at}")

    s.fail_point = fail
    with pytest.raises(OSError, match="injected"):
        await s.save(HardState(2, 1, 10), staged, [_e(11, 2), _e(12, 2)])
    assert _state(s) == before and s.fsyncs == fsyncs
    s.fail_point = None
    s = await backend.reopen(s)
    assert _state(s) == before
    # Staged again (a reopen forgets staged snapshots), the same save succeeds.
    staged = await s.stage_snapshot(meta, descriptor, _aiter(chunks))
    await s.save(HardState(2, 1, 10), staged, [_e(11, 2), _e(12, 2)])
    s = await backend.reopen(s)
    assert s.snapshot() == staged and s.last_index() == 12
    assert await _read(s, staged) == chunks


@pytest.mark.parametrize("step", ["entries", "hard_state"])
async def test_a_failed_overwrite_keeps_the_old_suffix(backend: Backend, step: str) -> None:
    s = await _with_log(backend, 5, 2)
    before = _state(s)

    def fail(at: str) -> None:
        if at == step:
            raise OSError("injected")

    s.fail_point = fail
    with pytest.raises(OSError):
        await s.save(HardState(3, 0, 2), None, [_e(3, 3)])
    s.fail_point = None
    assert _state(s) == before
    s = await backend.reopen(s)
    assert _state(s) == before


async def test_a_cancelled_save_still_completes_and_is_mirrored(backend: Backend) -> None:
    s = await _with_log(backend, 2, 2)
    task = asyncio.create_task(s.save(HardState(1, 0, 2), None, [_e(3, 1)]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await s.save(None, None, [_e(4, 1)])  # queued behind it
    async for view in _views(backend, s):
        assert view.last_index() == 4 and view.term(3) == 1


# ---- everything, across a reopen ---------------------------------------------------------------


async def test_reopen_keeps_log_hard_state_snapshot_and_chunks(backend: Backend) -> None:
    s = await backend.open([1, 2, 3])
    await s.save(HardState(4, 2, 30), None, [_e(i, 4) for i in range(2, 41)])
    snap = await s.create_snapshot(30, CONF, 29, _aiter(_chunks(b"all", 5)), 99)
    assert snap is not None
    await s.save(HardState(5, 0, 30), None, [_e(38, 5)])
    before = _state(s)
    s = await backend.reopen(s)
    assert _state(s) == before
    assert (s.first_index(), s.last_index(), s.term(38)) == (31, 38, 5)
    assert await _read(s, s.snapshot()) == _chunks(b"all", 5)
    assert decode_descriptor(s.snapshot().data).zxid == 29


# ---- the descriptor --------------------------------------------------------------------------


def test_the_descriptor_is_content_defined_and_round_trips() -> None:
    chunks = _chunks(b"d")
    d = describe_chunks(7, chunks, 5)
    assert d == SnapshotDescriptor(7, 3, sum(map(len, chunks)), d.sha256, 5)
    raw = encode_descriptor(d)
    assert raw == encode_descriptor(describe_chunks(7, list(chunks), 5))
    assert decode_descriptor(raw) == d
    assert raw.startswith(b'{"format":1,"zxid":7,"chunks":3,')


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"format":1}',
        b'{"format":2,"zxid":1,"chunks":1,"bytes":1,"sha256":"' + b"0" * 64 + b'","created_ms":0}',
        b'{"format":1,"zxid":-1,"chunks":1,"bytes":1,"sha256":"' + b"0" * 64 + b'","created_ms":0}',
        b'{"format":1,"zxid":1,"chunks":true,"bytes":1,"sha256":"'
        + b"0" * 64
        + b'","created_ms":0}',
        b'{"format":1,"zxid":1,"chunks":1,"bytes":1,"sha256":"ABC","created_ms":0}',
        b'{"format":1,"zxid":1,"chunks":1,"bytes":1,"sha256":"'
        + b"0" * 64
        + b'","created_ms":0,"x":1}',
    ],
)
def test_a_malformed_descriptor_is_snapshot_corrupt(raw: bytes) -> None:
    with pytest.raises(SnapshotCorrupt):
        decode_descriptor(raw)


def test_both_implementations_are_node_storage(tmp_path: Path) -> None:
    # Checked by mypy: both classes satisfy the Protocol the driver uses.
    implementations: list[type[NodeStorage]] = [MemoryNodeStorage, SqliteStorage]
    assert len(implementations) == 2
