"""Operational routes: liveness, readiness, Prometheus metrics, the spec."""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from httpcoord.cluster.node import LocalNode
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
    """Readiness: the node can take writes (its log and commit loop work)."""
    ok = request.app[NODE].healthy
    body = {"status": "ready" if ok else "unavailable", "zxid": request.app[NODE].tree.zxid}
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

    def __init__(self, node: LocalNode, hub: WatchHub) -> None:
        self._node = node
        self._hub = hub

    def collect(self):  # type: ignore[no-untyped-def]
        node = self._node
        yield GaugeMetricFamily("httpcoord_zxid", "last zxid applied to the tree", node.tree.zxid)
        yield GaugeMetricFamily(
            "httpcoord_applied_index", "last log index applied", node.applied_index
        )
        yield GaugeMetricFamily("httpcoord_znodes", "znodes in the tree", len(node.tree))
        yield GaugeMetricFamily(
            "httpcoord_pending_proposals", "writes queued, not yet durable", node.pending_count
        )
        yield CounterMetricFamily(
            "httpcoord_log_fsyncs",
            "log transactions committed (one fsync each)",
            node.log_store.fsyncs,
        )
        yield CounterMetricFamily(
            "httpcoord_log_entries", "entries appended to the log", node.log_store.entries_appended
        )
        yield CounterMetricFamily("httpcoord_snapshots", "snapshots taken", node.snapshots_taken)
        yield GaugeMetricFamily("httpcoord_sessions", "open sessions", len(node.tree.sessions))
        yield GaugeMetricFamily("httpcoord_watchers", "open watches", self._hub.count)
        yield GaugeMetricFamily(
            "httpcoord_watch_history_events", "events kept for resuming watchers", len(node.history)
        )


def metrics_registry(node: LocalNode, hub: WatchHub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, hub))
    return registry
