"""Real clusters on a network the test can cut: ``chaos_cluster(tmp_path, 3)``
starts N ``httpcoord serve`` processes and yields them with the network
between them, one of two kinds:

- ``netns`` (``net.py``): node ``i`` in network namespace ``i`` of a fresh
  ``Network``, on its own address (client port 8181, peer port 8182: each
  namespace has its own ports); links cut with iptables.
- ``proxy`` (``proxy.py``): every node on 127.0.0.1 with free ports, each
  given its own ``--peers`` that point at one TCP proxy per directed link;
  links cut in the proxies. It needs no privilege.

``--chaos-net`` picks one for the run (the conftest sets ``NET_CHOICE``):
``auto`` (the default) takes namespaces where they can be made, else the
proxies. The test talks to every node directly (``member.url``) while the
nemesis cuts the links between them; both networks answer the same calls
(``drop``, ``cut``, ``partition``, ``isolate``, ``heal``, ``close``).

Processes are the integration suite's ``Cluster`` (kill by PID, restart on
the same data dir); the network is torn down after them, also on failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Literal, Protocol

import pytest

from tests.chaos.net import Network
from tests.chaos.proxy import ProxyNetwork
from tests.integration.cluster import FAST_ELECTIONS, SERVER, Cluster, Member

CLIENT_PORT = 8181
PEER_PORT = 8182

NetKind = Literal["netns", "proxy"]
NET_CHOICES = ("auto", "netns", "proxy")
# The run's --chaos-net, set by tests/conftest.py when pytest starts.
NET_CHOICE = "auto"


class FaultNetwork(Protocol):
    """What the fault suite may do to either network."""

    cuts: set[tuple[int, int]]

    def drop(self, listener: int, silenced: int) -> None: ...
    def drop_dialled(self, listener: int, dialer: int, port: int) -> None: ...
    def cut(self, a: int, b: int) -> None: ...
    def partition(self, *sides: Iterable[int]) -> None: ...
    def isolate(self, node: int) -> None: ...
    def heal(self) -> None: ...
    def close(self) -> None: ...


@functools.cache
def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can); probed once per
    run, as the probe makes and removes a namespace."""
    return Network.available()


def net_kind(choice: str | None = None) -> NetKind:
    """The network a test gets for ``choice`` (default: the run's option);
    skips the test when it asks for namespaces that cannot be made."""
    choice = choice or NET_CHOICE
    if choice == "proxy":
        return "proxy"
    if choice not in NET_CHOICES:
        raise ValueError(f"--chaos-net must be one of {', '.join(NET_CHOICES)}, not {choice!r}")
    why = netns_unavailable()
    if why is None:
        return "netns"
    if choice == "netns":
        pytest.skip(f"no network namespaces here: {why}")
    return "proxy"


def require_network() -> None:
    """Skip unless the run's choice of network can be made here."""
    net_kind()


@contextmanager
def chaos_cluster(
    tmp_path: Path,
    n: int = 3,
    *extra_args: str,
    program: tuple[str, ...] = SERVER,
    net: str | None = None,
    data_fs: Callable[[Path], AbstractContextManager[Path]] | None = None,
) -> Iterator[tuple[Cluster, FaultNetwork]]:
    """N nodes on the network ``net`` names (``auto``, ``netns``, ``proxy``;
    default: the run's ``--chaos-net``), ready, with their network; with
    ``data_fs``, each data dir on a file system of its own that the test may
    fill (tests/chaos/disk.py)."""
    ids = range(1, n + 1)
    made: Network | ProxyNetwork
    if net_kind(net) == "netns":
        netns = made = Network(ids)
        members = [
            Member(
                i,
                CLIENT_PORT,
                PEER_PORT,
                tmp_path / f"node{i}",
                host=netns.hosts[i].address,
                argv_prefix=netns.hosts[i].exec_prefix(),
            )
            for i in ids
        ]
    else:
        proxies = made = ProxyNetwork(ids)
        members = [
            Member(
                i,
                proxies.hosts[i].client_port,
                proxies.hosts[i].peer_port,
                tmp_path / f"node{i}",
                peers=proxies.peers_arg(i),
            )
            for i in ids
        ]
    cluster: Cluster | None = None
    disks = ExitStack()
    try:
        if data_fs is not None:
            for m in members:
                disks.enter_context(data_fs(m.data_dir))
        cluster = Cluster(members, (*FAST_ELECTIONS, *extra_args), program)
        for m in members:
            cluster.start(m.node_id)
        cluster.wait_ready()
        yield cluster, made
    finally:
        if cluster is not None:
            cluster.stop_all()
        disks.close()
        made.close()


# The name the partition tests and the soak know it by.
netns_cluster = chaos_cluster
