"""Scenarios found in a line-by-line review of the consensus core against the
thesis: each pins one rule that the random simulation reaches rarely or not
at all."""

from __future__ import annotations

import random

from httpcoord.cluster.raft.core import Config, Raft, Role
from httpcoord.cluster.raft.messages import (
    ConfState,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from httpcoord.cluster.raft.storage import MemoryStorage
from tests.sim.harness import Cluster


def _run(
    nodes: dict[int, Raft], stores: dict[int, MemoryStorage], msgs: list[Message]
) -> list[Message]:
    """Deliver msgs, then one save/send/advance turn per node."""
    for m in msgs:
        if m.dst in nodes:
            nodes[m.dst].step(m)
    out: list[Message] = []
    for i, r in nodes.items():
        if r.has_ready():
            rd = r.ready()
            stores[i].save(rd.hard_state, rd.snapshot, rd.entries)
            out.extend(rd.messages)
            r.advance(rd)
    return out


def test_a_node_does_not_campaign_while_its_snapshot_is_being_saved() -> None:
    # Node 2 lags behind the leader's compaction point and gets a snapshot.
    # While the Ready holding it is being written (a slow fsync of a large
    # snapshot), node 2's storage still has its old log and no snapshot. Had it
    # won an election then, it would have had no snapshot to send a follower
    # behind that point (the stored one is empty) and crashed on an assertion.
    conf = ConfState(frozenset({1, 2, 3}))
    stores = {i: MemoryStorage.bootstrapped([1, 2, 3]) for i in (2, 3)}
    r2 = Raft(Config(node_id=2), stores[2], random.Random(1))
    r3 = Raft(Config(node_id=3), stores[3], random.Random(3))
    snap = Snapshot(SnapshotMeta(10, 2, conf), b"state")
    r2.step(InstallSnapshot(1, 2, 2, snap))
    rd = r2.ready()  # taken; the driver is saving it
    assert rd.snapshot == snap
    r2.step(TimeoutNow(1, 2, 2))  # a transfer, or its own election timer
    for _ in range(40):
        r2.tick()
    assert r2.role is Role.FOLLOWER and r2.term == 2
    stores[2].save(rd.hard_state, rd.snapshot, rd.entries)
    sent = rd.messages
    r2.advance(rd)
    # Once the snapshot is durable it may campaign, and as leader it brings a
    # follower that is behind the snapshot up to date with it.
    nodes = {2: r2, 3: r3}
    msgs = [m for m in sent if m.dst in nodes]
    r2.step(TimeoutNow(1, 2, 2))
    for _ in range(10):
        msgs = _run(nodes, stores, msgs)
    assert r2.role is Role.LEADER
    assert stores[3].snapshot().meta.index == 10
    assert r3.committed == r2.committed > 10


def test_a_pending_read_is_released_when_the_leader_becomes_the_only_voter() -> None:
    c = Cluster([1, 2])
    lead = c.elect(1)
    c.stabilize()
    c.cut.add(2)
    lead.read_index(9)  # needs node 2's heartbeat answer under {1, 2}
    c.process(1)
    assert c.reads[1] == []
    lead.propose_conf_change("remove", 2)  # {1}: takes effect and commits at once
    c.tick([1], n=3)
    assert lead.role is Role.LEADER
    assert [rs.ctx for rs in c.reads[1]] == [9]
