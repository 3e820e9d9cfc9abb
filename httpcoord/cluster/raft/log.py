"""The core's view of the log: stable entries (read through ``LogStorage``)
followed by unstable ones the core has appended but the driver has not yet
persisted, plus the commit and applied indexes.

Unstable entries shadow stored ones from ``_offset`` on: when a follower
truncates a conflicting suffix, the new entries go to the unstable part and
the driver's next ``save`` overwrites the stored suffix. An incoming snapshot
likewise sits here until it is saved.
"""

from __future__ import annotations

from httpcoord.cluster.raft.messages import Entry, Snapshot
from httpcoord.cluster.raft.storage import CompactedError, LogStorage, limit_bytes


class RaftLog:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self._unstable: list[Entry] = []
        # Index of _unstable[0] (when non-empty); always stored last_index + 1
        # or a truncation point at or below it.
        self._offset = storage.last_index() + 1
        self._unstable_snapshot: Snapshot | None = None
        hard_state, _ = storage.initial_state()
        # Everything up to the snapshot is in the state machine already (the
        # driver restores it from the snapshot before replaying entries).
        self.applied = storage.snapshot().meta.index
        self.committed = max(hard_state.commit, self.applied)

    # ---- indexes and terms ------------------------------------------------------

    def first_index(self) -> int:
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term at index; 0 past the end. Raises CompactedError before the start."""
        if index >= self._offset and self._unstable:
            i = index - self._offset
            return self._unstable[i].term if i < len(self._unstable) else 0
        snap = self._unstable_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise CompactedError(index)
            return 0
        if index > self.storage.last_index():
            return 0
        return self.storage.term(index)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except CompactedError:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction (§5.4.1): a candidate's log is at least as
        up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # ---- reading entries ----------------------------------------------------------

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi) within max_bytes (at least one). Raises CompactedError."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(lo)
        out: list[Entry] = []
        if lo < self._offset:
            stored = self.storage.entries(lo, min(hi, self._offset), max_bytes)
            if len(stored) < min(hi, self._offset) - lo:
                return stored  # the byte limit cut the stored part short
            out = stored
        if hi > self._offset:
            start = max(lo, self._offset) - self._offset
            out = out + self._unstable[start : hi - self._offset]
        return limit_bytes(out, max_bytes)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last (i, term(i)) with i <= index and term(i) <= term: no entry
        after it can match an entry of term <= term, so the leader may skip
        everything past it in one round trip (fast backtracking)."""
        index = min(index, self.last_index())
        while index >= self.first_index():
            t = self.term(index)
            if t <= term:
                return index, t
            index -= 1
        try:
            return index, self.term(index)
        except CompactedError:
            return 0, 0

    # ---- appending -----------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append (leader) or overwrite from entries[0].index (follower, after
        find_conflict). Committed entries are never overwritten."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, "overwriting a committed entry"
        last = self.last_index()
        assert first <= last + 1, "gap in the log"
        if first == self._offset + len(self._unstable):
            self._unstable.extend(entries)  # the common case: plain append
        elif first <= self._offset:
            # Truncate into the stored part: the next save overwrites it.
            self._offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - self._offset :]
            self._unstable.extend(entries)

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if we
        already hold all of them."""
        last = self.last_index()
        for e in entries:
            if e.index > last:
                return e.index
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    # ---- commit, apply, stable -------------------------------------------------------

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            assert index <= self.last_index(), "commit past the end of the log"
            self.committed = index
            return True
        return False

    def unstable_entries(self) -> list[Entry]:
        return self._unstable

    def unstable_snapshot(self) -> Snapshot | None:
        return self._unstable_snapshot

    def stable_to(self, index: int, term: int) -> None:
        """The driver saved entries up to (index, term). Unless a truncation
        replaced them meanwhile, they leave the unstable part."""
        if not self._unstable or index < self._offset:
            return
        i = index - self._offset
        if i < len(self._unstable) and self._unstable[i].term == term:
            del self._unstable[: i + 1]
            self._offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        snap = self._unstable_snapshot
        if snap is not None and snap.meta.index == index:
            self._unstable_snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot (a follower far behind)."""
        self._unstable_snapshot = snapshot
        self._unstable = []
        self._offset = snapshot.meta.index + 1
        self.committed = snapshot.meta.index
        # applied is moved when the driver has installed it (advance).
