"""Service configuration: one immutable object built by the CLI (or a test)
and handed to ``create_app``; no module-level settings anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from httpcoord.cluster.node import ClusterConfig, NodeLimits

DEFAULT_LISTEN = "127.0.0.1:8181"
DEFAULT_DATA_DIR = "./httpcoord-data"
DEFAULT_PEER_LISTEN = "127.0.0.1:8182"


@dataclass(frozen=True, slots=True)
class Limits:
    data_bytes_max: int = 1024 * 1024  # one znode's data (ZooKeeper's jute.maxbuffer)
    path_length_max: int = 1024  # characters in a znode path
    request_bytes_max: int = 8 * 1024 * 1024  # a JSON request body (multi)
    multi_ops_max: int = 1000  # ops in one multi
    session_ttl_min_ms: int = 2000  # a requested session ttl is clamped into
    session_ttl_max_ms: int = 60_000  # [min, max], as ZooKeeper negotiates timeouts
    watchers_per_client_max: int = 1000  # open watches from one client address
    watch_queue_events_max: int = 10_000  # events buffered for one slow watcher
    watch_timeout_max_s: float = 300.0  # longest long-poll a client may ask for
    watch_initial_nodes_max: int = 10_000  # znodes in a watch's ?initial=true state
    children_page_max: int = 10_000  # child names in one ?children=true answer
    sse_keepalive_ms: int = 15_000  # comment line on idle SSE streams


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8181
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    limits: Limits = field(default_factory=Limits)
    node: NodeLimits = field(default_factory=NodeLimits)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # The peer listener (Raft traffic, forwarded writes); None: a cluster of
    # one that listens to no peers.
    peer_listen: tuple[str, int] | None = None
    # Processes beside this one that answer reads and watches on the same
    # port (httpcoord.workers); 0: this process answers everything.
    read_workers: int = 0
    # Browser origins whose pages may call the API (routes.cors); "*": any.
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False  # one log line per request (routes.observe)
    log_format: str = "text"  # text | json | logfmt (httpcoord.logs), for the read workers


def parse_peers(value: str) -> dict[int, str]:
    """``1=host:port,2=host:port,...`` -> {1: "host:port", ...}."""
    peers: dict[int, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        node_id, sep, address = item.partition("=")
        if not sep or not node_id.strip().isdigit() or int(node_id) < 1:
            raise ValueError(f"expected ID=HOST:PORT with a positive id, got {item!r}")
        parse_listen(address.strip())
        if int(node_id) in peers:
            raise ValueError(f"node {node_id} is listed twice")
        peers[int(node_id)] = address.strip()
    if not peers:
        raise ValueError("expected at least one ID=HOST:PORT")
    return peers


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8181`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
