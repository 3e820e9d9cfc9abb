#!/usr/bin/env python3
"""What httpcoord.client adds to a request: the async client beside plain
aiohttp, against one node, in one run.

    python benchmarks/bench_client.py --duration 5 --tasks 16

It starts one node in a temporary data dir, preloads ``--keys`` nodes, then
for each workload (``get``: reads of random keys; ``set``: upserts of random
keys) runs ``--tasks`` concurrent tasks for ``--duration`` seconds, first
through plain ``aiohttp.ClientSession`` requests (the same URL, headers and
body the client sends), then through ``httpcoord.client.Client``,
alternating ``--rounds`` times. It reports requests/s and the load
process's own CPU per request (the client's cost; the server is another
process), and the ratios client/plain. Results go to
benchmarks/results/client-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, RESULTS_DIR, filesystem_type, httpcoord_server, save_results

from httpcoord.client import Client

Op = Callable[[int], Awaitable[None]]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(op: Op, tasks: int, duration_s: float, keys: int) -> tuple[float, float]:
    """(requests/s, CPU-µs of this process per request)."""
    done = 0
    stop_at = time.monotonic() + duration_s

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            await op(rng.randrange(keys))
            done += 1

    cpu0, t0 = cpu_s(), time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed, cpu = time.monotonic() - t0, cpu_s() - cpu0
    return done / elapsed, cpu / max(done, 1) * 1e6


async def run(args: argparse.Namespace, port: int) -> dict[str, object]:
    base = f"http://{HOST}:{port}"
    value = b"v" * args.value_bytes
    results: dict[str, dict[str, list[float]]] = {}
    async with aiohttp.ClientSession() as plain, Client(base) as client:
        await client.create("/bench", b"")
        for k in range(args.keys):
            await client.set(f"/bench/k{k:05d}", value)

        async def plain_get(k: int) -> None:
            async with plain.get(f"{base}/v1/nodes/bench/k{k:05d}") as resp:
                assert resp.status == 200
                await resp.read()

        async def plain_set(k: int) -> None:
            async with plain.put(f"{base}/v1/nodes/bench/k{k:05d}", data=value) as resp:
                assert resp.status < 300
                await resp.read()

        async def client_get(k: int) -> None:
            await client.get(f"/bench/k{k:05d}")

        async def client_set(k: int) -> None:
            await client.set(f"/bench/k{k:05d}", value)

        ops: dict[str, dict[str, Op]] = {
            "get": {"plain": plain_get, "client": client_get},
            "set": {"plain": plain_set, "client": client_set},
        }
        for workload in args.workloads:
            figures = results.setdefault(workload, {})
            for round_no in range(args.rounds):
                for who, op in ops[workload].items():
                    rate, cpu_us = await drive(op, args.tasks, args.duration, args.keys)
                    figures.setdefault(f"{who} req/s", []).append(rate)
                    figures.setdefault(f"{who} cpu_us", []).append(cpu_us)
                    print(
                        f"# {workload} round {round_no + 1} {who:6}: {rate:8.0f} req/s,"
                        f" {cpu_us:6.0f} µs of load-process CPU per request",
                        flush=True,
                    )
    table: dict[str, object] = {}
    for workload, figures in results.items():
        med = {name: statistics.median(values) for name, values in figures.items()}
        table[workload] = {
            **med,
            "rate ratio client/plain": med["client req/s"] / med["plain req/s"],
            "cpu ratio client/plain": med["client cpu_us"] / med["plain cpu_us"],
        }
    return {"table": table, "runs": results}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    p.add_argument("--tasks", type=int, default=16, help="concurrent requests")
    p.add_argument("--rounds", type=int, default=3, help="plain/client alternations")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-bytes", type=int, default=32)
    p.add_argument("--workloads", type=lambda s: s.split(","), default=["get", "set"])
    args = p.parse_args()
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        server = httpcoord_server(Path(tmp))
        server.start()
        try:
            server.wait_ready(30)
            out = asyncio.run(run(args, server.port))
        finally:
            server.stop()
    print()
    for workload, row in out["table"].items():  # type: ignore[attr-defined]
        print(
            f"{workload}: plain {row['plain req/s']:.0f} req/s ({row['plain cpu_us']:.0f} µs CPU),"
            f" client {row['client req/s']:.0f} req/s ({row['client cpu_us']:.0f} µs CPU):"
            f" rate ratio {row['rate ratio client/plain']:.2f},"
            f" CPU ratio {row['cpu ratio client/plain']:.2f}"
        )
    save_results(
        RESULTS_DIR,
        "client",
        started,
        filesystem_type(Path(tempfile.gettempdir())),
        {},
        vars(args),
        **out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
