"""The node's Raft storage: the ``NodeStorage`` Protocol the driver writes
through, the snapshot descriptor, and ``MemoryNodeStorage``.

The consensus core reads storage synchronously (``LogStorage``: hard state,
terms, entries, the snapshot); the driver writes it asynchronously, one
``save`` per ``Ready`` (see the persistence-ordering contract in
``raft/storage.py``). Both implementations here and in ``sqlite_storage.py``
keep what the core reads in a ``MemoryStorage`` mirror that changes only
after a write has succeeded, so a failed write changes nothing the core can
see, and share one ``MirroredStorage`` base that decides everything; they
differ only in where the bytes go.

A node's snapshot is two things. ``Snapshot.data`` is a small descriptor
(``encode_descriptor``): orjson bytes of ``{"format": 1, "zxid", "chunks",
"bytes", "sha256", "created_ms"}``, content-defined, so it is identical on
the leader and on every follower that received it. The tree itself is the
list of the tree's canonical snapshot chunks (``Tree.snapshot_chunks()``),
stored beside the log as a *chunk set* and streamed with ``snapshot_chunks``;
the core only ever sees the descriptor.

Chunk sets live in one of these states: being written (``create_snapshot``
or ``stage_snapshot`` in progress), staged (received from the leader and
verified, waiting for ``save``), visible (the snapshot the log starts after),
read (a stream in progress pins it), or garbage. Garbage (chunk sets in no
other state, and log rows at or below the visible snapshot's index) is
deleted in small batches in the background, so no write waits for a large
delete; a crash leaves garbage that no reader looks at and the next open
removes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from httpcoord.cluster.raft.messages import (
    INT_MAX,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from httpcoord.cluster.raft.storage import LogStorage, MemoryStorage

log = logging.getLogger(__name__)

DESCRIPTOR_FORMAT: Final = 1
_DESCRIPTOR_KEYS: Final = frozenset({"format", "zxid", "chunks", "bytes", "sha256", "created_ms"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Snapshot chunks are written this many bytes per transaction, so that saves
# interleave with a large snapshot instead of waiting for all of it: a save
# waits behind at most one such transaction (1 MiB was 30-60 ms here).
SNAPSHOT_TXN_BYTES: Final = 256 * 1024
# Received snapshots kept staged at once (each is a full copy of the tree on
# disk); staging one more drops the oldest. Normally there is at most one.
STAGED_SNAPSHOTS_MAX: Final = 4


class StorageMismatch(RuntimeError):
    """The data dir belongs to another node or cluster, or cannot be used as
    started (its message says what differs and what to do)."""


class StorageCorrupt(RuntimeError):
    """The stored data contradicts itself (a gap in the log, a missing chunk)."""


class SnapshotCorrupt(ValueError):
    """A snapshot's chunks or descriptor do not match each other."""


class SnapshotMissing(LookupError):
    """The snapshot is neither visible nor staged (a newer one replaced it)."""


# ---- the descriptor ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotDescriptor:
    """What ``Snapshot.data`` says about the chunks of a node's snapshot."""

    zxid: int  # the tree's zxid at the snapshot's log index
    chunk_count: int
    size_bytes: int  # of all chunks together
    sha256: str  # hex digest of the concatenated chunks
    created_ms: int  # wall clock of the node that took it (the leader's, on a follower)


def describe_chunks(zxid: int, chunks: Iterable[bytes], created_ms: int) -> SnapshotDescriptor:
    digest = ChunkDigest()
    for chunk in chunks:
        digest.update(chunk)
    return digest.descriptor(zxid, created_ms)


def encode_descriptor(d: SnapshotDescriptor) -> bytes:
    # Fixed key order: the bytes are part of the Snapshot every replica compares.
    return orjson.dumps(
        {
            "format": DESCRIPTOR_FORMAT,
            "zxid": d.zxid,
            "chunks": d.chunk_count,
            "bytes": d.size_bytes,
            "sha256": d.sha256,
            "created_ms": d.created_ms,
        }
    )


def decode_descriptor(raw: bytes) -> SnapshotDescriptor:
    """Parse and validate a descriptor; raises SnapshotCorrupt on anything else
    (it may come from a peer)."""
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SnapshotCorrupt("snapshot descriptor is not JSON") from None
    if type(obj) is not dict or set(obj) != _DESCRIPTOR_KEYS:
        raise SnapshotCorrupt(f"snapshot descriptor must have exactly {sorted(_DESCRIPTOR_KEYS)}")
    if type(obj["format"]) is not int or obj["format"] != DESCRIPTOR_FORMAT:
        raise SnapshotCorrupt(f"unknown snapshot descriptor format {obj['format']!r}")
    for key in ("zxid", "chunks", "bytes", "created_ms"):
        v = obj[key]
        # bool is an int subclass: true is not a count.
        if type(v) is not int or not 0 <= v <= INT_MAX:
            raise SnapshotCorrupt(f"snapshot descriptor {key!r} must be an int in [0, {INT_MAX}]")
    sha = obj["sha256"]
    if type(sha) is not str or not _SHA256_HEX.fullmatch(sha):
        raise SnapshotCorrupt("snapshot descriptor 'sha256' must be 64 lowercase hex digits")
    return SnapshotDescriptor(obj["zxid"], obj["chunks"], obj["bytes"], sha, obj["created_ms"])


class ChunkDigest:
    """Count, size and sha256 of chunks fed one at a time (hashed as they are
    written, so a large snapshot is never hashed in one go on the event loop)."""

    __slots__ = ("_sha", "count", "size_bytes")

    def __init__(self) -> None:
        self.count = 0
        self.size_bytes = 0
        self._sha = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.count += 1
        self.size_bytes += len(chunk)
        self._sha.update(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def descriptor(self, zxid: int, created_ms: int) -> SnapshotDescriptor:
        return SnapshotDescriptor(zxid, self.count, self.size_bytes, self.hexdigest(), created_ms)


# ---- the Protocol ------------------------------------------------------------------


class NodeStorage(LogStorage, Protocol):
    """Read synchronously by the core (LogStorage: initial_state, first_index,
    last_index, term, entries, snapshot), written asynchronously by the driver.

    Cancelling a caller never cancels a write half-way: a ``save`` (or the
    step of ``create_snapshot`` that makes it visible) that has started runs
    to its end, and the in-memory view follows what was committed."""

    fsyncs: int  # committed write transactions so far (metrics: writes per fsync)
    entries_saved: int
    save_observers: list[Callable[[float], None]]  # each Raft save's seconds (metrics)

    async def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        """ONE transaction, ONE fsync (group commit). Order inside: the snapshot
        (staged before with stage_snapshot; it becomes the visible snapshot and
        the whole log is dropped), then the entries (they overwrite any stored
        suffix from entries[0].index), then the hard state. All or nothing: if
        it raises, neither the disk nor the in-memory view changed."""
        ...

    async def create_snapshot(
        self,
        index: int,
        conf: ConfState,
        zxid: int,
        chunks: AsyncIterator[bytes],
        created_ms: int,
    ) -> Snapshot | None:
        """Snapshot the node's own applied state at a committed index: chunks in
        small transactions (saves interleave), then one small transaction makes
        it visible and the in-memory log drops entries <= index, then what it
        replaced is deleted in batches. Returns None (and drops the chunks) if a
        snapshot at or past index became visible meanwhile (one received from
        the leader)."""
        ...

    async def stage_snapshot(
        self, meta: SnapshotMeta, descriptor: bytes, chunks: AsyncIterator[bytes]
    ) -> Snapshot:
        """Store a snapshot streamed from the leader under a staging id, verify it
        against its descriptor (sha256, chunk count, size) and return the
        Snapshot to hand to the core. Nothing visible changes until save() gets
        it. Raises SnapshotCorrupt on a mismatch, having dropped what it staged."""
        ...

    def snapshot_chunks(self, snapshot: Snapshot) -> AsyncIterator[bytes]:
        """The chunks of the visible or a staged snapshot. Raises SnapshotMissing
        if it is neither (replaced by a newer one), at the call or, if it is
        replaced before the first chunk is read, from the iteration. Once the
        first chunk is read the set is pinned: a replacement does not cut the
        stream short. Verifies the sha256 at the end (SnapshotCorrupt)."""
        ...

    async def close(self) -> None: ...


# ---- the shared implementation ----------------------------------------------------------

FailPoint = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SavePlan:
    """A validated save, as the backend writes it."""

    hard_state: HardState | None
    snapshot: Snapshot | None
    snapshot_set: int  # the staged chunk set that becomes visible (0: none)
    entries: Sequence[Entry]
    truncate_from: int  # 0: a plain append; else stored entries >= this go first
    fail_point: FailPoint | None  # tests: called after each part, inside the transaction

    def fail(self, step: str) -> None:
        if self.fail_point is not None:
            self.fail_point(step)


class MirroredStorage(ABC):
    """A NodeStorage whose reads come from a ``MemoryStorage`` mirror of what
    is durable. Subclasses say how a save, a chunk batch, a visibility switch
    and a garbage batch are written; this class validates, orders and mirrors.

    One asyncio lock orders the writes that change the mirror (save and the
    visibility switch): each validates against the mirror, commits, then
    updates the mirror, so the mirror always equals the last committed state.
    Chunk writes take no lock: they touch nothing a reader looks at."""

    def __init__(self, mirror: MemoryStorage, visible_set: int, next_set: int) -> None:
        self._mem = mirror
        self._visible_set = visible_set  # chunk set of self._mem.snapshot(), 0 if none
        self._next_set = next_set
        self._staged: dict[Snapshot, int] = {}  # insertion order = staging order
        self._writing: set[int] = set()
        self._pins: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._gc_task: asyncio.Task[None] | None = None
        self._gc_again = False
        self._closing = False
        self.fsyncs = 0
        self.entries_saved = 0
        # Called with the seconds each Raft save took (its transaction and
        # fsync, as the loop waited for it): the metrics' histogram.
        self.save_observers: list[Callable[[float], None]] = []
        self.snapshot_txn_bytes = SNAPSHOT_TXN_BYTES
        # Background writes (snapshot chunks, garbage) leave the disk idle
        # for as long as each of their transactions took: set by a backend
        # on a real disk once it is open (see _yield_disk).
        self.pace_background_writes = False
        self.staged_snapshots_max = STAGED_SNAPSHOTS_MAX
        # Test hooks: fail_point(step) is called inside save's transaction after
        # each part ("snapshot", "entries", "hard_state"); raising there
        # must leave nothing behind. before_snapshot_visible runs in
        # create_snapshot between its chunks and its visibility switch.
        self.fail_point: FailPoint | None = None
        self.before_snapshot_visible: Callable[[], Awaitable[None]] | None = None

    # ---- what the backend provides ------------------------------------------------------

    @abstractmethod
    async def _commit_save(self, plan: SavePlan) -> None:
        """One durable transaction holding the whole plan, or an exception and
        nothing written."""

    @abstractmethod
    async def _commit_chunks(self, set_id: int, first_seq: int, chunks: list[bytes]) -> None:
        """One durable transaction adding chunks first_seq.. of a set."""

    @abstractmethod
    async def _commit_visible(self, set_id: int, snapshot: Snapshot) -> None:
        """One durable transaction making set_id's snapshot the visible one
        (from then on the log is the rows past its index)."""

    @abstractmethod
    async def _read_chunk(self, set_id: int, seq: int) -> bytes | None: ...

    @abstractmethod
    async def _delete_garbage_batch(self, keep_sets: frozenset[int], log_upto: int) -> int:
        """Delete a bounded batch of chunks of sets not in keep_sets, else of
        log rows <= log_upto, in one transaction; return how many rows went
        (0 when there is no garbage left)."""

    @abstractmethod
    async def _close_backend(self) -> None: ...

    # ---- LogStorage: from the mirror -------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._mem.initial_state()

    def first_index(self) -> int:
        return self._mem.first_index()

    def last_index(self) -> int:
        return self._mem.last_index()

    def term(self, index: int) -> int:
        return self._mem.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        return self._mem.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._mem.snapshot()

    def hard_state(self) -> HardState:
        return self._mem.initial_state()[0]

    # ---- save --------------------------------------------------------------------------

    async def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        if hard_state is None and snapshot is None and not entries:
            return
        # Shielded: once the transaction is queued it commits or fails as a
        # whole, and the mirror must follow it even if our caller is cancelled.
        task = asyncio.ensure_future(self._save(hard_state, snapshot, entries))
        await asyncio.shield(task)

    async def _save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        async with self._lock:
            plan = self._plan_save(hard_state, snapshot, entries)
            # The chunk set this save makes visible stays live while it is
            # written: the same snapshot staged again meanwhile (a resent
            # InstallSnapshot) replaces it in _staged, and the collector would
            # delete it under the save (found by tests/sim/node_sim.py).
            pinned = plan.snapshot_set if plan.snapshot_set not in self._writing else 0
            if pinned:
                self._writing.add(pinned)
            started = time.perf_counter()
            try:
                await self._commit_save(plan)
            finally:
                self._writing.discard(pinned)
            took_s = time.perf_counter() - started
            for observe in self.save_observers:
                observe(took_s)
            # Validated above, so the mirror takes it without failing.
            self._mem.save(hard_state, snapshot, entries)
            self.fsyncs += 1
            self.entries_saved += len(entries)
            if snapshot is not None:
                del self._staged[snapshot]
                self._visible_set = plan.snapshot_set
                self._drop_staged_upto(snapshot.meta.index)
        if snapshot is not None:
            self._schedule_gc()  # the replaced chunks and log rows

    def _plan_save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> SavePlan:
        """Check everything the mirror would assert, before anything is written."""
        mem = self._mem
        offset, last = mem.first_index() - 1, mem.last_index()
        snapshot_set = 0
        if snapshot is not None:
            snapshot_set = self._staged.get(snapshot, 0)
            if snapshot_set == 0:
                raise SnapshotMissing(
                    f"snapshot at index {snapshot.meta.index} was not staged (or was dropped):"
                    " stage_snapshot() it before save()"
                )
            assert snapshot.meta.index >= mem.snapshot().meta.index, "snapshot went backwards"
            offset = last = snapshot.meta.index
        truncate_from = 0
        if entries:
            first = entries[0].index
            assert offset < first <= last + 1, "gap or compacted overwrite"
            assert entries[-1].index == first + len(entries) - 1, "entries are not consecutive"
            if first <= last:
                truncate_from = first
        if hard_state is not None:
            assert hard_state.term >= mem.initial_state()[0].term, "term went backwards"
        return SavePlan(hard_state, snapshot, snapshot_set, entries, truncate_from, self.fail_point)

    # ---- snapshots ------------------------------------------------------------------------

    async def create_snapshot(
        self,
        index: int,
        conf: ConfState,
        zxid: int,
        chunks: AsyncIterator[bytes],
        created_ms: int,
    ) -> Snapshot | None:
        mem = self._mem
        if index <= mem.snapshot().meta.index:
            return None  # a newer snapshot is visible already
        assert index <= mem.last_index(), "snapshot past the end of the log"
        assert index <= mem.initial_state()[0].commit, "snapshot of an uncommitted index"
        term = mem.term(index)
        set_id = self._new_set()
        try:
            digest = await self._write_set(set_id, chunks, None)
            if self.before_snapshot_visible is not None:
                await self.before_snapshot_visible()
        except BaseException:
            self._writing.discard(set_id)
            self._schedule_gc()
            raise
        snapshot = Snapshot(
            SnapshotMeta(index, term, conf), encode_descriptor(digest.descriptor(zxid, created_ms))
        )
        task = asyncio.ensure_future(self._make_visible(set_id, snapshot))
        if not await asyncio.shield(task):
            return None
        await self.collect_garbage()
        return snapshot

    async def _make_visible(self, set_id: int, snapshot: Snapshot) -> bool:
        index = snapshot.meta.index
        try:
            async with self._lock:
                mem = self._mem
                # A snapshot from the leader at or past index became visible
                # while the chunks were written: ours describes an older state.
                if mem.snapshot().meta.index >= index:
                    return False
                if index > mem.last_index() or mem.term(index) != snapshot.meta.term:
                    return False  # never for a committed index; refuse rather than assert
                await self._commit_visible(set_id, snapshot)
                mem.create_snapshot(index, snapshot.meta.conf, snapshot.data)
                mem.compact(index)
                self.fsyncs += 1
                self._visible_set = set_id
                self._drop_staged_upto(index)
                return True
        finally:
            self._writing.discard(set_id)
            self._schedule_gc()

    async def stage_snapshot(
        self, meta: SnapshotMeta, descriptor: bytes, chunks: AsyncIterator[bytes]
    ) -> Snapshot:
        expect = decode_descriptor(descriptor)
        set_id = self._new_set()
        try:
            digest = await self._write_set(set_id, chunks, expect)
            got = (digest.count, digest.size_bytes, digest.hexdigest())
            if got != (expect.chunk_count, expect.size_bytes, expect.sha256):
                raise SnapshotCorrupt(
                    f"snapshot at index {meta.index}: received {got[0]} chunks, {got[1]} bytes,"
                    f" sha256 {got[2]}; its descriptor says {expect.chunk_count},"
                    f" {expect.size_bytes}, {expect.sha256}"
                )
        except SnapshotCorrupt:
            self._writing.discard(set_id)
            await self.collect_garbage()
            raise
        except BaseException:
            self._writing.discard(set_id)
            self._schedule_gc()
            raise
        snapshot = Snapshot(meta, descriptor)
        replaced = self._staged.pop(snapshot, 0)  # the same snapshot staged again
        self._staged[snapshot] = set_id
        self._writing.discard(set_id)
        while len(self._staged) > self.staged_snapshots_max:
            oldest = min(self._staged, key=lambda s: s.meta.index)
            del self._staged[oldest]
            replaced = 1
        if replaced:
            self._schedule_gc()
        return snapshot

    def drop_staged(self, snapshot: Snapshot) -> None:
        """Forget a staged snapshot that will not be saved (the core kept its
        own log instead); its chunks go with the next garbage collection."""
        if self._staged.pop(snapshot, None) is not None:
            self._schedule_gc()

    def _drop_staged_upto(self, index: int) -> None:
        # A staged snapshot no newer than the visible one can never be saved.
        for s in [s for s in self._staged if s.meta.index <= index]:
            del self._staged[s]

    def snapshot_chunks(self, snapshot: Snapshot) -> AsyncIterator[bytes]:
        set_id = self._set_of(snapshot)
        if set_id == 0:
            raise SnapshotMissing(
                f"snapshot at index {snapshot.meta.index} is neither visible nor staged"
            )
        return self._read_set(set_id, snapshot, decode_descriptor(snapshot.data))

    def _set_of(self, snapshot: Snapshot) -> int:
        if self._visible_set and snapshot == self._mem.snapshot():
            return self._visible_set
        return self._staged.get(snapshot, 0)

    async def _read_set(
        self, set_id: int, snapshot: Snapshot, desc: SnapshotDescriptor
    ) -> AsyncIterator[bytes]:
        self._pins[set_id] = self._pins.get(set_id, 0) + 1
        try:
            digest = ChunkDigest()
            for seq in range(desc.chunk_count):
                chunk = await self._read_chunk(set_id, seq)
                if chunk is None:
                    # Collected between the call and the first read.
                    raise SnapshotMissing(f"snapshot at index {snapshot.meta.index} was replaced")
                digest.update(chunk)
                yield chunk
            if digest.hexdigest() != desc.sha256 or digest.size_bytes != desc.size_bytes:
                raise SnapshotCorrupt(f"stored snapshot at index {snapshot.meta.index} is corrupt")
        finally:
            left = self._pins.pop(set_id) - 1
            if left:
                self._pins[set_id] = left
            elif set_id not in self._live_sets():
                self._schedule_gc()

    async def _write_set(
        self, set_id: int, chunks: AsyncIterator[bytes], expect: SnapshotDescriptor | None
    ) -> ChunkDigest:
        """Write chunks a few MiB per transaction; with expect, stop as soon as
        the stream holds more than the descriptor announced."""
        digest = ChunkDigest()
        batch: list[bytes] = []
        batch_bytes = 0
        seq = 0
        async for chunk in chunks:
            digest.update(chunk)
            if expect is not None and (
                digest.count > expect.chunk_count or digest.size_bytes > expect.size_bytes
            ):
                raise SnapshotCorrupt(
                    f"snapshot stream is longer than its descriptor ({expect.chunk_count}"
                    f" chunks, {expect.size_bytes} bytes)"
                )
            batch.append(chunk)
            batch_bytes += len(chunk)
            if batch_bytes >= self.snapshot_txn_bytes:
                started = asyncio.get_running_loop().time()
                await self._commit_chunks(set_id, seq, batch)
                self.fsyncs += 1
                seq += len(batch)
                batch, batch_bytes = [], 0
                await self._yield_disk(started)
        if batch:
            await self._commit_chunks(set_id, seq, batch)
            self.fsyncs += 1
        return digest

    async def _yield_disk(self, started: float) -> None:
        """After a background transaction: leave the disk to the saves for as
        long as that transaction took. A snapshot of 100 MB written flat out
        queued the saves' fsyncs behind its own (writes of 48-96 ms while a
        million-znode snapshot was written; 37-38 ms paced so). Paced by its
        own duration it takes about twice as long, on any disk."""
        if self.pace_background_writes:
            await asyncio.sleep(asyncio.get_running_loop().time() - started)

    def _new_set(self) -> int:
        set_id = self._next_set
        self._next_set += 1
        self._writing.add(set_id)
        return set_id

    def _live_sets(self) -> frozenset[int]:
        return frozenset(
            {self._visible_set, *self._staged.values(), *self._writing, *self._pins}
        ) - {0}

    # ---- garbage ------------------------------------------------------------------------------

    def _schedule_gc(self) -> None:
        if self._closing:
            return
        if self._gc_task is None or self._gc_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # a stream finalized after its loop ended: the next open collects
            self._gc_task = loop.create_task(self._gc(), name="storage-gc")
        else:
            self._gc_again = True

    async def collect_garbage(self) -> None:
        """Run garbage collection now and wait until nothing is left."""
        self._schedule_gc()
        if self._gc_task is not None:
            await asyncio.shield(self._gc_task)

    async def _gc(self) -> None:
        try:
            while True:
                self._gc_again = False
                while not self._closing:
                    started = asyncio.get_running_loop().time()
                    deleted = await self._delete_garbage_batch(
                        self._live_sets(), self._mem.snapshot().meta.index
                    )
                    if deleted <= 0:
                        break
                    self.fsyncs += 1
                    await self._yield_disk(started)
                if not self._gc_again or self._closing:
                    return
        except Exception:
            # Garbage is harmless to readers; a failing disk will fail the next
            # save, which is where the driver learns of it.
            log.exception("deleting replaced snapshot chunks and log rows failed")

    async def close(self) -> None:
        """Wait for the write in flight and stop collecting garbage (the rest
        waits for the next open). Chunk writers still running must be awaited
        or cancelled by the caller first."""
        if self._closing:
            return
        self._closing = True
        if self._gc_task is not None:
            await asyncio.wait([self._gc_task])
        async with self._lock:
            await self._close_backend()


# ---- in memory ---------------------------------------------------------------------------


class MemoryNodeStorage(MirroredStorage):
    """NodeStorage in memory, with the SQLite storage's semantics (the same
    base decides everything): for the node's unit tests. "Durable" means
    "survives as long as this object"."""

    def __init__(self, bootstrap_voters: Sequence[int] = ()) -> None:
        mirror = (
            MemoryStorage.bootstrapped(bootstrap_voters) if bootstrap_voters else MemoryStorage()
        )
        super().__init__(mirror, 0, 1)
        self._chunks: dict[int, list[bytes]] = {}

    async def _commit_save(self, plan: SavePlan) -> None:
        # Nothing is written before every step that can fail has run, which is
        # what makes this all or nothing.
        if plan.snapshot is not None:
            plan.fail("snapshot")
        if plan.entries:
            plan.fail("entries")
        if plan.hard_state is not None:
            plan.fail("hard_state")

    async def _commit_chunks(self, set_id: int, first_seq: int, chunks: list[bytes]) -> None:
        stored = self._chunks.setdefault(set_id, [])
        assert len(stored) == first_seq
        stored.extend(chunks)
        await asyncio.sleep(0)  # a write takes time: let saves interleave as on disk

    async def _commit_visible(self, set_id: int, snapshot: Snapshot) -> None:
        pass

    async def _read_chunk(self, set_id: int, seq: int) -> bytes | None:
        stored = self._chunks.get(set_id)
        return stored[seq] if stored is not None and seq < len(stored) else None

    async def _delete_garbage_batch(self, keep_sets: frozenset[int], log_upto: int) -> int:
        garbage = [s for s in self._chunks if s not in keep_sets]
        for s in garbage:
            del self._chunks[s]
        return len(garbage)

    async def _close_backend(self) -> None:
        pass

    def chunk_sets(self) -> set[int]:
        """Ids of the chunk sets held (tests: nothing leaks)."""
        return set(self._chunks)
