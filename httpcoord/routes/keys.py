"""Typed application keys shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from httpcoord.cluster.node import LocalNode
from httpcoord.config import Config
from httpcoord.watch.hub import WatchHub

CONFIG = web.AppKey("config", Config)
NODE = web.AppKey("node", LocalNode)
HUB = web.AppKey("watch_hub", WatchHub)

ZXID_HEADER = "X-Coord-Zxid"
