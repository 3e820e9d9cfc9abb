#!/usr/bin/env python3
"""Three-node speed: httpcoord beside etcd and ZooKeeper, each a cluster of
three on 127.0.0.1, fsync on, measured one system after the other in one run.

For each system it starts the cluster in a temporary data dir, preloads the
same keys, then measures:

  writes   durable overwrites of random keys at 1, 16 and 64 clients, the
           clients spread round-robin over the members (the first on a
           follower): writes/s, p50/p99, server CPU, writes per fsync per member
  reads    reads of random keys at 64 clients, spread the same way
  failover kill -9 the leader; the time until a client retrying every few ms
           against the survivors gets its first write acknowledged; the killed
           member is restarted and caught up before the next round (3 rounds)

Load: httpcoord and etcd through HTTP with wrk (one wrk per member, run
together; etcd through its v3 JSON gateway, as bench_single_node.py does).
ZooKeeper has no HTTP API: a small Java program on ZooKeeper's own client
library (written to the temp dir and compiled with javac) drives it the same
way, one session and one request in flight per client.

    python benchmarks/bench_cluster.py --duration 10
    python benchmarks/bench_cluster.py --duration 2 --warmup 1 --failovers 1   # short

One table goes to stdout (with the ratios httpcoord/etcd and
httpcoord/ZooKeeper), everything to benchmarks/results/cluster-<time>.json.
Needs wrk, etcd, ZooKeeper and a JDK (Debian: apt-get install -y zookeeper
etcd-server etcd-client wrk default-jdk-headless). Exits 2 when one is
missing, 1 when a request failed or a failover got no write through, 0
otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    Server,
    distinct_ports,
    filesystem_type,
    http_request,
    machine_ticks,
    process_cpu_ticks,
    save_results,
    stop_process,
)
from _zookeeper import (
    ZK_JAR,
    ChildLines,
    compile_load_client,
    drive_load,
    ensemble_servers,
    ensemble_settled,
    load_client_argv,
    zk_fsync_counters,
    zk_leader_port,
    zk_version,
)
from bench_single_node import b64, key_name, preload, smoke_check

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "lua" / "cluster.lua"
INSTALL_HINT = "apt-get install -y zookeeper etcd-server etcd-client wrk default-jdk-headless"
SYSTEMS = ("httpcoord", "etcd", "zookeeper")
SHORT = {"httpcoord": "httpcoord", "etcd": "etcd", "zookeeper": "ZooKeeper"}
FAILOVER_KEY = 0  # every failover probe overwrites key k00000
PROBES_IN_FLIGHT_MAX = 16  # HTTP failover attempts outstanding at once
PROBE_TIMEOUT_S = 2.0  # one HTTP failover attempt


# ---- members and clusters ------------------------------------------------------------------


@dataclass
class Member:
    """One server process of a cluster; ``index`` is its id in the cluster (1..n)."""

    index: int
    server: Server
    data_dir: Path
    restarts: int = 0
    killed: bool = False  # down on purpose, until restarted

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def kill9(self) -> int:
        """SIGKILL this member by the PID it was started with; return the
        CLOCK_MONOTONIC time of the kill in ns."""
        self.killed = True
        t = time.monotonic_ns()
        os.kill(self.pid, signal.SIGKILL)
        return t

    def restart(self) -> None:
        """Start again on the same data dir, logging to a new file."""
        self.server.stop()
        self.restarts += 1
        base = self.server.log_path.name.split(".")[0]
        self.server.log_path = self.server.log_path.with_name(f"{base}.restart{self.restarts}.log")
        self.server.start()
        self.killed = False


@dataclass
class LoadResult:
    """What the load generator saw over the measured window."""

    requests: int = 0
    duration_s: float = 0.0
    ops_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    failures: int = 0
    failure_detail: dict[str, int] = field(default_factory=dict)
    loadgen_cpu_s: float = 0.0
    loadgen: str = ""


OnWindow = Callable[[str], None]  # called with "start" and "end" around the measured window


class Cluster:
    """A cluster of ``n`` members of one system. Subclasses say how to start a
    member, find the leader, read fsync counters, drive load and probe writes."""

    system = ""

    def __init__(self, workdir: Path, n: int, args: argparse.Namespace) -> None:
        self.workdir = workdir / self.system
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.members: list[Member] = []

    def start(self) -> None:
        for m in self.members:
            m.server.start()

    def stop(self) -> None:
        for m in self.members:
            m.server.stop()

    def by_pid(self) -> str:
        return ", ".join(f"{m.index}: pid {m.pid} port {m.port}" for m in self.members)

    # -- state, per system --

    def leader(self) -> Member | None:
        raise NotImplementedError

    def settled(self) -> bool:
        """Every member up, one leader all agree on, every member caught up."""
        raise NotImplementedError

    def fsync_counters(self, m: Member) -> tuple[float, float]:
        """(entries written, fsyncs) counters of one member."""
        raise NotImplementedError

    def preload(self, keys: int, value_bytes: int) -> None:
        raise NotImplementedError

    def run_load(
        self, op: str, order: list[Member], clients: int, on_window: OnWindow
    ) -> LoadResult:
        raise NotImplementedError

    def probe_failover(
        self, survivors: list[Member], kill: Callable[[], int]
    ) -> tuple[dict[str, float | None], dict[str, Any]]:
        """Kill the leader (``kill`` returns the kill time, monotonic ns) and
        return ({prober kind: seconds to its first acknowledged write, or
        None}, details)."""
        raise NotImplementedError

    def version(self) -> str:
        return ""

    # -- shared --

    def wait_until(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Poll ``check`` every 50 ms until it holds; the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError, RuntimeError):
                if check():
                    return time.monotonic() - t0
            for m in self.members:
                if m.killed or m.alive():
                    continue
                raise RuntimeError(
                    f"{self.system} member {m.index} exited while waiting for {what}:\n"
                    + m.server.log_tail()
                )
            time.sleep(0.05)
        tails = "\n".join(f"-- member {m.index}:\n{m.server.log_tail(8)}" for m in self.members)
        raise RuntimeError(f"{self.system}: {what} not reached in {timeout_s:g}s\n{tails}")

    def wait_leader(self, timeout_s: float) -> Member:
        found: list[Member] = []

        def check() -> bool:
            m = self.leader()
            if m is not None:
                found[:] = [m]
            return m is not None

        self.wait_until("a leader", check, timeout_s)
        return found[0]

    def order_for_clients(self) -> list[Member]:
        """Followers first, then the leader: clients are dealt round-robin in
        this order, so a single client talks to a follower."""
        lead = self.wait_leader(30)
        return [m for m in self.members if m is not lead] + [lead]


def spread(clients: int, members: int) -> list[int]:
    """Clients per member when dealt round-robin (client i on member i mod n)."""
    return [clients // members + (1 if j < clients % members else 0) for j in range(members)]


# ---- HTTP systems: httpcoord and etcd, driven by wrk ---------------------------------------

WRK_RESULT = re.compile(r"^WRK_RESULT (.*)$", re.MULTILINE)
WRK_PCT = re.compile(r"^WRK_PCT (.*)$", re.MULTILINE)


@dataclass
class WrkRun:
    fields: dict[str, float]
    grid: list[tuple[float, float]]  # (percentile, latency us), ascending


def parse_wrk(stdout: str, stderr: str) -> WrkRun:
    res, pct = WRK_RESULT.search(stdout), WRK_PCT.search(stdout)
    if not res or not pct:
        raise RuntimeError(f"no WRK_RESULT/WRK_PCT in wrk's output:\n{stdout}\n{stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in res.group(1).split())}
    grid = [(float(p), float(v)) for p, v in (pv.split(":") for pv in pct.group(1).split(","))]
    return WrkRun(fields, grid)


def pooled_percentiles(
    parts: list[tuple[float, list[tuple[float, float]]]], qs: list[float]
) -> list[float]:
    """Percentiles of the union of several latency distributions, each given
    as (request count, its percentile grid). Each part's CDF at a latency v is
    the highest grid percentile whose latency is <= v; the pooled CDF is their
    count-weighted mean. Exact to the grid's step (0.25 below p90, 0.05 above)."""
    total = sum(n for n, _ in parts)
    if total <= 0:
        return [0.0 for _ in qs]
    values = [[v for _, v in grid] for _, grid in parts]
    candidates = sorted({v for vs in values for v in vs})

    def cdf(v: float) -> float:
        acc = 0.0
        for (n, grid), vs in zip(parts, values, strict=True):
            i = bisect.bisect_right(vs, v)
            acc += n * (grid[i - 1][0] if i else 0.0) / 100
        return acc / total

    out = []
    for q in qs:
        lo, hi = 0, len(candidates) - 1  # the smallest candidate with cdf >= q
        while lo < hi:
            mid = (lo + hi) // 2
            if cdf(candidates[mid]) >= q / 100 - 1e-9:
                hi = mid
            else:
                lo = mid + 1
        out.append(candidates[lo])
    return out


class HttpCluster(Cluster):
    lua_system = ""

    def run_wrks(
        self, op: str, targets: list[tuple[Member, int]], duration_s: float, seed: int
    ) -> tuple[list[WrkRun], float]:
        """One wrk per (member, connections), all at once; their results and
        their CPU seconds."""
        a = self.args
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = []
        try:
            for i, (m, conns) in enumerate(targets):
                argv = [
                    a.wrk,
                    "-t1",
                    f"-c{conns}",
                    f"-d{max(1, round(duration_s))}s",
                    "--timeout",
                    f"{max(1, round(a.request_timeout))}s",
                    "-s",
                    str(LUA_SCRIPT),
                    f"http://{HOST}:{m.port}",
                    "--",
                    self.lua_system,
                    op,
                    str(a.keys),
                    str(a.value_bytes),
                    str(seed * 10 + i),
                ]
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                    )
                )
            runs = []
            for p in procs:
                try:
                    raw_out, raw_err = p.communicate(timeout=duration_s + 60)
                except subprocess.TimeoutExpired as exc:
                    raise RuntimeError(f"wrk did not finish within {duration_s + 60}s") from exc
                out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
                if p.returncode != 0:
                    raise RuntimeError(f"wrk exited {p.returncode}:\n{out}\n{err}")
                runs.append(parse_wrk(out, err))
        finally:
            for p in procs:
                stop_process(p, timeout=2)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return runs, cpu

    def run_load(
        self, op: str, order: list[Member], clients: int, on_window: OnWindow
    ) -> LoadResult:
        counts = spread(clients, len(order))
        targets = [(m, c) for m, c in zip(order, counts, strict=True) if c > 0]
        if self.args.warmup > 0:
            self.run_wrks(op, targets, self.args.warmup, seed=1000 + clients)
        on_window("start")
        runs, cpu = self.run_wrks(op, targets, self.args.duration, seed=clients)
        on_window("end")
        r = LoadResult(loadgen=f"wrk x{len(targets)}", loadgen_cpu_s=cpu)
        r.requests = int(sum(w.fields["requests"] for w in runs))
        r.duration_s = max(w.fields["duration_us"] for w in runs) / 1e6
        r.ops_per_s = sum(
            w.fields["requests"] / (w.fields["duration_us"] / 1e6)
            for w in runs
            if w.fields["duration_us"]
        )
        if len(runs) == 1:
            p50, p99 = runs[0].fields["p50_us"], runs[0].fields["p99_us"]
        else:
            p50, p99 = pooled_percentiles(
                [(w.fields["requests"], w.grid) for w in runs], [50.0, 99.0]
            )
        r.p50_ms, r.p99_ms = p50 / 1000, p99 / 1000
        if r.requests:
            r.mean_ms = sum(w.fields["mean_us"] * w.fields["requests"] for w in runs) / (
                r.requests * 1000
            )
        r.max_ms = max(w.fields["max_us"] for w in runs) / 1000
        keys = ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx")
        r.failure_detail = {k: int(sum(w.fields[k] for w in runs)) for k in keys}
        r.failures = sum(r.failure_detail.values())
        return r

    def preload(self, keys: int, value_bytes: int) -> None:
        lead = self.wait_leader(30)
        preload(lead.server, keys, value_bytes, timeout=120)
        self.wait_until("every member caught up", self.settled, 60)
        for m in self.members:
            smoke_check(m.server)

    # One failover attempt against a member: a fresh connection, one write.
    def write_once(self, port: int) -> bool:
        raise NotImplementedError

    def probe_failover(
        self, survivors: list[Member], kill: Callable[[], int]
    ) -> tuple[dict[str, float | None], dict[str, Any]]:
        a = self.args
        ports = [m.port for m in survivors]
        acks: list[int] = []
        lock = threading.Lock()

        def attempt(port: int) -> None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.write_once(port):
                    t = time.monotonic_ns()
                    with lock:
                        acks.append(t)

        attempts = 0
        kill_ns = kill()
        deadline = time.monotonic() + a.failover_deadline
        with ThreadPoolExecutor(max_workers=PROBES_IN_FLIGHT_MAX) as pool:
            inflight: set[Future[None]] = set()
            while time.monotonic() < deadline:
                with lock:
                    if acks:
                        break
                inflight = {f for f in inflight if not f.done()}
                if len(inflight) < PROBES_IN_FLIGHT_MAX:
                    inflight.add(pool.submit(attempt, ports[attempts % len(ports)]))
                    attempts += 1
                time.sleep(a.retry_ms / 1000)
            for f in inflight:
                f.cancel()
        first = min(acks) if acks else None
        return {"retry": None if first is None else (first - kill_ns) / 1e9}, {"attempts": attempts}


class HttpcoordCluster(HttpCluster):
    system = "httpcoord"
    lua_system = "httpcoord"

    def __init__(self, workdir: Path, n: int, args: argparse.Namespace) -> None:
        super().__init__(workdir, n, args)
        ports = distinct_ports(2 * n)
        clients, peers = ports[:n], ports[n:]
        peer_list = ",".join(f"{i + 1}={HOST}:{peers[i]}" for i in range(n))
        for i in range(n):
            data = self.workdir / f"node{i + 1}"
            argv = [
                sys.executable,
                "-m",
                "httpcoord",
                "serve",
                "--id",
                str(i + 1),
                "--listen",
                f"{HOST}:{clients[i]}",
                "--peers",
                peer_list,
                "--data-dir",
                str(data),
                "--log-level",
                "warning",
                *shlex.split(args.httpcoord_args),
            ]
            server = Server(
                name="httpcoord",
                port=clients[i],
                argv=argv,
                log_path=self.workdir / f"node{i + 1}.log",
                ready_path="/ready",
                fsync_metrics=("httpcoord_log_entries_total", "httpcoord_log_fsyncs_total"),
            )
            self.members.append(Member(i + 1, server, data))

    def cluster_view(self, m: Member) -> dict[str, Any]:
        status, body = http_request(m.port, "GET", "/v1/cluster", timeout=1.0)
        if status != 200:
            raise RuntimeError(f"GET /v1/cluster on member {m.index}: {status}")
        view: dict[str, Any] = json.loads(body)
        return view

    def leader(self) -> Member | None:
        for m in self.members:
            if not m.alive():
                continue
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                lead = self.cluster_view(m).get("leader")
                for x in self.members:
                    if x.index == lead and x.alive():
                        return x
        return None

    def settled(self) -> bool:
        views = [self.cluster_view(m) for m in self.members]
        leaders = {v.get("leader") for v in views}
        if len(leaders) != 1 or None in leaders:
            return False
        commit = max(v["commit_index"] for v in views)
        return all(v["applied_index"] == commit for v in views)

    def fsync_counters(self, m: Member) -> tuple[float, float]:
        return m.server.fsync_counters()

    def write_once(self, port: int) -> bool:
        status, _ = http_request(
            port,
            "PUT",
            f"/v1/nodes/bench/{key_name(FAILOVER_KEY)}",
            b"failover",
            timeout=PROBE_TIMEOUT_S,
        )
        return status == 200

    def version(self) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return f"git {out.stdout.strip()}" if out.returncode == 0 else ""
        return ""


class EtcdCluster(HttpCluster):
    system = "etcd"
    lua_system = "etcd"

    def __init__(self, workdir: Path, n: int, args: argparse.Namespace) -> None:
        super().__init__(workdir, n, args)
        ports = distinct_ports(2 * n)
        clients, peers = ports[:n], ports[n:]
        initial = ",".join(f"m{i + 1}=http://{HOST}:{peers[i]}" for i in range(n))
        token = f"bench-{secrets.token_hex(4)}"
        for i in range(n):
            data = self.workdir / f"m{i + 1}"
            argv = [
                args.etcd,
                "--name",
                f"m{i + 1}",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                f"http://{HOST}:{clients[i]}",
                "--advertise-client-urls",
                f"http://{HOST}:{clients[i]}",
                "--listen-peer-urls",
                f"http://{HOST}:{peers[i]}",
                "--initial-advertise-peer-urls",
                f"http://{HOST}:{peers[i]}",
                "--initial-cluster",
                initial,
                "--initial-cluster-token",
                token,
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            server = Server(
                name="etcd",
                port=clients[i],
                argv=argv,
                log_path=self.workdir / f"m{i + 1}.log",
                ready_path="/health",
                # Raft proposals committed per WAL fsync: etcd's own group commit.
                fsync_metrics=(
                    "etcd_server_proposals_committed_total",
                    "etcd_disk_wal_fsync_duration_seconds_count",
                ),
            )
            self.members.append(Member(i + 1, server, data))

    def status(self, m: Member) -> dict[str, Any]:
        status, body = http_request(
            m.port,
            "POST",
            "/v3/maintenance/status",
            b"{}",
            {"Content-Type": "application/json"},
            timeout=1.0,
        )
        if status != 200:
            raise RuntimeError(f"etcd status on member {m.index}: {status}")
        st: dict[str, Any] = json.loads(body)
        return st

    def leader(self) -> Member | None:
        ids: dict[str, Member] = {}
        lead = None
        for m in self.members:
            if not m.alive():
                continue
            with contextlib.suppress(OSError, RuntimeError, ValueError, KeyError):
                st = self.status(m)
                ids[st["header"]["member_id"]] = m
                lead = st.get("leader") or lead
        return ids.get(lead) if lead else None

    def settled(self) -> bool:
        sts = [self.status(m) for m in self.members]
        leaders = {s.get("leader") for s in sts}
        if len(leaders) != 1 or None in leaders or "0" in leaders:
            return False
        index = max(int(s["raftIndex"]) for s in sts)
        return all(int(s.get("raftAppliedIndex", s["raftIndex"])) == index for s in sts)

    def fsync_counters(self, m: Member) -> tuple[float, float]:
        return m.server.fsync_counters()

    def write_once(self, port: int) -> bool:
        body = json.dumps(
            {"key": b64(f"/bench/{key_name(FAILOVER_KEY)}"), "value": b64("failover")}
        )
        status, _ = http_request(
            port,
            "POST",
            "/v3/kv/put",
            body.encode(),
            {"Content-Type": "application/json"},
            timeout=PROBE_TIMEOUT_S,
        )
        return status == 200

    def version(self) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [self.args.etcd, "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return out.stdout.splitlines()[0] if out.stdout else ""
        return ""


# ---- ZooKeeper: three server processes and a Java load client -------------------------------


class ZkCluster(Cluster):
    system = "zookeeper"

    def __init__(self, workdir: Path, n: int, args: argparse.Namespace) -> None:
        super().__init__(workdir, n, args)
        members = ensemble_servers(args.java, self.workdir, n, args.zk_tick_ms)
        for i, (server, data) in enumerate(members):
            self.members.append(Member(i + 1, server, data))
        self.classes = self.workdir / "client"

    def compile_client(self) -> None:
        """Write the Java load client into the temp dir and compile it."""
        compile_load_client(self.args.javac, self.classes)

    def client_argv(self, mode: str, **kw: object) -> list[str]:
        return load_client_argv(self.args.java, self.classes, mode, **kw)

    def leader(self) -> Member | None:
        port = zk_leader_port(m.port for m in self.members if m.alive())
        return next((m for m in self.members if m.port == port), None)

    def settled(self) -> bool:
        return ensemble_settled([m.port for m in self.members])

    def fsync_counters(self, m: Member) -> tuple[float, float]:
        """Requests flushed to the txn log (summed batch sizes) and fsyncs."""
        return zk_fsync_counters(m.port)

    def preload(self, keys: int, value_bytes: int) -> None:
        lead = self.wait_leader(30)
        servers = f"{HOST}:{lead.port}"
        with ChildLines(
            self.client_argv("preload", servers=servers, keys=keys, value=value_bytes)
        ) as c:
            line = c.expect("PRELOADED", time.monotonic() + 150)
        if "failed=0" not in line:
            raise RuntimeError(f"zookeeper preload: {line}")
        self.wait_until("members caught up", self.settled, 60)

    def run_load(
        self, op: str, order: list[Member], clients: int, on_window: OnWindow
    ) -> LoadResult:
        a = self.args
        argv = self.client_argv(
            "load",
            servers=",".join(f"{HOST}:{m.port}" for m in order),
            op=op,
            clients=clients,
            warmup=a.warmup,
            duration=a.duration,
            keys=a.keys,
            value=a.value_bytes,
            seed=clients,
        )
        limit = time.monotonic() + a.warmup + a.duration + 120
        fields, loadgen_cpu_s = drive_load(argv, limit, on_window)
        r = LoadResult(loadgen="java ZkLoad", loadgen_cpu_s=loadgen_cpu_s)
        r.requests = int(fields["requests"])
        r.duration_s = fields["duration_us"] / 1e6
        r.ops_per_s = r.requests / r.duration_s if r.duration_s else 0.0
        r.p50_ms, r.p99_ms = fields["p50_us"] / 1000, fields["p99_us"] / 1000
        r.mean_ms, r.max_ms = fields["mean_us"] / 1000, fields["max_us"] / 1000
        r.failure_detail = {"errors": int(fields["errors"]), "undrained": int(fields["undrained"])}
        r.failures = sum(r.failure_detail.values())
        return r

    def probe_failover(
        self, survivors: list[Member], kill: Callable[[], int]
    ) -> tuple[dict[str, float | None], dict[str, Any]]:
        a = self.args
        argv = self.client_argv(
            "failover",
            servers=",".join(f"{HOST}:{m.port}" for m in survivors),
            retry_ms=a.retry_ms,
            fresh_ms=a.zk_fresh_ms,
            deadline_ms=int(a.failover_deadline * 1000),
        )
        with ChildLines(argv, stdin=True) as c:
            c.expect("READY", time.monotonic() + 60)
            kill_ns = kill()
            c.send(f"GO {kill_ns}")
            limit = time.monotonic() + a.failover_deadline + 30
            acks: dict[str, float | None] = {}
            for _ in range(2):
                parts = dict(kv.split("=") for kv in c.expect("ACK", limit).split()[1:])
                ns = int(parts["ns"])
                acks[parts["kind"]] = (ns - kill_ns) / 1e9 if ns else None
        return acks, {}

    def version(self) -> str:
        return zk_version(self.members[0].port)


# ---- measuring ------------------------------------------------------------------------------


@dataclass
class Window:
    t: float
    cpu: dict[int, int]  # member index -> utime+stime ticks
    busy: int
    total: int
    counters: dict[int, tuple[float, float]]


@dataclass
class Phase:
    system: str
    op: str
    clients: int
    leader: int
    load: LoadResult
    per_member: dict[int, dict[str, Any]] = field(default_factory=dict)
    server_cpu_cores: float = 0.0
    cpu_ms_per_1k: float = 0.0
    loadgen_cpu_cores: float = 0.0
    machine_busy_cores: float = 0.0
    other_cpu_cores: float = 0.0
    wpf_min: float | None = None  # writes per fsync, lowest member
    wpf_max: float | None = None


def measure(cluster: Cluster, op: str, clients: int) -> Phase:
    order = cluster.order_for_clients()
    lead = order[-1]
    edges: dict[str, Window] = {}

    def on_window(edge: str) -> None:
        busy, total = machine_ticks()
        edges[edge] = Window(
            t=time.monotonic(),
            cpu={m.index: process_cpu_ticks(m.pid) for m in cluster.members},
            busy=busy,
            total=total,
            counters=(
                {m.index: cluster.fsync_counters(m) for m in cluster.members} if op == "put" else {}
            ),
        )

    load = cluster.run_load(op, order, clients, on_window)
    w0, w1 = edges["start"], edges["end"]
    ph = Phase(cluster.system, op, clients, lead.index, load)
    wall = max(1e-9, w1.t - w0.t)
    cpus = os.cpu_count() or 1
    server_ticks = 0
    wpfs = []
    for m in cluster.members:
        ticks = w1.cpu[m.index] - w0.cpu[m.index]
        server_ticks += ticks
        info: dict[str, Any] = {
            "role": "leader" if m is lead else "follower",
            "clients": spread(clients, len(order))[order.index(m)],
            "cpu_cores": ticks / CLK_TCK / wall,
        }
        if op == "put":
            (e0, f0), (e1, f1) = w0.counters[m.index], w1.counters[m.index]
            info["entries"], info["fsyncs"] = e1 - e0, f1 - f0
            info["writes_per_fsync"] = (e1 - e0) / (f1 - f0) if f1 > f0 else None
            if info["writes_per_fsync"] is not None:
                wpfs.append(info["writes_per_fsync"])
        ph.per_member[m.index] = info
    ph.server_cpu_cores = server_ticks / CLK_TCK / wall
    ph.cpu_ms_per_1k = server_ticks * 1000 / CLK_TCK / load.requests * 1000 if load.requests else 0
    ph.loadgen_cpu_cores = load.loadgen_cpu_s / wall
    machine_wall_ticks = (w1.total - w0.total) / cpus
    if machine_wall_ticks > 0:
        ph.machine_busy_cores = (w1.busy - w0.busy) / machine_wall_ticks
        accounted = server_ticks + load.loadgen_cpu_s * CLK_TCK
        ph.other_cpu_cores = max(0.0, (w1.busy - w0.busy) - accounted) / machine_wall_ticks
    if wpfs:
        ph.wpf_min, ph.wpf_max = min(wpfs), max(wpfs)
    return ph


def failover_round(cluster: Cluster, rnd: int) -> dict[str, Any]:
    a = cluster.args
    lead = cluster.wait_leader(30)
    survivors = [m for m in cluster.members if m is not lead]
    by_kind, details = cluster.probe_failover(survivors, lead.kill9)
    assert lead.server.proc is not None
    lead.server.proc.wait(timeout=10)
    new = cluster.wait_leader(a.failover_deadline)
    acked = [v for v in by_kind.values() if v is not None]
    result = {
        "round": rnd,
        "killed": lead.index,
        "new_leader": new.index,
        "failover_s": min(acked) if acked else None,
        "by_kind": by_kind,
        **details,
    }
    lead.restart()
    result["rejoin_s"] = cluster.wait_until("the killed member caught up", cluster.settled, 120)
    time.sleep(a.settle)  # let the restarted member's timers run normally before the next kill
    return result


def run_system(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"system": cluster.system, "phases": [], "failovers": []}
    t0 = time.monotonic()
    cluster.start()
    cluster.wait_until("a settled cluster", cluster.settled, 90)
    out["version"] = cluster.version()
    out["start_s"] = time.monotonic() - t0
    print(f"# {cluster.system} {out['version']}: {cluster.by_pid()}", flush=True)
    t0 = time.monotonic()
    cluster.preload(args.keys, args.value_bytes)
    print(f"#   preloaded {args.keys} keys in {time.monotonic() - t0:.1f}s", flush=True)
    plan = [("put", c) for c in args.clients] + [("get", args.read_clients)]
    for op, clients in plan:
        ph = measure(cluster, op, clients)
        out["phases"].append(ph)
        wpf = ""
        if op == "put":
            wpf = "  w/fsync " + " ".join(
                f"{i}{'L' if v['role'] == 'leader' else ''}:{fmt(v['writes_per_fsync'])}"
                for i, v in ph.per_member.items()
            )
        print(
            f"#   {op} {clients:3} clients {ph.load.ops_per_s:8.0f}/s "
            f"p50 {ph.load.p50_ms:6.2f} p99 {ph.load.p99_ms:7.2f} ms fail {ph.load.failures}"
            f"{wpf}  [servers {ph.server_cpu_cores:.2f} cores, {ph.load.loadgen} "
            f"{ph.loadgen_cpu_cores:.2f}, machine busy {ph.machine_busy_cores:.2f}, "
            f"other {ph.other_cpu_cores:.2f}]",
            flush=True,
        )
    for rnd in range(args.failovers):
        fo = failover_round(cluster, rnd + 1)
        out["failovers"].append(fo)
        kinds = ", ".join(f"{k} {fmt(v, '.3f')}" for k, v in fo["by_kind"].items())
        print(
            f"#   failover {rnd + 1}: killed {fo['killed']}, new leader {fo['new_leader']}, "
            f"first write after {fmt(fo['failover_s'], '.3f')} s ({kinds}); "
            f"rejoined in {fo['rejoin_s']:.1f}s",
            flush=True,
        )
    return out


# ---- report ---------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def phase_of(res: dict[str, Any], op: str, clients: int) -> Phase | None:
    for ph in res.get("phases", []):
        if ph.op == op and ph.clients == clients:
            return ph  # type: ignore[no-any-return]
    return None


@dataclass
class Row:
    label: str
    spec: str  # format of the values
    ratio: bool = True  # whether httpcoord/other means anything here
    values: dict[str, float | None] = field(default_factory=dict)


def table_rows(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[Row]:
    """The table: one row per figure, one value per system."""
    top = max(args.clients)
    rows: list[Row] = []

    def add(
        label: str, spec: str, get: Callable[[dict[str, Any]], float | None], ratio: bool = True
    ) -> None:
        rows.append(Row(label, spec, ratio, {s: get(r) for s, r in results.items()}))

    def of(op: str, clients: int, attr: str) -> Callable[[dict[str, Any]], float | None]:
        def get(res: dict[str, Any]) -> float | None:
            ph = phase_of(res, op, clients)
            if ph is None:
                return None
            obj: Any = ph.load if hasattr(ph.load, attr) else ph
            value: float | None = getattr(obj, attr)
            return value

        return get

    for c in args.clients:
        add(f"writes/s, {c} client{'s' if c > 1 else ''}", ".0f", of("put", c, "ops_per_s"))
        add("  p50 ms", ".2f", of("put", c, "p50_ms"))
        add("  p99 ms", ".2f", of("put", c, "p99_ms"))
    add(f"reads/s, {args.read_clients} clients", ".0f", of("get", args.read_clients, "ops_per_s"))
    add("  p50 ms", ".2f", of("get", args.read_clients, "p50_ms"))
    add("  p99 ms", ".2f", of("get", args.read_clients, "p99_ms"))
    add(f"writes/fsync, {top} cl., lowest member", ".1f", of("put", top, "wpf_min"))
    add(f"writes/fsync, {top} cl., highest member", ".1f", of("put", top, "wpf_max"))

    def failover(pick: Callable[[list[float]], float]) -> Callable[[dict[str, Any]], float | None]:
        def get(res: dict[str, Any]) -> float | None:
            times = [f["failover_s"] for f in res["failovers"] if f["failover_s"] is not None]
            return pick(times) if times else None

        return get

    add(f"failover s, median of {args.failovers}", ".3f", failover(statistics.median))
    add("failover s, worst", ".3f", failover(max))
    add(f"server CPU-ms/1k writes, {top} cl.", ".0f", of("put", top, "cpu_ms_per_1k"))
    add(
        f"server CPU-ms/1k reads, {args.read_clients} cl.",
        ".0f",
        of("get", args.read_clients, "cpu_ms_per_1k"),
    )
    add(f"load gen. cores, {top} cl. writes", ".2f", of("put", top, "loadgen_cpu_cores"), False)
    add(
        f"load gen. cores, {args.read_clients} cl. reads",
        ".2f",
        of("get", args.read_clients, "loadgen_cpu_cores"),
        False,
    )
    add(f"machine busy cores, {top} cl. writes", ".2f", of("put", top, "machine_busy_cores"), False)
    add("  not servers nor load gen.", ".2f", of("put", top, "other_cpu_cores"), False)
    return rows


def render_table(rows: list[Row], systems: list[str]) -> str:
    ratio_cols = [s for s in ("etcd", "zookeeper") if s in systems and "httpcoord" in systems]
    w = 11
    head = f"{'':38}" + "".join(f"{SHORT[s]:>{w}}" for s in systems)
    head += "".join(f"{'hc/' + ('zk' if s == 'zookeeper' else s):>{w}}" for s in ratio_cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r.label:38}" + "".join(f"{fmt(r.values[s], r.spec):>{w}}" for s in systems)
        for s in ratio_cols:
            a, b = r.values["httpcoord"], r.values[s]
            ratio = a / b if r.ratio and a is not None and b else None
            line += f"{fmt(ratio, '.2f'):>{w}}"
        lines.append(line)
    return "\n".join(lines)


def target_lines(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Issue 11's targets, checked on this run's figures."""
    out = []
    hc, etcd, zk = (results.get(s) for s in SYSTEMS)
    if hc and etcd:
        for op, levels in (("put", args.clients), ("get", [args.read_clients])):
            for c in levels:
                a, b = phase_of(hc, op, c), phase_of(etcd, op, c)
                if a and b:
                    verdict = "met" if a.load.ops_per_s >= b.load.ops_per_s else "NOT met"
                    out.append(
                        f"{'writes' if op == 'put' else 'reads'}/s at {c} client{'s' if c > 1 else ''}"
                        f" >= etcd's: "
                        f"{verdict} ({a.load.ops_per_s:.0f} vs {b.load.ops_per_s:.0f})"
                    )
    if hc and zk:
        a_t = [f["failover_s"] for f in hc["failovers"] if f["failover_s"] is not None]
        b_t = [f["failover_s"] for f in zk["failovers"] if f["failover_s"] is not None]
        if a_t and b_t:
            a_m, b_m = statistics.median(a_t), statistics.median(b_t)
            verdict = "met" if a_m <= b_m else "NOT met"
            out.append(f"failover median <= ZooKeeper's: {verdict} ({a_m:.3f} vs {b_m:.3f} s)")
    if hc:
        ph = phase_of(hc, "put", max(args.clients))
        if ph and ph.wpf_min is not None:
            verdict = "met" if ph.wpf_min >= 8 else "NOT met"
            out.append(
                f">= 8 writes per fsync on every member at {ph.clients} clients: {verdict} "
                f"(lowest {ph.wpf_min:.1f})"
            )
    return out


# ---- main -----------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--clients", type=int_list, default=[1, 16, 64], help="write levels")
    p.add_argument("--read-clients", type=int, default=64, help="clients of the read phase")
    p.add_argument("--failovers", type=int, default=3, help="leader kills per system")
    p.add_argument("--members", type=int, default=3, help="servers per cluster (3 or 5)")
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma list of " + ",".join(SYSTEMS)
    )
    p.add_argument("--keys", type=int, default=1000, help="keys preloaded and addressed")
    p.add_argument("--value-bytes", type=int, default=32, help="bytes of each written value")
    p.add_argument(
        "--request-timeout", type=float, default=5.0, help="wrk's per-request timeout, s"
    )
    p.add_argument(
        "--retry-ms", type=int, default=5, help="failover: a new write attempt every N ms"
    )
    p.add_argument(
        "--zk-fresh-ms",
        type=int,
        default=20,
        help="failover, ZooKeeper: a new session every N ms per survivor (the fresh prober)",
    )
    p.add_argument(
        "--failover-deadline", type=float, default=30.0, help="failover: give up after N s"
    )
    p.add_argument(
        "--settle", type=float, default=1.0, help="failover: seconds after a rejoin before the next"
    )
    p.add_argument("--zk-tick-ms", type=int, default=2000, help="ZooKeeper's tickTime")
    p.add_argument(
        "--httpcoord-args", default="", help="extra arguments to every httpcoord serve (quoted)"
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary data dirs (must be a real disk, not tmpfs)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-data", action="store_true", help="leave the temp dir (logs, data)")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    if not set(args.systems) <= set(SYSTEMS):
        p.error(f"--systems from {SYSTEMS}")
    if not 0 < args.duration <= 3600 or args.warmup < 0 or args.keys < 1:
        p.error("need 0 < --duration <= 3600, --warmup >= 0, --keys >= 1")
    if not args.clients or min(args.clients) < 1 or args.read_clients < 1:
        p.error("client counts must be >= 1")
    if args.members not in (3, 5) or not 0 <= args.failovers <= 10:
        p.error("--members 3 or 5, --failovers 0..10")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the servers


def find_tools(args: argparse.Namespace) -> list[str]:
    args.wrk = shutil.which("wrk")
    args.etcd = shutil.which("etcd")
    args.java = shutil.which("java")
    args.javac = shutil.which("javac")
    need: list[tuple[str, str | None]] = []
    if {"httpcoord", "etcd"} & set(args.systems):
        need.append(("wrk", args.wrk))
    if "etcd" in args.systems:
        need.append(("etcd", args.etcd))
    if "zookeeper" in args.systems:
        need += [
            ("java", args.java),
            ("javac", args.javac),
            (str(ZK_JAR), str(ZK_JAR) if ZK_JAR.is_file() else None),
        ]
    return [name for name, path in need if path is None]


@contextlib.contextmanager
def cluster_running(cluster: Cluster) -> Iterator[Cluster]:
    try:
        yield cluster
    finally:
        cluster.stop()


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

    workdir = Path(tempfile.mkdtemp(prefix="httpcoord-cluster-bench-", dir=args.tmp_dir))
    fstype = filesystem_type(workdir)
    if fstype in ("tmpfs", "ramfs"):
        print(
            f"warning: {workdir} is on {fstype}; fsync is free there, the write figures "
            "mean little. Pass --tmp-dir on a real disk.",
            file=sys.stderr,
        )
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    print(
        f"# {args.members} members per system, {os.cpu_count()} CPUs, data on {fstype}; "
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"{args.duration:g}s phases (+{args.warmup:g}s warm-up), {args.keys} keys, "
        f"{args.value_bytes}-byte values",
        flush=True,
    )
    kinds: dict[str, type[Cluster]] = {
        "httpcoord": HttpcoordCluster,
        "etcd": EtcdCluster,
        "zookeeper": ZkCluster,
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in args.systems:
            cluster = kinds[name](workdir, args.members, args)
            if isinstance(cluster, ZkCluster):
                cluster.compile_client()
            with cluster_running(cluster):
                results[name] = run_system(cluster, args)
    finally:
        if args.keep_data:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    rows = table_rows(results, args)
    print()
    print(render_table(rows, list(results)))
    print(
        "hc/x = httpcoord's figure / x's: above 1 is better for rates and writes/fsync, "
        "below 1 for latency, failover and CPU"
    )
    print(
        f"load average at start {load_before[0]:.2f}, at end {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs shared by every member and the load generator)"
    )
    for line in target_lines(results, args):
        print(f"target: {line}")

    save_results(
        args.results_dir,
        "cluster",
        started,
        fstype,
        {"loadavg_start": load_before, "loadavg_end": load_after},
        {
            k: getattr(args, k)
            for k in (
                "duration",
                "warmup",
                "clients",
                "read_clients",
                "failovers",
                "members",
                "systems",
                "keys",
                "value_bytes",
                "retry_ms",
                "zk_fresh_ms",
                "zk_tick_ms",
                "httpcoord_args",
            )
        },
        table=[asdict(r) for r in rows],
        systems={
            s: {**r, "phases": [asdict(ph) for ph in r["phases"]]} for s, r in results.items()
        },
    )
    failed = sum(ph.load.failures for r in results.values() for ph in r["phases"])
    no_ack = sum(1 for r in results.values() for f in r["failovers"] if f["failover_s"] is None)
    if failed or no_ack:
        print(
            f"FAILURES: {failed} requests failed, {no_ack} failovers got no write through",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
