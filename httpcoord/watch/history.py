"""The newest applied events, grouped by zxid, bounded in groups and bytes.

Pure: no asyncio. A ``since`` older than what is kept is ``Compacted``; a
``since`` in the future is a bad argument. The node feeds it from recovery
too, so a restart keeps the history of the log behind the snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from httpcoord.errors import BadArguments, Compacted
from httpcoord.tree.tree import Event

_EVENT_OVERHEAD_BYTES = 200  # a rough cost per event beyond its path and data


@dataclass(frozen=True, slots=True)
class EventGroup:
    """All events of one txn: they share its zxid and are never split."""

    zxid: int
    events: tuple[Event, ...]
    size_bytes: int


class History:
    def __init__(self, events_max: int, bytes_max: int, start_zxid: int = 0) -> None:
        self.events_max = events_max
        self.bytes_max = bytes_max
        self._groups: list[EventGroup] = []
        self._first = 0  # groups before this offset are dropped (compacted lazily)
        self._events = 0
        self._bytes = 0
        # Every event with zxid <= compacted_zxid is gone: a since below it
        # cannot be served. Nothing before the start is known.
        self.compacted_zxid = start_zxid
        self.last_zxid = start_zxid

    def __len__(self) -> int:
        return self._events

    def append(self, zxid: int, events: list[Event]) -> EventGroup | None:
        """Record the events of the txn at ``zxid`` (zxids only increase)."""
        assert zxid > self.last_zxid, (zxid, self.last_zxid)
        self.last_zxid = zxid
        if not events:
            return None
        size = sum(
            _EVENT_OVERHEAD_BYTES + len(e.path) + (len(e.data) if e.data else 0) for e in events
        )
        group = EventGroup(zxid, tuple(events), size)
        self._groups.append(group)
        self._events += len(events)
        self._bytes += size
        while self._first < len(self._groups) - 1 and (
            self._events > self.events_max or self._bytes > self.bytes_max
        ):
            dropped = self._groups[self._first]
            self._first += 1
            self._events -= len(dropped.events)
            self._bytes -= dropped.size_bytes
            self.compacted_zxid = dropped.zxid
        if self._first > 1024 and self._first * 2 > len(self._groups):
            del self._groups[: self._first]
            self._first = 0
        return group

    def check_since(self, since: int) -> None:
        if since > self.last_zxid:
            raise BadArguments(
                f"since {since} is in the future; the last zxid is {self.last_zxid}",
                zxid=self.last_zxid,
            )
        if since < self.compacted_zxid:
            raise Compacted(
                f"events after {since} are no longer kept; re-read and resume from "
                f"{self.compacted_zxid} or later",
                oldest_zxid=self.compacted_zxid,
                zxid=self.last_zxid,
            )

    def after(self, since: int) -> Iterator[EventGroup]:
        """Groups with zxid > since, oldest first (call ``check_since`` first)."""
        start = bisect.bisect_right(self._groups, since, lo=self._first, key=lambda g: g.zxid)
        for i in range(start, len(self._groups)):
            yield self._groups[i]
