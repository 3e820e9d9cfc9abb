"""Disk faults on real server processes.

- A data dir that fills up (a small tmpfs this test mounts, filled by a
  filler file): that node answers writes 507 DiskFull at once, keeps
  answering reads, is not ready; the others keep committing; once the filler
  is gone it catches up by itself and every node converges, holding every
  acknowledged write. A leader whose disk fills is replaced.
- A node started on a copy of its data dir taken mid-write (the database,
  its -wal and -shm copied at different instants): it refuses to start with
  a message, or starts and converges holding every acknowledged write; it
  never answers a read with data the cluster does not have.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos.disk import fill, free, tmpfs
from tests.chaos.harness import chaos_cluster
from tests.integration.cluster import (
    FAST_ELECTIONS,
    Cluster,
    Member,
    get_json,
    http,
    wait_for,
)
from tests.integration.conftest import free_port

pytestmark = pytest.mark.chaos

VALUE_BYTES = 2048  # big enough that a few hundred writes need new pages
WRITE_TIMEOUT_S = 3.0
CONVERGE_S = 30.0
AMNESIA_S = 10.0  # a restored copy that will converge does so long before
DB_FILE = "httpcoord.sqlite3"


# ---- the disk -------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three ready nodes, each with its data dir on a tmpfs of its own (the
    test fills the one it picks once it knows who leads)."""
    with chaos_cluster(tmp_path, 3, data_fs=tmpfs) as (made, _):
        yield made


# ---- the writers ----------------------------------------------------------------------


@dataclass
class Writer:
    """Creates /disk/k0, /disk/k1, ... (value: the number, padded) on the
    nodes given, round robin, until stopped; records what was acknowledged."""

    urls: list[str]
    acked: dict[int, int] = field(default_factory=dict)  # key number -> zxid
    answers: list[int] = field(default_factory=list)  # statuses, in order
    stop: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, ops_max: int = 100_000) -> None:
        for _ in range(ops_max):
            if self.stop.is_set():
                return
            with self._lock:
                i = self._next
                self._next += 1
            url = self.urls[i % len(self.urls)]
            try:
                status, headers, _ = http(
                    "POST", f"{url}/v1/nodes/disk/k{i}", value(i), timeout=WRITE_TIMEOUT_S
                )
            except OSError:
                status, headers = 0, {}
            self.answers.append(status)
            if status == 201:
                self.acked[i] = int(headers["X-Coord-Zxid"])
            elif status in (0, 503, 507):
                time.sleep(0.01)  # refused or unknown: do not spin

    def acked_count(self) -> int:
        return len(self.acked)


def value(i: int) -> bytes:
    return str(i).encode().ljust(VALUE_BYTES, b".")


@contextmanager
def writing(urls: list[str], threads: int = 2) -> Iterator[Writer]:
    writer = Writer(urls)
    workers = [threading.Thread(target=writer.run, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        for t in workers:
            t.join(WRITE_TIMEOUT_S * 3)


def write(url: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{url}/v1/nodes{path}", body, timeout=WRITE_TIMEOUT_S)


def assert_all_acked_readable(member: Member, writer: Writer) -> None:
    for i in sorted(writer.acked):
        status, _, body = http("GET", f"{member.url}/v1/nodes/disk/k{i}", timeout=5.0)
        assert status == 200, (member.node_id, i, status, body)
        assert json.loads(body)["data"] == value(i).decode(), (member.node_id, i)


def converge(cluster: Cluster) -> None:
    try:
        wait_for("every node at one zxid with one digest", cluster.converged, CONVERGE_S, 0.2)
    except AssertionError as exc:
        logs = "\n".join(f"--- node {m.node_id}\n{m.log()[-2000:]}" for m in cluster)
        raise AssertionError(f"{exc}\nstates: {cluster.states()}\n{logs}") from None


# ---- a full disk ----------------------------------------------------------------------


def test_a_follower_whose_disk_fills_refuses_writes_and_rejoins_when_space_is_freed(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    full = next(m for m in cluster if m.node_id != leader)
    other = next(m for m in cluster if m.node_id not in (leader, full.node_id))
    assert write(cluster[leader].url, "/disk")[0] == 201

    with writing([cluster[leader].url, other.url]) as writer:
        wait_for("writes acknowledged", lambda: writer.acked_count() >= 20, 20)
        fill(full.data_dir)

        def refused() -> bool:
            status, _, body = write(full.url, "/disk/on-the-full-node", b"x" * VALUE_BYTES)
            if status != 507:
                return False  # its saves still found room (an overwritten WAL)
            problem = json.loads(body)
            assert problem["code"] == "DiskFull", (status, body)
            assert str(full.data_dir) in problem["detail"]
            return True

        # A write to the full node is answered at once, never left hanging.
        wait_for("the full node refuses writes with DiskFull", refused, 20, 0.2)
        started = time.monotonic()
        assert write(full.url, "/disk/refused")[0] == 507
        assert time.monotonic() - started < 1.0
        assert http("GET", full.url + "/ready")[0] == 503
        # Reads still answer from what it has.
        status, _, _ = http("GET", full.url + "/v1/nodes/disk")
        assert status == 200
        # The other two keep committing.
        acked_then = writer.acked_count()
        wait_for(
            "the others commit without the full node",
            lambda: writer.acked_count() >= acked_then + 20,
            20,
        )
        assert full.alive
    free(full.data_dir)

    wait_for("the node is ready again", lambda: http("GET", full.url + "/ready")[0] == 200, 20)
    converge(cluster)
    assert_all_acked_readable(full, writer)
    assert write(full.url, "/disk/after")[0] == 201
    assert "no space left" in full.log()


def test_a_leader_whose_disk_fills_is_replaced_and_rejoins(cluster: Cluster) -> None:
    old = cluster.leader()
    others = [m.node_id for m in cluster if m.node_id != old]
    assert write(cluster[old].url, "/disk")[0] == 201

    with writing([cluster[i].url for i in others]) as writer:
        wait_for("writes acknowledged", lambda: writer.acked_count() >= 20, 20)
        fill(cluster[old].data_dir)
        # Frozen, it sends no heartbeats: the other two elect one of them.
        new = cluster.leader(among=others, timeout=20, not_=old)
        assert new in others
        acked_then = writer.acked_count()
        wait_for("the new leader commits", lambda: writer.acked_count() >= acked_then + 20, 20)
        status, _, body = write(cluster[old].url, "/disk/refused")
        assert status == 507, (status, body)
    free(cluster[old].data_dir)

    wait_for(
        "the old leader follows the new one",
        lambda: cluster.leader_named_by(old) == new,
        20,
    )
    converge(cluster)
    assert_all_acked_readable(cluster[old], writer)


# ---- a copy taken mid-write ---------------------------------------------------------------


def test_a_node_started_from_a_copy_taken_mid_write_refuses_or_converges(
    tmp_path: Path,
) -> None:
    members = [Member(i, free_port(), free_port(), tmp_path / f"node{i}") for i in (1, 2, 3)]
    with Cluster(members, FAST_ELECTIONS) as cluster:
        for m in cluster:
            cluster.start(m.node_id)
        cluster.wait_ready()
        leader = cluster.leader()
        f = next(m for m in cluster if m.node_id != leader)
        assert write(cluster[leader].url, "/disk")[0] == 201
        copy = tmp_path / "copy"
        copy.mkdir()
        with writing([cluster[leader].url]) as writer:
            wait_for("writes acknowledged", lambda: writer.acked_count() >= 50, 20)
            # Each file at its own instant, writes landing in between.
            for suffix in ("", "-wal", "-shm"):
                src = f.data_dir / (DB_FILE + suffix)
                if src.exists():
                    shutil.copyfile(src, copy / (DB_FILE + suffix))
                wait_for("more writes", more_writes(writer, 10), 20)
            cluster.kill(f.node_id)
            f.data_dir.rename(tmp_path / "original")
            copy.rename(f.data_dir)
            cluster.start(f.node_id)

            def settled() -> str:
                if not f.alive:
                    return "exited"
                try:
                    return "ready" if http("GET", f.url + "/ready", timeout=1.0)[0] == 200 else ""
                except OSError:
                    return ""

            outcome = wait_for("the copy starts or refuses", settled, 30, 0.1)
            if outcome == "ready":
                # Whatever it serves before it caught up must be what the
                # cluster wrote: write-once keys, each with its own value
                # (unless it stopped meanwhile: see below).
                with contextlib.suppress(OSError):
                    check_reads_are_the_clusters(f)
        if outcome == "ready":
            # It started; the first heartbeat of the leader tells it whether
            # its log still holds everything it acknowledged.
            def ended() -> str:
                if not f.alive:
                    return "exited"
                return "converged" if cluster.converged() else ""

            outcome = wait_for("the copy converges or stops", ended, AMNESIA_S, 0.2)
        if outcome == "exited":
            # The copy lost entries it had acknowledged: it says so and stops.
            assert f.proc is not None and f.proc.returncode == 1
            assert "entries it acknowledged are lost" in f.log(), f.log()[-2000:]
            return
        assert_all_acked_readable(f, writer)
        check_reads_are_the_clusters(f)


def more_writes(writer: Writer, count: int) -> Callable[[], bool]:
    target = writer.acked_count() + count
    return lambda: writer.acked_count() >= target


def check_reads_are_the_clusters(member: Member) -> None:
    status, _, body = http("GET", f"{member.url}/v1/nodes/disk?children=true", timeout=5.0)
    assert status == 200, (status, body)
    for name in get_json(f"{member.url}/v1/nodes/disk?children=true")["children"]:
        if not name.startswith("k"):
            continue
        status, _, body = http("GET", f"{member.url}/v1/nodes/disk/{name}", timeout=5.0)
        if status == 404:
            continue  # not applied here yet
        assert status == 200, (status, body)
        assert json.loads(body)["data"] == value(int(name[1:])).decode(), name
