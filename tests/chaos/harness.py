"""Real clusters on a network of their own: ``netns_cluster(tmp_path, 3)``
starts N ``httpcoord serve`` processes, node ``i`` in namespace ``i`` of a
fresh ``Network``, listening on its own address (client port 8181, peer port
8182: each namespace has its own ports). The test keeps talking to every node
through the bridge while the nemesis cuts the links between them.

Processes are the integration suite's ``Cluster`` (kill by PID, restart on
the same data dir); the network is torn down after them, also on failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chaos.net import Network
from tests.integration.cluster import FAST_ELECTIONS, Cluster, Member, http

CLIENT_PORT = 8181
PEER_PORT = 8182


def require_network() -> None:
    why = Network.available()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")


@contextmanager
def netns_cluster(
    tmp_path: Path, n: int = 3, *extra_args: str
) -> Iterator[tuple[Cluster, Network]]:
    require_network()
    net = Network(range(1, n + 1))
    cluster: Cluster | None = None
    try:
        members = [
            Member(
                i,
                CLIENT_PORT,
                PEER_PORT,
                tmp_path / f"node{i}",
                host=net.hosts[i].address,
                argv_prefix=net.hosts[i].exec_prefix(),
            )
            for i in range(1, n + 1)
        ]
        cluster = Cluster(members, (*FAST_ELECTIONS, *extra_args))
        for m in members:
            cluster.start(m.node_id)
        cluster.wait_ready()
        yield cluster, net
    finally:
        if cluster is not None:
            cluster.stop_all()
        net.close()


def wait_for(what: str, check: object, timeout_s: float, poll_s: float = 0.05) -> object:
    """Poll ``check()`` until it returns something truthy; that value."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not reached in {timeout_s}s (last: {last!r})")


def leader_seen_by(cluster: Cluster, node_id: int) -> int:
    """The leader node ``node_id`` names in /ready (0: none)."""
    _, _, body = http("GET", cluster[node_id].url + "/ready", timeout=2.0)
    return int(json.loads(body).get("leader") or 0)
