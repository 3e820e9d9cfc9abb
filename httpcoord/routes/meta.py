"""Operational routes: liveness, readiness, Prometheus metrics, the spec."""

from __future__ import annotations

import os
import resource
from importlib import resources

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from httpcoord import __version__
from httpcoord.cluster.node import Node
from httpcoord.routes.keys import HUB, NODE
from httpcoord.routes.observe import REQUEST_METRICS
from httpcoord.watch.hub import WatchHub

routes = web.RouteTableDef()

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
_SAVE_SECONDS_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


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


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """ZooKeeper's ``mntr`` figures, under its names, as JSON: what scripts
    and dashboards written for ZooKeeper read (docs/operations.md)."""
    node = request.app[NODE]
    hub = request.app[HUB]
    requests = request.app[REQUEST_METRICS]
    core = node.driver.core
    voters_and_learners = len(core.conf.voters) + len(core.conf.learners)
    if voters_and_learners <= 1:
        state = "standalone"
    else:
        state = core.role.value
    count = requests.count
    body: dict[str, object] = {
        "zk_version": f"httpcoord {__version__}",
        "zk_server_state": state,
        "zk_avg_latency": round(requests.total_s / count * 1000, 3) if count else 0,
        "zk_max_latency": round(requests.max_s * 1000, 3),
        "zk_min_latency": round(requests.min_s * 1000, 3) if count else 0,
        "zk_packets_received": count,
        "zk_packets_sent": count,
        "zk_outstanding_requests": node.driver.pending_count,
        "zk_znode_count": node.znode_count,
        "zk_watch_count": hub.count,
        "zk_ephemerals_count": sum(len(s.ephemerals) for s in node.all_sessions()),
        "zk_approximate_data_size": node.data_bytes,
        "zk_open_file_descriptor_count": len(os.listdir("/proc/self/fd")),
        "zk_max_file_descriptor_count": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "zk_last_zxid": node.zxid,
        "zk_session_count": node.session_count,
    }
    if node.driver.is_leader:
        progress = core.status().get("progress", {})
        assert isinstance(progress, dict)
        committed = core.log.committed
        body["zk_followers"] = voters_and_learners - 1
        body["zk_synced_followers"] = sum(
            1 for pid, pr in progress.items() if int(pid) != core.id and pr["match"] >= committed
        )
        body["zk_pending_syncs"] = 0  # no learner handshake: followers catch up by appends
    return web.json_response(body)


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
        yield CounterMetricFamily(
            "httpcoord_leader_changes",
            "times this node learned of a new leader",
            node.leader_changes,
        )
        yield CounterMetricFamily(
            "httpcoord_forwarded_writes",
            "writes this node forwarded to the leader",
            node.forwarder.txns_sent,
        )
        yield CounterMetricFamily(
            "httpcoord_forwarded_batches",
            "requests that carried them (writes forwarded together share one)",
            node.forwarder.batches_sent,
        )
        yield CounterMetricFamily(
            "httpcoord_forwarded_writes_received",
            "writes other members forwarded to this node as the leader",
            node.forwarded_received,
        )
        yield GaugeMetricFamily(
            "httpcoord_log_bytes_since_snapshot",
            "bytes of log entries applied since the last snapshot (what a restart replays)",
            node.log_bytes_since_snapshot,
        )
        yield GaugeMetricFamily(
            "httpcoord_snapshot_bytes", "size of the newest snapshot", node.snapshot_bytes
        )
        yield GaugeMetricFamily(
            "httpcoord_znode_data_bytes", "bytes of data in every znode", node.data_bytes
        )
        yield GaugeMetricFamily("httpcoord_sessions", "open sessions", node.session_count)
        yield GaugeMetricFamily("httpcoord_watchers", "open watches", self._hub.count)
        yield GaugeMetricFamily(
            "httpcoord_sse_streams", "open Server-Sent Event streams", self._hub.stream_count()
        )
        yield CounterMetricFamily(
            "httpcoord_watches_cut_off",
            "watches cut off as slow consumers (told where to resume)",
            self._hub.cut_off,
        )
        yield CounterMetricFamily(
            "httpcoord_sse_streams_dropped",
            "SSE streams whose connection was dropped because their client read nothing",
            self._hub.dropped_streams,
        )
        yield GaugeMetricFamily(
            "httpcoord_watch_history_events", "events kept for resuming watchers", len(node.history)
        )


def register_node(registry: CollectorRegistry, node: Node, hub: WatchHub) -> None:
    """The node's figures, read at scrape time, and the latency of its saves."""
    registry.register(NodeCollector(node, hub))
    saves = Histogram(
        "httpcoord_log_save_seconds",
        "a Raft save (one SQLite transaction, one fsync) as the loop waited for it",
        buckets=_SAVE_SECONDS_BUCKETS,
        registry=registry,
    )
    node.storage.save_observers.append(saves.observe)
