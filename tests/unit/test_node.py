"""A cluster of one over real SQLite: group commit, recovery from snapshot plus
log, snapshots that compact the log while writes go on, the data dir lock."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import pytest

from httpcoord.cluster.node import ClusterConfig, Node, NodeLimits
from httpcoord.cluster.sqlite_storage import FILE_NAME, SqliteStorage
from httpcoord.errors import BadVersion, NodeExists, Unavailable
from httpcoord.tree.txn import CreateOp, SetDataOp

DEADLINE_S = 5.0


async def open_node(path: Path, wall_ms: int = 1_000, **limits: int) -> Node:
    node = await Node.open(path, ClusterConfig(), NodeLimits(**limits), wall_ms=lambda: wall_ms)
    node.start(maintenance=False)
    return node


def sqlite_storage(node: Node) -> SqliteStorage:
    assert isinstance(node.storage, SqliteStorage)
    return node.storage


def log_rows(data_dir: Path) -> list[int]:
    conn = sqlite3.connect(data_dir / FILE_NAME)
    try:
        return [r[0] for r in conn.execute("SELECT idx FROM log ORDER BY idx")]
    finally:
        conn.close()


async def poll(what: str, done: object) -> None:
    """Wait, with a deadline, until ``done()`` is true."""
    assert callable(done)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not done():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


async def test_a_cluster_of_one_leads_as_soon_as_it_is_open(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    assert node.driver.is_leader and node.leader_id == 1
    assert node.ready
    await node.close()


async def test_concurrent_writes_share_fsyncs(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/k"),))
    fsyncs_before = node.storage.fsyncs
    results = await asyncio.gather(
        *(node.propose((SetDataOp("/k", b"%d" % i),)) for i in range(500))
    )
    fsyncs = node.storage.fsyncs - fsyncs_before
    assert sorted(r.zxid for r in results) == list(range(2, 502))
    assert fsyncs < 50, f"500 concurrent writes took {fsyncs} fsyncs"
    await node.close()


async def test_restart_recovers_the_identical_tree_and_zxid(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/a", b"1"),))
    with pytest.raises(NodeExists):
        await node.propose((CreateOp("/a"),))
    await node.propose((CreateOp("/a/s-", sequential=True),))
    await node.propose((SetDataOp("/a", b"\xff"),))
    with pytest.raises(BadVersion):
        await node.propose((SetDataOp("/a", b"", version=9),))
    digest, zxid = node.digest(), node.zxid
    await node.close()

    node = await open_node(tmp_path)
    assert node.digest() == digest
    assert node.zxid == zxid == 3
    # Refused writes took no zxid before the restart and none on replay.
    result = await node.propose((CreateOp("/b"),))
    assert result.zxid == 4
    await node.close()


async def test_snapshot_compacts_the_log_and_restores(tmp_path: Path) -> None:
    node = await open_node(tmp_path, snapshot_entries=10)
    await node.propose((CreateOp("/a"),))
    for i in range(24):
        await node.propose((CreateOp(f"/a/n{i}", b"x" * i),))
    # Snapshots are written in the background: wait for the one in flight.
    await poll("two snapshots are taken", lambda: node.snapshots_taken >= 2)
    snap = node.storage.snapshot().meta
    last = node.storage.last_index()
    assert snap.index >= 20 and node.storage.first_index() == snap.index + 1
    digest, zxid, applied = node.digest(), node.zxid, node.applied_index
    await node.close()
    # On disk too, only the log after the snapshot is left.
    assert log_rows(tmp_path) == list(range(snap.index + 1, last + 1))

    node = await open_node(tmp_path, snapshot_entries=10)
    assert node.digest() == digest and node.zxid == zxid == 25
    # Everything before the restart is applied again (plus the new term's no-op).
    assert node.applied_index >= applied
    await node.close()


async def test_a_multi_counts_each_of_its_ops_toward_the_next_snapshot(tmp_path: Path) -> None:
    """A restart replays ops, not entries: one multi of many creates must not
    let the log grow past the bound."""
    node = await open_node(tmp_path, snapshot_entries=100)
    await node.propose(tuple(CreateOp(f"/m{i}") for i in range(60)), multi=True)
    assert node.snapshots_taken == 0
    await node.propose(tuple(CreateOp(f"/n{i}") for i in range(60)), multi=True)
    await poll("a snapshot after 120 ops in 2 entries", lambda: node.snapshots_taken >= 1)
    await node.close()


async def test_a_second_process_cannot_open_the_same_data_dir(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        await Node.open(tmp_path)
    await node.close()
    # Released by close.
    node = await open_node(tmp_path)
    await node.close()


async def test_writes_after_close_are_refused_as_unavailable(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.close()
    with pytest.raises(Unavailable):
        await node.propose((CreateOp("/late"),))


async def test_writes_go_on_while_a_snapshot_is_written(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    storage = sqlite_storage(node)
    chunks_written = asyncio.Event()
    release = asyncio.Event()

    async def stuck_before_visible() -> None:
        chunks_written.set()
        await release.wait()  # the snapshot is stuck between two transactions

    storage.before_snapshot_visible = stuck_before_visible
    for i in range(3):
        await node.propose((CreateOp(f"/n{i}"),))
    snapshot = asyncio.ensure_future(node.take_snapshot())
    await asyncio.wait_for(chunks_written.wait(), DEADLINE_S)
    # A snapshot is being written, and a write is acknowledged meanwhile.
    done = await asyncio.wait_for(node.propose((CreateOp("/during"),)), DEADLINE_S)
    assert done.zxid == 4 and node.snapshots_taken == 0
    release.set()
    await asyncio.wait_for(snapshot, DEADLINE_S)
    assert node.snapshots_taken == 1
    await node.close()

    node = await open_node(tmp_path)
    assert node.exists("/during") and node.zxid == 4
    assert node.storage.snapshot().meta.index > 0
    await node.close()


async def test_txn_stamps_never_go_back_across_a_restart(tmp_path: Path) -> None:
    node = await open_node(tmp_path, wall_ms=2_000_000)
    await node.propose((CreateOp("/a"),))
    await node.close()
    # The clock went back while the node was down: the replayed log holds the newer stamp.
    node = await open_node(tmp_path, wall_ms=1_000_000)
    b = await node.propose((CreateOp("/b"),))
    stat = b.results[0].stat
    assert stat is not None and stat.ctime == 2_000_000
    await node.close()


async def test_txn_stamps_never_go_back_across_a_restart_from_a_snapshot(tmp_path: Path) -> None:
    node = await open_node(tmp_path, wall_ms=2_000_000)
    await node.propose((CreateOp("/a"),))
    await node.take_snapshot()
    assert node.storage.snapshot().meta.index == node.applied_index
    await node.close()
    node = await open_node(tmp_path, wall_ms=1_000_000)
    b = await node.propose((CreateOp("/b"),))
    stat = b.results[0].stat
    assert stat is not None and stat.ctime >= node.get("/a").mtime == 2_000_000
    await node.close()


async def test_a_growing_tree_is_moved_out_of_the_collectors_way(tmp_path: Path) -> None:
    node = await open_node(tmp_path, gc_freeze_growth_znodes=50)
    frozen = gc.get_freeze_count()
    try:
        await node.propose(tuple(CreateOp(f"/n{i}") for i in range(30)), multi=True)
        assert gc.get_freeze_count() == frozen  # 30 new znodes: not yet
        await node.propose(tuple(CreateOp(f"/m{i}") for i in range(30)), multi=True)
        # 60 new znodes: frozen, the znodes among what was frozen.
        assert gc.get_freeze_count() > frozen + 60
    finally:
        gc.unfreeze()  # this test process keeps collecting everything
        await node.close()
