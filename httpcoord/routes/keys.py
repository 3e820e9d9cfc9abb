"""Typed application keys shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from httpcoord.cluster.node import Node
from httpcoord.config import Config
from httpcoord.watch.hub import WatchHub

CONFIG = web.AppKey("config", Config)
NODE = web.AppKey("node", Node)
HUB = web.AppKey("watch_hub", WatchHub)

ZXID_HEADER = "X-Coord-Zxid"
NODE_HEADER = "X-Coord-Node"  # the id of the node that answered
LEADER_HEADER = "X-Coord-Leader"  # the id of the leader it knows, if any
