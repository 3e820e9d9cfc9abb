"""Deterministic simulation of a cluster of consensus cores.

One ``Simulation(mix, seed)`` runs N cores (3 or 5, plus nodes added by
membership changes) over a simulated network and disk, all driven by one
seeded ``random.Random``: the same (mix, seed) replays the same run exactly.

Faults: message loss, duplication, delay and so reordering; stale copies of
messages sent up to ``replay_history_msgs_max`` sends ago (across terms,
crashes and restarts); symmetric and
asymmetric partitions; crashes that lose everything a node has not saved
(its core, its unsaved Ready, its state machine), restarts from what it
saved; uneven tick rates; a slow disk (a node's Ready waits some steps).
Workload: proposals, ReadIndex reads at any node, membership changes
(learners added, promoted, voters and learners removed), snapshots with log
compaction (so lagging nodes need InstallSnapshot), leadership transfers.

After every step the ``Checker`` verifies: at most one leader per term; log
matching; leader completeness; no two nodes apply different entries (or
reach different states) at one index; a committed entry is never lost; a
ReadIndex read sees every write committed before it started. Then, with the
faults healed, a leader must be elected and a proposal must commit on every
member within a bounded number of ticks, and after that every proposal must
be applied everywhere and every read answered (at any member) within
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

from httpcoord.cluster.raft.core import (
    ConfChangeError,
    Config,
    NotLeader,
    ProposalDropped,
    Raft,
    Ready,
    Role,
)
from httpcoord.cluster.raft.messages import Message, decode_message, encode_message
from httpcoord.cluster.raft.storage import CompactedError, MemoryStorage


class Violation(AssertionError):
    """A safety or liveness property failed."""


@dataclass(frozen=True)
class FaultMix:
    name: str
    nodes: int = 3
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
            loss=0.1,
            max_delay_ticks=3,
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
        self.pending: Ready | None = None  # taken from the core, not yet saved


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

    def fail(self, what: str) -> None:
        raise Violation(what)

    def on_leader(self, node: SimNode, raft: Raft) -> None:
        prev = self.leader_of_term.setdefault(raft.term, node.id)
        if prev != node.id:
            self.fail(f"two leaders in term {raft.term}: {prev} and {node.id}")
        if (node.id, raft.term) in self.leaders_checked:
            return
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
            return  # a duplicate answer
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
        self.next_ctx = 1
        self.proposals = 0
        self.crash_after_save = mix.crash_after_save_rate
        self.sends_before_save = bool(getattr(raft_cls, "driver_sends_before_save", False))
        founders = list(range(1, mix.nodes + 1))
        for nid in founders:
            node = SimNode(nid, MemoryStorage.bootstrapped(founders))
            self.nodes[nid] = node
            self._start(node)

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
        )

    def _start(self, node: SimNode) -> None:
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

    def _crash(self, node: SimNode) -> None:
        node.raft = None  # its unsaved entries, hard state and Ready are gone
        node.pending = None
        node.reads.clear()

    # ---- the network -------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        mix = self.mix
        if mix.replay_rate:
            self.sent.append(m)
        copies = 1
        if mix.loss and self.rng.random() < mix.loss:
            copies = 0
        elif mix.dup and self.rng.random() < mix.dup:
            copies = 2
        for _ in range(copies):
            self.net_seq += 1
            delay = self.rng.randint(1, mix.max_delay_ticks) if mix.max_delay_ticks > 1 else 1
            heapq.heappush(self.net, (self.now + delay, self.net_seq, m))

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
            raft.step(m)
            if raft.role is Role.LEADER:
                # Here, not only at the end of the step: a leader elected by
                # this message may be deposed or crash before the step ends.
                self.checker.on_leader(node, raft)

    # ---- the driver loop: save, send, apply, advance ------------------------------------

    def _process_ready(self, node: SimNode, rd: Ready) -> None:
        raft = node.raft
        assert raft is not None
        node.pending = None
        if self.sends_before_save:
            # A broken driver (bug injection): the promises leave before the disk has them.
            for m in rd.messages:
                self._send(m)
            if self.rng.random() < self.crash_after_save:
                self._crash(node)
                return
            rd.messages = []
        node.storage.save(rd.hard_state, rd.snapshot, rd.entries)
        self.checker.on_save(node, rd)
        if self.crash_after_save and self.rng.random() < self.crash_after_save:
            self._crash(node)  # durable, but nobody heard of it
            return
        for m in rd.messages:
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

    def _read(self, node: SimNode) -> None:
        assert node.raft is not None
        ctx = self.next_ctx
        self.next_ctx += 1
        try:
            node.raft.read_index(ctx)
        except (NotLeader, ProposalDropped):
            return
        node.reads[ctx] = self.checker.max_commit

    def _change_membership(self, leader: SimNode) -> None:
        raft = leader.raft
        assert raft is not None
        conf = raft.conf
        choice = self.rng.random()
        try:
            if choice < 0.35 and len(conf.members) < 7:
                nid = self.next_id
                self.next_id += 1
                raft.propose_conf_change("add_learner", nid)
                node = SimNode(nid, MemoryStorage())
                self.nodes[nid] = node
                self._start(node)
            elif choice < 0.7 and conf.learners and len(conf.voters) < 5:
                raft.propose_conf_change("add_voter", self.rng.choice(sorted(conf.learners)))
            elif len(conf.voters) > 3 or conf.learners:
                pool = sorted(conf.learners) if len(conf.voters) <= 3 else sorted(conf.members)
                victim = self.rng.choice(pool)
                raft.propose_conf_change("remove", victim)
        except (NotLeader, ProposalDropped, ConfChangeError):
            pass

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
        node.storage.create_snapshot(
            node.applied, conf, _snapshot_data(node.applied, node.state_hash)
        )
        keep = self.rng.randint(0, 3)
        node.storage.compact(max(node.storage.first_index() - 1, node.applied - keep))

    def _partition(self) -> None:
        ids = sorted(self.nodes)
        self.cut.clear()
        if self.rng.random() < 0.3:
            return  # heal
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
                for other in self.nodes:
                    if other != leader.id:
                        self.cut.update({(leader.id, other), (other, leader.id)})
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
        down = [n for n in self.nodes.values() if n.raft is None]
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
                if raft.has_ready():
                    self._process_ready(node, raft.ready())
            elif node.pending is not None:
                # A slow disk: the Ready taken earlier is saved now; messages
                # were stepped and ticks counted while it was being written.
                if rng.random() < disk:
                    self._process_ready(node, node.pending)
            elif raft.has_ready():
                node.pending = raft.ready()
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and raft.role is Role.LEADER:
                self.checker.on_leader(node, raft)

    def heal(self) -> None:
        self.cut.clear()
        self.crash_after_save = 0.0
        self.mix = replace(self.mix, loss=0.0, dup=0.0, max_delay_ticks=1)
        # Every server comes back, including removed ones: a removal proposed
        # but lost with its leader leaves the server a member, and a removed
        # server that never learned of its removal must not disrupt the rest.
        for node in self.nodes.values():
            if node.raft is None:
                self._start(node)
            node.tick_rate = 1.0

    def run(self) -> SimResult:
        try:
            for _ in range(self.mix.chaos_steps):
                self.step(chaos=True)
            self.heal()
            heal_steps = self._check_liveness()
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

    def _check_liveness(self) -> int:
        """After healing: a leader, and a proposal applied by every member."""
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
            members = [self.nodes[i] for i in raft.conf.members]
            if all(n.raft is not None and n.applied >= probe[1] for n in members) and (
                self.checker.applied[probe[1]] == (probe[0], b"probe")
            ):
                healed_in = self.now - start
                self._check_steady_commits(leader)
                return healed_in
        raise Violation(
            f"liveness: no leader committed a proposal on all members within "
            f"{self.mix.heal_steps_max} ticks after healing"
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
        members = sorted(raft.conf.members)
        for k in range(self.mix.steady_proposals):
            pending[raft.propose(b"steady%d" % k)] = self.now
            reader = self.nodes[members[k % len(members)]]
            ctx = self.next_ctx
            self._read(reader)
            if ctx in reader.reads:
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
            raise Violation(f"liveness: reads {[(n.id, c) for n, c, _ in reads]} not answered")

    def _steady_reads(
        self, reads: list[tuple[SimNode, int, int]]
    ) -> list[tuple[SimNode, int, int]]:
        left = [(n, ctx, at) for n, ctx, at in reads if ctx in n.reads]
        for n, ctx, at in left:
            if self.now - at > self.mix.commit_bound_ticks:
                raise Violation(
                    f"liveness: read {ctx} at node {n.id} not answered "
                    f"{self.mix.commit_bound_ticks} ticks after it was asked"
                )
        return left

    def _steady_progress(self, leader: SimNode, term: int, pending: dict[int, int]) -> None:
        raft = leader.raft
        if raft is None or raft.role is not Role.LEADER or raft.term != term:
            raise Violation("liveness: leadership changed in a healthy cluster")
        members = [self.nodes[i] for i in raft.conf.members]
        low = min(n.applied for n in members)
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
