"""The fault suite's proxy network (tests/chaos/proxy.py): first the proxy
itself, between plain sockets (what passes, what is held, what a dial sees
while a link is cut, that nothing is left open); then the core of the
partition scenarios on real clusters whose peers talk only through it.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import chaos_cluster
from tests.chaos.proxy import LOOPBACK, ProxyNetwork
from tests.chaos.test_partitions import (
    ELECTION_S,
    Writes,
    assert_converged,
    assert_no_linearizable_read,
    write_through,
)
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.chaos

IO_TIMEOUT_S = 5.0
# How long a cut direction is watched for bytes that must not come: the
# proxy holds them until the heal, so any window shows it; this one is long
# next to a loopback round trip (tens of microseconds).
QUIET_S = 0.3


# ---- the proxy between plain sockets ----------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    """Node 2's peer port in these tests: counts its connections, echoes."""

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _EchoServer)
        with server.lock:
            server.accepted += 1
        self.request.settimeout(IO_TIMEOUT_S * 4)
        for _ in range(10_000):  # bounded: a test sends a handful of messages
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__((LOOPBACK, port), _Echo)
        self.lock = threading.Lock()
        self.accepted = 0


@pytest.fixture
def echo_net() -> Iterator[tuple[ProxyNetwork, _EchoServer]]:
    net = ProxyNetwork([1, 2])
    server = _EchoServer(net.hosts[2].peer_port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield net, server
    finally:
        net.close()
        server.shutdown()
        server.server_close()
        thread.join(IO_TIMEOUT_S)


def dial(net: ProxyNetwork, dialer: int, target: int) -> socket.socket:
    """Node ``dialer``'s connection to ``target``, through their link."""
    port = net.links[(dialer, target)].port
    return socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT_S)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def assert_quiet(sock: socket.socket) -> None:
    sock.settimeout(QUIET_S)
    try:
        data = sock.recv(1024)
    except TimeoutError:
        return
    finally:
        sock.settimeout(IO_TIMEOUT_S)
    raise AssertionError(f"bytes came through a cut link: {data!r}")


def test_peers_arg_points_each_peer_at_the_link_proxy() -> None:
    net = ProxyNetwork([1, 2, 3])
    try:
        links = net.links
        assert net.peers_arg(2) == (
            f"1={LOOPBACK}:{links[(2, 1)].port},"
            f"2={LOOPBACK}:{net.hosts[2].peer_port},"
            f"3={LOOPBACK}:{links[(2, 3)].port}"
        )
        ports = {link.port for link in links.values()}
        ports |= {p for h in net.hosts.values() for p in (h.client_port, h.peer_port)}
        assert len(ports) == 6 + 3 * 2, "a port used twice"
    finally:
        net.close()


def test_bytes_pass_both_ways_until_a_cut(echo_net: tuple[ProxyNetwork, _EchoServer]) -> None:
    net, _ = echo_net
    with dial(net, 1, 2) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        stats = net.link_stats(1, 2)
        assert (stats["bytes_up"], stats["bytes_down"], stats["open"]) == (5, 5, 1)


def test_a_cut_holds_bytes_and_the_heal_delivers_them_in_order(
    echo_net: tuple[ProxyNetwork, _EchoServer],
) -> None:
    net, _ = echo_net
    with dial(net, 1, 2) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"a"
        net.cut(1, 2)
        sock.sendall(b"bcd")
        sock.sendall(b"efg")
        assert_quiet(sock)
        assert net.link_stats(1, 2)["bytes_up"] == 1, "bytes reached node 2 across the cut"
        net.heal()
        assert recv_exactly(sock, 6) == b"bcdefg"  # held, not lost: no gap in the stream


def test_one_way_drop_silences_one_direction_of_a_connection(
    echo_net: tuple[ProxyNetwork, _EchoServer],
) -> None:
    """drop(1, 2): node 1 stops hearing node 2. On node 1's connection to
    node 2 its bytes still reach node 2, and node 2's answers are held."""
    net, _ = echo_net
    with dial(net, 1, 2) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        net.drop(1, 2)
        assert net.cuts == {(1, 2)}
        sock.sendall(b"ping")
        wait_for("node 2 hears node 1", lambda: net.link_stats(1, 2)["bytes_up"] == 5, 5)
        assert_quiet(sock)  # the echo waits in the proxy
        assert net.link_stats(1, 2)["bytes_down"] == 1
        net.heal()
        assert recv_exactly(sock, 4) == b"ping"

    with dial(net, 1, 2) as sock:
        net.drop(2, 1)  # now node 2 stops hearing node 1: nothing reaches it
        sock.sendall(b"lost?")
        assert_quiet(sock)
        net.heal()
        assert recv_exactly(sock, 5) == b"lost?"


def test_drop_dialled_holds_only_what_the_dialer_sends(
    echo_net: tuple[ProxyNetwork, _EchoServer],
) -> None:
    net, _ = echo_net
    with pytest.raises(ValueError):
        net.drop_dialled(2, 1, net.hosts[2].client_port)
    with dial(net, 1, 2) as sock:
        net.drop_dialled(1, 2, net.hosts[1].peer_port)  # node 1's dials are not node 2's
        sock.sendall(b"ok")
        assert recv_exactly(sock, 2) == b"ok"
        net.drop_dialled(2, 1, net.hosts[2].peer_port)
        sock.sendall(b"held")
        assert_quiet(sock)
        assert net.link_stats(1, 2)["bytes_up"] == 2
        net.heal()
        assert recv_exactly(sock, 4) == b"held"


def test_no_connection_forms_across_a_cut(echo_net: tuple[ProxyNetwork, _EchoServer]) -> None:
    """A dial across a one-way cut is accepted but never reaches the target
    while the cut lasts; one given up meanwhile never reaches it at all."""
    net, server = echo_net
    net.drop(1, 2)  # one way is enough: a handshake needs both
    given_up = dial(net, 1, 2)
    given_up.sendall(b"GET /peer/v1/stream")
    waiting = dial(net, 1, 2)
    waiting.sendall(b"late")
    assert_quiet(waiting)
    given_up.close()
    wait_for("the proxy sees the dial given up", lambda: net.link_stats(1, 2)["open"] == 1, 5)
    assert server.accepted == 0
    net.heal()
    with waiting:
        assert recv_exactly(waiting, 4) == b"late"
    assert server.accepted == 1, "the dial given up during the cut reached the target"


def test_a_dial_to_a_node_that_is_down_is_closed() -> None:
    net = ProxyNetwork([1, 2])  # nothing listens on node 2's peer port
    try:
        with dial(net, 1, 2) as sock:
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass  # the RST of a refused connection: as good as an end
    finally:
        net.close()


def test_reset_mode_resets_connections_and_dials_until_the_heal(
    echo_net: tuple[ProxyNetwork, _EchoServer],
) -> None:
    net, server = echo_net
    net.cut_mode = "reset"
    with dial(net, 1, 2) as sock:
        sock.sendall(b"1")
        assert recv_exactly(sock, 1) == b"1"
        net.drop(2, 1)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    with dial(net, 1, 2) as sock:
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    assert net.link_stats(1, 2)["open"] == 0
    net.heal()
    with dial(net, 1, 2) as sock:
        sock.sendall(b"2")
        assert recv_exactly(sock, 1) == b"2"
    assert server.accepted == 2


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
def test_close_leaves_no_socket_open() -> None:
    before = _open_fds()
    extra = ProxyNetwork([1, 2, 3])
    extra_server = _EchoServer(extra.hosts[3].peer_port)
    thread = threading.Thread(target=extra_server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    socks = [dial(extra, 1, 3), dial(extra, 2, 3)]
    for s in socks:
        s.sendall(b"held")
    extra.cut(1, 3)
    socks.append(dial(extra, 1, 3))  # a dial waiting for the heal
    wait_for("three connections", lambda: extra.link_stats(1, 3)["open"] == 2, 5)
    extra.close()
    for port in [link.port for link in extra.links.values()]:
        with pytest.raises(OSError):
            socket.create_connection((LOOPBACK, port), timeout=1).close()
    for s in socks:
        s.close()
    extra_server.shutdown()
    extra_server.server_close()
    thread.join(IO_TIMEOUT_S)
    wait_for("every fd of the proxy closed", lambda: _open_fds() <= before, 5)
    assert not extra.loop.is_running()


# ---- clusters whose peers talk through the proxies ---------------------------------------


@pytest.fixture
def proxied3(tmp_path: Path) -> Iterator[tuple[Cluster, ProxyNetwork]]:
    with chaos_cluster(tmp_path, 3, net="proxy") as (cluster, net):
        assert isinstance(net, ProxyNetwork)
        yield cluster, net


def test_every_peer_connection_crosses_the_proxy(
    proxied3: tuple[Cluster, ProxyNetwork],
) -> None:
    """The leader's links carry its appends: with the proxies the only way
    between the nodes, a cut there is a cut between the nodes."""
    cluster, net = proxied3
    lead = cluster.leader([1, 2, 3], ELECTION_S)
    write_through(cluster, Writes(), lead, 3)
    for other in (1, 2, 3):
        if other != lead:
            stats = net.link_stats(lead, other)
            assert stats["open"] >= 1 and stats["bytes_up"] > 0, stats


def test_isolated_leader_loses_leadership_and_rejoins(
    proxied3: tuple[Cluster, ProxyNetwork],
) -> None:
    cluster, net = proxied3
    writes = Writes()
    old = cluster.leader([1, 2, 3], ELECTION_S)
    write_through(cluster, writes, old, 3)

    net.isolate(old)
    rest = [i for i in (1, 2, 3) if i != old]

    def delivered_bytes() -> dict[tuple[int, int], tuple[int, int]]:
        stats = {link: net.link_stats(*link) for link in net.links if old in link}
        return {link: (s["bytes_up"], s["bytes_down"]) for link, s in stats.items()}

    at_cut = delivered_bytes()
    cluster.leader(rest, ELECTION_S, not_=old)
    # The cut really cuts: the isolated node names no leader and is not
    # ready, and no byte crossed any of its links since the cut.
    wait_for("the isolated node knows no leader", lambda: not cluster.leader_named_by(old), 5)
    assert delivered_bytes() == at_cut, "bytes crossed a cut link"
    write_through(cluster, writes, rest[0], 5)
    value, status = writes.write(cluster, old)
    assert not 200 <= status < 300, f"write {value} acknowledged by the isolated node {old}"
    assert_no_linearizable_read(cluster, old)

    net.heal()
    cluster.leader([1, 2, 3], ELECTION_S)
    write_through(cluster, writes, old, 3)
    assert_converged(cluster, writes)


def test_reset_cuts_also_move_leadership_and_heal(tmp_path: Path) -> None:
    """The variant that rejects with RSTs instead of holding: the sockets die
    at once, the nodes redial into resets, and the heal converges all the same."""
    with chaos_cluster(tmp_path, 3, net="proxy") as (cluster, net):
        assert isinstance(net, ProxyNetwork)
        net.cut_mode = "reset"
        writes = Writes()
        old = cluster.leader([1, 2, 3], ELECTION_S)
        write_through(cluster, writes, old, 3)
        net.isolate(old)
        rest = [i for i in (1, 2, 3) if i != old]
        cluster.leader(rest, ELECTION_S, not_=old)
        write_through(cluster, writes, rest[1], 5)
        assert all(net.link_stats(*link)["open"] == 0 for link in net.links if old in link)
        net.heal()
        cluster.leader([1, 2, 3], ELECTION_S)
        write_through(cluster, writes, old, 3)
        assert_converged(cluster, writes)


def test_a_dead_node_behind_the_proxy_is_restarted_into_the_cluster(
    proxied3: tuple[Cluster, ProxyNetwork],
) -> None:
    """kill -9 and a restart on the same --peers, as the nemesis does."""
    cluster, _ = proxied3
    writes = Writes()
    lead = cluster.leader([1, 2, 3], ELECTION_S)
    cluster.kill(lead)
    rest = [i for i in (1, 2, 3) if i != lead]
    cluster.leader(rest, ELECTION_S, not_=lead)
    write_through(cluster, writes, rest[0], 5)
    started = time.monotonic()
    cluster.start(lead)
    cluster.wait_ready([lead])
    assert time.monotonic() - started < ELECTION_S
    write_through(cluster, writes, lead, 3)
    assert_converged(cluster, writes)
