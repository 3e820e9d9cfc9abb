#!/usr/bin/env python3
"""Watch cost: fan-out latency to N SSE watchers, and write throughput with
N idle watchers on other paths.

Starts one httpcoord node on a free 127.0.0.1 port in a temporary data dir
and runs two scenarios:

  fanout      N SSE watchers (GET /v1/watch/fan, Accept: text/event-stream)
              all on one node; K PUTs to /fan, one at a time, each after every
              watcher got the previous one. Per (watcher, write): the time from
              the PUT being sent to the watcher reading the frame whose ``id:``
              is that write's zxid (and, separately, from the PUT's response).
              Run for every N of --fanout-watchers (default 1,000 and 10,000).
  isolation   wrk PUT load (64 connections, 32-byte values, 10 s) on keys that
              nobody watches: first with no watcher, then with N SSE watchers
              each on its own path (/w/k00000 ...), never written. Reports
              req/s and server CPU-ms per 1,000 requests of both, and the ratio.

The watchers live in --client-procs child processes (raw asyncio streams,
uvloop when installed) that parse only the status line and the ``id:`` lines.
Their CPU is measured too, to tell whether the client limited the result.
Receipt times come from CLOCK_MONOTONIC, shared by all processes of the machine.

    python benchmarks/bench_watch.py
    python benchmarks/bench_watch.py --scenarios fanout --fanout-watchers 10000 --client-procs 1,2

Needs wrk for the isolation scenario (apt-get install -y wrk). Exits 2 when it
is missing, 1 when a watcher missed an event, lost its stream or a request
failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    Server,
    filesystem_type,
    http_request,
    httpcoord_server,
    machine_ticks,
    percentile,
    process_cpu_ticks,
    prometheus_values,
    raise_nofile,
    save_results,
    stop_process,
)

FAN_PATH = "/fan"
DISTINCT_FMT = "/w/k{:05d}"
WATCHERS_METRIC = "httpcoord_watchers"
SCENARIOS = ("fanout", "isolation")


# ---- the watch client: a child process holding its share of the SSE streams -------------

ID_LINE = re.compile(rb"\nid: (\d+)\n")


class Watch(asyncio.Protocol):
    """One SSE stream. Parses the status line, then only ``id:`` lines (SSE
    frames arrive inside HTTP chunks; an ``id:`` line is never split by a chunk
    header because the server writes whole frames per chunk, and a split
    between two reads is handled by keeping the bytes after the last newline)."""

    __slots__ = ("client", "head", "ok", "request", "tail", "transport")

    def __init__(self, client: WatchClient, request: bytes) -> None:
        self.client = client
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.ok = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.client.on_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.ok:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(self.head[9:12])
            if status != 200:
                self.client.on_refused(self, status, self.head[:300])
                return
            self.ok = True
            data, self.head = self.head[end + 4 :], b""
            self.client.on_ready(self)
        buf = self.tail + data if self.tail else data
        if b"id: " in buf:
            on_id = self.client.on_id
            for m in ID_LINE.finditer(buf):
                on_id(int(m.group(1)), now)
        if b"event: overflow" in buf:
            self.client.overflows += 1
        i = buf.rfind(b"\n")
        self.tail = buf[i:] if i >= 0 else buf[-200:]


class WatchClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.count = args.count
        self.conns: list[Watch] = []
        self.receipts: dict[int, list[float]] = {}
        self.ready = 0
        self.lost = 0
        self.overflows = 0
        self.refused: list[str] = []
        self.stopping = False
        self.all_ready: asyncio.Future[None] | None = None

    def say(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_ready(self, _w: Watch) -> None:
        self.ready += 1
        if self.ready == self.count and self.all_ready and not self.all_ready.done():
            self.all_ready.set_result(None)

    def on_refused(self, w: Watch, status: int, head: bytes) -> None:
        self.refused.append(f"{status} {head!r}")
        if w.transport is not None:
            w.transport.close()
        if self.all_ready and not self.all_ready.done():
            self.all_ready.set_exception(RuntimeError(f"watch refused: {status} {head!r}"))

    def on_lost(self, w: Watch, exc: BaseException | None) -> None:
        if self.stopping:
            return
        self.lost += 1
        self.say(f"LOST {self.lost} {exc!r}")
        if self.all_ready and not self.all_ready.done():
            self.all_ready.set_exception(RuntimeError(f"stream closed while opening: {exc!r}"))

    def on_id(self, zxid: int, now: float) -> None:
        times = self.receipts.get(zxid)
        if times is None:
            times = self.receipts[zxid] = []
        times.append(now)
        if len(times) == self.count:
            self.say(f"GOT {zxid}")

    async def run(self) -> int:
        a = self.args
        loop = asyncio.get_running_loop()
        self.all_ready = loop.create_future()
        deadline = time.monotonic() + a.open_timeout
        paths = [a.path if a.path else DISTINCT_FMT.format(a.first + i) for i in range(a.count)]
        requests = [
            (
                f"GET /v1/watch{p} HTTP/1.1\r\nHost: {HOST}:{a.port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            for p in paths
        ]
        next_i = 0

        async def opener() -> None:
            nonlocal next_i
            while next_i < len(requests):
                req = requests[next_i]
                next_i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"opening {a.count} watches took over {a.open_timeout}s")
                _, w = await asyncio.wait_for(
                    loop.create_connection(lambda r=req: Watch(self, r), HOST, a.port), left
                )
                self.conns.append(w)

        stop = asyncio.Event()

        def read_stdin() -> None:  # the parent's commands: one line, STOP
            for line in sys.stdin:
                if line.strip() == "STOP":
                    break
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=read_stdin, daemon=True).start()
        try:
            t0 = time.monotonic()
            await asyncio.gather(*(opener() for _ in range(min(a.concurrency, a.count))))
            await asyncio.wait_for(self.all_ready, max(0.1, deadline - time.monotonic()))
            self.say(f"READY {self.ready} {time.monotonic() - t0:.2f}")
            await asyncio.wait_for(stop.wait(), a.max_life)
        except Exception as exc:  # noqa: BLE001 (reported to the parent, which fails the run)
            self.say(f"ERROR {exc!r}")
            return 1
        finally:
            self.stopping = True
            for w in self.conns:
                if w.transport is not None:
                    w.transport.close()
            out = {
                "count": self.count,
                "ready": self.ready,
                "lost": self.lost,
                "overflows": self.overflows,
                "refused": self.refused[:10],
                "receipts": {str(z): t for z, t in self.receipts.items()},
            }
            Path(a.out).write_text(json.dumps(out))
            self.say("DONE")
        return 0


def client_main(args: argparse.Namespace) -> int:
    raise_nofile(args.count + 64)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(WatchClient(args).run())


# ---- the parent's side of a client process -----------------------------------------------


class ClientProc:
    """A watch client child process: started, read line by line (a thread
    feeds a queue, so every wait has a deadline) and stopped by its PID."""

    def __init__(
        self,
        port: int,
        count: int,
        first: int,
        path: str | None,
        out: Path,
        args: argparse.Namespace,
    ) -> None:
        self.count = count
        self.out = out
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--client",
            "--port",
            str(port),
            "--count",
            str(count),
            "--first",
            str(first),
            "--out",
            str(out),
            "--concurrency",
            str(args.open_concurrency),
            "--open-timeout",
            str(args.open_timeout),
            "--max-life",
            str(args.client_max_life),
        ]
        if path:
            argv += ["--path", path]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.lost = 0
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, deadline: float) -> str:
        """The next line starting with ``prefix``; LOST lines are counted, an
        ERROR line, the end of output or the deadline raise."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"watch client {self.pid}: no {prefix!r} line in time")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"watch client {self.pid} exited ({self.proc.poll()})")
            if line.startswith("LOST"):
                self.lost += 1
                print(f"# watch client {self.pid}: {line}", file=sys.stderr, flush=True)
                continue
            if line.startswith("ERROR"):
                raise RuntimeError(f"watch client {self.pid}: {line}")
            if line == prefix or line.startswith(prefix + " "):
                return line

    def cpu_ticks(self) -> int:
        return process_cpu_ticks(self.pid)

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        """Ask the client to close its streams and write its receipts."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("STOP\n")
            self.proc.stdin.flush()
        self.expect("DONE", time.monotonic() + timeout)
        self.proc.wait(timeout=timeout)
        return json.loads(self.out.read_text())

    def kill(self, timeout: float = 5.0) -> None:
        """SIGTERM this client (by the PID it was started with), SIGKILL after ``timeout``."""
        stop_process(self.proc, timeout)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def watchers_gauge(port: int) -> int:
    return int(prometheus_values(port, (WATCHERS_METRIC,))[WATCHERS_METRIC])


def wait_watchers(port: int, n: int, timeout: float) -> float:
    """Wait until the server's watcher gauge reads ``n``; return the wait in s."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = watchers_gauge(port)
        if seen == n:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise TimeoutError(f"{WATCHERS_METRIC} is {seen}, expected {n} after {timeout}s")


def open_watchers(
    server: Server,
    n: int,
    procs: int,
    distinct: bool,
    workdir: Path,
    tag: str,
    args: argparse.Namespace,
) -> tuple[list[ClientProc], float]:
    clients: list[ClientProc] = []
    t0 = time.monotonic()
    first = 0
    for i in range(procs):
        count = n // procs + (1 if i < n % procs else 0)
        if count == 0:
            continue
        clients.append(
            ClientProc(
                server.port,
                count,
                first,
                None if distinct else FAN_PATH,
                workdir / f"client-{tag}-{i}.json",
                args,
            )
        )
        first += count
    try:
        deadline = time.monotonic() + args.open_timeout + 10
        for c in clients:
            c.expect("READY", deadline)
        wait_watchers(server.port, n, timeout=30)
    except BaseException:
        for c in clients:
            c.kill()
        raise
    return clients, time.monotonic() - t0


def close_watchers(server: Server, clients: list[ClientProc]) -> list[dict[str, Any]]:
    try:
        results = [c.finish() for c in clients]
    finally:
        for c in clients:
            c.kill()
    wait_watchers(server.port, 0, timeout=30)
    return results


# ---- machine load ------------------------------------------------------------------------


class Sampler:
    """CPU ticks of the server, the clients and the whole machine between two points."""

    def __init__(self, server: Server, clients: list[ClientProc]) -> None:
        self.server, self.clients = server, clients
        self.t0 = time.monotonic()
        self.s0 = process_cpu_ticks(server.pid)
        self.c0 = [c.cpu_ticks() for c in clients]
        self.m0 = machine_ticks()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        s1 = process_cpu_ticks(self.server.pid)
        c1 = [c.cpu_ticks() for c in self.clients]
        busy1, total1 = machine_ticks()
        server_s = (s1 - self.s0) / CLK_TCK
        client_s = [(b - a) / CLK_TCK for a, b in zip(self.c0, c1, strict=True)]
        wall_ticks = (total1 - self.m0[1]) / (os.cpu_count() or 1)
        machine = (busy1 - self.m0[0]) / wall_ticks if wall_ticks > 0 else 0.0
        other = machine - (server_s + sum(client_s)) / wall if wall > 0 else 0.0
        return {
            "wall_s": wall,
            "server_cpu_s": server_s,
            "client_cpu_s": client_s,
            "machine_busy_cores": machine,
            "other_cores": max(0.0, other),
        }


def machine_busy(seconds: float) -> float:
    busy0, total0 = machine_ticks()
    time.sleep(seconds)
    busy1, total1 = machine_ticks()
    wall_ticks = (total1 - total0) / (os.cpu_count() or 1)
    return (busy1 - busy0) / wall_ticks if wall_ticks > 0 else 0.0


# ---- scenario (a): fan-out -------------------------------------------------------------------


def put_fan(port: int, k: int, conn: Any) -> tuple[int, float, float]:
    """One PUT of /fan; (zxid, monotonic time sent, monotonic time answered)."""
    t_send = time.monotonic()
    status, body = http_request(
        port, "PUT", "/v1/nodes" + FAN_PATH, f"v{k:06d}".encode(), conn=conn
    )
    t_resp = time.monotonic()
    if status not in (200, 201):
        raise RuntimeError(f"PUT {FAN_PATH}: {status} {body[:200]!r}")
    return int(json.loads(body)["zxid"]), t_send, t_resp


def fanout(
    server: Server, n: int, procs: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    import http.client

    clients, open_s = open_watchers(server, n, procs, False, workdir, f"fan{n}x{procs}", args)
    writes: list[tuple[int, float, float, float]] = []  # zxid, sent, answered, all reported
    try:
        time.sleep(args.settle)
        idle = Sampler(server, clients)
        time.sleep(args.idle_sample)
        idle_r = idle.stop()
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            sampler = Sampler(server, clients)
            for k in range(args.writes):
                zxid, t_send, t_resp = put_fan(server.port, k, conn)
                deadline = t_send + args.write_timeout
                for c in clients:
                    c.expect(f"GOT {zxid}", deadline)
                writes.append((zxid, t_send, t_resp, time.monotonic()))
                time.sleep(args.gap)
            # The gaps are idle time: take them out of the fan-out CPU below.
            window = sampler.stop()
        finally:
            conn.close()
    except BaseException:
        for c in clients:
            c.kill()
        raise
    results = close_watchers(server, clients)

    from_send: list[float] = []
    from_resp: list[float] = []
    per_write_max: list[float] = []
    missing = 0
    for zxid, t_send, t_resp, _ in writes:
        times = [t for r in results for t in r["receipts"].get(str(zxid), [])]
        missing += n - len(times)
        from_send.extend(t - t_send for t in times)
        from_resp.extend(t - t_resp for t in times)
        if times:
            per_write_max.append(max(times) - t_send)
    from_send.sort()
    from_resp.sort()
    k = len(writes)
    idle_server_cores = idle_r["server_cpu_s"] / idle_r["wall_s"]
    idle_client_cores = [c / idle_r["wall_s"] for c in idle_r["client_cpu_s"]]
    active_s = window["wall_s"] - args.gap * k  # writes + deliveries, without the gaps
    server_net = window["server_cpu_s"] - idle_server_cores * window["wall_s"]
    client_net = [
        c - ic * window["wall_s"]
        for c, ic in zip(window["client_cpu_s"], idle_client_cores, strict=True)
    ]

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return {
        "watchers": n,
        "client_procs": len(clients),
        "writes": k,
        "open_s": open_s,
        "pairs": len(from_send),
        "missing": missing,
        "lost": sum(r["lost"] for r in results) + sum(c.lost for c in clients),
        "overflows": sum(r["overflows"] for r in results),
        "from_send_ms": {
            "p50": ms(from_send, 50),
            "p99": ms(from_send, 99),
            "max": ms(from_send, 100),
            "min": ms(from_send, 0),
        },
        "from_response_ms": {
            "p50": ms(from_resp, 50),
            "p99": ms(from_resp, 99),
            "max": ms(from_resp, 100),
            "min": ms(from_resp, 0),
        },
        "put_ms": {"median": statistics.median((w[2] - w[1]) * 1000 for w in writes)},
        "last_watcher_ms": {
            "median": statistics.median(per_write_max) * 1000,
            "max": max(per_write_max) * 1000,
        },
        "server_cpu_ms_per_write": server_net * 1000 / k,
        "server_cpu_raw_ms_per_write": window["server_cpu_s"] * 1000 / k,
        "server_idle_cores": idle_server_cores,
        "client_cpu_ms_per_write": [c * 1000 / k for c in client_net],
        "client_idle_cores": idle_client_cores,
        # Share of the active time (writes and deliveries, gaps excluded) that
        # each client process spent on CPU: near 1 means the client limited it.
        "client_busy_share": [c / active_s if active_s > 0 else None for c in client_net],
        "window": window,
        "idle": idle_r,
        "per_write": [
            {"zxid": z, "put_ms": (r - s) * 1000, "reported_ms": (a - s) * 1000}
            for z, s, r, a in writes
        ],
    }


# ---- scenario (b): throughput isolation ------------------------------------------------------


def isolation(
    server: Server, n: int, procs: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from bench_single_node import measure

    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for watched in (False, True):
            clients: list[ClientProc] = []
            if watched:
                clients, _ = open_watchers(server, n, procs, True, workdir, f"iso{rep}", args)
            try:
                time.sleep(args.settle)
                sampler = Sampler(server, clients)
                ph = measure(server, "put", rep, args)
                window = sampler.stop()
            except BaseException:
                for c in clients:
                    c.kill()
                raise
            results = close_watchers(server, clients) if clients else []
            run = {
                "watchers": n if watched else 0,
                "rep": rep,
                "req_per_s": ph.req_per_s,
                "p50_ms": ph.p50_ms,
                "p99_ms": ph.p99_ms,
                "cpu_ms_per_1k": ph.cpu_ms_per_1k,
                "failures": ph.failures,
                "failure_detail": ph.failure_detail,
                "writes_per_fsync": ph.writes_per_fsync,
                "snapshots": ph.snapshots,
                "wrk_cpu_cores": ph.wrk_cpu_ms / 1000 / ph.duration_s if ph.duration_s else 0,
                "machine_busy_cores": ph.machine_busy_cores,
                "client_cpu_cores": [c / window["wall_s"] for c in window["client_cpu_s"]],
                "lost": sum(r["lost"] for r in results) + sum(c.lost for c in clients),
                "events_received": sum(len(t) for r in results for t in r["receipts"].values()),
            }
            runs.append(run)
            print(
                f"# isolation run {rep + 1} watchers {run['watchers']:6d}: "
                f"{run['req_per_s']:7.0f} req/s p50 {run['p50_ms']:6.2f} p99 "
                f"{run['p99_ms']:7.2f} ms cpu {run['cpu_ms_per_1k']:6.1f} ms/1k "
                f"fail {run['failures']} [machine busy {run['machine_busy_cores']:.2f}, wrk "
                f"{run['wrk_cpu_cores']:.2f}, clients "
                f"{sum(run['client_cpu_cores']):.2f} cores]",
                flush=True,
            )

    def med(watched: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if (r["watchers"] > 0) == watched)

    none_rps, with_rps = med(False, "req_per_s"), med(True, "req_per_s")
    none_cpu, with_cpu = med(False, "cpu_ms_per_1k"), med(True, "cpu_ms_per_1k")
    return {
        "watchers": n,
        "none": {"req_per_s": none_rps, "cpu_ms_per_1k": none_cpu, "p99_ms": med(False, "p99_ms")},
        "watched": {
            "req_per_s": with_rps,
            "cpu_ms_per_1k": with_cpu,
            "p99_ms": med(True, "p99_ms"),
        },
        "ratio_req_per_s": with_rps / none_rps if none_rps else None,
        "ratio_cpu_per_op": with_cpu / none_cpu if none_cpu else None,
        "runs": runs,
    }


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma list of fanout,isolation"
    )
    p.add_argument(
        "--fanout-watchers", default="1000,10000", help="comma list of N for the fan-out scenario"
    )
    p.add_argument(
        "--isolation-watchers",
        type=int,
        default=10000,
        help="distinct-path watchers in the isolation scenario",
    )
    p.add_argument(
        "--client-procs",
        default="2",
        help="watch client processes; a comma list runs every fan-out N with each",
    )
    p.add_argument("--writes", type=int, default=20, help="PUTs per fan-out run")
    p.add_argument(
        "--gap",
        type=float,
        default=0.3,
        help="seconds between one write fully delivered and the next",
    )
    p.add_argument(
        "--write-timeout",
        type=float,
        default=30.0,
        help="seconds for one write to reach every watcher",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the watchers being open and the measurement",
    )
    p.add_argument(
        "--idle-sample",
        type=float,
        default=3.0,
        help="seconds of CPU sampling with the watchers open and no write",
    )
    p.add_argument(
        "--open-concurrency", type=int, default=100, help="connects in flight per client process"
    )
    p.add_argument(
        "--open-timeout",
        type=float,
        default=120.0,
        help="seconds for a client process to open its watches",
    )
    p.add_argument(
        "--client-max-life",
        type=float,
        default=1800.0,
        help="a watch client exits after this many seconds whatever happens",
    )
    p.add_argument(
        "--max-watchers-per-client",
        type=int,
        default=25000,
        help="passed to the server (all watchers come from 127.0.0.1)",
    )
    p.add_argument(
        "--sse-keepalive-ms",
        type=int,
        default=None,
        help="passed to the server (default: the server's)",
    )
    # the wrk phase, as in bench_single_node.py
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk seconds before each")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--keys", type=int, default=1000, help="written keys (/bench/kNNNNN)")
    p.add_argument("--value-bytes", type=int, default=32)
    p.add_argument("--request-timeout", type=float, default=5.0, help="wrk's request timeout, s")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="isolation: (none, watched) pairs; the table shows medians",
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary data dir (a real disk, not tmpfs)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-data", action="store_true", help="leave the temp dir (logs, data)")
    # internal: the watch client child process
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--max-life", type=float, default=1800.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        return args
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.fanout_watchers = [int(x) for x in args.fanout_watchers.split(",") if x]
    args.client_procs = [int(x) for x in args.client_procs.split(",") if x]
    if not set(args.scenarios) <= set(SCENARIOS):
        p.error(f"--scenarios from {SCENARIOS}")
    if (
        min(args.fanout_watchers, default=1) < 1
        or not args.client_procs
        or min(args.client_procs) < 1
        or args.writes < 1
        or args.repeat < 1
        or not 0 < args.duration <= 3600
        or args.write_timeout <= 0
    ):
        p.error("need watchers, --client-procs, --writes, --repeat >= 1 and 0 < --duration <= 3600")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the processes


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def render(fan: list[dict[str, Any]], iso: dict[str, Any] | None) -> str:
    lines: list[str] = []
    if fan:
        lines += [
            (
                "fan-out: one PUT /fan, every watcher on /fan; latency per (watcher, write) from the "
                "PUT sent"
            ),
            (
                f"{'watchers':>8} {'procs':>5} {'pairs':>7} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'max ms':>8} {'p99 resp':>8} {'PUT ms':>7} {'srv CPU':>8} {'cli CPU':>8} "
                f"{'cli busy':>8} {'missing':>7}"
            ),
        ]
        for r in fan:
            lines.append(
                f"{r['watchers']:>8} {r['client_procs']:>5} {r['pairs']:>7} "
                f"{r['from_send_ms']['p50']:>8.1f} {r['from_send_ms']['p99']:>8.1f} "
                f"{r['from_send_ms']['max']:>8.1f} {r['from_response_ms']['p99']:>8.1f} "
                f"{r['put_ms']['median']:>7.1f} {r['server_cpu_ms_per_write']:>8.1f} "
                f"{sum(r['client_cpu_ms_per_write']):>8.1f} "
                f"{max(x or 0 for x in r['client_busy_share']):>8.2f} {r['missing']:>7}"
            )
        lines.append(
            "  p99 resp: from the PUT's response; srv/cli CPU: ms per write, idle "
            "baseline taken out (clients summed); cli busy: the busiest client "
            "process's CPU share of the active time"
        )
    if iso:
        lines += [
            "",
            (
                f"isolation: wrk PUT -c64 on unwatched keys; watchers each on its own path "
                f"(medians of {len(iso['runs']) // 2} pair(s))"
            ),
            f"{'watchers':>8} {'req/s':>8} {'p99 ms':>8} {'CPU-ms/1k':>10}",
            (
                f"{0:>8} {iso['none']['req_per_s']:>8.0f} {iso['none']['p99_ms']:>8.2f} "
                f"{iso['none']['cpu_ms_per_1k']:>10.1f}"
            ),
            (
                f"{iso['watchers']:>8} {iso['watched']['req_per_s']:>8.0f} "
                f"{iso['watched']['p99_ms']:>8.2f} {iso['watched']['cpu_ms_per_1k']:>10.1f}"
            ),
            (
                f"ratio req/s {fmt(iso['ratio_req_per_s'], '.3f')}, CPU per op "
                f"{fmt(iso['ratio_cpu_per_op'], '.3f')} (target: req/s ratio >= 0.8)"
            ),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args.wrk = shutil.which("wrk")
    if "isolation" in args.scenarios and args.wrk is None:
        print("missing: wrk. Install with:\n  apt-get install -y wrk", file=sys.stderr)
        return 2
    most = max([*args.fanout_watchers, args.isolation_watchers])
    soft, hard = raise_nofile(most + 1000)
    if soft < most + 200:
        print(
            f"open files limit {soft} (hard {hard}) is too low for {most} watchers", file=sys.stderr
        )
        return 2

    busy_before = machine_busy(2.0)
    print(f"# machine busy before start: {busy_before:.2f} of {os.cpu_count()} cores", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="httpcoord-watch-bench-", dir=args.tmp_dir))
    fstype = filesystem_type(workdir)
    if fstype in ("tmpfs", "ramfs"):
        print(f"warning: the data dir is on {fstype}; fsync is free there", file=sys.stderr)
    server = httpcoord_server(workdir)
    server.argv += ["--max-watchers-per-client", str(args.max_watchers_per_client)]
    if args.sse_keepalive_ms is not None:
        server.argv += ["--sse-keepalive-ms", str(args.sse_keepalive_ms)]
    started = dt.datetime.now(dt.UTC)
    fan: list[dict[str, Any]] = []
    iso: dict[str, Any] | None = None
    try:
        server.start()
        server.wait_ready(timeout=30)
        print(
            f"# httpcoord pid {server.pid}, port {server.port}, data on {fstype}, "
            f"open files {soft}",
            flush=True,
        )
        status, body = http_request(server.port, "PUT", "/v1/nodes" + FAN_PATH, b"v")
        if status not in (200, 201):
            raise RuntimeError(f"create {FAN_PATH}: {status} {body[:200]!r}")
        if "fanout" in args.scenarios:
            for n in args.fanout_watchers:
                for procs in args.client_procs:
                    r = fanout(server, n, procs, workdir, args)
                    fan.append(r)
                    print(
                        f"# fan-out {n} watchers, {r['client_procs']} client procs "
                        f"(opened in {r['open_s']:.1f}s): p50 {r['from_send_ms']['p50']:.1f} "
                        f"p99 {r['from_send_ms']['p99']:.1f} max {r['from_send_ms']['max']:.1f}"
                        f" ms; server {r['server_cpu_ms_per_write']:.1f} CPU-ms/write, "
                        f"clients {', '.join(f'{x:.1f}' for x in r['client_cpu_ms_per_write'])}"
                        f" CPU-ms/write; missing {r['missing']}, lost {r['lost']} "
                        f"[machine busy {r['window']['machine_busy_cores']:.2f}, other "
                        f"{r['window']['other_cores']:.2f} cores]",
                        flush=True,
                    )
        if "isolation" in args.scenarios:
            from bench_single_node import preload

            preload(server, args.keys, args.value_bytes, timeout=120)
            iso = isolation(server, args.isolation_watchers, max(args.client_procs), workdir, args)
    finally:
        server.stop()
        if args.keep_data:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    busy_after = machine_busy(2.0)

    print()
    print(render(fan, iso))
    print(
        f"machine busy: {busy_before:.2f} cores before the run, {busy_after:.2f} after "
        f"(of {os.cpu_count()})"
    )
    save_results(
        args.results_dir,
        "watch",
        started,
        fstype,
        {"busy_cores_before": busy_before, "busy_cores_after": busy_after},
        {
            k: getattr(args, k)
            for k in (
                "scenarios",
                "fanout_watchers",
                "isolation_watchers",
                "client_procs",
                "writes",
                "gap",
                "duration",
                "warmup",
                "connections",
                "threads",
                "keys",
                "value_bytes",
                "repeat",
                "max_watchers_per_client",
                "sse_keepalive_ms",
            )
        },
        fanout=fan,
        isolation=iso,
    )
    bad = sum(r["missing"] + r["lost"] + r["overflows"] for r in fan)
    if iso:
        bad += sum(r["failures"] + r["lost"] for r in iso["runs"])
    if bad:
        print(
            f"FAILURES: {bad} (missed events, lost streams or failed requests; see the JSON)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
