"""The one loop around the consensus core.

Every turn of ``Driver.run`` does, in this order:

1. step the messages peers delivered since the last turn;
2. tick the core once per elapsed ``tick_ms`` of the injected monotonic clock;
3. hand the core everything proposed since the last turn in one
   ``propose_batch``, and every linearizable read asked for since the last
   turn as ONE ``read_index`` (reads arriving together share one heartbeat
   round);
4. if the core has a ``Ready``:
   a. save its hard state, snapshot and entries: one transaction, one fsync
      (group commit: everything the turn gathered); a hard state whose only
      change is the commit index is not saved on its own (Raft needs the
      commit index nowhere durable) but with the next save;
   b. only then send its messages (a vote or an append acknowledgement
      promises what is on disk); a leader's Ready that changes no term or
      vote sends first, so followers fsync while it does (see ``_handle``);
   c. then restore its snapshot and apply its committed entries to the state
      machine, and release its reads;
   d. then ``advance``.

That ordering is the persistence contract of ``raft.storage``; it is kept here
and nowhere else. A failed save stops the loop for good: after an fsync error
nothing on the disk can be trusted, so the node refuses writes until restarted.

Except a full disk (``DiskFull``): SQLite rolled the transaction back, so the
disk holds exactly what it held and nothing was promised. The loop then
holds the same ``Ready`` (unsaved, unsent, unapplied, not advanced) and
retries its save with bounded backoff; meanwhile the core is frozen (no
step, no tick, no proposal: like a paused process, which Raft tolerates),
new proposals and linearizable reads fail fast with ``DiskFull``, peer
messages wait in a small queue that drops the oldest, and reads of the
local tree go on. The first save that succeeds resumes the loop where it
stopped; the node rejoins by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from httpcoord.cluster.node_storage import NodeStorage
from httpcoord.cluster.raft.core import (
    LogLost,
    NotLeader,
    ProposalDropped,
    Raft,
    Ready,
    Role,
    SoftState,
)
from httpcoord.cluster.raft.messages import (
    NONE,
    AppendEntries,
    Entry,
    HardState,
    Message,
    Snapshot,
)
from httpcoord.errors import DiskFull, Unavailable

log = logging.getLogger(__name__)

_READ_CTXS_KEPT_MAX = 64  # read rounds awaiting a ReadState before pruning


class Transport(Protocol):
    """What the driver and the node need from the peer transport."""

    def send(self, messages: Iterable[Message]) -> None: ...

    def reachable(self, peer_id: int) -> bool: ...

    async def call(
        self,
        peer_id: int,
        path: str,
        body: bytes,
        timeout_ms: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes: ...


class StateMachine(Protocol):
    """What the driver applies committed entries to (the node's tree)."""

    async def restore(self, snapshot: Snapshot) -> None: ...

    def apply(self, entries: list[Entry]) -> None: ...

    def role_changed(self, soft_state: SoftState) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverLimits:
    tick_ms: int = 30  # one core tick; elections time out after 10-20 ticks
    inbox_msgs_max: int = 100_000  # peer messages waiting for a turn; beyond: dropped
    proposals_max: int = 20_000  # proposals waiting for a turn; beyond: refused
    proposal_batch_max: int = 4096  # proposals handed to the core in one turn
    ticks_per_turn_max: int = 40  # a stalled loop catches up at most this many ticks
    # A full disk: the save is retried after this long, doubling up to the max.
    disk_full_retry_ms_min: int = 50
    disk_full_retry_ms_max: int = 2000
    # Peer messages kept while the disk is full; beyond: the oldest dropped.
    inbox_stalled_msgs_max: int = 256


class _Abandoned(Exception):
    """The loop was stopped while a save waited for disk space."""


class Driver:
    def __init__(
        self,
        core: Raft,
        storage: NodeStorage,
        transport: Transport,
        fsm: StateMachine,
        monotonic_ms: Callable[[], int],
        rng: random.Random,
        limits: DriverLimits,
    ) -> None:
        self.core = core
        self.storage = storage
        self.transport = transport
        self.fsm = fsm
        self.limits = limits
        self._monotonic_ms = monotonic_ms
        self._inbox: deque[Message] = deque()
        self._proposals: deque[tuple[bytes, asyncio.Future[tuple[int, int]]]] = deque()
        self._reads: list[asyncio.Future[int]] = []
        self._read_waiting: dict[int, list[asyncio.Future[int]]] = {}
        # Read contexts are unique across restarts: a ReadIndexResponse that
        # answers an earlier incarnation of this node can never release a
        # read of this one (31 random bits, then a counter).
        self._read_ctx = rng.getrandbits(31) << 32
        self._wakeup = asyncio.Event()
        self._last_tick_ms = monotonic_ms()
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self.failed: BaseException | None = None
        self.soft_state = SoftState(NONE, Role.FOLLOWER)
        # The hard state last saved, and one whose only change (the commit
        # index) was not saved on its own.
        self._saved_hs: HardState | None = None
        self._unsaved_hs: HardState | None = None
        self._save_lock = asyncio.Lock()
        self.dropped_msgs = 0
        self.turns = 0
        # Set while a save waits for disk space (the loop is frozen meanwhile).
        self.disk_full: DiskFull | None = None
        self.disk_full_retries = 0  # saves retried because the disk was full
        self.disk_full_episodes = 0  # times the loop froze on a full disk
        # Called with the DiskFull when the loop freezes, None when it resumes.
        self.disk_full_listeners: list[Callable[[DiskFull | None], None]] = []
        self._retry_save = asyncio.Event()
        # The highest log index this node ever sent in an append: an entry
        # above it and above what it saved exists nowhere else.
        self.sent_index_max = 0

    # ---- inputs (any time, from any task) -----------------------------------------

    def deliver(self, message: Message) -> None:
        inbox = self._inbox
        if self.disk_full is not None:
            # Frozen: keep the newest few (a leader's latest heartbeat or
            # append is what counts when the loop resumes); Raft resends.
            if len(inbox) >= self.limits.inbox_stalled_msgs_max:
                inbox.popleft()
                self.dropped_msgs += 1
            inbox.append(message)
            return
        if len(inbox) >= self.limits.inbox_msgs_max:
            self.dropped_msgs += 1  # Raft recovers from loss; never from a stalled loop
            return
        inbox.append(message)
        self._wakeup.set()

    def propose(self, data: bytes) -> asyncio.Future[tuple[int, int]]:
        """Append ``data`` at the next turn; the future gets its (index, term),
        or NotLeader / ProposalDropped / Unavailable."""
        self._check_running()
        if len(self._proposals) >= self.limits.proposals_max:
            raise ProposalDropped("too many proposals waiting for the log")
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, future))
        self._wakeup.set()
        return future

    def read_index(self) -> asyncio.Future[int]:
        """A linearizable read: the future gets the log index the read must
        wait for (applied >= it), once the leader confirmed its leadership."""
        self._check_running()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append(future)
        self._wakeup.set()
        return future

    def _check_running(self) -> None:
        if self.disk_full is not None:
            raise self._disk_full_error()
        if self.failed is not None:
            raise Unavailable("storage failed; this node takes no writes until restarted")
        if self._stopping:
            raise Unavailable("node is shutting down")

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._schedule_tick(loop)
        try:
            while not self._stopping:
                await self._wakeup.wait()
                self._wakeup.clear()
                await self.turn()
        except _Abandoned:
            pass  # stopped while the disk was full: the Ready is dropped unsaved
        except LogLost as exc:
            self.failed = exc
            self._fail_waiting(Unavailable("this node lost entries it had acknowledged"))
        except Exception as exc:
            log.exception("the node loop failed; this node takes no writes until restarted")
            self.failed = exc
            self._fail_waiting(Unavailable("storage failed"))
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        self._retry_save.set()
        self._fail_waiting(Unavailable("node is shutting down"))

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        def fire() -> None:
            self._wakeup.set()
            self._schedule_tick(loop)

        self._timer = loop.call_later(self.limits.tick_ms / 1000, fire)

    async def turn(self) -> None:
        """One turn of the loop (tests with a manual clock call it directly)."""
        self.turns += 1
        core = self.core
        inbox = self._inbox
        while inbox:
            core.step(inbox.popleft())
        self._tick()
        self._propose()
        self._ask_reads()
        while core.has_ready():
            rd = core.ready()
            await self._handle(rd)
            core.advance(rd)
            if rd.soft_state != self.soft_state:
                self.soft_state = rd.soft_state
                self.fsm.role_changed(rd.soft_state)
            if not rd.entries and not rd.committed_entries and rd.snapshot is None:
                break  # only messages or state: the rest waits for the next turn

    def _tick(self) -> None:
        now = self._monotonic_ms()
        tick_ms = self.limits.tick_ms
        due = (now - self._last_tick_ms) // tick_ms
        if due <= 0:
            return
        self._last_tick_ms += due * tick_ms
        for _ in range(min(due, self.limits.ticks_per_turn_max)):
            self.core.tick()

    def _propose(self) -> None:
        proposals = self._proposals
        if not proposals:
            return
        core = self.core
        batch = [
            proposals.popleft() for _ in range(min(len(proposals), self.limits.proposal_batch_max))
        ]
        if len(proposals):
            self._wakeup.set()  # the rest next turn
        try:
            last = core.propose_batch([data for data, _ in batch])
        except (NotLeader, ProposalDropped) as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        term = core.term
        first = last - len(batch) + 1
        for i, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result((first + i, term))

    def _ask_reads(self) -> None:
        if not self._reads:
            return
        reads, self._reads = self._reads, []
        if len(self._read_waiting) > _READ_CTXS_KEPT_MAX:
            # Reads the leader dropped (their callers timed out) never get a
            # ReadState: forget the ones nobody waits for any more.
            for old in [c for c, fs in self._read_waiting.items() if all(f.done() for f in fs)]:
                del self._read_waiting[old]
        self._read_ctx += 1
        ctx = self._read_ctx
        try:
            self.core.read_index(ctx)
        except (NotLeader, ProposalDropped):
            for future in reads:
                if not future.done():
                    future.set_exception(
                        Unavailable("no leader is known: cannot read linearizably")
                    )
            return
        self._read_waiting[ctx] = reads

    async def _handle(self, rd: Ready) -> None:
        hs = rd.hard_state
        commit_only = hs is not None and self._commit_only(hs)
        # A leader's Ready that changes no term or vote, and whose commit index
        # covers none of its own unsaved entries, promises nothing about this
        # node's disk in its messages (appends, heartbeats): they go out now,
        # so the followers' fsyncs run while the leader's own does. A commit
        # over those entries needs their acknowledgements, stepped only after
        # this Ready is saved; the exception is a leader that is a majority
        # alone, which commits at once: then the commit must wait for the
        # disk. (tests/sim's driver does the same: the seeds check this rule.)
        leader_early = (
            rd.soft_state.role is Role.LEADER
            and rd.snapshot is None
            and (
                hs is None or (commit_only and (not rd.entries or hs.commit < rd.entries[0].index))
            )
        )
        if leader_early and rd.messages:
            self._send(rd.messages)
        # (a) durable first: one transaction, one fsync.
        if rd.snapshot is None and not rd.entries and commit_only:
            # Only the commit index moved. Raft needs it nowhere durable (a
            # restarted node learns it again from the leader), and an fsync
            # for it alone put a second fsync on every write's path. It goes
            # out with the next save.
            self._unsaved_hs = hs
        elif hs is not None or rd.snapshot is not None or rd.entries:
            await self._save(hs, rd.snapshot, rd.entries)
            if hs is not None:
                self._saved_hs = hs
        # (b) then tell the peers.
        if rd.messages and not leader_early:
            self._send(rd.messages)
        # (c) then apply, in log order, and release the reads.
        if rd.snapshot is not None:
            await self.fsm.restore(rd.snapshot)
        if rd.committed_entries:
            self.fsm.apply(rd.committed_entries)
        for rs in rd.read_states:
            futures = self._read_waiting.pop(rs.ctx, None)
            if futures is None:
                continue  # not ours (an earlier incarnation's, or already failed)
            for future in futures:
                if not future.done():
                    future.set_result(rs.index)
        if self._read_waiting and rd.soft_state.leader != self.soft_state.leader:
            # Leadership changed: the core drops pending reads (never answers
            # them wrongly), so their callers would wait out their timeout.
            self._fail_reads(Unavailable("leadership changed during a linearizable read"))

    def _send(self, messages: list[Message]) -> None:
        for m in messages:
            if isinstance(m, AppendEntries) and m.entries:
                self.sent_index_max = max(self.sent_index_max, m.entries[-1].index)
        self.transport.send(messages)

    async def _save(
        self, hs: HardState | None, snapshot: Snapshot | None, entries: list[Entry]
    ) -> None:
        """Save one Ready; on a full disk, wait and retry the same save until
        it succeeds (nothing was written, so the same Ready is still right)."""
        retry_ms = self.limits.disk_full_retry_ms_min
        while True:
            async with self._save_lock:
                pending = self._unsaved_hs
                try:
                    await self.storage.save(hs or pending, snapshot, entries)
                except DiskFull as exc:
                    full = exc
                else:
                    if self._unsaved_hs is pending:
                        self._unsaved_hs = None
                    break
            if self.disk_full is None:
                self._freeze(full)
            if self._stopping:
                raise _Abandoned  # stop() came during the attempt
            # Woken early by stop() or retry_save_now() (tests, operators).
            self._retry_save.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_save.wait(), retry_ms / 1000)
            if self._stopping:
                raise _Abandoned
            self.disk_full_retries += 1
            retry_ms = min(2 * retry_ms, self.limits.disk_full_retry_ms_max)
        if self.disk_full is not None:
            self._thaw()

    def _freeze(self, exc: DiskFull) -> None:
        log.error(
            "%s; retrying the save every %d ms at most, reads go on",
            exc.detail,
            self.limits.disk_full_retry_ms_max,
        )
        self.disk_full = exc
        self.disk_full_episodes += 1
        inbox = self._inbox
        while len(inbox) > self.limits.inbox_stalled_msgs_max:
            inbox.popleft()
            self.dropped_msgs += 1
        # Nothing of these reached the core: refusing them is the truth.
        self._fail_waiting(self._disk_full_error())
        for listener in self.disk_full_listeners:
            listener(exc)

    def _thaw(self) -> None:
        log.warning(
            "the data dir has space again: saved after %d retries, the loop resumes",
            self.disk_full_retries,
        )
        self.disk_full = None
        # The time spent frozen is not time the core waited for a leader:
        # ticking it all now would start an election before the inbox (the
        # leader's newest messages) has been stepped.
        self._last_tick_ms = self._monotonic_ms()
        self._wakeup.set()  # step what the inbox gathered
        for listener in self.disk_full_listeners:
            listener(None)

    def retry_save_now(self) -> None:
        """Retry a save waiting for disk space without waiting its backoff."""
        self._retry_save.set()

    def _disk_full_error(self) -> DiskFull:
        # A fresh exception per refusal: one raised many times would keep
        # growing its traceback.
        exc = self.disk_full
        assert exc is not None
        return DiskFull(exc.detail, **exc.extra)

    def _commit_only(self, hs: HardState) -> bool:
        saved = self._saved_hs
        return saved is not None and hs.term == saved.term and hs.vote == saved.vote

    async def save_commit(self) -> None:
        """Make the newest commit index durable (before a snapshot at an
        index only that commit covers). Saves through the same storage,
        whose writes are ordered, so it never lands after a newer state."""
        async with self._save_lock:  # saves in the order they were decided
            hs = self._unsaved_hs
            if hs is not None:
                # Kept until saved: a save that fails (a full disk) leaves
                # it for the next one.
                await self.storage.save(hs, None, [])
                if self._unsaved_hs is hs:
                    self._unsaved_hs = None

    def _fail_reads(self, exc: Exception) -> None:
        waiting, self._read_waiting = self._read_waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    def _fail_waiting(self, exc: Exception) -> None:
        while self._proposals:
            _, proposed = self._proposals.popleft()
            if not proposed.done():
                proposed.set_exception(exc)
        for read in self._reads:
            if not read.done():
                read.set_exception(exc)
        self._reads = []
        self._fail_reads(exc)

    # ---- queries ------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._proposals)

    @property
    def inbox_count(self) -> int:
        return len(self._inbox)

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def leader(self) -> int:
        return self.core.lead

    def has_live_leader(self) -> bool:
        """This node is the leader, or heard from one within an election timeout."""
        if self.disk_full is not None:
            # Frozen: its role and election clock stand still, and it can
            # neither lead nor follow. Clients are sent elsewhere.
            return False
        core = self.core
        if core.role is Role.LEADER:
            return True
        return core.lead != NONE and core.election_elapsed < core.cfg.election_timeout_ticks
