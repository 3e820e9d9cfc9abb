"""``httpcoord dev-cluster``: a local cluster in one command, for trying
things out and for demos. Each node is a real ``httpcoord serve`` process
on 127.0.0.1 (client port BASE + 100 * (id - 1), peer port one above it);
Ctrl-C stops them all with SIGTERM (SIGKILL after a grace period), by PID."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import click

STOP_GRACE_S = 10.0
_POLL_S = 0.2


def ports(node_id: int, base_port: int) -> tuple[int, int]:
    client = base_port + 100 * (node_id - 1)
    return client, client + 1


def run(nodes: int, base_port: int, data_dir: Path, extra: tuple[str, ...]) -> int:
    peers = ",".join(f"{i}=127.0.0.1:{ports(i, base_port)[1]}" for i in range(1, nodes + 1))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for i in range(1, nodes + 1):
            client, _ = ports(i, base_port)
            node_dir = data_dir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                sys.executable, "-m", "httpcoord", "serve",
                "--id", str(i),
                "--listen", f"127.0.0.1:{client}",
                "--peers", peers,
                "--data-dir", str(node_dir),
                *extra,
            ]  # fmt: skip
            log = (node_dir / "node.log").open("ab")
            # A session of its own: Ctrl-C reaches this process only, which
            # then stops the nodes in order.
            procs[i] = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
            log.close()
            click.echo(
                f"node {i}: http://127.0.0.1:{client}  (web UI: http://127.0.0.1:{client}/ui/,"
                f" pid {procs[i].pid}, log {node_dir}/node.log)"
            )
        click.echo("Ctrl-C stops the cluster.")
        while not stopping:
            for i, proc in procs.items():
                if proc.poll() is not None:
                    click.echo(
                        f"node {i} exited with {proc.returncode}; stopping the others", err=True
                    )
                    stopping = True
                    break
            time.sleep(_POLL_S)
    finally:
        failed = _stop_all(procs)
    return 1 if failed else 0


def _stop_all(procs: dict[int, subprocess.Popen[bytes]]) -> bool:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    failed = False
    for i, proc in procs.items():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            click.echo(f"node {i} did not stop in {STOP_GRACE_S:.0f}s: killed", err=True)
            failed = True
        else:
            click.echo(f"node {i} stopped ({proc.returncode})")
    return failed
