#!/usr/bin/env python3
"""Flame graphs of httpcoord's four hot paths, with py-spy, under the load of
the benchmarks that measure them:

  read             one node, wrk GETs (bench_single_node.py, 64 connections)
  write            one node, wrk PUTs (bench_single_node.py)
  forwarded-write  a follower of a three-node cluster under 64 writing
                   clients, two thirds of whose writes it passes to the
                   leader (bench_cluster.py)
  watch            one node fanning each PUT out to 1,000 SSE watchers
                   (bench_watch.py)

Each benchmark is started as it would be by hand; once its servers are up
and warmed, py-spy samples the chosen server for --seconds and writes
benchmarks/flamegraphs/<path>.svg. The benchmark then finishes on its own
(every one bounds its own run and stops its servers by PID).

    python benchmarks/flamegraphs.py                     # all four
    python benchmarks/flamegraphs.py --paths read,write --seconds 8

Needs py-spy (pip install -e '.[bench]') and what each benchmark needs (wrk).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "flamegraphs"
PID_WAIT_S = 60.0
# After the benchmark names its server: preload and wrk's warm-up (the
# cluster's election first; the watchers connect before the writes start).
WARM_S = {"read": 3.0, "write": 3.0, "forwarded-write": 5.0, "watch": 10.0}

# path -> (benchmark argv, regex of the line naming the server(s): pid, port)
SCENARIOS: dict[str, tuple[list[str], str]] = {
    "read": (
        ["bench_single_node.py", "--systems", "httpcoord", "--workloads", "get"],
        r"# httpcoord: pid (\d+), port (\d+)",
    ),
    "write": (
        ["bench_single_node.py", "--systems", "httpcoord", "--workloads", "put"],
        r"# httpcoord: pid (\d+), port (\d+)",
    ),
    "forwarded-write": (
        [
            "bench_cluster.py",
            "--systems",
            "httpcoord",
            "--clients",
            "64",
            "--read-clients",
            "1",
            "--failovers",
            "0",
        ],
        r"# httpcoord git \S+: (.*)",
    ),
    "watch": (
        [
            "bench_watch.py",
            "--scenarios",
            "fanout",
            "--fanout-watchers",
            "1000",
            "--writes",
            "4000",
            "--gap",
            "0",
        ],
        r"# httpcoord pid (\d+), port (\d+)",
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default=",".join(SCENARIOS), help="comma list")
    parser.add_argument("--seconds", type=float, default=10.0, help="sampled per path")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = parser.parse_args()
    OUT_DIR.mkdir(exist_ok=True)
    for name in args.paths.split(","):
        argv, pattern = SCENARIOS[name]
        duration = args.seconds + WARM_S[name] + 5
        if name != "watch":
            argv = [*argv, "--duration", str(int(duration)), "--warmup", "1"]
        profile(name, [sys.executable, str(HERE / argv[0]), *argv[1:]], pattern, args)
    return 0


def profile(name: str, argv: list[str], pattern: str, args: argparse.Namespace) -> None:
    bench = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent
    )
    lines: list[str] = []
    found = threading.Event()
    target: list[int] = []

    def read() -> None:  # the benchmark's output, echoed; finds the server's PID
        assert bench.stdout is not None
        for line in bench.stdout:
            lines.append(line)
            print(f"  [{name}] {line}", end="", flush=True)
            m = re.search(pattern, line)
            if m and not found.is_set():
                target.append(_pick(name, m))
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not found.wait(PID_WAIT_S):
            raise SystemExit(f"{name}: the benchmark named no server in {PID_WAIT_S:g}s")
        time.sleep(WARM_S[name])
        svg = OUT_DIR / f"{name}.svg"
        subprocess.run(
            [
                "py-spy",
                "record",
                "--pid",
                str(target[0]),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                str(args.rate),
                "--nonblocking",
                "--format",
                "flamegraph",
                "--output",
                str(svg.relative_to(HERE.parent)),  # py-spy writes it into the graph
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=HERE.parent,
        )
        print(f"# {name}: {svg.relative_to(HERE.parent)}", flush=True)
        bench.wait(timeout=600)
    finally:
        if bench.poll() is None:
            bench.terminate()  # the benchmark stops its own servers on SIGTERM
            bench.wait(timeout=30)
        reader.join(timeout=5)


def _pick(name: str, m: re.Match[str]) -> int:
    """The server to sample: the one node, or a follower of the cluster."""
    if name != "forwarded-write":
        return int(m.group(1))
    members = re.findall(r"(\d+): pid (\d+) port (\d+)", m.group(1))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{members[0][2]}/v1/cluster") as r:
                leader = r.headers.get("X-Coord-Leader", "")
        except OSError:
            leader = ""
        if leader and leader != "0":
            return next(int(pid) for nid, pid, _ in members if nid != leader)
        time.sleep(0.2)
    raise SystemExit("forwarded-write: no leader named in 20 s")


if __name__ == "__main__":
    sys.exit(main())
