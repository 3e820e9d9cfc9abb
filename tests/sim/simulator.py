"""Deterministic simulation of a cluster of consensus cores.

One ``Simulation(mix, seed)`` runs N cores (1, 2, 3 or 5, plus nodes added
by membership changes) over a simulated network and disk, all driven by one
seeded ``random.Random``: the same (mix, seed) replays the same run exactly.

Faults: message loss, duplication, delay and so reordering; stale copies of
messages sent up to ``REPLAY_HISTORY_MSGS_MAX`` sends ago (across terms,
crashes and restarts); short or overlapping copies of a leader's appends
(a prefix of its entries, from at or below the original's prev index);
InstallSnapshot delayed past the leader's retry; symmetric and asymmetric
partitions; crashes that lose everything a node has not saved (its core, its
unsaved Ready, its state machine), restarts from what it saved; a slow disk
(a node's Ready waits some steps) whose in-flight save, on a crash, is lost,
lands whole, or is torn (a prefix of its entries, no hard state); a minority
of voters down for good; uneven tick rates; pre-vote or check-quorum off.
Workload: proposals, ReadIndex reads at any node, membership changes
(learners added, promoted, voters and learners removed), snapshots with log
compaction (so lagging nodes need InstallSnapshot), leadership transfers.

After every step the ``Checker`` verifies: at most one leader per term; log
matching; leader completeness; no two nodes apply different entries (or
reach different states) at one index; a committed entry is never lost; a
ReadIndex read sees every write committed before it started, and a node
releases only reads it asked for (never an answer to an earlier incarnation's
read, never one twice). The driver asserts it never sends a Ready's messages
before its save returned. With a minority down for good, the rest (network
healed) must make progress while it stays down; then, with every fault
healed, a leader must be elected and a proposal must commit on every member
within a bounded number of ticks, and after that every proposal must be
applied everywhere and every read answered (at any member) within
``commit_bound_ticks`` (liveness).

Replay a seed: ``python -m tests.sim.replay --mix MIX --seed SEED [--bug BUG]``.
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

from httpcoord.cluster.raft.core import (
    ConfChangeError,
    Config,
    LogLost,
    NotLeader,
    ProposalDropped,
    Raft,
    Ready,
    Role,
)
from httpcoord.cluster.raft.messages import (
    AppendEntries,
    HardState,
    InstallSnapshot,
    Message,
    decode_message,
    encode_message,
)
from httpcoord.cluster.raft.storage import CompactedError, MemoryStorage


class Violation(AssertionError):
    """A safety or liveness property failed."""


@dataclass(frozen=True)
class FaultMix:
    name: str
    nodes: int = 3  # founding voters
    loss: float = 0.0  # per message
    dup: float = 0.0  # per message
    max_delay_ticks: int = 1  # delivery after 1..this ticks; > 1 reorders
    partition_rate: float = 0.0  # per step: a new partition (or a heal)
    asymmetric: bool = False  # partitions may cut one direction only
    isolate_leader_rate: float = 0.0  # per step: cut a leader off from everyone
    crash_rate: float = 0.0  # per step: crash one live node
    leader_crash_rate: float = 0.0  # per step: crash a leader
    reboot_rate: float = 0.0  # per step: crash one node and restart it at once
    crash_after_save_rate: float = 0.0  # per Ready: crash after saving, before sending
    restart_rate: float = 0.2  # per step: restart one crashed node
    uneven_ticks: bool = False  # nodes tick at different rates
    disk_rate: float = 1.0  # per step and node: chance its Ready is processed
    propose_rate: float = 0.4
    read_rate: float = 0.15
    membership_rate: float = 0.0
    snapshot_rate: float = 0.0
    transfer_rate: float = 0.0
    replay_rate: float = 0.0  # per step: re-deliver a message sent long ago (maybe terms ago)
    wire: bool = False  # every message goes through the JSON wire encoding
    pre_vote: bool = True
    check_quorum: bool = True
    # Voters crashed at a random step of the first half of the chaos and kept
    # down: the rest must make progress without them (checked before they
    # come back, if they come back at all).
    down_for_good: int = 0
    rejoin_after_down: bool = True  # False: down for the rest of the run
    # Per AppendEntries: the network also carries a short or overlapping copy
    # (a prefix of the leader's entries from at or below the original's prev
    # index), as a chunking transport or a stale resend would.
    short_append_rate: float = 0.0
    snapshot_delay_ticks_max: int = 0  # extra delay of an InstallSnapshot
    # On a crash with a save in flight (slow disk): the chance it reached the
    # disk anyway, and the chance such a save is torn (a prefix of its
    # entries, without the hard state, which is written last).
    inflight_save_lands: float = 0.0
    torn_save_rate: float = 0.0
    # Membership workload bounds.
    voters_min: int = 3  # no voter is removed at or below this
    voters_max: int = 5  # no learner is promoted at or above this
    members_max: int = 7
    new_voter_rate: float = 0.0  # per change: add a new node straight as a voter
    # Per accepted change: cut the leader off at once, so the change stays in
    # its log alone while the others elect a leader of the old membership.
    isolate_after_change_rate: float = 0.0
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 4
    election_timeout_ticks: int = 10
    chaos_steps: int = 220
    heal_steps_max: int = 400  # liveness bound after the faults heal
    steady_proposals: int = 10  # then proposed one per tick to the healed cluster ...
    commit_bound_ticks: int = 12  # ... each applied on every member within this


MIXES: dict[str, FaultMix] = {
    m.name: m
    for m in [
        FaultMix("lossy3", loss=0.2, dup=0.1, max_delay_ticks=4),
        FaultMix(
            "partition3",
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.04,
            uneven_ticks=True,
            isolate_leader_rate=0.01,
            read_rate=0.3,
            chaos_steps=300,
        ),
        FaultMix(
            "isolation3",
            partition_rate=0.015,
            isolate_leader_rate=0.03,
            read_rate=0.5,
            uneven_ticks=True,
            chaos_steps=300,
        ),
        FaultMix(
            "asym5",
            nodes=5,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.05,
            asymmetric=True,
            uneven_ticks=True,
            chaos_steps=160,
        ),
        FaultMix(
            "crash3",
            crash_rate=0.04,
            crash_after_save_rate=0.01,
            restart_rate=0.3,
            disk_rate=0.6,
            max_delay_ticks=3,
            dup=0.05,
            max_entries_per_msg=2,
            replay_rate=0.2,
        ),
        FaultMix(
            "crash5",
            nodes=5,
            crash_rate=0.05,
            restart_rate=0.3,
            disk_rate=0.6,
            loss=0.05,
            max_delay_ticks=3,
            max_entries_per_msg=1,
            chaos_steps=160,
        ),
        FaultMix(
            "leadercrash3",
            leader_crash_rate=0.05,
            reboot_rate=0.05,
            restart_rate=0.4,
            disk_rate=0.5,
            max_delay_ticks=3,
            loss=0.15,
            max_entries_per_msg=1,
            chaos_steps=400,
        ),
        FaultMix(
            "reboot5",
            nodes=5,
            reboot_rate=0.15,
            leader_crash_rate=0.02,
            restart_rate=0.5,
            max_delay_ticks=4,
            disk_rate=0.7,
            loss=0.05,
            max_entries_per_msg=1,
            chaos_steps=160,
            replay_rate=0.3,
        ),
        FaultMix(
            "figure8",
            leader_crash_rate=0.01,
            reboot_rate=0.05,
            restart_rate=0.4,
            partition_rate=0.03,
            disk_rate=0.5,
            max_delay_ticks=3,
            loss=0.1,
            crash_after_save_rate=0.05,
            max_entries_per_msg=1,
            max_inflight_msgs=1,
            chaos_steps=500,
        ),
        FaultMix(
            "membership",
            loss=0.05,
            max_delay_ticks=3,
            membership_rate=0.05,
            crash_rate=0.01,
            partition_rate=0.01,
            uneven_ticks=True,
            replay_rate=0.2,
        ),
        FaultMix(
            # Membership changes while the network splits (both ways) and
            # nodes crash mid-change, with stale messages from removed nodes.
            "membership5",
            nodes=5,
            loss=0.05,
            max_delay_ticks=3,
            membership_rate=0.1,
            partition_rate=0.05,
            asymmetric=True,
            isolate_leader_rate=0.01,
            crash_rate=0.02,
            disk_rate=0.7,
            transfer_rate=0.01,
            replay_rate=0.2,
            read_rate=0.3,
            chaos_steps=250,
        ),
        FaultMix(
            "snapshots",
            loss=0.1,  # an InstallSnapshot lost: a transfer cut off midway
            max_delay_ticks=3,
            snapshot_delay_ticks_max=40,  # past the leader's retry (two election timeouts)
            snapshot_rate=0.08,
            crash_rate=0.02,
            partition_rate=0.02,
            max_entries_per_msg=4,
            wire=True,
        ),
        FaultMix(
            "everything",
            nodes=5,
            loss=0.1,
            dup=0.05,
            max_delay_ticks=4,
            partition_rate=0.03,
            asymmetric=True,
            crash_rate=0.02,
            uneven_ticks=True,
            disk_rate=0.7,
            membership_rate=0.03,
            snapshot_rate=0.03,
            transfer_rate=0.01,
            replay_rate=0.1,
            max_entries_per_msg=3,
            chaos_steps=160,
            wire=True,
        ),
        FaultMix(
            # One voter down for good: the other two must keep committing;
            # it then rejoins behind the compacted log.
            "down3",
            down_for_good=1,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.02,
            crash_rate=0.02,
            restart_rate=0.3,
            disk_rate=0.8,
            snapshot_rate=0.05,
            read_rate=0.3,
        ),
        FaultMix(
            # Two of five down for the rest of the run, the other three under
            # one-way partitions, leader isolation and stale messages.
            "down5",
            nodes=5,
            down_for_good=2,
            rejoin_after_down=False,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.03,
            asymmetric=True,
            isolate_leader_rate=0.01,
            uneven_ticks=True,
            replay_rate=0.1,
            chaos_steps=160,
        ),
        FaultMix(
            # A cluster of one that grows to two and three voters and shrinks
            # back, on a disk whose in-flight save a crash loses, keeps or tears.
            "solo1",
            nodes=1,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.02,
            crash_rate=0.03,
            reboot_rate=0.08,
            restart_rate=0.4,
            disk_rate=0.6,
            crash_after_save_rate=0.02,
            inflight_save_lands=0.5,
            torn_save_rate=0.5,
            snapshot_rate=0.05,
            membership_rate=0.3,
            voters_min=1,
            voters_max=3,
            members_max=4,
            read_rate=0.3,
        ),
        FaultMix(
            # Two voters (both needed), pre-vote and check-quorum off (etcd's
            # defaults). No membership changes: without both, nothing stops a
            # removed server that missed its removal from deposing leaders.
            "pair2",
            nodes=2,
            pre_vote=False,
            check_quorum=False,
            loss=0.1,
            dup=0.05,
            max_delay_ticks=3,
            partition_rate=0.03,
            crash_rate=0.02,
            reboot_rate=0.03,
            restart_rate=0.3,
            disk_rate=0.7,
            read_rate=0.3,
        ),
        FaultMix(
            "noprevote3",
            pre_vote=False,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.04,
            isolate_leader_rate=0.02,
            crash_rate=0.02,
            uneven_ticks=True,
            read_rate=0.3,
            chaos_steps=250,
        ),
        FaultMix(
            # An isolated leader never steps down by itself, and no follower
            # ignores a vote request for being in a leader's lease.
            "nocheckquorum3",
            check_quorum=False,
            loss=0.05,
            max_delay_ticks=3,
            partition_rate=0.03,
            isolate_leader_rate=0.03,
            uneven_ticks=True,
            read_rate=0.4,
            chaos_steps=250,
        ),
        FaultMix(
            # A slow disk and crashes that keep, lose or tear the save in flight.
            "disk3",
            crash_rate=0.04,
            leader_crash_rate=0.02,
            reboot_rate=0.05,
            restart_rate=0.3,
            disk_rate=0.4,
            inflight_save_lands=0.5,
            torn_save_rate=0.5,
            crash_after_save_rate=0.02,
            dup=0.05,
            max_delay_ticks=3,
            max_entries_per_msg=2,
        ),
        FaultMix(
            # Deposed leaders leave stale suffixes; short, split and
            # overlapping appends reach followers before those are overwritten.
            "shortappends3",
            loss=0.05,
            max_delay_ticks=3,
            isolate_leader_rate=0.06,
            partition_rate=0.02,
            propose_rate=0.8,
            short_append_rate=0.6,
            max_entries_per_msg=4,
            chaos_steps=250,
        ),
        FaultMix(
            # The single-server change race: four voters (an even count, so a
            # quorum with one more and one with one fewer can miss each
            # other), a leader cut off right after proposing a change, fresh
            # voters, short election timeouts, and no message loss (which
            # would mostly stall the race before it shows).
            "confrace4",
            nodes=4,
            max_delay_ticks=2,
            membership_rate=0.5,
            new_voter_rate=1.0,
            isolate_after_change_rate=0.5,
            partition_rate=0.1,
            leader_crash_rate=0.05,
            restart_rate=0.3,
            election_timeout_ticks=6,
            chaos_steps=250,
        ),
    ]
}


REPLAY_HISTORY_MSGS_MAX = 512  # sent messages kept for stale re-delivery


class SimNode:
    """One server: its durable storage survives crashes; everything else not."""

    def __init__(self, node_id: int, storage: MemoryStorage) -> None:
        self.id = node_id
        self.storage = storage
        self.raft: Raft | None = None
        self.tick_rate = 1.0
        self.state_hash = 0  # the "state machine": a hash chain of applied entries
        self.applied = 0
        self.checked_commit = 0  # committed entries up to here are checked
        self.reads: dict[int, int] = {}  # ctx -> commit index when the read started
        self.pending: Ready | None = None  # taken from the core, its save not returned
        # As the real driver: the hard state last saved, and one whose only
        # change (the commit index) was not saved on its own.
        self.saved_hs: HardState | None = None
        self.unsaved_hs: HardState | None = None
        self.held_down = False  # down for good: no restart until the final heal
        # Read contexts are (boot prefix << 32 | sequence): the prefix is drawn
        # at every start, as the real node draws a random one, so a ctx never
        # repeats across this node's restarts.
        self.ctx_prefix = 0
        self.ctx_seq = 0
        self.ctx_prefixes: set[int] = set()


def _snapshot_data(index: int, state_hash: int) -> bytes:
    return struct.pack(">QI", index, state_hash)


class Checker:
    """The global oracle: what was stored, committed, applied, read."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.entry_ids: dict[
            tuple[int, int], tuple[int, int, bytes]
        ] = {}  # (i,t) -> prev term, kind, data
        self.committed: dict[int, int] = {}  # index -> term
        self.max_commit = 0
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.state_at: dict[int, int] = {}  # index -> state hash after applying it
        self.reads_checked = 0
        self.commit_points: list[tuple[int, int]] = []  # (max commit index, term it was saved in)
        self.leaders_checked: set[tuple[int, int]] = set()

    def fail(self, what: str) -> NoReturn:
        raise Violation(what)

    def on_leader(self, node: SimNode, raft: Raft) -> None:
        if (node.id, raft.term) in self.leaders_checked:
            return
        if node.storage.initial_state()[0].term != raft.term:
            # Counted once its term is saved. Only a single voter leads before
            # that (it elects itself without a message; any other leader had
            # to save its candidacy before asking for votes), and until then it
            # has sent nothing: a crash erases its leadership without a trace,
            # and the term is free for a leader elected by its saved vote.
            return
        prev = self.leader_of_term.setdefault(raft.term, node.id)
        if prev != node.id:
            self.fail(f"two leaders in term {raft.term}: {prev} and {node.id}")
        self.leaders_checked.add((node.id, raft.term))
        # Leader completeness: an entry committed in a term before ours is in
        # our log (log matching then gives every earlier one) or behind our
        # snapshot. Commit points record the term in which a node first saved
        # the commit, which is >= the term it was committed in.
        for index, seen_term in reversed(self.commit_points):
            if seen_term >= raft.term:
                continue
            try:
                t = raft.log.term(index)
            except CompactedError:
                return
            if t != self.committed[index]:
                self.fail(
                    f"leader {node.id} of term {raft.term} lacks entry {index} committed "
                    f"in term <= {seen_term} (it has term {t}, not {self.committed[index]})"
                )
            return

    def on_save(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        for e in rd.entries:
            key = (e.index, e.term)
            prev_term = st.term(e.index - 1)
            seen = self.entry_ids.get(key)
            if seen is None:
                self.entry_ids[key] = (prev_term, e.kind, e.data)
            elif seen != (prev_term, e.kind, e.data):
                self.fail(f"log matching: node {node.id} holds a different entry {key}")
        hs = rd.hard_state
        if hs is not None and hs.commit > node.checked_commit:
            # From the snapshot's index on (its term is known): a node that just
            # installed a snapshot has only that index at or below its commit.
            lo = max(node.checked_commit + 1, st.first_index() - 1)
            for i in range(lo, hs.commit + 1):
                t = st.term(i)
                known = self.committed.setdefault(i, t)
                if known != t:
                    self.fail(f"committed entry {i} lost: node {node.id} has term {t}, not {known}")
            node.checked_commit = hs.commit
            if hs.commit > self.max_commit:
                self.max_commit = hs.commit
                if hs.commit in self.committed:
                    self.commit_points.append((hs.commit, hs.term))

    def on_apply(self, node: SimNode, index: int, term: int, data: bytes) -> None:
        if index != node.applied + 1:
            self.fail(f"node {node.id} applied {index} after {node.applied}")
        seen = self.applied.setdefault(index, (term, data))
        if seen != (term, data):
            self.fail(f"node {node.id} applied a different entry at {index}")
        node.state_hash = zlib.crc32(struct.pack(">QQ", index, term) + data, node.state_hash)
        node.applied = index
        known = self.state_at.setdefault(index, node.state_hash)
        if known != node.state_hash:
            self.fail(f"node {node.id} reached a different state at {index}")

    def on_restore(self, node: SimNode, data: bytes) -> None:
        index, h = struct.unpack(">QI", data)
        known = self.state_at.get(index)
        if known is not None and known != h:
            self.fail(f"node {node.id} restored a snapshot at {index} with a different state")
        node.applied, node.state_hash = index, h

    def on_read(self, node: SimNode, ctx: int, index: int) -> None:
        started = node.reads.pop(ctx, None)
        if started is None:
            # An answer to a read this incarnation is not waiting for: a stale
            # answer to an earlier incarnation's read, or a second answer.
            if ctx >> 32 != node.ctx_prefix:
                self.fail(f"node {node.id} released read {ctx:#x} of an earlier incarnation")
            self.fail(f"node {node.id} released read {ctx:#x} twice")
        if index < started:
            self.fail(
                f"stale read at node {node.id}: read index {index}, but {started} was "
                "committed before the read started"
            )
        self.reads_checked += 1


@dataclass
class SimResult:
    seed: int
    mix: str
    steps: int
    max_commit: int
    leaders: int
    reads_checked: int
    heal_steps: int


class Simulation:
    def __init__(self, mix: FaultMix, seed: int, raft_cls: Callable[..., Raft] = Raft) -> None:
        self.mix = mix
        self.seed = seed
        self.raft_cls = raft_cls
        self.rng = random.Random(seed)
        self.now = 0
        self.net: list[tuple[int, int, Message]] = []
        self.sent: deque[Message] = deque(maxlen=REPLAY_HISTORY_MSGS_MAX)
        self.net_seq = 0
        self.cut: set[tuple[int, int]] = set()  # (src, dst) links that drop messages
        self.checker = Checker()
        self.nodes: dict[int, SimNode] = {}
        self.next_id = mix.nodes + 1
        # Boot prefixes come from their own stream: drawing them does not
        # shift the fault schedule of any mix.
        self.boot_rng = random.Random(f"boot-{seed}")
        self.proposals = 0
        self.crash_after_save = mix.crash_after_save_rate
        self.sends_before_save = bool(getattr(raft_cls, "driver_sends_before_save", False))
        self.leader_sends_unsaved_commit = bool(
            getattr(raft_cls, "driver_leader_sends_unsaved_commit", False)
        )
        founders = list(range(1, mix.nodes + 1))
        for nid in founders:
            node = SimNode(nid, MemoryStorage.bootstrapped(founders))
            self.nodes[nid] = node
            self._start(node)
        self.down_at: dict[int, list[int]] = {}  # chaos step -> voters to take down for good
        if mix.down_for_good:
            assert 2 * mix.down_for_good < mix.nodes, "down for good must stay a minority"
            for nid in self.rng.sample(founders, mix.down_for_good):
                at = self.rng.randrange(1, mix.chaos_steps // 2)
                self.down_at.setdefault(at, []).append(nid)

    # ---- node lifecycle --------------------------------------------------------------

    def _config(self, nid: int) -> Config:
        m = self.mix
        return Config(
            node_id=nid,
            election_timeout_ticks=m.election_timeout_ticks,
            heartbeat_ticks=2,
            max_entries_per_msg=m.max_entries_per_msg,
            max_inflight_msgs=m.max_inflight_msgs,
            max_uncommitted_entries=1000,
            pre_vote=m.pre_vote,
            check_quorum=m.check_quorum,
        )

    def _start(self, node: SimNode) -> None:
        node.saved_hs = node.unsaved_hs = None
        node.raft = self.raft_cls(
            self._config(node.id), node.storage, random.Random(self.rng.getrandbits(64))
        )
        snap = node.storage.snapshot()
        if snap.meta.index:
            self.checker.on_restore(node, snap.data)
        else:
            node.applied, node.state_hash = 0, 0
        node.tick_rate = self.rng.uniform(0.25, 1.0) if self.mix.uneven_ticks else 1.0
        node.reads.clear()
        prefix = self.boot_rng.getrandbits(31)
        while prefix in node.ctx_prefixes:
            prefix = self.boot_rng.getrandbits(31)
        node.ctx_prefixes.add(prefix)
        node.ctx_prefix, node.ctx_seq = prefix, 0

    def _crash(self, node: SimNode) -> None:
        rd = node.pending
        mix = self.mix
        if (
            rd is not None
            and mix.inflight_save_lands
            and self.rng.random() < mix.inflight_save_lands
        ):
            # The save was under way: it reached the disk though it never
            # returned (so nothing it promises was sent), whole or torn.
            if mix.torn_save_rate and self.rng.random() < mix.torn_save_rate and rd.entries:
                kept = self.rng.randrange(len(rd.entries))
                rd = replace(rd, hard_state=None, entries=rd.entries[:kept])
            self._save(node, rd)
        node.raft = None  # its unsaved entries, hard state and Ready are gone
        node.pending = None
        node.reads.clear()

    # ---- the network -------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        mix = self.mix
        if mix.replay_rate:
            self.sent.append(m)
        if (
            mix.short_append_rate
            and isinstance(m, AppendEntries)
            and self.rng.random() < mix.short_append_rate
        ):
            short = self._short_append(m)
            if short is not None:
                self._transmit(short)
        self._transmit(m)

    def _transmit(self, m: Message) -> None:
        mix = self.mix
        copies = 1
        if mix.loss and self.rng.random() < mix.loss:
            copies = 0
        elif mix.dup and self.rng.random() < mix.dup:
            copies = 2
        for _ in range(copies):
            self.net_seq += 1
            delay = self.rng.randint(1, mix.max_delay_ticks) if mix.max_delay_ticks > 1 else 1
            if mix.snapshot_delay_ticks_max and isinstance(m, InstallSnapshot):
                # A slow chunked transfer: it may land after the leader gave up
                # on it and retried, or after the follower caught up otherwise.
                delay += self.rng.randint(0, mix.snapshot_delay_ticks_max)
            heapq.heappush(self.net, (self.now + delay, self.net_seq, m))

    def _short_append(self, m: AppendEntries) -> AppendEntries | None:
        """A copy of m that starts at or a little below m's prev index and
        carries a prefix (maybe none) of the entries up to m's last: what the
        same leader could legally send (a smaller batch, a chunk of a split
        append, a resend from an older probe point), with m's commit. A
        follower must commit no further than what such an append proved."""
        raft = self.nodes[m.src].raft
        # Only while m's sender still leads m's term: then its log is the
        # leader's log of that term (append-only), and m's entries are saved.
        if raft is None or raft.role is not Role.LEADER or raft.term != m.term:
            return None
        log = raft.log
        lo = max(log.first_index() - 1, m.prev_index - 3)
        if lo > m.prev_index:
            return None
        prev = self.rng.randint(lo, m.prev_index)
        last = m.prev_index + len(m.entries)
        take = self.rng.randint(0, last - prev)
        try:
            entries = log.entries(prev + 1, prev + 1 + take, 1 << 30) if take else []
            prev_term = log.term(prev)
        except CompactedError:
            return None
        return replace(m, prev_index=prev, prev_term=prev_term, entries=tuple(entries))

    def _deliver_due(self) -> None:
        net = self.net
        while net and net[0][0] <= self.now:
            _, _, m = heapq.heappop(net)
            if (m.src, m.dst) in self.cut:
                continue
            node = self.nodes.get(m.dst)
            if node is None or node.raft is None:
                continue
            if self.mix.wire:
                m = decode_message(encode_message(m))
            raft = node.raft
            try:
                raft.step(m)
            except LogLost as exc:
                # A node that kept every promise never finds its acknowledged
                # entries gone: its persistence contract was broken.
                raise Violation(f"node {node.id}: {exc}") from None
            if raft.role is Role.LEADER:
                # Here, not only at the end of the step: a leader elected by
                # this message may be deposed or crash before the step ends.
                self.checker.on_leader(node, raft)

    # ---- the driver loop: save, send, apply, advance ------------------------------------

    def _save(self, node: SimNode, rd: Ready) -> None:
        # The real driver (httpcoord/cluster/driver.py) does not fsync a hard
        # state whose only change is the commit index: Raft needs the commit
        # index nowhere durable. It goes out with the next save.
        hs, saved = rd.hard_state, node.saved_hs
        if (
            rd.snapshot is None
            and not rd.entries
            and hs is not None
            and saved is not None
            and (hs.term, hs.vote) == (saved.term, saved.vote)
        ):
            node.unsaved_hs = hs
        elif hs is not None or rd.snapshot is not None or rd.entries:
            node.storage.save(hs or node.unsaved_hs, rd.snapshot, rd.entries)
            node.unsaved_hs = None
            if hs is not None:
                node.saved_hs = hs
        self.checker.on_save(node, rd)

    def _take_ready(self, node: SimNode, raft: Raft) -> Ready:
        """As the real driver: a leader's Ready that changes no term or vote
        and commits none of its own unsaved entries sends its messages at
        once, before its save (which may be slow, or lost in a crash);
        everything else sends only after its save."""
        rd = raft.ready()
        hs, saved = rd.hard_state, node.saved_hs
        if (
            rd.soft_state.role is Role.LEADER
            and rd.snapshot is None
            and (
                hs is None
                or (
                    saved is not None
                    and (hs.term, hs.vote) == (saved.term, saved.vote)
                    and (
                        not rd.entries
                        or hs.commit < rd.entries[0].index
                        or self.leader_sends_unsaved_commit
                    )
                )
            )
        ):
            for m in rd.messages:
                self._send(m)
            rd.messages = []
        return rd

    def _process_ready(self, node: SimNode, rd: Ready) -> None:
        raft = node.raft
        assert raft is not None
        node.pending = rd
        if self.sends_before_save:
            # A broken driver (bug injection): the promises leave before the disk has them.
            for m in rd.messages:
                self._send(m)
            if self.rng.random() < self.crash_after_save:
                node.pending = None  # this driver's save never started
                self._crash(node)
                return
            rd.messages = []
        self._save(node, rd)
        node.pending = None  # the save returned: now, and only now, send
        if raft.role is Role.LEADER:
            self.checker.on_leader(node, raft)  # a single voter's term is saved now
        if self.crash_after_save and self.rng.random() < self.crash_after_save:
            self._crash(node)  # durable, but nobody heard of it
            return
        for m in rd.messages:
            assert node.pending is None, "driver sends before its save returned"
            self._send(m)
        if rd.snapshot is not None:
            self.checker.on_restore(node, rd.snapshot.data)
        for e in rd.committed_entries:
            self.checker.on_apply(node, e.index, e.term, e.data)
        for rs in rd.read_states:
            self.checker.on_read(node, rs.ctx, rs.index)
        raft.advance(rd)

    # ---- workload and faults --------------------------------------------------------------

    def _live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def _leaders(self) -> list[SimNode]:
        return [n for n in self._live() if n.raft is not None and n.raft.role is Role.LEADER]

    def _propose(self, node: SimNode) -> None:
        assert node.raft is not None
        self.proposals += 1
        try:
            node.raft.propose(b"p%d" % self.proposals)
        except (NotLeader, ProposalDropped):
            pass

    def _read(self, node: SimNode) -> int | None:
        """Ask node for a ReadIndex read; its ctx if the core took it."""
        assert node.raft is not None
        node.ctx_seq += 1
        ctx = node.ctx_prefix << 32 | node.ctx_seq
        assert ctx not in node.reads, "a read ctx repeated"
        try:
            node.raft.read_index(ctx)
        except (NotLeader, ProposalDropped):
            return None
        node.reads[ctx] = self.checker.max_commit
        return ctx

    def _change_membership(self, leader: SimNode) -> None:
        raft = leader.raft
        assert raft is not None
        conf = raft.conf
        choice = self.rng.random()
        mix = self.mix
        try:
            if choice < 0.35 and len(conf.members) < mix.members_max:
                nid = self.next_id
                op = "add_learner"
                if (
                    mix.new_voter_rate
                    and len(conf.voters) < mix.voters_max
                    and self.rng.random() < mix.new_voter_rate
                ):
                    op = "add_voter"
                raft.propose_conf_change(op, nid)
                self.next_id += 1
                node = SimNode(nid, MemoryStorage())
                self.nodes[nid] = node
                self._start(node)
            elif choice < 0.7 and conf.learners and len(conf.voters) < mix.voters_max:
                raft.propose_conf_change("add_voter", self.rng.choice(sorted(conf.learners)))
            elif len(conf.voters) > mix.voters_min or conf.learners:
                few = len(conf.voters) <= mix.voters_min
                pool = sorted(conf.learners) if few else sorted(conf.members)
                victim = self.rng.choice(pool)
                raft.propose_conf_change("remove", victim)
            else:
                return
        except (NotLeader, ProposalDropped, ConfChangeError):
            return
        if mix.isolate_after_change_rate and self.rng.random() < mix.isolate_after_change_rate:
            self._isolate(leader.id)

    def _isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.update({(nid, other), (other, nid)})

    def _snapshot(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        snap_index = node.storage.snapshot().meta.index
        if node.applied <= snap_index:
            return
        try:
            conf = raft.conf_at(node.applied)
        except CompactedError:
            return  # a newer snapshot from the leader is being installed
        if node.unsaved_hs is not None:
            # As the real node: the commit index the snapshot relies on is
            # saved first (the storage snapshots committed indexes only).
            node.storage.save(node.unsaved_hs, None, [])
            node.unsaved_hs = None
        node.storage.create_snapshot(
            node.applied, conf, _snapshot_data(node.applied, node.state_hash)
        )
        keep = self.rng.randint(0, 3)
        node.storage.compact(max(node.storage.first_index() - 1, node.applied - keep))

    def _partition(self) -> None:
        ids = sorted(self.nodes)
        self.cut.clear()
        if self.rng.random() < 0.3 or len(ids) < 2:
            return  # heal (or one server: nothing to split)
        if self.mix.asymmetric and self.rng.random() < 0.5:
            x = self.rng.choice(ids)
            outgoing = self.rng.random() < 0.5
            for y in ids:
                if y != x:
                    self.cut.add((x, y) if outgoing else (y, x))
            return
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) // 2)
        side = set(ids[:k])
        for a in ids:
            for b in ids:
                if (a in side) != (b in side):
                    self.cut.add((a, b))

    def _faults_and_workload(self) -> None:
        mix, rng = self.mix, self.rng
        live = self._live()
        if live and rng.random() < mix.propose_rate:
            # Mostly at the leader, sometimes at a node that is not.
            leaders = self._leaders()
            self._propose(
                rng.choice(leaders) if leaders and rng.random() < 0.8 else rng.choice(live)
            )
        if live and rng.random() < mix.read_rate:
            # Half the reads go to a node that believes it leads (perhaps a
            # deposed one, which must not answer from its stale commit index).
            leaders = self._leaders()
            self._read(rng.choice(leaders) if leaders and rng.random() < 0.5 else rng.choice(live))
        if mix.isolate_leader_rate and rng.random() < mix.isolate_leader_rate:
            for leader in self._leaders():
                self._isolate(leader.id)
        if mix.partition_rate and rng.random() < mix.partition_rate:
            self._partition()
        if mix.replay_rate and self.sent and rng.random() < mix.replay_rate:
            # A message from long ago (a slow link, a retransmitting proxy): it
            # may come from a term, a leader or a process incarnation long gone.
            old = self.sent[rng.randrange(len(self.sent))]
            self.net_seq += 1
            heapq.heappush(self.net, (self.now + 1, self.net_seq, old))
        if mix.crash_rate and live and rng.random() < mix.crash_rate:
            self._crash(rng.choice(live))
        if mix.leader_crash_rate and rng.random() < mix.leader_crash_rate:
            for leader in self._leaders():
                self._crash(leader)
        if mix.reboot_rate and rng.random() < mix.reboot_rate:
            live = self._live()
            if live:
                node = rng.choice(live)
                self._crash(node)
                self._start(node)
        down = [n for n in self.nodes.values() if n.raft is None and not n.held_down]
        if down and rng.random() < mix.restart_rate:
            self._start(rng.choice(down))
        if mix.membership_rate and rng.random() < mix.membership_rate:
            leaders = self._leaders()
            if leaders:
                self._change_membership(leaders[0])
        live = self._live()
        if mix.snapshot_rate and live and rng.random() < mix.snapshot_rate:
            self._snapshot(rng.choice(live))
        if mix.transfer_rate and rng.random() < mix.transfer_rate:
            for leader in self._leaders():
                assert leader.raft is not None
                others = sorted(v for v in leader.raft.conf.voters if v != leader.id)
                if others:
                    try:
                        leader.raft.transfer_leadership(rng.choice(others))
                    except (NotLeader, ConfChangeError):
                        pass

    # ---- one step -----------------------------------------------------------------------

    def step(self, chaos: bool) -> None:
        self.now += 1
        rng = self.rng
        for nid in self.down_at.pop(self.now, ()):
            node = self.nodes[nid]
            node.held_down = True
            if node.raft is not None:
                self._crash(node)
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and (node.tick_rate >= 1.0 or rng.random() < node.tick_rate):
                raft.tick()
                if raft.role is Role.LEADER:
                    self.checker.on_leader(node, raft)
        self._deliver_due()
        if chaos:
            self._faults_and_workload()
        disk = self.mix.disk_rate if chaos else 1.0
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                continue
            if disk >= 1.0:
                if node.pending is not None:
                    self._process_ready(node, node.pending)
                if node.raft is not None and raft.has_ready():
                    self._process_ready(node, self._take_ready(node, raft))
            elif node.pending is not None:
                # A slow disk: the Ready taken earlier is saved now; messages
                # were stepped and ticks counted while it was being written.
                if rng.random() < disk:
                    self._process_ready(node, node.pending)
            elif raft.has_ready():
                node.pending = self._take_ready(node, raft)
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and raft.role is Role.LEADER:
                self.checker.on_leader(node, raft)

    def heal(self, keep_down: bool = False) -> None:
        """End the faults. keep_down: the nodes down for good stay down."""
        self.cut.clear()
        self.crash_after_save = 0.0
        self.mix = replace(
            self.mix, loss=0.0, dup=0.0, max_delay_ticks=1, snapshot_delay_ticks_max=0
        )
        # Every server comes back, including removed ones: a removal proposed
        # but lost with its leader leaves the server a member, and a removed
        # server that never learned of its removal must not disrupt the rest.
        for node in self.nodes.values():
            if keep_down and node.held_down:
                continue
            node.held_down = False
            if node.raft is None:
                self._start(node)
            node.tick_rate = 1.0

    def run(self) -> SimResult:
        try:
            for _ in range(self.mix.chaos_steps):
                self.step(chaos=True)
            held = any(n.held_down for n in self.nodes.values())
            if held:
                # Progress while a minority is still down: a rule that needs
                # every voter (or a leader that waits for the dead) shows here.
                self.heal(keep_down=True)
                heal_steps = self._check_liveness("with a minority down for good")
            if not held or self.mix.rejoin_after_down:
                self.heal()
                heal_steps = self._check_liveness("after healing")
        except AssertionError as v:
            # The checker's violations and the core's own invariant assertions alike.
            kind = "" if isinstance(v, Violation) else "core assertion failed: "
            raise Violation(f"{kind}{v} (step {self.now}; replay: {replay_command(self)})") from v
        return SimResult(
            self.seed,
            self.mix.name,
            self.now,
            self.checker.max_commit,
            len(self.checker.leader_of_term),
            self.checker.reads_checked,
            heal_steps,
        )

    def _up_members(self, raft: Raft) -> list[SimNode]:
        """The leader's members, but for those down for good."""
        return [self.nodes[i] for i in sorted(raft.conf.members) if not self.nodes[i].held_down]

    def _check_liveness(self, phase: str) -> int:
        """After healing: a leader, and a proposal applied by every member that
        is up."""
        start = self.now
        probe: tuple[int, int] | None = None  # (leader term, index)
        while self.now - start < self.mix.heal_steps_max:
            self.step(chaos=False)
            leaders = self._leaders()
            if not leaders:
                continue
            leader = leaders[-1]
            raft = leader.raft
            assert raft is not None
            if probe is None or probe[0] != raft.term:
                try:
                    probe = (raft.term, raft.propose(b"probe"))
                except (NotLeader, ProposalDropped):
                    continue
            members = self._up_members(raft)
            if all(n.raft is not None and n.applied >= probe[1] for n in members) and (
                self.checker.applied[probe[1]] == (probe[0], b"probe")
            ):
                healed_in = self.now - start
                self._check_steady_commits(leader)
                return healed_in
        raise Violation(
            f"liveness: no leader committed a proposal on all members up within "
            f"{self.mix.heal_steps_max} ticks {phase}"
        )

    def _check_steady_commits(self, leader: SimNode) -> None:
        """Once healed, every proposal is applied by every member, and every
        ReadIndex read (at each member in turn) is answered, within
        commit_bound_ticks; and leadership stays put."""
        raft = leader.raft
        assert raft is not None
        term = raft.term
        pending: dict[int, int] = {}  # index -> tick proposed
        reads: list[tuple[SimNode, int, int]] = []  # (node, ctx, tick asked)
        members = self._up_members(raft)
        for k in range(self.mix.steady_proposals):
            pending[raft.propose(b"steady%d" % k)] = self.now
            reader = members[k % len(members)]
            ctx = self._read(reader)
            if ctx is not None:
                reads.append((reader, ctx, self.now))
            self.step(chaos=False)
            self._steady_progress(leader, term, pending)
            reads = self._steady_reads(reads)
        for _ in range(self.mix.commit_bound_ticks):
            if not pending and not reads:
                return
            self.step(chaos=False)
            self._steady_progress(leader, term, pending)
            reads = self._steady_reads(reads)
        if pending:
            raise Violation(f"liveness: proposals {sorted(pending)} not applied everywhere in time")
        if reads:
            asked = ", ".join(f"{c:#x} at node {n.id}" for n, c, _ in reads)
            raise Violation(f"liveness: reads {asked} not answered")

    def _steady_reads(
        self, reads: list[tuple[SimNode, int, int]]
    ) -> list[tuple[SimNode, int, int]]:
        left = [(n, ctx, at) for n, ctx, at in reads if ctx in n.reads]
        for n, ctx, at in left:
            if self.now - at > self.mix.commit_bound_ticks:
                raise Violation(
                    f"liveness: read {ctx:#x} at node {n.id} not answered "
                    f"{self.mix.commit_bound_ticks} ticks after it was asked"
                )
        return left

    def _steady_progress(self, leader: SimNode, term: int, pending: dict[int, int]) -> None:
        raft = leader.raft
        if raft is None or raft.role is not Role.LEADER or raft.term != term:
            raise Violation("liveness: leadership changed in a healthy cluster")
        low = min(n.applied for n in self._up_members(raft))
        for index in [i for i in pending if i <= low]:
            del pending[index]
        for index, at in pending.items():
            if self.now - at > self.mix.commit_bound_ticks:
                raise Violation(
                    f"liveness: proposal {index} not applied on every member "
                    f"{self.mix.commit_bound_ticks} ticks after it was proposed"
                )


def replay_command(sim: Simulation) -> str:
    bug = getattr(sim.raft_cls, "bug_name", None)
    cmd = f"python -m tests.sim.replay --mix {sim.mix.name} --seed {sim.seed}"
    return cmd + (f" --bug {bug}" if bug else "")


def run_seed(mix_name: str, seed: int, raft_cls: Callable[..., Raft] = Raft) -> SimResult:
    return Simulation(MIXES[mix_name], seed, raft_cls).run()


__all__ = ["MIXES", "FaultMix", "SimResult", "Simulation", "Violation", "run_seed"]
