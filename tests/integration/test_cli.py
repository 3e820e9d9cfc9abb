"""The ``httpcoord`` client commands, run as a user runs them: the real
command (``python -m httpcoord ...``) in a subprocess against real server
processes, checking stdout (``--json`` parsed), stderr's one error line and
the exit code of every command and every error class (docs/cli.md)."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import start_cluster
from tests.integration.conftest import REPO_ROOT, ServerProcess, free_port

# Exit codes, as docs/cli.md documents them.
OK, USAGE, NOT_FOUND, CONFLICT, UNAVAILABLE, INVALID, LOST, TIMEOUT = 0, 2, 3, 4, 5, 6, 7, 8
COMMAND_NOT_FOUND = 127
RUN_TIMEOUT_S = 30.0
DEADLINE_S = 10.0
POLL_S = 0.05


def command(*args: str, endpoints: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "httpcoord", *args]
    return argv if endpoints is None else [*argv, "--endpoints", endpoints]


def environment(server: ServerProcess | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPCOORD_")}
    if server is not None:
        env["HTTPCOORD_ENDPOINTS"] = f"127.0.0.1:{server.port}"  # what most tests use
    return env


def hc(
    server: ServerProcess | None,
    *args: str,
    stdin: bytes | None = None,
    endpoints: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``httpcoord ARGS`` to its end (endpoints from HTTPCOORD_ENDPOINTS)."""
    return subprocess.run(
        command(*args, endpoints=endpoints),
        input=stdin,
        capture_output=True,
        check=False,
        cwd=REPO_ROOT,
        env=environment(server),
        timeout=RUN_TIMEOUT_S,
    )


def ok(server: ServerProcess, *args: str, stdin: bytes | None = None) -> bytes:
    done = hc(server, *args, stdin=stdin)
    assert done.returncode == OK, (args, done.returncode, done.stderr)
    return done.stdout


def doc(server: ServerProcess, *args: str) -> Any:
    return json.loads(ok(server, *args, "--json"))


def fails(server: ServerProcess | None, code: int, *args: str, endpoints: str | None = None) -> str:
    """Run a command that must fail with exit ``code``; its stderr line."""
    done = hc(server, *args, endpoints=endpoints)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    err = done.stderr.decode()
    if code != USAGE:  # click's own usage text is several lines
        assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def spawn(server: ServerProcess, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=environment(server),
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Commands a test starts in the background: killed by PID if still
    running when it ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(RUN_TIMEOUT_S)


def read_line(proc: subprocess.Popen[bytes], timeout_s: float = DEADLINE_S) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no output within {timeout_s}s"
    return proc.stdout.readline()


def eventually(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached in {DEADLINE_S}s"
        time.sleep(POLL_S)


@pytest.fixture
def base(request: pytest.FixtureRequest) -> str:
    """A path of this test's own (the server is shared by the module)."""
    name: str = request.node.name
    return "/" + name.replace("[", "_").replace("]", "")


# ---- data ------------------------------------------------------------------------------


def test_create_get_set_and_stat_round_trip(server: ServerProcess, base: str) -> None:
    path = f"{base}/config"
    assert ok(server, "create", path, "v1", "--parents") == f"{path}\n".encode()
    # get prints the bytes as they are: no newline added off a terminal
    assert ok(server, "get", path) == b"v1"
    read = doc(server, "get", path, "--linearizable")
    assert (read["path"], read["data"], read["encoding"]) == (path, "v1", "utf-8")
    assert read["stat"]["version"] == 0 and read["zxid"] >= read["stat"]["czxid"] > 0

    written = doc(server, "set", path, "v2", "--version", "0")
    assert written["stat"]["version"] == 1 and written["zxid"] > read["zxid"]
    assert ok(server, "set", path, "v3").startswith(f"{path}: version 2".encode())
    stat = doc(server, "stat", path)
    assert stat["stat"]["version"] == 2 and stat["stat"]["data_length"] == 2

    human = ok(server, "stat", path).decode()
    assert "version" in human and path in human
    assert "\x1b[" not in human  # no colour when stdout is not a terminal


def test_binary_data_round_trips_through_stdin_and_file(
    server: ServerProcess, base: str, tmp_path: Path
) -> None:
    blob = bytes(range(256)) * 200 + b"\xff\xfe\x00 not utf-8"  # 51 kB
    ok(server, "create", f"{base}/stdin", "-", "--parents", stdin=blob)
    assert ok(server, "get", f"{base}/stdin") == blob
    read = doc(server, "get", f"{base}/stdin")
    assert read["encoding"] == "base64" and base64.b64decode(read["data"]) == blob

    (tmp_path / "blob").write_bytes(blob[::-1])
    ok(server, "set", f"{base}/stdin", "--file", str(tmp_path / "blob"))
    assert ok(server, "get", f"{base}/stdin") == blob[::-1]
    ok(server, "set", f"{base}/stdin", "--file", "-", stdin=b"")
    assert ok(server, "get", f"{base}/stdin") == b""


def test_sequential_container_and_ttl_creates(server: ServerProcess, base: str) -> None:
    ok(server, "create", base)
    first = ok(server, "create", f"{base}/job-", "--sequential").decode().strip()
    second = doc(server, "create", f"{base}/job-", "--sequential")["path"]
    assert first == f"{base}/job-0000000000" and second == f"{base}/job-0000000001"
    ok(server, "create", f"{base}/box", "--container")
    ok(server, "create", f"{base}/lease", "--ttl-ms", "60000")
    assert doc(server, "ls", base)["children"] == [
        "box",
        "job-0000000000",
        "job-0000000001",
        "lease",
    ]


def test_ls_and_tree_show_children_stats_and_the_subtree(server: ServerProcess, base: str) -> None:
    for leaf in ("a/x", "a/y", "b"):
        ok(server, "create", f"{base}/{leaf}", "data", "--parents")
    assert ok(server, "ls", base) == b"a\nb\n"
    listing = doc(server, "ls", f"{base}/a", "--long")
    assert [c["name"] for c in listing["children"]] == ["x", "y"]
    assert all(c["stat"]["data_length"] == 4 for c in listing["children"])
    table = ok(server, "ls", f"{base}/a", "-l").decode()
    assert "version" in table and "x" in table and "y" in table

    tree = doc(server, "tree", base)
    assert tree["truncated"] is False
    assert [c["path"] for c in tree["children"]] == [f"{base}/a", f"{base}/b"]
    assert [c["path"] for c in tree["children"][0]["children"]] == [f"{base}/a/x", f"{base}/a/y"]
    shallow = doc(server, "tree", base, "--depth", "1")
    assert shallow["children"][0]["children"] == []
    cut = doc(server, "tree", base, "--limit", "2")
    assert cut["truncated"] is True
    human = ok(server, "tree", base).decode()
    assert all(name in human for name in ("a", "x", "y", "b"))


def test_rm_with_version_and_recursive(server: ServerProcess, base: str) -> None:
    ok(server, "create", f"{base}/a/b", "--parents")
    assert "BadVersion" in fails(server, CONFLICT, "rm", f"{base}/a/b", "--version", "5")
    assert "NotEmpty" in fails(server, CONFLICT, "rm", base)
    assert doc(server, "rm", f"{base}/a/b", "--version", "0")["path"] == f"{base}/a/b"
    assert ok(server, "rm", base, "--recursive").startswith(f"deleted {base}".encode())
    fails(server, NOT_FOUND, "get", f"{base}/a")


# ---- errors --------------------------------------------------------------------------------


def test_exit_codes_tell_the_error_classes_apart(server: ServerProcess, base: str) -> None:
    ok(server, "create", f"{base}/here", "--parents")
    missing = fails(server, NOT_FOUND, "get", f"{base}/missing")
    assert missing == f"httpcoord: NoNode: {base}/missing: node does not exist\n"
    as_json = json.loads(hc(server, "stat", f"{base}/missing", "--json").stderr)
    assert as_json["code"] == "NoNode"
    fails(server, NOT_FOUND, "session", "info", "0" * 32)
    fails(server, NOT_FOUND, "session", "close", "0" * 32)

    assert "NodeExists" in fails(server, CONFLICT, "create", f"{base}/here")
    assert "BadVersion" in fails(server, CONFLICT, "set", f"{base}/here", "x", "--version", "7")

    assert "InvalidPath" in fails(server, INVALID, "create", f"{base}//bad")
    both = ("create", f"{base}/c", "--container", "--ttl-ms", "100")
    assert "BadArguments" in fails(server, INVALID, *both)

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    assert "Unavailable" in fails(None, UNAVAILABLE, "get", "/", endpoints=dead)

    assert "absolute" in fails(server, USAGE, "get", "relative/path")
    assert "not both" in fails(server, USAGE, "set", f"{base}/here", "x", "--file", "-")
    assert "give the data" in fails(server, USAGE, "set", f"{base}/here")


# ---- watch ------------------------------------------------------------------------------


def test_watch_prints_events_since_a_zxid_and_exits_after_count(
    server: ServerProcess, base: str
) -> None:
    since = doc(server, "create", f"{base}/cfg", "v0", "--parents")["zxid"]
    ok(server, "set", f"{base}/cfg", "v1")
    ok(server, "set", f"{base}/cfg", "\xe9t\xe9")
    ok(server, "rm", f"{base}/cfg")
    lines = ok(
        server, "watch", f"{base}/cfg", "--since", str(since), "--data", "--count", "3", "--json"
    ).splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["data_changed", "data_changed", "deleted"]
    assert [e["zxid"] for e in events] == [since + 1, since + 2, since + 3]
    assert [e.get("data") for e in events] == ["v1", "\xe9t\xe9", None]

    human = ok(server, "watch", base, "--recursive", "--since", str(since), "--count", "1")
    assert human.decode().startswith(f"{since + 1} data_changed {base}/cfg version 1")


def test_watch_follows_live_changes(
    server: ServerProcess, base: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    since = doc(server, "create", base)["zxid"]
    watcher = spawn(server, "watch", base, "-r", "--since", str(since), "--count", "2", "--json")
    processes.append(watcher)
    ok(server, "create", f"{base}/a", "1")
    first = json.loads(read_line(watcher))
    assert (first["type"], first["path"]) in {("created", f"{base}/a"), ("children_changed", base)}
    assert watcher.wait(RUN_TIMEOUT_S) == OK


# ---- ephemerals and sessions --------------------------------------------------------------


def test_an_ephemeral_create_holds_its_node_until_the_command_ends(
    server: ServerProcess, base: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    ok(server, "create", base)
    holder = spawn(server, "create", f"{base}/me", "addr", "--ephemeral", "--json")
    processes.append(holder)
    created = json.loads(read_line(holder))
    owner = doc(server, "stat", f"{base}/me")["stat"]["ephemeral_owner"]
    assert owner == created["session"] != ""
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(RUN_TIMEOUT_S) == OK  # SIGTERM is its documented end
    fails(server, NOT_FOUND, "get", f"{base}/me")


def test_session_open_info_ls_and_close(server: ServerProcess, base: str) -> None:
    opened = doc(server, "session", "open", "--ttl-ms", "30000")
    sid = opened["id"]
    assert ok(server, "create", f"{base}", "-e", "--session", sid) == f"{base}\n".encode()
    info = doc(server, "session", "info", sid)
    assert info["id"] == sid and info["ephemerals"] == [base]
    listed = {s["id"]: s for s in doc(server, "session", "ls")["sessions"]}
    assert listed[sid]["ephemeral_count"] == 1
    assert sid in ok(server, "session", "ls").decode()
    assert doc(server, "session", "close", sid) == {"id": sid, "deleted": [base]}
    fails(server, NOT_FOUND, "get", base)


# ---- lock and elect --------------------------------------------------------------------------

CHILD = [sys.executable, "-c"]


def test_lock_runs_the_command_with_the_fencing_token_and_its_status(
    server: ServerProcess, base: str, tmp_path: Path
) -> None:
    script = (
        "import json, os, sys;"
        f"json.dump(dict(os.environ), open({str(tmp_path / 'env')!r}, 'w'));"
        "sys.exit(42)"
    )
    done = hc(server, "lock", f"{base}/lock", "--", *CHILD, script)
    assert done.returncode == 42, done.stderr  # CMD's own status
    env = json.loads((tmp_path / "env").read_text())
    assert int(env["HTTPCOORD_LOCK_TOKEN"]) > 0
    assert re.fullmatch(f"{base}/lock/lock-[0-9a-f]{{16}}-0000000000", env["HTTPCOORD_LOCK_NODE"])
    assert doc(server, "ls", f"{base}/lock")["children"] == []  # released

    # A later grant has a larger token: the fence moves forward.
    script = "import os; print(os.environ['HTTPCOORD_LOCK_TOKEN'])"
    later = int(ok(server, "lock", f"{base}/lock", "--", *CHILD, script))
    assert later > int(env["HTTPCOORD_LOCK_TOKEN"])
    fails(server, COMMAND_NOT_FOUND, "lock", f"{base}/lock", "--", "/no/such/program")


def test_lock_excludes_a_second_holder_until_released(
    server: ServerProcess, base: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    held, go = tmp_path / "held", tmp_path / "go"
    waits = f"import pathlib, time\npathlib.Path({str(held)!r}).touch()\n"
    waits += f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"
    first = spawn(server, "lock", base, "--", *CHILD, waits)
    processes.append(first)
    eventually("the first holder runs", held.exists)
    stderr = fails(server, TIMEOUT, "lock", base, "--timeout-ms", "300", "--", "true")
    assert "Timeout" in stderr
    go.touch()
    assert first.wait(RUN_TIMEOUT_S) == OK
    assert hc(server, "lock", base, "--timeout-ms", "5000", "--", "true").returncode == OK


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["sigterm", "sigkill"])
def test_lock_terminates_the_command_when_its_session_is_lost(
    server: ServerProcess,
    base: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    ignores_sigterm: bool,
) -> None:
    info, marker = tmp_path / "info", tmp_path / "terminated"
    on_term = "signal.SIG_IGN" if ignores_sigterm else "on_term"
    script = f"""
import os, pathlib, signal, sys, time
def on_term(*_):
    pathlib.Path({str(marker)!r}).write_text("SIGTERM")
    sys.exit(9)
signal.signal(signal.SIGTERM, {on_term})
pathlib.Path({str(info)!r}).write_text(f"{{os.getpid()}} {{os.environ['HTTPCOORD_LOCK_NODE']}}")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)
"""
    holder = spawn(server, "lock", base, "--grace-ms", "300", "--", *CHILD, script)
    processes.append(holder)
    eventually("the command runs", lambda: info.exists() and " " in info.read_text())
    pid, node = info.read_text().split(" ", 1)
    session = doc(server, "stat", node)["stat"]["ephemeral_owner"]

    ok(server, "session", "close", session)  # from outside: the lock is gone
    assert holder.wait(RUN_TIMEOUT_S) == LOST
    assert holder.stderr is not None
    assert "Lost" in holder.stderr.read().decode()
    assert marker.exists() is not ignores_sigterm  # SIGTERM, or SIGKILL after the grace
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # the command is gone (reaped by httpcoord)


def test_elect_runs_the_leader_and_shows_the_candidates(
    server: ServerProcess, base: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    go, leads = tmp_path / "go", tmp_path / "leads"
    script = (
        "import os, pathlib, time\n"
        f"with open({str(leads)!r}, 'a') as f:"
        " f.write(os.environ['HTTPCOORD_LEADER_ID'] + ' ' + os.environ['HTTPCOORD_LEADER_TOKEN'] + '\\n')\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"
    )
    alpha = spawn(server, "elect", base, "--id", "alpha", "--", *CHILD, script)
    processes.append(alpha)
    eventually("alpha leads", lambda: leads.exists() and "alpha" in leads.read_text())
    beta = spawn(server, "elect", base, "--id", "beta", "--", *CHILD, script)
    processes.append(beta)
    eventually(
        "beta waits behind alpha",
        lambda: doc(server, "elect", base)["candidates"] == ["alpha", "beta"],
    )
    assert doc(server, "elect", base)["leader"] == "alpha"
    assert ok(server, "elect", base).decode() == "leader: alpha\nwaiting: beta\n"

    go.touch()  # alpha's command ends: it resigns, beta leads and runs its own
    assert alpha.wait(RUN_TIMEOUT_S) == OK and beta.wait(RUN_TIMEOUT_S) == OK
    (alpha_line, beta_line) = leads.read_text().splitlines()
    assert alpha_line.startswith("alpha ") and beta_line.startswith("beta ")
    assert int(beta_line.split()[1]) > int(alpha_line.split()[1])
    assert doc(server, "elect", base) == {"path": base, "leader": None, "candidates": []}


# ---- the cluster ----------------------------------------------------------------------------


def test_cluster_shows_every_member_and_commands_fail_over(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 3) as cluster:
        leader = cluster.leader()
        dead = f"127.0.0.1:{free_port()}"
        endpoints = ",".join([dead, *(f"127.0.0.1:{m.client_port}" for m in cluster)])
        run = hc(None, "cluster", "--json", endpoints=endpoints)
        assert run.returncode == OK, run.stderr
        view = json.loads(run.stdout)
        assert view["leader"] == leader
        assert [m["id"] for m in view["members"]] == [1, 2, 3]
        assert all(m["reachable"] and m["digest"] for m in view["members"])
        human = hc(None, "cluster", endpoints=endpoints).stdout.decode()
        assert f"leader {leader}" in human and "voter" in human

        # Writes and reads go on through a dead endpoint and a dead leader.
        created = hc(None, "create", "/ha", "v1", endpoints=endpoints)
        assert created.returncode == OK, created.stderr
        cluster.kill(leader)
        cluster.leader(not_=leader)
        assert hc(None, "set", "/ha", "v2", endpoints=endpoints).returncode == OK
        assert hc(None, "get", "/ha", endpoints=endpoints).stdout == b"v2"
