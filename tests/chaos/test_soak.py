"""The soak: register clients on every node while the nemesis injects one
fault after another (partitions of every shape, kill -9, SIGSTOP), then a
heal, and the checkers on what was recorded:

- the register history is linearizable (per key; unknown outcomes may or
  may not have happened);
- no client's default reads ever go back in zxid;
- every node ends at one zxid with one digest.

  pytest -m chaos tests/chaos/test_soak.py --chaos-minutes=30 --chaos-seed=7

prints what it did (operations by outcome, faults by kind, anomalies). A
failing run leaves its history, anomalies and timeline pictures under the
test's tmp dir and names it.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.checkers import Anomaly, check_monotonic_zxids
from tests.chaos.harness import netns_cluster
from tests.chaos.history import History
from tests.chaos.linearizable import VersionedRegister, check_linearizable
from tests.chaos.nemesis import Nemesis
from tests.chaos.timeline import write_failure
from tests.chaos.workload import RegisterClients
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.chaos

KEYS = ("a", "b", "c")
CONVERGE_S = 30.0
CHECK_BUDGET_S = 120.0


@pytest.mark.parametrize("nodes", [3, 5])
def test_soak(tmp_path: Path, request: pytest.FixtureRequest, nodes: int) -> None:
    minutes = float(request.config.getoption("--chaos-minutes"))
    seed = int(request.config.getoption("--chaos-seed")) * 10 + nodes
    history = History()
    with netns_cluster(tmp_path, nodes) as (cluster, net):
        clients = RegisterClients(cluster, KEYS, history, seed)
        clients.create_registers()
        nemesis = Nemesis(cluster, net, random.Random(seed))
        fault_s = minutes * 60
        clients.start(max_s=fault_s + 60)
        try:
            nemesis.run(until_monotonic_s=time.monotonic() + fault_s)
            healed_ns = time.monotonic_ns()

            def acknowledged_since_heal() -> bool:
                ok = [o for o in history.ops() if o.invoke_ns > healed_ns and o.outcome == "ok"]
                return len(ok) >= clients.clients

            # The clients see the healed cluster before they stop.
            wait_for("operations acknowledged after the heal", acknowledged_since_heal, CONVERGE_S)
        finally:
            clients.stop()
        cluster.wait_ready(timeout=CONVERGE_S)
        wait_for("one zxid and digest on every node", cluster.converged, CONVERGE_S)
        clients.final_reads()

    ops = history.ops()
    lin = check_linearizable(
        ops, VersionedRegister(initial=clients.initial), time_budget_s=CHECK_BUDGET_S
    )
    anomalies: list[Anomaly] = lin.anomalies()
    anomalies += check_monotonic_zxids(clients.zxids_seen)
    outcomes = Counter(op.outcome for op in ops)
    print(
        f"\nsoak of {nodes} nodes, seed {seed}, {minutes:g} min of faults:"
        f" {len(ops)} operations ({outcomes['ok']} ok, {outcomes['fail']} failed,"
        f" {outcomes['unknown']} unknown), {sum(len(v) for v in clients.zxids_seen.values())}"
        f" default reads; faults {dict(nemesis.injected)}; anomalies {len(anomalies)}"
    )
    if anomalies:
        written = write_failure(tmp_path / "failure", history, anomalies)
        pytest.fail(
            f"{len(anomalies)} anomalies, first: {anomalies[0].message}; history and"
            f" pictures: {sorted({str(p.parent) for p in written})}"
        )
    assert outcomes["ok"] > 50, f"only {outcomes['ok']} operations succeeded"
    assert sum(nemesis.injected.values()) >= max(1, int(minutes * 60 / 5)), nemesis.injected
