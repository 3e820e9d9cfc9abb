"""Scenarios found in a line-by-line review of the consensus core against the
thesis: each pins one rule that the random simulation reaches rarely or not
at all."""

from __future__ import annotations

import random

import pytest

from httpcoord.cluster.raft.core import Config, Raft, Role
from httpcoord.cluster.raft.messages import (
    AppendEntries,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Message,
    ReadIndexResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from httpcoord.cluster.raft.storage import MemoryStorage
from tests.sim.bugs import (
    CommitNeedsEveryVoter,
    FollowerAcceptsUnknownRead,
    FollowerCommitsPastAppend,
    RemovedVoterNeverCampaigns,
)
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
    assert r2.status()["role"] == "leader"
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


def _forward_read(c: Cluster, follower: int, ctx: int) -> ReadIndexResponse:
    """Run a follower's read through the leader, but hold back the leader's
    answer and return it."""
    c.nodes[follower].read_index(ctx)
    held: list[ReadIndexResponse] = []

    def keep(m: Message) -> bool:
        if isinstance(m, ReadIndexResponse):
            held.append(m)
            return False
        return True

    for _ in range(10):
        c.process_all()
        c.deliver(keep)
    assert [m.ctx for m in held] == [ctx]
    return held[0]


@pytest.mark.parametrize("raft_cls", [Raft, FollowerAcceptsUnknownRead])
def test_a_follower_releases_an_answer_once_and_only_for_a_read_it_asked(
    raft_cls: type[Raft],
) -> None:
    c = Cluster(raft_cls=raft_cls)
    c.elect(1)
    c.stabilize()
    answer = _forward_read(c, 3, 42)
    for m in (answer, answer, ReadIndexResponse(1, 3, answer.term, 43, answer.index)):
        c.nodes[3].step(m)  # the answer, a duplicate, an answer to nobody
    c.process(3)
    released = [rs.ctx for rs in c.reads[3]]
    assert released == ([42] if raft_cls is Raft else [42, 42, 43])


@pytest.mark.parametrize("raft_cls", [Raft, FollowerAcceptsUnknownRead])
def test_an_answer_to_a_read_asked_before_a_restart_is_dropped(raft_cls: type[Raft]) -> None:
    c = Cluster(raft_cls=raft_cls)
    c.elect(1)
    c.stabilize()
    stale = _forward_read(c, 3, 42)
    c.crash(3)
    c.start(3)  # same term, same leader: only the ctx tells the answers apart
    c.nodes[3].step(stale)
    c.process(3)
    assert [rs.ctx for rs in c.reads[3]] == ([] if raft_cls is Raft else [42])


def test_forwarded_reads_are_forgotten_when_the_leader_is_lost() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    answer = _forward_read(c, 3, 42)
    r3 = c.nodes[3]
    for _ in range(40):  # no word from the leader: it campaigns (pre-vote)
        r3.tick()
    assert r3.role is Role.PRE_CANDIDATE and r3.term == lead.term
    r3.step(Heartbeat(1, 3, lead.term, lead.committed, 0))  # the leader again, same term
    assert r3.status()["role"] == "follower" and r3.lead == 1
    r3.step(answer)
    c.process(3)
    assert c.reads[3] == []


def test_forwarded_reads_are_bounded_and_the_oldest_goes_first() -> None:
    c = Cluster(max_pending_reads=2)
    c.elect(1)
    c.stabilize()
    answers = [_forward_read(c, 3, ctx) for ctx in (1, 2, 3)]
    for m in answers:
        c.nodes[3].step(m)
    c.process(3)
    assert [rs.ctx for rs in c.reads[3]] == [2, 3]


@pytest.mark.parametrize("raft_cls", [Raft, FollowerCommitsPastAppend])
def test_a_follower_commits_no_further_than_the_append_proves(raft_cls: type[Raft]) -> None:
    # Node 2 holds a deposed leader's entries 2-3 (term 2); the leader of term
    # 3 has committed other entries there. An append that matches at 1 and
    # carries nothing (a chunk of a split append, or a probe below the point
    # where the logs part) proves only index 1, whatever the leader's commit.
    st = MemoryStorage.bootstrapped([1, 2, 3])
    stale = [Entry(i, 2, EntryKind.NORMAL, b"stale") for i in (2, 3)]
    st.save(HardState(2, 0, 1), None, stale)
    r = raft_cls(Config(node_id=2), st, random.Random(0))
    r.step(AppendEntries(1, 2, 3, 1, 1, (), 3))
    assert r.committed == (1 if raft_cls is Raft else 3)


@pytest.mark.parametrize("raft_cls", [Raft, CommitNeedsEveryVoter])
def test_a_majority_commits_while_a_voter_is_down(raft_cls: type[Raft]) -> None:
    c = Cluster(raft_cls=raft_cls)
    lead = c.elect(1)
    c.stabilize()
    c.crash(3)
    index = lead.propose(b"x")
    c.tick([1, 2], n=3)
    assert (lead.committed >= index) is (raft_cls is Raft)


@pytest.mark.parametrize("raft_cls", [Raft, RemovedVoterNeverCampaigns])
def test_removing_one_of_two_voters_survives_losing_the_leader_midway(
    raft_cls: type[Raft],
) -> None:
    # Leader 1 of {1, 2} appends its own removal ({2}) and is deposed before
    # node 2 has it. Node 2 needs node 1's vote under {1, 2} and cannot get
    # it (its log is behind); node 1 must campaign under {2}, win node 2's
    # vote, commit the removal, and step down for node 2.
    c = Cluster([1, 2], raft_cls=raft_cls)
    lead = c.elect(1)
    c.stabilize()
    c.cut.add(2)
    lead.propose_conf_change("remove", 1)
    c.process(1)
    c.deliver()  # lost on the way to node 2
    c.cut.clear()
    c.campaign(2)  # a higher term deposes node 1, which refuses its vote
    assert lead.role is Role.FOLLOWER and c.nodes[2].role is Role.CANDIDATE
    c.tick(n=80)
    if raft_cls is Raft:
        assert c.leader() == 2 and c.nodes[2].conf.voters == {2}
        index = c.nodes[2].propose(b"after")
        c.stabilize()
        assert c.nodes[2].committed >= index
    else:
        assert c.leader() is None  # stuck for good
