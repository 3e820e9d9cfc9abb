#!/usr/bin/env python3
"""Single-node speed: httpcoord beside the bare aiohttp server, etcd, a
standalone ZooKeeper and a three-server ZooKeeper, same workloads, same run.

Starts one server of each system (three for zookeeper3) on free 127.0.0.1
ports in temporary data dirs, preloads the same keys into each, then drives
each in turn:

  get   small reads of random preloaded keys
        httpcoord, bare, bare-fsync: GET /v1/nodes/bench/kNNNNN
        etcd:      POST /v3/kv/range (the v3 JSON gateway; linearizable, etcd's default)
        zookeeper, zookeeper3: getData
  put   small durable overwrites of random preloaded keys
        httpcoord: PUT /v1/nodes/bench/kNNNNN (answered after the log fsync)
        bare:      the same PUT answered from a dict (bare_server.py)
        bare-fsync: the same, answered after a group-committed fdatasync
        etcd:      POST /v3/kv/put
        zookeeper, zookeeper3: setData (forceSync=yes)

zookeeper is one standalone server; zookeeper3 an ensemble of three on this
machine (the same config as bench_cluster.py's), its load client's sessions
dealt round-robin over the three members, followers first.

The HTTP systems are driven by wrk (keep-alive connections, a Lua script in
benchmarks/lua/), ZooKeeper by the Java client of _zookeeper.py (one session
per connection, one request in flight each). For each phase it reports
requests/s, p50/p99 latency, failures (socket errors, timeouts and status >=
400), the server's CPU milliseconds per 1,000 operations (utime+stime of the
server process from /proc, the JVM's for ZooKeeper, summed over the three
JVMs for zookeeper3, sampled at the edges of the measured window), and for
writes the writes per fsync (zookeeper3: the leader's). Beside each system
it shows httpcoord's figure divided by that system's, and under the table
which of issue 14's single-node targets the run met. The table goes to
stdout, the same figures and every individual run to
benchmarks/results/single_node-<timestamp>.json.

    python benchmarks/bench_single_node.py --duration 10 --connections 64

A whole default run (six systems, 10 s phases) takes about three minutes.
Needs wrk; etcd and ZooKeeper (with a JDK) are run when installed (Debian:
apt-get install -y wrk etcd-server zookeeper default-jdk-headless). Exits 2
when a named system is missing, 1 when any request failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import http.client
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shared with the other scripts (some import these names from here).
from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    Server,
    bare_server,
    filesystem_type,
    free_port,
    http_request,
    httpcoord_server,
    machine_ticks,
    process_cpu_ticks,
    prometheus_values,
    save_results,
)
from _zookeeper import (
    ZK_CFG,
    ZK_JAR,
    ChildLines,
    compile_load_client,
    drive_load,
    ensemble_servers,
    ensemble_settled,
    load_client_argv,
    server_argv,
    zk_fsync_counters,
    zk_leader_port,
    zk_srvr,
    zk_version,
)

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "lua" / "kv.lua"
INSTALL_HINT = "apt-get install -y wrk etcd-server etcd-client zookeeper default-jdk-headless"
SYSTEMS = ("httpcoord", "bare", "bare-fsync", "etcd", "zookeeper", "zookeeper3")
# Skipped when not installed, unless named.
OPTIONAL = frozenset({"etcd", "zookeeper", "zookeeper3"})
ZK_MEMBERS = {"zookeeper": 1, "zookeeper3": 3}  # servers per ZooKeeper system
WORKLOADS = ("get", "put")
ZK_TICK_MS = 2000  # ZooKeeper's default tickTime

# Issue 14's single-node targets, as httpcoord's figure over the reference's.
CPU_VS_BARE_MAX = 1.2  # CPU per read vs bare's, CPU per write vs bare-fsync's
RATE_VS_ZOOKEEPER_MIN = 0.8  # reads/s and writes/s vs ZooKeeper's
P99_VS_ZOOKEEPER_MAX = 1.0  # p99 no worse than ZooKeeper's


# ---- servers ----------------------------------------------------------------------------


def etcd_server(workdir: Path, etcd: str) -> Server:
    client, peer = free_port(), free_port()
    while peer == client:
        peer = free_port()
    return Server(
        name="etcd",
        port=client,
        argv=[
            etcd,
            "--name",
            "default",
            "--data-dir",
            str(workdir / "etcd-data"),
            "--listen-client-urls",
            f"http://{HOST}:{client}",
            "--advertise-client-urls",
            f"http://{HOST}:{client}",
            "--listen-peer-urls",
            f"http://{HOST}:{peer}",
            "--initial-advertise-peer-urls",
            f"http://{HOST}:{peer}",
            "--initial-cluster",
            f"default=http://{HOST}:{peer}",
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ],
        log_path=workdir / "etcd.log",
        ready_path="/health",
        # Raft proposals committed per WAL fsync: etcd's own group commit.
        fsync_metrics=(
            "etcd_server_proposals_committed_total",
            "etcd_disk_wal_fsync_duration_seconds_count",
        ),
    )


class ZkSystem:
    """ZooKeeper, forceSync=yes on the same ZK_CFG as bench_cluster.py, and
    the Java load client; it offers what ``measure`` needs of a ``Server``.
    With ``members`` 1 a standalone server (``zookeeper``); with 3 an ensemble
    on 127.0.0.1 (``zookeeper3``) whose clients are dealt round-robin over
    its members, followers first, as bench_cluster.py deals them."""

    def __init__(self, name: str, workdir: Path, java: str, javac: str, members: int) -> None:
        self.name, self.java, self.javac = name, java, javac
        if members == 1:
            data = workdir / f"{name}-data"
            data.mkdir(parents=True, exist_ok=True)
            cfg = workdir / f"{name}.cfg"
            port = free_port()
            cfg.write_text(
                ZK_CFG.format(tick_ms=ZK_TICK_MS, data=data, client=port, host=HOST, servers="")
            )
            self.servers = [
                Server(
                    name=name,
                    port=port,
                    argv=server_argv(java, cfg),
                    log_path=workdir / f"{name}.log",
                    ready_path="",
                    fsync_metrics=("", ""),
                )
            ]
        else:
            ensemble = ensemble_servers(java, workdir / name, members, ZK_TICK_MS)
            self.servers = [server for server, _ in ensemble]
        self.classes = workdir / f"{name}-client"
        # The member whose fsync counters are read: the only one, or the
        # leader found before each measured window.
        self.leader_port = self.servers[0].port

    @property
    def port(self) -> int:
        return self.leader_port

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    def where(self) -> str:
        if len(self.servers) == 1:
            return f"pid {self.servers[0].pid}, port {self.port}"
        members = ", ".join(f"pid {s.pid} port {s.port}" for s in self.servers)
        return f"{members}; leader on port {self.leader_port}"

    def start(self) -> None:
        compile_load_client(self.javac, self.classes)
        for s in self.servers:
            s.start()

    def ready(self) -> bool:
        ports = [s.port for s in self.servers]
        if len(ports) == 1:
            return zk_srvr(ports[0]).get("Mode") == "standalone"
        return ensemble_settled(ports)

    def wait_ready(self, timeout: float) -> None:
        """Until the server is up (an ensemble: settled, every member at the
        leader's zxid); then note the leader."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for s in self.servers:
                assert s.proc is not None
                if s.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} server on port {s.port} exited with "
                        f"{s.proc.returncode}:\n{s.log_tail()}"
                    )
            try:
                if self.ready():
                    self.leader_port = self.find_leader()
                    return
                last = "not settled"
            except (OSError, KeyError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last})")

    def find_leader(self) -> int:
        if len(self.servers) == 1:
            return self.servers[0].port
        port = zk_leader_port(s.port for s in self.servers)
        if port is None:
            raise RuntimeError(f"{self.name}: no member says it leads")
        return port

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def fsync_counters(self) -> tuple[float, float]:
        return zk_fsync_counters(self.leader_port)

    def client_argv(self, mode: str, servers: list[int], **kw: object) -> list[str]:
        connect = ",".join(f"{HOST}:{p}" for p in servers)
        return load_client_argv(self.java, self.classes, mode, servers=connect, **kw)

    def preload(self, keys: int, value_bytes: int, timeout: float) -> None:
        """Through the leader; an ensemble then waits for its followers."""
        argv = self.client_argv("preload", [self.leader_port], keys=keys, value=value_bytes)
        with ChildLines(argv) as c:
            line = c.expect("PRELOADED", time.monotonic() + timeout)
        if "failed=0" not in line:
            raise RuntimeError(f"{self.name} preload: {line}")
        self.wait_ready(timeout)

    def run_load(
        self, workload: str, args: argparse.Namespace, seed: int, on_window: Callable[[str], None]
    ) -> tuple[dict[str, float], float]:
        """The client warms up itself, then calls ``on_window`` around the
        measured window; one session per wrk connection, client i on
        member i mod n with the followers first (a single client talks to a
        follower)."""
        self.leader_port = self.find_leader()
        order = [s.port for s in self.servers if s.port != self.leader_port] + [self.leader_port]
        argv = self.client_argv(
            "load",
            order,
            op=workload,
            clients=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            keys=args.keys,
            value=args.value_bytes,
            seed=seed,
        )
        limit = time.monotonic() + args.warmup + args.duration + 120
        result = drive_load(argv, limit, on_window)
        # A standalone server has no leader; a moved one leaves w/fsync read
        # off a former leader.
        if len(order) > 1 and zk_leader_port(order) != self.leader_port:
            print(f"# {self.name}: the leader moved during the phase", flush=True)
        return result


System = Server | ZkSystem


def where(server: System) -> str:
    """The PIDs and ports of a system, for the progress lines."""
    if isinstance(server, ZkSystem):
        return server.where()
    return f"pid {server.pid}, port {server.port}"


def system_cpu_ticks(server: System) -> int:
    """utime+stime summed over the system's server processes."""
    return sum(process_cpu_ticks(pid) for pid in server.pids)


# ---- the keys ---------------------------------------------------------------------------


def key_name(k: int) -> str:
    return f"k{k:05d}"  # same naming as lua/kv.lua


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def preload(server: Server, keys: int, value_bytes: int, timeout: float) -> None:
    """Write every key once (so PUTs are updates and GETs find data)."""
    local = threading.local()
    deadline = time.monotonic() + timeout

    def conn() -> http.client.HTTPConnection:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        return c

    def put(k: int) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"preloading {server.name} took over {timeout}s")
        value = f"v{k}-".ljust(value_bytes, "x")
        if server.name != "etcd":  # httpcoord and the bare servers: the same PUT
            status, body = http_request(
                server.port, "PUT", f"/v1/nodes/bench/{key_name(k)}", value.encode(), conn=conn()
            )
        else:
            payload = json.dumps({"key": b64(f"/bench/{key_name(k)}"), "value": b64(value)})
            status, body = http_request(
                server.port,
                "POST",
                "/v3/kv/put",
                payload.encode(),
                {"Content-Type": "application/json"},
                conn=conn(),
            )
        if status not in (200, 201):
            raise RuntimeError(f"preload {server.name} key {k}: {status} {body[:200]!r}")

    if server.name == "httpcoord":
        status, body = http_request(server.port, "POST", "/v1/nodes/bench", b"")
        if status not in (201, 409):
            raise RuntimeError(f"create /bench: {status} {body[:200]!r}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(keys), timeout=timeout))


def smoke_check(server: Server) -> None:
    """One read through the same URL and body shape the Lua script uses."""
    name = key_name(0)
    if server.name != "etcd":
        status, body = http_request(server.port, "GET", f"/v1/nodes/bench/{name}")
        ok = status == 200 and json.loads(body).get("path") == f"/bench/{name}"
    else:
        payload = json.dumps({"key": b64(f"/bench/{name}")}).encode()
        status, body = http_request(
            server.port, "POST", "/v3/kv/range", payload, {"Content-Type": "application/json"}
        )
        ok = status == 200 and json.loads(body).get("count") == "1"
    if not ok:
        raise RuntimeError(f"{server.name} smoke check failed: {status} {body[:300]!r}")


# ---- wrk ------------------------------------------------------------------------------------

WRK_LINE = re.compile(r"^WRK_RESULT (.*)$", re.MULTILINE)
WRK_FAILURES = ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx")
ZK_FAILURES = ("errors", "undrained")


@dataclass
class Phase:
    system: str
    workload: str
    rep: int
    requests: int = 0
    duration_s: float = 0.0
    req_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    failures: int = 0
    failure_detail: dict[str, int] = field(default_factory=dict)
    server_cpu_ms: float = 0.0
    cpu_ms_per_1k: float = 0.0
    wrk_cpu_ms: float = 0.0  # the load generator's CPU: wrk, or ZooKeeper's Java client
    machine_busy_cores: float = 0.0
    other_cpu_cores: float = 0.0  # busy time neither the server nor the load accounts for
    writes_per_fsync: float | None = None
    fsyncs: float | None = None
    snapshots: float | None = None  # httpcoord snapshots taken during the phase


def run_wrk(
    server: Server, workload: str, args: argparse.Namespace, duration: float, seed: int
) -> tuple[dict[str, float], float]:
    """Run wrk once; return its WRK_RESULT fields and its own CPU seconds."""
    argv = [
        args.wrk,
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{max(1, round(args.request_timeout))}s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{server.port}",
        "--",
        # The bare servers take httpcoord's requests.
        "etcd" if server.name == "etcd" else "httpcoord",
        workload,
        str(args.keys),
        str(args.value_bytes),
        str(seed),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=duration + 60
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk did not finish within {duration + 60}s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    match = WRK_LINE.search(done.stdout)
    if not match:
        raise RuntimeError(f"no WRK_RESULT line in wrk's output:\n{done.stdout}\n{done.stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return fields, wrk_cpu


def snapshots_taken(server: System) -> float | None:
    if server.name != "httpcoord":
        return None
    assert isinstance(server, Server)
    name = "httpcoord_snapshots_total"
    return prometheus_values(server.port, (name,))[name]


@dataclass
class Edge:
    """What is sampled at one edge of a measured window."""

    cpu: int  # utime+stime ticks of the server, summed over its processes
    busy: int
    total: int
    counters: tuple[float, float] | None
    snapshots: float | None


def measure(server: System, workload: str, rep: int, args: argparse.Namespace) -> Phase:
    edges: dict[str, Edge] = {}

    def on_window(edge: str) -> None:
        # The metrics requests stay outside the CPU window.
        if edge == "start":
            counters = server.fsync_counters() if workload == "put" else None
            snaps = snapshots_taken(server)
            busy, total = machine_ticks()
            edges[edge] = Edge(system_cpu_ticks(server), busy, total, counters, snaps)
        else:
            cpu, (busy, total) = system_cpu_ticks(server), machine_ticks()
            counters = server.fsync_counters() if workload == "put" else None
            edges[edge] = Edge(cpu, busy, total, counters, snapshots_taken(server))

    if isinstance(server, ZkSystem):
        fields, load_cpu_s = server.run_load(workload, args, rep + 1, on_window)
        failure_keys: tuple[str, ...] = ZK_FAILURES
    else:
        if args.warmup > 0:
            run_wrk(server, workload, args, args.warmup, seed=1000 + rep)
        on_window("start")
        fields, load_cpu_s = run_wrk(server, workload, args, args.duration, seed=rep + 1)
        on_window("end")
        failure_keys = WRK_FAILURES
    e0, e1 = edges["start"], edges["end"]

    phase = Phase(server.name, workload, rep)
    if e0.snapshots is not None and e1.snapshots is not None:
        phase.snapshots = e1.snapshots - e0.snapshots
    phase.requests = int(fields["requests"])
    phase.duration_s = fields["duration_us"] / 1e6
    phase.req_per_s = phase.requests / phase.duration_s if phase.duration_s else 0.0
    phase.p50_ms = fields["p50_us"] / 1000
    phase.p99_ms = fields["p99_us"] / 1000
    phase.mean_ms = fields["mean_us"] / 1000
    phase.max_ms = fields["max_us"] / 1000
    phase.failure_detail = {k: int(fields[k]) for k in failure_keys}
    phase.failures = sum(phase.failure_detail.values())
    phase.server_cpu_ms = (e1.cpu - e0.cpu) * 1000 / CLK_TCK
    phase.cpu_ms_per_1k = phase.server_cpu_ms / phase.requests * 1000 if phase.requests else 0.0
    phase.wrk_cpu_ms = load_cpu_s * 1000
    wall_ticks = (e1.total - e0.total) / (os.cpu_count() or 1)
    if wall_ticks > 0:
        phase.machine_busy_cores = (e1.busy - e0.busy) / wall_ticks
        accounted = (e1.cpu - e0.cpu) + load_cpu_s * CLK_TCK
        phase.other_cpu_cores = max(0.0, (e1.busy - e0.busy) - accounted) / wall_ticks
    if e0.counters and e1.counters:
        d_entries, d_fsyncs = e1.counters[0] - e0.counters[0], e1.counters[1] - e0.counters[1]
        phase.fsyncs = d_fsyncs
        phase.writes_per_fsync = d_entries / d_fsyncs if d_fsyncs else None
    return phase


# ---- report ----------------------------------------------------------------------------------


def median_phase(runs: list[Phase]) -> dict[str, Any]:
    def med(attr: str) -> float | None:
        vals = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    keys = (
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "cpu_ms_per_1k",
        "writes_per_fsync",
        "machine_busy_cores",
        "other_cpu_cores",
        "wrk_cpu_ms",
    )
    out: dict[str, Any] = {k: med(k) for k in keys}
    out["failures"] = sum(r.failures for r in runs)
    out["requests"] = sum(r.requests for r in runs)
    out["runs"] = len(runs)
    for k in ("req_per_s", "cpu_ms_per_1k"):
        vals = [getattr(r, k) for r in runs]
        out[k + "_range"] = [min(vals), max(vals)]
    return out


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


Summary = dict[str, dict[str, dict[str, Any]]]  # workload -> system -> medians

COLUMNS = (
    ("req/s", "req_per_s", ".0f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("CPU-ms/1k", "cpu_ms_per_1k", ".1f"),
    ("w/fsync", "writes_per_fsync", ".1f"),
    ("fail", "failures", "d"),
)
# httpcoord's figure divided by the row's system's, shown on that row.
RATIO_COLUMNS = (("req/s", "req_per_s"), ("p99", "p99_ms"), ("CPU/op", "cpu_ms_per_1k"))


def ratio(summary: Summary, workload: str, system: str, key: str) -> float | None:
    per_system = summary.get(workload, {})
    if "httpcoord" not in per_system or system not in per_system:
        return None
    a, b = per_system["httpcoord"][key], per_system[system][key]
    return a / b if a is not None and b else None


def render_table(summary: Summary, systems: list[str]) -> str:
    w = 10
    ratios = "httpcoord" in systems and len(systems) > 1
    head = f"{'workload':8} {'system':10} |" + "".join(f"{c[0]:>{w}}" for c in COLUMNS)
    if ratios:
        above = " " * len(head) + f" | {'httpcoord / this':^{w * len(RATIO_COLUMNS)}}"
        head += " |" + "".join(f"{c[0]:>{w}}" for c in RATIO_COLUMNS)
    lines = ([above] if ratios else []) + [head, "-" * len(head)]
    for workload, per_system in summary.items():
        for s in systems:
            m = per_system.get(s)
            if m is None:
                continue
            row = f"{workload:8} {s:10} |" + "".join(
                f"{fmt(m[key], spec):>{w}}" for _, key, spec in COLUMNS
            )
            if ratios:
                cells = (
                    "" if s == "httpcoord" else fmt(ratio(summary, workload, s, key), ".2f")
                    for _, key in RATIO_COLUMNS
                )
                row += " |" + "".join(f"{c:>{w}}" for c in cells)
            lines.append(row)
    return "\n".join(lines)


# (what, workload, reference system, figure, "<=" or ">=", bound, unit, format)
TARGETS = (
    ("CPU per read", "get", "bare", "cpu_ms_per_1k", "<=", CPU_VS_BARE_MAX, "CPU-ms/1k", ".1f"),
    (
        "CPU per write",
        "put",
        "bare-fsync",
        "cpu_ms_per_1k",
        "<=",
        CPU_VS_BARE_MAX,
        "CPU-ms/1k",
        ".1f",
    ),
    ("reads/s", "get", "zookeeper", "req_per_s", ">=", RATE_VS_ZOOKEEPER_MIN, "/s", ".0f"),
    ("writes/s", "put", "zookeeper", "req_per_s", ">=", RATE_VS_ZOOKEEPER_MIN, "/s", ".0f"),
    ("read p99", "get", "zookeeper", "p99_ms", "<=", P99_VS_ZOOKEEPER_MAX, "ms", ".2f"),
    ("write p99", "put", "zookeeper", "p99_ms", "<=", P99_VS_ZOOKEEPER_MAX, "ms", ".2f"),
)


def check_targets(summary: Summary) -> list[dict[str, Any]]:
    """Issue 14's single-node targets on this run's own figures; a target
    whose reference system did not run is "not measured"."""
    out = []
    for what, workload, ref, key, op, bound, unit, spec in TARGETS:
        r = ratio(summary, workload, ref, key)
        if r is None:
            verdict = "not measured"
        elif r <= bound if op == "<=" else r >= bound:
            verdict = "met"
        else:
            verdict = "MISSED"
        per_system = summary.get(workload, {})
        figures = ""
        if r is not None:
            a, b = per_system["httpcoord"][key], per_system[ref][key]
            figures = f" ({r:.2f}: {a:{spec}} vs {b:{spec}} {unit})"
        out.append(
            {
                "target": f"{what} {op} {bound:g}x {ref}'s",
                "ratio": r,
                "bound": bound,
                "verdict": verdict,
                "line": f"{what} {op} {bound:g}x {ref}'s: {verdict}{figures}",
            }
        )
    return out


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of unmeasured load before each phase (0: none)",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=64,
        help="wrk keep-alive connections (ZooKeeper: sessions, dealt over zookeeper3's "
        "three servers)",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--keys", type=int, default=1000, help="keys preloaded and addressed")
    p.add_argument("--value-bytes", type=int, default=32, help="bytes of each PUT value")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of every phase (interleaved); the table shows medians",
    )
    p.add_argument(
        "--systems",
        default=None,
        help=f"comma list of {','.join(SYSTEMS)} (default: all; etcd, zookeeper and "
        "zookeeper3 only when installed)",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of get,put")
    p.add_argument(
        "--request-timeout", type=float, default=5.0, help="wrk's per-request timeout, s"
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary data dirs (must be a real disk, not tmpfs)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-data", action="store_true", help="leave the temp dir (logs, data)")
    p.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="after the table, keep the servers up this many seconds (for profiling)",
    )
    args = p.parse_args(argv)
    args.systems_named = args.systems is not None
    args.systems = [s for s in (args.systems or ",".join(SYSTEMS)).split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    if not set(args.systems) <= set(SYSTEMS) or not set(args.workloads) <= set(WORKLOADS):
        p.error(f"--systems from {SYSTEMS}, --workloads from {WORKLOADS}")
    if args.duration <= 0 or args.duration > 3600 or args.repeat < 1 or args.keys < 1:
        p.error("need 0 < --duration <= 3600, --repeat >= 1, --keys >= 1")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally block stops the servers


def find_tools(args: argparse.Namespace) -> list[str]:
    """Set the tools' paths on ``args``; drop an optional system that is not
    installed (with a printed line) unless it was named; return what is
    missing for the systems that must run."""
    args.wrk = shutil.which("wrk")
    args.etcd = shutil.which("etcd")
    args.java = shutil.which("java")
    args.javac = shutil.which("javac")
    zk_jar = str(ZK_JAR) if ZK_JAR.is_file() else None
    needs: dict[str, list[tuple[str, str | None]]] = {
        "etcd": [("etcd", args.etcd), ("wrk", args.wrk)],
        "zookeeper": [("java", args.java), ("javac", args.javac), (str(ZK_JAR), zk_jar)],
    }
    needs["zookeeper3"] = needs["zookeeper"]
    missing: list[str] = []
    for name in list(args.systems):
        lacking = [tool for tool, path in needs.get(name, [("wrk", args.wrk)]) if path is None]
        if not lacking:
            continue
        if name in OPTIONAL and not args.systems_named:
            print(f"# skipping {name}: {', '.join(lacking)} not installed", flush=True)
            args.systems.remove(name)
        else:
            missing += [t for t in lacking if t not in missing]
    return missing


def make_system(name: str, workdir: Path, args: argparse.Namespace) -> System:
    if name == "httpcoord":
        return httpcoord_server(workdir)
    if name in ("bare", "bare-fsync"):
        return bare_server(workdir, fsync=name == "bare-fsync")
    if name == "etcd":
        return etcd_server(workdir, args.etcd)
    return ZkSystem(name, workdir, args.java, args.javac, ZK_MEMBERS[name])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    missing = find_tools(args)
    if missing:
        print(f"missing: {', '.join(missing)}. Install with:\n  {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not LUA_SCRIPT.is_file():
        print(f"missing wrk script {LUA_SCRIPT}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="httpcoord-bench-", dir=args.tmp_dir))
    fstype = filesystem_type(workdir)
    if fstype in ("tmpfs", "ramfs"):
        print(
            f"warning: {workdir} is on {fstype}; fsync is free there, the PUT figures "
            "mean little. Pass --tmp-dir on a real disk.",
            file=sys.stderr,
        )
    servers = {name: make_system(name, workdir, args) for name in args.systems}

    phases: list[Phase] = []
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready(timeout=60)
        for s in servers.values():
            t0 = time.monotonic()
            if isinstance(s, ZkSystem):
                s.preload(args.keys, args.value_bytes, timeout=120)
                note = f" (ZooKeeper {zk_version(s.port)})"
            else:
                preload(s, args.keys, args.value_bytes, timeout=120)
                smoke_check(s)
                note = ""
            print(
                f"# {s.name}: {where(s)}, preloaded {args.keys} keys "
                f"in {time.monotonic() - t0:.1f}s{note}",
                flush=True,
            )
        print(
            f"# data dirs on {fstype}; wrk -t{args.threads} -c{args.connections} "
            f"-d{args.duration:g}s (+{args.warmup:g}s warmup), {args.keys} keys, "
            f"{args.value_bytes}-byte values, {os.cpu_count()} CPUs, load average "
            f"{load_before[0]:.2f}",
            flush=True,
        )
        for rep in range(args.repeat):
            for workload in args.workloads:
                for name in args.systems:
                    ph = measure(servers[name], workload, rep, args)
                    phases.append(ph)
                    print(
                        f"# run {rep + 1} {workload:3} {name:10} {ph.req_per_s:8.0f} req/s "
                        f"p50 {ph.p50_ms:6.2f} p99 {ph.p99_ms:7.2f} ms  "
                        f"cpu {ph.cpu_ms_per_1k:6.1f} ms/1k  "
                        f"w/fsync {fmt(ph.writes_per_fsync):>5}  fail {ph.failures}  "
                        f"snap {fmt(ph.snapshots, '.0f')}  "
                        f"[machine busy {ph.machine_busy_cores:.2f} cores, load "
                        f"{ph.wrk_cpu_ms / 1000 / ph.duration_s if ph.duration_s else 0:.2f}, "
                        f"other {ph.other_cpu_cores:.2f}]",
                        flush=True,
                    )
        if args.hold > 0:
            print(
                f"# holding servers for {args.hold:g}s: "
                + "; ".join(f"{s.name} {where(s)}" for s in servers.values()),
                flush=True,
            )
            time.sleep(args.hold)
    finally:
        for s in servers.values():
            s.stop()
        if args.keep_data:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    summary: Summary = {}
    for workload in args.workloads:
        summary[workload] = {}
        for name in args.systems:
            runs = [p for p in phases if p.workload == workload and p.system == name]
            if runs:
                summary[workload][name] = median_phase(runs)
    print()
    print(render_table(summary, args.systems))
    print(
        "httpcoord / this: httpcoord's figure divided by this system's (for req/s above 1 "
        "is better, for p99 and CPU/op below 1); load = the load generator's cores"
    )
    if "zookeeper3" in args.systems:
        print(
            "zookeeper3: three servers on this machine, clients dealt over all three; its "
            "CPU-ms/1k is summed over the three JVMs, its w/fsync is the leader's"
        )
    print(f"load average at start {load_before[0]:.2f}, at end {load_after[0]:.2f}")
    if args.repeat > 1:
        for workload, per_system in summary.items():
            for name, m in per_system.items():
                lo, hi = m["req_per_s_range"]
                clo, chi = m["cpu_ms_per_1k_range"]
                print(
                    f"  {workload:3} {name:10} over {m['runs']} runs: req/s {lo:.0f}..{hi:.0f}, "
                    f"CPU-ms/1k {clo:.1f}..{chi:.1f}"
                )
    targets = check_targets(summary) if "httpcoord" in args.systems else []
    measured = [t for t in targets if t["ratio"] is not None]
    if measured:  # with no reference system in the run, there is nothing to say
        for t in targets:
            print(f"target: {t['line']}")
        met = sum(1 for t in measured if t["verdict"] == "met")
        print(f"targets met: {met} of {len(measured)} measured ({len(targets)} in all)")

    save_results(
        args.results_dir,
        "single_node",
        started,
        fstype,
        {"loadavg_start": load_before, "loadavg_end": load_after},
        {
            k: getattr(args, k)
            for k in (
                "duration",
                "warmup",
                "connections",
                "threads",
                "keys",
                "value_bytes",
                "repeat",
                "systems",
                "workloads",
            )
        },
        summary=summary,
        targets=targets,
        runs=[vars(p) for p in phases],
    )
    failed = sum(p.failures for p in phases)
    if failed:
        print(
            f"FAILURES: {failed} requests failed (see 'fail' column and JSON failure_detail)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
