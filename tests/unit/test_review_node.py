"""Review findings on the single node's write path: failures after the
append (snapshot, apply, listeners) must not leave proposers hanging."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from httpcoord.cluster.node import LocalNode, NodeLimits
from httpcoord.errors import TooManyRequests, Unavailable
from httpcoord.tree.txn import CreateOp, OpenSessionOp


async def open_node(path: Path, **limits: int) -> LocalNode:
    node = await LocalNode.open(path, NodeLimits(**limits), wall_ms=lambda: 1_000)
    node.start()
    return node


async def test_a_failing_snapshot_stops_writes_instead_of_hanging_them(tmp_path: Path) -> None:
    node = await open_node(tmp_path, snapshot_entries=2)

    async def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    node.log_store.install_snapshot = disk_full  # type: ignore[method-assign]
    await node.propose((CreateOp("/a"),))
    # The second write is durable and applied before the snapshot is tried.
    second = await asyncio.wait_for(node.propose((CreateOp("/b"),)), 5)
    assert second.zxid == 2
    # From now on writes are refused at once, never left waiting forever.
    with pytest.raises(Unavailable):
        await asyncio.wait_for(node.propose((CreateOp("/c"),)), 5)
    assert not node.healthy
    await asyncio.wait_for(node.close(), 5)
    # The data dir is released: it can be opened again, with both writes.
    node = await open_node(tmp_path, snapshot_entries=1000)
    assert node.tree.exists("/a") and node.tree.exists("/b") and node.tree.zxid == 2
    await node.close()


async def test_a_failing_listener_does_not_strand_the_rest_of_the_batch(tmp_path: Path) -> None:
    node = await open_node(tmp_path)

    def broken(zxid: int, events: object) -> None:
        raise RuntimeError("listener bug")

    node.listeners.append(broken)
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(node.propose((CreateOp(f"/n{i}"),)) for i in range(5)), return_exceptions=True
        ),
        5,
    )
    # Every proposer hears something; none hangs.
    assert len(outcomes) == 5
    await asyncio.wait_for(node.close(), 5)


async def until_taken(node: LocalNode) -> None:
    """Poll, with a deadline, until the commit loop has taken every queued write."""
    deadline = asyncio.get_running_loop().time() + 5
    while node.pending_count:
        assert asyncio.get_running_loop().time() < deadline, "the commit loop took nothing"
        await asyncio.sleep(0.001)


async def test_a_write_during_a_snapshot_is_durable_when_acknowledged(tmp_path: Path) -> None:
    # take_snapshot is public: a write appended while its transaction is open
    # must not join it (it would be acknowledged before its COMMIT, and lost
    # with the snapshot's ROLLBACK).
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/before"),))
    db = node.log_store._db
    real_executemany = db.executemany

    inside = asyncio.Event()
    fail = asyncio.Event()

    async def slow_then_fail(sql: str, rows: object) -> object:
        if "snapshot_chunk" in sql:
            inside.set()
            await fail.wait()  # the write below is appended meanwhile
            raise OSError("disk full while writing the snapshot")
        return await real_executemany(sql, rows)  # type: ignore[arg-type]

    db.executemany = slow_then_fail  # type: ignore[method-assign]
    snapshot = asyncio.ensure_future(node.take_snapshot())
    await asyncio.wait_for(inside.wait(), 5)  # the snapshot's transaction is open
    during = asyncio.ensure_future(node.propose((CreateOp("/during"),)))
    await until_taken(node)  # the commit loop is appending it
    fail.set()
    acked = await asyncio.wait_for(during, 5)
    assert acked.zxid == 2
    with pytest.raises(OSError):
        await snapshot
    db.executemany = real_executemany  # type: ignore[method-assign]
    await node.close()

    node = await open_node(tmp_path)
    assert node.tree.exists("/during"), "an acknowledged write was lost"
    await node.close()


async def test_queued_writes_are_bounded_in_bytes_not_only_in_count(tmp_path: Path) -> None:
    node = await open_node(tmp_path, pending_bytes_max=4096)
    release = asyncio.Event()
    real_append = node.log_store.append

    async def stalled_disk(entries: object) -> None:
        await release.wait()
        await real_append(entries)  # type: ignore[arg-type]

    node.log_store.append = stalled_disk  # type: ignore[method-assign]
    first = asyncio.ensure_future(node.propose((CreateOp("/first"),)))
    await until_taken(node)  # the loop has taken it and waits on the disk
    queued = [asyncio.ensure_future(node.propose((CreateOp("/big1", b"x" * 2000),)))]
    await asyncio.sleep(0)
    # One big write may queue; the next one would pass the byte bound.
    with pytest.raises(TooManyRequests):
        await node.propose((CreateOp("/big2", b"x" * 2000),))
    release.set()
    assert (await first).zxid == 1
    assert (await queued[0]).zxid == 2
    # Drained: bytes are accounted back, writes are taken again.
    assert (await node.propose((CreateOp("/big3", b"x" * 2000),))).zxid == 3
    await node.close()


async def test_expiry_on_a_node_whose_storage_failed_does_not_retry_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000]
    node = await LocalNode.open(
        tmp_path, NodeLimits(), wall_ms=lambda: 1_000, monotonic_ms=lambda: now[0]
    )
    node.start(maintenance=False)
    await node.propose((OpenSessionOp("s1", 1000),))

    async def broken_disk(entries: object) -> None:
        raise OSError("I/O error")

    node.log_store.append = broken_disk  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await node.propose((CreateOp("/x"),))
    now[0] += 5000
    caplog.clear()
    # Every check (10 a second) would propose, fail, warn and re-arm each
    # session again: a log line per session per check on a node that is
    # already refusing every write (likely with a full disk).
    for _ in range(5):
        await node.expire_sessions()
        now[0] += 100
    warnings = [r for r in caplog.records if "expiring session" in r.getMessage()]
    assert len(warnings) <= 1
    await node.close()
