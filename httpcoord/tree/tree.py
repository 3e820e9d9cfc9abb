"""The znode tree: ZooKeeper's DataTree as a deterministic state machine.

``Tree.apply(txn)`` checks and applies one txn at the next zxid and returns
its result and the events it caused. A txn is all or nothing: every mutation
pushes an undo record, and a refusal (or a bug) rolls the whole txn back
before the error leaves ``apply``, so a refused txn changes nothing and takes
no zxid. Same log in, same tree out, byte for byte (see ``snapshot_chunks``).

Two things follow every change without a scan of the tree, so that a tree of
millions of nodes never stalls the loop that serves it:

- ``digest``: a sum of one 64-bit hash per node and per session, updated by
  each txn for the nodes it touched. Two trees at one zxid have one digest.
- ``TreeView``: the tree as it was when the view was opened, read in chunks
  while the tree goes on changing. The tree keeps, for every open view, the
  first prior state of each node it changes (copy on write), so a snapshot
  is serialised a chunk at a time between requests instead of all at once.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from httpcoord.errors import (
    BadArguments,
    BadVersion,
    CoordError,
    MultiFailed,
    NoChildrenForEphemerals,
    NodeExists,
    NoNode,
    NotEmpty,
    SessionExpired,
)
from httpcoord.tree.paths import ROOT, join, name_of, parent_of, sequence_name, validate_path
from httpcoord.tree.stat import Stat
from httpcoord.tree.txn import (
    ANY_VERSION,
    CheckOp,
    CloseSessionOp,
    CreateOp,
    DeleteOp,
    Op,
    OpenSessionOp,
    ReapOp,
    SetDataOp,
    Txn,
)

SNAPSHOT_FORMAT_VERSION = 1
DIGEST_MASK = 2**64 - 1
TTL_MS_MAX = 2**40 - 1  # ZooKeeper's bound on a TTL node's ttl
NO_CHILDREN: frozenset[str] = frozenset()


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
    container: bool = False
    ttl_ms: int = 0
    # Most znodes are leaves: they share one empty frozenset and get a set of
    # their own with their first child (216 bytes saved per leaf).
    children: set[str] | frozenset[str] = NO_CHILDREN

    def add_child(self, name: str) -> None:
        if isinstance(self.children, set):
            self.children.add(name)
        else:
            self.children = {name}

    def remove_child(self, name: str) -> None:
        if isinstance(self.children, set):
            self.children.discard(name)

    @property
    def kind(self) -> str:
        if self.ephemeral_owner:
            return "ephemeral"
        if self.container:
            return "container"
        return "ttl" if self.ttl_ms else "persistent"

    def copy(self) -> Node:
        return replace(self, children=set(self.children) if self.children else NO_CHILDREN)

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


@dataclass(slots=True)
class Session:
    id: str
    ttl_ms: int  # negotiated at open; the expiry authority enforces it
    ephemerals: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # created | deleted | data_changed | children_changed
    path: str
    zxid: int
    stat: Stat | None  # None for deleted
    data: bytes | None = None  # the node's data after created / data_changed


@dataclass(frozen=True, slots=True)
class OpResult:
    op: str  # create | set | delete | check | open_session | close_session | reap
    path: str  # the node; for session ops, the session id
    stat: Stat | None = None  # after the op; None for delete and check
    created: bool = False  # a set that created its node (upsert)
    deleted: tuple[str, ...] = ()  # close_session: the ephemerals it removed


@dataclass(frozen=True, slots=True)
class TxnResult:
    zxid: int
    results: tuple[OpResult, ...]


# Undo records, replayed in reverse on rollback.
_UNDO_INSERT = 0  # (kind, path): remove the inserted node
_UNDO_REMOVE = 1  # (kind, path, node): put the removed node back
_UNDO_FIELDS = 2  # (kind, node, data, mzxid, pzxid, mtime, version, cversion)
_UNDO_UNLINK = 3  # (kind, parent node, child name): give the parent its child back
_UNDO_SESSION_OPEN = 4  # (kind, session id): forget the session
_UNDO_SESSION_CLOSE = 5  # (kind, session): bring the session back


class Tree:
    """Owns every node, its stat and the zxid; changed only by ``apply``."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {ROOT: Node(b"", 0, 0, 0, 0, 0)}
        self.zxid = 0
        self.sessions: dict[str, Session] = {}
        # Nodes the reaper must look at, so that it never scans the tree.
        self._containers: set[str] = set()
        self._ttl_nodes: set[str] = set()
        self.digest = node_hash(ROOT, self._nodes[ROOT])
        self.data_bytes = 0  # of every node's data: kept as the tree changes
        self._views: list[TreeView] = []  # open views: each keeps what changes under it
        # Per-txn scratch state, valid only inside apply().
        self._undo: list[tuple[Any, ...]] = []
        self._events: list[Event] = []
        # Paths the txn changed (their hashes leave the digest at the first
        # change and come back, rehashed, when the txn is applied).
        self._touched: dict[str, None] = {}

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

    def newest_time_ms(self) -> int:
        """The latest ctime or mtime of any node (a leader's stamps start above
        it). A scan of the whole tree: for startup and snapshot installs only."""
        return max((max(n.ctime, n.mtime) for n in self._nodes.values()), default=0)

    def reap_candidates(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """(path, czxid) of up to ``limit`` nodes due for removal: containers
        that have had a child and are empty, TTL nodes childless and
        unmodified for their ttl. ``ReapOp`` checks it all again at apply."""
        due: list[tuple[str, int]] = []
        for path in sorted(self._containers):
            node = self._nodes[path]
            if node.cversion > 0 and not node.children:
                due.append((path, node.czxid))
        for path in sorted(self._ttl_nodes):
            node = self._nodes[path]
            if not node.children and now_ms - node.mtime >= node.ttl_ms:
                due.append((path, node.czxid))
        return due[:limit]

    # ---- writes ------------------------------------------------------------

    def apply(self, txn: Txn) -> tuple[TxnResult, list[Event]]:
        """Apply ``txn`` at zxid ``self.zxid + 1``, or raise and change nothing."""
        zxid = self.zxid + 1
        self._undo = []
        self._events = []
        self._touched = {}
        digest_before = self.digest
        results: list[OpResult] = []
        try:
            for op in txn.ops:
                results.append(self._apply_op(op, zxid, txn.time_ms))
        except CoordError as exc:
            self._rollback(digest_before)
            if not txn.multi:
                raise
            failed = len(results)
            raise MultiFailed(failed, exc, len(txn.ops)) from None
        except BaseException:
            # A bug must not leave a half-applied txn behind it.
            self._rollback(digest_before)
            raise
        nodes = self._nodes
        digest = self.digest
        for path in self._touched:
            node = nodes.get(path)
            if node is not None:
                digest += node_hash(path, node)
        self.digest = digest & DIGEST_MASK
        events, self._events, self._undo, self._touched = self._events, [], [], {}
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
        if isinstance(op, OpenSessionOp):
            return self._open_session(op)
        if isinstance(op, CloseSessionOp):
            return self._close_session(op, zxid)
        if isinstance(op, ReapOp):
            return self._reap(op, zxid, time_ms)
        raise BadArguments(f"unknown op {op!r}")

    def _create(self, op: CreateOp, zxid: int, time_ms: int) -> OpResult:
        validate_path(op.path, sequential=op.sequential)
        check_node_kind(op.path, bool(op.ephemeral_owner), op.container, op.ttl_ms)
        if op.ephemeral_owner and op.ephemeral_owner not in self.sessions:
            raise SessionExpired(session=op.ephemeral_owner)
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
        node = Node(
            op.data,
            zxid,
            zxid,
            zxid,
            time_ms,
            time_ms,
            ephemeral_owner=op.ephemeral_owner,
            container=op.container,
            ttl_ms=op.ttl_ms,
        )
        self._insert(path, parent_path, parent, node, zxid)
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
            parent = self._insert(
                p, up, parent, Node(b"", zxid, zxid, zxid, time_ms, time_ms), zxid
            )
            up = p
        return parent

    def _insert(self, path: str, parent_path: str, parent: Node, node: Node, zxid: int) -> Node:
        self._touch(parent_path, parent)
        self._touch(path, None)
        self._save_fields(parent)
        self._nodes[path] = node
        self._index(path, node)
        self.data_bytes += len(node.data)
        parent.add_child(name_of(path))
        parent.cversion += 1
        parent.pzxid = zxid
        self._undo.append((_UNDO_INSERT, path))
        self._events.append(Event("created", path, zxid, node.stat(), node.data))
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
        self._touch(op.path, node)
        self._save_fields(node)
        self.data_bytes += len(op.data) - len(node.data)
        node.data = op.data
        node.version += 1
        node.mzxid = zxid
        node.mtime = time_ms
        stat = node.stat()
        self._events.append(Event("data_changed", op.path, zxid, stat, op.data))
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
        self._unlink(op.path, zxid)
        return OpResult("delete", op.path)

    def _unlink(self, top: str, zxid: int) -> None:
        """Remove ``top`` and its subtree; the surviving parent records it."""
        # Children first, deepest first, so every event names a node that the
        # tree no longer holds and the parent it left still exists.
        for path in self._subtree_post_order(top):
            self._remove(path, zxid)
        parent_path = parent_of(top)
        parent = self._nodes[parent_path]
        self._touch(parent_path, parent)
        self._save_fields(parent)
        parent.remove_child(name_of(top))
        self._undo.append((_UNDO_UNLINK, parent, name_of(top)))
        parent.cversion += 1
        parent.pzxid = zxid
        self._events.append(Event("children_changed", parent_path, zxid, parent.stat()))

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
        node = self._nodes[path]
        self._touch(path, node)
        del self._nodes[path]
        self._unindex(path, node)
        self.data_bytes -= len(node.data)
        self._undo.append((_UNDO_REMOVE, path, node))
        self._events.append(Event("deleted", path, zxid, None))

    def _open_session(self, op: OpenSessionOp) -> OpResult:
        if not op.session_id or op.session_id in self.sessions:
            raise BadArguments("session id is empty or taken", session=op.session_id)
        if op.ttl_ms <= 0:
            raise BadArguments("session ttl must be positive")
        self.sessions[op.session_id] = Session(op.session_id, op.ttl_ms)
        self.digest = (self.digest + session_hash(op.session_id, op.ttl_ms)) & DIGEST_MASK
        self._undo.append((_UNDO_SESSION_OPEN, op.session_id))
        return OpResult("open_session", op.session_id)

    def _close_session(self, op: CloseSessionOp, zxid: int) -> OpResult:
        """Close a session and remove its ephemerals, all in this one txn."""
        session = self.sessions.get(op.session_id)
        if session is None:
            raise SessionExpired(session=op.session_id)
        # Sorted: set order differs between processes, event order must not.
        deleted = tuple(sorted(session.ephemerals))
        for path in deleted:
            self._unlink(path, zxid)
        del self.sessions[op.session_id]
        self.digest = (self.digest - session_hash(session.id, session.ttl_ms)) & DIGEST_MASK
        self._undo.append((_UNDO_SESSION_CLOSE, session))
        return OpResult("close_session", op.session_id, deleted=deleted)

    def _reap(self, op: ReapOp, zxid: int, time_ms: int) -> OpResult:
        node = self._nodes.get(op.path)
        if node is None or node.czxid != op.czxid:
            raise NoNode(path=op.path)
        if node.children:
            raise NotEmpty(path=op.path)
        if node.container:
            if node.cversion == 0:
                raise BadArguments("container never had a child", path=op.path)
        elif not node.ttl_ms or time_ms - node.mtime < node.ttl_ms:
            raise BadArguments("node is not due for reaping", path=op.path)
        self._unlink(op.path, zxid)
        return OpResult("reap", op.path)

    def _check(self, op: CheckOp) -> OpResult:
        validate_path(op.path)
        node = self._nodes.get(op.path)
        if node is None:
            raise NoNode(path=op.path)
        _check_version(op.path, node, op.version)
        return OpResult("check", op.path)

    # ---- indexes --------------------------------------------------------------

    def _index(self, path: str, node: Node) -> None:
        if node.ephemeral_owner:
            self.sessions[node.ephemeral_owner].ephemerals.add(path)
        elif node.container:
            self._containers.add(path)
        elif node.ttl_ms:
            self._ttl_nodes.add(path)

    def _unindex(self, path: str, node: Node) -> None:
        if node.ephemeral_owner:
            self.sessions[node.ephemeral_owner].ephemerals.discard(path)
        elif node.container:
            self._containers.discard(path)
        elif node.ttl_ms:
            self._ttl_nodes.discard(path)

    # ---- what a txn changes ---------------------------------------------------

    def _touch(self, path: str, node: Node | None) -> None:
        """Called before the txn first changes ``path`` (``node`` is its
        current state, None when the txn creates it): its hash leaves the
        digest, and every open view keeps its state as the view saw it."""
        if path in self._touched:
            return
        self._touched[path] = None
        if node is not None:
            self.digest = (self.digest - node_hash(path, node)) & DIGEST_MASK
        for view in self._views:
            view.keep(path, node)

    # ---- undo ---------------------------------------------------------------

    def _save_fields(self, node: Node) -> None:
        self._undo.append(
            (
                _UNDO_FIELDS,
                node,
                node.data,
                node.mzxid,
                node.pzxid,
                node.mtime,
                node.version,
                node.cversion,
            )
        )

    def _rollback(self, digest_before: int) -> None:
        for record in reversed(self._undo):
            kind = record[0]
            if kind == _UNDO_INSERT:
                path = record[1]
                inserted = self._nodes.pop(path)
                self._unindex(path, inserted)
                self.data_bytes -= len(inserted.data)
                self._nodes[parent_of(path)].remove_child(name_of(path))
            elif kind == _UNDO_REMOVE:
                path, node = record[1], record[2]
                self._nodes[path] = node
                self._index(path, node)
                self.data_bytes += len(node.data)
            elif kind == _UNDO_UNLINK:
                record[1].add_child(record[2])
            elif kind == _UNDO_SESSION_OPEN:
                del self.sessions[record[1]]
            elif kind == _UNDO_SESSION_CLOSE:
                self.sessions[record[1].id] = record[1]
            else:
                _, node, data, mzxid, pzxid, mtime, version, cversion = record
                self.data_bytes += len(data) - len(node.data)
                node.data, node.mzxid, node.pzxid, node.mtime = data, mzxid, pzxid, mtime
                node.version, node.cversion = version, cversion
        self._undo = []
        self._events = []
        self._touched = {}
        self.digest = digest_before

    # ---- snapshots ----------------------------------------------------------

    def view(self) -> TreeView:
        """The tree as it is now, readable while it goes on changing; close it
        when done (an open view costs a copy of every node changed under it)."""
        view = TreeView(self)
        self._views.append(view)
        return view

    def snapshot_chunks(self, nodes_per_chunk: int = 2_000) -> Iterator[bytes]:
        """The whole tree as canonical chunks, read at once (see ``TreeView``).
        Two trees are equal exactly when their chunks are equal."""
        view = self.view()
        try:
            yield from view.chunks(nodes_per_chunk)
        finally:
            view.close()

    @classmethod
    def from_snapshot(cls, chunks: Iterable[bytes]) -> Tree:
        it = iter(chunks)
        header = orjson.loads(next(it))
        if header.get("v") != SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"unknown snapshot format {header.get('v')!r}")
        tree = cls()
        tree.sessions = {sid: Session(sid, ttl) for sid, ttl in header["sessions"]}
        digest = header.get("digest")
        nodes = tree._nodes
        nodes.clear()
        for chunk in it:
            for row in orjson.loads(chunk):
                path, data, czxid, mzxid, pzxid, ctime, mtime, ver, cver, aver, owner, cont, ttl = (
                    row
                )
                nodes[path] = Node(
                    base64.b64decode(data),
                    czxid,
                    mzxid,
                    pzxid,
                    ctime,
                    mtime,
                    ver,
                    cver,
                    aver,
                    owner,
                    cont,
                    ttl,
                )
        for path, node in nodes.items():
            if path != ROOT:
                nodes[parent_of(path)].add_child(name_of(path))
                tree._index(path, node)
        if len(nodes) != header["nodes"] or ROOT not in nodes:
            raise ValueError("snapshot is incomplete")
        tree.zxid = header["zxid"]
        tree.data_bytes = sum(len(node.data) for node in nodes.values())
        # The digest the snapshot was taken with (its chunks were checked
        # against their checksum); an older snapshot has none: computed.
        tree.digest = int(digest, 16) if type(digest) is str else tree.full_digest()
        return tree

    def full_digest(self) -> int:
        """The digest computed from scratch (``digest`` is kept incrementally)."""
        total = sum(node_hash(path, node) for path, node in self._nodes.items())
        total += sum(session_hash(s.id, s.ttl_ms) for s in self.sessions.values())
        return total & DIGEST_MASK

    def snapshot_bytes(self) -> bytes:
        return b"\n".join(self.snapshot_chunks())


class TreeView:
    """The tree at one zxid, read a chunk at a time while the tree changes.

    The tree calls ``keep`` before it first changes a node under an open view,
    so the view reads the node as it was (a copy) and everything else live.
    Chunks list nodes depth first, each node's children by name: from a
    node's children as the view saw them, the walk reaches every node the
    tree held when the view was opened, and no other."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree
        self.zxid = tree.zxid
        self.digest = tree.digest
        self.node_count = len(tree._nodes)
        self._sessions = [
            [s.id, s.ttl_ms] for s in sorted(tree.sessions.values(), key=lambda s: s.id)
        ]
        self._kept: dict[str, Node | None] = {}  # None: created after the view opened

    def keep(self, path: str, node: Node | None) -> None:
        if path not in self._kept:
            self._kept[path] = None if node is None else node.copy()

    def _node(self, path: str) -> Node:
        if path not in self._kept:
            return self._tree._nodes[path]
        kept = self._kept[path]
        assert kept is not None, f"{path} did not exist when the view was opened"
        return kept

    def chunks(self, nodes_per_chunk: int = 2_000) -> Iterator[bytes]:
        """A header, then rows of ``nodes_per_chunk`` nodes. The tree may
        change between two chunks; the chunks do not."""
        yield orjson.dumps(
            {
                "v": SNAPSHOT_FORMAT_VERSION,
                "zxid": self.zxid,
                "nodes": self.node_count,
                "sessions": self._sessions,
                "digest": format(self.digest, "016x"),
            }
        )
        stack = [ROOT]
        rows: list[tuple[Any, ...]] = []
        while stack:
            path = stack.pop()
            n = self._node(path)
            rows.append((path, base64.b64encode(n.data).decode("ascii"), *_fields(n)))
            if n.children:
                stack.extend(join(path, name) for name in sorted(n.children, reverse=True))
            if len(rows) == nodes_per_chunk:
                yield orjson.dumps(rows)
                rows = []
        if rows:
            yield orjson.dumps(rows)

    def close(self) -> None:
        if self in self._tree._views:
            self._tree._views.remove(self)
        self._kept = {}


def _fields(n: Node) -> tuple[int, int, int, int, int, int, int, int, str, bool, int]:
    """A node's fields after its path and data, in the snapshot's row order."""
    return (
        n.czxid,
        n.mzxid,
        n.pzxid,
        n.ctime,
        n.mtime,
        n.version,
        n.cversion,
        n.aversion,
        n.ephemeral_owner,
        n.container,
        n.ttl_ms,
    )


def node_hash(path: str, n: Node) -> int:
    """A node's share of the digest: its path, stat fields and data. CRC-32
    and Adler-32 side by side (64 bits; ZooKeeper's digest is a CRC-32 sum):
    cheap enough to run twice per write, and divergence is not an adversary."""
    head = orjson.dumps((path, *_fields(n)))
    data = n.data
    return zlib.crc32(data, zlib.crc32(head)) | zlib.adler32(data, zlib.adler32(head)) << 32


def session_hash(session_id: str, ttl_ms: int) -> int:
    head = orjson.dumps(("session", session_id, ttl_ms))
    return zlib.crc32(head) | zlib.adler32(head) << 32


def check_node_kind(path: str, ephemeral: bool, container: bool, ttl_ms: int) -> None:
    """One kind per node: ephemeral, container, TTL or plain persistent."""
    if ephemeral + container + bool(ttl_ms) > 1:
        raise BadArguments("ephemeral, container and ttl_ms exclude each other", path=path)
    if not 0 <= ttl_ms <= TTL_MS_MAX:
        raise BadArguments(f"ttl_ms must be between 1 and {TTL_MS_MAX}", path=path)


def _creates_under(parent: Node) -> int:
    """ZooKeeper's sequence counter: how many children were ever created under
    ``parent``. Every create and every delete of a child bumps cversion, while
    the child count goes up and down with them, so the number of creates is
    (cversion + children) / 2 and needs no state of its own."""
    return (parent.cversion + len(parent.children)) // 2


def _check_version(path: str, node: Node, version: int) -> None:
    if version != ANY_VERSION and version != node.version:
        raise BadVersion(
            f"expected version {version}, node has {node.version}", path=path, version=node.version
        )
