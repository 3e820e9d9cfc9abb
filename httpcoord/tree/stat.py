"""The stat of a znode: ZooKeeper's fields, in snake_case."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Stat:
    czxid: int  # zxid of the txn that created the node
    mzxid: int  # zxid of the txn that last set its data
    pzxid: int  # zxid of the txn that last added or removed a child
    ctime: int  # epoch ms of the creating txn (the leader's clock)
    mtime: int  # epoch ms of the last data change
    version: int  # number of data changes
    cversion: int  # number of child-list changes
    aversion: int  # number of ACL changes (always 0: no ACLs yet)
    ephemeral_owner: str  # owning session id; "" for non-ephemeral nodes
    data_length: int
    num_children: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_tuple(self) -> tuple[int | str, ...]:
        """The fields in order, as a plain tuple (``Stat(*t)`` rebuilds it)."""
        return (
            self.czxid,
            self.mzxid,
            self.pzxid,
            self.ctime,
            self.mtime,
            self.version,
            self.cversion,
            self.aversion,
            self.ephemeral_owner,
            self.data_length,
            self.num_children,
        )


STAT_FIELDS: tuple[str, ...] = tuple(Stat.__dataclass_fields__)
