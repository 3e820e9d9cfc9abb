"""Operational routes: liveness, readiness, Prometheus metrics, the spec."""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from httpcoord.cluster.node import Node
from httpcoord.routes.keys import NODE
from httpcoord.watch.hub import WatchHub

routes = web.RouteTableDef()

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness: the node's loop and storage work, it knows a live leader (it
    is on the majority side), and it has applied what it knows is committed."""
    node = request.app[NODE]
    reason = node.not_ready_reason
    ok = reason is None
    body = {
        "status": "ready" if ok else "unavailable",
        "zxid": node.zxid,
        "leader": node.leader_id,
        "healthy": node.healthy,
        "reason": reason,
    }
    return web.json_response(body, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@routes.get("/openapi.yaml")
async def openapi(request: web.Request) -> web.Response:
    spec = resources.files("httpcoord").joinpath("openapi.yaml").read_bytes()
    return web.Response(body=spec, content_type="application/yaml")


class NodeCollector(Collector):
    """Reads the node's counters at scrape time: no cost on the request path."""

    def __init__(self, node: Node, hub: WatchHub) -> None:
        self._node = node
        self._hub = hub

    def collect(self):  # type: ignore[no-untyped-def]
        node = self._node
        yield GaugeMetricFamily("httpcoord_zxid", "last zxid applied to the tree", node.zxid)
        yield GaugeMetricFamily(
            "httpcoord_applied_index", "last log index applied", node.applied_index
        )
        yield GaugeMetricFamily("httpcoord_znodes", "znodes in the tree", node.znode_count)
        yield GaugeMetricFamily(
            "httpcoord_pending_proposals",
            "writes waiting for the leader's next loop turn",
            node.driver.pending_count,
        )
        core = node.driver.core
        yield GaugeMetricFamily("httpcoord_term", "current consensus term", core.term)
        yield GaugeMetricFamily(
            "httpcoord_commit_index", "last log index known committed", core.committed
        )
        yield GaugeMetricFamily(
            "httpcoord_is_leader", "1 on the leader", int(node.driver.is_leader)
        )
        yield CounterMetricFamily(
            "httpcoord_log_fsyncs",
            "storage transactions committed (one fsync each)",
            node.storage.fsyncs,
        )
        yield CounterMetricFamily(
            "httpcoord_log_entries", "entries saved to the log", node.storage.entries_saved
        )
        yield CounterMetricFamily(
            "httpcoord_peer_messages_dropped",
            "peer messages dropped because the loop's inbox was full",
            node.driver.dropped_msgs,
        )
        yield GaugeMetricFamily(
            "httpcoord_disk_full",
            "1 while the loop is frozen on a full disk (writes answer 507)",
            int(node.driver.disk_full is not None),
        )
        yield CounterMetricFamily(
            "httpcoord_disk_full_episodes",
            "times the loop froze on a full disk",
            node.driver.disk_full_episodes,
        )
        yield CounterMetricFamily("httpcoord_snapshots", "snapshots taken", node.snapshots_taken)
        yield CounterMetricFamily(
            "httpcoord_snapshots_installed",
            "snapshots received from the leader (this node was too far behind)",
            node.snapshots_installed,
        )
        yield GaugeMetricFamily("httpcoord_sessions", "open sessions", node.session_count)
        yield GaugeMetricFamily("httpcoord_watchers", "open watches", self._hub.count)
        yield GaugeMetricFamily(
            "httpcoord_watch_history_events", "events kept for resuming watchers", len(node.history)
        )


def metrics_registry(node: Node, hub: WatchHub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, hub))
    return registry
