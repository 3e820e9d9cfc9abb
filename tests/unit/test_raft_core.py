"""Focused, scripted scenarios for the consensus core (the simulator covers
the random interleavings; these pin the individual rules)."""

from __future__ import annotations

import random

import pytest

from httpcoord.cluster.raft.core import (
    ConfChangeError,
    Config,
    LogLost,
    NotLeader,
    ProposalDropped,
    Raft,
    Role,
)
from httpcoord.cluster.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from httpcoord.cluster.raft.storage import MemoryStorage
from tests.sim.harness import Cluster


def test_single_node_elects_itself_and_commits() -> None:
    c = Cluster([1])
    c.tick(n=25)
    r = c.nodes[1]
    assert r.role is Role.LEADER
    idx = r.propose(b"x")
    c.stabilize()
    assert [e.data for e in c.applied[1] if e.kind == EntryKind.NORMAL] == [b"x"]
    assert r.committed == idx


def test_three_nodes_elect_one_leader_by_timeout_and_replicate() -> None:
    c = Cluster()
    c.tick(n=30)
    leaders = [i for i, r in c.nodes.items() if r.role is Role.LEADER]
    assert len(leaders) == 1
    lead = c.nodes[leaders[0]]
    first = lead.propose(b"a")
    last = lead.propose_batch([b"b", b"c"])
    assert last == first + 2
    c.stabilize()
    c.tick(n=2)  # heartbeats carry the commit index to followers
    for i in c.ids:
        assert [e.data for e in c.applied[i] if e.kind == EntryKind.NORMAL] == [b"a", b"b", b"c"]


def test_new_leader_appends_a_noop_of_its_term() -> None:
    c = Cluster()
    r = c.elect(1)
    assert r.log.term(r.log.last_index()) == r.term
    assert (
        r.log.entries(r.log.last_index(), r.log.last_index() + 1, 1 << 20)[0].kind == EntryKind.NOOP
    )


def test_pre_vote_does_not_raise_the_term_of_a_partitioned_node() -> None:
    c = Cluster()
    c.elect(1)
    term = c.nodes[1].term
    c.cut.add(3)
    c.tick([3], n=100)
    assert c.nodes[3].term == term  # pre-votes failed, no term inflation
    c.cut.clear()
    c.tick(n=5)
    assert c.nodes[1].role is Role.LEADER and c.nodes[1].term == term


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    c = Cluster(election_timeout_ticks=10)
    c.elect(1)
    c.cut.add(1)
    c.tick([1], n=25)
    assert c.nodes[1].role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        c.nodes[1].propose(b"x")


def test_vote_is_in_the_ready_that_carries_the_grant() -> None:
    s = MemoryStorage.bootstrapped([1, 2, 3])
    r = Raft(Config(node_id=2), s, random.Random(1))
    r.step(VoteRequest(1, 2, 2, 1, 1))
    rd = r.ready()
    assert rd.hard_state == HardState(2, 1, 1)
    assert any(isinstance(m, VoteResponse) and m.granted for m in rd.messages)


def test_a_vote_is_never_granted_twice_in_a_term_even_after_restart() -> None:
    s = MemoryStorage.bootstrapped([1, 2, 3])
    r = Raft(Config(node_id=2), s, random.Random(1))
    r.step(VoteRequest(1, 2, 2, 1, 1))
    rd = r.ready()
    s.save(rd.hard_state, rd.snapshot, rd.entries)
    r.advance(rd)
    r2 = Raft(Config(node_id=2), s, random.Random(2))  # restart from storage
    r2.step(VoteRequest(3, 2, 2, 1, 1))
    rd = r2.ready()
    assert [m.granted for m in rd.messages if isinstance(m, VoteResponse)] == [False]


def test_a_follower_whose_log_lost_acknowledged_entries_stops() -> None:
    # Node 2 holds the bootstrap entry only; a leader's heartbeat counts it as
    # holding index 5 (its match): it acknowledged entries it no longer has.
    s = MemoryStorage.bootstrapped([1, 2, 3])
    r = Raft(Config(node_id=2), s, random.Random(1))
    last = r.log.last_index()
    r.step(Heartbeat(1, 2, 2, last, 0))  # up to what it holds: fine
    assert r.lead == 1 and r.committed == last
    with pytest.raises(LogLost, match=f"holding log index 5, but its log ends at {last}"):
        r.step(Heartbeat(1, 2, 2, 5, 0))


def test_vote_denied_to_a_candidate_with_an_older_log() -> None:
    s = MemoryStorage.bootstrapped([1, 2, 3])
    s.save(HardState(2, 0, 1), None, [Entry(2, 2, EntryKind.NORMAL, b"x")])
    r = Raft(Config(node_id=2), s, random.Random(1))
    r.step(VoteRequest(3, 2, 3, 1, 1))  # shorter log
    r.step(VoteRequest(1, 2, 3, 2, 1))  # longer log, but an older last term
    rd = r.ready()
    assert [m.granted for m in rd.messages if isinstance(m, VoteResponse)] == [False, False]
    r.advance(rd)
    r.step(VoteRequest(1, 2, 3, 2, 2))
    rd = r.ready()
    assert [m.granted for m in rd.messages if isinstance(m, VoteResponse)] == [True]


def test_old_term_entries_commit_only_with_a_current_term_entry() -> None:
    # Figure 8 shape: node 1 leads term 2 and writes an entry onto itself only.
    c = Cluster([1, 2, 3, 4, 5], max_entries_per_msg=1)
    c.elect(1)
    idx = c.nodes[1].propose(b"old")
    c.process(1)
    c.inbox.clear()
    c.crash(1)
    c.start(1)
    r = c.nodes[1]
    r._campaign(transfer=True)

    def old_entry_to_2_and_3_only(m: object) -> bool:
        # 2 and 3 may see the no-op only while they lack the old entry (and so reject it).
        if isinstance(m, AppendEntries):
            has_old = c.nodes[m.dst].log.term(idx) == 2
            return m.dst in (2, 3) and not (has_old and any(e.term == 3 for e in m.entries))
        return True

    for _ in range(8):
        c.process_all()
        c.deliver(old_entry_to_2_and_3_only)
    assert r.role is Role.LEADER and r.term == 3
    assert c.nodes[2].log.term(idx) == 2 and c.nodes[3].log.term(idx) == 2
    # Nodes 1, 2 and 3 hold the term-2 entry: a majority, yet counting
    # replicas must not commit an entry of an older term.
    assert r.prs[2].match == idx and r.prs[3].match == idx
    assert r.committed < idx
    c.tick(n=3)  # the no-op of term 3 replicates and commits both
    assert r.committed >= idx + 1


def test_fast_backtracking_skips_a_whole_conflicting_term() -> None:
    c = Cluster()
    lead = c.elect(1)
    term = lead.term
    c.stabilize()
    # Node 2 gets 50 entries of an uncommitted term that will lose.
    f = c.nodes[2]
    base = f.log.last_index()
    junk = tuple(Entry(base + 1 + k, term, EntryKind.NORMAL, b"j") for k in range(50))
    f.step(AppendEntries(1, 2, term, base, f.log.last_term(), junk, 0))
    c.process(2)
    c.inbox.clear()
    # A new leader with a different log has to find where node 2 diverges.
    c.crash(2)
    c.campaign(3)
    assert c.nodes[3].role is Role.LEADER
    c.start(2)
    c.nodes[3].propose(b"real")
    rejects = 0

    def count(m: object) -> bool:
        nonlocal rejects
        rejects += isinstance(m, AppendResponse) and m.reject
        return True

    for _ in range(5):
        c.tick([3])
        for _ in range(20):
            c.process_all()
            c.deliver(count)
    assert rejects <= 3  # one probe skips the whole losing term, not 50 probes
    assert c.nodes[2].log.last_index() == c.nodes[3].log.last_index()


def test_read_index_waits_for_a_heartbeat_quorum() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    lead.read_index(7)
    c.process(1)
    assert c.reads[1] == []
    c.deliver(lambda m: m.dst == 2)  # one follower answers: with the leader, a majority
    c.process_all()
    c.deliver()
    c.process(1)
    assert [(rs.ctx, rs.index) for rs in c.reads[1]] == [(7, lead.committed)]


def test_read_index_from_a_follower_goes_through_the_leader() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    c.nodes[3].read_index(42)
    c.stabilize()
    assert [(rs.ctx, rs.index) for rs in c.reads[3]] == [(42, lead.committed)]


def test_isolated_leader_never_answers_a_read() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    c.cut.add(1)
    lead.read_index(1)
    c.tick([1], n=30)
    assert c.reads[1] == []


def test_lagging_follower_gets_a_snapshot() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    c.crash(3)
    for k in range(20):
        lead.propose(b"%d" % k)
    c.stabilize()
    applied = lead.applied
    s = c.storage[1]
    s.create_snapshot(applied, lead.conf_at(applied), b"state")
    s.compact(applied)
    c.start(3)
    lead.propose(b"after")
    c.tick(n=3)
    assert c.storage[3].snapshot().meta.index == applied
    assert c.nodes[3].log.last_index() == lead.log.last_index()
    assert c.nodes[3].committed == lead.committed


def test_install_snapshot_message_is_answered_with_its_index() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    snap = c.storage[1].create_snapshot(lead.applied, lead.conf_at(lead.applied), b"s")
    fresh = Raft(Config(node_id=9), MemoryStorage(), random.Random(0))
    fresh.step(InstallSnapshot(1, 9, lead.term, snap))
    rd = fresh.ready()
    assert rd.snapshot == snap
    assert [m.index for m in rd.messages if isinstance(m, AppendResponse)] == [snap.meta.index]


def test_membership_change_adds_a_learner_then_promotes_it() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    lead.propose_conf_change("add_learner", 4)
    with pytest.raises(ProposalDropped):
        lead.propose_conf_change("add_voter", 4)  # the first is not committed yet
    c.start(4, MemoryStorage())
    c.stabilize()
    c.tick(n=3)
    assert c.nodes[4].conf.learners == {4}
    assert not c.nodes[4].promotable()
    lead.propose_conf_change("add_voter", 4)
    c.stabilize()
    c.tick(n=3)
    assert c.nodes[4].conf.voters == {1, 2, 3, 4}
    assert c.nodes[4].log.last_index() == lead.log.last_index()


def test_learner_serves_linearizable_reads_and_never_campaigns() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    lead.propose_conf_change("add_learner", 4)
    c.start(4, MemoryStorage())
    c.tick(n=3)
    c.nodes[4].read_index(5)
    c.stabilize()
    assert [rs.ctx for rs in c.reads[4]] == [5]
    c.cut.add(1)
    c.tick([2, 3, 4], n=60)
    assert c.nodes[4].role is Role.FOLLOWER


def test_membership_change_rules() -> None:
    c = Cluster()
    lead = c.nodes[1]
    lead._campaign(transfer=True)
    for _ in range(2):
        c.process_all()
        c.deliver()
    assert lead.role is Role.LEADER
    with pytest.raises(ProposalDropped):
        lead.propose_conf_change("add_learner", 4)  # the no-op is not committed yet
    c.stabilize()
    with pytest.raises(ConfChangeError):
        lead.propose_conf_change("add_voter", 2)
    with pytest.raises(ConfChangeError):
        lead.propose_conf_change("remove", 9)
    with pytest.raises(ConfChangeError):
        lead.propose_conf_change("rename", 2)


def test_removed_leader_steps_down_once_its_removal_commits() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    lead.propose_conf_change("remove", 1)
    c.stabilize()
    c.tick(n=2)
    assert lead.role is Role.FOLLOWER
    assert c.nodes[2].conf.voters == {2, 3}
    c.tick([2, 3], n=40)
    new = c.leader()
    assert new in (2, 3)


def test_leadership_transfer_hands_over_with_timeout_now() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    lead.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        lead.propose(b"x")
    sent = [m for m in c.inbox if isinstance(m, TimeoutNow)]
    c.stabilize()
    assert sent or c.nodes[3].role is Role.LEADER
    assert c.nodes[3].role is Role.LEADER
    assert lead.role is Role.FOLLOWER


def test_leader_steps_down_on_a_higher_term_answer() -> None:
    c = Cluster()
    lead = c.elect(1)
    lead.step(HeartbeatResponse(2, 1, lead.term + 5, 0))
    assert lead.role is Role.FOLLOWER and lead.term == lead.term


def test_determinism_same_inputs_same_outputs() -> None:
    def run() -> list[str]:
        c = Cluster(seed=5)
        c.tick(n=40)
        lead = c.nodes[c.leader() or 1]
        for k in range(10):
            lead.propose(b"%d" % k)
        c.tick(n=5)
        return [repr(e) for e in c.applied[2]]

    assert run() == run()


def test_uncommitted_entries_are_bounded() -> None:
    c = Cluster(max_uncommitted_entries=5)
    lead = c.elect(1)
    c.stabilize()
    c.cut.update({2, 3})
    for _ in range(5):
        lead.propose(b"x")
    with pytest.raises(ProposalDropped):
        lead.propose(b"x")


def test_ready_twice_without_advance_is_a_bug() -> None:
    c = Cluster()
    r = c.nodes[1]
    r._campaign(transfer=True)
    r.ready()
    with pytest.raises(AssertionError):
        r.ready()


def test_steps_between_ready_and_advance_go_into_the_next_ready() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    f = c.nodes[2]
    idx = lead.propose(b"a")
    c.process(1)
    c.deliver()  # node 2 gets the append
    rd = f.ready()  # being written
    assert [e.index for e in rd.entries] == [idx]
    assert any(isinstance(m, AppendResponse) for m in rd.messages)
    idx2 = lead.propose(b"b")
    c.process(1)
    c.deliver()  # arrives during the "fsync"
    c.storage[2].save(rd.hard_state, rd.snapshot, rd.entries)
    f.advance(rd)
    rd2 = f.ready()
    assert [e.index for e in rd2.entries] == [idx2]
    assert [m.index for m in rd2.messages if isinstance(m, AppendResponse)] == [idx2]
    f.advance(rd2)


def test_a_voter_joins_only_as_a_learner_that_has_caught_up() -> None:
    c = Cluster()
    lead = c.elect(1)
    c.stabilize()
    with pytest.raises(ConfChangeError, match="learner"):
        lead.propose_conf_change("add_voter", 4)  # a newcomer straight to voter
    lead.propose_conf_change("add_learner", 4)
    c.stabilize()
    # Node 4 never started: it holds nothing, so it cannot be promoted.
    with pytest.raises(ProposalDropped, match="caught up"):
        lead.propose_conf_change("add_voter", 4)
    assert lead.conf.voters == {1, 2, 3}
    c.start(4, MemoryStorage())
    c.stabilize()
    c.tick(n=3)
    lead.propose_conf_change("add_voter", 4)
    c.stabilize()
    assert c.nodes[4].conf.voters == {1, 2, 3, 4}
