"""Real clusters on a network of their own: ``netns_cluster(tmp_path, 3)``
starts N ``httpcoord serve`` processes, node ``i`` in namespace ``i`` of a
fresh ``Network``, listening on its own address (client port 8181, peer port
8182: each namespace has its own ports). The test keeps talking to every node
through the bridge while the nemesis cuts the links between them.

Processes are the integration suite's ``Cluster`` (kill by PID, restart on
the same data dir); the network is torn down after them, also on failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chaos.net import Network
from tests.integration.cluster import FAST_ELECTIONS, SERVER, Cluster, Member

CLIENT_PORT = 8181
PEER_PORT = 8182


def require_network() -> None:
    why = Network.available()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")


@contextmanager
def netns_cluster(
    tmp_path: Path, n: int = 3, *extra_args: str, program: tuple[str, ...] = SERVER
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
        cluster = Cluster(members, (*FAST_ELECTIONS, *extra_args), program)
        for m in members:
            cluster.start(m.node_id)
        cluster.wait_ready()
        yield cluster, net
    finally:
        if cluster is not None:
            cluster.stop_all()
        net.close()
