"""The consensus core's stable storage: a small Protocol and its in-memory
implementation.

``LogStorage`` is everything the core *reads* from durable state: the hard
state and the membership at the last snapshot when it starts, and log entries
and terms as it replicates. ``DurableLog`` adds what the driver *writes*: one
atomic ``save`` per ``Ready``, and snapshot/compaction. ``MemoryStorage``
implements both for tests and the simulator; the SQLite edge implements the
same Protocols, and one contract test suite should pass against both.

Layout of the log: entries ``first_index() .. last_index()`` are stored;
``term(first_index() - 1)`` is also known (it is the entry the log was
compacted behind, normally the snapshot's). A fresh, never-bootstrapped node
has an empty log with ``first_index() == 1`` and ``last_index() == 0``.

Persistence-ordering contract (the storage edge and the driver must honour it)
------------------------------------------------------------------------------
For every ``Ready`` the core hands out, the driver must, in this order:

1. ``save(ready.hard_state, ready.snapshot, ready.entries)`` as ONE atomic,
   durable write (fsync before returning): the snapshot, if any, replaces the
   whole log; the entries then overwrite any stored suffix starting at
   ``entries[0].index`` (everything after it is dropped); the hard state is
   written last in the same transaction. A crash leaves either all of it or
   none of it.
2. only then send ``ready.messages``: a vote grant, an append acknowledgement,
   or an append carrying the leader's own new entries is a promise about what
   is on disk, and must never reach a peer before it is.
3. then apply ``ready.snapshot`` and ``ready.committed_entries`` to the state
   machine in index order, and answer ``ready.read_states`` once the applied
   index reaches each read's index.
4. then call ``core.advance(ready)``.

A node that forgets its vote or its term after a crash can vote twice in one
term and elect two leaders; a node that acknowledges entries it has not
written can lose a committed entry. The simulator crashes nodes between these
steps to check exactly this.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter
from typing import Protocol

from httpcoord.cluster.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)

EMPTY_SNAPSHOT = Snapshot(SnapshotMeta(0, 0, ConfState()), b"")


class CompactedError(LookupError):
    """The index is behind the compaction point; only a snapshot has it."""


class UnavailableError(LookupError):
    """The index is past the end of the stored log."""


class LogStorage(Protocol):
    """What the core reads from durable state. All methods are cheap and
    synchronous from the core's point of view (an implementation may cache)."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The stored hard state, and the membership at the snapshot index.
        The core replays membership entries stored after the snapshot itself."""
        ...

    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1 after compaction)."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry, or of the snapshot if none follow it."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index()-1 <= index <= last_index().
        Raises CompactedError below that range and UnavailableError above it."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi), stopping before max_bytes of data is exceeded but
        always returning at least one entry when lo < hi. Raises CompactedError
        if lo < first_index() and UnavailableError if hi > last_index() + 1."""
        ...

    def snapshot(self) -> Snapshot:
        """The newest snapshot (EMPTY_SNAPSHOT if none)."""
        ...


class DurableLog(LogStorage, Protocol):
    """What the driver writes. See the module docstring for the ordering."""

    def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        """Persist one Ready atomically and durably."""
        ...

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record the state machine at an applied index (<= commit) as the
        newest snapshot. Does not drop entries: call compact for that."""
        ...

    def compact(self, index: int) -> None:
        """Drop entries up to and including index (<= the snapshot index)."""
        ...


_ENTRY_OVERHEAD_BYTES = 16


def entry_size_bytes(e: Entry) -> int:
    """The size counted against max_bytes limits: the payload plus a fixed
    overhead, so that batches of empty entries stay bounded too."""
    return len(e.data) + _ENTRY_OVERHEAD_BYTES


def bootstrap_state(voters: Sequence[int]) -> tuple[HardState, list[Entry]]:
    """The identical durable start of every founding member: one committed
    membership entry at index 1, term 1. A node added later starts empty and
    learns that entry (or a snapshot holding it) from the leader."""
    conf = ConfState(frozenset(voters), frozenset())
    return HardState(1, 0, 1), [Entry(1, 1, EntryKind.CONF, conf.encode())]


class MemoryStorage:
    """In-memory DurableLog: 'durable' means 'survives a simulated crash',
    because the simulator drops the core, never this object."""

    def __init__(self) -> None:
        self._hard_state = HardState(0, 0, 0)
        self._snapshot = EMPTY_SNAPSHOT
        # _entries[0] has index _offset + 1; _offset_term is term(_offset).
        self._offset = 0
        self._offset_term = 0
        self._entries: list[Entry] = []

    @classmethod
    def bootstrapped(cls, voters: Sequence[int]) -> MemoryStorage:
        s = cls()
        hs, entries = bootstrap_state(voters)
        s.save(hs, None, entries)
        return s

    # ---- LogStorage ----------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._entries)

    def term(self, index: int) -> int:
        if index == self._offset:
            return self._offset_term
        if index < self._offset:
            raise CompactedError(index)
        i = index - self._offset - 1
        if i >= len(self._entries):
            raise UnavailableError(index)
        return self._entries[i].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self._offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        out = self._entries[lo - self._offset - 1 : hi - self._offset - 1]
        return limit_bytes(out, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ---- DurableLog ----------------------------------------------------------

    def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        if snapshot is not None:
            assert snapshot.meta.index >= self._snapshot.meta.index, "snapshot went backwards"
            self._snapshot = snapshot
            self._offset = snapshot.meta.index
            self._offset_term = snapshot.meta.term
            self._entries = []
        if entries:
            first = entries[0].index
            assert self._offset < first <= self.last_index() + 1, "gap or compacted overwrite"
            del self._entries[first - self._offset - 1 :]
            self._entries.extend(entries)
        if hard_state is not None:
            assert hard_state.term >= self._hard_state.term, "term went backwards"
            self._hard_state = hard_state

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        assert self._snapshot.meta.index < index <= self.last_index()
        assert index <= self._hard_state.commit, "snapshot of an uncommitted index"
        self._snapshot = Snapshot(SnapshotMeta(index, self.term(index), conf), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        assert self._offset <= index <= self._snapshot.meta.index
        self._offset_term = self.term(index)
        del self._entries[: index - self._offset]
        self._offset = index


def limit_bytes(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within max_bytes (see entry_size_bytes), but never
    empty if entries is not. Sizes are summed in C (map/accumulate): this runs
    for every append and every batch of committed entries."""
    n = len(entries)
    if n <= 1:
        return entries
    sizes = list(accumulate(map(len, map(_DATA, entries))))
    if sizes[-1] + _ENTRY_OVERHEAD_BYTES * n <= max_bytes:
        return entries
    keep = bisect_right(
        range(n), max_bytes, key=lambda i: sizes[i] + _ENTRY_OVERHEAD_BYTES * (i + 1)
    )
    return entries[: max(keep, 1)]


_DATA = attrgetter("data")
