"""Real server processes for integration tests.

``start_server(data_dir, *extra_args)`` runs ``python -m httpcoord serve`` on
a free port of 127.0.0.1 and returns once ``GET /health`` answers; the
returned ``ServerProcess`` has ``.url``, ``.pid``, ``.data_dir``, ``.port``,
``.log_path`` and ``.stop()``. It is also a context manager::

    with start_server(tmp_path / "data", "--max-data-bytes", "16") as srv:
        requests.get(srv.url + "/v1/nodes")

The ``server`` fixture is one such process per test module, with its data
in a fresh temporary directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05
_PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (the server may
    still lose it to another process: ``start_server`` then retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One running ``httpcoord serve`` process."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, data_dir: Path, log_path: Path
    ) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """What the server has written to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful shutdown), wait up to ``timeout``, then SIGKILL
        this process by its PID. Returns the exit status; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def start_server(
    data_dir: Path | str, *extra_args: str, timeout: float = START_TIMEOUT_S
) -> ServerProcess:
    """Start ``python -m httpcoord serve --listen 127.0.0.1:PORT --data-dir
    DATA_DIR EXTRA_ARGS...`` and wait (polling ``GET /health``, up to
    ``timeout`` seconds) until it answers. ``extra_args`` are more CLI
    options, e.g. ``"--max-multi-ops", "3"``. The server's output goes to
    ``<data_dir>.log`` next to the data dir. Raises ``RuntimeError`` (with the
    server's log) if it exits or does not answer in time; the caller stops
    the returned process (``.stop()`` or ``with``)."""
    data_dir = Path(data_dir)
    log_path = data_dir.with_name(data_dir.name + ".log")
    failure = ""
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "httpcoord",
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--data-dir",
                    str(data_dir),
                    *extra_args,
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(proc, port, data_dir, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _healthy(server.url):
                return server
            time.sleep(_POLL_INTERVAL_S)
        if proc.poll() is None:
            server.stop()
            raise RuntimeError(
                f"httpcoord did not answer GET /health within {timeout}s:\n{server.log()}"
            )
        failure = server.log()
        if "address already in use" not in failure.lower():
            break  # not a lost port race: retrying will not help
    raise RuntimeError(f"httpcoord exited during startup:\n{failure}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server for this test module, with a fresh data dir."""
    srv = start_server(tmp_path_factory.mktemp("server") / "data")
    try:
        yield srv
    finally:
        srv.stop()
