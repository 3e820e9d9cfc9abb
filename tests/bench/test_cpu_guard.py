"""CPU regression guard: httpcoord's CPU per operation against the bare
aiohttp server's (benchmarks/bare_server.py), both measured in the same job
with the same load (issue 14, item 5).

Absolute CPU figures move with the machine; the ratio to a server that runs
the same stack (aiohttp on uvloop) and answers the same requests with the
same bytes from a dict moves much less. Reads are compared with the plain
bare server, writes with ``bare_server.py --fsync`` (group-committed
fdatasync, as httpcoord's log). Each is measured in short interleaved rounds
(httpcoord, then the bare server, then the other way round), each round
gives one ratio, and the mean of the rounds without the highest and the
lowest is checked: a burst of noise spoils one round, not the verdict.

    python -m pytest -m bench tests/bench/test_cpu_guard.py

Skips when wrk is absent, unless ``HTTPCOORD_REQUIRE_WRK=1`` (then fails).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _common import (  # the benchmarks are scripts, not a package
    RESULTS_DIR,
    Server,
    bare_server,
    filesystem_type,
    httpcoord_server,
)
from bench_single_node import Phase, measure, preload, run_wrk, smoke_check

pytestmark = pytest.mark.bench

# The guard's bounds: httpcoord's CPU per op over the bare server's (the
# mean of the rounds without the extremes). Measured in 15 runs of this test
# (7 or 8 rounds) on a 2-vCPU VM shared with other jobs: reads 1.45-1.75,
# writes 1.89-2.40 (single rounds 1.00-3.37 and 1.41-2.98). Each bound is the
# highest value seen plus 25%, about twice the run-to-run spread (within 11%
# and 13% of the mean): noise alone should not fail CI, while a request path
# that costs about 40% more per operation than today does. Lower them as
# httpcoord gets cheaper (issue 14's targets are 1.2 for both).
READ_CPU_VS_BARE_MAX = 2.2
WRITE_CPU_VS_BARE_FSYNC_MAX = 3.0

CONNECTIONS = 64  # wrk keep-alive connections, as bench_single_node.py
WRK_THREADS = 2
KEYS = 1000
VALUE_BYTES = 32
WARMUP_S = 1.0  # once per server and workload, unmeasured
ROUND_S = 1.0  # one measured phase: short, so each pair sees the same machine
ROUNDS = 8  # per workload; the mean ratio without the extremes is checked
READY_TIMEOUT_S = 30.0
PRELOAD_TIMEOUT_S = 60.0


def _load_args(wrk: str) -> argparse.Namespace:
    """The settings bench_single_node.measure reads; no warm-up per phase."""
    return argparse.Namespace(
        wrk=wrk,
        threads=WRK_THREADS,
        connections=CONNECTIONS,
        duration=ROUND_S,
        warmup=0.0,
        request_timeout=5.0,
        keys=KEYS,
        value_bytes=VALUE_BYTES,
    )


@pytest.fixture
def wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        if os.environ.get("HTTPCOORD_REQUIRE_WRK") == "1":
            pytest.fail("wrk is not installed and HTTPCOORD_REQUIRE_WRK=1 (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Data dirs on a real disk: on tmpfs an fsync costs nothing, and the
    write ratio would not be the one the bound was set on."""
    if filesystem_type(tmp_path) not in ("tmpfs", "ramfs"):
        yield tmp_path
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="cpu-guard-", dir=RESULTS_DIR))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers(workdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for server in (
            httpcoord_server(workdir),
            bare_server(workdir, fsync=False),
            bare_server(workdir, fsync=True),
        ):
            started[server.name] = server
            server.start()
        for server in started.values():
            server.wait_ready(timeout=READY_TIMEOUT_S)
            preload(server, KEYS, VALUE_BYTES, timeout=PRELOAD_TIMEOUT_S)
            smoke_check(server)
        yield started
    finally:
        for server in started.values():
            server.stop()  # by the PID it was started with


def _rounds(
    ours: Server, bare: Server, workload: str, args: argparse.Namespace
) -> list[tuple[Phase, Phase]]:
    for server in (ours, bare):
        run_wrk(server, workload, args, WARMUP_S, seed=1000)
    pairs = []
    for rnd in range(ROUNDS):
        # Alternate who goes first, so a drift in the machine's speed
        # within a round does not always favour the same side.
        order = (ours, bare) if rnd % 2 == 0 else (bare, ours)
        measured = {s.name: measure(s, workload, rnd, args) for s in order}
        pairs.append((measured[ours.name], measured[bare.name]))
    for ph in (p for pair in pairs for p in pair):
        assert ph.failures == 0, f"{ph.system} {workload}: {ph.failure_detail}"
        assert ph.requests > 0, f"{ph.system} {workload}: no request completed"
    return pairs


def _report(workload: str, ref: str, pairs: list[tuple[Phase, Phase]], bound: float) -> float:
    ratios = [a.cpu_ms_per_1k / b.cpu_ms_per_1k for a, b in pairs]
    # The mean is steadier than the median here; dropping the two extremes
    # keeps one disturbed round from moving it much.
    trimmed = statistics.mean(sorted(ratios)[1:-1])
    print(f"\n{workload}: httpcoord vs {ref}, {CONNECTIONS} connections, {ROUND_S:g} s rounds")
    for i, (a, b) in enumerate(pairs):
        print(
            f"  round {i + 1}: httpcoord {a.req_per_s:7.0f}/s {a.cpu_ms_per_1k:6.1f} CPU-ms/1k"
            f" | {ref} {b.req_per_s:7.0f}/s {b.cpu_ms_per_1k:6.1f} CPU-ms/1k"
            f" | ratio {ratios[i]:.2f} [machine busy {a.machine_busy_cores:.2f}"
            f"/{b.machine_busy_cores:.2f} cores, other {a.other_cpu_cores:.2f}"
            f"/{b.other_cpu_cores:.2f}]"
        )
    pooled = (sum(a.server_cpu_ms for a, _ in pairs) / sum(a.requests for a, _ in pairs)) / (
        sum(b.server_cpu_ms for _, b in pairs) / sum(b.requests for _, b in pairs)
    )
    verdict = "ok" if trimmed <= bound else "REGRESSION"
    print(
        f"  ratio {trimmed:.2f} (mean without the extremes; rounds {min(ratios):.2f}-"
        f"{max(ratios):.2f}, median {statistics.median(ratios):.2f}, all rounds pooled"
        f" {pooled:.2f}), bound {bound:.2f}: {verdict}"
    )
    return trimmed


def test_cpu_per_op_stays_within_a_factor_of_the_bare_aiohttp_server(
    wrk: str, servers: dict[str, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _load_args(wrk)
    ours = servers["httpcoord"]
    reads = _rounds(ours, servers["bare"], "get", args)
    writes = _rounds(ours, servers["bare-fsync"], "put", args)
    with capsys.disabled():  # the figures belong in the CI log, pass or fail
        read_ratio = _report("get", "bare", reads, READ_CPU_VS_BARE_MAX)
        write_ratio = _report("put", "bare-fsync", writes, WRITE_CPU_VS_BARE_FSYNC_MAX)
    assert read_ratio <= READ_CPU_VS_BARE_MAX, (
        f"httpcoord's CPU per read is {read_ratio:.2f}x the bare server's "
        f"(bound {READ_CPU_VS_BARE_MAX})"
    )
    assert write_ratio <= WRITE_CPU_VS_BARE_FSYNC_MAX, (
        f"httpcoord's CPU per write is {write_ratio:.2f}x the fsyncing bare server's "
        f"(bound {WRITE_CPU_VS_BARE_FSYNC_MAX})"
    )
