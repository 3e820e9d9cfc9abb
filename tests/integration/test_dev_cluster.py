"""``httpcoord dev-cluster``: one command starts a local cluster of real nodes
and Ctrl-C stops them all cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.cluster import http
from tests.integration.conftest import REPO_ROOT

START_TIMEOUT_S = 30.0


def _free_base(nodes: int) -> int:
    """A base port whose client and peer ports for every node are free now."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000 - 100 * nodes)
        ports = [base + 100 * i + d for i in range(nodes) for d in (0, 1)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of ports")


def test_dev_cluster_starts_three_nodes_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    base = _free_base(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "httpcoord", "dev-cluster", "--nodes", "3",
         "--base-port", str(base), "--data-dir", str(tmp_path / "dev")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    urls = [f"http://127.0.0.1:{base + 100 * i}" for i in range(3)]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = set(urls)
        while pending:
            assert proc.poll() is None, "dev-cluster exited early"
            assert time.monotonic() < deadline, f"not ready in time: {sorted(pending)}"
            for url in list(pending):
                try:
                    if http("GET", url + "/ready", timeout=1)[0] == 200:
                        pending.discard(url)
                except OSError:
                    pass
            time.sleep(0.1)
        status, _, body = http("POST", urls[1] + "/v1/nodes/dev", b"hello")
        assert status == 201, body
        zxid = json.loads(body)["zxid"]
        status, _, body = http(
            "GET", urls[2] + "/v1/nodes/dev", headers={"X-Coord-Min-Zxid": str(zxid)}
        )
        assert status == 200 and json.loads(body)["data"] == "hello"
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends it
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            # Its nodes run in sessions of their own: end them by their PIDs.
            for pid in re.findall(rb"\(pid (\d+),", out):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    text = out.decode()
    assert proc.returncode == 0, text
    for i, url in enumerate(urls, 1):
        assert f"node {i}: {url}" in text
        assert f"node {i} stopped (0)" in text
    for url in urls:
        try:
            http("GET", url + "/health", timeout=1)
        except OSError:
            continue
        raise AssertionError(f"{url} still answers after Ctrl-C")
