"""``create_app(config)``: the aiohttp application and its lifecycle.

One cleanup context opens the node (data dir lock, SQLite, recovery), starts
its commit loop, and on shutdown lets the batch in flight finish before the
log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator

from aiohttp import web

from httpcoord.cluster.node import LocalNode
from httpcoord.config import Config
from httpcoord.routes import meta, multi, nodes, sessions, watch
from httpcoord.routes.keys import CONFIG, HUB, NODE
from httpcoord.routes.problems import problems_middleware
from httpcoord.watch.hub import WatchHub

# Room for headers and framing above the largest accepted body; the handlers
# enforce the exact per-route limits themselves.
_BODY_SLACK_BYTES = 64 * 1024
# Keepalives go out within 1/8 of a period of falling due, spread over time.
_SWEEPS_PER_KEEPALIVE = 8


def create_app(config: Config) -> web.Application:
    body_max = max(config.limits.data_bytes_max, config.limits.request_bytes_max)
    app = web.Application(
        middlewares=[problems_middleware], client_max_size=body_max + _BODY_SLACK_BYTES
    )
    app[CONFIG] = config
    app.cleanup_ctx.append(_node_lifecycle)
    app.on_shutdown.append(_end_watches)
    app.add_routes(nodes.routes)
    app.add_routes(multi.routes)
    app.add_routes(sessions.routes)
    app.add_routes(watch.routes)
    app.add_routes(meta.routes)
    return app


async def _end_watches(app: web.Application) -> None:
    """Shutdown: long-lived requests end now, not at the shutdown timeout."""
    app[HUB].close_all()
    sessions.stop_keepalives(app)


async def _node_lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    node = await LocalNode.open(config.data_dir, config.node)
    # Everything recovery built (the whole tree) lives until shutdown: keep it
    # out of every future garbage collection pass.
    gc.freeze()
    app[NODE] = node
    hub = WatchHub(
        node.history, config.limits.watchers_per_client_max, config.limits.watch_queue_events_max
    )
    node.listeners.append(hub.publish)
    app[sessions.KEEPALIVES] = {}
    node.session_closed_listeners.append(functools.partial(sessions.end_keepalives, app))
    app[HUB] = hub
    app[meta.REGISTRY] = meta.metrics_registry(node, hub)
    node.start()
    sweeper = asyncio.create_task(_sweep_watches(hub, config.limits.sse_keepalive_ms / 1000))
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await node.close()


async def _sweep_watches(hub: WatchHub, keepalive_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(keepalive_s / _SWEEPS_PER_KEEPALIVE)
        hub.sweep(loop.time(), keepalive_s)
