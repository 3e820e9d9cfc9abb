"""What only the SQLite storage promises: one save is one transaction and one
fsync, a SIGKILL never leaves a gap or loses an acknowledged save, the data
dir's identity is checked, and the single node's schema-1 data dir is
migrated in place (or refused when started with peers)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from httpcoord.cluster.node_storage import (
    SnapshotMissing,
    StorageCorrupt,
    StorageMismatch,
    decode_descriptor,
    describe_chunks,
    encode_descriptor,
)
from httpcoord.cluster.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
)
from httpcoord.cluster.raft.storage import EMPTY_SNAPSHOT
from httpcoord.cluster.sqlite_storage import FILE_NAME, SCHEMA_VERSION, SqliteStorage
from httpcoord.errors import CoordError
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import CreateOp, DeleteOp, SetDataOp, Txn, encode_txn

V1_FIXTURE = Path(__file__).parent / "data"  # written by the single node of schema 1


def _e(i: int, t: int, size: int = 100) -> Entry:
    return Entry(i, t, EntryKind.NORMAL, (b"%d:%d:" % (i, t)).ljust(size, b"p"))


async def _aiter(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _chunks_of(s: SqliteStorage) -> list[bytes]:
    return [c async for c in s.snapshot_chunks(s.snapshot())]


def _sql(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data_dir / FILE_NAME)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def _traced(s: SqliteStorage) -> AsyncIterator[list[str]]:
    """Every SQL statement the storage's connection runs meanwhile."""
    statements: list[str] = []
    await s._db.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        await s._db.set_trace_callback(cast(Callable[..., Any], None))  # None turns it off


# ---- one save, one transaction ------------------------------------------------------------


async def test_one_save_is_one_transaction_and_one_fsync(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 1), None, [_e(i, 1) for i in range(2, 6)])
    fsyncs = s.fsyncs
    async with _traced(s) as statements:
        # Everything at once: a conflicting suffix, new entries, the hard state.
        await s.save(HardState(2, 1, 3), None, [_e(i, 2) for i in range(4, 4 + 64)])
    assert s.fsyncs == fsyncs + 1
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert sum(st in ("BEGIN", "COMMIT", "ROLLBACK") for st in statements) == 2
    assert s.entries_saved == 4 + 64
    await s.close()


async def test_a_received_snapshot_is_saved_in_one_transaction(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 1), None, [_e(i, 1) for i in range(2, 30)])
    chunks = [b"a" * 1000, b"b" * 1000]
    descriptor = encode_descriptor(describe_chunks(5, chunks, 0))
    staged = await s.stage_snapshot(
        SnapshotMeta(40, 2, ConfState(frozenset({1}))), descriptor, _aiter(chunks)
    )
    await s.collect_garbage()  # nothing in the background while we watch
    async with _traced(s) as statements:
        await s.save(HardState(2, 0, 40), staged, [_e(41, 2)])
        await s.collect_garbage()
    # The switch: one transaction. Then the garbage goes, in statements of its own.
    save_txn = statements[: statements.index("COMMIT") + 1]
    assert save_txn[0] == "BEGIN" and statements.count("BEGIN") == 1
    assert any(st.startswith("INSERT INTO snapshots") for st in save_txn)
    assert "DELETE FROM log WHERE idx > 40" in save_txn
    assert any(st.startswith("DELETE FROM log WHERE idx <= ") for st in statements)
    # The replaced log rows are deleted in the background, after the switch.
    assert _sql(tmp_path, "SELECT idx FROM log") == [(41,)]
    await s.close()


# ---- identity --------------------------------------------------------------------------------


async def test_a_data_dir_of_another_node_or_cluster_is_refused(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 2, "blue", [1, 2, 3])
    await s.close()
    with pytest.raises(StorageMismatch, match="belongs to node 2 of cluster 'blue', not node 3"):
        await SqliteStorage.open(tmp_path, 3, "blue", [1, 2, 3])
    with pytest.raises(StorageMismatch, match="not node 2 of cluster 'green'"):
        await SqliteStorage.open(tmp_path, 2, "green", [1, 2, 3])
    s = await SqliteStorage.open(tmp_path, 2, "blue", [1, 2, 3])
    assert s.last_index() == 1
    await s.close()


async def test_bootstrap_voters_are_ignored_once_the_data_dir_exists(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 1), None, [_e(2, 1)])
    await s.close()
    s = await SqliteStorage.open(tmp_path, 1, "c", [1, 2, 3])
    conf = ConfState.decode(s.entries(1, 2, 1 << 20)[0].data)
    assert conf.voters == {1} and s.last_index() == 2
    await s.close()


async def test_a_node_that_will_join_starts_empty(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 4, "c", [])
    assert (s.first_index(), s.last_index(), s.snapshot()) == (1, 0, EMPTY_SNAPSHOT)
    assert s.initial_state() == (HardState(0, 0, 0), ConfState())
    await s.close()
    assert _sql(tmp_path, "SELECT key, value FROM meta ORDER BY key") == [
        ("cluster_id", "c"),
        ("node_id", "4"),
        ("schema_version", str(SCHEMA_VERSION)),
    ]


async def test_a_founder_must_be_one_of_the_voters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not among the founding voters"):
        await SqliteStorage.open(tmp_path, 4, "c", [1, 2, 3])
    assert _sql(tmp_path, "SELECT name FROM sqlite_master WHERE type='table'") == []


async def test_a_schema_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageMismatch, match="schema version 3"):
        await SqliteStorage.open(tmp_path, 1, "c", [1])


async def test_a_gap_in_the_stored_log_is_detected_at_open(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 1), None, [_e(i, 1) for i in range(2, 6)])
    await s.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("DELETE FROM log WHERE idx = 3")
    conn.commit()
    conn.close()
    with pytest.raises(StorageCorrupt, match="expected entry 3, found 4"):
        await SqliteStorage.open(tmp_path, 1, "c", [1])


async def test_a_snapshot_missing_chunks_is_detected_at_open(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 3), None, [_e(2, 1), _e(3, 1)])
    assert (
        await s.create_snapshot(3, ConfState(frozenset({1})), 0, _aiter([b"a", b"b"]), 0)
        is not None
    )
    await s.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("DELETE FROM chunks WHERE seq = 1")
    conn.commit()
    conn.close()
    with pytest.raises(StorageCorrupt, match="has 1 of its 2 chunks"):
        await SqliteStorage.open(tmp_path, 1, "c", [1])


async def test_orphan_chunks_are_removed_at_open(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    await s.save(HardState(1, 0, 3), None, [_e(2, 1), _e(3, 1)])
    snap = await s.create_snapshot(3, ConfState(frozenset({1})), 0, _aiter([b"own"]), 0)
    assert snap is not None
    await s.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)  # a stage a crash cut short
    conn.executemany(
        "INSERT INTO chunks(snapshot_id, seq, data) VALUES (?, ?, ?)",
        [(77, 0, b"half"), (77, 1, b"staged")],
    )
    conn.commit()
    conn.close()
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    assert _sql(tmp_path, "SELECT DISTINCT snapshot_id FROM chunks") == [(s._visible_set,)]
    assert await _chunks_of(s) == [b"own"]
    # New chunk sets never reuse an id a crash may have left rows under.
    assert s._next_set > 77
    await s.close()


# ---- crashes ----------------------------------------------------------------------------------

_CHILD = r"""
import asyncio, random, sys
from httpcoord.cluster.node_storage import describe_chunks, encode_descriptor
from httpcoord.cluster.raft.messages import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from httpcoord.cluster.sqlite_storage import SqliteStorage

def entry(i, t):
    return Entry(i, t, EntryKind.NORMAL, (b"%d:%d:" % (i, t)).ljust(20 + i % 200, b"p"))

async def chunks_of(chunks):
    for c in chunks:
        yield c

async def main(path, mode, seed):
    rng = random.Random(seed)
    s = await SqliteStorage.open(path, 1, "crash", [1])
    s.snapshot_txn_bytes = 64 * 1024  # many chunk transactions: more places to die
    conf = ConfState(frozenset({1}))
    term = s.initial_state()[0].term + 1  # a new term in each life, as after an election
    own = None
    print("ready", flush=True)
    while True:
        last = s.last_index()
        if mode == "snapshots" and rng.random() < 0.05:
            index = last + rng.randint(1, 40)
            chunks = [rng.randbytes(rng.randint(1, 50_000)) for _ in range(rng.randint(1, 10))]
            descriptor = encode_descriptor(describe_chunks(index, chunks, 0))
            meta = SnapshotMeta(index, term, conf)
            staged = await s.stage_snapshot(meta, descriptor, chunks_of(chunks))
            await s.save(HardState(term, 1, index), staged, [entry(index + 1, term)])
            print("snap", index, term, flush=True)
            print("ack", index + 1, term, index, flush=True)
        else:
            n = rng.choice((1, 1, 1, 8, 64))
            await s.save(HardState(term, 1, last + n), None,
                         [entry(last + 1 + i, term) for i in range(n)])
            print("ack", last + n, term, last + n, flush=True)
        if mode == "snapshots" and (own is None or own.done()) and rng.random() < 0.1:
            commit = s.initial_state()[0].commit
            if commit > s.snapshot().meta.index:
                chunks = [rng.randbytes(rng.randint(1, 50_000)) for _ in range(rng.randint(1, 10))]
                own = asyncio.ensure_future(s.create_snapshot(commit, conf, commit, chunks_of(chunks), 0))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

_LINE_WAIT_S = 30.0


async def _run_and_kill(data_dir: Path, mode: str, seed: int, acks_before_kill: int) -> list[str]:
    """Start the child, let it acknowledge some saves, SIGKILL it; return every
    line it printed (each one was printed after its save returned)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(data_dir),
        mode,
        str(seed),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), _LINE_WAIT_S)
        assert ready == b"ready\n", ready
        while sum(line.startswith("ack") for line in lines) < acks_before_kill:
            line = await asyncio.wait_for(proc.stdout.readline(), _LINE_WAIT_S)
            assert line, "the child died on its own"
            lines.append(line.decode().strip())
    finally:
        proc.kill()  # SIGKILL, mid-save or mid-snapshot
        rest = await asyncio.wait_for(proc.stdout.read(), _LINE_WAIT_S)
        await proc.wait()
    lines += [line for line in rest.decode().splitlines() if line]
    return lines


async def _check_after_crash(data_dir: Path, lines: list[str]) -> None:
    acked_last = acked_term = acked_commit = acked_snapshot = 0
    for line in lines:
        kind, *numbers = line.split()
        if kind == "ack":
            last, term, commit = map(int, numbers)
            acked_last, acked_term = max(acked_last, last), max(acked_term, term)
            acked_commit = max(acked_commit, commit)
        elif kind == "snap":
            acked_snapshot = max(acked_snapshot, int(numbers[0]))
    s = await SqliteStorage.open(data_dir, 1, "crash", [1])
    try:
        hs = s.initial_state()[0]
        snap_index = s.snapshot().meta.index
        assert s.last_index() >= snap_index, "the log ends below its snapshot"
        assert s.first_index() == snap_index + 1
        assert s.last_index() >= acked_last, "an acknowledged save was lost"
        assert hs.term >= acked_term and hs.commit >= acked_commit
        assert snap_index >= acked_snapshot
        entries = s.entries(s.first_index(), s.last_index() + 1, 1 << 40)
        assert [e.index for e in entries] == list(range(s.first_index(), s.last_index() + 1))
        for e in entries[1 if entries and entries[0].kind == EntryKind.CONF else 0 :]:
            assert e.data.startswith(b"%d:%d:" % (e.index, e.term)), "an entry holds another's data"
        terms = [s.term(snap_index)] + [e.term for e in entries]
        assert terms == sorted(terms)
        if snap_index:
            chunks = await _chunks_of(s)  # verified against the descriptor's sha256
            assert len(chunks) == decode_descriptor(s.snapshot().data).chunk_count
            assert await s.stored_chunk_sets() == {s._visible_set}, "orphan chunks survived"
    finally:
        await s.close()


@pytest.mark.parametrize("mode", ["log", "snapshots"])
async def test_sigkill_never_loses_an_acknowledged_save_nor_leaves_a_gap(
    tmp_path: Path, mode: str
) -> None:
    rng = random.Random(f"crash-{mode}")
    for life in range(4):
        lines = await _run_and_kill(tmp_path, mode, life, rng.randint(20, 250))
        assert any(line.startswith("ack") for line in lines)
        await _check_after_crash(tmp_path, lines)


# ---- migration from the single node (schema 1) ------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
                  data BLOB NOT NULL);
CREATE TABLE snapshot (id INTEGER PRIMARY KEY, log_index INTEGER NOT NULL,
                       log_term INTEGER NOT NULL, zxid INTEGER NOT NULL,
                       created_ms INTEGER NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE snapshot_chunk (snapshot_id INTEGER NOT NULL, seq INTEGER NOT NULL,
                             data BLOB NOT NULL, PRIMARY KEY (snapshot_id, seq));
INSERT INTO meta(key, value) VALUES ('schema_version', '1');
"""


def _v1_txns() -> list[Txn | None]:
    """Creates, sets, deletes, refused txns and no-ops (None)."""
    txns: list[Txn | None] = [Txn((CreateOp("/app", b"root"),), 1_000)]
    for i in range(40):
        txns.append(Txn((CreateOp(f"/app/n{i}", b"%d" % i),), 1_000 + i))
        if i % 7 == 0:
            txns.append(Txn((CreateOp(f"/app/n{i}"),), 1_000 + i))  # refused: NodeExists
        if i % 5 == 0:
            txns.append(Txn((SetDataOp(f"/app/n{i}", b"set"),), 1_000 + i))
        if i % 9 == 0:
            txns.append(None)
    txns.append(Txn((DeleteOp("/app/n3"),), 2_000))
    return txns


def _write_v1(data_dir: Path, snapshot_at: int | None) -> tuple[bytes, int]:
    """A schema-1 data dir as the single node writes it: the log (term 0,
    kind 0 txn / 1 no-op), optionally a snapshot with the log before it
    dropped. Returns the tree's canonical bytes and the last index."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / FILE_NAME)
    conn.executescript(_V1_SCHEMA)
    tree = Tree()
    txns = _v1_txns()
    for index, txn in enumerate(txns, 1):
        if txn is None:
            conn.execute("INSERT INTO log VALUES (?, 0, 1, ?)", (index, b""))
        else:
            conn.execute("INSERT INTO log VALUES (?, 0, 0, ?)", (index, encode_txn(txn)))
            try:
                tree.apply(txn)
            except CoordError:
                pass
        if index == snapshot_at:
            chunks = list(tree.snapshot_chunks(nodes_per_chunk=7))
            conn.execute(
                "INSERT INTO snapshot VALUES (5, ?, 0, ?, 1, ?)", (index, tree.zxid, len(chunks))
            )
            conn.executemany("INSERT INTO snapshot_chunk VALUES (5, ?, ?)", list(enumerate(chunks)))
            conn.execute("DELETE FROM log WHERE idx <= ?", (index - 3,))  # as if cut short
    conn.commit()
    conn.close()
    return tree.snapshot_bytes(), len(txns)


@pytest.mark.parametrize("snapshot_at", [None, 30])
async def test_a_single_node_data_dir_is_migrated_when_started_alone(
    tmp_path: Path, snapshot_at: int | None
) -> None:
    image, last = _write_v1(tmp_path, snapshot_at)
    s = await SqliteStorage.open(tmp_path, 1, "solo", [1])
    assert s.migrated_from_v1
    snap = s.snapshot()
    assert (snap.meta.index, snap.meta.term) == (last, 1)
    assert snap.meta.conf == ConfState(frozenset({1}))
    assert s.initial_state() == (HardState(1, 0, last), ConfState(frozenset({1})))
    assert (s.first_index(), s.last_index(), s.term(last)) == (last + 1, last, 1)
    tree = Tree.from_snapshot(await _chunks_of(s))
    assert tree.snapshot_bytes() == image
    assert decode_descriptor(snap.data).zxid == tree.zxid
    # The replicated log continues it.
    await s.save(HardState(2, 1, last + 1), None, [Entry(last + 1, 2, EntryKind.NOOP, b"")])
    await s.close()

    tables = {r[0] for r in _sql(tmp_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "hard_state", "log", "snapshots", "chunks"}
    assert _sql(tmp_path, "SELECT idx, term FROM log") == [(last + 1, 2)]
    s = await SqliteStorage.open(tmp_path, 1, "solo", [1])
    assert not s.migrated_from_v1 and s.last_index() == last + 1
    assert Tree.from_snapshot(await _chunks_of(s)).snapshot_bytes() == image
    await s.close()


async def test_a_single_node_data_dir_started_with_peers_is_refused_untouched(
    tmp_path: Path,
) -> None:
    _write_v1(tmp_path, None)
    before = _sql(tmp_path, "SELECT * FROM log ORDER BY idx")
    with pytest.raises(StorageMismatch, match=r"start it once alone \(`httpcoord serve --data-dir"):
        await SqliteStorage.open(tmp_path, 1, "c", [1, 2, 3])
    assert _sql(tmp_path, "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    assert _sql(tmp_path, "SELECT * FROM log ORDER BY idx") == before


@pytest.mark.parametrize("step", ["chunks", "switch"])
async def test_a_migration_cut_short_leaves_the_schema_1_data(tmp_path: Path, step: str) -> None:
    image, last = _write_v1(tmp_path, 30)
    log_before = _sql(tmp_path, "SELECT * FROM log ORDER BY idx")

    def crash(at: str) -> None:
        if at == step:
            raise OSError(f"power lost at {at}")

    with pytest.raises(OSError, match="power lost"):
        await SqliteStorage.open(tmp_path, 1, "solo", [1], fail_point=crash)
    assert _sql(tmp_path, "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    assert _sql(tmp_path, "SELECT * FROM log ORDER BY idx") == log_before
    assert _sql(tmp_path, "SELECT count(*) FROM snapshot_chunk") != [(0,)]
    s = await SqliteStorage.open(tmp_path, 1, "solo", [1])  # the next start migrates
    assert s.snapshot().meta.index == last
    assert Tree.from_snapshot(await _chunks_of(s)).snapshot_bytes() == image
    await s.close()


async def test_an_empty_single_node_data_dir_becomes_a_founding_member(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.executescript(_V1_SCHEMA)
    conn.close()
    s = await SqliteStorage.open(tmp_path, 1, "solo", [1])
    assert s.last_index() == 1 and s.snapshot() == EMPTY_SNAPSHOT
    assert ConfState.decode(s.entries(1, 2, 100)[0].data).voters == {1}
    await s.close()


async def test_a_data_dir_written_by_the_single_nodes_log_code_migrates(tmp_path: Path) -> None:
    """A data dir the single node's own storage code wrote (kept in
    tests/unit/data since that code is gone): 56 txns with a snapshot at 20
    and a trailing no-op. It migrates to the same tree."""
    shutil.copy(V1_FIXTURE / "v1-single-node.sqlite3", tmp_path / FILE_NAME)
    s = await SqliteStorage.open(tmp_path, 1, "solo", [1])
    assert s.snapshot().meta.index == 57
    # The tree the single node's code wrote, as today's code lays it out.
    written = (V1_FIXTURE / "v1-single-node.snapshot").read_bytes().split(b"\n")
    expected = Tree.from_snapshot(written).snapshot_bytes()
    assert Tree.from_snapshot(await _chunks_of(s)).snapshot_bytes() == expected
    await s.close()


async def test_snapshot_missing_after_the_staged_copy_is_dropped(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path, 1, "c", [1])
    chunks = [b"x" * 10]
    descriptor = encode_descriptor(describe_chunks(1, chunks, 0))
    staged = await s.stage_snapshot(
        SnapshotMeta(9, 2, ConfState(frozenset({1}))), descriptor, _aiter(chunks)
    )
    s.drop_staged(staged)
    await s.collect_garbage()
    assert await s.stored_chunk_sets() == set()
    with pytest.raises(SnapshotMissing):
        await s.save(None, staged, [])
    await s.close()


# ---- cost ---------------------------------------------------------------------------------------


@pytest.mark.bench
async def test_save_rate(tmp_path: Path) -> None:
    """python -m pytest -m bench -s tests/unit/test_sqlite_storage.py"""
    s = await SqliteStorage.open(tmp_path, 1, "bench", [1])
    index = 1
    for batch, saves in ((1, 2000), (64, 500)):
        start = time.perf_counter()
        for _ in range(saves):
            entries = [_e(index + 1 + i, 2, 100) for i in range(batch)]
            index += batch
            await s.save(HardState(2, 1, index), None, entries)
        elapsed = time.perf_counter() - start
        print(
            f"\n{batch:>2}-entry saves of 100-byte entries: {saves / elapsed:,.0f} saves/s,"
            f" {saves * batch / elapsed:,.0f} entries/s ({elapsed * 1e6 / saves:,.0f} us/save)"
        )
    await s.close()


async def test_the_log_behind_a_snapshot_is_deleted_in_batches_of_bounded_bytes(
    tmp_path: Path,
) -> None:
    """A save waits for one garbage batch at most: a batch holds at most
    _GC_LOG_BYTES of entries (or one entry larger than that)."""
    s = await SqliteStorage.open(tmp_path, 1, "gc", [1])
    big = 400 * 1024
    entries = [_e(i, 1, 100 if i <= 30 else big) for i in range(1, 61)]
    await s.save(HardState(1, 1, 60), None, entries)
    deleted: list[int] = []
    while batch := await s._delete_garbage_batch(frozenset({s._visible_set}), 59):
        deleted.append(batch)
    # 30 small rows and two big ones fit 1 MiB; then two big rows a batch.
    assert deleted[0] == 32 and set(deleted[1:]) == {2, 1} and sum(deleted) == 59
    assert _sql(tmp_path, "SELECT min(idx) FROM log") == [(60,)]
    await s.close()


async def test_the_wal_is_copied_by_the_checkpointer_never_inside_a_save(tmp_path: Path) -> None:
    """A save never pays for a checkpoint (copying the WAL into the database
    file and fsyncing it); the storage's own checkpointer does it."""
    s = await SqliteStorage.open(tmp_path, 1, "ckpt", [1])
    s._stop_checkpoints.set()  # no checkpointer for now
    assert s._checkpoints_task is not None
    await s._checkpoints_task
    database = tmp_path / FILE_NAME
    before = database.stat().st_size
    for n in range(8):  # 8 MiB of entries: SQLite's own checkpoint would run at 4 MiB
        first = 1 + n * 16
        await s.save(
            HardState(1, 1, first + 15),
            None,
            [_e(i, 1, 64 * 1024) for i in range(first, first + 16)],
        )
    assert database.stat().st_size - before < 1024 * 1024
    s._stop_checkpoints.clear()
    s._start_checkpoints()
    deadline = time.monotonic() + 10
    while database.stat().st_size - before < 8 * 1024 * 1024:
        assert time.monotonic() < deadline, "the checkpointer copied nothing in 10 s"
        await asyncio.sleep(0.05)
    await s.close()
