"""The znode tree: ZooKeeper's DataTree as a deterministic state machine.

``Tree.apply(txn)`` checks and applies one txn at the next zxid and returns
its result and the events it caused. A txn is all or nothing: every mutation
pushes an undo record, and a refusal (or a bug) rolls the whole txn back
before the error leaves ``apply``, so a refused txn changes nothing and takes
no zxid. Same log in, same tree out, byte for byte (see ``snapshot_chunks``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from httpcoord.errors import (
    BadArguments,
    BadVersion,
    CoordError,
    MultiFailed,
    NoChildrenForEphemerals,
    NoNode,
    NodeExists,
    NotEmpty,
)
from httpcoord.tree.paths import ROOT, join, name_of, parent_of, sequence_name, validate_path
from httpcoord.tree.stat import Stat
from httpcoord.tree.txn import ANY_VERSION, CheckOp, CreateOp, DeleteOp, Op, SetDataOp, Txn

SNAPSHOT_FORMAT_VERSION = 1


@dataclass(slots=True)
class Node:
    data: bytes
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int = 0
    cversion: int = 0
    aversion: int = 0
    ephemeral_owner: str = ""
    children: set[str] = field(default_factory=set)

    def stat(self) -> Stat:
        return Stat(
            self.czxid,
            self.mzxid,
            self.pzxid,
            self.ctime,
            self.mtime,
            self.version,
            self.cversion,
            self.aversion,
            self.ephemeral_owner,
            len(self.data),
            len(self.children),
        )


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # created | deleted | data_changed | children_changed
    path: str
    zxid: int
    stat: Stat | None  # None for deleted


@dataclass(frozen=True, slots=True)
class OpResult:
    op: str  # create | set | delete | check
    path: str
    stat: Stat | None = None  # after the op; None for delete and check
    created: bool = False  # a set that created its node (upsert)


@dataclass(frozen=True, slots=True)
class TxnResult:
    zxid: int
    results: tuple[OpResult, ...]


# Undo records, replayed in reverse on rollback.
_UNDO_INSERT = 0  # (kind, path): remove the inserted node
_UNDO_REMOVE = 1  # (kind, path, node): put the removed node back
_UNDO_FIELDS = 2  # (kind, node, data, mzxid, pzxid, mtime, version, cversion)
_UNDO_UNLINK = 3  # (kind, parent node, child name): give the parent its child back


class Tree:
    """Owns every node, its stat and the zxid; changed only by ``apply``."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {ROOT: Node(b"", 0, 0, 0, 0, 0)}
        self.zxid = 0
        # Per-txn scratch state, valid only inside apply().
        self._undo: list[tuple[Any, ...]] = []
        self._events: list[Event] = []

    # ---- reads -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, path: str) -> Node:
        node = self._nodes.get(path)
        if node is None:
            raise NoNode(path=path)
        return node

    def exists(self, path: str) -> bool:
        return path in self._nodes

    def children(self, path: str) -> list[str]:
        return sorted(self.get(path).children)

    # ---- writes ------------------------------------------------------------

    def apply(self, txn: Txn) -> tuple[TxnResult, list[Event]]:
        """Apply ``txn`` at zxid ``self.zxid + 1``, or raise and change nothing."""
        zxid = self.zxid + 1
        self._undo = []
        self._events = []
        results: list[OpResult] = []
        try:
            for op in txn.ops:
                results.append(self._apply_op(op, zxid, txn.time_ms))
        except CoordError as exc:
            self._rollback()
            if not txn.multi:
                raise
            failed = len(results)
            raise MultiFailed(failed, exc, len(txn.ops)) from None
        except BaseException:
            # A bug must not leave a half-applied txn behind it.
            self._rollback()
            raise
        events, self._events, self._undo = self._events, [], []
        self.zxid = zxid
        return TxnResult(zxid, tuple(results)), events

    def _apply_op(self, op: Op, zxid: int, time_ms: int) -> OpResult:
        if isinstance(op, CreateOp):
            return self._create(op, zxid, time_ms)
        if isinstance(op, SetDataOp):
            return self._set(op, zxid, time_ms)
        if isinstance(op, DeleteOp):
            return self._delete(op, zxid)
        if isinstance(op, CheckOp):
            return self._check(op)
        raise BadArguments(f"unknown op {op!r}")

    def _create(self, op: CreateOp, zxid: int, time_ms: int) -> OpResult:
        validate_path(op.path, sequential=op.sequential)
        parent_path = parent_of(op.path + "0") if op.sequential else parent_of(op.path)
        if op.path == ROOT and not op.sequential:
            raise NodeExists(path=ROOT)
        parent = self._nodes.get(parent_path)
        if parent is None:
            if not op.parents:
                raise NoNode(f"parent {parent_path} does not exist", path=parent_path)
            parent = self._create_parents(parent_path, zxid, time_ms)
        path = sequence_name(op.path, _creates_under(parent)) if op.sequential else op.path
        if path in self._nodes:
            raise NodeExists(path=path)
        if parent.ephemeral_owner:
            raise NoChildrenForEphemerals(path=path)
        node = self._insert(path, parent_path, parent, op.data, zxid, time_ms)
        return OpResult("create", path, node.stat())

    def _create_parents(self, path: str, zxid: int, time_ms: int) -> Node:
        """Create the missing ancestors of a node, top down, as plain empty nodes."""
        missing = [path]
        up = parent_of(path)
        while up not in self._nodes:
            missing.append(up)
            up = parent_of(up)
        parent = self._nodes[up]
        if parent.ephemeral_owner:
            raise NoChildrenForEphemerals(path=missing[-1])
        for p in reversed(missing):
            parent = self._insert(p, up, parent, b"", zxid, time_ms)
            up = p
        return parent

    def _insert(
        self, path: str, parent_path: str, parent: Node, data: bytes, zxid: int, time_ms: int
    ) -> Node:
        node = Node(data, zxid, zxid, zxid, time_ms, time_ms)
        self._save_fields(parent)
        self._nodes[path] = node
        parent.children.add(name_of(path))
        parent.cversion += 1
        parent.pzxid = zxid
        self._undo.append((_UNDO_INSERT, path))
        self._events.append(Event("created", path, zxid, node.stat()))
        self._events.append(Event("children_changed", parent_path, zxid, parent.stat()))
        return node

    def _set(self, op: SetDataOp, zxid: int, time_ms: int) -> OpResult:
        validate_path(op.path)
        node = self._nodes.get(op.path)
        if node is None:
            if op.upsert and op.version == ANY_VERSION:
                created = self._create(CreateOp(op.path, op.data), zxid, time_ms)
                return OpResult("set", op.path, created.stat, created=True)
            raise NoNode(path=op.path)
        _check_version(op.path, node, op.version)
        self._save_fields(node)
        node.data = op.data
        node.version += 1
        node.mzxid = zxid
        node.mtime = time_ms
        stat = node.stat()
        self._events.append(Event("data_changed", op.path, zxid, stat))
        return OpResult("set", op.path, stat)

    def _delete(self, op: DeleteOp, zxid: int) -> OpResult:
        validate_path(op.path)
        if op.path == ROOT:
            raise BadArguments("the root cannot be deleted", path=ROOT)
        node = self._nodes.get(op.path)
        if node is None:
            raise NoNode(path=op.path)
        _check_version(op.path, node, op.version)
        if node.children and not op.recursive:
            raise NotEmpty(path=op.path)
        # Children first, deepest first, so every event names a node that the
        # tree no longer holds and the parent it left still exists.
        for path in self._subtree_post_order(op.path):
            self._remove(path, zxid)
        parent_path = parent_of(op.path)
        parent = self._nodes[parent_path]
        self._save_fields(parent)
        parent.children.discard(name_of(op.path))
        self._undo.append((_UNDO_UNLINK, parent, name_of(op.path)))
        parent.cversion += 1
        parent.pzxid = zxid
        self._events.append(Event("children_changed", parent_path, zxid, parent.stat()))
        return OpResult("delete", op.path)

    def _subtree_post_order(self, top: str) -> list[str]:
        order: list[str] = []
        stack = [(top, False)]
        while stack:
            path, expanded = stack.pop()
            if expanded:
                order.append(path)
                continue
            stack.append((path, True))
            for name in sorted(self._nodes[path].children, reverse=True):
                stack.append((join(path, name), False))
        return order

    def _remove(self, path: str, zxid: int) -> None:
        """Remove one node from the map; the caller updates the surviving parent."""
        node = self._nodes.pop(path)
        self._undo.append((_UNDO_REMOVE, path, node))
        self._events.append(Event("deleted", path, zxid, None))

    def _check(self, op: CheckOp) -> OpResult:
        validate_path(op.path)
        node = self._nodes.get(op.path)
        if node is None:
            raise NoNode(path=op.path)
        _check_version(op.path, node, op.version)
        return OpResult("check", op.path)

    # ---- undo ---------------------------------------------------------------

    def _save_fields(self, node: Node) -> None:
        self._undo.append(
            (_UNDO_FIELDS, node, node.data, node.mzxid, node.pzxid, node.mtime, node.version,
             node.cversion)
        )

    def _rollback(self) -> None:
        for record in reversed(self._undo):
            kind = record[0]
            if kind == _UNDO_INSERT:
                path = record[1]
                del self._nodes[path]
                self._nodes[parent_of(path)].children.discard(name_of(path))
            elif kind == _UNDO_REMOVE:
                path, node = record[1], record[2]
                self._nodes[path] = node
            elif kind == _UNDO_UNLINK:
                record[1].children.add(record[2])
            else:
                _, node, data, mzxid, pzxid, mtime, version, cversion = record
                node.data, node.mzxid, node.pzxid, node.mtime = data, mzxid, pzxid, mtime
                node.version, node.cversion = version, cversion
        self._undo = []
        self._events = []

    # ---- snapshots ----------------------------------------------------------

    def snapshot_chunks(self, nodes_per_chunk: int = 10_000) -> Iterator[bytes]:
        """The whole tree as canonical JSON chunks: a header, then nodes sorted
        by path. Two trees are equal exactly when their chunks are equal."""
        paths = sorted(self._nodes)
        yield orjson.dumps({"v": SNAPSHOT_FORMAT_VERSION, "zxid": self.zxid, "nodes": len(paths)})
        for start in range(0, len(paths), nodes_per_chunk):
            rows = []
            for path in paths[start : start + nodes_per_chunk]:
                n = self._nodes[path]
                rows.append(
                    (path, base64.b64encode(n.data).decode("ascii"), n.czxid, n.mzxid, n.pzxid,
                     n.ctime, n.mtime, n.version, n.cversion, n.aversion, n.ephemeral_owner)
                )
            yield orjson.dumps(rows)

    @classmethod
    def from_snapshot(cls, chunks: Iterable[bytes]) -> Tree:
        it = iter(chunks)
        header = orjson.loads(next(it))
        if header.get("v") != SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"unknown snapshot format {header.get('v')!r}")
        tree = cls()
        nodes = tree._nodes
        nodes.clear()
        for chunk in it:
            for path, data, czxid, mzxid, pzxid, ctime, mtime, ver, cver, aver, owner in orjson.loads(chunk):
                nodes[path] = Node(base64.b64decode(data), czxid, mzxid, pzxid, ctime, mtime,
                                   ver, cver, aver, owner)
        # Paths were sorted, so every parent is already present.
        for path in nodes:
            if path != ROOT:
                nodes[parent_of(path)].children.add(name_of(path))
        if len(nodes) != header["nodes"] or ROOT not in nodes:
            raise ValueError("snapshot is incomplete")
        tree.zxid = header["zxid"]
        return tree

    def snapshot_bytes(self) -> bytes:
        return b"\n".join(self.snapshot_chunks())


def _creates_under(parent: Node) -> int:
    """ZooKeeper's sequence counter: how many children were ever created under
    ``parent``. Every create and every delete of a child bumps cversion, while
    the child count goes up and down with them, so the number of creates is
    (cversion + children) / 2 and needs no state of its own."""
    return (parent.cversion + len(parent.children)) // 2


def _check_version(path: str, node: Node, version: int) -> None:
    if version != ANY_VERSION and version != node.version:
        raise BadVersion(f"expected version {version}, node has {node.version}", path=path,
                         version=node.version)

