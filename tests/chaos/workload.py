"""Workloads of the soak: threads that talk to random nodes and record what
they did, each bounded in count and time and stopping by themselves. This
module holds what they share (answers read as ok / fail / unknown, a base
that starts and stops client threads) and the register clients; the others
live beside it:

  workload_sets.py      sequential creates under one parent
  workload_sessions.py  sessions kept by heartbeats, ephemerals, their end
  workload_locks.py     the lock recipe, fenced accesses to a guarded log
  workload_watch.py     recursive SSE watchers that resume on any node

Register clients: threads doing reads, writes and compare-and-sets on a
few znodes through random nodes, every operation recorded in a ``History``
(invoke, then ok / fail / unknown), for the linearizability checker.

A register is one znode; its state is (data, version), as the
``VersionedRegister`` model has it:

  read   GET ?consistency=linearizable          ok (data, version)
  write  PUT (upsert, no version)               ok new version
  cas    PUT ?version=N                         ok new version, or fail BadVersion

How an answer is recorded: 2xx is ok; a refusal that says the write was
never logged (``Unavailable``, ``TooManyRequests``, ``BadVersion``), or a
connection refused (the node is down: nothing was sent), is a fail;
``OutcomeUnknown``, a timeout or a broken connection is unknown (it may have
happened). A read that fails is a fail: it changed nothing.

Every client also does default (sequentially consistent) reads, sending the
highest zxid it has seen as ``X-Coord-Min-Zxid``: the zxids it gets back must
never go backwards, whichever node answers.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from tests.chaos.checkers import Observation
from tests.chaos.history import History, Op
from tests.integration.cluster import Cluster, http

REQUEST_TIMEOUT_S = 3.0
DEFINITE_REFUSALS = frozenset({"Unavailable", "TooManyRequests", "BadVersion", "ZxidNotReached"})


def register_url(cluster: Cluster, node: int, key: str) -> str:
    return f"{cluster[node].url}/v1/nodes/chaos-{key}"


def problem_code(body: bytes) -> str:
    """The ``code`` of a problem+json answer ("" when the body is not one)."""
    try:
        return str(json.loads(body).get("code", ""))
    except (ValueError, AttributeError):
        return ""


# Refusals of a write that say it was never logged, so it never takes effect.
# ZxidNotReached is not among them for the other workloads: a write can commit
# while the node that forwarded it has not applied it yet.
WRITE_REFUSALS = frozenset(
    {
        "Unavailable",
        "TooManyRequests",
        "BadVersion",
        "NodeExists",
        "NoNode",
        "NotEmpty",
        "SessionExpired",
        "BadArguments",
        "NoChildrenForEphemerals",
    }
)


def send_write(
    history: History,
    op: Op,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> tuple[Op, Any]:
    """Send one write and record how it ended: (the completed op, its JSON answer
    when ok, else the refusal's code or None)."""
    try:
        status, _, answer = http(method, url, body, headers=headers, timeout=timeout_s)
    except OSError as exc:
        if never_sent(exc):
            return history.fail(op, "ConnectionRefused"), None
        return history.unknown(op, type(exc).__name__), None
    if 200 <= status < 300:
        doc = json.loads(answer)
        return history.ok(op, doc.get("path", doc.get("zxid"))), doc
    code = problem_code(answer)
    if code in WRITE_REFUSALS:
        return history.fail(op, code), code
    return history.unknown(op, code or str(status)), None


def never_sent(exc: OSError) -> bool:
    """Whether the request surely reached no server: its connection was refused
    (the node is down), so it cannot take effect."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError)


class ClientThreads:
    """The threads of one workload: started together, each ending by itself at
    its deadline or at ``stop()``, whichever comes first."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(
        self,
        target: Callable[[int, random.Random, float], None],
        count: int,
        seed: int,
        max_s: float,
    ) -> None:
        """``target(client, rng, end_monotonic_s)`` for clients 0..count-1."""
        end_s = time.monotonic() + max_s
        for c in range(count):
            rng = random.Random(seed * 1000 + c)
            t = threading.Thread(target=target, args=(c, rng, end_s), daemon=True)
            self._threads.append(t)
            t.start()

    def running(self, end_s: float) -> bool:
        return not self.stopping.is_set() and time.monotonic() < end_s

    def pause(self, seconds: float) -> None:
        """A client's think time; cut short by ``stop()``."""
        self.stopping.wait(seconds)

    def halt(self) -> None:
        """Ask every client to end, without waiting."""
        self.stopping.set()

    def stop(self, join_s: float = REQUEST_TIMEOUT_S * 3) -> None:
        self.stopping.set()
        for t in self._threads:
            t.join(join_s)


class Workload:
    """What the soak does with every workload: ``prepare`` makes its parent
    znodes, ``start`` runs its clients on threads that end by themselves at
    the deadline, ``halt`` asks them to end, ``stop`` waits for them."""

    cluster: Cluster
    seed: int
    clients: int
    threads: ClientThreads
    parents: ClassVar[tuple[str, ...]] = ()  # made before the clients start

    def prepare(self) -> None:
        node = min(m.node_id for m in self.cluster)
        for path in self.parents:
            status, _, body = http("POST", self.cluster[node].url + "/v1/nodes" + path, timeout=10)
            assert status == 201, (status, body)

    def start(self, max_s: float) -> None:
        self.threads.start(self._client, self.clients, self.seed, max_s)

    def halt(self) -> None:
        self.threads.halt()

    def stop(self) -> None:
        self.threads.stop()

    def _client(self, c: int, rng: random.Random, end_s: float) -> None:
        raise NotImplementedError


@dataclass
class RegisterClients(Workload):
    cluster: Cluster
    keys: tuple[str, ...]
    history: History
    seed: int
    clients: int = 6
    initial: str = "init"
    zxids_seen: dict[int, list[Observation]] = field(default_factory=dict)  # default reads
    threads: ClientThreads = field(default_factory=ClientThreads)

    def prepare(self) -> None:
        node = min(m.node_id for m in self.cluster)
        for key in self.keys:
            status, _, body = http(
                "POST", register_url(self.cluster, node, key), self.initial.encode(), timeout=10
            )
            assert status == 201, (status, body)

    def final_reads(self) -> None:
        """One linearizable read per key per node, once the cluster is whole."""
        for m in self.cluster:
            for key in self.keys:
                self._read(f"final-{m.node_id}", m.node_id, key)

    # ---- one client ---------------------------------------------------------------------

    def _client(self, c: int, rng: random.Random, end_s: float) -> None:
        ids = sorted(m.node_id for m in self.cluster)
        versions: dict[str, int] = {}
        n = 0
        self.zxids_seen[c] = []
        while self.threads.running(end_s):
            node, key, roll = rng.choice(ids), rng.choice(self.keys), rng.random()
            n += 1
            if roll < 0.3:
                got = self._read(c, node, key)
                if got is not None:
                    versions[key] = got[1]
            elif roll < 0.55:
                self._write(c, node, key, f"{c}-{n}", None)
            elif roll < 0.8:
                self._write(c, node, key, f"{c}-{n}", versions.get(key, 0))
            else:
                self._default_read(c, node, key)

    def _read(self, process: Any, node: int, key: str) -> tuple[str, int] | None:
        op = self.history.invoke(process, "read", key)
        try:
            status, _, body = http(
                "GET",
                register_url(self.cluster, node, key) + "?consistency=linearizable",
                timeout=REQUEST_TIMEOUT_S,
            )
        except OSError as exc:
            self.history.fail(op, f"read failed: {type(exc).__name__}")  # a read changes nothing
            return None
        if status != 200:
            self.history.fail(op, problem_code(body) or str(status))
            return None
        doc = json.loads(body)
        value = (doc["data"], int(doc["stat"]["version"]))
        self.history.ok(op, value)
        return value

    def _write(self, c: int, node: int, key: str, value: str, version: int | None) -> None:
        f, arg, query = "write", cast(object, value), ""
        if version is not None:
            f, arg, query = "cas", (version, value), f"?version={version}"
        op = self.history.invoke(c, f, key, arg)
        try:
            status, _, body = http(
                "PUT",
                register_url(self.cluster, node, key) + query,
                value.encode(),
                timeout=REQUEST_TIMEOUT_S,
            )
        except OSError as exc:
            if never_sent(exc):
                self.history.fail(op, "ConnectionRefused")
            else:
                self.history.unknown(op, type(exc).__name__)
            return
        if 200 <= status < 300:
            self.history.ok(op, int(json.loads(body)["stat"]["version"]))
            return
        code = problem_code(body)
        if code in DEFINITE_REFUSALS:
            self.history.fail(op, code)
        else:
            self.history.unknown(op, code or str(status))

    def _default_read(self, c: int, node: int, key: str) -> None:
        seen = self.zxids_seen[c]
        headers = {"X-Coord-Min-Zxid": str(max(o.zxid for o in seen))} if seen else {}
        try:
            status, hdrs, _ = http(
                "GET", register_url(self.cluster, node, key), headers=headers, timeout=2.0
            )
        except OSError:
            return
        if status == 200:
            seen.append(Observation(time.monotonic_ns(), int(hdrs["X-Coord-Zxid"])))
