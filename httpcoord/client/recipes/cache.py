"""Local caches kept current from one event stream: ``NodeCache`` (one node)
and ``TreeCache`` (a subtree), as Curator's NodeCache and TreeCache.

Protocol. A cache reads what it follows, then watches it (``data=True``,
recursive for a tree) from the zxid of its first read, and applies each
event to its copy. Every read is exact about the zxid it reflects, absence
included: a node that is missing is known missing at the zxid of a read of
its nearest existing ancestor's child list (and a node a walk did not find
under a parent it read, at the zxid of that read). An event on a path at
or below the zxid its read reflects repeats what the read already saw and
is skipped, so the watch may start before the last read and no node ever
goes back to an older state. Events after every read apply as they come,
all those of one txn (one zxid) included. When the watch says events were
missed (a ``Resync``, after ``410 Compacted``) a cache reads again, a
``TreeCache`` walking its subtree (one read per node; the iterator's own
walk is not used, as it does not say when a node it missed was absent),
and swaps the result in whole; those reads are at least as new as every
event applied, so this goes forward too.

Listeners are called in the event loop, after the change: a ``NodeCache``'s
with the node (``None`` once deleted) when it is created, set or deleted; a
``TreeCache``'s with a ``CacheEvent`` (``added``, ``updated``, ``removed``).
A change to a child list alone updates the stat quietly.

Suspended and lost. A cache holds no session: ``SUSPENDED`` and ``LOST``
do not apply. While the node its stream came from is down, the cache keeps
showing what it had (stale, never older) and catches up once the watch
resumes on another node; ``wait_zxid(z)`` says when it has caught up with a
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal, Self

from httpcoord.client.aio import Client
from httpcoord.client.models import Event, Node, Resync, child_path
from httpcoord.errors import BadArguments, NoNode, Unavailable

log = logging.getLogger(__name__)

READ_ATTEMPTS_MAX = 16  # reads of one path that keeps coming and going
REBUILD_ATTEMPTS_MAX = 10  # walks after a Resync before the cache gives up


@dataclass(frozen=True, slots=True)
class CacheEvent:
    type: Literal["added", "updated", "removed"]
    path: str
    node: Node  # the new node; for ``removed`` the last one cached
    zxid: int  # the change's zxid, or that of the read that found it


NodeListener = Callable[[Node | None], None]
TreeListener = Callable[[CacheEvent], None]


class _Follower:
    """What both caches share: loading, the task that follows the stream, progress."""

    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.zxid = 0  # every change up to this zxid is in the cache
        self.rebuilds = 0  # reads afresh after a Resync
        self.error: BaseException | None = None  # why the cache stopped following
        self._stream: AsyncGenerator[Event | Resync, None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the cache, then keep it current in the background."""
        if self._task is not None:
            raise RuntimeError("this cache is started already")
        since = await self._load()
        self._stream = self._watch(since)
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"cache {self.path}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stream is not None:
            await self._stream.aclose()

    async def wait_zxid(self, zxid: int, timeout_s: float | None = None) -> None:
        """Wait until the cache shows every change up to ``zxid`` (a write
        that touched what it follows, say)."""
        async with asyncio.timeout(timeout_s):
            while self.zxid < zxid:
                if self.error is not None:
                    raise self.error
                self._progress.clear()
                await self._progress.wait()

    async def _follow(self) -> None:
        assert self._stream is not None
        try:
            async for item in self._stream:
                if isinstance(item, Resync):
                    self.rebuilds += 1
                    await self._reload()
                else:
                    # A txn's events come without a pause between them, so
                    # nobody sees a txn half applied.
                    self._apply(item)
                    self.zxid = max(self.zxid, item.zxid)
                self._progress.set()
        except Exception as exc:  # noqa: BLE001 (whatever stops it is kept and raised)
            # Kept for wait_zxid to raise: a cache must not go stale silently.
            log.warning("cache of %s stopped following: %r", self.path, exc)
            self.error = exc
            self._progress.set()

    async def _reload(self) -> None:
        for attempt in range(REBUILD_ATTEMPTS_MAX):
            try:
                await self._load()
                return
            except Unavailable:
                if attempt + 1 == REBUILD_ATTEMPTS_MAX:
                    raise
                await asyncio.sleep(self.client.retry.pause_s(attempt, self.client.rng))

    def _watch(self, since: int) -> AsyncGenerator[Event | Resync, None]:
        raise NotImplementedError

    async def _load(self) -> int:
        """Read afresh and show it; the lowest zxid read (to watch from)."""
        raise NotImplementedError

    def _apply(self, event: Event) -> None:
        raise NotImplementedError


class NodeCache(_Follower):
    """``async with NodeCache(client, "/app/config") as cache: cache.node``"""

    def __init__(self, client: Client, path: str) -> None:
        super().__init__(client, path)
        self.node: Node | None = None  # None while the node does not exist
        self._read_at = -1  # the zxid of the last read: events up to it are in it
        self._listeners: list[NodeListener] = []

    def add_listener(self, listener: NodeListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: NodeListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _watch(self, since: int) -> AsyncGenerator[Event | Resync, None]:
        return self.client.watch(self.path, since=since, data=True)

    async def _load(self) -> int:
        node, at = await read_exact(self.client, self.path)
        # Reads wait for the client's newest zxid, which every event applied
        # has raised: a read never goes back.
        assert at >= self.zxid, (at, self.zxid)
        old, self.node, self._read_at = self.node, node, at
        self.zxid = at
        if _changed(old, node):
            self._notify(node)
        return at

    def _apply(self, event: Event) -> None:
        if event.zxid <= self._read_at:
            return  # the last read saw it already
        old = self.node
        if event.type == "deleted":
            self.node = None
        elif event.stat is None:
            return
        elif event.type == "children_changed":
            if old is not None:
                self.node = replace(old, stat=event.stat, zxid=event.zxid)
            return
        else:
            data = event.data if event.data is not None else old.data if old else b""
            self.node = Node(event.path, data, event.stat, None, event.zxid)
        if _changed(old, self.node):
            self._notify(self.node)

    def _notify(self, node: Node | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(node)
            except Exception:
                log.exception("node cache listener failed")


class TreeCache(_Follower):
    """``async with TreeCache(client, "/app") as cache: cache.get("/app/a")``"""

    def __init__(self, client: Client, path: str, *, nodes_max: int = 100_000) -> None:
        super().__init__(client, path)
        self.nodes_max = nodes_max  # reads of one walk; a bigger subtree is refused
        self._nodes: dict[str, Node] = {}  # Node.zxid: the read's or last event's
        self._children: dict[str, set[str]] = {}
        # While events may repeat what the last walk read (up to the newest
        # zxid it read): the zxid of each path's read, found or absent.
        self._read_at: dict[str, int] = {}
        self._replay_until = 0
        self._listeners: list[TreeListener] = []

    def get(self, path: str) -> Node | None:
        """The cached node (``children`` left None: see ``children``)."""
        return self._nodes.get(path.rstrip("/") or "/")

    def children(self, path: str) -> list[str] | None:
        """The cached node's child names, sorted; None if it is not cached."""
        path = path.rstrip("/") or "/"
        if path not in self._nodes:
            return None
        return sorted(self._children.get(path, ()))

    def nodes(self) -> dict[str, Node]:
        """Every cached node by path (a copy)."""
        return dict(self._nodes)

    def add_listener(self, listener: TreeListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: TreeListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _watch(self, since: int) -> AsyncGenerator[Event | Resync, None]:
        return self.client.watch(self.path, recursive=True, since=since, data=True)

    async def _load(self) -> int:
        nodes, absent, low, high = await self._walk()
        assert low >= self.zxid, (low, self.zxid)  # as NodeCache._load: never back
        old, self._nodes = self._nodes, nodes
        self._children = {}
        for path in nodes:
            if path != self.path:
                self._index(path)
        self._read_at = {path: node.zxid for path, node in nodes.items()} | absent
        self._replay_until = self.zxid = high
        for path in sorted(old.keys() - nodes.keys(), reverse=True):  # children first
            self._notify(CacheEvent("removed", path, old[path], self._read_zxid(path)))
        for path, node in sorted(nodes.items()):
            if path not in old:
                self._notify(CacheEvent("added", path, node, node.zxid))
            elif _changed(old[path], node):
                self._notify(CacheEvent("updated", path, node, node.zxid))
        return low

    async def _walk(self) -> tuple[dict[str, Node], dict[str, int], int, int]:
        """The subtree, one exact read per node: (nodes, absent paths with
        the zxid they were absent at, lowest and highest zxid read)."""
        nodes: dict[str, Node] = {}
        absent: dict[str, int] = {}
        low, high = -1, 0
        pending = [self.path]
        while pending:
            if len(nodes) + len(absent) >= self.nodes_max:
                raise BadArguments(f"{self.path}: more than {self.nodes_max} nodes to cache")
            path = pending.pop()
            node, at = await read_exact(self.client, path, children=True)
            low = at if low < 0 else min(low, at)
            high = max(high, at)
            if node is None:
                absent[path] = at
                continue
            nodes[path] = replace(node, children=None)
            pending.extend(child_path(path, name) for name in node.children or ())
        return nodes, absent, low, high

    def _read_zxid(self, path: str) -> int:
        """The zxid of the walk's read that saw ``path``: its own, or that of
        the nearest ancestor read that did not list it (absent as of then)."""
        while path not in self._read_at and path != self.path:
            path = _parent(path)
        return self._read_at.get(path, 0)

    def _apply(self, event: Event) -> None:
        if event.zxid > self._replay_until:
            self._read_at.clear()  # past the walk: no event repeats it any more
        elif event.zxid <= self._read_zxid(event.path):
            return
        path, old = event.path, self._nodes.get(event.path)
        if event.type == "deleted":
            if old is None:
                return
            del self._nodes[path]
            self._children.pop(path, None)
            if path != self.path:
                self._children.get(_parent(path), set()).discard(path.rsplit("/", 1)[1])
            self._notify(CacheEvent("removed", path, old, event.zxid))
        elif event.stat is None:
            return
        elif event.type == "children_changed":
            if old is not None:
                self._nodes[path] = replace(old, stat=event.stat, zxid=event.zxid)
        else:
            data = event.data if event.data is not None else old.data if old else b""
            new = self._nodes[path] = Node(path, data, event.stat, None, event.zxid)
            if old is None:
                if path != self.path:
                    self._index(path)
                self._notify(CacheEvent("added", path, new, event.zxid))
            elif _changed(old, new):
                self._notify(CacheEvent("updated", path, new, event.zxid))

    def _index(self, path: str) -> None:
        self._children.setdefault(_parent(path), set()).add(path.rsplit("/", 1)[1])

    def _notify(self, event: CacheEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("tree cache listener failed")


async def read_exact(
    client: Client, path: str, *, children: bool = False
) -> tuple[Node | None, int]:
    """The node and the zxid of the read, or None and a zxid at which the
    node did not exist."""
    for _ in range(READ_ATTEMPTS_MAX):
        try:
            node = await client.get(path, children=children)
        except NoNode:
            at = await _absent_at(client, path)
            if at is not None:
                return None, at
            continue  # it came back meanwhile: read it again
        return node, node.zxid
    raise Unavailable(f"{path} kept appearing and vanishing over {READ_ATTEMPTS_MAX} reads")


async def _absent_at(client: Client, path: str) -> int | None:
    """The zxid of a read of the nearest existing ancestor's child list
    that does not name ``path``'s branch; None if it names it (the path came
    back, or its ancestor did, since the read that missed it)."""
    branch = path
    while branch != "/":
        parent = _parent(branch)
        try:
            node = await client.get(parent, children=True)
        except NoNode:
            branch = parent
            continue
        if branch.rsplit("/", 1)[1] in (node.children or ()):
            return None
        return node.zxid
    return None  # the root always exists


def _changed(old: Node | None, new: Node | None) -> bool:
    """Created, deleted, or its data set (a child list change alone is not);
    the version tells two sets in one txn apart."""
    if old is None or new is None:
        return old is not new
    return old.stat.czxid != new.stat.czxid or old.stat.version != new.stat.version


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"
