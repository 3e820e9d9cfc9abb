"""A node's write path: propose -> durable log (group commit) -> apply -> reply.

``LocalNode`` is a cluster of one. It is the seam the replicated cluster will
sit behind: routes call ``propose(ops, multi)`` and read ``tree``, and never
learn whether a majority or a single disk made the entry durable.

The one loop (``_commit_loop``) obeys the ordering rule that every later
driver keeps: an entry is applied, and its proposer answered, only after the
transaction holding it has been committed and fsynced; entries are applied in
log order; everything ready in one turn of the loop goes into one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from httpcoord.cluster.sessions import SessionTracker
from httpcoord.cluster.sqlite_log import KIND_TXN, LogEntry, SqliteLog
from httpcoord.errors import CoordError, SessionExpired, TooManyRequests, Unavailable
from httpcoord.tree.tree import Event, Tree, TxnResult
from httpcoord.tree.txn import (
    CloseSessionOp,
    Op,
    OpenSessionOp,
    ReapOp,
    Txn,
    decode_txn,
    encode_txn,
)
from httpcoord.watch.history import History

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeLimits:
    batch_entries_max: int = 4096  # entries in one group commit
    batch_bytes_max: int = 32 * 1024 * 1024  # payload bytes in one group commit
    pending_proposals_max: int = 20_000  # queued, not yet durable; beyond: 429
    pending_bytes_max: int = 256 * 1024 * 1024  # encoded txn bytes queued; beyond: 429
    snapshot_entries: int = 100_000  # snapshot after this many entries past the last one
    snapshot_log_bytes: int = 256 * 1024 * 1024  # ... or this many log bytes
    session_check_ms: int = 100  # how often deadlines are checked: expiry lateness
    container_check_ms: int = 5000  # how often containers and TTL nodes are reaped
    expire_batch_max: int = 1000  # sessions expired per check
    reap_batch_max: int = 1000  # nodes reaped per check
    watch_history_events: int = 100_000  # events kept for watchers resuming by zxid
    watch_history_bytes: int = 64 * 1024 * 1024  # ... and their approximate bytes


@dataclass(slots=True)
class _Proposal:
    txn: Txn
    data: bytes
    future: asyncio.Future[TxnResult]


EventListener = Callable[[int, list[Event]], None]


class LocalNode:
    def __init__(
        self,
        log_store: SqliteLog,
        tree: Tree,
        history: History,
        applied_index: int,
        snapshot_index: int,
        limits: NodeLimits,
        lock_fd: int,
        wall_ms: Callable[[], int],
        monotonic_ms: Callable[[], int],
    ) -> None:
        self.log_store = log_store
        self.tree = tree
        self.history = history
        self.applied_index = applied_index
        self.limits = limits
        self._snapshot_index = snapshot_index
        self._log_bytes_since_snapshot = 0
        self._lock_fd = lock_fd
        self._wall_ms = wall_ms
        self._monotonic_ms = monotonic_ms
        # This node is the expiry authority (in a cluster: the leader). Every
        # session recovered from disk starts with its full ttl.
        self.sessions = SessionTracker()
        now = monotonic_ms()
        for session in tree.sessions.values():
            self.sessions.open(session.id, session.ttl_ms, now)
        self._maintenance: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._pending: deque[_Proposal] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: BaseException | None = None
        self._closing = False
        self.listeners: list[EventListener] = []
        # Called with the id of each session a txn closes (by its client or
        # by expiry), e.g. to end its keepalive socket at once.
        self.session_closed_listeners: list[Callable[[str], None]] = []
        self.snapshots_taken = 0

    # ---- lifecycle -----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        limits: NodeLimits | None = None,
        wall_ms: Callable[[], int] | None = None,
        monotonic_ms: Callable[[], int] | None = None,
    ) -> LocalNode:
        """Open the data dir (exclusively), load the snapshot and replay the log."""
        limits = limits or NodeLimits()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock_data_dir(data_dir)
        try:
            log_store = await SqliteLog.open(data_dir)
            try:
                tree, history, applied, snap_index = await _recover(log_store, limits)
            except BaseException:
                await log_store.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            log_store,
            tree,
            history,
            applied,
            snap_index,
            limits,
            lock_fd,
            wall_ms or (lambda: time.time_ns() // 1_000_000),
            monotonic_ms or (lambda: time.monotonic_ns() // 1_000_000),
        )

    def start(self, maintenance: bool = True) -> None:
        """Start the commit loop and, unless a test drives them by hand with
        its own clock, the periodic session expiry and node reaping."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._commit_loop(), name="commit-loop")
        if maintenance:
            self._maintenance = self._loop.create_task(self._maintenance_loop(), name="maintenance")

    async def close(self) -> None:
        """Finish the batch in flight (never cut an fsync short, so no proposer
        is told "unavailable" about a write that is in fact durable), refuse
        what is still queued, close storage."""
        self._closing = True
        self._wakeup.set()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        try:
            if self._task is not None:
                await self._task
            if self._snapshot_task is not None:
                # Let it finish (its failure was already handled and logged).
                await asyncio.wait([self._snapshot_task])
            self._fail_pending(Unavailable("node is shutting down"))
            await self.log_store.close()
        finally:
            # Release the data dir even if closing storage failed.
            os.close(self._lock_fd)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        return self._failed is None and self._task is not None and not self._task.done()

    # ---- the write path ----------------------------------------------------------

    async def propose(self, ops: tuple[Op, ...], multi: bool = False) -> TxnResult:
        """Make ``ops`` durable and apply them; return the result or raise its error."""
        if self._failed is not None:
            raise Unavailable("storage failed; the node accepts no writes until restarted")
        if self._closing or self._loop is None:
            raise Unavailable("node is not running")
        if len(self._pending) >= self.limits.pending_proposals_max:
            raise TooManyRequests("too many writes in flight; retry later")
        txn = Txn(ops, self._wall_ms(), multi)
        data = encode_txn(txn)
        # The count alone would let 20,000 queued 1 MiB writes hold 20 GiB. One
        # write is always let in, however large, so no write can starve.
        if self._pending and self._pending_bytes + len(data) > self.limits.pending_bytes_max:
            raise TooManyRequests("too many bytes of writes in flight; retry later")
        # The loop saved at start: get_running_loop() costs a getpid() per call.
        future: asyncio.Future[TxnResult] = self._loop.create_future()
        self._pending.append(_Proposal(txn, data, future))
        self._pending_bytes += len(data)
        self._wakeup.set()
        return await future

    async def _commit_loop(self) -> None:
        batch: list[_Proposal] = []
        try:
            while not self._closing:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending and not self._closing and self._failed is None:
                    batch = self._take_batch()
                    first = self.applied_index + 1
                    entries = [
                        LogEntry(first + i, 0, KIND_TXN, p.data) for i, p in enumerate(batch)
                    ]
                    await self.log_store.append(entries)
                    self._apply_batch(batch)
                    self._log_bytes_since_snapshot += sum(len(p.data) for p in batch)
                    if self._snapshot_due() and self._snapshot_task is None:
                        # In the background: writes go on being appended while
                        # the snapshot is written (see SqliteLog.install_snapshot).
                        self._snapshot_task = asyncio.create_task(self._background_snapshot())
        except Exception as exc:
            # A failed append (disk full, I/O error) or a bug in apply: nothing
            # after it is safe. Stop taking writes, and answer everyone still
            # waiting. (A failed snapshot does the same, in _background_snapshot.)
            log.exception("commit loop failed; refusing writes from now on")
            self._failed = exc
            for p in batch:
                _settle(p.future, exc=Unavailable("storage failed"))
            self._fail_pending(Unavailable("storage failed"))

    def _take_batch(self) -> list[_Proposal]:
        batch: list[_Proposal] = []
        size = 0
        limits = self.limits
        while self._pending and len(batch) < limits.batch_entries_max:
            nxt = len(self._pending[0].data)
            if batch and size + nxt > limits.batch_bytes_max:
                break
            batch.append(self._pending.popleft())
            size += nxt
        self._pending_bytes -= size
        return batch

    def _apply_batch(self, batch: list[_Proposal]) -> None:
        for p in batch:
            self.applied_index += 1
            try:
                result, events = self.tree.apply(p.txn)
            except CoordError as exc:
                _settle(p.future, exc=exc)
                continue
            self._track_sessions(p.txn)
            self.history.append(result.zxid, events)
            # Answer the writer first: its reply is scheduled ahead of the
            # watchers woken below, so a write's latency does not grow with
            # the number of watchers of its path.
            _settle(p.future, result=result)
            for listener in self.listeners:
                # The write is durable and applied: a watcher's bug must not
                # stop the commit loop or leave the rest of the batch unanswered.
                try:
                    listener(result.zxid, events)
                except Exception:
                    log.exception("event listener failed at zxid %d", result.zxid)

    def _track_sessions(self, txn: Txn) -> None:
        for op in txn.ops:
            if isinstance(op, OpenSessionOp):
                self.sessions.open(op.session_id, op.ttl_ms, self._monotonic_ms())
            elif isinstance(op, CloseSessionOp):
                self.sessions.forget(op.session_id)
                for listener in self.session_closed_listeners:
                    listener(op.session_id)

    def _fail_pending(self, exc: CoordError) -> None:
        while self._pending:
            _settle(self._pending.popleft().future, exc=exc)
        self._pending_bytes = 0

    # ---- sessions and reaping ---------------------------------------------------

    def heartbeat(self, session_id: str) -> int:
        """Keep a session alive; returns its ttl. No log entry: cheap."""
        if not self.sessions.touch(session_id, self._monotonic_ms()):
            raise SessionExpired(session=session_id)
        return self.tree.sessions[session_id].ttl_ms

    def session_expires_in_ms(self, session_id: str) -> int | None:
        return self.sessions.remaining_ms(session_id, self._monotonic_ms())

    async def expire_sessions(self) -> list[str]:
        """Close, each in its own txn, every session past its deadline."""
        due = self.sessions.due(self._monotonic_ms(), self.limits.expire_batch_max)
        outcomes = await asyncio.gather(
            *(self.propose((CloseSessionOp(sid, expired=True),)) for sid in due),
            return_exceptions=True,
        )
        for sid, outcome in zip(due, outcomes):
            # Already closed: nothing to do. Unavailable: this process takes no
            # writes any more (storage failed, or shutting down), so retrying
            # every check would only log a line per session, ten times a
            # second; the sessions get their full ttl at the next start.
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, SessionExpired | Unavailable
            ):
                log.warning("expiring session %s failed: %r; will retry", sid, outcome)
                self.sessions.retry(sid, self._monotonic_ms())
        return due

    async def reap(self) -> list[str]:
        """Remove containers emptied of their children and expired TTL nodes."""
        due = self.tree.reap_candidates(self._wall_ms(), self.limits.reap_batch_max)
        outcomes = await asyncio.gather(
            *(self.propose((ReapOp(path, czxid),)) for path, czxid in due),
            return_exceptions=True,
        )
        # A refusal means the node changed since it was seen: nothing to do.
        return [path for (path, _), o in zip(due, outcomes) if not isinstance(o, BaseException)]

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
            except Unavailable:
                pass  # storage failed or shutting down: nothing more to decide

    # ---- snapshots ------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        return (
            self.applied_index - self._snapshot_index >= self.limits.snapshot_entries
            or self._log_bytes_since_snapshot >= self.limits.snapshot_log_bytes
        )

    async def _background_snapshot(self) -> None:
        try:
            await self.take_snapshot()
        except Exception as exc:
            # As for a failed append: nothing after a storage failure is safe.
            log.exception("snapshot failed; refusing writes from now on")
            self._failed = exc
            self._fail_pending(Unavailable("storage failed"))
        finally:
            self._snapshot_task = None

    async def take_snapshot(self) -> None:
        """Snapshot the tree at the applied index and drop the log behind it.

        The chunks are taken synchronously so they describe exactly one
        applied index; appends go on while they are written."""
        index, zxid = self.applied_index, self.tree.zxid
        chunks = list(self.tree.snapshot_chunks())
        await self.log_store.install_snapshot(index, 0, zxid, self._wall_ms(), chunks)
        await self.log_store.checkpoint()
        self._snapshot_index = index
        self._log_bytes_since_snapshot = 0
        self.snapshots_taken += 1


async def _recover(log_store: SqliteLog, limits: NodeLimits) -> tuple[Tree, History, int, int]:
    """Rebuild the tree: the newest snapshot, then every log entry after it.

    Replaying refused txns refuses them again (apply is deterministic), so the
    recovered tree and its zxid equal the tree before the crash. The replayed
    events become the watch history, so watchers can resume across a restart
    as far back as the snapshot."""
    snap = await log_store.latest_snapshot()
    if snap is None:
        tree, applied = Tree(), 0
    else:
        tree = Tree.from_snapshot([c async for c in log_store.snapshot_chunks(snap.id)])
        applied = snap.log_index
        if tree.zxid != snap.zxid:
            raise RuntimeError(f"snapshot {snap.id} says zxid {snap.zxid}, tree has {tree.zxid}")
    snap_index = applied
    history = History(limits.watch_history_events, limits.watch_history_bytes, tree.zxid)
    async for entry in log_store.entries_after(applied):
        if entry.kind == KIND_TXN:
            with contextlib.suppress(CoordError):
                result, events = tree.apply(decode_txn(entry.data))
                history.append(result.zxid, events)
        applied = entry.index
    return tree, history, applied, snap_index


def _settle(
    future: asyncio.Future[TxnResult],
    result: TxnResult | None = None,
    exc: BaseException | None = None,
) -> None:
    # The proposer may have gone away (client disconnected): nothing to tell.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


def _lock_data_dir(data_dir: Path) -> int:
    """One process per data dir: two writers on one log would corrupt it."""
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"data dir {data_dir} is in use by another httpcoord process") from None
    return fd
