"""Real partitions: each node in a network namespace of its own, links cut
with iptables (tests/chaos/net.py). What must hold in every shape of split:

- the side with a majority elects a leader and takes writes;
- a node without a majority acknowledges no write and answers no
  linearizable read (it may serve its own, older, state to default reads);
- after the heal every node converges to one state, which holds every
  acknowledged write.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos.harness import FaultNetwork, netns_cluster
from tests.integration.cluster import ELECTION_TIMEOUT_MAX_S, Cluster, get_json, http, wait_for

pytestmark = pytest.mark.chaos

REGISTER = "/v1/nodes/chaos-register"
LOG_CREATE = "/v1/nodes/chaos/log/?sequential=true&parents=true"
WRITE_TIMEOUT_S = 3.0
ELECTION_S = 10 * ELECTION_TIMEOUT_MAX_S  # several rounds of split votes included


@dataclass
class Writes:
    """Writes of increasing values (the register by default), from any
    number of threads; what was acknowledged, by whom, and what was refused."""

    acked: list[tuple[int, int, int]] = field(default_factory=list)  # (value, node, zxid)
    refused: list[tuple[int, int, int]] = field(default_factory=list)  # (value, node, status)
    next_value: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def more_than(self, count: int) -> Callable[[], bool]:
        """A check for wait_for: more than ``count`` writes acknowledged."""
        return lambda: len(self.acked) > count

    def write(
        self, cluster: Cluster, node: int, method: str = "PUT", path: str = REGISTER
    ) -> tuple[int, int]:
        with self.lock:
            value = self.next_value
            self.next_value += 1
        try:
            status, headers, _ = http(
                method, cluster[node].url + path, str(value).encode(), timeout=WRITE_TIMEOUT_S
            )
        except OSError:
            status, headers = 0, {}
        with self.lock:
            if 200 <= status < 300:
                self.acked.append((value, node, int(headers["X-Coord-Zxid"])))
            else:
                self.refused.append((value, node, status))
        return value, status


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[tuple[Cluster, FaultNetwork]]:
    with netns_cluster(tmp_path, 3) as (cluster, net):
        yield cluster, net


@pytest.fixture
def cluster5(tmp_path: Path) -> Iterator[tuple[Cluster, FaultNetwork]]:
    with netns_cluster(tmp_path, 5) as (cluster, net):
        yield cluster, net


def write_through(cluster: Cluster, writes: Writes, node: int, count: int) -> None:
    """``count`` writes through ``node``, each retried until acknowledged
    (a write refused with 503 did not happen; one that timed out may have)."""
    for _ in range(count):
        deadline = time.monotonic() + ELECTION_S
        while True:
            _, status = writes.write(cluster, node)
            if 200 <= status < 300:
                break
            assert time.monotonic() < deadline, f"no write through node {node} in {ELECTION_S}s"
            time.sleep(0.05)


def assert_converged(cluster: Cluster, writes: Writes) -> None:
    """Every node at one zxid with one digest, and the register holds the
    newest acknowledged write (or a later one whose outcome was unknown)."""

    wait_for("every node at one zxid and digest", cluster.converged, 3 * ELECTION_S)
    newest_acked = max(writes.acked, key=lambda a: a[2])
    for m in cluster:
        body = get_json(m.url + REGISTER)
        value = int(body["data"])
        unknown = {v for v, _, s in writes.refused if s in (0, 504)}
        assert value == newest_acked[0] or (value in unknown and value > newest_acked[0]), (
            f"node {m.node_id} holds {value}, newest acknowledged write {newest_acked}"
        )


def assert_no_linearizable_read(cluster: Cluster, node: int) -> None:
    status, _, body = http(
        "GET",
        cluster[node].url + REGISTER + "?consistency=linearizable",
        timeout=WRITE_TIMEOUT_S + 2,
    )
    assert status in (503, 504), (status, body)


def test_isolated_leader_steps_aside_and_rejoins(cluster3: tuple[Cluster, FaultNetwork]) -> None:
    cluster, net = cluster3
    writes = Writes()
    old = cluster.leader([1, 2, 3], ELECTION_S)
    write_through(cluster, writes, old, 5)

    net.isolate(old)
    rest = [i for i in (1, 2, 3) if i != old]
    new = cluster.leader(rest, ELECTION_S, not_=old)
    write_through(cluster, writes, rest[0], 10)  # forwarded or not, through the majority
    # The old leader can no longer commit: nothing it takes now is acknowledged.
    for _ in range(3):
        value, status = writes.write(cluster, old)
        assert not 200 <= status < 300, f"write {value} acknowledged by the isolated node {old}"
    assert_no_linearizable_read(cluster, old)

    net.heal()
    assert cluster.leader([1, 2, 3], ELECTION_S) in (1, 2, 3)
    write_through(cluster, writes, old, 3)  # it follows the new leader now
    assert_converged(cluster, writes)
    assert new != old


def test_minority_side_refuses_majority_side_serves(cluster5: tuple[Cluster, FaultNetwork]) -> None:
    cluster, net = cluster5
    writes = Writes()
    lead = cluster.leader([1, 2, 3, 4, 5], ELECTION_S)
    minority = [lead, lead % 5 + 1]  # the leader and one more: a minority of two
    majority = [i for i in range(1, 6) if i not in minority]
    write_through(cluster, writes, majority[0], 3)

    net.partition(minority, majority)
    cluster.leader(majority, ELECTION_S, not_=lead)
    write_through(cluster, writes, majority[1], 10)
    for node in minority:
        _, status = writes.write(cluster, node)
        assert not 200 <= status < 300, f"the minority node {node} acknowledged a write"
        assert_no_linearizable_read(cluster, node)

    net.heal()
    cluster.leader([1, 2, 3, 4, 5], ELECTION_S)
    write_through(cluster, writes, minority[0], 3)
    assert_converged(cluster, writes)


def test_bridge_node_keeps_one_leader(cluster5: tuple[Cluster, FaultNetwork]) -> None:
    """{1,2} | {4,5}, and 3 hears both: only a leader that 3 follows can
    reach a majority, so there is at most one, and writes go on."""
    cluster, net = cluster5
    writes = Writes()
    net.partition([1, 2], [4, 5])  # 3 is on no side: it hears everyone
    lead = cluster.leader([3], ELECTION_S)
    write_through(cluster, writes, lead, 10)
    write_through(cluster, writes, 3, 5)

    net.heal()
    cluster.leader([1, 2, 3, 4, 5], ELECTION_S)
    assert_converged(cluster, writes)


def test_one_way_cut_from_the_followers(cluster3: tuple[Cluster, FaultNetwork]) -> None:
    """The leader stops hearing its followers (their acknowledgements are
    lost): it must stop acknowledging, and the followers elect another."""
    cluster, net = cluster3
    writes = Writes()
    old = cluster.leader([1, 2, 3], ELECTION_S)
    rest = [i for i in (1, 2, 3) if i != old]
    for follower in rest:
        net.drop(old, follower)
    cluster.leader(rest, ELECTION_S, not_=old)
    write_through(cluster, writes, rest[0], 10)
    _, status = writes.write(cluster, old)
    assert not 200 <= status < 300, "a leader that hears no follower acknowledged a write"

    net.heal()
    cluster.leader([1, 2, 3], ELECTION_S)
    write_through(cluster, writes, old, 3)
    assert_converged(cluster, writes)


def test_ring_makes_progress(cluster5: tuple[Cluster, FaultNetwork]) -> None:
    """Each node hears only its two neighbours: a leader commits with them,
    and the nodes two hops away do not depose it for good."""
    cluster, net = cluster5
    writes = Writes()
    for a in range(1, 6):
        for b in range(1, 6):
            if a != b and (a - b) % 5 not in (1, 4):
                net.drop(a, b)

    def leader_with_neighbours() -> int:
        lead = cluster.leader_named_by(1) or cluster.leader_named_by(3)
        if not lead:
            return 0
        neighbours = [(lead - 2) % 5 + 1, lead % 5 + 1]
        return lead if all(cluster.leader_named_by(n) == lead for n in neighbours) else 0

    lead = wait_for("a leader its neighbours follow", leader_with_neighbours, ELECTION_S)
    deadline = time.monotonic() + 3 * ELECTION_S
    while len(writes.acked) < 10:
        assert time.monotonic() < deadline, f"the ring took {len(writes.acked)} writes"
        target = cluster.leader_named_by(1) or lead
        writes.write(cluster, target)

    net.heal()
    cluster.leader([1, 2, 3, 4, 5], ELECTION_S)
    assert_converged(cluster, writes)


def test_writes_during_flapping_partitions(cluster3: tuple[Cluster, FaultNetwork]) -> None:
    """Writers on every node while the leader is cut off and healed over and
    over: every acknowledged write is in the final state, in order."""
    cluster, net = cluster3
    writes = Writes()
    stop = threading.Event()

    def writer(node: int) -> None:
        end = time.monotonic() + 30  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < end:
            writes.write(cluster, node, "POST", LOG_CREATE)

    threads = [threading.Thread(target=writer, args=(i,)) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            lead = cluster.leader([1, 2, 3], ELECTION_S)
            net.isolate(lead)
            cluster.leader([i for i in (1, 2, 3) if i != lead], ELECTION_S, not_=lead)
            net.heal()
            # Writes go on between the flaps, however fast the network is cut
            # and healed (proxies do it at once, iptables in tens of ms).
            wait_for("writes after the heal", writes.more_than(len(writes.acked) + 4), ELECTION_S)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    cluster.leader([1, 2, 3], ELECTION_S)
    assert len(writes.acked) > 20, f"only {len(writes.acked)} writes acknowledged"

    def children_everywhere() -> dict[int, list[str]] | None:
        seen = {}
        zxid = max(z for _, _, z in writes.acked)
        for m in cluster:
            status, _, body = http(
                "GET",
                m.url + "/v1/nodes/chaos/log?children=true",
                headers={"X-Coord-Min-Zxid": str(zxid)},
            )
            if status != 200:
                return None
            seen[m.node_id] = json.loads(body)["children"]
        return seen if len({tuple(c) for c in seen.values()}) == 1 else None

    children = next(iter(wait_for("one child list", children_everywhere, ELECTION_S).values()))
    data = {}
    for name in children:
        body = get_json(cluster[1].url + "/v1/nodes/chaos/log/" + urllib.parse.quote(name))
        data[int(body["data"])] = int(body["stat"]["czxid"])
    for value, node, zxid in writes.acked:
        assert data.get(value) == zxid, (
            f"acknowledged create {value} (zxid {zxid}, via {node}) lost"
        )
    # Sequence numbers: unique by construction of the names; gap-free in creation order.
    seqs = sorted(int(n) for n in children)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence numbers with gaps"


def test_a_node_behind_never_calls_a_live_session_expired(
    cluster3: tuple[Cluster, FaultNetwork],
) -> None:
    """A follower that has not applied a session's open (it hears the
    leader's answers but not its replication stream) answers a heartbeat,
    an ephemeral create or a close for it 503, never 404 SessionExpired: a
    client told SessionExpired gives its session up. Healed, it answers 200."""
    cluster, net = cluster3
    leader = cluster.leader()
    behind = next(m.node_id for m in cluster if m.node_id != leader)
    net.drop_dialled(behind, leader, cluster[behind].peer_port)
    status, _, body = http("POST", cluster[leader].url + "/v1/sessions", b'{"ttl_ms": 10000}')
    assert status == 201, body
    session = json.loads(body)["id"]
    url = cluster[behind].url
    requests = [
        ("POST", f"/v1/sessions/{session}/heartbeat", {}),
        ("POST", "/v1/nodes/behind-eph?ephemeral=true", {"X-Coord-Session": session}),
        ("DELETE", f"/v1/sessions/{session}", {}),
    ]
    for method, path, headers in requests:
        status, _, body = http(method, url + path, headers=headers, timeout=WRITE_TIMEOUT_S + 5)
        assert status == 503, (method, path, status, body)
    net.heal()

    def heartbeat_taken() -> bool:
        return http("POST", f"{url}/v1/sessions/{session}/heartbeat")[0] == 200

    wait_for("a heartbeat taken by the healed follower", heartbeat_taken, 3 * ELECTION_S)
