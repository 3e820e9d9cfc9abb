"""Startup errors a user can cause: a port another process listens on, a data
dir another node holds. Each is one line on stderr and exit code 1, said
before the node would announce that it is serving, and never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.integration.conftest import REPO_ROOT, free_port, start_server

EXIT_TIMEOUT_S = 30.0


def serve(listen: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m httpcoord serve`` to its end (a refused start ends at
    once; the timeout only bounds a regression that would serve instead)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "httpcoord",
            "serve",
            "--listen",
            listen,
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,  # the exit code is what the tests judge
        timeout=EXIT_TIMEOUT_S,
    )


def assert_one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert done.stdout == "", output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("httpcoord: "), output
    assert "Traceback" not in output
    assert "serving" not in output
    return lines[0]


def test_a_port_in_use_is_one_line_and_exit_1_before_the_data_dir_is_opened(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        done = serve(f"127.0.0.1:{port}", data_dir)
    line = assert_one_line_refusal(done)
    assert f"127.0.0.1:{port}" in line
    assert "address already in use" in line
    # Refused before recovery: nothing was created on disk.
    assert not data_dir.exists()


def test_a_data_dir_held_by_another_node_is_one_line_and_exit_1_and_the_holder_serves_on(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as holder:
        done = serve(f"127.0.0.1:{free_port()}", data_dir)
        line = assert_one_line_refusal(done)
        assert str(data_dir) in line
        assert "in use by another httpcoord process" in line
        # The refused process touched nothing the holder needs.
        with urllib.request.urlopen(holder.url + "/v1/nodes/", timeout=5.0) as response:
            assert response.status == 200
        assert holder.stop() == 0
    assert "Traceback" not in holder.log()


def test_a_free_data_dir_after_its_holder_stopped_serves_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as first:
        assert first.stop() == 0
    # The lock died with its holder: the same dir opens again.
    with start_server(data_dir) as second:
        with urllib.request.urlopen(second.url + "/v1/nodes/", timeout=5.0) as response:
            assert response.status == 200
        assert "serving on http://127.0.0.1:" in second.log()
        assert second.stop() == 0


def test_a_damaged_data_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # Not a database at all (a torn copy, a file overwritten by mistake).
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "httpcoord.sqlite3").write_bytes(b"not a database " * 1000)
    line = assert_one_line_refusal(serve(f"127.0.0.1:{free_port()}", data_dir))
    assert f"cannot open the data dir {data_dir}" in line, line
