"""A read worker's copy of its node's tree, kept by the node's feed.

The copy is the tree at the zxid the feed started from, then every committed
txn the node applied after it, in log order: the same pure function of the
same txns, so the same tree at every zxid. It answers the read routes with
the node's consistency rules:

- sequential reads: the copy as it is (at most a feed frame behind the node);
- ``X-Coord-Min-Zxid: N``: wait until the copy has applied zxid N (504);
- linearizable reads: the node does the ReadIndex round (``feed.read_index``)
  and answers the zxid it has then applied; the copy waits for that zxid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from httpcoord.cluster.node import EventListener, NodeLimits, Waiters, publish
from httpcoord.errors import CoordError, ZxidNotReached
from httpcoord.tree.collector import FreezeOnGrowth
from httpcoord.tree.tree import Node as Znode
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import decode_txn
from httpcoord.watch.history import History


class Replica:
    def __init__(
        self,
        node_id: int,
        worker_id: int,
        tree: Tree,
        leader_id: int,
        history: History,
        read_index: Callable[[], Awaitable[int]],
        request_timeout_ms: int,
    ) -> None:
        self.node_id = node_id
        self.worker_id = worker_id
        self.leader_id = leader_id
        self.history = history
        self.listeners: list[EventListener] = []
        self._tree = tree
        self._read_index = read_index
        self._timeout_s = request_timeout_ms / 1000
        self._zxid_waiters = Waiters()
        self._freezer = FreezeOnGrowth(NodeLimits().gc_freeze_growth_znodes, len(tree))

    @property
    def zxid(self) -> int:
        return self._tree.zxid

    def get(self, path: str) -> Znode:
        return self._tree.get(path)

    def apply(self, leader_id: int, txns: list[bytes]) -> None:
        """Apply one feed frame: the txns the node applied, in its order."""
        self.leader_id = leader_id
        tree = self._tree
        for raw in txns:
            try:
                result, events = tree.apply(decode_txn(raw))
            except CoordError:
                continue  # it failed on the node too: nothing changed
            self.history.append(result.zxid, events)
            publish(self.listeners, result.zxid, events)
        self._zxid_waiters.release(tree.zxid)
        self._freezer.grown_to(len(tree))  # as the node does

    async def barrier(self, linearizable: bool = False, min_zxid: int | None = None) -> None:
        """``Node.barrier``'s rules, on the copy (see the module's docstring)."""
        if min_zxid is not None:
            await self._reach(min_zxid)
        if linearizable:
            await self._reach(await self._read_index())

    async def wait_for_zxid(self, zxid: int) -> None:
        await self._reach(zxid)

    async def _reach(self, zxid: int) -> None:
        if self._tree.zxid >= zxid:
            return
        try:
            await asyncio.wait_for(self._zxid_waiters.wait(zxid), self._timeout_s)
        except TimeoutError:
            raise ZxidNotReached(
                f"this node has applied zxid {self._tree.zxid}, not {zxid}",
                applied_zxid=self._tree.zxid,
            ) from None

    def fail_waiting(self, exc: BaseException) -> None:
        self._zxid_waiters.fail(exc)
