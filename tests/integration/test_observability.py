"""What an operator sees of a real three-node cluster: request ids that
follow a forwarded write to the leader and back, structured log lines, the
metrics of requests, saves and forwarding, and ZooKeeper's mntr figures."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.cluster import Cluster, start_cluster

DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    args = ("--log-format", "json", "--log-level", "debug", "--access-log")
    with start_cluster(tmp_path_factory.mktemp("observe"), 3, *args) as c:
        yield c


def json_lines(log: str) -> list[dict]:
    return [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]


def until_logged(path: Path, request_id: str) -> list[dict]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = [r for r in json_lines(path.read_text()) if r.get("request_id") == request_id]
        found += [
            r for r in json_lines(path.read_text()) if request_id in r["msg"] and r not in found
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_a_request_id_follows_a_forwarded_write(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(m for m in cluster if m.node_id != leader)
    r = httpx.post(
        f"{follower.url}/v1/nodes/traced",
        content=b"12345",
        headers={"X-Request-Id": "op-7f3a"},
    )
    assert r.status_code == 201 and r.headers["X-Request-Id"] == "op-7f3a"
    # Every log line is one JSON object; the follower's access line and the
    # leader's line about the forwarded write name the same request.
    (access,) = [
        r for r in until_logged(follower.log_path, "op-7f3a") if r["logger"].endswith("access")
    ]
    assert access["node"] == follower.node_id and "POST /v1/nodes/traced 201" in access["msg"]
    on_leader = until_logged(cluster[leader].log_path, "op-7f3a")
    assert any("forwarded by node" in r["msg"] and r["node"] == leader for r in on_leader)
    # Without one, the server makes one up and answers it.
    made = httpx.get(f"{follower.url}/v1/nodes/traced").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", made)


def test_metrics_count_requests_saves_and_forwarding(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(m for m in cluster if m.node_id != leader)
    httpx.put(f"{follower.url}/v1/nodes/sized", content=b"x" * 1000)
    httpx.get(f"{follower.url}/v1/nodes/missing")
    text = httpx.get(f"{follower.url}/metrics").text
    route = 'route="/v1/nodes{path}"'
    assert metric(text, f'httpcoord_http_requests_total{{method="PUT",{route},status="201"}}') >= 1
    assert metric(text, f'httpcoord_http_requests_total{{method="GET",{route},status="404"}}') >= 1
    assert metric(text, "httpcoord_forwarded_writes_total") >= 1
    assert metric(text, "httpcoord_log_save_seconds_count") >= 1
    assert metric(text, "httpcoord_znode_data_bytes") >= 1000
    assert metric(text, "httpcoord_leader_changes_total") >= 1
    on_leader = httpx.get(f"{cluster[leader].url}/metrics").text
    assert metric(on_leader, "httpcoord_forwarded_writes_received_total") >= 1


def test_stats_give_zookeepers_mntr_figures(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(m for m in cluster if m.node_id != leader)
    lead = httpx.get(f"{cluster[leader].url}/v1/stats").json()
    assert lead["zk_server_state"] == "leader"
    assert lead["zk_followers"] == 2
    assert lead["zk_znode_count"] >= 1 and lead["zk_open_file_descriptor_count"] > 0
    deadline = time.monotonic() + DEADLINE_S
    while lead["zk_synced_followers"] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        lead = httpx.get(f"{cluster[leader].url}/v1/stats").json()
    assert lead["zk_synced_followers"] == 2
    other = httpx.get(f"{follower.url}/v1/stats").json()
    assert other["zk_server_state"] == "follower" and "zk_followers" not in other
    assert other["zk_packets_received"] >= 1
    assert other["zk_min_latency"] <= other["zk_avg_latency"] <= other["zk_max_latency"]
