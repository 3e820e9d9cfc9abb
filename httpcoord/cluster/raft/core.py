"""The consensus core: Raft (the extended paper and Ongaro's thesis) as a
plain, deterministic state machine.

Inputs: ``tick()``, ``step(message)``, ``propose(data)``/``propose_batch``,
``propose_conf_change(op, node_id)``, ``read_index(ctx)``,
``transfer_leadership(to)``. Output: ``ready()`` returns a ``Ready`` with what
must be persisted (hard state, snapshot, entries), the messages to send after
that, the entries now committed (to apply) and the reads now safe to serve;
``advance(ready)`` tells the core the driver has done all of it. The
persistence-ordering contract the driver must honour is in ``storage``.

No I/O, no clock, no asyncio, no threads: time is the number of ``tick()``
calls and randomness comes from the injected ``random.Random``, so the same
state and the same inputs give the same outputs (the simulator depends on it).

Design notes:
- Roles are switched by assigning ``_step``/``_tick``; the term/lease logic
  common to all roles runs first in ``step``.
- Pre-vote and check-quorum are on by default; followers that heard from a
  leader within an election timeout ignore vote requests (the leader lease),
  except those caused by a leadership transfer.
- Membership changes are one server at a time, and a configuration takes
  effect as soon as its entry is in a node's log (thesis §4.1). A leader
  accepts a change only when the previous one is committed and it has
  committed an entry of its own term (the fix for the single-server-change
  bug, thesis §4.1/errata). A voter whose own removal is in its log but not
  yet committed may still campaign (see ``promotable``).
- ReadIndex: the leader records its commit index, confirms it is still leader
  with a heartbeat round acknowledged by a majority, then releases the read.
  A follower releases a leader's answer only for a ctx it forwarded itself in
  this term, to this leader, and not yet answered: a stale or duplicated
  answer (from before a restart, a term change or a lost leadership) is
  dropped rather than released.
- The rules the simulator's bug-injection test breaks are small overridable
  methods (``_log_ok_for_vote``, ``_commit_term_ok``, ``_commit_quorum_size``,
  ``_follower_commit_limit``, ``_conf_change_allowed``, ``_hard_state``,
  ``_apply_limit``, ``_read_needs_quorum``, ``_read_response_known``);
  nothing else should override them.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from httpcoord.cluster.raft.log import RaftLog
from httpcoord.cluster.raft.messages import (
    NONE,
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from httpcoord.cluster.raft.storage import CompactedError, LogStorage, limit_bytes


@dataclass(frozen=True, slots=True)
class Config:
    node_id: int
    election_timeout_ticks: int = 10  # randomized in [this, 2 * this)
    heartbeat_ticks: int = 1
    max_entries_per_msg: int = 4096
    max_bytes_per_msg: int = 1 << 20
    max_inflight_msgs: int = 64  # appends in flight per follower (pipelining)
    max_uncommitted_entries: int = 1 << 20  # beyond: proposals are dropped
    max_pending_reads: int = 4096  # per queue: leader reads, and reads a follower forwarded
    max_apply_bytes_per_ready: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        assert self.node_id > 0
        assert 0 < self.heartbeat_ticks < self.election_timeout_ticks
        assert self.max_entries_per_msg > 0 and self.max_inflight_msgs > 0


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """Only the leader accepts this; ``leader`` is a hint (NONE if unknown)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class ProposalDropped(Exception):
    """The leader refuses for now (a bound is reached, a transfer or a
    membership change is under way); retrying later may succeed."""


class LogLost(Exception):
    """The leader counts this node as holding entries its log lacks: entries
    it acknowledged are gone (its storage was restored from an older copy, or
    lost fsynced writes). Its log and vote can no longer be trusted; the
    node must stop."""

    def __init__(self, leader: int, term: int, acknowledged: int, last_index: int) -> None:
        super().__init__(
            f"the leader (node {leader}, term {term}) counts this node as holding log index "
            f"{acknowledged}, but its log ends at {last_index}: entries it acknowledged are lost"
        )
        self.acknowledged = acknowledged
        self.last_index = last_index


class ConfChangeError(ValueError):
    """The membership change is invalid against the current membership."""


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """The read with this ctx may be served once applied index >= index."""

    ctx: int
    index: int


@dataclass(slots=True)
class Ready:
    soft_state: SoftState
    hard_state: HardState | None  # None when unchanged since the last Ready
    snapshot: Snapshot | None  # save before entries; it replaces the whole log
    entries: list[Entry]  # save; they overwrite any stored suffix from entries[0].index
    messages: list[Message]  # send only after the above are durable
    committed_entries: list[Entry]  # apply in order, after saving
    read_states: list[ReadState]


class _PrState(Enum):
    PROBE = 0  # one append at a time until we find where logs match
    REPLICATE = 1  # optimistic pipelining, bounded by max_inflight_msgs
    SNAPSHOT = 2  # an InstallSnapshot is in flight; wait for its answer


@dataclass(slots=True)
class _Progress:
    """The leader's view of one peer."""

    match: int
    next: int
    state: _PrState = _PrState.PROBE
    paused: bool = False  # probe: one append per heartbeat round
    inflight: deque[int] = field(default_factory=deque)  # last index of each append
    pending_snapshot: int = 0
    snapshot_wait_ticks: int = 0
    recent_active: bool = True
    read_acked: int = 0  # newest ReadIndex round this peer acknowledged

    def become_probe(self) -> None:
        if self.state is _PrState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = _PrState.PROBE
        self.paused = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = _PrState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()


@dataclass(slots=True)
class _PendingRead:
    seq: int
    requester: int
    ctx: int
    index: int


CONF_OPS = ("add_learner", "add_voter", "remove")


class Raft:
    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        self.cfg = config
        self.id = config.node_id
        self.rng = rng
        self.log = RaftLog(storage)
        hard_state, base_conf = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        # Membership history beyond the snapshot: (index, conf), ascending;
        # truncating the log pops the configurations it held.
        snap_index = storage.snapshot().meta.index
        self._confs: list[tuple[int, ConfState]] = [(snap_index, base_conf)]
        lo, last = snap_index + 1, storage.last_index()
        while lo <= last:
            chunk = storage.entries(lo, last + 1, 16 << 20)
            for e in chunk:
                if e.kind == EntryKind.CONF:
                    self._confs.append((e.index, ConfState.decode(e.data)))
            lo = chunk[-1].index + 1
        self.conf = self._confs[-1][1]

        self.role = Role.FOLLOWER
        self.lead = NONE
        self.prs: dict[int, _Progress] = {}
        self._votes: dict[int, bool] = {}
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads: deque[_PendingRead] = deque()
        self._reads_waiting_commit: list[tuple[int, int]] = []  # (requester, ctx)
        self._read_seq = 0
        # ctx -> the leader a read was forwarded to, oldest first; only answers
        # to these are released (bounded by max_pending_reads).
        self._forwarded_reads: dict[int, int] = {}
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self.lead_transferee = NONE
        self._pending_conf_index = 0
        self._committed_in_term = False

        self._prev_hard_state = hard_state
        self._prev_soft_state = SoftState(NONE, Role.FOLLOWER)
        self._applying = self.log.applied  # committed entries handed out so far
        self._ready_out = False

        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._become_follower(self.term, NONE)

    # ==== public inputs ===========================================================

    def tick(self) -> None:
        self._tick()

    def step(self, m: Message) -> None:
        if m.dst != self.id:
            return  # misrouted by the transport
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                if self._in_lease() and not m.transfer:
                    # We heard from a live leader within an election timeout:
                    # a node that did not is partitioned or removed; ignore it
                    # rather than let it depose a working leader.
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, NONE)
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # a pre-vote grant carries our term + 1; no term change
            elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat):
                # A stale leader: with pre-vote it may never see our higher term
                # through votes, so tell it directly and let it step down.
                self._send(AppendResponse(self.id, m.src, self.term, True, 0))
            elif isinstance(m, VoteRequest) and m.pre_vote:
                self._send(VoteResponse(self.id, m.src, self.term, False, True))
            return
        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
            return
        self._step(m)

    def propose(self, data: bytes) -> int:
        """Append one normal entry; returns its log index (not a zxid: see Entry)."""
        return self.propose_batch((data,))

    def propose_batch(self, items: Sequence[bytes]) -> int:
        """Append several normal entries at once; returns the last index."""
        self._check_can_propose(len(items))
        base, term = self.log.last_index() + 1, self.term
        kind = EntryKind.NORMAL
        self._append_own([Entry(base + i, term, kind, d) for i, d in enumerate(items)])
        return base + len(items) - 1

    def propose_conf_change(self, op: str, node_id: int) -> int:
        """One membership change: 'add_learner', 'add_voter' (a learner that
        has caught up), or 'remove'. Returns the index of the membership entry."""
        self._check_can_propose(1)
        if not self._conf_change_allowed():
            raise ProposalDropped("a membership change or this leader's no-op is uncommitted")
        if op == "add_voter" and node_id not in self.conf.voters:
            # A voter that cannot answer yet (never started, far behind) would
            # count in every quorum at once: going from one voter to two with
            # a newcomer that never starts stops all writes for good. So a
            # node joins as a learner and is promoted once it holds
            # everything committed.
            if node_id not in self.conf.learners:
                raise ConfChangeError(
                    f"node {node_id} must first be added as a learner and catch up"
                )
            pr = self.prs.get(node_id)
            if pr is None or pr.match < self.log.committed:
                match = 0 if pr is None else pr.match
                raise ProposalDropped(
                    f"learner {node_id} has not caught up yet ({match} of {self.log.committed})"
                )
        new = _changed_conf(self.conf, op, node_id)
        index = self.log.last_index() + 1
        self._pending_conf_index = index
        self._append_own([Entry(index, self.term, EntryKind.CONF, new.encode())])
        return index

    def read_index(self, ctx: int) -> None:
        """Ask for a linearizable read; a ReadState(ctx, index) appears in a later
        Ready. ctx must be unique among this node's outstanding reads, and
        should never repeat across restarts (a stale answer to an earlier
        incarnation's read could otherwise be taken for the new one's). Reads
        are dropped (never answered wrongly) if leadership is lost meanwhile."""
        if self.role is Role.LEADER:
            self._leader_read(self.id, ctx)
        elif self.lead != NONE:
            fw = self._forwarded_reads
            if len(fw) >= self.cfg.max_pending_reads:
                # The oldest is the likeliest to have been lost on the way;
                # its caller times out as it would have anyway.
                del fw[next(iter(fw))]
            fw[ctx] = self.lead
            self._send(ReadIndexRequest(self.id, self.lead, self.term, ctx))
        else:
            raise NotLeader(NONE)

    def transfer_leadership(self, to: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if to == self.id or to not in self.conf.voters:
            raise ConfChangeError(f"cannot transfer leadership to {to}")
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer is abandoned after one timeout
        if self.prs[to].match == self.log.last_index():
            self._send(TimeoutNow(self.id, to, self.term))
        else:
            self._send_append(to, True)

    # ==== output: Ready / advance ===================================================

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self.log.unstable_entries()
            or self.log.unstable_snapshot() is not None
            or self._read_states
            or self._apply_limit() > self._applying
            or self._hard_state() != self._prev_hard_state
            or SoftState(self.lead, self.role) != self._prev_soft_state
        )

    def ready(self) -> Ready:
        assert not self._ready_out, "ready() again before advance()"
        hs = self._hard_state()
        prev = self._prev_hard_state
        assert hs.term >= prev.term and hs.commit >= prev.commit, "durable state regressed"
        snap = self.log.unstable_snapshot()
        committed: list[Entry] = []
        lo = self._applying + 1
        if snap is not None:
            lo = max(lo, snap.meta.index + 1)
        hi = min(self._apply_limit(), self.log.last_index())
        if hi >= lo:
            committed = self.log.entries(lo, hi + 1, self.cfg.max_apply_bytes_per_ready)
        rd = Ready(
            soft_state=SoftState(self.lead, self.role),
            hard_state=hs if hs != prev else None,
            snapshot=snap,
            entries=list(self.log.unstable_entries()),
            messages=self._msgs,
            committed_entries=committed,
            read_states=self._read_states,
        )
        self._msgs = []
        self._read_states = []
        if committed:
            self._applying = committed[-1].index
        elif snap is not None:
            self._applying = max(self._applying, snap.meta.index)
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver saved, sent and applied everything in rd."""
        assert self._ready_out, "advance() without ready()"
        self._ready_out = False
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        self._prev_soft_state = rd.soft_state
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.meta.index)
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied = rd.committed_entries[-1].index
        self._trim_confs()

    # ==== queries =====================================================================

    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def conf_at(self, index: int) -> ConfState:
        """Membership in effect at a (committed) index: what a snapshot taken
        there must record. Raises CompactedError if the history no longer
        reaches back that far."""
        if index < self._confs[0][0]:
            # A newer snapshot from the leader replaced the log (it is being
            # installed): the driver should skip snapshotting this old index.
            raise CompactedError(index)
        conf = self._confs[0][1]
        for i, c in self._confs:
            if i > index:
                break
            conf = c
        return conf

    def promotable(self) -> bool:
        # Not while a snapshot from the leader is still being saved: until it
        # is durable, storage holds neither it nor the log it replaced, so as a
        # leader this node could not serve a follower behind that point (as in
        # etcd's raft, which refuses to campaign with a snapshot in progress).
        if self.log.unstable_snapshot() is not None:
            return False
        if self.id in self.conf.voters:
            return True
        # A voter whose own removal is in its log but not yet committed still
        # campaigns (its votes are counted in the new configuration, which it
        # then commits before stepping down). Otherwise removing one of two
        # voters deadlocks when the leader is deposed before the other has the
        # removal: the other needs this node's vote, and its log is behind.
        return self.id in self._committed_conf().voters

    def _committed_conf(self) -> ConfState:
        """The newest configuration at or below the commit index (the history
        always keeps one: see _trim_confs)."""
        committed = self.log.committed
        conf = self._confs[0][1]
        for index, c in self._confs:
            if index > committed:
                break
            conf = c
        return conf

    def status(self) -> dict[str, object]:
        """A JSON-ready view for /v1/cluster and metrics (not for decisions)."""
        out: dict[str, object] = {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.lead,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "voters": sorted(self.conf.voters),
            "learners": sorted(self.conf.learners),
        }
        if self.role is Role.LEADER:
            out["progress"] = {
                str(pid): {"match": pr.match, "next": pr.next, "state": pr.state.name.lower()}
                for pid, pr in sorted(self.prs.items())
            }
        return out

    # ==== the overridable rules (see the module docstring) ==========================

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _log_ok_for_vote(self, last_index: int, last_term: int) -> bool:
        return self.log.is_up_to_date(last_index, last_term)

    def _commit_term_ok(self, index: int) -> bool:
        # §5.4.2: count replicas only for entries of the current term; older
        # ones commit indirectly (Figure 8 shows why).
        return self.log.term(index) == self.term

    def _commit_quorum_size(self) -> int:
        # A majority, not every voter: a voter down for good must not stop writes.
        return len(self.conf.voters) // 2 + 1

    def _follower_commit_limit(self, m: AppendEntries, last_new: int) -> int:
        # Only what this append proved to match the leader: entries past
        # last_new may be a stale suffix of an older term that the leader has
        # not overwritten yet (a short, split or stale append stops before it).
        return last_new

    def _conf_change_allowed(self) -> bool:
        # The previous change is committed and so is this leader's no-op
        # (_become_leader points _pending_conf_index at it). Without the no-op
        # rule a new leader could commit a change that conflicts with one an
        # earlier leader left uncommitted on other servers (thesis §4.1 errata).
        return self._pending_conf_index <= self.log.committed

    def _apply_limit(self) -> int:
        return self.log.committed

    def _read_needs_quorum(self) -> bool:
        return True

    def _read_response_known(self, m: ReadIndexResponse) -> bool:
        # An answer counts once, and only for a read this incarnation forwarded
        # to this leader in this term (the set is emptied on any term change
        # or loss of the leader).
        return self._forwarded_reads.pop(m.ctx, NONE) == m.src

    # ==== role transitions ===========================================================

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, "term went backwards"
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        t = self.cfg.election_timeout_ticks
        self._randomized_timeout = t + self.rng.randrange(t)
        self._votes = {}
        self.lead_transferee = NONE
        self.prs = {}
        self._reads.clear()
        self._reads_waiting_commit = []
        self._forwarded_reads.clear()
        self._committed_in_term = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        # No term change: a partitioned node that keeps failing pre-votes never
        # inflates its term and never disrupts the cluster when it returns.
        self._votes = {}
        self.lead = NONE
        self._forwarded_reads.clear()  # the leader they went to is presumed gone
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        last = self.log.last_index()
        for pid in self.conf.members:
            self.prs[pid] = _Progress(match=0, next=last + 1)
        if self.id not in self.prs:
            self.prs[self.id] = _Progress(match=0, next=last + 1)
        # No membership change until the no-op below commits: a change proposed
        # before this leader committed anything could conflict with one an
        # earlier leader left uncommitted.
        self._pending_conf_index = last + 1
        self._append_own([Entry(last + 1, self.term, EntryKind.NOOP, b"")])

    def _campaign(self, transfer: bool) -> None:
        if not self.promotable():
            return
        if not self.cfg.pre_vote or transfer:
            self._real_campaign(transfer)
            return
        self._become_pre_candidate()
        if self._poll(self.id, True):
            return
        self._request_votes(self.term + 1, pre_vote=True, transfer=False)

    def _real_campaign(self, transfer: bool) -> None:
        self._become_candidate()
        if self._poll(self.id, True):
            return
        self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool) -> None:
        last = self.log.last_index()
        last_term = self.log.term(last)
        for pid in sorted(self.conf.voters):
            if pid != self.id:
                self._send(VoteRequest(self.id, pid, term, last, last_term, pre_vote, transfer))

    def _poll(self, pid: int, granted: bool) -> bool:
        """Record a vote; returns True if it decided the election."""
        self._votes.setdefault(pid, granted)
        voters = self.conf.voters
        q = len(voters) // 2 + 1
        yes = sum(1 for v, g in self._votes.items() if g and v in voters)
        no = sum(1 for v, g in self._votes.items() if not g and v in voters)
        if yes >= q:
            if self.role is Role.PRE_CANDIDATE:
                self._real_campaign(transfer=False)
            else:
                self._become_leader()
            return True
        if no >= q:
            self._become_follower(self.term, NONE)
            return True
        return False

    # ==== ticks ======================================================================

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.lead != NONE
            and self.election_elapsed < self.cfg.election_timeout_ticks
        )

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            t = self.cfg.election_timeout_ticks
            self._randomized_timeout = t + self.rng.randrange(t)
            self._campaign(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.election_elapsed += 1
        self._heartbeat_elapsed += 1
        if self.election_elapsed >= self.cfg.election_timeout_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    # We cannot reach a majority: another leader may already
                    # exist, so stop accepting writes and reads.
                    self._become_follower(self.term, NONE)
                    return
                for pid, pr in self.prs.items():
                    pr.recent_active = pid == self.id
            self.lead_transferee = NONE  # a transfer that did not finish in time
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()
            for pid, pr in self.prs.items():
                if pr.state is _PrState.SNAPSHOT:
                    pr.snapshot_wait_ticks -= self.cfg.heartbeat_ticks
                    if pr.snapshot_wait_ticks <= 0:
                        pr.become_probe()  # the snapshot or its answer was lost

    def _quorum_active(self) -> bool:
        voters = self.conf.voters
        active = sum(
            1
            for pid in voters
            if pid == self.id or (pid in self.prs and self.prs[pid].recent_active)
        )
        return active >= len(voters) // 2 + 1

    # ==== votes ========================================================================

    def _handle_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self._log_ok_for_vote(m.last_index, m.last_term):
            if m.pre_vote:
                self._send(VoteResponse(self.id, m.src, m.term, True, True))
                return
            assert self.vote in (NONE, m.src), "a second vote in one term"
            assert m.term == self.term
            self.vote = m.src
            self.election_elapsed = 0
            self._send(VoteResponse(self.id, m.src, self.term, True, False))
        else:
            self._send(VoteResponse(self.id, m.src, self.term, False, m.pre_vote))

    # ==== follower / candidate ===========================================================

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.src
            # m.commit <= what this follower acknowledged (min of its match and
            # the commit index): a log that ends below it lost acknowledged
            # entries, and a node that lost them must not vote or ack again.
            if m.commit > self.log.last_index():
                raise LogLost(m.src, m.term, m.commit, self.log.last_index())
            self.log.commit_to(m.commit)
            self._send(HeartbeatResponse(self.id, m.src, self.term, m.read_seq))
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            self._campaign(transfer=True)
        elif isinstance(m, ReadIndexResponse) and self._read_response_known(m):
            self._read_states.append(ReadState(m.ctx, m.index))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            # A leader exists for this term (we are a pre-candidate in it, or
            # lost the election): follow it.
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif isinstance(m, VoteResponse) and m.pre_vote == (self.role is Role.PRE_CANDIDATE):
            self._poll(m.src, m.granted)

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            self._send(AppendResponse(self.id, m.src, self.term, False, log.committed))
            return
        if log.match_term(m.prev_index, m.prev_term):
            last_new = m.prev_index + len(m.entries)
            if m.entries:
                ci = log.find_conflict(m.entries)
                if ci:
                    assert ci > log.committed, "a leader conflicts with a committed entry"
                    self._append_entries(list(m.entries[ci - m.entries[0].index :]))
            log.commit_to(min(m.commit, self._follower_commit_limit(m, last_new)))
            self._send(AppendResponse(self.id, m.src, self.term, False, last_new))
            return
        hint = min(m.prev_index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint, m.prev_term)
        self._send(
            AppendResponse(self.id, m.src, self.term, True, m.prev_index, hint_index, hint_term)
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.snapshot.meta
        if meta.index <= self.log.committed:
            self._send(AppendResponse(self.id, m.src, self.term, False, self.log.committed))
            return
        if self.log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: keep the log.
            self.log.commit_to(meta.index)
        else:
            self.log.restore(m.snapshot)
            self._confs = [(meta.index, meta.conf)]
            self._set_conf(meta.conf)
        self._send(AppendResponse(self.id, m.src, self.term, False, self.log.committed))

    # ==== leader =========================================================================

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m)
        elif isinstance(m, ReadIndexRequest) and m.src in self.prs:
            try:
                self._leader_read(m.src, m.ctx)
            except ProposalDropped:
                pass  # the follower's caller times out and retries

    def _check_can_propose(self, n: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        if self.log.last_index() - self.log.committed + n > self.cfg.max_uncommitted_entries:
            raise ProposalDropped("too many uncommitted entries")

    def _append_own(self, entries: list[Entry]) -> None:
        self._append_entries(entries)
        me = self.prs.get(self.id)
        if me is not None:
            me.match = entries[-1].index
            me.next = me.match + 1
        self._maybe_commit()
        self._bcast_append()

    def _bcast_append(self) -> None:
        for pid in self.prs:
            if pid != self.id:
                self._send_append(pid, True)

    def _bcast_heartbeat(self) -> None:
        committed = self.log.committed
        seq = self._read_seq
        for pid, pr in self.prs.items():
            if pid != self.id:
                self._send(Heartbeat(self.id, pid, self.term, min(pr.match, committed), seq))

    def _send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send what the peer needs next, if flow control allows."""
        pr = self.prs[to]
        if pr.state is _PrState.SNAPSHOT:
            return False
        if pr.state is _PrState.PROBE and pr.paused:
            return False
        if pr.state is _PrState.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight_msgs:
            return False
        log = self.log
        last = log.last_index()
        try:
            prev_term = log.term(pr.next - 1)
            entries = log.entries(
                pr.next,
                min(last + 1, pr.next + self.cfg.max_entries_per_msg),
                self.cfg.max_bytes_per_msg,
            )
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            AppendEntries(
                self.id, to, self.term, pr.next - 1, prev_term, tuple(entries), log.committed
            )
        )
        if pr.state is _PrState.REPLICATE:
            if entries:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
        else:
            pr.paused = True
        return True

    def _send_snapshot(self, to: int, pr: _Progress) -> bool:
        snap = self.log.storage.snapshot()
        assert snap.meta.index > 0, "log compacted without a snapshot"
        self._send(InstallSnapshot(self.id, to, self.term, snap))
        pr.state = _PrState.SNAPSHOT
        pr.pending_snapshot = snap.meta.index
        pr.snapshot_wait_ticks = 2 * self.cfg.election_timeout_ticks
        pr.inflight.clear()
        return True

    def _handle_append_response(self, m: AppendResponse) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            if pr.state is _PrState.REPLICATE:
                if m.index <= pr.match:
                    return  # stale
            elif pr.state is _PrState.PROBE:
                if m.index != pr.next - 1:
                    return  # stale: answers an older probe
            else:
                return
            try:
                probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            except CompactedError:
                probe = 0
            pr.become_probe()
            pr.next = max(min(m.index, probe + 1), pr.match + 1)
            self._send_append(m.src, True)
            return
        was_paused = pr.state is _PrState.PROBE and pr.paused
        if m.index > pr.match:
            pr.match = m.index
            pr.next = max(pr.next, m.index + 1)
            if pr.state is _PrState.PROBE:
                pr.become_replicate()
            elif pr.state is _PrState.SNAPSHOT:
                if pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
            else:
                infl = pr.inflight
                while infl and infl[0] <= m.index:
                    infl.popleft()
            if self._maybe_commit():
                self._bcast_append()
            # Keep the pipeline full.
            while self.role is Role.LEADER and self._send_append(m.src, False):
                pass
            if m.src == self.lead_transferee and pr.match == self.log.last_index():
                self._send(TimeoutNow(self.id, m.src, self.term))
        elif was_paused:
            pr.paused = False
            self._send_append(m.src, False)

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.paused = False
        if pr.state is _PrState.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight_msgs:
            pr.inflight.popleft()  # something was lost; let one more through
        if pr.match < self.log.last_index():
            # An empty append past a lost one makes the follower reject and us probe.
            self._send_append(m.src, True)
        if m.read_seq > pr.read_acked:
            pr.read_acked = m.read_seq
            self._release_reads()

    def _maybe_commit(self) -> bool:
        voters = self.conf.voters
        if not voters:
            return False
        matches = sorted((self.prs[v].match for v in voters if v in self.prs), reverse=True)
        q = self._commit_quorum_size()
        if len(matches) < q:
            return False
        index = matches[q - 1]
        if index <= self.log.committed or not self._commit_term_ok(index):
            return False
        self.log.commit_to(index)
        self._after_commit()
        return True

    def _after_commit(self) -> None:
        if not self._committed_in_term and self.log.term(self.log.committed) == self.term:
            self._committed_in_term = True
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for requester, ctx in waiting:
                try:
                    self._leader_read(requester, ctx)
                except ProposalDropped:
                    pass  # too many pending reads: dropped, its caller retries
        if self.id not in self.conf.voters and self._confs[-1][0] <= self.log.committed:
            # Our own removal is committed: stop leading (thesis §4.2.2). The
            # others time out and elect a leader among themselves.
            self._become_follower(self.term, NONE)

    # ==== ReadIndex =========================================================================

    def _leader_read(self, requester: int, ctx: int) -> None:
        if not self._committed_in_term:
            # Our commit index may lag the previous leader's until our no-op commits.
            if len(self._reads_waiting_commit) >= self.cfg.max_pending_reads:
                raise ProposalDropped("too many pending reads")
            self._reads_waiting_commit.append((requester, ctx))
            return
        index = self.log.committed
        if not self._read_needs_quorum() or self.conf.voters == {self.id}:
            self._answer_read(requester, ctx, index)
            return
        if len(self._reads) >= self.cfg.max_pending_reads:
            raise ProposalDropped("too many pending reads")
        self._read_seq += 1
        self._reads.append(_PendingRead(self._read_seq, requester, ctx, index))
        self._bcast_heartbeat()  # the round that proves we are still the leader

    def _release_reads(self) -> None:
        voters = self.conf.voters
        q = len(voters) // 2 + 1
        acked = sorted(
            (self._read_seq if pid == self.id else self.prs[pid].read_acked)
            for pid in voters
            if pid in self.prs
        )
        acked.reverse()
        if len(acked) < q:
            return
        confirmed = acked[q - 1]  # a majority acknowledged every round <= this
        reads = self._reads
        while reads and reads[0].seq <= confirmed:
            r = reads.popleft()
            self._answer_read(r.requester, r.ctx, r.index)

    def _answer_read(self, requester: int, ctx: int, index: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(ctx, index))
        else:
            self._send(ReadIndexResponse(self.id, requester, self.term, ctx, index))

    # ==== log and membership =================================================================

    def _append_entries(self, entries: list[Entry]) -> None:
        first = entries[0].index
        # A leader only appends (Leader Append-Only); only followers truncate.
        assert self.role is not Role.LEADER or first == self.log.last_index() + 1
        if self._confs[-1][0] >= first:
            # Truncation drops configurations the lost suffix held.
            while len(self._confs) > 1 and self._confs[-1][0] >= first:
                self._confs.pop()
            changed = True
        else:
            changed = False
        self.log.append(entries)
        conf_kind = EntryKind.CONF
        for e in entries:
            if e.kind == conf_kind:
                self._confs.append((e.index, ConfState.decode(e.data)))
                changed = True
        if changed:
            self._set_conf(self._confs[-1][1])

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        if self.role is not Role.LEADER:
            return
        last = self.log.last_index()
        for pid in conf.members:
            if pid not in self.prs:
                self.prs[pid] = _Progress(match=0, next=last + 1)
        for pid in list(self.prs):
            if pid != self.id and pid not in conf.members:
                del self.prs[pid]
        if self.lead_transferee not in conf.voters:
            self.lead_transferee = NONE
        # A smaller quorum may already confirm pending reads (with one voter
        # left, this leader alone): no heartbeat answer may ever come to
        # release them otherwise. Consecutive one-server configurations share
        # a member with every quorum of either, so counting the new one is safe.
        self._release_reads()

    def _trim_confs(self) -> None:
        # Keep the newest configuration at or below the applied index and all later ones.
        confs = self._confs
        if len(confs) > 4:
            applied = self.log.applied
            keep = 0
            for i, (index, _) in enumerate(confs):
                if index <= applied:
                    keep = i
            if keep:
                del confs[:keep]

    def _send(self, m: Message) -> None:
        self._msgs.append(m)


def _changed_conf(conf: ConfState, op: str, node_id: int) -> ConfState:
    """The one-server change, validated against the current membership."""
    if node_id <= 0:
        raise ConfChangeError("node ids are positive")
    voters, learners = set(conf.voters), set(conf.learners)
    if op == "add_learner":
        if node_id in voters or node_id in learners:
            raise ConfChangeError(f"node {node_id} is already a member")
        learners.add(node_id)
    elif op == "add_voter":
        if node_id in voters:
            raise ConfChangeError(f"node {node_id} is already a voter")
        learners.discard(node_id)
        voters.add(node_id)
    elif op == "remove":
        if node_id not in voters and node_id not in learners:
            raise ConfChangeError(f"node {node_id} is not a member")
        if voters == {node_id}:
            raise ConfChangeError("cannot remove the last voter")
        voters.discard(node_id)
        learners.discard(node_id)
    else:
        raise ConfChangeError(f"unknown membership op {op!r}; expected one of {CONF_OPS}")
    return ConfState(frozenset(voters), frozenset(learners))


__all__ = [
    "ConfChangeError",
    "Config",
    "LogLost",
    "NotLeader",
    "ProposalDropped",
    "Raft",
    "ReadState",
    "Ready",
    "Role",
    "SoftState",
    "limit_bytes",
]
