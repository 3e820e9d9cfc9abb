"""Typed application keys shared by the route modules."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from httpcoord.cluster.node import Node
from httpcoord.config import Config
from httpcoord.tree.tree import Node as Znode
from httpcoord.watch.hub import WatchHub


class ReadSource(Protocol):
    """What the read routes (GET and HEAD of a znode, watches) and the
    response headers need: the node itself, or a read worker's copy of its
    tree (httpcoord.workers), which keeps the same consistency rules."""

    @property
    def node_id(self) -> int: ...

    @property
    def worker_id(self) -> int: ...  # 0: the node's own process

    @property
    def leader_id(self) -> int: ...

    @property
    def zxid(self) -> int: ...

    def get(self, path: str) -> Znode: ...

    async def barrier(self, linearizable: bool = False, min_zxid: int | None = None) -> None: ...

    async def wait_for_zxid(self, zxid: int) -> None: ...


CONFIG = web.AppKey("config", Config)
NODE = web.AppKey("node", Node)
HUB = web.AppKey("watch_hub", WatchHub)
READS: web.AppKey[ReadSource] = web.AppKey("reads")

ZXID_HEADER = "X-Coord-Zxid"
NODE_HEADER = "X-Coord-Node"  # the id of the node that answered
LEADER_HEADER = "X-Coord-Leader"  # the id of the leader it knows, if any
WORKER_HEADER = "X-Coord-Worker"  # a read worker of the node answered (httpcoord.workers)
