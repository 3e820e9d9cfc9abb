#!/usr/bin/env python3
"""Single-node speed: httpcoord against etcd, same workloads, same run.

Starts one httpcoord node and one single-member etcd on free 127.0.0.1 ports
in temporary data dirs, preloads the same keys into both, then drives each
with wrk (keep-alive connections, a Lua script in benchmarks/lua/) for:

  get   small reads of random preloaded keys
        httpcoord: GET /v1/nodes/bench/kNNNNN
        etcd:      POST /v3/kv/range (the v3 JSON gateway; linearizable, etcd's default)
  put   small durable overwrites of random preloaded keys
        httpcoord: PUT /v1/nodes/bench/kNNNNN (answered after the log fsync)
        etcd:      POST /v3/kv/put

For each phase it reports requests/s, p50/p99 latency (wrk's), failures
(socket errors, timeouts and status >= 400), the server's CPU milliseconds
per 1,000 operations (utime+stime of the server process from /proc, sampled
right before and after wrk), and for writes the writes per fsync from each
server's /metrics. The table goes to stdout, the same figures and every
individual run to benchmarks/results/single_node-<timestamp>.json.

    python benchmarks/bench_single_node.py --duration 10 --connections 64

Needs wrk and etcd (Debian: apt-get install -y wrk etcd-server). Exits 2 when
they are missing, 1 when any request failed, 0 otherwise.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shared with the other scripts (some import these names from here).
from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    Server,
    filesystem_type,
    free_port,
    http_request,
    httpcoord_server,
    machine_ticks,
    process_cpu_ticks,
    prometheus_values,
    save_results,
)

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "lua" / "kv.lua"
INSTALL_HINT = "apt-get install -y wrk etcd-server etcd-client"
SYSTEMS = ("httpcoord", "etcd")
WORKLOADS = ("get", "put")


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
        if server.name == "httpcoord":
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
    if server.name == "httpcoord":
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
    wrk_cpu_ms: float = 0.0
    machine_busy_cores: float = 0.0
    other_cpu_cores: float = 0.0  # busy time neither the server nor wrk accounts for
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
        server.name,
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


def snapshots_taken(server: Server) -> float | None:
    if server.name != "httpcoord":
        return None
    name = "httpcoord_snapshots_total"
    return prometheus_values(server.port, (name,))[name]


def measure(server: Server, workload: str, rep: int, args: argparse.Namespace) -> Phase:
    if args.warmup > 0:
        run_wrk(server, workload, args, args.warmup, seed=1000 + rep)
    phase = Phase(server.name, workload, rep)
    counters0 = server.fsync_counters() if workload == "put" else None
    snaps0 = snapshots_taken(server)
    cpu0, (busy0, total0) = process_cpu_ticks(server.pid), machine_ticks()
    fields, wrk_cpu = run_wrk(server, workload, args, args.duration, seed=rep + 1)
    cpu1, (busy1, total1) = process_cpu_ticks(server.pid), machine_ticks()
    counters1 = server.fsync_counters() if workload == "put" else None
    snaps1 = snapshots_taken(server)
    if snaps0 is not None and snaps1 is not None:
        phase.snapshots = snaps1 - snaps0

    phase.requests = int(fields["requests"])
    phase.duration_s = fields["duration_us"] / 1e6
    phase.req_per_s = phase.requests / phase.duration_s if phase.duration_s else 0.0
    phase.p50_ms = fields["p50_us"] / 1000
    phase.p99_ms = fields["p99_us"] / 1000
    phase.mean_ms = fields["mean_us"] / 1000
    phase.max_ms = fields["max_us"] / 1000
    detail = {
        k: int(fields[k])
        for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx")
    }
    phase.failure_detail = detail
    phase.failures = sum(detail.values())
    phase.server_cpu_ms = (cpu1 - cpu0) * 1000 / CLK_TCK
    phase.cpu_ms_per_1k = phase.server_cpu_ms / phase.requests * 1000 if phase.requests else 0.0
    phase.wrk_cpu_ms = wrk_cpu * 1000
    wall_ticks = (total1 - total0) / (os.cpu_count() or 1)
    if wall_ticks > 0:
        phase.machine_busy_cores = (busy1 - busy0) / wall_ticks
        accounted = (cpu1 - cpu0) + wrk_cpu * CLK_TCK
        phase.other_cpu_cores = max(0.0, (busy1 - busy0) - accounted) / wall_ticks
    if counters0 and counters1:
        d_entries, d_fsyncs = counters1[0] - counters0[0], counters1[1] - counters0[1]
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


def render_table(summary: dict[str, dict[str, dict[str, Any]]], systems: list[str]) -> str:
    cols = [
        ("req/s", "req_per_s", ".0f"),
        ("p50 ms", "p50_ms", ".2f"),
        ("p99 ms", "p99_ms", ".2f"),
        ("CPU-ms/1k", "cpu_ms_per_1k", ".1f"),
        ("w/fsync", "writes_per_fsync", ".1f"),
        ("fail", "failures", "d"),
    ]
    width = 10
    block = width * len(cols)
    both = len(systems) == 2
    head1 = f"{'':8} |" + " |".join(f"{s:^{block}}" for s in systems)
    head2 = f"{'workload':8} |" + " |".join(
        "".join(f"{c[0]:>{width}}" for c in cols) for _ in systems
    )
    if both:
        head1 += f" |{'ratio':>{width}}"
        head2 += f" |{'CPU/op':>{width}}"
    lines = [head1, head2, "-" * len(head2)]
    for workload, per_system in summary.items():
        cells = []
        for s in systems:
            m = per_system.get(s)
            cells.append(
                " " * block
                if m is None
                else "".join(f"{fmt(m[key], spec):>{width}}" for _, key, spec in cols)
            )
        row = f"{workload:8} |" + " |".join(cells)
        if both and all(s in per_system for s in systems):
            a, b = (per_system[s]["cpu_ms_per_1k"] for s in systems)
            row += f" |{fmt(a / b if b else None, '.2f'):>{width}}"
        lines.append(row)
    return "\n".join(lines)


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
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--keys", type=int, default=1000, help="keys preloaded and addressed")
    p.add_argument("--value-bytes", type=int, default=32, help="bytes of each PUT value")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of every phase (interleaved); the table shows medians",
    )
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of httpcoord,etcd")
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
    args.systems = [s for s in args.systems.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    if not set(args.systems) <= set(SYSTEMS) or not set(args.workloads) <= set(WORKLOADS):
        p.error(f"--systems from {SYSTEMS}, --workloads from {WORKLOADS}")
    if args.duration <= 0 or args.duration > 3600 or args.repeat < 1 or args.keys < 1:
        p.error("need 0 < --duration <= 3600, --repeat >= 1, --keys >= 1")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally block stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args.wrk = shutil.which("wrk")
    etcd = shutil.which("etcd")
    missing = [
        n
        for n, path in (("wrk", args.wrk), ("etcd", etcd))
        if path is None and (n == "wrk" or "etcd" in args.systems)
    ]
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
    servers: dict[str, Server] = {}
    if "httpcoord" in args.systems:
        servers["httpcoord"] = httpcoord_server(workdir)
    if "etcd" in args.systems:
        assert etcd is not None
        servers["etcd"] = etcd_server(workdir, etcd)

    phases: list[Phase] = []
    started = dt.datetime.now(dt.UTC)
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready(timeout=30)
        for s in servers.values():
            t0 = time.monotonic()
            preload(s, args.keys, args.value_bytes, timeout=120)
            smoke_check(s)
            print(
                f"# {s.name}: pid {s.pid}, port {s.port}, preloaded {args.keys} keys "
                f"in {time.monotonic() - t0:.1f}s",
                flush=True,
            )
        print(
            f"# data dirs on {fstype}; wrk -t{args.threads} -c{args.connections} "
            f"-d{args.duration:g}s (+{args.warmup:g}s warmup), {args.keys} keys, "
            f"{args.value_bytes}-byte values, {os.cpu_count()} CPUs",
            flush=True,
        )
        for rep in range(args.repeat):
            for workload in args.workloads:
                for name in args.systems:
                    ph = measure(servers[name], workload, rep, args)
                    phases.append(ph)
                    print(
                        f"# run {rep + 1} {workload:3} {name:9} {ph.req_per_s:8.0f} req/s "
                        f"p50 {ph.p50_ms:6.2f} p99 {ph.p99_ms:7.2f} ms  "
                        f"cpu {ph.cpu_ms_per_1k:6.1f} ms/1k  "
                        f"w/fsync {fmt(ph.writes_per_fsync):>5}  fail {ph.failures}  "
                        f"snap {fmt(ph.snapshots, '.0f')}  "
                        f"[machine busy {ph.machine_busy_cores:.2f} cores, wrk "
                        f"{ph.wrk_cpu_ms / 1000 / ph.duration_s if ph.duration_s else 0:.2f}, "
                        f"other {ph.other_cpu_cores:.2f}]",
                        flush=True,
                    )
        if args.hold > 0:
            print(
                f"# holding servers for {args.hold:g}s: "
                + ", ".join(f"{s.name} pid {s.pid} port {s.port}" for s in servers.values()),
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

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in args.workloads:
        summary[workload] = {}
        for name in args.systems:
            runs = [p for p in phases if p.workload == workload and p.system == name]
            if runs:
                summary[workload][name] = median_phase(runs)
    print()
    print(render_table(summary, args.systems))
    if len(args.systems) == 2:
        print("ratio = httpcoord CPU-ms per op / etcd CPU-ms per op (below 1: httpcoord cheaper)")
    if args.repeat > 1:
        for workload, per_system in summary.items():
            for name, m in per_system.items():
                lo, hi = m["req_per_s_range"]
                clo, chi = m["cpu_ms_per_1k_range"]
                print(
                    f"  {workload:3} {name:9} over {m['runs']} runs: req/s {lo:.0f}..{hi:.0f}, "
                    f"CPU-ms/1k {clo:.1f}..{chi:.1f}"
                )

    save_results(
        args.results_dir,
        "single_node",
        started,
        fstype,
        {},
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
