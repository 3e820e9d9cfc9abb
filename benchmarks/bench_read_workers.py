#!/usr/bin/env python3
"""Reads on more cores: one node's reads/s with and without read workers.

Runs one httpcoord node (a cluster of one) per configuration, pinned with
``taskset`` to a set of cores together with its read workers (a worker
inherits its node's affinity), preloads the same keys, and drives GETs of
random keys with wrk (64 keep-alive connections; the kernel deals new
connections to the node's processes through ``SO_REUSEPORT``). wrk is pinned
to its own core when one is left over, else it shares the node's.

Configurations, as ``WORKERS@CPUS`` (``--configs``), by default:

  0@0    the node alone on one core (wrk on the other)
  0@0-1  the node alone on two cores: one Python process uses one of them
  1@0-1  the node and one read worker on two cores
  2@0-1  the node and two read workers on two cores

Each round runs every configuration once (the machine's speed drifts between
rounds more than within one); after --repeat rounds it prints the medians.
For each run: reads/s, p50/p99, failures, the node's CPU milliseconds per
1,000 reads (the node and its workers, from /proc) and how many of 60 new
connections each process took. Results go to
benchmarks/results/read_workers-<timestamp>.json.

    python benchmarks/bench_read_workers.py --duration 6 --repeat 5

Needs wrk and taskset. Exits 2 when one is missing, 1 when a request failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    filesystem_type,
    httpcoord_server,
    process_cpu_ticks,
    save_results,
)
from bench_single_node import WRK_FAILURES, preload, run_wrk, smoke_check

DEFAULT_CONFIGS = ("0@0", "0@0-1", "1@0-1", "2@0-1")


@dataclass(frozen=True)
class Config:
    workers: int
    cpus: str

    @property
    def label(self) -> str:
        return f"{self.workers}@{self.cpus}"


@dataclass
class Result:
    config: str
    rep: int
    workers: int
    cpus: str
    wrk_cpus: str
    req_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu_ms_per_1k: float
    node_cores: float
    wrk_cores: float
    answered_by: dict[str, int]


def parse_config(text: str) -> Config:
    workers, _, cpus = text.partition("@")
    if not workers.isdigit() or not cpus:
        raise argparse.ArgumentTypeError(f"expected WORKERS@CPUS (as 1@0-1), got {text!r}")
    return Config(int(workers), cpus)


def cpu_set(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def answered_by(port: int, connections: int) -> dict[str, int]:
    """Which process new connections reach: the X-Coord-Worker of one GET each."""
    counts: dict[str, int] = {}
    for _ in range(connections):
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("GET", "/v1/nodes/")
            resp = conn.getresponse()
            resp.read()
            who = resp.headers.get("X-Coord-Worker", "node")
        finally:
            conn.close()
        counts[who] = counts.get(who, 0) + 1
    return dict(sorted(counts.items()))


def measure(config: Config, rep: int, args: argparse.Namespace, workdir: Path) -> Result:
    node_cpus = cpu_set(config.cpus)
    spare = set(os.sched_getaffinity(0)) - node_cpus
    wrk_cpus = spare or node_cpus  # wrk on a core of its own when one is left
    (workdir / f"{config.label}-{rep}").mkdir()
    server = httpcoord_server(workdir / f"{config.label}-{rep}")
    server.argv = ["taskset", "-c", config.cpus, *server.argv]  # workers inherit it
    server.argv += ["--read-workers", str(config.workers)]
    server.start()
    mine = os.sched_getaffinity(0)
    try:
        server.wait_ready(30)
        deadline = time.monotonic() + 30
        while len(answered_by(server.port, 4 * (config.workers + 1))) < config.workers + 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{config.label}: workers not serving:\n{server.log_tail()}")
            time.sleep(0.2)
        preload(server, args.keys, args.value_bytes, timeout=120)
        smoke_check(server)
        os.sched_setaffinity(0, wrk_cpus)  # wrk inherits this process's affinity
        run_wrk(server, "get", args, args.warmup, seed=1)
        pids = [server.pid, *children(server.pid)]
        before = sum(process_cpu_ticks(p) for p in pids)
        t0 = time.monotonic()
        fields, wrk_cpu = run_wrk(server, "get", args, args.duration, seed=2)
        elapsed = time.monotonic() - t0
        node_cpu_ms = (sum(process_cpu_ticks(p) for p in pids) - before) * 1000 / CLK_TCK
        os.sched_setaffinity(0, mine)
        requests = fields["requests"]
        return Result(
            config=config.label,
            rep=rep,
            workers=config.workers,
            cpus=config.cpus,
            wrk_cpus=",".join(map(str, sorted(wrk_cpus))),
            req_per_s=requests / (fields["duration_us"] / 1e6),
            p50_ms=fields["p50_us"] / 1000,
            p99_ms=fields["p99_us"] / 1000,
            failures=int(sum(fields[k] for k in WRK_FAILURES)),
            cpu_ms_per_1k=node_cpu_ms / requests * 1000 if requests else 0.0,
            node_cores=node_cpu_ms / 1000 / elapsed,
            wrk_cores=wrk_cpu / elapsed,
            answered_by=answered_by(server.port, 60),
        )
    finally:
        os.sched_setaffinity(0, mine)
        server.stop()


def render(results: list[Result]) -> str:
    """One line per run; with repeats, the medians per configuration last,
    each with the median over rounds of its reads/s over the first
    configuration's in the same round (the machine's speed varies between
    rounds, less within one)."""
    header = (
        f"{'workers@cpus':<14}{'reads/s':>10}{'x first':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU-ms/1k':>11}{'node cores':>12}{'wrk cores':>11}  wrk cpus  answered by"
    )
    lines = [header]
    first = results[0].config if results else ""
    base: dict[int, float] = {r.rep: r.req_per_s for r in results if r.config == first}
    for r in results:
        by = " ".join(f"{k}:{v}" for k, v in r.answered_by.items())
        lines.append(
            f"{r.config:<14}{r.req_per_s:>10.0f}{r.req_per_s / base[r.rep]:>9.2f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.cpu_ms_per_1k:>11.1f}{r.node_cores:>12.2f}"
            f"{r.wrk_cores:>11.2f}  {r.wrk_cpus:<8}  {by}"
        )
    if len(base) > 1:
        lines += ["", f"medians of {len(base)} rounds:", header]
        for config in dict.fromkeys(r.config for r in results):
            runs = [r for r in results if r.config == config]

            def med(key: str, runs: list[Result] = runs) -> float:
                return statistics.median(getattr(r, key) for r in runs)

            ratio = statistics.median(r.req_per_s / base[r.rep] for r in runs)
            lines.append(
                f"{config:<14}{med('req_per_s'):>10.0f}{ratio:>9.2f}{med('p50_ms'):>9.2f}"
                f"{med('p99_ms'):>9.2f}{med('cpu_ms_per_1k'):>11.1f}{med('node_cores'):>12.2f}"
                f"{med('wrk_cores'):>11.2f}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", type=parse_config, nargs="+", default=None, help="WORKERS@CPUS ...")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per config")
    p.add_argument("--repeat", type=int, default=3, help="rounds over the configurations")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--request-timeout", type=float, default=5.0)
    p.add_argument("--tmp-dir", type=Path, default=None)
    args = p.parse_args(argv)
    args.configs = args.configs or [parse_config(c) for c in DEFAULT_CONFIGS]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [t for t in ("wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)} (Debian: apt-get install -y wrk util-linux)")
        return 2
    args.wrk = shutil.which("wrk")
    started = dt.datetime.now(dt.UTC)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-read-workers-", dir=args.tmp_dir) as tmp:
        for rep in range(args.repeat):  # configurations alternate within each round
            for config in args.configs:
                results.append(measure(config, rep, args, Path(tmp)))
                print(render(results).splitlines()[len(results)], flush=True)
        data_fs = filesystem_type(Path(tmp))
    print()
    print(render(results))
    save_results(
        RESULTS_DIR,
        "read_workers",
        started,
        data_fs,
        {},
        {k: str(v) for k, v in vars(args).items()},
        results=[asdict(r) for r in results],
    )
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
