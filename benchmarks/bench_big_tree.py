#!/usr/bin/env python3
"""Big trees: one httpcoord node holding 1,000,000 znodes (issue 14, item 4).

Builds a tree of ``--znodes`` znodes (``/bt/pNNNN/cNNNN``: parents of
``--children`` children each, ``--value-bytes`` of data each) in one node
through ``POST /v1/multi`` batches on several connections, then measures:

  1. restart to serving: SIGTERM (and, separately, SIGKILL) the node and
     start it again on its data dir; the time until ``GET /ready`` answers
     200 and a read of a known znode returns its data. Twice from the log
     alone (the tree built, no snapshot yet), twice from a snapshot plus a
     short log tail. The split (Python and imports, SQLite open, snapshot
     load, log replay, the rest) comes from the instrumented server below.
  2. snapshot stall: the node is restarted with ``--snapshot-entries`` set so
     that it snapshots the whole tree by itself after ``--snapshot-after-writes``
     more log entries, while a paced load of reads and writes runs; the worst
     request latency during the snapshot window (from the start of the
     tree's serialisation to the end of the background write).
  3. RSS per znode: the node's VmRSS with the tree minus the empty node's,
     per znode; the same for a standalone ZooKeeper (Debian's package)
     holding the same tree, built by a small Java program compiled at run
     time against ZooKeeper's client jar.
  4. GC pauses: every collection of Python's cyclic garbage collector in the
     server, timed by ``gc.callbacks`` (the instrumented server), and the
     request latency outliers of a steady load with no snapshot.

The node runs under a thin wrapper (``_server`` mode of this script): it
installs ``gc.callbacks`` and wraps a few of the node's startup and snapshot
steps with timers, writing one JSON line per event (CLOCK_MONOTONIC
nanoseconds, shared with the load client) to a file, then calls httpcoord's
own ``serve``. It changes no behaviour. The build and the load run in a child
process (``_client`` mode): raw HTTP/1.1 on asyncio transports (uvloop),
pre-built requests, one request in flight per connection, its own garbage
collector off so that its pauses are not counted as the server's.

    python benchmarks/bench_big_tree.py --znodes 100000
    python benchmarks/bench_big_tree.py                      # 1,000,000 znodes

On this shared machine every run goes under the benchmark lock:
``flock <lock file> python benchmarks/bench_big_tree.py``. The table goes to
stdout, everything to benchmarks/results/big_tree-<UTC time>.json. Every
process started is stopped by its PID (SIGTERM, then SIGKILL), also on
errors and Ctrl-C. Exits 1 when a request failed or a step did not finish in
its time bound, 0 otherwise (missed targets are reported, not failures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    filesystem_type,
    free_port,
    http_request,
    percentile,
    process_cpu_ticks,
    save_results,
    stop_process,
    take_response,
)
from _zookeeper import ZK_CFG, ZK_JAR, ZK_LOG_JAR, ZK_NOP_JAR, four_letter_word

HERE = Path(__file__).resolve().parent
EVENT_LINES_MAX = 1_000_000  # the instrumented server stops logging beyond this
NEVER_SNAPSHOT = 1_000_000_000  # --snapshot-entries that no run reaches

# Targets of issue 14, item 4.
RESTART_TARGET_S = 10.0
SNAPSHOT_STALL_TARGET_MS = 50.0
GC_PAUSE_TARGET_MS = 20.0


def now_ns() -> int:
    return time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process here


def ms(ns: float) -> float:
    return ns / 1e6


# =============================================================================================
# The instrumented server: ``bench_big_tree.py _server EVENTS_FILE serve ...``
# =============================================================================================


def instrumented_server(events_path: str, serve_argv: list[str]) -> int:
    """Run ``httpcoord serve`` with timers around its startup and snapshot
    steps and a ``gc.callbacks`` hook, each event one JSON line."""
    started = now_ns()
    fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    written = [0]

    def emit(ev: str, **fields: Any) -> None:
        if written[0] >= EVENT_LINES_MAX:
            return
        written[0] += 1
        # One write per line, O_APPEND: a SIGKILL loses no completed line.
        os.write(fd, (json.dumps({"ev": ev, **fields}) + "\n").encode())

    emit("start", t=started, pid=os.getpid())
    gc_started = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = now_ns()
            return
        t0 = gc_started[0]
        emit("gc", t=t0, ns=now_ns() - t0, gen=info["generation"], collected=info["collected"])

    gc.callbacks.append(on_gc)

    import httpcoord.cluster.node as node_mod
    from httpcoord import cli
    from httpcoord.cluster.sqlite_storage import SqliteStorage

    emit("imported", t=now_ns())
    node_cls = node_mod.Node

    def timed_async(
        owner: Any, name: str, label: str, extra: Callable[..., dict[str, Any]]
    ) -> None:
        original = getattr(owner, name, None)
        if original is None:
            emit("warning", detail=f"{label}: {name} not found, not timed")
            return

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = now_ns()
            result = await original(*args, **kwargs)
            emit(label, t=t0, ns=now_ns() - t0, **extra(args, result))
            return result

        setattr(owner, name, wrapper)

    def timed_sync(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            emit("warning", detail=f"{label}: {name} not found, not timed")
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = now_ns()
            result = original(*args, **kwargs)
            emit(label, t=t0, ns=now_ns() - t0)
            return result

        setattr(owner, name, wrapper)

    def no_extra(args: tuple[Any, ...], result: Any) -> dict[str, Any]:
        return {}

    def tree_extra(args: tuple[Any, ...], result: Any) -> dict[str, Any]:
        return {"znodes": len(result), "zxid": result.zxid}

    # The module-level and class attributes are looked up at call time, so
    # replacing them times the calls Node.open and Node.apply make.
    sqlite_open = SqliteStorage.open  # a bound classmethod

    async def timed_sqlite_open(*args: Any, **kwargs: Any) -> Any:
        t0 = now_ns()
        storage = await sqlite_open(*args, **kwargs)
        emit("sqlite_open", t=t0, ns=now_ns() - t0, log_entries=storage.last_index())
        return storage

    SqliteStorage.open = timed_sqlite_open  # type: ignore[method-assign]
    timed_async(node_mod, "_tree_at_snapshot", "snapshot_load", tree_extra)
    replay = getattr(node_cls, "_replay", None)
    if replay is not None:

        async def timed_replay(self: Any) -> None:
            t0, before = now_ns(), self.applied_index
            await replay(self)
            emit(
                "replay",
                t=t0,
                ns=now_ns() - t0,
                entries=self.applied_index - before,
                znodes=self.znode_count,
            )

        node_cls._replay = timed_replay  # type: ignore[method-assign]
    node_open = node_cls.open

    async def timed_node_open(*args: Any, **kwargs: Any) -> Any:
        t0 = now_ns()
        node = await node_open(*args, **kwargs)
        emit("node_open", t=t0, ns=now_ns() - t0, znodes=node.znode_count)
        return node

    node_cls.open = timed_node_open  # type: ignore[method-assign]
    timed_async(node_cls, "close", "node_close", no_extra)
    timed_sync(node_cls, "_start_snapshot", "snapshot_serialise")
    timed_async(node_cls, "_write_snapshot", "snapshot_write", no_extra)
    try:
        cli.main(args=serve_argv, prog_name="httpcoord")
    except SystemExit as exc:
        emit("exit", t=now_ns(), code=exc.code if isinstance(exc.code, int) else 1)
        raise
    return 0


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of one server process, up to its exit (the collections
    the interpreter makes while it shuts down pause no request)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
            if out[-1]["ev"] == "exit":
                break
    return out


# =============================================================================================
# The load client: ``bench_big_tree.py _client CONFIG.json`` (build or load)
# =============================================================================================


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight; parses only
    the status line and Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        got = take_response(buf)
        if got is None:
            self.buf = buf
            return
        status, body, self.buf = got
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def build_request(method: str, path: str, port: int, body: bytes = b"", ctype: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {len(body)}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass(frozen=True)
class Shape:
    """The tree: /bt, its parents, their children, one value per znode."""

    parents: int
    children: int
    value_bytes: int

    @property
    def width(self) -> int:
        return max(4, len(str(max(self.parents, self.children) - 1)))

    def parent(self, p: int) -> str:
        return f"/bt/p{p:0{self.width}d}"

    def child(self, p: int, c: int) -> str:
        return f"{self.parent(p)}/c{c:0{self.width}d}"

    def value(self, p: int, c: int) -> str:
        v = f"{p}-{c}-"
        return v + "x" * max(0, self.value_bytes - len(v))

    @property
    def znodes(self) -> int:
        return self.parents * self.children

    def known(self) -> tuple[str, str]:
        """A znode the load never writes (the last parent is left alone)."""
        p, c = self.parents - 1, self.children - 1
        return self.child(p, c), self.value(p, c)


async def open_conns(port: int, count: int, timeout_s: float) -> list[HttpConn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, proto = await asyncio.wait_for(loop.create_connection(HttpConn, HOST, port), timeout_s)
        conns.append(proto)
    return conns


async def client_build(cfg: dict[str, Any]) -> dict[str, Any]:
    """Create /bt, the parents, then the children in multis of ``batch``
    creates, ``connections`` multis in flight."""
    import orjson

    port = cfg["port"]
    shape = Shape(cfg["parents"], cfg["children"], cfg["value_bytes"])
    deadline = time.monotonic() + cfg["deadline_s"]
    conns = await open_conns(port, cfg["connections"], 10.0)
    retries = 0
    latencies = array("q")  # ns, send to last byte, of every multi answered 200

    async def multi(conn: HttpConn, ops: list[dict[str, str]]) -> None:
        nonlocal retries
        body = orjson.dumps({"ops": ops})
        req = build_request("POST", "/v1/multi", port, body, "application/json")
        for _attempt in range(50):  # 429 / 503: the node is busy or electing
            if time.monotonic() > deadline:
                raise TimeoutError("the build took longer than its deadline")
            t_sent = now_ns()
            status, answer = await conn.request(req)
            if status == 200:
                latencies.append(now_ns() - t_sent)
                return
            if status not in (429, 503):
                raise RuntimeError(f"multi answered {status}: {answer[:300]!r}")
            retries += 1
            await asyncio.sleep(0.05)
        raise RuntimeError(f"multi still refused after 50 tries: {status} {answer[:300]!r}")

    t0 = now_ns()
    await multi(conns[0], [{"op": "create", "path": "/bt"}])
    ops_max = cfg["multi_ops_max"]
    for start in range(0, shape.parents, ops_max):
        stop = min(shape.parents, start + ops_max)
        await multi(
            conns[0], [{"op": "create", "path": shape.parent(p)} for p in range(start, stop)]
        )
    batch = cfg["batch"]
    jobs: Iterator[tuple[int, int, int]] = (
        (p, c0, min(shape.children, c0 + batch))
        for p in range(shape.parents)
        for c0 in range(0, shape.children, batch)
    )
    created = 0

    async def worker(conn: HttpConn) -> None:
        nonlocal created
        for p, c0, c1 in jobs:  # one shared generator: each job is taken once
            ops = [
                {"op": "create", "path": shape.child(p, c), "data": shape.value(p, c)}
                for c in range(c0, c1)
            ]
            await multi(conn, ops)
            created += c1 - c0

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    t_end = now_ns()
    lat = sorted(float(x) for x in latencies)
    return {
        "created": created,
        "seconds": (t_end - t0) / 1e9,
        "retries": retries,
        "t0": t0,
        "t_end": t_end,
        "multis": len(lat),
        "multi_p50_ms": ms(percentile(lat, 50)),
        "multi_p99_ms": ms(percentile(lat, 99)),
        "multi_max_ms": ms(lat[-1]) if lat else 0.0,
    }


async def client_load(cfg: dict[str, Any]) -> dict[str, Any]:
    """A paced load: request j goes out at t0 + j / rate on connection
    j mod K (later if that connection is still busy); every ``1/write_share``-th
    request is a PUT of a random child of the writable parents, the rest
    GETs of random children. Runs until SIGTERM or ``duration_max_s``."""
    port = cfg["port"]
    shape = Shape(cfg["parents"], cfg["children"], cfg["value_bytes"])
    rate = cfg["rate"]
    k = cfg["connections"]
    share = cfg["write_share"]
    writable = max(1, shape.parents - 1)
    conns = await open_conns(port, k, 10.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    interval_ns = 1e9 / rate
    jmax = int(cfg["duration_max_s"] * rate)
    t0 = now_ns() + 100_000_000
    sched, sent, done = array("q"), array("q"), array("q")
    kind, status_of = array("b"), array("h")
    errors: list[str] = []
    value = b"y" * shape.value_bytes

    async def worker(i: int) -> None:
        rng = random.Random(cfg["seed"] * 1000 + i)
        conn = conns[i]
        for j in range(i, jmax, k):
            if stop.is_set():
                return
            t_sched = t0 + int(j * interval_ns)
            wait_ns = t_sched - now_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            write = int((j + 1) * share) > int(j * share)
            if write:
                path = shape.child(rng.randrange(writable), rng.randrange(shape.children))
                req = build_request("PUT", "/v1/nodes" + path, port, value, "text/plain")
            else:
                path = shape.child(rng.randrange(shape.parents), rng.randrange(shape.children))
                req = build_request("GET", "/v1/nodes" + path, port)
            t_sent = now_ns()
            try:
                status, _ = await conn.request(req)
            except OSError as exc:
                errors.append(f"{path}: {exc!r}")
                return
            t_done = now_ns()
            sched.append(t_sched - t0)
            sent.append(t_sent - t0)
            done.append(t_done - t0)
            kind.append(1 if write else 0)
            status_of.append(status)

    await asyncio.gather(*(worker(i) for i in range(k)))
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return {
        "t0": t0,
        "sched": sched.tolist(),
        "sent": sent.tolist(),
        "done": done.tolist(),
        "write": kind.tolist(),
        "status": status_of.tolist(),
        "errors": errors[:20],
    }


def client_entry(cfg_path: str) -> int:
    # Every record lives in flat arrays: nothing for a collector to scan, and
    # a pause of the client's own would be counted against the server.
    gc.disable()
    cfg = json.loads(Path(cfg_path).read_text())
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    run = client_build if cfg["mode"] == "build" else client_load
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(cfg))
    Path(cfg["result_path"]).write_text(json.dumps(result))
    return 0


# =============================================================================================
# The orchestrating process
# =============================================================================================


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def metric(port: int, name: str) -> float:
    status, body = http_request(port, "GET", "/metrics", timeout=30.0)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"metric {name} missing")


@dataclass
class NodeProc:
    """The httpcoord node under test: one instrumented server process at a
    time, always on the same port and data dir."""

    workdir: Path
    port: int
    shape: Shape
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    events_path: Path = field(default_factory=Path)
    spawned_ns: int = 0
    log: Any = None

    def start(self, snapshot_entries: int) -> None:
        self.restarts += 1
        self.events_path = self.workdir / f"events-{self.restarts}.jsonl"
        log_path = self.workdir / f"httpcoord-{self.restarts}.log"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_server",
            str(self.events_path),
            "serve",
            "--listen",
            f"{HOST}:{self.port}",
            "--data-dir",
            str(self.workdir / "httpcoord-data"),
            "--snapshot-entries",
            str(snapshot_entries),
            "--log-level",
            "info",
        ]
        self.log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.spawned_ns = now_ns()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    def wait_serving(self, timeout_s: float) -> dict[str, float]:
        """Poll /ready, then read the known znode; times from the spawn."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        path, expected = self.shape.known()
        t_ready = 0
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with {self.proc.returncode}: {self.tail()}")
            try:
                left = max(0.1, deadline - time.monotonic())
                if not t_ready:
                    # The listener is bound before the data dir is opened, so
                    # this request waits in the backlog until the node serves.
                    status, body = http_request(self.port, "GET", "/ready", timeout=left)
                    if status == 200:
                        t_ready = now_ns()
                    else:
                        last = f"/ready {status} {body[:200]!r}"
                        time.sleep(0.01)
                    continue
                status, body = http_request(self.port, "GET", "/v1/nodes" + path, timeout=left)
                if status == 200 and json.loads(body).get("data") == expected:
                    t_read = now_ns()
                    return {
                        "ready_s": (t_ready - self.spawned_ns) / 1e9,
                        "read_s": (t_read - self.spawned_ns) / 1e9,
                    }
                last = f"GET {path} {status} {body[:200]!r}"
                time.sleep(0.01)
            except OSError as exc:
                last = repr(exc)
                time.sleep(0.01)
        raise RuntimeError(f"the node did not serve within {timeout_s} s ({last}): {self.tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> float:
        """Signal the process this object started; seconds until it exited."""
        t0 = now_ns()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 1.0)
        took = (now_ns() - t0) / 1e9
        if self.log is not None:
            self.log.close()
            self.log = None
        return took

    def tail(self, n: int = 15) -> str:
        log_path = self.workdir / f"httpcoord-{self.restarts}.log"
        with contextlib.suppress(OSError):
            return "\n".join(log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


def run_client(workdir: Path, name: str, cfg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run the client process to its end (bounded) and return its result."""
    proc = start_client(workdir, name, cfg)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(proc, 5.0)
        raise RuntimeError(f"the {name} client ran past {timeout_s:.0f} s") from None
    return client_result(workdir, name, proc)


def start_client(workdir: Path, name: str, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    cfg_path = workdir / f"{name}.json"
    cfg = {**cfg, "result_path": str(workdir / f"{name}-result.json")}
    cfg_path.write_text(json.dumps(cfg))
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
    try:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_client", str(cfg_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def client_result(workdir: Path, name: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    if proc.returncode != 0:
        tail = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the {name} client exited with {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads((workdir / f"{name}-result.json").read_text())
    return result


# ---- analysis -------------------------------------------------------------------------------


def gc_summary(events: list[dict[str, Any]], t_lo: int = 0, t_hi: int = 2**63) -> dict[str, Any]:
    """Collections that started in [t_lo, t_hi): count and longest per
    generation, total time, the five longest."""
    pauses = [e for e in events if e["ev"] == "gc" and t_lo <= e["t"] < t_hi]
    per_gen: dict[str, dict[str, float]] = {}
    for g in (0, 1, 2):
        mine = [e["ns"] for e in pauses if e["gen"] == g]
        per_gen[str(g)] = {
            "count": len(mine),
            "max_ms": ms(max(mine, default=0)),
            "total_ms": ms(sum(mine)),
        }
    worst = sorted(pauses, key=lambda e: -e["ns"])[:5]
    return {
        "count": len(pauses),
        "max_ms": ms(max((e["ns"] for e in pauses), default=0)),
        "total_ms": ms(sum(e["ns"] for e in pauses)),
        "per_generation": per_gen,
        "longest": [
            {"t": e["t"], "gen": e["gen"], "ms": ms(e["ns"]), "collected": e["collected"]}
            for e in worst
        ],
    }


def latency_summary(
    res: dict[str, Any], windows: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    """Per-request latency (send to last byte) and lateness (schedule to
    last byte) of a load run; with windows (absolute ns), also the requests
    in flight during any of them and those outside all of them."""
    t0 = res["t0"]
    n = len(res["done"])
    lat = [res["done"][i] - res["sent"][i] for i in range(n)]
    late = [res["done"][i] - res["sched"][i] for i in range(n)]

    def stats(idx: list[int]) -> dict[str, Any]:
        ls = sorted(lat[i] for i in idx)
        worst = max(idx, key=lambda i: lat[i], default=None)
        return {
            "requests": len(idx),
            "p50_ms": ms(percentile(ls, 50)),
            "p99_ms": ms(percentile(ls, 99)),
            "p999_ms": ms(percentile(ls, 99.9)),
            "max_ms": ms(ls[-1]) if ls else 0.0,
            "max_from_schedule_ms": ms(max((late[i] for i in idx), default=0)),
            "worst_at_s": (res["sent"][worst] / 1e9) if worst is not None else None,
            "worst_write": bool(res["write"][worst]) if worst is not None else None,
        }

    everything = list(range(n))
    sent_s = (res["sent"][-1] - res["sent"][0]) / 1e9 if n > 1 else 0.0
    out: dict[str, Any] = {
        "all": stats(everything),
        "seconds": sent_s,
        "rate": n / sent_s if sent_s else 0.0,
        "writes": sum(res["write"]),
        "failed": sum(1 for s in res["status"] if s != 200) + len(res["errors"]),
        "errors": res["errors"],
    }
    if windows is not None:
        spans = [(lo - t0, hi - t0) for lo, hi in windows]
        sent, done = res["sent"], res["done"]
        inside = [i for i in everything if any(sent[i] < hi and done[i] > lo for lo, hi in spans)]
        taken = set(inside)
        outside = [i for i in everything if i not in taken]
        out["in_window"] = stats(inside)
        out["outside_window"] = stats(outside)
    return out


def worst_sent_in(res: dict[str, Any], spans: list[tuple[int, int]]) -> dict[str, Any]:
    """The slowest read and write among the requests sent during the spans."""
    t0 = res["t0"]
    rel = [(lo - t0, hi - t0) for lo, hi in spans]
    worst = {0: 0, 1: 0}
    count = 0
    for i, sent in enumerate(res["sent"]):
        if any(lo <= sent < hi for lo, hi in rel):
            count += 1
            kind = res["write"][i]
            worst[kind] = max(worst[kind], res["done"][i] - sent)
    return {"requests": count, "read_max_ms": ms(worst[0]), "write_max_ms": ms(worst[1])}


def restart_record(
    kind: str, stop_s: float, serving: dict[str, float], node: NodeProc, rss_kib_now: int
) -> dict[str, Any]:
    """One restart: stop time, time to serving, and the new process's own
    account of its startup steps."""
    ev = {e["ev"]: e for e in node.events() if e["ev"] != "gc"}
    spawned = node.spawned_ns
    rec: dict[str, Any] = {
        "kind": kind,
        "stop_s": stop_s,
        "start_to_ready_s": serving["ready_s"],
        "start_to_read_s": serving["read_s"],
        "total_s": stop_s + serving["read_s"],
        "rss_mib": rss_kib_now / 1024,
    }
    if "imported" in ev:
        rec["python_and_imports_s"] = (ev["imported"]["t"] - spawned) / 1e9
        if "node_open" in ev:
            rec["setup_before_open_s"] = (ev["node_open"]["t"] - ev["imported"]["t"]) / 1e9
    for name in ("sqlite_open", "snapshot_load", "replay", "node_open"):
        if name in ev:
            rec[f"{name}_s"] = ev[name]["ns"] / 1e9
    if "sqlite_open" in ev:
        rec["log_entries"] = ev["sqlite_open"].get("log_entries")
    if "snapshot_load" in ev:
        rec["snapshot_znodes"] = ev["snapshot_load"].get("znodes")
    if "replay" in ev:
        rec["replayed_entries"] = ev["replay"].get("entries")
    if "node_open" in ev:
        opened = ev["node_open"]["t"] + ev["node_open"]["ns"]
        rec["open_to_read_s"] = serving["read_s"] - (opened - spawned) / 1e9
        rec["gc_during_open"] = gc_summary(node.events(), ev["node_open"]["t"], opened)
    return rec


# ---- ZooKeeper --------------------------------------------------------------------------------

ZK_TICK_MS = 2000
# The tree builder for ZooKeeper, compiled into the temp dir at run time.
ZK_BUILD_JAVA = r"""import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.zookeeper.AsyncCallback;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

/**
 * Builds bench_big_tree.py's tree in ZooKeeper: /bt, its parents, their children,
 * asynchronous creates on one session with at most `window` in flight (a session
 * keeps its requests in order, so a parent exists before its children are created).
 *   build server=H:P parents=N children=N value=B width=W window=N timeout_s=N
 * prints one line: BUILT created=N failed=N ms=N
 */
public final class ZkBigTree {
  public static void main(String[] argv) throws Exception {
    Map<String, String> a = new HashMap<>();
    for (int i = 1; i < argv.length; i++) {
      String[] kv = argv[i].split("=", 2);
      a.put(kv[0], kv[1]);
    }
    int parents = Integer.parseInt(a.get("parents"));
    int children = Integer.parseInt(a.get("children"));
    int valueBytes = Integer.parseInt(a.get("value"));
    int width = Integer.parseInt(a.get("width"));
    int window = Integer.parseInt(a.get("window"));
    long timeoutS = Long.parseLong(a.get("timeout_s"));
    CountDownLatch up = new CountDownLatch(1);
    ZooKeeper zk = new ZooKeeper(a.get("server"), 30000, e -> {
      if (e.getState() == Watcher.Event.KeeperState.SyncConnected) up.countDown();
    });
    if (!up.await(20, TimeUnit.SECONDS)) throw new IllegalStateException("no session");
    String fmt = "%0" + width + "d";
    Semaphore inFlight = new Semaphore(window);
    long total = 1L + parents + (long) parents * children;
    CountDownLatch done = new CountDownLatch((int) total);
    AtomicLong failed = new AtomicLong();
    AsyncCallback.StringCallback cb = (rc, path, ctx, name) -> {
      if (rc != 0) failed.incrementAndGet();
      inFlight.release();
      done.countDown();
    };
    long t0 = System.nanoTime();
    inFlight.acquire();
    zk.create("/bt", new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT, cb, null);
    for (int p = 0; p < parents; p++) {
      String parent = "/bt/p" + String.format(fmt, p);
      inFlight.acquire();
      zk.create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT, cb, null);
      for (int c = 0; c < children; c++) {
        StringBuilder v = new StringBuilder(p + "-" + c + "-");
        while (v.length() < valueBytes) v.append('x');
        inFlight.acquire();
        zk.create(parent + "/c" + String.format(fmt, c),
            v.toString().getBytes(StandardCharsets.UTF_8), ZooDefs.Ids.OPEN_ACL_UNSAFE,
            CreateMode.PERSISTENT, cb, null);
      }
    }
    boolean finished = done.await(timeoutS, TimeUnit.SECONDS);
    long took = (System.nanoTime() - t0) / 1_000_000;
    System.out.println("BUILT created=" + (total - done.getCount() - failed.get()) + " failed="
        + (failed.get() + done.getCount()) + " ms=" + took + " finished=" + finished);
    System.out.flush();
    zk.close();
    System.exit(0);
  }
}
"""


def zk_node_count(port: int) -> int | None:
    """ZooKeeper's own count of znodes, or None while it does not serve."""
    try:
        text = four_letter_word(port, "srvr", timeout_s=2.0)
    except OSError:
        return None
    m = re.search(r"Node count: (\d+)", text)
    return int(m.group(1)) if m else None


@dataclass
class ZooKeeper:
    workdir: Path
    java: str
    heap: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    spawned_ns: int = 0
    log: Any = None

    def start(self) -> None:
        data = self.workdir / "zk-data"
        data.mkdir(exist_ok=True)
        cfg = self.workdir / "zk.cfg"
        # A standalone server: no other member in the config.
        cfg.write_text(
            ZK_CFG.format(tick_ms=ZK_TICK_MS, data=data, client=self.port, host=HOST, servers="")
        )
        cp = str(ZK_JAR) + (f":{ZK_LOG_JAR}" if ZK_LOG_JAR.is_file() else "")
        self.starts += 1
        self.log = open(self.workdir / f"zk-{self.starts}.log", "wb")  # noqa: SIM115
        self.spawned_ns = now_ns()
        self.proc = subprocess.Popen(
            [
                self.java,
                f"-Xmx{self.heap}",
                "-cp",
                cp,
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(cfg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_count(self, at_least: int, timeout_s: float) -> float:
        """Seconds from the spawn until ZooKeeper serves ``at_least`` znodes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}")
            count = zk_node_count(self.port)
            if count is not None and count >= at_least:
                return (now_ns() - self.spawned_ns) / 1e9
            time.sleep(0.01)
        raise RuntimeError(f"ZooKeeper did not serve {at_least} znodes within {timeout_s} s")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        t0 = now_ns()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 1.0)
        if self.log is not None:
            self.log.close()
            self.log = None
        return (now_ns() - t0) / 1e9

    def heap_used_kib(self, jcmd: str | None) -> int | None:
        """Live heap after a full collection (``jcmd GC.run``), in KiB."""
        if jcmd is None or self.proc is None:
            return None
        pid = str(self.proc.pid)
        subprocess.run([jcmd, pid, "GC.run"], capture_output=True, timeout=120, check=False)
        out = subprocess.run(
            [jcmd, pid, "GC.heap_info"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        m = re.search(r"used (\d+)K", out)
        return int(m.group(1)) if m else None


def run_zookeeper(args: argparse.Namespace, workdir: Path, shape: Shape) -> dict[str, Any]:
    java, javac = shutil.which("java"), shutil.which("javac")
    if java is None or javac is None or not ZK_JAR.is_file():
        return {"skipped": "needs java, javac and Debian's zookeeper package"}
    classes = workdir / "zk-client"
    classes.mkdir()
    (classes / "ZkBigTree.java").write_text(ZK_BUILD_JAVA)
    done = subprocess.run(
        [
            javac,
            "-proc:none",
            "-cp",
            str(ZK_JAR),
            "-d",
            str(classes),
            str(classes / "ZkBigTree.java"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"javac failed:\n{done.stdout}\n{done.stderr}")
    zk = ZooKeeper(workdir, java, args.zk_heap)
    out: dict[str, Any] = {"heap_max": args.zk_heap}
    try:
        zk.start()
        assert zk.proc is not None
        out["start_s"] = zk.wait_count(1, 60)
        time.sleep(1.0)  # let the JVM finish starting its threads before the baseline
        out["rss_empty_kib"] = rss_kib(zk.proc.pid)
        cp = f"{classes}:{ZK_JAR}" + (f":{ZK_NOP_JAR}" if ZK_NOP_JAR.is_file() else "")
        cpu0 = process_cpu_ticks(zk.proc.pid)
        built = subprocess.run(
            [
                java,
                "-Xmx512m",
                "-Dzookeeper.sasl.client=false",
                "-cp",
                cp,
                "ZkBigTree",
                "build",
                f"server={HOST}:{zk.port}",
                f"parents={shape.parents}",
                f"children={shape.children}",
                f"value={shape.value_bytes}",
                f"width={shape.width}",
                f"window={args.zk_window}",
                f"timeout_s={int(args.build_timeout)}",
            ],
            capture_output=True,
            text=True,
            timeout=args.build_timeout + 60,
            check=False,
        )
        line = next((x for x in built.stdout.splitlines() if x.startswith("BUILT")), "")
        fields = dict(kv.split("=", 1) for kv in line.split()[1:])
        if not fields or int(fields["failed"]) != 0:
            raise RuntimeError(f"ZooKeeper build failed: {built.stdout}\n{built.stderr[-2000:]}")
        out["build_s"] = int(fields["ms"]) / 1000
        out["build_server_cpu_s"] = (process_cpu_ticks(zk.proc.pid) - cpu0) / CLK_TCK
        out["znodes_served"] = zk_node_count(zk.port)
        out["rss_built_kib"] = rss_kib(zk.proc.pid)
        out["heap_used_after_full_gc_kib"] = zk.heap_used_kib(shutil.which("jcmd"))
        out["rss_after_full_gc_kib"] = rss_kib(zk.proc.pid)
        expected = shape.znodes + shape.parents
        out["restart_stop_s"] = zk.stop(signal.SIGTERM)
        zk.start()
        out["restart_to_serving_s"] = zk.wait_count(expected, args.restart_timeout)
        assert zk.proc is not None
        out["rss_restarted_kib"] = rss_kib(zk.proc.pid)
    finally:
        zk.stop()
    n = shape.znodes
    out["rss_per_znode_b"] = (out["rss_built_kib"] - out["rss_empty_kib"]) * 1024 / n
    out["rss_per_znode_restarted_b"] = (out["rss_restarted_kib"] - out["rss_empty_kib"]) * 1024 / n
    if out.get("heap_used_after_full_gc_kib"):
        out["heap_per_znode_b"] = out["heap_used_after_full_gc_kib"] * 1024 / n
    return out


# ---- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--znodes", type=int, default=1_000_000, help="znodes in the tree")
    p.add_argument("--children", type=int, default=1000, help="children per parent")
    p.add_argument("--value-bytes", type=int, default=32)
    p.add_argument("--batch", type=int, default=250, help="creates per multi while building")
    p.add_argument("--build-connections", type=int, default=4)
    p.add_argument("--multi-ops-max", type=int, default=1000, help="the server's --max-multi-ops")
    p.add_argument("--build-timeout", type=float, default=900.0, help="seconds")
    p.add_argument("--rate", type=float, default=1000.0, help="load: requests/s, paced")
    p.add_argument("--write-share", type=float, default=0.2, help="load: share of PUTs")
    p.add_argument("--load-connections", type=int, default=8)
    p.add_argument(
        "--snapshot-after-writes",
        type=int,
        default=3000,
        help="log entries of the load after which the node snapshots by itself",
    )
    p.add_argument("--snapshot-tail", type=float, default=5.0, help="load seconds after it")
    p.add_argument(
        "--steady-duration", type=float, default=20.0, help="seconds of load with no snapshot"
    )
    p.add_argument("--restart-timeout", type=float, default=180.0, help="seconds")
    p.add_argument("--skip-zookeeper", action="store_true")
    p.add_argument("--zk-heap", default="2g", help="ZooKeeper's -Xmx")
    p.add_argument("--zk-window", type=int, default=2000, help="ZooKeeper creates in flight")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--tmp-dir", type=Path, default=None, help="parent of the temp dir (a real disk)"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-data", action="store_true", help="leave the temp dir (logs, events)")
    args = p.parse_args(argv)
    if not (
        args.children >= 1
        and args.znodes >= 2 * args.children
        and args.znodes % args.children == 0
        and 1 <= args.batch <= args.multi_ops_max
        and 1 <= args.build_connections <= 64
        and 0 < args.rate <= 20_000
        and 0 < args.write_share <= 1
        and 1 <= args.load_connections <= 256
        and args.snapshot_after_writes >= 1
    ):
        p.error(
            "need --znodes a multiple of --children (two parents at least), "
            "1 <= --batch <= --multi-ops-max, 0 < --rate <= 20000, 0 < --write-share <= 1"
        )
    return args


def load_cfg(args: argparse.Namespace, node: NodeProc, duration_max_s: float) -> dict[str, Any]:
    return {
        "mode": "load",
        "port": node.port,
        "parents": node.shape.parents,
        "children": node.shape.children,
        "value_bytes": node.shape.value_bytes,
        "rate": args.rate,
        "write_share": args.write_share,
        "connections": args.load_connections,
        "duration_max_s": duration_max_s,
        "seed": args.seed,
    }


def restart(
    node: NodeProc, sig: signal.Signals, snapshot_entries: int, timeout_s: float
) -> dict[str, Any]:
    t_sig = now_ns()
    stop_s = node.stop(sig)
    old = {e["ev"]: e for e in node.events() if e["ev"] != "gc"}
    node.start(snapshot_entries)
    serving = node.wait_serving(timeout_s)
    rec = restart_record(sig.name, stop_s, serving, node, rss_kib(node.pid))
    if "exit" in old:
        # Graceful: until httpcoord's serve returned; the rest of stop_s is
        # the interpreter's own shutdown (its final collection, freeing).
        rec["stop_until_serve_returned_s"] = (old["exit"]["t"] - t_sig) / 1e9
    if "node_close" in old:
        rec["stop_node_close_s"] = old["node_close"]["ns"] / 1e9
    returned = (
        f" (serve returned after {rec['stop_until_serve_returned_s']:.2f} s)"
        if "stop_until_serve_returned_s" in rec
        else ""
    )
    print(
        f"  restart after {sig.name}: stop {stop_s:.2f} s{returned}, serving "
        f"{serving['read_s']:.2f} s "
        f"after the start (snapshot load {rec.get('snapshot_load_s', 0):.2f} s, "
        f"log replay {rec.get('replay_s', 0):.2f} s of {rec.get('replayed_entries')} entries), "
        f"RSS {rec['rss_mib']:.0f} MiB",
        flush=True,
    )
    return rec


def snapshot_phase(args: argparse.Namespace, node: NodeProc, workdir: Path) -> dict[str, Any]:
    """Paced load until the node has snapshotted by itself, plus a tail."""
    expected_s = args.snapshot_after_writes / (args.rate * args.write_share)
    bound_s = 2 * expected_s + 300
    cpu0 = process_cpu_ticks(node.pid)
    proc = start_client(workdir, "snapshot-load", load_cfg(args, node, bound_s + 60))
    written: dict[str, Any] | None = None
    deadline = time.monotonic() + bound_s
    try:
        while time.monotonic() < deadline and written is None:
            if proc.poll() is not None:
                break
            written = next((e for e in node.events() if e["ev"] == "snapshot_write"), None)
            time.sleep(0.2)
        if written is not None:
            time.sleep(args.snapshot_tail)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(proc, 1.0)
    res = client_result(workdir, "snapshot-load", proc)
    cpu_s = (process_cpu_ticks(node.pid) - cpu0) / CLK_TCK
    if written is None:
        raise RuntimeError(f"no snapshot within {bound_s:.0f} s of load: {node.tail()}")
    events = node.events()
    load_end = res["t0"] + max(res["done"], default=0)
    # Each snapshot: from the start of its serialisation on the loop to the
    # end of its background write (or of the load, if that came first).
    snapshots = []
    for ser in (e for e in events if e["ev"] == "snapshot_serialise"):
        wr = next((e for e in events if e["ev"] == "snapshot_write" and e["t"] >= ser["t"]), None)
        end = wr["t"] + wr["ns"] if wr is not None else load_end
        snapshots.append(
            {
                "at_s": (ser["t"] - res["t0"]) / 1e9,
                "serialise_ms": ms(ser["ns"]),
                "write_ms": ms(wr["ns"]) if wr is not None else None,
                "window": (ser["t"], end),
            }
        )
    windows = [x["window"] for x in snapshots]
    out = latency_summary(res, windows)
    # The two parts of each window: the serialisation holds the loop; the
    # write runs beside it (sha256 on the loop, SQLite in its own thread,
    # where the log saves that writes wait for queue behind its transactions).
    ser_end = [w[0] + int(x["serialise_ms"] * 1e6) for w, x in zip(windows, snapshots)]
    out["sent_while_serialising"] = worst_sent_in(
        res, [(w[0], e) for w, e in zip(windows, ser_end)]
    )
    out["sent_while_writing"] = worst_sent_in(res, [(e, w[1]) for w, e in zip(windows, ser_end)])
    out.update(
        snapshots=snapshots,
        serialise_ms=max(x["serialise_ms"] for x in snapshots),
        write_ms=max(x["write_ms"] or 0 for x in snapshots),
        snapshot_at_s=snapshots[0]["at_s"],
        server_cpu_s=cpu_s,
        gc=gc_summary(events, res["t0"], load_end),
        gc_in_window=[gc_summary(events, lo, hi) for lo, hi in windows],
        snapshots_metric=metric(node.port, "httpcoord_snapshots_total"),
    )
    return out


def steady_phase(args: argparse.Namespace, node: NodeProc, workdir: Path) -> dict[str, Any]:
    cpu0 = process_cpu_ticks(node.pid)
    res = run_client(
        workdir,
        "steady-load",
        load_cfg(args, node, args.steady_duration),
        args.steady_duration + 60,
    )
    out = latency_summary(res)
    out["server_cpu_s"] = (process_cpu_ticks(node.pid) - cpu0) / CLK_TCK
    end = res["t0"] + max(res["done"], default=0)
    out["gc"] = gc_summary(node.events(), res["t0"], end)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    shape = Shape(args.znodes // args.children, args.children, args.value_bytes)
    workdir = Path(tempfile.mkdtemp(prefix="httpcoord-bigtree-", dir=args.tmp_dir))
    fstype = filesystem_type(workdir)
    if fstype in ("tmpfs", "ramfs"):
        print(f"warning: {workdir} is on {fstype}; pass --tmp-dir on a real disk", file=sys.stderr)
    started = dt.datetime.now(dt.UTC)
    node = NodeProc(workdir, free_port(), shape)
    print(
        f"big tree: {shape.znodes:,} znodes ({shape.parents} x {shape.children}, "
        f"{shape.value_bytes} B values), data in {workdir} ({fstype})",
        flush=True,
    )
    record: dict[str, Any] = {}
    restarts: list[dict[str, Any]] = []
    zk: dict[str, Any] = {"skipped": "--skip-zookeeper"}
    failed: list[str] = []
    try:
        # 1. empty node, then the tree.
        node.start(NEVER_SNAPSHOT)
        _wait_health(node, 60)
        for _ in range(50):  # warm: a few requests of every kind the run makes
            http_request(node.port, "GET", "/v1/nodes/", timeout=10)
            http_request(node.port, "GET", "/metrics", timeout=10)
        rss_empty = rss_kib(node.pid)
        print(f"  empty node: RSS {rss_empty / 1024:.1f} MiB (pid {node.pid})", flush=True)
        cpu0 = process_cpu_ticks(node.pid)
        build = run_client(
            workdir,
            "build",
            {
                "mode": "build",
                "port": node.port,
                "parents": shape.parents,
                "children": shape.children,
                "value_bytes": shape.value_bytes,
                "batch": args.batch,
                "connections": args.build_connections,
                "multi_ops_max": args.multi_ops_max,
                "deadline_s": args.build_timeout,
            },
            args.build_timeout + 60,
        )
        build["server_cpu_s"] = (process_cpu_ticks(node.pid) - cpu0) / CLK_TCK
        znodes_metric = metric(node.port, "httpcoord_znodes")
        applied = int(metric(node.port, "httpcoord_applied_index"))
        build.update(znodes_metric=znodes_metric, log_index=applied)
        build["rss_kib"] = rss_kib(node.pid)
        build["gc"] = gc_summary(node.events(), build["t0"], build["t_end"])
        print(
            f"  built {build['created']:,} children in {build['seconds']:.1f} s "
            f"({build['created'] / build['seconds']:,.0f}/s, server CPU {build['server_cpu_s']:.1f} s,"
            f" {applied} log entries), RSS {build['rss_kib'] / 1024:.0f} MiB, "
            f"longest GC pause {build['gc']['max_ms']:.0f} ms, slowest multi "
            f"{build['multi_max_ms']:.0f} ms",
            flush=True,
        )
        if znodes_metric < shape.znodes + shape.parents:
            raise RuntimeError(f"the node holds {znodes_metric:.0f} znodes after the build")

        # 2. restarts from the log alone; the last one arms the snapshot.
        snapshot_entries = applied + args.snapshot_after_writes
        restarts.append(restart(node, signal.SIGTERM, snapshot_entries, args.restart_timeout))
        restarts[-1]["from"] = "log"
        restarts.append(restart(node, signal.SIGKILL, snapshot_entries, args.restart_timeout))
        restarts[-1]["from"] = "log"

        # 3. the snapshot under load.
        snap = snapshot_phase(args, node, workdir)
        record["snapshot"] = snap
        print(
            f"  snapshot at {snap['snapshot_at_s']:.1f} s into the load: serialise "
            f"{snap['serialise_ms']:.0f} ms on the loop, written in {snap['write_ms']:.0f} ms; "
            f"worst request in the window {snap['in_window']['max_ms']:.1f} ms, outside "
            f"{snap['outside_window']['max_ms']:.1f} ms",
            flush=True,
        )

        # 4. restarts from the snapshot plus the log after it.
        restarts.append(restart(node, signal.SIGTERM, NEVER_SNAPSHOT, args.restart_timeout))
        restarts[-1]["from"] = "snapshot"
        restarts.append(restart(node, signal.SIGKILL, NEVER_SNAPSHOT, args.restart_timeout))
        restarts[-1]["from"] = "snapshot"
        for _ in range(50):
            http_request(node.port, "GET", "/v1/nodes/", timeout=10)
            http_request(node.port, "GET", "/metrics", timeout=10)
        rss_tree = rss_kib(node.pid)

        # 5. steady load: GC pauses and latency outliers with no snapshot.
        if args.steady_duration > 0:
            record["steady"] = steady_phase(args, node, workdir)
            st = record["steady"]
            print(
                f"  steady load {st['rate']:.0f} req/s for {st['seconds']:.0f} s: p99 "
                f"{st['all']['p99_ms']:.1f} ms, max {st['all']['max_ms']:.1f} ms, longest GC "
                f"pause {st['gc']['max_ms']:.1f} ms",
                flush=True,
            )
        record["run_gc"] = gc_summary(
            [e for r in range(1, node.restarts + 1) for e in _events_of(workdir, r)]
        )
        node.stop(signal.SIGTERM)
        record["rss"] = {
            "empty_kib": rss_empty,
            "built_kib": build["rss_kib"],
            "restarted_from_snapshot_kib": rss_tree,
            "per_znode_b": (rss_tree - rss_empty) * 1024 / shape.znodes,
            "per_znode_built_b": (build["rss_kib"] - rss_empty) * 1024 / shape.znodes,
        }
        record["build"] = build
        record["restarts"] = restarts
        for name in ("snapshot", "steady"):
            if name in record and record[name]["failed"]:
                failed.append(f"{record[name]['failed']} failed requests in the {name} load")

        # 6. ZooKeeper with the same tree.
        if not args.skip_zookeeper:
            print("  ZooKeeper: building the same tree", flush=True)
            zk = run_zookeeper(args, workdir, shape)
            if "skipped" not in zk:
                print(
                    f"  ZooKeeper: built in {zk['build_s']:.1f} s, RSS "
                    f"{zk['rss_empty_kib'] / 1024:.0f} -> {zk['rss_built_kib'] / 1024:.0f} MiB, "
                    f"restart {zk['restart_to_serving_s']:.2f} s",
                    flush=True,
                )
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        failed.append(str(exc))
    finally:
        node.stop(signal.SIGTERM)
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    if "rss" not in record:
        return 1
    record["zookeeper"] = zk
    print()
    print(render(record, zk, shape))
    save_results(
        args.results_dir,
        "big_tree",
        started,
        fstype,
        {"git": _git_state()},
        vars(args) | {"tmp_dir": str(args.tmp_dir), "results_dir": str(args.results_dir)},
        **record,
        failed=failed,
    )
    if args.keep_data:
        print(f"data, logs and event files kept in {workdir}")
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


def _events_of(workdir: Path, n: int) -> list[dict[str, Any]]:
    return read_events(workdir / f"events-{n}.jsonl")


def _wait_health(node: NodeProc, timeout_s: float) -> None:
    assert node.proc is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise RuntimeError(f"the node exited with {node.proc.returncode}: {node.tail()}")
        with contextlib.suppress(OSError):
            if http_request(node.port, "GET", "/ready", timeout=2.0)[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the node was not ready within {timeout_s} s: {node.tail()}")


def _git_state() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "httpcoord"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        return head + (" (httpcoord/ modified)" if dirty else "")
    return "?"


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, the others right-aligned."""
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    out = []
    for row in [head, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        out.append("  ".join(cells).rstrip())
    return out


def _pair(worst: dict[str, Any]) -> str:
    return f"{worst['read_max_ms']:.1f} / {worst['write_max_ms']:.1f}"


def _mib(*kib: int) -> str:
    return " / ".join(f"{k / 1024:.0f}" for k in kib)


def render(r: dict[str, Any], zk: dict[str, Any], shape: Shape) -> str:
    """The four figures against their targets, then the restarts' split."""
    rows: list[list[str]] = []
    for rs in r["restarts"]:
        rows.append(
            [
                f"restart after {rs['kind']}, from the {rs['from']} (s)",
                f"{rs['total_s']:.2f}",
                f"< {RESTART_TARGET_S:.0f}",
                _yes(rs["total_s"] < RESTART_TARGET_S),
            ]
        )
    if "restart_to_serving_s" in zk:
        zk_restart = zk["restart_stop_s"] + zk["restart_to_serving_s"]
        rows.append(["  ZooKeeper, after SIGTERM (s)", f"{zk_restart:.2f}", "", ""])
    snap = r.get("snapshot")
    if snap:
        worst = snap["in_window"]["max_ms"]
        rows.append(
            [
                "worst request latency during a snapshot (ms)",
                f"{worst:.1f}",
                f"<= {SNAPSHOT_STALL_TARGET_MS:.0f}",
                _yes(worst <= SNAPSHOT_STALL_TARGET_MS),
            ]
        )
        rows.append(
            [
                "  serialise on the loop / background write (ms)",
                f"{snap['serialise_ms']:.0f} / {snap['write_ms']:.0f}",
                "",
                "",
            ]
        )
        rows.append(
            [
                "  worst read / write sent while serialising (ms)",
                _pair(snap["sent_while_serialising"]),
                "",
                "",
            ]
        )
        rows.append(
            [
                "  worst read / write sent while writing (ms)",
                _pair(snap["sent_while_writing"]),
                "",
                "",
            ]
        )
        rows.append(
            [
                "  requests in the window(s) / worst outside (ms)",
                f"{snap['in_window']['requests']} / {snap['outside_window']['max_ms']:.1f}",
                "",
                "",
            ]
        )
    rss = r["rss"]
    # Like for like: each server restarted and loaded the tree from its own
    # disk (ZooKeeper's RSS right after the build also holds the build's garbage).
    zk_per = zk.get("rss_per_znode_restarted_b")
    rows.append(
        [
            "RSS per znode, restarted from disk (B)",
            f"{rss['per_znode_b']:.0f}",
            f"< {zk_per:.0f} (ZK)" if zk_per else "< ZK's",
            _yes(rss["per_znode_b"] < zk_per) if zk_per else "?",
        ]
    )
    rows.append(
        [
            "  RSS empty / built, log in memory / from snapshot (MiB)",
            _mib(rss["empty_kib"], rss["built_kib"], rss["restarted_from_snapshot_kib"]),
            "",
            "",
        ]
    )
    if zk_per:
        rows.append(
            [
                f"  ZooKeeper -Xmx{zk['heap_max']}: RSS per znode, restarted / built (B)",
                f"{zk_per:.0f} / {zk['rss_per_znode_b']:.0f}",
                "",
                "",
            ]
        )
        rows.append(
            [
                "  ZK RSS empty / built / restarted (MiB)",
                _mib(zk["rss_empty_kib"], zk["rss_built_kib"], zk["rss_restarted_kib"]),
                "",
                "",
            ]
        )
        if zk.get("heap_per_znode_b"):
            rows.append(
                [
                    "  ZK live heap per znode after a full GC (B)",
                    f"{zk['heap_per_znode_b']:.0f}",
                    "",
                    "",
                ]
            )
    steady = r.get("steady")
    phases = [r["build"], *(x for x in (snap, steady) if x)]
    worst_gc = max(x["gc"]["max_ms"] for x in phases)
    rows.append(
        [
            "longest GC pause under load (ms)",
            f"{worst_gc:.1f}",
            f"<= {GC_PAUSE_TARGET_MS:.0f}",
            _yes(worst_gc <= GC_PAUSE_TARGET_MS),
        ]
    )
    rows.append(
        [
            "  building / paced load with snapshot / steady (ms)",
            " / ".join(f"{x['gc']['max_ms']:.1f}" for x in phases),
            "",
            "",
        ]
    )
    rows.append(
        [
            "  building: a multi's p50 / p99 / max (ms)",
            " / ".join(
                f"{r['build'][k]:.1f}" for k in ("multi_p50_ms", "multi_p99_ms", "multi_max_ms")
            ),
            "",
            "",
        ]
    )
    run_gc = r["run_gc"]
    g2 = run_gc["per_generation"]["2"]
    rows.append(
        [
            "  whole run: longest; full (gen 2) count, longest (ms)",
            f"{run_gc['max_ms']:.1f}; {g2['count']:.0f}, {g2['max_ms']:.1f}",
            "",
            "",
        ]
    )
    if steady:
        a = steady["all"]
        rows.append(
            [
                f"  steady {steady['rate']:.0f} req/s: p50 / p99 / p99.9 / max (ms)",
                f"{a['p50_ms']:.2f} / {a['p99_ms']:.1f} / {a['p999_ms']:.1f} / {a['max_ms']:.1f}",
                "",
                "",
            ]
        )
    zk_build = f" (ZooKeeper {zk['build_s']:.1f})" if "build_s" in zk else ""
    rows.append(["building the tree (s)", f"{r['build']['seconds']:.1f}{zk_build}", "", ""])
    lines = [f"{shape.znodes:,} znodes", ""]
    lines += _table(["figure", "httpcoord", "target", "met"], rows)
    split = []
    for rs in r["restarts"]:
        split.append(
            [
                f"{rs['kind']}, from the {rs['from']}",
                *(
                    f"{rs.get(k, 0):.2f}"
                    for k in (
                        "stop_s",
                        "python_and_imports_s",
                        "setup_before_open_s",
                        "sqlite_open_s",
                        "snapshot_load_s",
                        "replay_s",
                        "open_to_read_s",
                        "total_s",
                    )
                ),
                str(rs.get("replayed_entries", "?")),
            ]
        )
    lines += ["", "restart split (s):"]
    head = ["restart", "stop", "python", "setup", "sqlite", "snapshot", "replay", "to read"]
    lines += _table([*head, "total", "entries"], split)
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the processes


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_server":
        sys.exit(instrumented_server(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) == 3 and sys.argv[1] == "_client":
        sys.exit(client_entry(sys.argv[2]))
    sys.exit(main())
