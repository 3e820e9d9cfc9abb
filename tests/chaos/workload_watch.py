"""Watchers following the whole tree over SSE (``GET /v1/watch?recursive=true``),
each on a random node, dropping its stream now and then (after a random
lifetime, a read timeout or a broken connection) and resuming on another
random node with ``Last-Event-ID``: the last txn it received whole.

As a browser's EventSource does, a watcher takes the events of one txn as
received only once the frame carrying the txn's ``id:`` has arrived; events
of a txn cut off mid-way are dropped, and the resume replays the whole txn.

What it was owed: once the cluster has healed, every node replays its kept
history (``replay_committed``: long-polls with ``since`` from 0, or from the
oldest zxid it still keeps), every two nodes must agree on the events of each
zxid both have, and their union is the committed stream. Each watcher's
stream (a new one after a ``410 Compacted``, which leaves a gap) then goes
through ``check_watch_stream``: zxids in order, nothing twice, and from its
first zxid to its last exactly the committed events.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import IO

from tests.chaos.checkers import Anomaly, WatchEvent, check_watch_stream
from tests.chaos.history import History
from tests.chaos.workload import ClientThreads, Workload, problem_code
from tests.integration.cluster import Cluster, http

WATCH_KEY = "watch"
PREFIX = "/"
# A stream that says nothing for this long is dropped and resumed elsewhere
# (its node may be stopped or cut off from the leader).
READ_TIMEOUT_S = 2.0
LIFETIME_S = (0.5, 4.0)
LINES_PER_STREAM_MAX = 1_000_000
REPLAY_ROUNDS_MAX = 1000
REPLAY_TIMEOUT_S = 30.0


def event_of(doc: dict[str, object]) -> WatchEvent:
    return WatchEvent(int(str(doc["zxid"])), str(doc["type"]), str(doc["path"]))


@dataclass
class Watchers(Workload):
    cluster: Cluster
    history: History
    seed: int
    clients: int = 2  # watchers
    # One stream per watcher and gap-free stretch: "watch-<w>.<stretch>".
    streams: dict[str, list[WatchEvent]] = field(default_factory=dict)
    committed: list[WatchEvent] = field(default_factory=list)
    replay_floor: int = 0  # the replayed history starts after this zxid
    replay_anomalies: list[Anomaly] = field(default_factory=list)
    threads: ClientThreads = field(default_factory=ClientThreads)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    keys = (WATCH_KEY,)

    def _client(self, w: int, rng: random.Random, end_s: float) -> None:
        ids = sorted(m.node_id for m in self.cluster)
        last_id, stretch = 0, 0
        received = self._stream(f"watch-{w}.{stretch}")
        while self.threads.running(end_s):
            node = rng.choice(ids)
            op = self.history.invoke(f"watch-{w}", "stream", WATCH_KEY, (node, last_id))
            request = urllib.request.Request(
                self.cluster[node].url + "/v1/watch?recursive=true",
                headers={"Accept": "text/event-stream", "Last-Event-ID": str(last_id)},
            )
            try:
                response = urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
            except urllib.error.HTTPError as exc:
                body = exc.read()
                code = problem_code(body)
                self.history.fail(op, code or str(exc.code))
                if code == "Compacted":
                    # The events up to its oldest kept zxid are gone: a new stretch.
                    last_id = int(json.loads(body)["oldest_zxid"])
                    stretch += 1
                    received = self._stream(f"watch-{w}.{stretch}")
                self.threads.pause(0.05)
                continue
            except OSError as exc:
                self.history.fail(op, type(exc).__name__)
                self.threads.pause(0.05)
                continue
            lifetime_end_s = min(end_s, time.monotonic() + rng.uniform(*LIFETIME_S))
            with response:
                last_id, count = self._follow(response, received, last_id, lifetime_end_s)
            self.history.ok(op, count)

    def _stream(self, name: str) -> list[WatchEvent]:
        with self._lock:
            return self.streams.setdefault(name, [])

    def _follow(
        self, response: IO[bytes], received: list[WatchEvent], last_id: int, end_s: float
    ) -> tuple[int, int]:
        """Read frames until ``end_s``, the stream's end or a read error: the
        last id received and how many events were taken."""
        pending: list[WatchEvent] = []
        fields: dict[str, str] = {}
        taken = 0
        try:
            for _ in range(LINES_PER_STREAM_MAX):
                if not self.threads.running(end_s):
                    break
                line = response.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line.startswith(b":"):
                    continue  # a keepalive comment
                if line:
                    name, _, value = line.decode().partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields and fields.get("event") != "overflow":
                    pending.append(event_of(json.loads(fields["data"])))
                if "id" in fields:
                    # The txn is whole: its events count as received.
                    last_id = int(fields["id"])
                    received.extend(pending)
                    taken += len(pending)
                    pending.clear()
                fields = {}
        except OSError:
            pass  # a timeout or a broken stream: resume elsewhere
        return last_id, taken

    # ---- after the run -------------------------------------------------------------------

    def replay(self) -> None:
        self.committed, self.replay_floor, self.replay_anomalies = replay_committed(self.cluster)

    def check(self) -> list[Anomaly]:
        found = list(self.replay_anomalies)
        for name, events in sorted(self.streams.items()):
            kept = [e for e in events if e.zxid > self.replay_floor]
            for anomaly in check_watch_stream(self.committed, kept, PREFIX):
                found.append(Anomaly(anomaly.kind, f"{name}: {anomaly.message}", anomaly.op_ids))
        return found

    def summary(self) -> str:
        events = sum(len(v) for v in self.streams.values())
        return (
            f"{events} events received over {len(self.streams)} streams,"
            f" {len(self.committed)} committed from zxid {self.replay_floor}"
        )


def replay_node(url: str) -> tuple[int, list[WatchEvent]]:
    """Every event a node keeps: (the zxid its history starts after, the events)."""
    floor, since = 0, 0
    events: list[WatchEvent] = []
    for _ in range(REPLAY_ROUNDS_MAX):
        status, headers, body = http(
            "GET",
            f"{url}/v1/watch?recursive=true&since={since}&timeout=0",
            timeout=REPLAY_TIMEOUT_S,
        )
        if status == 410:
            floor = since = int(json.loads(body)["oldest_zxid"])
            events.clear()
            continue
        assert status == 200, (status, body)
        doc = json.loads(body)
        events += [event_of(e) for e in doc["events"]]
        since = int(doc["zxid"])
        if since >= int(headers["X-Coord-Zxid"]) and not doc["truncated"]:
            return floor, events
    raise AssertionError(f"{url}: no end to the replay in {REPLAY_ROUNDS_MAX} rounds")


def replay_committed(cluster: Cluster) -> tuple[list[WatchEvent], int, list[Anomaly]]:
    """The union of every node's replay, the zxid it starts after, and an
    anomaly for each zxid two nodes give different events."""
    by_zxid: dict[int, tuple[int, list[WatchEvent]]] = {}
    found: list[Anomaly] = []
    floors = []
    for m in cluster:
        floor, events = replay_node(m.url)
        floors.append(floor)
        mine: dict[int, list[WatchEvent]] = {}
        for e in events:
            mine.setdefault(e.zxid, []).append(e)
        for zxid, events_of_txn in mine.items():
            txn = events_of_txn
            other = by_zxid.setdefault(zxid, (m.node_id, txn))
            if other[1] != txn:
                found.append(
                    Anomaly(
                        "replicas_disagree",
                        f"zxid {zxid}: node {other[0]} replays {other[1][:3]},"
                        f" node {m.node_id} {txn[:3]}",
                    )
                )
    committed = [e for zxid in sorted(by_zxid) for e in by_zxid[zxid][1]]
    return committed, min(floors, default=0), found
