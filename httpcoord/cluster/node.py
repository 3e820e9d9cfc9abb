"""One member of the cluster: the write path, the read API and sessions.

A ``Node`` owns the consensus core and the ``Driver`` loop around it, the
SQLite storage, the peer transport and the znode ``Tree`` it applies the
committed log to. A cluster of one is the same code with one voter: there is
one write path.

Writes: ``propose(ops)`` on the leader stamps the txn with
max(previous stamp, wall clock) (so ctime, mtime and TTL reaping are
monotonic and identical on every replica) and hands it to the driver; on a
follower it is forwarded to the leader in one hop (``/peer/v1/propose``,
batched: see ``forward``), which answers with the (index, term) the entry got. Either way the caller
then waits until THIS node has applied that index: the answer is this node's
own apply result, so a client reads its own write on the node it talks to.
Another entry at that index means the write was not committed (503
``Unavailable``, safe to retry); a lost leader or a timeout before the
outcome is known is 503 ``OutcomeUnknown``.

Reads come from the local tree (sequentially consistent, as in ZooKeeper);
``barrier(linearizable, min_zxid)`` is the one place that waits for a
ReadIndex or for a zxid to be applied.

Sessions: any node takes heartbeats; followers pass the sessions they saw
alive to the leader in batches every ``session_ping_ms`` (as ZooKeeper's
learners do with pings). Only the leader expires sessions, and a new leader
starts expiring only once its own no-op is committed and applied (so it has
applied everything committed before it), giving every session its full ttl
from that moment: a leader change alone never ends a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import heapq
import itertools
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from httpcoord.cluster.driver import Driver, DriverLimits, Transport
from httpcoord.cluster.forward import Forwarder, ForwardLimits, encode_answers
from httpcoord.cluster.node_storage import NodeStorage, decode_descriptor
from httpcoord.cluster.raft.core import Config as RaftConfig
from httpcoord.cluster.raft.core import (
    LogLost,
    NotLeader,
    ProposalDropped,
    Raft,
    Role,
    SoftState,
)
from httpcoord.cluster.raft.messages import (
    NONE,
    Entry,
    EntryKind,
    Message,
    Snapshot,
    SnapshotMeta,
)
from httpcoord.cluster.raft.storage import CompactedError
from httpcoord.cluster.sessions import SessionTracker
from httpcoord.cluster.sqlite_storage import SqliteStorage
from httpcoord.cluster.transport import PeerError, PeerUnavailable
from httpcoord.errors import (
    BadArguments,
    CoordError,
    DiskFull,
    OutcomeUnknown,
    SessionExpired,
    TooManyRequests,
    Unavailable,
    ZxidNotReached,
)
from httpcoord.logs import REQUEST_ID
from httpcoord.tree.collector import FreezeOnGrowth
from httpcoord.tree.tree import Event, Session, Tree, TreeView, TxnResult
from httpcoord.tree.tree import Node as Znode
from httpcoord.tree.txn import (
    CloseSessionOp,
    Op,
    OpenSessionOp,
    ReapOp,
    Txn,
    TxnDecodeError,
    decode_txn,
    encode_txn,
)
from httpcoord.watch.history import History

log = logging.getLogger(__name__)

# Routes of the peer listener the node serves itself (the transport adds its own).
TOUCH_PATH = "/peer/v1/sessions/touch"
STATUS_PATH = "/peer/v1/status"


@dataclass(frozen=True, slots=True)
class NodeLimits:
    pending_proposals_max: int = 20_000  # writes waiting for the log; beyond: 429
    pending_bytes_max: int = 256 * 1024 * 1024  # ... and their encoded bytes
    # Snapshot after this many ops applied since the last one (a multi counts
    # each of its ops: a restart replays ops, not entries) ...
    snapshot_entries: int = 100_000
    snapshot_log_bytes: int = 64 * 1024 * 1024  # ... or this many log bytes
    session_check_ms: int = 100  # how often deadlines are checked: expiry lateness
    session_ping_ms: int = 500  # how often a follower passes heartbeats to the leader
    container_check_ms: int = 5000  # how often containers and TTL nodes are reaped
    expire_batch_max: int = 1000  # sessions expired per check
    reap_batch_max: int = 1000  # nodes reaped per check
    watch_history_events: int = 100_000  # events kept for watchers resuming by zxid
    watch_history_bytes: int = 64 * 1024 * 1024  # ... and their approximate bytes
    request_timeout_ms: int = 5000  # a write or a barrier waits at most this long
    recent_outcomes_max: int = 65_536  # applied entries whose outcome a forwarder may ask
    ready_lag_entries_max: int = 1000  # /ready: committed entries not yet applied here
    # Once the tree has grown by this many znodes, everything alive is moved
    # out of the cyclic collector's way (gc.freeze): each znode is an object
    # the collector would otherwise scan again in every older-generation
    # pass (283 ms pauses while a million were created; 33 ms with a freeze
    # every 50,000). A million znodes take 50 freezes, so the cycles that
    # were alive at one and die later (never collected) stay few.
    gc_freeze_growth_znodes: int = 20_000


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Who this node is and who its peers are. ``peers`` maps every founding
    member's id (this one included) to its peer address; a cluster of one
    has no peers to reach."""

    node_id: int = 1
    peers: dict[int, str] = field(default_factory=lambda: {1: ""})
    cluster_token: str = "httpcoord"
    client_url: str = ""  # how clients reach this node (shown in /v1/cluster)
    # 30 ms x 10: a dead leader is replaced in about 0.3-0.7 s (ZooKeeper's
    # measured failover here is 0.4-0.6 s), and heartbeats still come ten
    # times per election timeout.
    tick_ms: int = 30
    election_ticks: int = 10  # an election timeout is [this, 2 x this) ticks
    heartbeat_ticks: int = 1

    @property
    def cluster_id(self) -> str:
        """Fixed when the cluster is first formed: the same on every founder
        (a hash of the token and the founding members' ids, not their
        addresses, so a member may move), stored in each data dir and checked
        on every peer request. The token keeps apart clusters with the same
        ids (``--cluster-token``, like etcd's initial cluster token)."""
        founders = ",".join(str(i) for i in sorted(self.peers))
        digest = hashlib.sha256(f"{self.cluster_token}\n{founders}".encode()).hexdigest()
        return digest[:16]


Outcome = TxnResult | CoordError | None  # None: a no-op or membership entry


class Waiters:
    """Futures waiting for a counter (applied index or zxid) to reach a value."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def wait(self, value: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (value, next(self._seq), future))
        return future

    def release(self, reached: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= reached:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        for _, _, future in self._heap:
            if not future.done():
                future.set_exception(exc)
        self._heap = []


class SnapshotIO:
    """The transport's view of the storage's snapshots."""

    def __init__(self, storage: NodeStorage) -> None:
        self._storage = storage

    def read(self, snapshot: Snapshot) -> AsyncIterator[bytes]:
        return self._storage.snapshot_chunks(snapshot)

    async def stage(
        self, meta: SnapshotMeta, descriptor: bytes, chunks: AsyncIterator[bytes]
    ) -> Snapshot:
        return await self._storage.stage_snapshot(meta, descriptor, chunks)


TransportFactory = Callable[["Node"], Transport]
EventListener = Callable[[int, list[Event]], None]


def publish(listeners: list[EventListener], zxid: int, events: list[Event]) -> None:
    """Hand an applied txn's events to each listener (the watch hub). The
    txn is durable and applied: a listener's bug must not stop the loop."""
    for listener in listeners:
        try:
            listener(zxid, events)
        except Exception:
            log.exception("event listener failed at zxid %d", zxid)


class Node:
    worker_id = 0  # the node's own process, not one of its read workers
    # The loop around the core: a class attribute so that a test can plant a
    # wrong driver in a subclass (tests/sim/node_bugs.py).
    driver_cls: type[Driver] = Driver

    def __init__(
        self,
        cluster: ClusterConfig,
        storage: NodeStorage,
        tree: Tree,
        limits: NodeLimits,
        driver_limits: DriverLimits,
        lock_fd: int | None,
        wall_ms: Callable[[], int],
        monotonic_ms: Callable[[], int],
        rng: random.Random,
    ) -> None:
        self.cluster = cluster
        self.node_id = cluster.node_id
        self.storage = storage
        self.limits = limits
        self._tree = tree
        self._lock_fd = lock_fd
        self._wall_ms = wall_ms
        self._monotonic_ms = monotonic_ms
        self._rng = rng
        snap = storage.snapshot()
        self.applied_index = snap.meta.index
        self._snapshot_index = snap.meta.index
        self._log_bytes_since_snapshot = 0
        self._ops_since_snapshot = 0
        self._freezer = FreezeOnGrowth(limits.gc_freeze_growth_znodes, len(tree))
        self._snapshot_retry_index = 0  # a snapshot that found the disk full: not before
        self.history = History(limits.watch_history_events, limits.watch_history_bytes, tree.zxid)
        core = Raft(
            RaftConfig(
                cluster.node_id,
                election_timeout_ticks=cluster.election_ticks,
                heartbeat_ticks=cluster.heartbeat_ticks,
            ),
            storage,
            rng,
        )
        self.transport: Transport = _NoPeers()
        self.driver = self.driver_cls(
            core, storage, self.transport, self, monotonic_ms, rng, driver_limits
        )
        self.forwarder = Forwarder(
            lambda: self.transport, ForwardLimits(), limits.request_timeout_ms
        )
        # The newest txn time seen: stamps never go back. Txns a snapshot
        # covers are gone from the log; the tree's own times stand for them.
        self._stamp_ms = tree.newest_time_ms()
        self._stamp_floor_term = 0  # the term whose log the floor was raised from
        self._index_waiters: dict[int, list[tuple[int, asyncio.Future[Outcome]]]] = {}
        self._recent: deque[tuple[int, int, Outcome]] = deque(maxlen=limits.recent_outcomes_max)
        self._applied_waiters = Waiters()
        self._zxid_waiters = Waiters()
        self._pending_bytes = 0
        # Txns this node encoded as leader, by their encoding: applied
        # without decoding them again. Same bytes, same txn, so a hit is
        # always right; entries never applied here (leadership lost) are
        # dropped when it outgrows the proposal queue.
        self._proposed: dict[bytes, Txn] = {}
        self.sessions = SessionTracker()
        self._sessions_active = False  # this node is the leader and may expire
        self._touched: set[str] = set()  # follower: sessions seen alive since the last ping
        self._touched_since_ms: int | None = None  # when the oldest of them was taken
        self._snapshot_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self.listeners: list[EventListener] = []
        self.session_closed_listeners: list[Callable[[str], None]] = []
        # Called with the new zxid when a snapshot from the leader replaced the
        # tree: watchers cannot be given the events in between.
        self.reset_listeners: list[Callable[[int], None]] = []
        # Called with the reason when this node must stop serving for good
        # (it lost entries it had acknowledged): the server exits non-zero.
        self.fatal_listeners: list[Callable[[str], None]] = []
        # Called with each committed txn's bytes, in log order, as it is
        # applied (failed ones too): the read workers' feed (httpcoord.workers).
        self.txn_taps: list[Callable[[bytes], None]] = []
        self.snapshots_taken = 0
        self.snapshots_installed = 0  # received from the leader
        self.leader_changes = 0  # times this node learned of a new leader
        self._known_leader = NONE
        self.forwarded_received = 0  # writes other members forwarded here (leader)

    # ---- lifecycle ------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        cluster: ClusterConfig | None = None,
        limits: NodeLimits | None = None,
        driver_limits: DriverLimits | None = None,
        transport_factory: TransportFactory | None = None,
        storage: NodeStorage | None = None,
        wall_ms: Callable[[], int] | None = None,
        monotonic_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> Node:
        """Open the data dir (exclusively) and rebuild the tree from the
        snapshot plus the committed log. ``storage`` (tests) replaces SQLite."""
        cluster = cluster or ClusterConfig()
        limits = limits or NodeLimits()
        driver_limits = driver_limits or DriverLimits(tick_ms=cluster.tick_ms)
        lock_fd: int | None = None
        if storage is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock_data_dir(data_dir)
            try:
                storage = await SqliteStorage.open(
                    data_dir, cluster.node_id, cluster.cluster_id, sorted(cluster.peers)
                )
            except BaseException:
                os.close(lock_fd)
                raise
        try:
            tree = await _tree_at_snapshot(storage)
            node = cls(
                cluster,
                storage,
                tree,
                limits,
                driver_limits,
                lock_fd,
                wall_ms or (lambda: time.time_ns() // 1_000_000),
                monotonic_ms or (lambda: time.monotonic_ns() // 1_000_000),
                rng or random.Random(),
            )
            if transport_factory is not None:
                node.transport = node.driver.transport = transport_factory(node)
            await node._replay()
        except BaseException:
            await storage.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return node

    async def _replay(self) -> None:
        """Apply the committed log before serving anything: the node answers
        its first read with everything it had acknowledged before a restart."""
        core = self.driver.core
        target = core.committed
        while self.applied_index < target:
            before = self.applied_index
            await self.driver.turn()
            if self.applied_index == before:
                break  # nothing more the core will hand out without peers
        if core.conf.voters == {self.node_id}:
            # The only voter needs nobody's vote: elect it now rather than
            # after an election timeout, so a cluster of one takes writes
            # the moment it listens. (Ticks are the core's only clock.)
            for _ in range(2 * self.cluster.election_ticks):
                if core.role is Role.LEADER:
                    break
                core.tick()
            await self.driver.turn()

    def start(self, maintenance: bool = True) -> None:
        """Start the loop and, unless a test drives them by hand with its own
        clock, session expiry, reaping and the follower's heartbeat pings."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run_driver(), name="node-loop"))
        if maintenance:
            self._tasks.append(loop.create_task(self._maintenance_loop(), name="maintenance"))
            self._tasks.append(loop.create_task(self._ping_loop(), name="session-pings"))

    async def _run_driver(self) -> None:
        self.driver.disk_full_listeners.append(self._disk_full_changed)
        await self.driver.run()
        failed = self.driver.failed
        if isinstance(failed, LogLost):
            self._fail_all(Unavailable("this node lost entries it had acknowledged"))
            message = (
                f"node {self.node_id}: {failed}. Its data dir is older than what it "
                "acknowledged (restored from a copy or a backup, or a disk that lost "
                "fsynced writes), so its log and its vote can no longer be trusted: it "
                "stops. Treat it as a lost data dir (docs/operations.md)."
            )
            log.critical("%s", message)
            for listener in self.fatal_listeners:
                listener(message)
        elif failed is not None:
            self._fail_all(Unavailable("storage failed"))

    def _disk_full_changed(self, exc: DiskFull | None) -> None:
        """The loop froze on a full disk (exc) or resumed (None). Frozen, it
        applies nothing: writes and linearizable reads waiting here would wait
        out their timeout, so they are answered now."""
        if exc is not None:
            self._fail_all(exc, frozen=True)

    async def close(self) -> None:
        """Let the turn in flight finish (its fsync is never cut short), refuse
        what is still waiting, close storage and release the data dir."""
        self._closing = True
        self.driver.stop()
        try:
            for task in self._tasks[1:]:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._snapshot_task is not None:
                await asyncio.wait([self._snapshot_task])
            self._fail_all(Unavailable("node is shutting down"))
            closer = getattr(self.transport, "close", None)
            if closer is not None:
                await closer()
            await self.storage.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _fail_all(self, exc: CoordError, frozen: bool = False) -> None:
        """Answer every waiter with exc. ``frozen``: the loop waits for disk
        space and will resume, so a write waiting for its apply may yet be
        applied (its entry is in the Ready being retried), and waiters for
        a zxid keep waiting (until their own timeout)."""
        # A write waiting for its apply has an index: the leader logged it and
        # may well commit it, so "retry is safe" would be a lie. Unless this
        # node stopped for good, leads in that write's term and the entry is
        # neither saved nor sent: a leader sends its appends while its own
        # fsync runs (see the driver), so "not saved" alone would not do.
        unknown = OutcomeUnknown(f"{exc.detail}; the write may or may not have been applied")
        driver = self.driver
        core = driver.core
        may_exist_upto = max(self.storage.last_index(), driver.sent_index_max)
        waiters, self._index_waiters = self._index_waiters, {}
        for index, entries in waiters.items():
            for term, future in entries:
                if future.done():
                    continue
                never_sent = (
                    not frozen
                    and core.role is Role.LEADER
                    and term == core.term
                    and index > may_exist_upto
                )
                future.set_exception(exc if never_sent else unknown)
        self._applied_waiters.fail(exc)
        if not frozen:
            self._zxid_waiters.fail(exc)

    @property
    def healthy(self) -> bool:
        """The loop runs and storage works (a full disk is not a failure: the
        loop waits for space and resumes by itself; see ``ready``)."""
        return self.driver.failed is None and not self._closing and bool(self._tasks)

    @property
    def ready(self) -> bool:
        """Healthy, with a live leader, and caught up with what is committed
        (within a bound: under load a follower is always a few entries behind,
        and readiness must not flap with every batch)."""
        return self.not_ready_reason is None

    @property
    def not_ready_reason(self) -> str | None:
        """Why ``ready`` is false (for /ready), or None when it is true."""
        driver = self.driver
        if driver.disk_full is not None:
            return driver.disk_full.detail
        if not self.healthy:
            return "not running, or its storage failed: restart it"
        if not driver.has_live_leader():
            return "no live leader known (cut off from the majority, or an election)"
        lag = driver.core.committed - self.applied_index
        if lag > self.limits.ready_lag_entries_max:
            return f"{lag} committed entries not yet applied here"
        return None

    # ---- the write path ----------------------------------------------------------------

    async def propose(self, ops: tuple[Op, ...], multi: bool = False) -> TxnResult:
        """Make ``ops`` durable on a majority and applied here; return the
        result or raise its error."""
        driver = self.driver
        if driver.disk_full is not None:
            # Even a write forwarded to the leader is answered only once this
            # node applied it, which it cannot while it cannot save.
            raise DiskFull(driver.disk_full.detail, **driver.disk_full.extra)
        if not self.healthy:
            raise Unavailable("this node is not running or its storage failed")
        deadline = self._monotonic_ms() + self.limits.request_timeout_ms
        if driver.is_leader:
            index, term = await self._propose_here(Txn(ops, 0, multi))
        elif driver.leader == NONE or not driver.has_live_leader():
            raise Unavailable("no leader is known: this node cannot reach a majority")
        else:
            index, term = await self.forwarder.forward(
                driver.leader, encode_txn(Txn(ops, 0, multi)), REQUEST_ID.get()
            )
        outcome = await self._outcome(index, term, deadline)
        if isinstance(outcome, CoordError):
            raise outcome
        if outcome is None:
            raise OutcomeUnknown("the entry at the write's index is not a txn")
        return outcome

    async def _propose_here(self, txn: Txn) -> tuple[int, int]:
        """Leader: stamp, encode, queue for the next turn; (index, term)."""
        return await self._placed(self._place(txn))

    def _place(self, txn: Txn) -> asyncio.Future[tuple[int, int]]:
        """Leader: stamp and encode ``txn`` and queue it for the next turn;
        the future gets its (index, term)."""
        core = self.driver.core
        if self._stamp_floor_term != core.term:
            # The first write of this leadership: start above every txn the
            # log holds (the previous leader's may not be applied yet).
            self._stamp_floor_term = core.term
            self._stamp_ms = max(self._stamp_ms, self._newest_stamp_in_log())
        stamp = max(self._stamp_ms, self._wall_ms())
        self._stamp_ms = stamp
        stamped = Txn(txn.ops, stamp, txn.multi)
        data = encode_txn(stamped)
        size = len(data)
        if self._pending_bytes and self._pending_bytes + size > self.limits.pending_bytes_max:
            raise TooManyRequests("too many bytes of writes in flight; retry later")
        try:
            future = self.driver.propose(data)
        except ProposalDropped as exc:
            raise TooManyRequests(f"too many writes in flight; retry later ({exc})") from None
        self._pending_bytes += size
        future.add_done_callback(lambda _: self._unpend(size))
        proposed = self._proposed
        if len(proposed) >= self.driver.limits.proposals_max:
            proposed.clear()
        proposed[data] = stamped
        return future

    def _unpend(self, size: int) -> None:
        self._pending_bytes -= size

    @staticmethod
    async def _placed(future: asyncio.Future[tuple[int, int]]) -> tuple[int, int]:
        try:
            return await future
        except NotLeader:
            raise Unavailable("leadership changed before the write was logged") from None
        except ProposalDropped as exc:
            raise Unavailable(f"the leader refused the write for now: {exc}") from None

    async def _outcome(self, index: int, term: int, deadline_ms: int) -> Outcome:
        """Wait until this node has applied ``index``; the outcome of the entry
        there if it is ours (its term), else a refusal."""
        if index <= self.applied_index:
            return self._recent_outcome(index, term)
        if not self.healthy:
            raise OutcomeUnknown("this node stopped before it could apply the write")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._index_waiters.setdefault(index, []).append((term, future))
        timeout_s = max(0, deadline_ms - self._monotonic_ms()) / 1000
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(
                "the write was logged by the leader but not known to be committed in time"
            ) from None

    def _recent_outcome(self, index: int, term: int) -> Outcome:
        recent = self._recent
        if not recent or index < recent[0][0]:
            raise OutcomeUnknown("the write's outcome is no longer remembered")
        got_index, got_term, outcome = recent[index - recent[0][0]]
        assert got_index == index
        if got_term != term:
            raise _not_committed()
        return outcome

    # ---- the state machine the driver applies to ---------------------------------------

    def apply(self, entries: list[Entry]) -> None:
        tree = self._tree
        history = self.history
        for e in entries:
            assert e.index == self.applied_index + 1, "entries applied out of order"
            self.applied_index = e.index
            self._log_bytes_since_snapshot += len(e.data)
            outcome: Outcome = None
            events: list[Event] = []
            if e.kind != EntryKind.NORMAL:
                self._ops_since_snapshot += 1
            else:
                txn = self._proposed.pop(e.data, None) or decode_txn(e.data)
                self._ops_since_snapshot += len(txn.ops)
                self._stamp_ms = max(self._stamp_ms, txn.time_ms)
                try:
                    result, events = tree.apply(txn)
                except CoordError as exc:
                    outcome = exc
                else:
                    outcome = result
                    self._track_sessions(txn)
                    history.append(result.zxid, events)
                for tap in self.txn_taps:
                    tap(e.data)
            self._recent.append((e.index, e.term, outcome))
            waiting = self._index_waiters.pop(e.index, None)
            if waiting:
                # Answer the writers first: their replies are scheduled ahead
                # of the watchers woken below.
                for term, future in waiting:
                    if future.done():
                        continue
                    if term != e.term:
                        future.set_exception(_not_committed())
                    elif isinstance(outcome, CoordError):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            if isinstance(outcome, TxnResult):
                publish(self.listeners, outcome.zxid, events)
        self._applied_waiters.release(self.applied_index)
        self._zxid_waiters.release(tree.zxid)
        self._maybe_activate_sessions()
        self._freezer.grown_to(len(tree))
        if self._snapshot_due() and self._snapshot_task is None:
            self._start_snapshot()

    async def restore(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaced the log: replace the tree."""
        tree = await _tree_from(self.storage, snapshot)
        before = set(self._tree.sessions)
        self._tree = tree
        self.applied_index = snapshot.meta.index
        self._snapshot_index = snapshot.meta.index
        self._log_bytes_since_snapshot = 0
        self._ops_since_snapshot = 0
        # The new tree is frozen at the next apply.
        self._freezer = FreezeOnGrowth(self.limits.gc_freeze_growth_znodes, 0)
        self._recent.clear()
        self._stamp_ms = max(self._stamp_ms, tree.newest_time_ms())
        self.snapshots_installed += 1
        self.history.reset(tree.zxid)
        # Writes waiting at indexes the snapshot covers may or may not be in it.
        for index in [i for i in self._index_waiters if i <= snapshot.meta.index]:
            for _, future in self._index_waiters.pop(index):
                if not future.done():
                    future.set_exception(
                        OutcomeUnknown("a snapshot from the leader replaced the log")
                    )
        for listener in self.reset_listeners:
            listener(tree.zxid)
        for session_id in before - set(tree.sessions):
            for closed in self.session_closed_listeners:
                closed(session_id)
        self._applied_waiters.release(self.applied_index)
        self._zxid_waiters.release(tree.zxid)

    def role_changed(self, soft_state: SoftState) -> None:
        if soft_state.leader not in (NONE, self._known_leader):
            self.leader_changes += 1
        if soft_state.leader != NONE:
            self._known_leader = soft_state.leader
        if soft_state.role is not Role.LEADER:
            self._sessions_active = False
            self.sessions = SessionTracker()
            self._proposed.clear()
        self._maybe_activate_sessions()

    def _newest_stamp_in_log(self) -> int:
        core = self.driver.core
        newest = 0
        lo, last = self.applied_index + 1, core.log.last_index()
        while lo <= last:
            chunk = core.log.entries(lo, last + 1, 16 << 20)
            for e in chunk:
                if e.kind == EntryKind.NORMAL:
                    with contextlib.suppress(TxnDecodeError):
                        newest = max(newest, decode_txn(e.data).time_ms)
            lo = chunk[-1].index + 1
        return newest

    # ---- sessions -----------------------------------------------------------------------

    def _track_sessions(self, txn: Txn) -> None:
        for op in txn.ops:
            if isinstance(op, OpenSessionOp):
                if self._sessions_active:
                    self.sessions.open(op.session_id, op.ttl_ms, self._monotonic_ms())
            elif isinstance(op, CloseSessionOp):
                self.sessions.forget(op.session_id)
                self._touched.discard(op.session_id)
                for listener in self.session_closed_listeners:
                    listener(op.session_id)

    def _maybe_activate_sessions(self) -> None:
        """A new leader becomes the expiry authority once its own no-op is
        committed and applied: it then holds every session that exists, and
        each gets its full ttl from now."""
        if self._sessions_active or not self.driver.is_leader:
            return
        core = self.driver.core
        if core.log.term(core.committed) != core.term or self.applied_index < core.committed:
            return
        tracker = SessionTracker()
        now = self._monotonic_ms()
        for session in self._tree.sessions.values():
            tracker.open(session.id, session.ttl_ms, now)
        self.sessions = tracker
        self._sessions_active = True

    def heartbeat(self, session_id: str) -> int:
        """Keep a session alive; returns its ttl. No log entry: cheap."""
        session = self._tree.sessions.get(session_id)
        if session is None:
            raise SessionExpired(session=session_id)
        if self.driver.disk_full is not None:
            # Frozen, a leader neither steps down nor sees the closes a next
            # leader commits: its word on a session means nothing.
            raise Unavailable("this node's disk is full: heartbeat another node")
        if self._sessions_active:
            if not self.sessions.touch(session_id, self._monotonic_ms()):
                raise SessionExpired(session=session_id)
        elif not self.driver.has_live_leader():
            # A follower cut off from the leader cannot keep a session alive:
            # tell the client to move to another node.
            raise Unavailable("no leader is known: heartbeat another node")
        elif not self.driver.is_leader:
            now = self._monotonic_ms()
            if not self._touched or self._touched_since_ms is None:
                self._touched_since_ms = now
            elif now - self._touched_since_ms > 2 * self.limits.session_ping_ms:
                # The leader is heard but does not hear us (a one-way cut):
                # heartbeats taken here stop reaching it. Say so, rather than
                # acknowledge heartbeats that keep nothing alive.
                raise Unavailable(
                    "heartbeats taken here do not reach the leader: heartbeat another node"
                )
            self._touched.add(session_id)
        return session.ttl_ms

    def session_expires_in_ms(self, session_id: str) -> int | None:
        """Known on the leader only (the expiry authority)."""
        if not self._sessions_active:
            return None
        return self.sessions.remaining_ms(session_id, self._monotonic_ms())

    async def expire_sessions(self) -> list[str]:
        """Leader: close, each in its own txn, every session past its deadline."""
        if not self._sessions_active:
            return []
        due = self.sessions.due(self._monotonic_ms(), self.limits.expire_batch_max)
        outcomes = await asyncio.gather(
            *(self.propose((CloseSessionOp(sid, expired=True),)) for sid in due),
            return_exceptions=True,
        )
        for sid, outcome in zip(due, outcomes, strict=True):
            # Already closed: nothing to do. Unavailable / OutcomeUnknown:
            # leadership or storage is going; a next leader decides afresh.
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, SessionExpired | Unavailable | OutcomeUnknown
            ):
                log.warning("expiring session %s failed: %r; will retry", sid, outcome)
                self.sessions.retry(sid, self._monotonic_ms())
        return due

    async def reap(self) -> list[str]:
        """Leader: remove containers emptied of their children and expired TTL nodes."""
        if not self.driver.is_leader:
            return []
        due = self._tree.reap_candidates(self._wall_ms(), self.limits.reap_batch_max)
        outcomes = await asyncio.gather(
            *(self.propose((ReapOp(path, czxid),)) for path, czxid in due),
            return_exceptions=True,
        )
        # A refusal means the node changed since it was seen: nothing to do.
        return [
            p for (p, _), o in zip(due, outcomes, strict=True) if not isinstance(o, BaseException)
        ]

    async def _maintenance_loop(self) -> None:
        check_s = self.limits.session_check_ms / 1000
        next_reap = self._monotonic_ms() + self.limits.container_check_ms
        while True:
            await asyncio.sleep(check_s)
            try:
                await self.expire_sessions()
                if self._monotonic_ms() >= next_reap:
                    next_reap = self._monotonic_ms() + self.limits.container_check_ms
                    await self.reap()
            except (Unavailable, OutcomeUnknown):
                pass  # leadership or storage is going: a next turn decides afresh

    async def ping_leader(self) -> None:
        """Follower: pass the sessions seen alive since the last ping to the leader."""
        if not self._touched or self.driver.is_leader or self.driver.leader == NONE:
            return
        touched, self._touched = self._touched, set()
        since, self._touched_since_ms = self._touched_since_ms, None
        body = orjson.dumps(sorted(touched))
        try:
            await self.transport.call(
                self.driver.leader, TOUCH_PATH, body, self.limits.session_ping_ms
            )
        except (PeerError, CoordError) as exc:
            # Keep them for the next ping (to this leader or the next one),
            # and how long they have waited.
            self._touched |= touched
            self._touched_since_ms = since  # older than any taken meanwhile
            log.debug("session ping to node %d failed: %r", self.driver.leader, exc)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.session_ping_ms / 1000)
            await self.ping_leader()

    # ---- peer RPCs (served on the peer listener) ----------------------------------------

    async def handle_propose(
        self, body: bytes, sender: int = 0, request_ids: Sequence[str] = ()
    ) -> bytes:
        """A follower forwards a batch of writes (newline-separated txns): log
        them, answer each one's (index, term) or refusal, in order.
        ``request_ids``: the requests they came in, for the log lines."""
        if not self.driver.is_leader:
            raise Unavailable(f"not the leader (leader: {self.driver.leader})")
        if self.driver.disk_full is not None:
            # Not the forwarder's disk: to its client this is a leader that
            # cannot take writes now (the others elect another).
            raise Unavailable(f"the leader, node {self.node_id}, cannot save: its disk is full")
        txns = []
        for line in body.split(b"\n"):
            try:
                txns.append(decode_txn(line))
            except TxnDecodeError as exc:
                raise BadArguments(f"malformed forwarded txn: {exc}") from None
        self.forwarded_received += len(txns)
        log.debug(
            "%d writes forwarded by node %d: requests %s",
            len(txns),
            sender,
            ",".join(request_ids) or "-",
        )
        # Every txn is queued before the first wait: one turn logs them all.
        placed: list[asyncio.Future[tuple[int, int]] | CoordError] = []
        for txn in txns:
            try:
                placed.append(self._place(txn))
            except CoordError as exc:
                placed.append(exc)
        answers: list[tuple[int, int] | CoordError] = []
        for p in placed:
            try:
                answers.append(p if isinstance(p, CoordError) else await self._placed(p))
            except CoordError as exc:
                answers.append(exc)
        return encode_answers(answers)

    def handle_touch(self, body: bytes) -> bytes:
        """Sessions a follower saw alive: touch them here (the leader)."""
        try:
            ids = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadArguments("expected a JSON list of session ids") from None
        if type(ids) is not list or not all(type(i) is str for i in ids):
            raise BadArguments("expected a JSON list of session ids")
        if not self._sessions_active:
            # Not (yet, or any more) the expiry authority: the follower keeps
            # them for the next ping, to whoever is.
            raise Unavailable("not the session authority: ping the leader")
        now = self._monotonic_ms()
        unknown = [sid for sid in ids if not self.sessions.touch(sid, now)]
        return orjson.dumps({"unknown": unknown})

    def handle_status(self) -> bytes:
        return orjson.dumps(self.status())

    # ---- the read API ----------------------------------------------------------------------

    @property
    def zxid(self) -> int:
        return self._tree.zxid

    def get(self, path: str) -> Znode:
        return self._tree.get(path)

    def exists(self, path: str) -> bool:
        return self._tree.exists(path)

    def tree_view(self) -> TreeView:
        """The tree as it is now, unchanged by later applies (copy-on-write)."""
        return self._tree.view()

    def session(self, session_id: str) -> Session | None:
        return self._tree.sessions.get(session_id)

    def all_sessions(self) -> Iterable[Session]:
        return self._tree.sessions.values()

    @property
    def data_bytes(self) -> int:
        return self._tree.data_bytes

    @property
    def log_bytes_since_snapshot(self) -> int:
        return self._log_bytes_since_snapshot

    @property
    def snapshot_bytes(self) -> int:
        snapshot = self.storage.snapshot()
        return decode_descriptor(snapshot.data).size_bytes if snapshot.meta.index else 0

    @property
    def znode_count(self) -> int:
        return len(self._tree)

    @property
    def session_count(self) -> int:
        return len(self._tree.sessions)

    async def barrier(self, linearizable: bool = False, min_zxid: int | None = None) -> None:
        """Wait until a read here may be served: this node has applied
        ``min_zxid`` (504 ``ZxidNotReached`` after the request timeout) and,
        for a linearizable read, everything the leader had committed when
        the read arrived (ReadIndex; 503 when no majority answers in time)."""
        timeout_s = self.limits.request_timeout_ms / 1000
        if min_zxid is not None and self._tree.zxid < min_zxid:
            try:
                await asyncio.wait_for(self._zxid_waiters.wait(min_zxid), timeout_s)
            except TimeoutError:
                raise ZxidNotReached(
                    f"this node has applied zxid {self._tree.zxid}, not {min_zxid}",
                    applied_zxid=self._tree.zxid,
                ) from None
        if linearizable:
            if self.driver.disk_full is not None:
                raise Unavailable(
                    "this node's disk is full and its loop is frozen: read another node"
                )
            if not self.driver.has_live_leader():
                raise Unavailable("no leader is known: cannot read linearizably")
            try:
                index = await asyncio.wait_for(self.driver.read_index(), timeout_s)
                if self.applied_index < index:
                    await asyncio.wait_for(self._applied_waiters.wait(index), timeout_s)
            except TimeoutError:
                raise Unavailable("no majority confirmed the leader in time") from None

    async def wait_for_zxid(self, zxid: int) -> None:
        """A watch resumed here with a zxid from another node: wait until this
        node has applied it, so the replay misses nothing."""
        await self.barrier(min_zxid=zxid)

    # ---- cluster view ------------------------------------------------------------------------

    @property
    def leader_id(self) -> int:
        return self.driver.leader

    def digest(self) -> str:
        """The tree's digest at the applied zxid (kept by the tree as it
        changes): members at one zxid must show one digest."""
        return format(self._tree.digest, "016x")

    def status(self) -> dict[str, Any]:
        core = self.driver.core
        return {
            "id": self.node_id,
            "client_url": self.cluster.client_url,
            "role": core.role.value,
            "term": core.term,
            "leader": core.lead,
            "commit_index": core.committed,
            "applied_index": self.applied_index,
            "zxid": self._tree.zxid,
            "digest": self.digest(),
        }

    async def cluster_status(self) -> dict[str, Any]:
        """Every member as seen from here, with each reachable one's own status."""
        me = self.status()
        core = self.driver.core
        members = sorted(core.conf.members | {self.node_id})
        timeout_ms = min(1000, self.limits.request_timeout_ms)

        async def member(mid: int) -> dict[str, Any]:
            row: dict[str, Any] = {
                "id": mid,
                "peer_url": self.cluster.peers.get(mid, ""),
                "voter": mid in core.conf.voters,
            }
            if mid == self.node_id:
                row.update({k: me[k] for k in _MEMBER_FIELDS}, reachable=True)
                return row
            try:
                raw = await self.transport.call(mid, STATUS_PATH, b"", timeout_ms)
                theirs = orjson.loads(raw)
                row.update({k: theirs.get(k) for k in _MEMBER_FIELDS}, reachable=True)
            except (PeerError, orjson.JSONDecodeError, AttributeError):
                row["reachable"] = False
            return row

        rows = await asyncio.gather(*(member(m) for m in members))
        return {
            "id": self.node_id,
            "leader": core.lead,
            "term": core.term,
            "commit_index": core.committed,
            "applied_index": self.applied_index,
            "zxid": self._tree.zxid,
            "members": rows,
        }

    # ---- snapshots ------------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        if self.applied_index < self._snapshot_retry_index:
            return False
        return (
            self._ops_since_snapshot >= self.limits.snapshot_entries
            or self._log_bytes_since_snapshot >= self.limits.snapshot_log_bytes
        )

    def _start_snapshot(self) -> None:
        index = self.applied_index
        try:
            conf = self.driver.core.conf_at(index)
        except CompactedError:
            return  # a snapshot from the leader is being installed: it supersedes this one
        # A view of the tree at exactly this index, serialised a chunk at a
        # time between requests while the tree goes on (see TreeView).
        view = self._tree.view()
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._write_snapshot(index, conf, view)
        )

    async def _write_snapshot(self, index: int, conf: Any, view: TreeView) -> None:
        try:
            await self.driver.save_commit()  # storage snapshots committed indexes only
            snap = await self.storage.create_snapshot(
                index, conf, view.zxid, _chunks_between_turns(view), self._wall_ms()
            )
            if snap is not None:
                self._snapshot_index = max(self._snapshot_index, index)
                self._log_bytes_since_snapshot = 0
                self._ops_since_snapshot = 0
                self.snapshots_taken += 1
        except DiskFull as exc:
            # Nothing became visible (the chunks written so far are garbage):
            # try again after a tenth of the interval, not at every apply.
            log.warning("snapshot at index %d not written: %s", index, exc.detail)
            self._snapshot_retry_index = index + max(1, self.limits.snapshot_entries // 10)
        except Exception:
            # As for a failed save: nothing after a storage failure is safe.
            log.exception("snapshot failed; this node takes no writes until restarted")
            self.driver.failed = self.driver.failed or RuntimeError("snapshot failed")
            self.driver.stop()
        finally:
            view.close()
            self._snapshot_task = None

    async def take_snapshot(self) -> None:
        """Snapshot now (tests and operators); waits until it is written."""
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task])
        self._start_snapshot()
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task])


_MEMBER_FIELDS = (
    "client_url",
    "role",
    "term",
    "leader",
    "commit_index",
    "applied_index",
    "zxid",
    "digest",
)


class _NoPeers:
    """The transport of a cluster of one: there is nobody to talk to."""

    def send(self, messages: Iterable[Message]) -> None:
        for m in messages:
            log.debug("no peer %d to send %s to", m.dst, type(m).__name__)

    def reachable(self, peer_id: int) -> bool:
        return False

    async def call(
        self,
        peer_id: int,
        path: str,
        body: bytes,
        timeout_ms: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        raise PeerUnavailable(f"node {peer_id} is not a peer of a cluster of one")


async def _chunks_between_turns(view: TreeView) -> AsyncIterator[bytes]:
    """The view's chunks, each made in its own turn of the loop: a chunk is a
    few milliseconds of work, a whole tree of millions of nodes seconds."""
    for chunk in view.chunks():
        yield chunk
        await asyncio.sleep(0)


def _not_committed() -> Unavailable:
    return Unavailable(
        "the write was not committed (leadership changed and another entry took its place);"
        " retrying is safe"
    )


async def _tree_from(storage: NodeStorage, snapshot: Snapshot) -> Tree:
    chunks = [c async for c in storage.snapshot_chunks(snapshot)]
    tree = Tree.from_snapshot(chunks)
    expected = decode_descriptor(snapshot.data).zxid
    if tree.zxid != expected:
        raise RuntimeError(
            f"snapshot at index {snapshot.meta.index} says zxid {expected}, tree has {tree.zxid}"
        )
    return tree


async def _tree_at_snapshot(storage: NodeStorage) -> Tree:
    snapshot = storage.snapshot()
    if snapshot.meta.index == 0:
        return Tree()
    return await _tree_from(storage, snapshot)


def _lock_data_dir(data_dir: Path) -> int:
    """One process per data dir: two writers on one log would corrupt it."""
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"data dir {data_dir} is in use by another httpcoord process") from None
    return fd
