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
from httpcoord.tree.stat import STAT_FIELDS, Stat
from httpcoord.tree.tree import Event

_EVENT_OVERHEAD_BYTES = 200  # a rough cost per event beyond its path and data


@dataclass(frozen=True, slots=True)
class EventGroup:
    """All events of one txn: they share its zxid and are never split."""

    zxid: int
    events: tuple[Event, ...]
    size_bytes: int


# What the history keeps per txn: one flat tuple (zxid, size, then per event
# type, path, data, has_stat and the 11 stat fields). A tuple of ints, strs
# and bytes only is one the garbage collector stops tracking at its first
# pass; objects, or tuples nested in tuples, stay tracked for a long time:
# 100,000 kept events as objects made collections pause every request for
# 100-200 ms, the writes' p99 under load.
_PackedGroup = tuple[object, ...]
_EVENT_FIELDS = 4 + len(STAT_FIELDS)
_NO_STAT = (0,) * len(STAT_FIELDS)


def _pack(zxid: int, size: int, events: list[Event]) -> _PackedGroup:
    fields: list[object] = [zxid, size]
    for e in events:
        fields += (e.type, e.path, e.data, e.stat is not None)
        fields += _NO_STAT if e.stat is None else e.stat.as_tuple()
    return tuple(fields)


def _zxid_of(group: _PackedGroup) -> int:
    return group[0]  # type: ignore[return-value]


def _unpack(group: _PackedGroup) -> EventGroup:
    zxid, size = group[0], group[1]
    events = []
    for i in range(2, len(group), _EVENT_FIELDS):
        kind, path, data, has_stat = group[i : i + 4]
        stat = Stat(*group[i + 4 : i + _EVENT_FIELDS]) if has_stat else None  # type: ignore[arg-type]
        events.append(Event(kind, path, zxid, stat, data))  # type: ignore[arg-type]
    return EventGroup(zxid, tuple(events), size)  # type: ignore[arg-type]


class History:
    def __init__(self, events_max: int, bytes_max: int, start_zxid: int = 0) -> None:
        self.events_max = events_max
        self.bytes_max = bytes_max
        self._groups: list[_PackedGroup] = []
        self._first = 0  # groups before this offset are dropped (compacted lazily)
        self._events = 0
        self._bytes = 0
        # Every event with zxid <= compacted_zxid is gone: a since below it
        # cannot be served. Nothing before the start is known.
        self.compacted_zxid = start_zxid
        self.last_zxid = start_zxid

    def __len__(self) -> int:
        return self._events

    def append(self, zxid: int, events: list[Event]) -> None:
        """Record the events of the txn at ``zxid`` (zxids only increase)."""
        assert zxid > self.last_zxid, (zxid, self.last_zxid)
        self.last_zxid = zxid
        if not events:
            return
        size = sum(
            _EVENT_OVERHEAD_BYTES + len(e.path) + (len(e.data) if e.data else 0) for e in events
        )
        self._groups.append(_pack(zxid, size, events))
        self._events += len(events)
        self._bytes += size
        while self._first < len(self._groups) - 1 and (
            self._events > self.events_max or self._bytes > self.bytes_max
        ):
            dropped = self._groups[self._first]
            self._first += 1
            self._events -= (len(dropped) - 2) // _EVENT_FIELDS
            self._bytes -= dropped[1]  # type: ignore[operator]
            self.compacted_zxid = dropped[0]  # type: ignore[assignment]
        if self._first > 1024 and self._first * 2 > len(self._groups):
            del self._groups[: self._first]
            self._first = 0

    def reset(self, zxid: int) -> None:
        """The tree jumped to ``zxid`` (a snapshot from the leader replaced
        it): the events before are unknown here, so a since below it is
        ``Compacted``."""
        assert zxid >= self.last_zxid, (zxid, self.last_zxid)
        self._groups = []
        self._first = 0
        self._events = 0
        self._bytes = 0
        self.compacted_zxid = zxid
        self.last_zxid = zxid

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
        start = bisect.bisect_right(self._groups, since, lo=self._first, key=_zxid_of)
        for i in range(start, len(self._groups)):
            yield _unpack(self._groups[i])
