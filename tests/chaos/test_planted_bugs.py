"""The fault suite bites: each build in ``tests/chaos/planted.py`` is wrong in
one rule the service relies on, and the scenario aimed at that rule finds an
anomaly with the suite's own checkers; the correct build, put through every
scenario, shows none. A scenario is a fault and a few recorded operations,
seconds long:

  ack_before_majority     isolate the leader, write to it, read from the
                          majority: the acknowledged write is not there
                          (register linearizability)
  read_before_apply       pause a follower under writes, read it
                          linearizably as it resumes: a stale value
                          (register linearizability)
  forward_before_apply    cut the leader's stream to a follower, write
                          through that follower, read it back there without
                          a min-zxid: the zxid went back (read your writes)
  no_renewal_on_failover  heartbeat a session through a leader kill: the
                          session is gone well within a ttl of the last
                          acknowledged heartbeat (session leases)
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.checkers import (
    Anomaly,
    Observation,
    SessionLease,
    check_monotonic_zxids,
    check_session_leases,
)
from tests.chaos.harness import FaultNetwork, netns_cluster
from tests.chaos.history import History
from tests.chaos.linearizable import VersionedRegister, check_linearizable
from tests.chaos.planted import PLANTED
from tests.chaos.timeline import write_failure
from tests.chaos.workload import problem_code
from tests.integration.cluster import Cluster, http, wait_for

pytestmark = pytest.mark.chaos

INITIAL = "init"
TIMEOUT_S = 2.0
SESSION_TTL_MS = 5000
# A follower passes heartbeats on every 500 ms, and a follower cut from its
# leader notices within an election timeout (at most 0.5 s here).
LEASE_SLACK_MS = 1500
SLOWED_S = 1.5
BIG_VALUE_BYTES = 16 * 1024

Scenario = Callable[[Cluster, FaultNetwork, History], list[Anomaly]]


# ---- recorded operations ------------------------------------------------------------


def _url(cluster: Cluster, node: int, key: str) -> str:
    return f"{cluster[node].url}/v1/nodes/planted-{key}"


def create_register(cluster: Cluster, key: str) -> None:
    node = min(m.node_id for m in cluster)
    status, _, body = http("POST", _url(cluster, node, key), INITIAL.encode())
    assert status == 201, (status, body)


def write(history: History, process: str, cluster: Cluster, node: int, key: str, value: str) -> int:
    """A recorded unconditional write; the zxid it was acknowledged at (0: not)."""
    op = history.invoke(process, "write", key, value)
    try:
        status, headers, body = http(
            "PUT", _url(cluster, node, key), value.encode(), timeout=TIMEOUT_S
        )
    except OSError as exc:
        history.unknown(op, type(exc).__name__)
        return 0
    if status == 200:
        history.ok(op, int(json.loads(body)["stat"]["version"]))
        return int(headers["X-Coord-Zxid"])
    code = problem_code(body)
    if code in ("Unavailable", "TooManyRequests"):
        history.fail(op, code)
    else:
        history.unknown(op, code or str(status))
    return 0


def read(history: History, process: str, cluster: Cluster, node: int, key: str) -> None:
    """A recorded linearizable read."""
    op = history.invoke(process, "read", key)
    try:
        status, _, body = http(
            "GET", _url(cluster, node, key) + "?consistency=linearizable", timeout=TIMEOUT_S
        )
    except OSError as exc:
        history.fail(op, type(exc).__name__)
        return
    if status != 200:
        history.fail(op, problem_code(body) or str(status))
        return
    doc = json.loads(body)
    history.ok(op, (doc["data"], int(doc["stat"]["version"])))


def linearizable(history: History) -> list[Anomaly]:
    return check_linearizable(history.ops(), VersionedRegister(initial=INITIAL)).anomalies()


def followers(cluster: Cluster, leader: int) -> list[int]:
    return sorted(m.node_id for m in cluster if m.node_id != leader)


# ---- scenarios -------------------------------------------------------------------------


def isolated_leader_write(cluster: Cluster, net: FaultNetwork, history: History) -> list[Anomaly]:
    create_register(cluster, "a")
    leader = cluster.leader()
    majority = followers(cluster, leader)
    net.isolate(leader)
    write(history, "old-leader-client", cluster, leader, "a", "written-to-isolated-leader")
    cluster.leader(among=majority, not_=leader)
    for node in majority:
        read(history, f"reader-{node}", cluster, node, "a")
    return linearizable(history)


def slowed_follower_read(cluster: Cluster, net: FaultNetwork, history: History) -> list[Anomaly]:
    create_register(cluster, "b")
    leader = cluster.leader()
    slow = followers(cluster, leader)[0]
    stop = threading.Event()

    def writer() -> None:
        n = 0
        deadline = time.monotonic() + 10  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            n += 1
            # One entry per append (over the 4 KiB window): the slowed
            # follower falls behind by whole entries, not only in commits.
            write(history, "writer", cluster, leader, "b", f"v{n}".ljust(BIG_VALUE_BYTES, "."))

    def stutter() -> None:
        # Stopped most of the time, never for long: it keeps its leader
        # but hears of each commit late, as behind a slow link.
        deadline = time.monotonic() + SLOWED_S
        while time.monotonic() < deadline:
            cluster.kill(slow, signal.SIGSTOP)
            time.sleep(0.015)
            cluster.kill(slow, signal.SIGCONT)
            time.sleep(0.005)

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, stutter)]
    for t in threads:
        t.start()
    try:
        until = time.monotonic() + SLOWED_S
        while time.monotonic() < until:
            read(history, "reader", cluster, slow, "b")
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S * 2)
        cluster.kill(slow, signal.SIGCONT)
    return linearizable(history)


def forwarded_write_read_back(
    cluster: Cluster, net: FaultNetwork, history: History
) -> list[Anomaly]:
    create_register(cluster, "c")
    wait_for("every member at one zxid", cluster.converged, 10)
    leader = cluster.leader()
    node = followers(cluster, leader)[0]
    # The follower still forwards to the leader and hears its answers, but
    # not its replication stream: it cannot apply what it forwards.
    net.drop_dialled(node, leader, cluster[node].peer_port)
    seen: list[Observation] = []
    zxid = write(history, "sticky", cluster, node, "c", "forwarded")
    if zxid:
        seen.append(Observation(time.monotonic_ns(), zxid))
        # A client pinned to one node, as a ZooKeeper session is, sends no min-zxid.
        # Any answer (a 404 too) says which zxid the node had applied.
        _, headers, _ = http("GET", _url(cluster, node, "c"), timeout=TIMEOUT_S)
        if "X-Coord-Zxid" in headers:
            seen.append(Observation(time.monotonic_ns(), int(headers["X-Coord-Zxid"])))
    return check_monotonic_zxids({"sticky": seen})


def session_through_failover(
    cluster: Cluster, net: FaultNetwork, history: History
) -> list[Anomaly]:
    ids = sorted(m.node_id for m in cluster)
    status, _, body = http(
        "POST",
        f"{cluster[ids[0]].url}/v1/sessions",
        json.dumps({"ttl_ms": SESSION_TTL_MS}).encode(),
    )
    assert status == 201, (status, body)
    session = json.loads(body)["id"]
    status, _, body = http(
        "POST",
        f"{cluster[ids[0]].url}/v1/nodes/planted-eph?ephemeral=true",
        headers={"X-Coord-Session": session},
    )
    assert status == 201, (status, body)
    rng = random.Random(7)
    ended_ns: int | None = None
    killed: int | None = None
    kill_at = time.monotonic() + 1.0
    # Heartbeat through the kill and for 3 s (well within the ttl) after a
    # survivor names a new leader; bounded whatever happens.
    until, new_leader = kill_at + 15.0, False
    while time.monotonic() < until and ended_ns is None:
        if killed is None and time.monotonic() >= kill_at:
            killed = cluster.leader()
            cluster.kill(killed)
        elif killed is not None and not new_leader:
            named = {cluster.leader_named_by(i) for i in ids if i != killed}
            if named - {0, killed}:
                new_leader, until = True, time.monotonic() + 3.0
        node = rng.choice([i for i in ids if i != killed])
        op = history.invoke("session", "heartbeat", session)
        try:
            status, _, body = http(
                "POST", f"{cluster[node].url}/v1/sessions/{session}/heartbeat", timeout=TIMEOUT_S
            )
        except OSError as exc:
            history.fail(op, type(exc).__name__)
            continue
        if status == 200:
            history.ok(op)
        else:
            history.fail(op, problem_code(body) or str(status))
            if problem_code(body) == "SessionExpired":
                ended_ns = time.monotonic_ns()
        time.sleep(0.25)  # the client's heartbeat interval: a twentieth of the ttl
    if killed is not None:
        cluster.start(killed)
    acked = [op for op in history.ops() if op.f == "heartbeat" and op.outcome == "ok"]
    if not acked:
        return []
    last = max(acked, key=lambda op: op.invoke_ns)
    lease = SessionLease(session, SESSION_TTL_MS, last.invoke_ns, ended_ns, last.id)
    return check_session_leases([lease], LEASE_SLACK_MS)


SCENARIOS: dict[str, Scenario] = {
    "ack_before_majority": isolated_leader_write,
    "read_before_apply": slowed_follower_read,
    "forward_before_apply": forwarded_write_read_back,
    "no_renewal_on_failover": session_through_failover,
}


def planted_build(bug: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tests.chaos.planted", bug)


def run_scenario(
    tmp_path: Path, bug: str, name: str, cluster: Cluster, net: FaultNetwork
) -> list[Anomaly]:
    history = History()
    anomalies = SCENARIOS[name](cluster, net, history)
    counts = {
        o: sum(1 for op in history.ops() if op.outcome == o) for o in ("ok", "fail", "unknown")
    }
    print(f"\nplanted {bug!r}, scenario {name!r}: ops {counts}, anomalies {len(anomalies)}")
    for a in anomalies:
        print(f"  {a.kind}: {a.message[:300]}")
    if anomalies:
        write_failure(tmp_path / f"{bug}-{name}", history, anomalies)
    return anomalies


def test_every_planted_bug_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(PLANTED)


@pytest.mark.parametrize("bug", PLANTED)
def test_the_suite_finds_the_planted_bug(tmp_path: Path, bug: str) -> None:
    with netns_cluster(tmp_path, 3, program=planted_build(bug)) as (cluster, net):
        anomalies = run_scenario(tmp_path, bug, bug, cluster, net)
    assert anomalies, f"the {bug} build passed its scenario: the suite does not bite"


def test_the_correct_build_passes_every_scenario(tmp_path: Path) -> None:
    with netns_cluster(tmp_path, 3, program=planted_build("none")) as (cluster, net):
        for name in SCENARIOS:
            anomalies = run_scenario(tmp_path, "none", name, cluster, net)
            assert anomalies == [], f"the correct build failed {name}: {anomalies}"
            net.heal()
            for m in cluster:
                if not m.alive:
                    cluster.start(m.node_id)
            cluster.wait_ready()
            wait_for("every member at one zxid", cluster.converged, 15)
