"""Failures on a node's write path (a snapshot, a save, a listener) and its
bounds: no proposer is left hanging, no acknowledged write is lost, and a
node whose storage failed refuses writes instead of retrying forever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from httpcoord.cluster.node import ClusterConfig, Node, NodeLimits
from httpcoord.cluster.raft.messages import Entry, HardState, Snapshot
from httpcoord.errors import TooManyRequests, Unavailable
from httpcoord.tree.txn import CreateOp, OpenSessionOp

DEADLINE_S = 5.0


async def open_node(
    path: Path, monotonic_ms: Callable[[], int] | None = None, **limits: int
) -> Node:
    node = await Node.open(
        path,
        ClusterConfig(),
        NodeLimits(**limits),
        wall_ms=lambda: 1_000,
        monotonic_ms=monotonic_ms,
    )
    node.start(maintenance=False)
    return node


async def broken_disk(
    hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
) -> None:
    await asyncio.sleep(0.001)  # a real save waits for the disk before it fails
    raise OSError("I/O error")


async def poll(what: str, done: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not done():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.001)


async def test_a_failing_snapshot_stops_writes_instead_of_hanging_them(tmp_path: Path) -> None:
    node = await open_node(tmp_path, snapshot_entries=4)
    # The membership entry and the leader's no-op: two more entries make a snapshot due.
    assert node.applied_index == 2

    async def disk_full(*args: object, **kwargs: object) -> Snapshot | None:
        raise OSError("disk full")

    node.storage.create_snapshot = disk_full  # type: ignore[method-assign]
    await node.propose((CreateOp("/a"),))
    # The second write is durable and applied before the snapshot is tried.
    second = await asyncio.wait_for(node.propose((CreateOp("/b"),)), DEADLINE_S)
    assert second.zxid == 2
    await poll("the failed snapshot stops the node", lambda: not node.healthy)
    # From now on writes are refused at once, never left waiting.
    with pytest.raises(Unavailable):
        await asyncio.wait_for(node.propose((CreateOp("/c"),)), DEADLINE_S)
    assert not node.ready
    await asyncio.wait_for(node.close(), DEADLINE_S)
    # The data dir is released: it can be opened again, with both writes.
    node = await open_node(tmp_path, snapshot_entries=1000)
    assert node.exists("/a") and node.exists("/b") and node.zxid == 2
    await node.close()


async def test_a_failing_listener_does_not_strand_the_rest_of_the_batch(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    seen: list[int] = []

    def broken(zxid: int, events: object) -> None:
        seen.append(zxid)
        raise RuntimeError("listener bug")

    node.listeners.append(broken)
    results = await asyncio.wait_for(
        asyncio.gather(*(node.propose((CreateOp(f"/n{i}"),)) for i in range(5))), DEADLINE_S
    )
    # Every proposer gets its result, and the listener saw every txn.
    assert sorted(r.zxid for r in results) == [1, 2, 3, 4, 5]
    assert seen == [1, 2, 3, 4, 5]
    assert node.healthy
    await asyncio.wait_for(node.close(), DEADLINE_S)


async def test_a_write_acknowledged_during_a_failing_snapshot_is_durable(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/before"),))
    storage = node.storage
    inside = asyncio.Event()
    fail = asyncio.Event()

    async def slow_then_fail(set_id: int, first_seq: int, chunks: list[bytes]) -> None:
        inside.set()
        await fail.wait()  # the write below is saved and acknowledged meanwhile
        raise OSError("disk full while writing the snapshot")

    storage._commit_chunks = slow_then_fail  # type: ignore[attr-defined]
    snapshot = asyncio.ensure_future(node.take_snapshot())
    await asyncio.wait_for(inside.wait(), DEADLINE_S)  # the snapshot's chunks are being written
    acked = await asyncio.wait_for(node.propose((CreateOp("/during"),)), DEADLINE_S)
    assert acked.zxid == 2
    fail.set()
    await asyncio.wait_for(snapshot, DEADLINE_S)
    # A failed snapshot write stops the node: nothing on the disk is trusted.
    assert not node.healthy
    await node.close()

    node = await open_node(tmp_path)
    assert node.exists("/during"), "an acknowledged write was lost"
    assert node.storage.snapshot().meta.index == 0  # the failed snapshot left nothing
    await node.close()


async def test_queued_writes_are_bounded_in_bytes_not_only_in_count(tmp_path: Path) -> None:
    node = await open_node(tmp_path, pending_bytes_max=4096)
    storage = node.storage
    saving = asyncio.Event()
    release = asyncio.Event()
    real_save = storage.save

    async def stalled_disk(
        hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        saving.set()
        await release.wait()
        await real_save(hard_state, snapshot, entries)

    storage.save = stalled_disk  # type: ignore[method-assign]
    first = asyncio.ensure_future(node.propose((CreateOp("/first"),)))
    await asyncio.wait_for(saving.wait(), DEADLINE_S)  # the loop waits on the disk
    big1 = asyncio.ensure_future(node.propose((CreateOp("/big1", b"x" * 2000),)))
    await poll("the big write is queued", lambda: node.driver.pending_count == 1)
    # One big write may queue; the next one would pass the byte bound.
    with pytest.raises(TooManyRequests):
        await node.propose((CreateOp("/big2", b"x" * 2000),))
    release.set()
    assert (await first).zxid == 1
    assert (await big1).zxid == 2
    # Drained: bytes are accounted back, writes are taken again.
    assert (await node.propose((CreateOp("/big3", b"x" * 2000),))).zxid == 3
    assert not node.exists("/big2")
    await node.close()


async def test_a_failing_save_refuses_the_write_and_stops_the_node(tmp_path: Path) -> None:
    node = await open_node(tmp_path)
    await node.propose((CreateOp("/ok"),))

    node.storage.save = broken_disk  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await asyncio.wait_for(node.propose((CreateOp("/x"),)), DEADLINE_S)
    assert not node.healthy and not node.ready
    # Refused at once from now on; reads go on.
    with pytest.raises(Unavailable):
        await asyncio.wait_for(node.propose((CreateOp("/y"),)), DEADLINE_S)
    assert node.exists("/ok") and not node.exists("/x")
    await asyncio.wait_for(node.close(), DEADLINE_S)


async def test_expiry_on_a_node_whose_storage_failed_does_not_retry_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000]
    node = await open_node(tmp_path, monotonic_ms=lambda: now[0])
    await node.propose((OpenSessionOp("s1", 1000),))

    node.storage.save = broken_disk  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await asyncio.wait_for(node.propose((CreateOp("/x"),)), DEADLINE_S)
    now[0] += 5000
    caplog.clear()
    # Every check (10 a second) would propose, fail, warn and re-arm each
    # session again: a log line per session per check on a node that is
    # already refusing every write (likely with a full disk).
    expired = []
    for _ in range(5):
        expired += await asyncio.wait_for(node.expire_sessions(), DEADLINE_S)
        now[0] += 100
    assert expired == ["s1"]  # tried once, not re-armed
    warnings = [r for r in caplog.records if "expiring session" in r.getMessage()]
    assert len(warnings) <= 1
    await node.close()
