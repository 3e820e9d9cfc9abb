"""``create_app(config)``: the aiohttp application and its lifecycle.

One cleanup context opens the node (data dir lock, SQLite, recovery), starts
the peer listener (when the node has peers) and the node's loop, and on
shutdown lets the turn in flight finish before storage is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from httpcoord.cluster.driver import Transport
from httpcoord.cluster.node import Node, SnapshotIO, TransportFactory
from httpcoord.cluster.transport import PeerTransport, TransportLimits
from httpcoord.config import Config
from httpcoord.routes import cluster as cluster_routes
from httpcoord.routes import cors, meta, multi, nodes, observe, peer_rpc, sessions, ui, watch
from httpcoord.routes.keys import CONFIG, HUB, NODE, READS
from httpcoord.routes.problems import problems_middleware
from httpcoord.tree.collector import building_long_lived
from httpcoord.watch.hub import WatchHub
from httpcoord.workers import feed
from httpcoord.workers.supervisor import Supervisor
from httpcoord.workers.worker import WorkerSettings

# Room for headers and framing above the largest accepted body; the handlers
# enforce the exact per-route limits themselves.
_BODY_SLACK_BYTES = 64 * 1024


PEER_SOCKETS = web.AppKey("peer_sockets", tuple)
# Why the node stopped for good, if it did: the command line exits non-zero.
FATAL = web.AppKey("fatal", list)


class _OncePerInterval(logging.Filter):
    """aiohttp logs each malformed request at ERROR with a traceback, before
    any middleware runs: anyone who can reach the peer port could fill the
    log. One line per interval, without the traceback, says it happens."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last_s = -interval_s
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last_s < self.interval_s:
            self._dropped += 1
            return False
        self._last_s = now
        record.exc_info = record.exc_text = None
        if self._dropped:
            record.msg = f"{record.msg} ({self._dropped} more since the last such line)"
            self._dropped = 0
        return True


_PEER_HTTP_LOG = logging.getLogger("httpcoord.peer.http")
_PEER_HTTP_LOG.addFilter(_OncePerInterval(10.0))


def create_app(
    config: Config, peer_sockets: Sequence[socket.socket] = (), workers_socket: str | None = None
) -> web.Application:
    """``peer_sockets``: the peer listener already bound by the caller (so a
    port in use is reported before anything starts); else it is bound here.
    ``workers_socket``: the abstract unix socket (name without its NUL) the
    caller serves this app on for its read workers, when it has any."""
    body_max = max(config.limits.data_bytes_max, config.limits.request_bytes_max)
    app = web.Application(
        middlewares=[problems_middleware], client_max_size=body_max + _BODY_SLACK_BYTES
    )
    app[CONFIG] = config
    app[PEER_SOCKETS] = tuple(peer_sockets)
    app[FATAL] = []
    app.cleanup_ctx.append(_node_lifecycle)
    if config.read_workers:
        assert workers_socket is not None, "read workers need the node's unix socket"
        app.cleanup_ctx.append(functools.partial(_workers_lifecycle, socket_name=workers_socket))
    app.on_shutdown.append(_end_watches)
    app.add_routes(nodes.routes)
    app.add_routes(multi.routes)
    app.add_routes(sessions.routes)
    app.add_routes(watch.routes)
    app.add_routes(meta.routes)
    app.add_routes(cluster_routes.routes)
    app.add_routes(ui.routes)
    app.add_routes(feed.routes)  # answered on the unix socket only
    cors.install(app, config.cors_origins)
    app[meta.REGISTRY] = CollectorRegistry(auto_describe=False)
    observe.install(app, app[meta.REGISTRY], config.access_log)
    return app


async def _workers_lifecycle(app: web.Application, socket_name: str) -> AsyncIterator[None]:
    """After the node opened (the cleanup contexts run in order): its read
    workers; before it closes (in reverse): their stop."""
    config = app[CONFIG]
    settings = [
        WorkerSettings(
            worker_id=i,
            node_id=config.cluster.node_id,
            socket=socket_name,
            limits=config.limits,
            request_timeout_ms=config.node.request_timeout_ms,
            watch_history_events=config.node.watch_history_events,
            watch_history_bytes=config.node.watch_history_bytes,
            cors_origins=config.cors_origins,
            access_log=config.access_log,
            log_format=config.log_format,
        )
        for i in range(1, config.read_workers + 1)
    ]
    supervisor = Supervisor(config.host, config.port, settings)
    supervisor.start()
    yield
    await supervisor.stop()


def _stop_serving(app: web.Application, reason: str) -> None:
    """Shut the server down as SIGTERM does; the command line then exits 1
    with ``reason``."""
    app[FATAL].append(reason)
    os.kill(os.getpid(), signal.SIGTERM)


async def _end_watches(app: web.Application) -> None:
    """Shutdown: long-lived requests end now, not at the shutdown timeout."""
    app[HUB].close_all()
    sessions.stop_keepalives(app)


async def _node_lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    with building_long_lived():  # recovery builds the whole tree
        node = await Node.open(
            config.data_dir, config.cluster, config.node, transport_factory=_peer_transport(config)
        )
    app[NODE] = node
    app[READS] = node
    hub = WatchHub(
        node.history, config.limits.watchers_per_client_max, config.limits.watch_queue_events_max
    )
    node.listeners.append(hub.publish)
    node.reset_listeners.append(hub.cut_off_all)
    app[sessions.KEEPALIVES] = {}
    node.session_closed_listeners.append(functools.partial(sessions.end_keepalives, app))
    node.fatal_listeners.append(functools.partial(_stop_serving, app))
    app[HUB] = hub
    meta.register_node(app[meta.REGISTRY], node, hub)
    peer_runner = await _start_peer_listener(config, node, app[PEER_SOCKETS])
    node.start()
    sweeper = asyncio.create_task(hub.sweep_forever(config.limits.sse_keepalive_ms / 1000))
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await node.close()
    if peer_runner is not None:
        await peer_runner.cleanup()


def _peer_transport(config: Config) -> TransportFactory | None:
    if config.peer_listen is None:
        return None  # a cluster of one: nobody to talk to
    cluster = config.cluster

    def make(node: Node) -> Transport:
        others = {i: a for i, a in cluster.peers.items() if i != cluster.node_id}
        return PeerTransport(
            cluster.node_id,
            cluster.cluster_id,
            others,
            node.driver.deliver,
            SnapshotIO(node.storage),
            TransportLimits(),
            random.Random(),
        )

    return make


async def _start_peer_listener(
    config: Config, node: Node, sockets: tuple[socket.socket, ...]
) -> web.AppRunner | None:
    """The peer listener: the transport's routes (Raft messages, snapshot
    streams) and the node's own RPCs (forwarded writes, session pings,
    status), all behind the transport's cluster-id check."""
    if config.peer_listen is None:
        return None
    peer_app = web.Application(client_max_size=config.limits.request_bytes_max + _BODY_SLACK_BYTES)
    transport = node.transport
    assert isinstance(transport, PeerTransport)
    transport.install(peer_app)
    peer_app.add_routes(peer_rpc.routes(node))
    runner = web.AppRunner(
        peer_app, access_log=None, handler_cancellation=True, logger=_PEER_HTTP_LOG
    )
    await runner.setup()
    if sockets:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    else:
        host, port = config.peer_listen
        await web.TCPSite(runner, host, port).start()
    await transport.start()
    return runner
