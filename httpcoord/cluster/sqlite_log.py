"""The durable log and snapshots in SQLite (aiosqlite, WAL, synchronous=FULL).

Tables:
  log(idx, term, kind, data)          one row per entry, idx = log index
  snapshot(id, log_index, log_term, zxid, created_ms, chunks)
  snapshot_chunk(snapshot_id, seq, data)  the tree's canonical chunks
  meta(key, value)                    format version and node identity

Durability contract: ``append`` returns only after one transaction holding
every given entry is committed with an fsync of the WAL (group commit: the
caller passes everything that is ready at once). ``install_snapshot`` writes
the snapshot and drops the log rows it covers in one transaction, so a crash
leaves either the old snapshot and the full log or the new snapshot and the
shorter log, never a gap.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

SCHEMA_VERSION = 1

# Entry kinds: what the data column holds.
KIND_TXN = 0  # a tree txn (httpcoord.tree.txn encoding)
KIND_NOOP = 1  # a leader's no-op; the tree never sees it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY,
    log_index INTEGER NOT NULL,
    log_term INTEGER NOT NULL,
    zxid INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_chunk (
    snapshot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (snapshot_id, seq)
);
"""


_INSERT_SNAPSHOT_SQL = (
    "INSERT INTO snapshot(id, log_index, log_term, zxid, created_ms, chunks)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)

# A snapshot is written this many bytes per transaction, so that appends
# interleave with a large snapshot rather than wait for all of it.
_SNAPSHOT_TXN_BYTES = 4 * 1024 * 1024

# SQLite binds at most 32766 variables per statement (3.32+); 4 per row.
_ROWS_PER_INSERT_MAX = 4096


@functools.lru_cache(maxsize=256)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO log(idx, term, kind, data) VALUES " + ",".join(["(?,?,?,?)"] * rows)


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    term: int
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    id: int
    log_index: int
    log_term: int
    zxid: int
    created_ms: int
    chunks: int


class StorageCorrupt(RuntimeError):
    pass


class SqliteLog:
    """One SQLite file per node: ``<data_dir>/httpcoord.sqlite3``."""

    FILE_NAME = "httpcoord.sqlite3"

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.fsyncs = 0  # committed transactions, each one fsync of the WAL
        self.entries_appended = 0
        # One write transaction at a time on the one connection: an append
        # issued while a snapshot's BEGIN..COMMIT is open would join that
        # transaction, return before anything is durable, and vanish with
        # its ROLLBACK.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path) -> SqliteLog:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / cls.FILE_NAME
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            # WAL + FULL: every commit fsyncs the WAL before it returns, which is
            # what "durable before acknowledged" needs; NORMAL would not.
            mode = await _scalar(db, "PRAGMA journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise StorageCorrupt(f"cannot switch {path} to WAL (got {mode!r})")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=OFF")
            await db.executescript(_SCHEMA)
            version = await _scalar(db, "SELECT value FROM meta WHERE key='schema_version'")
            if version is None:
                await db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(version) != SCHEMA_VERSION:
                raise StorageCorrupt(
                    f"{path} has schema version {version}, expected {SCHEMA_VERSION}"
                )
            # Chunks of a snapshot whose install a crash cut short.
            await db.execute(
                "DELETE FROM snapshot_chunk WHERE snapshot_id NOT IN (SELECT id FROM snapshot)"
            )
        except BaseException:
            await db.close()
            raise
        _fsync_dir(data_dir)
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    # ---- the log -------------------------------------------------------------

    async def append(self, entries: Iterable[LogEntry]) -> None:
        """Durably append ``entries`` (consecutive indexes) in one fsynced txn.

        One multi-row INSERT in autocommit mode is one implicit transaction
        and one trip to the database thread; a batch larger than one
        statement can bind falls back to an explicit transaction."""
        rows = [(e.index, e.term, e.kind, e.data) for e in entries]
        if not rows:
            return
        async with self._write_lock:
            await self._append_rows(rows)
        self.fsyncs += 1
        self.entries_appended += len(rows)

    async def _append_rows(self, rows: list[tuple[int, int, int, bytes]]) -> None:
        if len(rows) <= _ROWS_PER_INSERT_MAX:
            params = [value for row in rows for value in row]
            await self._db.execute(_insert_sql(len(rows)), params)
        else:
            await self._db.execute("BEGIN")
            try:
                await self._db.executemany(
                    "INSERT INTO log(idx, term, kind, data) VALUES (?, ?, ?, ?)", rows
                )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def last_index(self) -> int:
        """The last index held, in the log or covered by the newest snapshot."""
        last = await _scalar(self._db, "SELECT max(idx) FROM log")
        if last is not None:
            return int(last)
        snap = await self.latest_snapshot()
        return snap.log_index if snap else 0

    async def entries_after(self, index: int) -> AsyncIterator[LogEntry]:
        """Entries with idx > index, in order; checks that none is missing."""
        expected = index + 1
        async with self._db.execute(
            "SELECT idx, term, kind, data FROM log WHERE idx > ? ORDER BY idx", (index,)
        ) as cursor:
            async for idx, term, kind, data in cursor:
                if idx != expected:
                    raise StorageCorrupt(f"log gap: expected entry {expected}, found {idx}")
                expected += 1
                yield LogEntry(idx, term, kind, bytes(data))

    # ---- snapshots -------------------------------------------------------------

    async def latest_snapshot(self) -> SnapshotMeta | None:
        async with self._db.execute(
            "SELECT id, log_index, log_term, zxid, created_ms, chunks FROM snapshot"
            " ORDER BY log_index DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        return SnapshotMeta(*row) if row else None

    async def snapshot_chunks(self, snapshot_id: int) -> AsyncIterator[bytes]:
        async with self._db.execute(
            "SELECT data FROM snapshot_chunk WHERE snapshot_id = ? ORDER BY seq", (snapshot_id,)
        ) as cursor:
            async for (data,) in cursor:
                yield bytes(data)

    async def install_snapshot(
        self, log_index: int, log_term: int, zxid: int, created_ms: int, chunks: list[bytes]
    ) -> SnapshotMeta:
        """Store a snapshot of the state at ``log_index``, then drop the log
        rows it covers and every older snapshot.

        The chunks go in first, a few MiB per transaction under a staging id
        that no snapshot row names yet, so appends interleave with them
        instead of waiting for the whole tree to be written. One last small
        transaction makes the snapshot visible; what it replaces (older
        chunks, the log up to its index) is then deleted in batches. A crash
        before the snapshot is visible leaves the old snapshot and the whole
        log (the orphan chunks are removed at the next open); a crash during
        the deletes leaves garbage that no reader looks at and that the next
        snapshot removes."""
        snap_id = await self._staging_id()
        group: list[tuple[int, int, bytes]] = []
        size = 0
        for seq, chunk in enumerate(chunks):
            group.append((snap_id, seq, chunk))
            size += len(chunk)
            if size >= _SNAPSHOT_TXN_BYTES:
                await self._write_chunks(group)
                group, size = [], 0
        if group:
            await self._write_chunks(group)
        async with self._write_lock:
            await self._in_transaction(
                (
                    _INSERT_SNAPSHOT_SQL,
                    (snap_id, log_index, log_term, zxid, created_ms, len(chunks)),
                ),
                ("DELETE FROM snapshot WHERE id <> ?", (snap_id,)),
            )
        self.fsyncs += 1
        # What the snapshot replaced goes in small transactions too. Until it
        # is gone it is garbage no reader looks at: recovery reads the newest
        # snapshot's chunks and the log after its index only.
        await self._delete_in_batches(
            "DELETE FROM snapshot_chunk WHERE rowid IN (SELECT rowid FROM snapshot_chunk"
            " WHERE snapshot_id <> ? LIMIT 16)",
            (snap_id,),
        )
        await self._delete_in_batches(
            "DELETE FROM log WHERE idx IN (SELECT idx FROM log WHERE idx <= ? LIMIT 10000)",
            (log_index,),
        )
        return SnapshotMeta(snap_id, log_index, log_term, zxid, created_ms, len(chunks))

    async def _delete_in_batches(self, sql: str, params: tuple[object, ...]) -> None:
        while True:
            async with self._write_lock:
                cursor = await self._db.execute(sql, params)  # autocommit: one txn
                deleted = cursor.rowcount
            self.fsyncs += 1
            if deleted <= 0:
                return

    async def _staging_id(self) -> int:
        return int(
            await _scalar(
                self._db,
                "SELECT max(coalesce((SELECT max(id) FROM snapshot), 0),"
                " coalesce((SELECT max(snapshot_id) FROM snapshot_chunk), 0)) + 1",
            )
        )

    async def _write_chunks(self, rows: list[tuple[int, int, bytes]]) -> None:
        async with self._write_lock:
            db = self._db
            await db.execute("BEGIN")
            try:
                await db.executemany(
                    "INSERT INTO snapshot_chunk(snapshot_id, seq, data) VALUES (?, ?, ?)", rows
                )
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        self.fsyncs += 1

    async def _in_transaction(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        db = self._db
        await db.execute("BEGIN")
        try:
            for sql, params in statements:
                await db.execute(sql, params)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database file (after a snapshot shrank it)."""
        async with self._write_lock:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _scalar(db: aiosqlite.Connection, sql: str) -> Any:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


def _fsync_dir(path: Path) -> None:
    """Make the creation of the database and WAL files themselves durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
