"""The soak: every workload on every node while the nemesis injects one
fault after another (partitions of every shape, kill -9 of one node, of the
leader or of a minority at once, SIGSTOP, rolling restarts), then a heal,
and the checkers on what was recorded:

- registers: the history is linearizable (per key; unknown outcomes may or
  may not have happened), and no client's default reads go back in zxid;
- the sequential set: no acknowledged create lost, numbers unique and
  gap-free, no child that no create can explain;
- locks: the fence log accepted tokens in order, one holder at a time;
- watchers: each stream is exactly the committed events of its range, and
  the nodes' replays agree;
- sessions and ephemerals (the lock nodes too): no ephemeral goes before a
  delete or its session's end;
- every session ends once nobody heartbeats it, and every node ends at one
  zxid with one digest.

  pytest -m chaos tests/chaos/test_soak.py --chaos-minutes=30 --chaos-seed=7

prints what it did (operations by outcome per workload, faults by kind,
anomalies per checker). A failing run leaves its history, anomalies,
timeline pictures and what the workloads read at the end under the test's
tmp dir and names it.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaos.checkers import Anomaly, check_monotonic_zxids
from tests.chaos.disk import ext4, ext4_available
from tests.chaos.harness import netns_cluster
from tests.chaos.history import History, Op
from tests.chaos.linearizable import VersionedRegister, check_linearizable
from tests.chaos.nemesis import Nemesis
from tests.chaos.timeline import write_failure
from tests.chaos.workload import RegisterClients
from tests.chaos.workload_locks import LockClients
from tests.chaos.workload_sessions import TTL_MS, EphemeralClients
from tests.chaos.workload_sets import SequentialSet
from tests.chaos.workload_watch import Watchers
from tests.integration.cluster import Cluster, http, wait_for

pytestmark = pytest.mark.chaos

KEYS = ("a", "b", "c")
CONVERGE_S = 30.0
# Room for a 30-minute soak's data dir (snapshots keep it bounded); the
# disk_full fault fills it with one file and deletes it.
SOAK_DISK_MB = 512
# The linearizability search's budget, shared by the keys: a 30-minute soak
# records about 570,000 register operations, which take about 130 s here.
CHECK_BUDGET_S = 120.0
CHECK_BUDGET_S_PER_1000_OPS = 0.5
# Every session is left to die at the end: it must be gone a ttl later (and
# an election or two, on a busy machine).
SESSIONS_END_S = TTL_MS / 1000 + 10.0


def open_sessions(cluster: Cluster) -> list[Any] | None:
    """The sessions still open, read linearizably on the first node that answers."""
    for m in cluster:
        status, _, body = http("GET", m.url + "/v1/sessions?consistency=linearizable", timeout=3)
        if status == 200:
            return list(json.loads(body)["sessions"])
    return None


def tally(ops: list[Op]) -> str:
    outcomes = Counter(op.outcome for op in ops)
    return (
        f"{len(ops)} attempted, {outcomes['ok']} ok, {outcomes['fail']} failed,"
        f" {outcomes['unknown']} unknown"
    )


@pytest.mark.parametrize("nodes", [3, 5])
def test_soak(tmp_path: Path, request: pytest.FixtureRequest, nodes: int) -> None:
    minutes = float(request.config.getoption("--chaos-minutes"))
    seed = int(request.config.getoption("--chaos-seed")) * 10 + nodes
    history = History()
    # Where it can, each data dir on a file system of its own, so disks fill too.
    disks = ext4_available()
    data_fs = functools.partial(ext4, size_mb=SOAK_DISK_MB) if disks else None
    with netns_cluster(tmp_path, nodes, data_fs=data_fs) as (cluster, net):
        registers = RegisterClients(cluster, KEYS, history, seed)
        sets = SequentialSet(cluster, history, seed)
        locks = LockClients(cluster, history, seed)
        watchers = Watchers(cluster, history, seed)
        ephemerals = EphemeralClients(cluster, history, seed)
        workloads = (registers, sets, locks, watchers, ephemerals)
        for w in workloads:
            w.prepare()
        nemesis = Nemesis(cluster, net, random.Random(seed), disk_faults=disks)
        fault_s = minutes * 60
        for w in workloads:
            w.start(max_s=fault_s + 60)
        try:
            nemesis.run(until_monotonic_s=time.monotonic() + fault_s)
            healed_ns = time.monotonic_ns()

            def acknowledged_since_heal() -> bool:
                ok = [o for o in history.ops() if o.invoke_ns > healed_ns and o.outcome == "ok"]
                return len(ok) >= registers.clients

            # The clients see the healed cluster before they stop.
            wait_for("operations acknowledged after the heal", acknowledged_since_heal, CONVERGE_S)
        finally:
            for w in workloads:
                w.halt()
            for w in workloads:
                w.stop()
        cluster.wait_ready(timeout=CONVERGE_S)
        wait_for("every session ended", lambda: open_sessions(cluster) == [], SESSIONS_END_S)
        wait_for("one zxid and digest on every node", cluster.converged, CONVERGE_S)
        registers.final_reads()
        sets.final_read()
        locks.final_read()
        watchers.replay()

    ops = history.ops()

    def of(keys: tuple[str, ...]) -> list[Op]:
        return [op for op in ops if op.key in keys]

    register_ops = [op for op in ops if op.key in KEYS]
    budget_s = CHECK_BUDGET_S + len(register_ops) / 1000 * CHECK_BUDGET_S_PER_1000_OPS
    lin = check_linearizable(
        register_ops, VersionedRegister(initial=registers.initial), time_budget_s=budget_s
    )
    found: dict[str, list[Anomaly]] = {
        "linearizable registers": lin.anomalies(),
        "monotonic zxids": check_monotonic_zxids(registers.zxids_seen),
        "sequential creates": sets.check(),
        "fencing": locks.check(),
        "watch streams": watchers.check(),
        "ephemerals": ephemerals.record.check(watchers.committed),
        "lock ephemerals": locks.record.check(watchers.committed),
    }
    anomalies = [a for group in found.values() for a in group]
    default_reads = sum(len(v) for v in registers.zxids_seen.values())
    lines = [
        f"soak of {nodes} nodes, seed {seed}, {minutes:g} min of faults:",
        f"  registers   {tally(register_ops)}; {default_reads} default reads",
        f"  set         {tally(sets.ops())}; {len(sets.final_children)} final children",
        f"  locks       {tally(of(locks.keys))}; {locks.summary()}; {locks.record.summary()}",
        f"  watchers    {tally(of(watchers.keys))} streams; {watchers.summary()}",
        f"  ephemerals  {tally(of(ephemerals.keys))}; {ephemerals.record.summary()}",
        f"  faults      {dict(nemesis.injected)}",
        f"  anomalies   {len(anomalies)}: "
        + ", ".join(f"{name} {len(group)}" for name, group in found.items()),
    ]
    print("\n" + "\n".join(lines))
    if anomalies:
        directory = tmp_path / "failure"
        written = write_failure(directory, history, anomalies)
        (directory / "workloads.json").write_bytes(
            orjson.dumps(
                {
                    "faults": nemesis.log,
                    "set_children": sets.final_children,
                    "fence_log": locks.fence_log,
                    "ephemeral_events": [list(e) for e in ephemerals.record.events],
                    "lock_ephemeral_events": [list(e) for e in locks.record.events],
                    "watch_streams": {k: [list(e) for e in v] for k, v in watchers.streams.items()},
                    "committed_events": [list(e) for e in watchers.committed],
                    "replay_floor": watchers.replay_floor,
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        by_checker = {name: len(group) for name, group in found.items() if group}
        pytest.fail(
            f"{len(anomalies)} anomalies {by_checker}, first: {anomalies[0].message}; history,"
            f" pictures and workloads.json: {sorted({str(p.parent) for p in written})}"
        )
    assert len([op for op in register_ops if op.outcome == "ok"]) > 50
    assert locks.fence_log, "no lock was ever used"
    assert watchers.committed and any(watchers.streams.values()), "the watchers saw nothing"
    assert sum(nemesis.injected.values()) >= max(1, int(minutes * 60 / 5)), nemesis.injected
