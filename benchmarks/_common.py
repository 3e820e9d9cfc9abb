"""Helpers shared by the benchmark scripts: /proc CPU sampling, free ports,
small blocking HTTP calls, and starting/stopping a server process by the PID
it was started with.

Setup and measurement only; the load itself comes from wrk or from each
script's own client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def save_results(
    results_dir: Path,
    name: str,
    started: dt.datetime,
    data_fs: str,
    machine_extra: dict[str, Any],
    settings: dict[str, Any],
    **sections: Any,
) -> Path:
    """Write a run's record to ``<results_dir>/<name>-<UTC start>.json``:
    when, on what machine, with which settings, then the script's own
    sections in the order given; print its path and return it."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "data_fs": data_fs,
        **machine_extra,
    }
    record = {"started": started.isoformat(), "machine": machine, "settings": settings, **sections}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return out


# ---- /proc ----------------------------------------------------------------------


def process_cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already part of user
    return total - idle, total


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount-point match)."""
    best, fstype = "", "?"
    target = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def distinct_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (bounded tries)."""
    ports: list[int] = []
    for _ in range(50 * n):
        p = free_port()
        if p not in ports:
            ports.append(p)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"could not find {n} free ports")


# ---- HTTP helpers (setup and metrics only; the load comes from wrk) ----------------


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            c.close()


def prometheus_values(port: int, names: tuple[str, ...]) -> dict[str, float]:
    status, body = http_request(port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics on port {port} answered {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name in names:
            out[name] = float(value)
    missing = set(names) - set(out)
    if missing:
        raise RuntimeError(f"metrics missing on port {port}: {sorted(missing)}")
    return out


# ---- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    argv: list[str]
    log_path: Path
    ready_path: str
    fsync_metrics: tuple[str, str]  # (entries-or-proposals counter, fsyncs counter)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """Every process of this server (one; a ZooKeeper ensemble has three)."""
        return [self.pid]

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status, body = http_request(self.port, "GET", self.ready_path, timeout=1.0)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process this object started, SIGKILL it after ``timeout``."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def fsync_counters(self) -> tuple[float, float]:
        entries, fsyncs = self.fsync_metrics
        values = prometheus_values(self.port, (entries, fsyncs))
        return values[entries], values[fsyncs]


def httpcoord_server(workdir: Path) -> Server:
    port = free_port()
    return Server(
        name="httpcoord",
        port=port,
        argv=[
            sys.executable,
            "-m",
            "httpcoord",
            "serve",
            "--listen",
            f"{HOST}:{port}",
            "--data-dir",
            str(workdir / "httpcoord-data"),
            "--log-level",
            "warning",
        ],
        log_path=workdir / "httpcoord.log",
        ready_path="/health",
        fsync_metrics=("httpcoord_log_entries_total", "httpcoord_log_fsyncs_total"),
    )


def bare_server(workdir: Path, fsync: bool) -> Server:
    """bare_server.py: aiohttp answering httpcoord's routes from a dict;
    with ``fsync``, each PUT waits for a group-committed fdatasync."""
    port = free_port()
    name = "bare-fsync" if fsync else "bare"
    argv = [sys.executable, str(HERE / "bare_server.py"), "--listen", f"{HOST}:{port}"]
    if fsync:
        argv += ["--fsync", "--data-dir", str(workdir / f"{name}-data")]
    return Server(
        name=name,
        port=port,
        argv=argv,
        log_path=workdir / f"{name}.log",
        ready_path="/metrics",
        fsync_metrics=("bare_writes_total", "bare_fsyncs_total"),
    )


# ---- limits and statistics ------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a process this script started (by its PID), SIGKILL it after
    ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise the soft open-files limit towards the hard one (child processes
    inherit it); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft, hard


def take_response(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """The first whole HTTP/1.1 response at the front of ``buf`` (its body
    sized by Content-Length, none meaning empty): (status, body, the bytes
    after it), or None while part of it has yet to arrive. For the raw load
    clients, which parse no more than that."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    length = 0
    i = head.lower().find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17 : j if j >= 0 else len(head)])
    total = end + 4 + length
    if len(buf) < total:
        return None
    return int(head[9:12]), buf[end + 4 : total], buf[total:]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]
