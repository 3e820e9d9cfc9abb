"""The single node's write path over real SQLite: group commit, recovery,
snapshots and log truncation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from httpcoord.cluster.node import LocalNode, NodeLimits
from httpcoord.cluster.sqlite_log import LogEntry, SqliteLog, StorageCorrupt
from httpcoord.errors import BadVersion, NodeExists, Unavailable
from httpcoord.tree.txn import CreateOp, SetDataOp


async def open_node(path: Path, **limits: int) -> LocalNode:
    node = await LocalNode.open(path, NodeLimits(**limits), wall_ms=lambda: 1_000)
    node.start()
    return node


async def test_concurrent_writes_share_fsyncs(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/k"),))
    fsyncs_before = node.log_store.fsyncs
    results = await asyncio.gather(
        *(node.propose((SetDataOp("/k", b"%d" % i),)) for i in range(500))
    )
    fsyncs = node.log_store.fsyncs - fsyncs_before
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
    image, zxid = node.tree.snapshot_bytes(), node.tree.zxid
    await node.close()

    node = await open_node(tmp_path)
    assert node.tree.snapshot_bytes() == image
    assert node.tree.zxid == zxid == 3
    result = await node.propose((CreateOp("/b"),))
    assert result.zxid == 4
    await node.close()


async def test_snapshot_truncates_the_log_and_restores(tmp_path: Path) -> None:
    node = await open_node(tmp_path, snapshot_entries=10)
    await node.propose((CreateOp("/a"),))
    for i in range(24):
        await node.propose((CreateOp(f"/a/n{i}", b"x" * i),))
    # Snapshots are written in the background: wait for the one in flight.
    deadline = asyncio.get_running_loop().time() + 5
    while node.snapshots_taken < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    snap = await node.log_store.latest_snapshot()
    assert snap is not None and 20 <= snap.log_index <= 25
    # Only the log after the snapshot is left.
    rows = await (await node.log_store._db.execute("SELECT idx FROM log ORDER BY idx")).fetchall()
    assert [r[0] for r in rows] == list(range(snap.log_index + 1, 26))
    image = node.tree.snapshot_bytes()
    await node.close()

    node = await open_node(tmp_path, snapshot_entries=10)
    assert node.tree.snapshot_bytes() == image
    assert node.applied_index == 25
    await node.close()


async def test_a_second_process_cannot_open_the_same_data_dir(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        await LocalNode.open(tmp_path)
    await node.close()


async def test_a_gap_in_the_log_is_detected_not_skipped(tmp_path: Path) -> None:
    store = await SqliteLog.open(tmp_path)
    await store.append([LogEntry(1, 0, 0, b"{}"), LogEntry(3, 0, 0, b"{}")])
    with pytest.raises(StorageCorrupt, match="expected entry 2"):
        _ = [e async for e in store.entries_after(0)]
    await store.close()


async def test_writes_after_close_are_refused_as_unavailable(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.close()
    with pytest.raises(Unavailable):
        await node.propose((CreateOp("/late"),))


async def test_writes_go_on_while_a_snapshot_is_written(tmp_path: Path) -> None:
    node = await open_node(tmp_path, snapshot_entries=3)
    store = node.log_store
    real_write_chunks = store._write_chunks
    chunk_written = asyncio.Event()
    release = asyncio.Event()

    async def slow_chunks(rows: list[tuple[int, int, bytes]]) -> None:
        await real_write_chunks(rows)
        chunk_written.set()
        await release.wait()  # the snapshot is stuck between two transactions

    store._write_chunks = slow_chunks  # type: ignore[method-assign]
    for i in range(3):
        await node.propose((CreateOp(f"/n{i}"),))
    await asyncio.wait_for(chunk_written.wait(), 5)
    # A snapshot is being written, and a write is acknowledged meanwhile.
    done = await asyncio.wait_for(node.propose((CreateOp("/during"),)), 5)
    assert done.zxid == 4 and node.snapshots_taken == 0
    release.set()
    await node.close()
    node = await open_node(tmp_path)
    assert node.tree.exists("/during") and node.tree.zxid == 4
    assert (await node.log_store.latest_snapshot()) is not None
    await node.close()


async def test_chunks_of_an_unfinished_snapshot_are_dropped_at_open(tmp_path: Path) -> None:
    store = await SqliteLog.open(tmp_path)
    await store.append([LogEntry(1, 0, 0, b"{}")])
    await store._write_chunks([(7, 0, b"orphan")])  # a crash before the snapshot row
    await store.close()
    store = await SqliteLog.open(tmp_path)
    assert await store.latest_snapshot() is None
    assert [c async for c in store.snapshot_chunks(7)] == []
    assert [e.index async for e in store.entries_after(0)] == [1]
    await store.close()
