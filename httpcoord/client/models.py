"""What the client hands back: typed results, and the ops of a multi.

Field names are the API's (docs/api.md); data is always ``bytes`` here,
whatever encoding it travelled in.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal


def child_path(parent: str, name: str) -> str:
    """The path of ``parent``'s child ``name`` (the root's children too)."""
    return f"{parent.rstrip('/')}/{name}"


def decode_data(body: dict[str, Any]) -> bytes:
    """The ``data`` of a read or an event, in the encoding it names."""
    data = body.get("data")
    if data is None:
        return b""
    if body.get("encoding") == "base64":
        return base64.b64decode(data)
    return str(data).encode()


def encode_data(data: bytes) -> tuple[str, str]:
    """(data, encoding) for a JSON body: text when it is UTF-8, else base64."""
    try:
        return data.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


@dataclass(frozen=True, slots=True)
class Stat:
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int  # epoch ms of the creating txn
    mtime: int  # epoch ms of the last set
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: str  # "" unless ephemeral
    data_length: int
    num_children: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Stat:
        return cls(**{name: body[name] for name in cls.__slots__})

    @property
    def ephemeral(self) -> bool:
        return bool(self.ephemeral_owner)


@dataclass(frozen=True, slots=True)
class Node:
    """A read: the node's data and stat, and its children when asked for."""

    path: str
    data: bytes
    stat: Stat
    children: list[str] | None = None
    zxid: int = 0  # the zxid the answering node had applied


@dataclass(frozen=True, slots=True)
class WriteResult:
    path: str  # for a sequential create, the name the counter gave
    zxid: int
    stat: Stat | None  # None after a delete


EventType = Literal["created", "deleted", "data_changed", "children_changed"]


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    path: str
    zxid: int
    stat: Stat | None
    data: bytes | None = None  # with ``data=True`` on created and data_changed

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Event:
        stat = body.get("stat")
        return cls(
            type=body["type"],
            path=body["path"],
            zxid=body["zxid"],
            stat=Stat.from_json(stat) if stat else None,
            data=decode_data(body) if "data" in body else None,
        )


@dataclass(frozen=True, slots=True)
class Resync:
    """A watch resumed too late (the node's history no longer held the
    events it missed): what it watches, read afresh at ``zxid``. Events
    after this item follow from that read. ``nodes`` maps each path
    watched (the subtree of a recursive watch) to its node, ``None`` for
    a watched path that does not exist."""

    zxid: int
    nodes: dict[str, Node | None]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    ttl_ms: int
    expires_in_ms: int | None  # known on the leader only
    ephemerals: list[str]


# ---- multi ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateOp:
    path: str
    data: bytes = b""
    sequential: bool = False
    parents: bool = False
    ephemeral: bool = False
    container: bool = False
    ttl_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        data, encoding = encode_data(self.data)
        return {
            "op": "create",
            "path": self.path,
            "data": data,
            "encoding": encoding,
            "sequential": self.sequential,
            "parents": self.parents,
            "ephemeral": self.ephemeral,
            "container": self.container,
            "ttl_ms": self.ttl_ms,
        }


@dataclass(frozen=True, slots=True)
class SetOp:
    path: str
    data: bytes
    version: int = -1

    def to_json(self) -> dict[str, Any]:
        data, encoding = encode_data(self.data)
        return {
            "op": "set",
            "path": self.path,
            "data": data,
            "encoding": encoding,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class CheckOp:
    """Succeeds only if the node exists (and has ``version``, unless -1)."""

    path: str
    version: int = -1

    def to_json(self) -> dict[str, Any]:
        return {"op": "check", "path": self.path, "version": self.version}


@dataclass(frozen=True, slots=True)
class DeleteOp:
    path: str
    version: int = -1
    recursive: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "delete",
            "path": self.path,
            "version": self.version,
            "recursive": self.recursive,
        }


Op = CreateOp | SetOp | CheckOp | DeleteOp


@dataclass(frozen=True, slots=True)
class OpResult:
    op: str
    path: str
    stat: Stat | None


@dataclass(frozen=True, slots=True)
class MultiResult:
    zxid: int
    results: list[OpResult] = field(default_factory=list)
