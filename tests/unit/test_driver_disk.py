"""A full disk is not a failed disk: the node keeps its unsaved Ready, refuses
writes with 507 DiskFull, keeps serving reads, sends nothing it has not
saved, and resumes by itself once a save succeeds. Any other save error
stays fatal (tests/unit/test_node_failures.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from httpcoord.cluster.driver import DriverLimits
from httpcoord.cluster.node import ClusterConfig, Node, NodeLimits
from httpcoord.cluster.node_storage import MemoryNodeStorage
from httpcoord.cluster.raft.core import Role
from httpcoord.cluster.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    Message,
    Snapshot,
)
from httpcoord.cluster.sqlite_storage import SqliteStorage, _in_db_thread
from httpcoord.errors import DiskFull, OutcomeUnknown, Unavailable
from httpcoord.tree.txn import CreateOp, OpenSessionOp
from tests.unit.test_node_cluster import cluster, exists, poll

DEADLINE_S = 10.0


class FullDisk:
    """Wraps a node's ``storage.save``: while ``full`` (or for the next
    ``fail_next`` saves) it raises DiskFull before anything is written."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.full = False
        self.fail_next = 0
        self.attempts = 0
        self.refused = 0
        self.events: list[str] = []  # "refused", "saved", "sent" in order
        real_save = node.storage.save
        real_send = node.transport.send

        async def save(
            hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
        ) -> None:
            self.attempts += 1
            if self.full or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                self.refused += 1
                self.events.append("refused")
                await asyncio.sleep(0)  # a real save waits for the disk before it fails
                raise DiskFull(f"no space left for the data dir n{node.node_id}")
            await real_save(hard_state, snapshot, entries)
            self.events.append("saved")

        def send(messages: Iterable[Message]) -> None:
            batch = list(messages)
            if batch:
                self.events.append("sent")
            real_send(batch)

        node.storage.save = save  # type: ignore[method-assign]
        node.transport.send = send  # type: ignore[method-assign]
        node.driver.transport = node.transport

    def sent_while_full(self) -> bool:
        """Was anything sent between a refused save and the next saved one?"""
        frozen = False
        for event in self.events:
            if event == "refused":
                frozen = True
            elif event == "saved":
                frozen = False
            elif frozen:
                return True
        return False


async def test_a_follower_with_a_full_disk_refuses_writes_serves_reads_and_rejoins(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, g = c.others(leader)
        await leader.propose((OpenSessionOp("s", 60_000),))
        await leader.propose((CreateOp("/a", b"1"),))
        await c.converged()
        disk = FullDisk(f)
        disk.full = True

        # The leader and the other follower are a majority: writes go on.
        acked = [await leader.propose((CreateOp(f"/w{i}"),)) for i in range(5)]
        await poll("the follower finds its disk full", lambda: f.driver.disk_full is not None)

        # Writes on the full node fail at once with a clear, stable error,
        # without reaching the leader.
        with pytest.raises(DiskFull) as refused:
            await asyncio.wait_for(f.propose((CreateOp("/x"),)), 1.0)
        assert refused.value.status == 507 and "n" in refused.value.detail
        # Reads go on from what it applied; it is alive but not ready.
        assert exists(f, "/a")
        assert f.healthy and not f.ready
        reason = f.not_ready_reason
        assert reason is not None and "no space left" in reason
        # Its word on a session means nothing while it is frozen.
        with pytest.raises(Unavailable):
            f.heartbeat("s")
        # Peer messages wait in a small queue that keeps the newest.
        bound = f.driver.limits.inbox_stalled_msgs_max
        dropped = f.driver.dropped_msgs
        for _ in range(bound + 10):
            f.driver.deliver(Heartbeat(leader.node_id, f.node_id, 0, 0, 0))
        assert f.driver.inbox_count == bound
        assert f.driver.dropped_msgs >= dropped + 10
        assert not disk.sent_while_full()

        disk.full = False
        f.driver.retry_save_now()
        await c.converged()
        assert f.driver.disk_full is None and f.driver.disk_full_episodes == 1
        await poll("the follower is ready again", lambda: f.ready)
        for result in acked:
            assert f.zxid >= result.zxid
        assert all(exists(f, f"/w{i}") for i in range(5)) and not exists(f, "/x")
        assert not disk.sent_while_full()
        await f.propose((CreateOp("/after"),))
        assert exists(g, "/after")


async def test_a_leader_with_a_full_disk_is_replaced_and_rejoins_as_a_follower(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        old = await c.leader()
        await old.propose((CreateOp("/before"),))
        disk = FullDisk(old)
        disk.full = True
        # The write whose save found the disk full: its entry may already be
        # with the followers (appends go out while the leader's own fsync
        # runs), so the answer is "unknown", never "not done".
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(old.propose((CreateOp("/maybe"),)), DEADLINE_S)
        with pytest.raises(DiskFull):
            await asyncio.wait_for(old.propose((CreateOp("/no"),)), 1.0)

        # Frozen, it sends no heartbeats: the others elect a leader of their own.
        new = await c.leader(among=c.others(old))
        acked = await new.propose((CreateOp("/during"),))
        assert not disk.sent_while_full()

        disk.full = False
        old.driver.retry_save_now()
        await c.converged()
        assert old.driver.core.role is not Role.LEADER
        assert old.leader_id == new.node_id
        assert old.zxid >= acked.zxid
        assert exists(old, "/before") and exists(old, "/during") and not exists(old, "/no")
        await old.propose((CreateOp("/after"),))  # forwarded to the new leader


async def test_a_save_is_retried_with_backoff_until_the_disk_has_space(tmp_path: Path) -> None:
    node = await Node.open(
        tmp_path,
        ClusterConfig(),
        NodeLimits(),
        DriverLimits(disk_full_retry_ms_min=1, disk_full_retry_ms_max=4),
        storage=MemoryNodeStorage(bootstrap_voters=[1]),
        wall_ms=lambda: 1_000,
    )
    node.start(maintenance=False)
    try:
        await node.propose((CreateOp("/a"),))
        disk = FullDisk(node)
        disk.fail_next = 5
        with pytest.raises((DiskFull, OutcomeUnknown)):
            await asyncio.wait_for(node.propose((CreateOp("/b"),)), DEADLINE_S)
        # No space was ever freed by hand: the backoff retried on its own.
        await poll("the save went through", lambda: node.driver.disk_full is None)
        assert disk.refused == 5 and node.driver.disk_full_retries == 5
        # The Ready held through the retries was saved and applied.
        await poll("the held entry is applied", lambda: exists(node, "/b"))
        result = await node.propose((CreateOp("/c"),))
        assert result.zxid == node.zxid == 3
    finally:
        await node.close()


async def test_stopping_a_node_whose_disk_is_full_ends_its_loop(tmp_path: Path) -> None:
    node = await Node.open(
        tmp_path,
        ClusterConfig(),
        NodeLimits(),
        DriverLimits(disk_full_retry_ms_min=60_000, disk_full_retry_ms_max=60_000),
        storage=MemoryNodeStorage(bootstrap_voters=[1]),
        wall_ms=lambda: 1_000,
    )
    node.start(maintenance=False)
    disk = FullDisk(node)
    disk.full = True
    with pytest.raises((DiskFull, OutcomeUnknown)):
        await asyncio.wait_for(node.propose((CreateOp("/b"),)), DEADLINE_S)
    # The next retry is a minute away: close() must not wait for it.
    await asyncio.wait_for(node.close(), DEADLINE_S)
    assert node.driver.failed is None


async def test_a_snapshot_that_finds_the_disk_full_is_not_fatal(tmp_path: Path) -> None:
    node = await Node.open(
        tmp_path,
        ClusterConfig(),
        NodeLimits(snapshot_entries=40),
        storage=MemoryNodeStorage(bootstrap_voters=[1]),
        wall_ms=lambda: 1_000,
    )
    node.start(maintenance=False)
    real = node.storage.create_snapshot
    tried: list[int] = []

    async def full(*args: object, **kwargs: object) -> Snapshot | None:
        tried.append(node.applied_index)
        raise DiskFull("no space left for the data dir")

    try:
        node.storage.create_snapshot = full  # type: ignore[method-assign]
        for i in range(50):
            await node.propose((CreateOp(f"/a{i}"),))
            if tried:
                break
        assert tried, "a snapshot was due"
        # Healthy, and tried again a tenth of the interval later, not at
        # every apply.
        for i in range(3):
            await node.propose((CreateOp(f"/b{i}"),))
        assert node.healthy and len(tried) == 1
        await node.propose((CreateOp("/c"),))
        await poll("the snapshot was tried again", lambda: len(tried) == 2)
        assert tried[1] - tried[0] == 4
        node.storage.create_snapshot = real  # type: ignore[method-assign]
        await node.take_snapshot()
        assert node.snapshots_taken == 1
    finally:
        await node.close()


async def test_sqlite_full_rolls_the_save_back_and_the_same_save_succeeds_later(
    tmp_path: Path,
) -> None:
    storage = await SqliteStorage.open(tmp_path, 1, "c", [1])
    try:
        last = storage.last_index()
        entry = Entry(last + 1, 1, EntryKind.NORMAL, b"x" * 200_000)
        pages = await _in_db_thread(
            storage._db, lambda c: c.execute("PRAGMA page_count").fetchone()[0]
        )
        # SQLite's own limit on the file's size: the same SQLITE_FULL as ENOSPC.
        await _in_db_thread(
            storage._db, lambda c: c.execute(f"PRAGMA max_page_count={pages + 2}").fetchone()
        )
        with pytest.raises(DiskFull) as full:
            await storage.save(HardState(1, 1, last), None, [entry])
        assert str(tmp_path) in full.value.detail
        assert full.value.extra["data_dir"] == str(tmp_path)
        assert storage.last_index() == last  # nothing of it reached the mirror
        await _in_db_thread(
            storage._db, lambda c: c.execute("PRAGMA max_page_count=1000000000").fetchone()
        )
        await storage.save(HardState(1, 1, last), None, [entry])
    finally:
        await storage.close()
    reopened = await SqliteStorage.open(tmp_path, 1, "c", [1])
    try:
        assert reopened.last_index() == last + 1
        assert reopened.entries(last + 1, last + 2, 1 << 30)[0].data == entry.data
    finally:
        await reopened.close()
