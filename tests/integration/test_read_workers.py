"""Read workers (``serve --read-workers N``): real processes on one port.

Every new TCP connection lands on one process of the node (``SO_REUSEPORT``);
``X-Coord-Worker`` says which read worker answered (absent: the node's own
process). On every process the consistency rules are the node's: a client
reads its own writes on its connection, ``X-Coord-Min-Zxid`` waits (504),
linearizable reads pass the leader's ReadIndex, and watches miss nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import start_cluster, wait_for
from tests.integration.conftest import ServerProcess, start_server

WORKERS = 2
REACH_WITHIN_S = 20.0  # to reach one given process of WORKERS + 1 through the kernel's hash


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def _connection_to(port: int, worker: str) -> http.client.HTTPConnection:
    """A connection that the kernel gave to ``worker`` ("" for the node's own
    process); a worker starting up is not listening yet."""
    deadline = time.monotonic() + REACH_WITHIN_S
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _, headers, _ = _request(conn, "GET", "/v1/nodes/")
        if headers.get("x-coord-worker", "") == worker:
            return conn
        conn.close()
    raise AssertionError(f"no connection reached worker {worker!r} in {REACH_WITHIN_S} s")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def _workers_of(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("workers") / "data"
    with start_server(data, "--read-workers", str(WORKERS), "--request-timeout-ms", "600") as srv:
        wait_for("both workers serving", lambda: len(_workers_of(srv.pid)) == WORKERS, 20)
        for w in ("1", "2"):
            _connection_to(srv.port, w).close()  # each has its copy and answers
        yield srv


def test_every_process_answers_reads_and_the_answers_agree(node: ServerProcess) -> None:
    seen: dict[str, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    status, _, _ = _request(conn, "POST", "/v1/nodes/agree", b"v1")
    assert status == 201
    for _ in range(60):
        c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        # The write was acknowledged before this read: a worker waits for it
        # only with the client's zxid (sequential reads are local).
        status, headers, body = _request(
            c, "GET", "/v1/nodes/agree", headers={"X-Coord-Min-Zxid": "1"}
        )
        c.close()
        assert status == 200, body
        assert json.loads(body)["data"] == "v1"
        assert headers["x-coord-node"] == "1"
        who = headers.get("x-coord-worker", "")
        seen[who] = seen.get(who, 0) + 1
    assert {"1", "2"} <= set(seen), seen


@pytest.mark.parametrize("worker", ["1", "2"])
def test_a_client_reads_its_own_writes_on_a_worker(node: ServerProcess, worker: str) -> None:
    conn = _connection_to(node.port, worker)
    path = f"/v1/nodes/own-{worker}"
    status, headers, _ = _request(conn, "POST", path, b"0")
    assert status == 201
    assert headers["x-coord-worker"] == worker  # passed to the node, answered here
    for i in range(1, 30):
        status, _, _ = _request(conn, "PUT", path, str(i).encode())
        assert status == 200
        # The very next read, on the same connection, from the worker's copy.
        status, headers, body = _request(conn, "GET", path)
        assert status == 200 and headers["x-coord-worker"] == worker
        doc = json.loads(body)
        assert doc["data"] == str(i) and doc["stat"]["version"] == i
    conn.close()


def test_a_refusal_is_never_newer_than_the_next_read(node: ServerProcess) -> None:
    """A write the node refused on a state the copy had not applied yet: the
    next read on the same connection sees at least that state."""
    on_worker = _connection_to(node.port, "1")
    on_node = _connection_to(node.port, "")
    for i in range(30):
        path = f"/v1/nodes/refused-{i}"
        assert _request(on_node, "POST", path, b"x")[0] == 201
        assert _request(on_worker, "POST", path, b"y")[0] == 409  # NodeExists
        status, headers, body = _request(on_worker, "GET", path)
        assert status == 200 and headers["x-coord-worker"] == "1", body


def test_min_zxid_and_linearizable_reads_on_a_worker(node: ServerProcess) -> None:
    conn = _connection_to(node.port, "1")
    status, headers, _ = _request(conn, "POST", "/v1/nodes/lin", b"x")
    zxid = int(headers["x-coord-zxid"])
    status, headers, body = _request(
        conn, "GET", "/v1/nodes/lin", headers={"X-Coord-Min-Zxid": str(zxid + 1000)}
    )
    assert status == 504, body
    assert json.loads(body)["code"] == "ZxidNotReached"
    assert headers["x-coord-worker"] == "1"
    # Written through another process: a linearizable read here sees it.
    other = _connection_to(node.port, "")
    status, _, _ = _request(other, "PUT", "/v1/nodes/lin", b"y")
    assert status == 200
    status, headers, body = _request(conn, "GET", "/v1/nodes/lin?consistency=linearizable")
    assert status == 200 and headers["x-coord-worker"] == "1"
    assert json.loads(body)["data"] == "y"


def test_the_feed_is_not_reachable_over_tcp(node: ServerProcess) -> None:
    for worker in ("", "1", "2"):
        conn = _connection_to(node.port, worker)
        for method, path in (("GET", "/internal/v1/feed"), ("POST", "/internal/v1/read-index")):
            status, _, body = _request(conn, method, path)
            assert status == 404, (worker, path, body)
        conn.close()


def test_watches_on_a_worker_see_every_write(node: ServerProcess) -> None:
    conn = _connection_to(node.port, "2")
    status, headers, _ = _request(conn, "POST", "/v1/nodes/watched", b"0")
    start = int(headers["x-coord-zxid"])
    writer = _connection_to(node.port, "1")
    for i in range(5):
        assert _request(writer, "PUT", "/v1/nodes/watched", str(i).encode())[0] == 200
    # A long poll from before the writes, on worker 2: every change, in order.
    events: list[dict[str, object]] = []
    since = start
    deadline = time.monotonic() + 10
    while len(events) < 5 and time.monotonic() < deadline:
        status, headers, body = _request(
            conn, "GET", f"/v1/watch/watched?since={since}&timeout=2&data=true"
        )
        assert status == 200 and headers["x-coord-worker"] == "2", body
        doc = json.loads(body)
        events += doc["events"]
        since = doc["zxid"]
    assert [e["data"] for e in events] == ["0", "1", "2", "3", "4"]


def test_a_killed_worker_is_replaced_and_a_new_copy_resumes_old_watches(
    node: ServerProcess,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    status, headers, _ = _request(conn, "POST", "/v1/nodes/before-restart", b"old")
    old_zxid = int(headers["x-coord-zxid"])
    conn.close()
    before = _workers_of(node.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        "a new worker in place of the killed one",
        lambda: len(after := _workers_of(node.pid)) == WORKERS and victim not in after,
        20,
    )
    for w in ("1", "2"):
        c = _connection_to(node.port, w)
        # The new copy starts after old_zxid: a watch resumed from before it
        # is answered by the node, which still has the events.
        status, _, body = _request(c, "GET", f"/v1/watch/before-restart?since={old_zxid - 1}")
        assert status == 200, body
        assert [e["type"] for e in json.loads(body)["events"]] == ["created"]
        c.close()


def test_read_workers_in_a_cluster_follow_the_leader(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 3, "--read-workers", "1") as cluster:
        leader = cluster.leader()
        follower = next(m for m in cluster if m.node_id != leader)
        conn = _connection_to(follower.client_port, "1")
        status, headers, _ = _request(conn, "POST", "/v1/nodes/c", b"1")
        assert status == 201, headers
        assert headers["x-coord-leader"] == str(leader)
        status, headers, body = _request(conn, "GET", "/v1/nodes/c")
        assert status == 200 and json.loads(body)["data"] == "1"
        assert headers["x-coord-worker"] == "1" and headers["x-coord-leader"] == str(leader)
        status, _, body = _request(conn, "GET", "/v1/nodes/c?consistency=linearizable")
        assert status == 200, body
        # The follower's process killed outright: its worker does not outlive it.
        worker_pids = _workers_of(follower.pid)
        assert len(worker_pids) == 1
        cluster.kill(follower.node_id)
        wait_for(
            "the worker gone with its node",
            lambda: all(_gone(p) for p in worker_pids),
            15,
        )
