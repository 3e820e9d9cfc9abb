"""The node's Raft storage in SQLite: hard state, log, snapshots (schema 2).

One file per node, ``<data_dir>/httpcoord.sqlite3``, in WAL mode with
``synchronous=FULL``: every commit fsyncs the WAL before it returns, which is
what "durable before acknowledged" needs (``NORMAL`` would not). Tables:

  meta(key, value)                      schema_version, node_id, cluster_id
  hard_state(id=0, term, vote, commit_index)
  log(idx, term, kind, data)            the log is the rows past the visible
                                        snapshot's index; rows at or below it
                                        are garbage, deleted in batches
  snapshots(id, log_index, log_term, membership, descriptor)
                                        the one visible snapshot; membership is
                                        the ConfState JSON, descriptor is
                                        Snapshot.data (see node_storage.py)
  chunks(snapshot_id, seq, data)        chunk sets: the visible snapshot's,
                                        staged ones, and garbage

One ``save`` is one transaction and one fsync (group commit), run as one
function in aiosqlite's worker thread. A received snapshot becomes visible in
the same transaction that deletes the log rows past its index, so a crash
leaves either the old snapshot with the old log or the new snapshot with the
log after it: ``last_index()`` is never below the snapshot. Everything else
(the rules, the chunk sets, garbage) is ``MirroredStorage``'s.

Memory: the core reads synchronously, so the hard state, the visible
snapshot's metadata and descriptor, and every log entry after the snapshot
are kept in memory (a ``MemoryStorage`` mirror updated after each committed
write), and are loaded at open. That is bounded by how often the node
snapshots: every ``--snapshot-entries`` entries (default 100,000) or 256 MiB
of log, so at most about 256 MiB of entry data plus about 150 bytes per
entry, as long as the node keeps applying and snapshotting. Snapshot chunks
are never held in memory beyond the one being read or the batch being written.

The caller holds the data dir's lock (one process per data dir); this class
does not take it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import aiosqlite

from httpcoord.cluster.node_storage import (
    SNAPSHOT_TXN_BYTES,
    FailPoint,
    MirroredStorage,
    SavePlan,
    SnapshotCorrupt,
    StorageCorrupt,
    StorageMismatch,
    decode_descriptor,
    describe_chunks,
    encode_descriptor,
)
from httpcoord.cluster.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MessageDecodeError,
    Snapshot,
    SnapshotMeta,
)
from httpcoord.cluster.raft.storage import MemoryStorage, bootstrap_state
from httpcoord.errors import CoordError, DiskFull
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import decode_txn

SCHEMA_VERSION: Final = 2
FILE_NAME: Final = "httpcoord.sqlite3"

# Deleting garbage: chunk rows can be MiBs each, log rows anything from a
# hundred bytes (one write) to MiBs (a large multi): a batch of log rows is
# bounded by its bytes, or a save waited behind 50 MB of deletes.
_GC_CHUNK_ROWS: Final = 16
_GC_LOG_ROWS: Final = 2000
_GC_LOG_BYTES: Final = 1024 * 1024
_CHECKPOINT_INTERVAL_MS: Final = 200
# After a checkpoint the WAL file is truncated back to this size, so one large
# snapshot does not leave a large WAL behind for good.
_WAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024

_V2_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    (
        "CREATE TABLE IF NOT EXISTS hard_state (id INTEGER PRIMARY KEY CHECK (id = 0),"
        " term INTEGER NOT NULL, vote INTEGER NOT NULL, commit_index INTEGER NOT NULL)"
    ),
    # The same table as schema 1's, so its rows can be dropped in place.
    (
        "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
        " kind INTEGER NOT NULL, data BLOB NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY,"
        " log_index INTEGER NOT NULL, log_term INTEGER NOT NULL,"
        " membership TEXT NOT NULL, descriptor BLOB NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS chunks (snapshot_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " data BLOB NOT NULL, PRIMARY KEY (snapshot_id, seq))"
    ),
)
_V2_ONLY_TABLES: Final = ("hard_state", "snapshots", "chunks")
_V1_ONLY_TABLES: Final = ("snapshot", "snapshot_chunk")

_INSERT_ENTRY = "INSERT INTO log(idx, term, kind, data) VALUES (?, ?, ?, ?)"
_INSERT_CHUNK = "INSERT INTO chunks(snapshot_id, seq, data) VALUES (?, ?, ?)"
_INSERT_SNAPSHOT = (
    "INSERT INTO snapshots(id, log_index, log_term, membership, descriptor) VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_HARD_STATE = (
    "INSERT OR REPLACE INTO hard_state(id, term, vote, commit_index) VALUES (0, ?, ?, ?)"
)

T = TypeVar("T")
log = logging.getLogger(__name__)


class SqliteStorage(MirroredStorage):
    """NodeStorage in one SQLite file; open it with ``SqliteStorage.open``."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        node_id: int,
        cluster_id: str,
        loaded: _Loaded,
    ) -> None:
        super().__init__(loaded.mirror, loaded.visible_set, loaded.next_set)
        self._db = db
        self.path = path
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.migrated_from_v1 = loaded.migrated
        # The WAL is copied into the database file by a connection and a
        # thread of their own (see _checkpoints), never inside a save.
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoints_task: asyncio.Task[None] | None = None
        self._stop_checkpoints = asyncio.Event()

    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        node_id: int,
        cluster_id: str,
        bootstrap_voters: Sequence[int],
        *,
        fail_point: FailPoint | None = None,
    ) -> SqliteStorage:
        """Open or create the node's storage in data_dir.

        A fresh data dir records node_id and cluster_id; a founding member
        (bootstrap_voters non-empty) also saves ``bootstrap_state`` in that
        first transaction, a node that will join later starts empty. An
        existing data dir must carry the same identity (else StorageMismatch);
        bootstrap_voters is then ignored: membership lives in the log. A data
        dir of the single node (schema 1) is migrated in place when started
        as a cluster of one (bootstrap_voters == [node_id]), else refused.
        fail_point (tests) is called at the steps of a migration."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / FILE_NAME
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            opener = functools.partial(
                _open_sync,
                data_dir=data_dir,
                node_id=node_id,
                cluster_id=cluster_id,
                voters=tuple(bootstrap_voters),
                fail_point=fail_point,
            )
            loaded = await _in_db_thread(db, opener)
        except BaseException:
            await db.close()
            raise
        _fsync_dir(data_dir)
        storage = cls(db, path, node_id, cluster_id, loaded)
        storage._start_checkpoints()
        # Orphans of a snapshot a crash cut short, and garbage left behind.
        await storage.collect_garbage()
        storage.pace_background_writes = True  # from now on saves come first
        return storage

    # ---- MirroredStorage's backend ----------------------------------------------------------

    async def _commit_save(self, plan: SavePlan) -> None:
        await self._write(functools.partial(_save_txn, plan=plan))

    async def _commit_chunks(self, set_id: int, first_seq: int, chunks: list[bytes]) -> None:
        rows = [(set_id, first_seq + i, c) for i, c in enumerate(chunks)]
        insert = functools.partial(_insert_chunks, rows=rows)
        await self._write(functools.partial(_transaction, body=insert))

    async def _commit_visible(self, set_id: int, snapshot: Snapshot) -> None:
        # From now on the log rows at or below its index are garbage.
        insert = functools.partial(_insert_snapshot, set_id=set_id, snapshot=snapshot)
        await self._write(functools.partial(_transaction, body=insert))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction; a full disk becomes ``DiskFull``, which the
        driver survives: SQLite rolled the transaction back, so the file holds
        exactly what it held. Every other error stays what it is."""
        try:
            return await _in_db_thread(self._db, fn)
        except (sqlite3.Error, OSError) as exc:
            if is_disk_full(exc):
                raise DiskFull(
                    f"no space left for the data dir {self.path.parent}: this node takes"
                    " no writes until space is freed",
                    data_dir=str(self.path.parent),
                ) from exc
            raise

    async def _read_chunk(self, set_id: int, seq: int) -> bytes | None:
        def read(c: sqlite3.Connection) -> bytes | None:
            row = c.execute(
                "SELECT data FROM chunks WHERE snapshot_id = ? AND seq = ?", (set_id, seq)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await _in_db_thread(self._db, read)

    async def _delete_garbage_batch(self, keep_sets: frozenset[int], log_upto: int) -> int:
        return await self._write(
            functools.partial(_delete_garbage, keep=keep_sets, log_upto=log_upto)
        )

    async def _close_backend(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpoints_task is not None:
            await self._checkpoints_task  # lets a checkpoint in its thread finish
        if self._checkpointer is not None:
            self._checkpointer.close()
        await self._db.close()

    # ---- checkpoints --------------------------------------------------------------------------

    def _start_checkpoints(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")  # the database file is fsynced after a copy
        self._checkpointer = conn
        self._checkpoints_task = asyncio.get_running_loop().create_task(
            self._checkpoints(conn), name="storage-checkpoints"
        )

    async def _checkpoints(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database file every _CHECKPOINT_INTERVAL_MS.

        SQLite's automatic checkpoint runs inside the commit that crosses
        1,000 pages of WAL: that save then waited for 4 MiB to be copied and
        the database file fsynced (writes of 60 ms and more while a large
        snapshot was written). A passive checkpoint on another connection
        copies what it can without blocking the saves; once it has copied
        everything, the next save starts the WAL over (journal_size_limit
        then trims the file)."""
        interval_s = _CHECKPOINT_INTERVAL_MS / 1000
        failing = False
        while not self._stop_checkpoints.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop_checkpoints.wait(), interval_s)
                return
            try:
                await asyncio.to_thread(_checkpoint, conn)
            except sqlite3.Error as exc:
                # The saves go on (the WAL only grows): said once per streak.
                if not failing:
                    log.warning("copying the WAL into %s failed (retrying): %s", self.path, exc)
                failing = True
            else:
                failing = False

    # ---- introspection (tests, /metrics) ----------------------------------------------------

    async def stored_chunk_sets(self) -> set[int]:
        def read(c: sqlite3.Connection) -> set[int]:
            return {r[0] for r in c.execute("SELECT DISTINCT snapshot_id FROM chunks")}

        return await _in_db_thread(self._db, read)


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (SQLite's name for ENOSPC on a write) or ENOSPC itself.
    An fsync error is SQLITE_IOERR: never this, since after a failed fsync
    the kernel may have dropped the dirty pages (nothing can be trusted)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


# ---- the worker thread ------------------------------------------------------------------
# Every function below runs in aiosqlite's worker thread with its sqlite3
# connection, one call per transaction.


async def _in_db_thread(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run fn(connection) as one item of aiosqlite's queue. A transaction of
    several statements then costs one trip to the worker thread instead of
    one per statement: measured here, about 11,000 one-entry saves/s instead
    of about 3,500. aiosqlite has no public call for this; its own execute()
    is built on the same two members."""
    conn = db._conn
    execute = cast(Callable[[Callable[[], T]], Awaitable[T]], db._execute)
    return await execute(lambda: fn(conn))


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _save_txn(conn: sqlite3.Connection, plan: SavePlan) -> None:
    def body(c: sqlite3.Connection) -> None:
        if plan.snapshot is not None:
            _insert_snapshot(c, plan.snapshot_set, plan.snapshot)
            # The whole log goes: rows past the index here, the rest (at or
            # below it) is garbage by the rule that the log starts after the
            # visible snapshot.
            c.execute("DELETE FROM log WHERE idx > ?", (plan.snapshot.meta.index,))
            plan.fail("snapshot")
        if plan.entries:
            if plan.truncate_from:
                c.execute("DELETE FROM log WHERE idx >= ?", (plan.truncate_from,))
            c.executemany(
                _INSERT_ENTRY, [(e.index, e.term, int(e.kind), e.data) for e in plan.entries]
            )
            plan.fail("entries")
        hs = plan.hard_state
        if hs is not None:
            c.execute(_UPSERT_HARD_STATE, (hs.term, hs.vote, hs.commit))
            plan.fail("hard_state")

    _transaction(conn, body)


def _insert_chunks(c: sqlite3.Connection, rows: list[tuple[int, int, bytes]]) -> None:
    c.executemany(_INSERT_CHUNK, rows)


def _insert_snapshot(c: sqlite3.Connection, set_id: int, snapshot: Snapshot) -> None:
    m = snapshot.meta
    c.execute(_INSERT_SNAPSHOT, (set_id, m.index, m.term, m.conf.encode().decode(), snapshot.data))
    c.execute("DELETE FROM snapshots WHERE id <> ?", (set_id,))


def _delete_garbage(conn: sqlite3.Connection, keep: frozenset[int], log_upto: int) -> int:
    # Each DELETE runs in autocommit: one small transaction per batch, so a
    # save waits for one batch at most.
    marks = ",".join("?" * (len(keep) + 1))
    cur = conn.execute(
        "DELETE FROM chunks WHERE rowid IN (SELECT rowid FROM chunks"
        f" WHERE snapshot_id NOT IN ({marks}) LIMIT {_GC_CHUNK_ROWS})",
        (0, *keep),
    )
    if cur.rowcount > 0:
        return cur.rowcount
    lo = conn.execute("SELECT min(idx) FROM log").fetchone()[0]
    if lo is None or lo > log_upto:
        return 0
    # The last row of the batch: at most _GC_LOG_ROWS rows and _GC_LOG_BYTES
    # of data, and at least one row (length() reads no blob content).
    hi = conn.execute(
        "SELECT max(idx) FROM (SELECT idx, sum(length(data)) OVER (ORDER BY idx) AS total"
        " FROM log WHERE idx BETWEEN ? AND ?) WHERE total <= ?",
        (lo, min(log_upto, lo + _GC_LOG_ROWS - 1), _GC_LOG_BYTES),
    ).fetchone()[0]
    cur = conn.execute("DELETE FROM log WHERE idx <= ?", (lo if hi is None else hi,))
    return max(cur.rowcount, 0)


@dataclass(slots=True)
class _Loaded:
    mirror: MemoryStorage
    visible_set: int
    next_set: int
    migrated: bool


def _open_sync(
    conn: sqlite3.Connection,
    data_dir: Path,
    node_id: int,
    cluster_id: str,
    voters: tuple[int, ...],
    fail_point: FailPoint | None,
) -> _Loaded:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageCorrupt(f"cannot switch {data_dir / FILE_NAME} to WAL (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # SqliteStorage._checkpoints does it
    version = _schema_version(conn)
    migrated = False
    if version is None:
        if voters and node_id not in voters:
            raise ValueError(f"node {node_id} is not among the founding voters {list(voters)}")
        _transaction(conn, lambda c: _initialize(c, node_id, cluster_id, voters))
    elif version == 1:
        _migrate_v1(conn, data_dir, node_id, cluster_id, voters, fail_point)
        migrated = True
    elif version == SCHEMA_VERSION:
        _check_identity(conn, data_dir, node_id, cluster_id)
    else:
        raise StorageMismatch(
            f"data dir {data_dir} has schema version {version}; this httpcoord reads versions"
            f" 1 and {SCHEMA_VERSION}: run the httpcoord release that wrote it"
        )
    return _load(conn, data_dir, migrated)


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _initialize(
    c: sqlite3.Connection, node_id: int, cluster_id: str, voters: tuple[int, ...]
) -> None:
    """A fresh data dir, in one transaction with the founding state."""
    # A single node that crashed inside its very first open can leave its
    # (empty) schema-1 tables without a version row.
    for table in _V1_ONLY_TABLES:
        c.execute(f"DROP TABLE IF EXISTS {table}")
    for stmt in _V2_TABLES:
        c.execute(stmt)
    _write_meta(c, node_id, cluster_id)
    if voters:
        hs, entries = bootstrap_state(voters)
        c.executemany(_INSERT_ENTRY, [(e.index, e.term, int(e.kind), e.data) for e in entries])
        c.execute(_UPSERT_HARD_STATE, (hs.term, hs.vote, hs.commit))


def _write_meta(c: sqlite3.Connection, node_id: int, cluster_id: str) -> None:
    c.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [
            ("schema_version", str(SCHEMA_VERSION)),
            ("node_id", str(node_id)),
            ("cluster_id", cluster_id),
        ],
    )


def _check_identity(c: sqlite3.Connection, data_dir: Path, node_id: int, cluster_id: str) -> None:
    meta = dict(c.execute("SELECT key, value FROM meta WHERE key IN ('node_id', 'cluster_id')"))
    stored_node, stored_cluster = meta.get("node_id"), meta.get("cluster_id")
    if stored_node == str(node_id) and stored_cluster == cluster_id:
        return
    raise StorageMismatch(
        f"data dir {data_dir} belongs to node {stored_node} of cluster {stored_cluster!r},"
        f" not node {node_id} of cluster {cluster_id!r}: start it with the --id, --peers and"
        " --cluster-token it was created with (a member whose data is lost must not rejoin"
        " under the same --id: see docs/operations.md)"
    )


def _load(conn: sqlite3.Connection, data_dir: Path, migrated: bool) -> _Loaded:
    mirror = MemoryStorage()
    row = conn.execute("SELECT term, vote, commit_index FROM hard_state WHERE id = 0").fetchone()
    hard_state = HardState(*row) if row else None
    snap_row = conn.execute(
        "SELECT id, log_index, log_term, membership, descriptor FROM snapshots"
        " ORDER BY log_index DESC LIMIT 1"
    ).fetchone()
    snapshot: Snapshot | None = None
    visible_set = 0
    after = 0
    if snap_row is not None:
        visible_set, after, term, membership, descriptor = snap_row
        try:
            conf = ConfState.decode(membership.encode())
            desc = decode_descriptor(bytes(descriptor))
        except (MessageDecodeError, SnapshotCorrupt) as exc:
            raise StorageCorrupt(f"{data_dir / FILE_NAME}: snapshot {visible_set}: {exc}") from None
        held = conn.execute(
            "SELECT count(*) FROM chunks WHERE snapshot_id = ?", (visible_set,)
        ).fetchone()[0]
        if held != desc.chunk_count:
            raise StorageCorrupt(
                f"{data_dir / FILE_NAME}: snapshot at index {after} has {held} of its"
                f" {desc.chunk_count} chunks"
            )
        snapshot = Snapshot(SnapshotMeta(after, term, conf), bytes(descriptor))
    entries = list(_entries_after(conn, data_dir, after))
    mirror.save(hard_state, snapshot, entries)
    next_set = conn.execute(
        "SELECT max(coalesce((SELECT max(id) FROM snapshots), 0),"
        " coalesce((SELECT max(snapshot_id) FROM chunks), 0)) + 1"
    ).fetchone()[0]
    return _Loaded(mirror, visible_set, int(next_set), migrated)


def _entries_after(conn: sqlite3.Connection, data_dir: Path, index: int) -> Iterator[Entry]:
    expected = index + 1
    for idx, term, kind, data in conn.execute(
        "SELECT idx, term, kind, data FROM log WHERE idx > ? ORDER BY idx", (index,)
    ):
        if idx != expected:
            raise StorageCorrupt(
                f"{data_dir / FILE_NAME}: gap in the log: expected entry {expected}, found {idx}"
            )
        expected += 1
        yield Entry(idx, term, EntryKind(kind), bytes(data))


# ---- migration from the single node's schema 1 ---------------------------------------------


def _migrate_v1(
    conn: sqlite3.Connection,
    data_dir: Path,
    node_id: int,
    cluster_id: str,
    voters: tuple[int, ...],
    fail_point: FailPoint | None,
) -> None:
    """Turn the single node's log into one snapshot of a cluster of one.

    Its entries have term 0 and no membership entry, so a replicated log
    cannot continue it; the tree it describes can. The tree is rebuilt as the
    single node recovered it (snapshot, then the log after it, refused txns
    refused again) and stored as a v2 snapshot at the last index with term 1
    and membership {node_id}; the hard state is (term 1, no vote, commit =
    that index). The chunks are written first, under tables schema 1 does not
    have; one last transaction then stores the snapshot and hard state, drops
    the old log and tables and bumps the version. A crash before it leaves the
    schema-1 data as it was (the next open starts over); after it, v2."""
    if set(voters) != {node_id}:
        raise StorageMismatch(
            f"data dir {data_dir} was written by a single node (schema 1) and must be migrated"
            " before it joins a cluster: start it once alone"
            f" (`httpcoord serve --data-dir {data_dir}`) to migrate it; it then runs as a"
            " cluster of one (members cannot be added at runtime yet)"
        )
    tree, last = _replay_v1(conn, data_dir)

    def fail(step: str) -> None:
        if fail_point is not None:
            fail_point(step)

    if last == 0:  # nothing was ever written: start as a fresh founding member

        def fresh(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM log")
            _initialize(c, node_id, cluster_id, voters)

        _transaction(conn, fresh)
        return

    def prepare(c: sqlite3.Connection) -> None:
        # Left behind by a migration a crash cut short: start over.
        for table in _V2_ONLY_TABLES:
            c.execute(f"DROP TABLE IF EXISTS {table}")
        for stmt in _V2_TABLES:
            c.execute(stmt)

    _transaction(conn, prepare)
    chunks = list(tree.snapshot_chunks())
    descriptor = encode_descriptor(describe_chunks(tree.zxid, chunks, time.time_ns() // 1_000_000))
    set_id = 1
    batch: list[tuple[int, int, bytes]] = []
    batch_bytes = 0
    for seq, chunk in enumerate(chunks):
        batch.append((set_id, seq, chunk))
        batch_bytes += len(chunk)
        if batch_bytes >= SNAPSHOT_TXN_BYTES or seq == len(chunks) - 1:
            _transaction(conn, functools.partial(_insert_chunks, rows=batch))
            batch, batch_bytes = [], 0
            fail("chunks")
    snapshot = Snapshot(SnapshotMeta(last, 1, ConfState(frozenset({node_id}))), descriptor)

    def switch(c: sqlite3.Connection) -> None:
        _insert_snapshot(c, set_id, snapshot)
        c.execute(_UPSERT_HARD_STATE, (1, 0, last))
        c.execute("DELETE FROM log")
        for table in _V1_ONLY_TABLES:
            c.execute(f"DROP TABLE {table}")
        _write_meta(c, node_id, cluster_id)
        fail("switch")

    _transaction(conn, switch)


def _replay_v1(conn: sqlite3.Connection, data_dir: Path) -> tuple[Tree, int]:
    """The single node's recovery (cluster/node.py's _recover): the newest
    snapshot, then every txn after it. Returns the tree and the last index."""
    row = conn.execute(
        "SELECT id, log_index, zxid, chunks FROM snapshot ORDER BY log_index DESC LIMIT 1"
    ).fetchone()
    tree, applied = Tree(), 0
    if row is not None:
        snap_id, applied, zxid, count = row
        chunks = [
            bytes(d)
            for (d,) in conn.execute(
                "SELECT data FROM snapshot_chunk WHERE snapshot_id = ? ORDER BY seq", (snap_id,)
            )
        ]
        if len(chunks) != count:
            raise StorageCorrupt(f"{data_dir}: schema-1 snapshot {snap_id} is missing chunks")
        tree = Tree.from_snapshot(chunks)
        if tree.zxid != zxid:
            raise StorageCorrupt(f"{data_dir}: schema-1 snapshot {snap_id} says zxid {zxid}")
    last = applied
    rows: Any = conn.execute(
        "SELECT idx, kind, data FROM log WHERE idx > ? ORDER BY idx", (applied,)
    )
    for idx, kind, data in rows:
        if idx != last + 1:
            raise StorageCorrupt(f"{data_dir}: gap in the schema-1 log at entry {last + 1}")
        if kind == 0:  # a txn; 1 is a no-op the tree never saw
            with suppress(CoordError):  # refused then, refused again now
                tree.apply(decode_txn(bytes(data)))
        last = idx
    return tree, last


def _fsync_dir(path: Path) -> None:
    """Make the creation of the database and WAL files themselves durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
