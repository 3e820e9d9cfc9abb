"""A replicated cluster of real processes on 127.0.0.1: any node answers,
writes survive the leader's death, a minority refuses promptly, sessions and
watches carry across nodes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.integration.cluster import (
    ELECTION_TIMEOUT_MAX_S,
    Cluster,
    get_json,
    http,
    start_cluster,
)


@pytest.fixture
def cluster3(tmp_path: Path) -> Cluster:
    with start_cluster(tmp_path, 3) as cluster:
        yield cluster


def _converged(cluster: Cluster, timeout: float = 15.0) -> dict[int, tuple[int, str]]:
    """Every live node at one zxid with one digest (polled)."""
    deadline = time.monotonic() + timeout
    seen: dict[int, tuple[int, str]] = {}
    while time.monotonic() < deadline:
        seen = {}
        for m in cluster:
            if m.alive:
                me = next(
                    r for r in get_json(m.url + "/v1/cluster")["members"] if r["id"] == m.node_id
                )
                seen[m.node_id] = (me["zxid"], me["digest"])
        if len(set(seen.values())) == 1:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"nodes did not converge: {seen}")


def test_any_node_takes_writes_and_reads_its_own(cluster3: Cluster) -> None:
    leader = cluster3.leader()
    follower = next(m for m in cluster3 if m.node_id != leader)
    status, headers, body = http("POST", follower.url + "/v1/nodes/app", b"v1")
    assert status == 201, body
    assert headers["X-Coord-Node"] == str(follower.node_id)
    assert headers["X-Coord-Leader"] == str(leader)
    zxid = json.loads(body)["zxid"]
    # Read-your-writes on the node that took the write: no header needed.
    got = get_json(follower.url + "/v1/nodes/app")
    assert got["data"] == "v1" and got["stat"]["mzxid"] == zxid
    # On any other node, X-Coord-Min-Zxid makes it wait for the write.
    for m in cluster3:
        status, _, body = http(
            "GET", m.url + "/v1/nodes/app", headers={"X-Coord-Min-Zxid": str(zxid)}
        )
        assert status == 200 and json.loads(body)["data"] == "v1"
        status, _, body = http("GET", m.url + "/v1/nodes/app?consistency=linearizable")
        assert status == 200 and json.loads(body)["data"] == "v1"
    # A zxid nobody has reached: 504 with its own code, after the bound.
    status, _, body = http(
        "GET",
        follower.url + "/v1/nodes/app",
        headers={"X-Coord-Min-Zxid": str(zxid + 1000)},
        timeout=30,
    )
    assert status == 504 and json.loads(body)["code"] == "ZxidNotReached"
    # So does a watch resumed from a zxid this node has not applied (it may
    # come from a node that is ahead): it waits, then gives up the same way.
    status, _, body = http("GET", follower.url + f"/v1/watch/app?since={zxid + 1000}", timeout=30)
    assert status == 504 and json.loads(body)["code"] == "ZxidNotReached"
    view = get_json(follower.url + "/v1/cluster")
    assert view["leader"] == leader
    assert sorted(r["id"] for r in view["members"]) == [1, 2, 3]
    assert all(r["reachable"] and r["voter"] for r in view["members"])
    _converged(cluster3)


async def _writer(
    http_: aiohttp.ClientSession, urls: list[str], w: int, acked: set[str], stop: asyncio.Event
) -> None:
    i = 0
    while not stop.is_set() and i < 5000:
        url = urls[(w + i) % len(urls)]
        name = f"/kill/w{w}-{i:05d}"
        try:
            async with http_.post(url + "/v1/nodes" + name, data=b"x") as r:
                if r.status == 201:
                    acked.add(name)
                else:
                    await r.read()  # 503 Unavailable / OutcomeUnknown while the leader is gone
        except (aiohttp.ClientError, TimeoutError):
            pass  # the node we talked to died
        i += 1


async def _kill_leader_under_writers(cluster: Cluster, writers: int) -> tuple[set[str], float]:
    acked: set[str] = set()
    stop = asyncio.Event()
    urls = [m.url for m in cluster]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(urls[0] + "/v1/nodes/kill", data=b"") as r:
            assert r.status == 201
        tasks = [
            asyncio.create_task(_writer(session, urls, w, acked, stop)) for w in range(writers)
        ]
        while len(acked) < 300:
            await asyncio.sleep(0.02)
        old = await asyncio.to_thread(cluster.leader)
        cluster.kill(old)
        killed_at = time.monotonic()
        survivors = [m.node_id for m in cluster if m.node_id != old]
        new = await asyncio.to_thread(cluster.leader, survivors, 10.0, old)
        elected_after = time.monotonic() - killed_at
        assert new != old
        count = len(acked)
        while len(acked) < count + 300:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*tasks)
    return acked, elected_after


def test_killing_the_leader_under_32_writers_loses_no_acknowledged_write(cluster3: Cluster) -> None:
    acked, elected_after = asyncio.run(_kill_leader_under_writers(cluster3, 32))
    # Two election timeouts (measured here: 0.26-0.43 s), plus half a second
    # for polling /ready on a loaded two-core machine.
    print(f"new leader {elected_after:.3f} s after the kill")
    assert elected_after < 2 * ELECTION_TIMEOUT_MAX_S + 0.5, elected_after
    dead = next(m.node_id for m in cluster3 if not m.alive)
    cluster3.start(dead)
    cluster3.wait_ready()
    _converged(cluster3)
    for m in cluster3:
        children = set(get_json(m.url + "/v1/nodes/kill?children=true")["children"])
        missing = {a for a in acked if a.rsplit("/", 1)[1] not in children}
        assert not missing, f"node {m.node_id} lost {len(missing)} acknowledged writes"


def test_a_minority_refuses_writes_promptly_and_keeps_serving_reads(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 3, "--request-timeout-ms", "2000") as cluster:
        first = cluster.leader()
        assert http("POST", cluster[first].url + "/v1/nodes/keep", b"kept")[0] == 201
        _converged(cluster)
        lonely = next(m for m in cluster if m.node_id != first)
        for m in cluster:
            if m.node_id != lonely.node_id:
                cluster.kill(m.node_id)
        deadline = time.monotonic() + 5
        while http("GET", lonely.url + "/ready")[0] != 503:
            assert time.monotonic() < deadline, "the minority still says it is ready"
            time.sleep(0.05)
        started = time.monotonic()
        status, headers, body = http("POST", lonely.url + "/v1/nodes/lost", b"x", timeout=30)
        assert status == 503, body
        assert json.loads(body)["code"] in ("Unavailable", "OutcomeUnknown")
        assert "Retry-After" in headers
        status, _, body = http(
            "GET", lonely.url + "/v1/nodes/keep?consistency=linearizable", timeout=30
        )
        assert status == 503, body
        assert time.monotonic() - started < 2 * 2.0 + 1.0  # within the request timeout each
        status, _, body = http("GET", lonely.url + "/v1/nodes/keep")
        assert status == 200 and json.loads(body)["data"] == "kept"


def test_sessions_and_ephemerals_survive_a_leader_kill(cluster3: Cluster) -> None:
    leader = cluster3.leader()
    follower = next(m for m in cluster3 if m.node_id != leader)
    status, _, body = http(
        "POST", follower.url + "/v1/sessions", json.dumps({"ttl_ms": 3000}).encode()
    )
    assert status == 201, body
    sid = json.loads(body)["id"]
    status, _, body = http(
        "POST", follower.url + "/v1/nodes/eph?ephemeral=true", b"", headers={"X-Coord-Session": sid}
    )
    assert status == 201, body
    cluster3.kill(leader)
    survivors = [m.node_id for m in cluster3 if m.alive]
    # Heartbeat through the election and for longer than the ttl afterwards.
    end = time.monotonic() + 6
    while time.monotonic() < end:
        status, _, body = http("POST", follower.url + f"/v1/sessions/{sid}/heartbeat")
        assert status in (200, 503), body  # 503 only while no leader is known
        time.sleep(0.3)
    assert cluster3.leader(survivors, not_=leader) != leader
    for i in survivors:
        assert http("GET", cluster3[i].url + "/v1/nodes/eph")[0] == 200
    # Closing it removes the ephemeral on every node in the same txn.
    status, _, body = http("DELETE", follower.url + f"/v1/sessions/{sid}")
    assert status == 200, body
    zxid = json.loads(body)["zxid"]
    for i in survivors:
        status, _, _ = http(
            "GET", cluster3[i].url + "/v1/nodes/eph", headers={"X-Coord-Min-Zxid": str(zxid)}
        )
        assert status == 404


def test_an_unheard_session_expires_through_the_leader(cluster3: Cluster) -> None:
    status, _, body = http(
        "POST", cluster3[1].url + "/v1/sessions", json.dumps({"ttl_ms": 2000}).encode()
    )
    assert status == 201, body
    sid = json.loads(body)["id"]
    http(
        "POST",
        cluster3[2].url + "/v1/nodes/gone?ephemeral=true",
        b"",
        headers={"X-Coord-Session": sid},
    )
    deadline = time.monotonic() + 10
    while http("GET", cluster3[3].url + "/v1/nodes/gone")[0] != 404:
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.1)
    assert http("POST", cluster3[3].url + f"/v1/sessions/{sid}/heartbeat")[0] == 404


async def _sse_events(url: str, headers: dict[str, str], want: int) -> tuple[list[str], int]:
    """The paths of at least ``want`` events, read as a browser would, ending
    at a whole txn; and the last id seen (where a browser would resume)."""
    paths: list[str] = []
    last_id = -1
    sse = {"Accept": "text/event-stream", **headers}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
        s.get(url, headers=sse) as r,
    ):
        assert r.status == 200
        frame_id: int | None = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                frame_id = int(line[4:])
            elif line.startswith("data: "):
                paths.append(json.loads(line[6:])["path"])
            elif line == "" and frame_id is not None:
                last_id, frame_id = frame_id, None
                if len(paths) >= want:
                    break
    return paths, last_id


def test_an_sse_stream_resumed_on_another_node_is_gapless(cluster3: Cluster) -> None:
    for i in range(10):
        assert http("POST", cluster3[1].url + f"/v1/nodes/s{i}", b"")[0] == 201
    first, last_id = asyncio.run(
        _sse_events(cluster3[2].url + "/v1/watch/?recursive=true&since=0", {}, 5)
    )
    # More writes, then resume on node 3 from the last id node 2 gave.
    for i in range(10, 15):
        assert http("POST", cluster3[1].url + f"/v1/nodes/s{i}", b"")[0] == 201
    rest, _ = asyncio.run(
        _sse_events(
            cluster3[3].url + "/v1/watch/?recursive=true",
            {"Last-Event-ID": str(last_id)},
            2 * 15 - len(first),  # each create is two events: the node's and its parent's
        )
    )
    created = [p for p in first + rest if p.startswith("/s")]
    assert created == [f"/s{i}" for i in range(15)], (first, rest)


def _metric(url: str, name: str) -> float:
    status, _, body = http("GET", url + "/metrics")
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith((name + " ", name + "_total ")):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def _write_many(urls: list[str], prefix: str, count: int, writers: int = 32) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:

        async def one(w: int) -> None:
            for i in range(w, count, writers):
                async with s.put(
                    f"{urls[i % len(urls)]}/v1/nodes/{prefix}/{i % 500}", data=b"%d" % i
                ) as r:
                    assert r.status in (200, 201), await r.text()

        await asyncio.gather(*(one(w) for w in range(writers)))


def _catch_up_through_a_snapshot(tmp_path: Path, writes: int, snapshot_entries: int) -> None:
    with start_cluster(tmp_path, 3, "--snapshot-entries", str(snapshot_entries)) as cluster:
        assert http("POST", cluster[1].url + "/v1/nodes/bulk", b"")[0] == 201
        leader = cluster.leader()
        behind = next(m.node_id for m in cluster if m.node_id != leader)
        cluster.kill(behind)
        urls = [m.url for m in cluster if m.alive]
        asyncio.run(_write_many(urls, "bulk", writes))
        assert _metric(cluster[leader].url, "httpcoord_snapshots") >= 1
        cluster.start(behind)
        cluster.wait_ready([behind], timeout=60)
        _converged(cluster, timeout=60)
        assert _metric(cluster[behind].url, "httpcoord_snapshots_installed") >= 1
        children = get_json(cluster[behind].url + "/v1/nodes/bulk?children=true")["children"]
        assert len(children) == min(writes, 500)


def test_a_node_that_missed_thousands_of_writes_catches_up_through_a_snapshot(
    tmp_path: Path,
) -> None:
    _catch_up_through_a_snapshot(tmp_path, 3000, 500)


@pytest.mark.chaos
def test_a_node_that_missed_100000_writes_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    _catch_up_through_a_snapshot(tmp_path, 100_000, 20_000)


def test_five_nodes_survive_two_failures(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 5) as cluster:
        first = cluster.leader()
        assert http("POST", cluster[first].url + "/v1/nodes/five", b"1")[0] == 201
        down = [first, next(m.node_id for m in cluster if m.node_id != first)]
        for i in down:
            cluster.kill(i)
        survivors = [m.node_id for m in cluster if m.alive]
        new = cluster.leader(survivors, not_=first)
        assert new in survivors
        for i in survivors:
            status, _, body = http("PUT", cluster[i].url + "/v1/nodes/five", str(i).encode())
            assert status == 200, body
        for i in down:
            cluster.start(i)
        cluster.wait_ready()
        _converged(cluster)


def test_settings_come_from_a_toml_file_and_the_environment_overrides_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.integration.conftest import REPO_ROOT, free_port

    client, peer, env_client = free_port(), free_port(), free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        f'id = 2\nlisten = "127.0.0.1:{client}"\ndata-dir = "{tmp_path / "data"}"\n'
        f'tick-ms = 20\n[peers]\n2 = "127.0.0.1:{peer}"\n'
    )
    env = {**os.environ, "HTTPCOORD_LISTEN": f"127.0.0.1:{env_client}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "httpcoord", "serve", "--config", str(config)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, headers, _ = http("GET", f"http://127.0.0.1:{env_client}/ready", timeout=1)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the node did not start"
            time.sleep(0.05)
        assert headers["X-Coord-Node"] == "2" and headers["X-Coord-Leader"] == "2"
        view = get_json(f"http://127.0.0.1:{env_client}/v1/cluster")
        assert [m["peer_url"] for m in view["members"]] == [f"127.0.0.1:{peer}"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_malformed_requests_on_the_peer_port_do_not_flood_the_log(tmp_path: Path) -> None:
    import socket

    with start_cluster(tmp_path, 1) as cluster:
        member = cluster[1]
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", member.peer_port), timeout=5) as s:
                s.sendall(b"GET /peer/v1/stream HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
                s.recv(100)
        # The node still answers, on both ports.
        assert http("POST", member.url + "/v1/nodes/still", b"up")[0] == 201
        log = member.log()
        assert log.count("httpcoord.peer.http") <= 2, log
        assert "Traceback" not in log, log
