"""Sessions and ephemerals: clients open sessions, keep them alive from a
heartbeat thread, create ephemerals under ``/chaos-eph``, delete some, then
close the session or let it die (stop heartbeating), while the nemesis
kills, stops and cuts off the nodes under them. ``check_ephemerals`` then
asks of every ephemeral that went (a ``deleted`` event in the final replay of
the committed events) whether a delete or its session's end explains it.

  open      POST /v1/sessions {"ttl_ms"}                 ok: the session id
  create    POST /v1/nodes/chaos-eph/<client>-<n>?ephemeral=true
  delete    DELETE /v1/nodes/chaos-eph/<client>-<n>
  close     DELETE /v1/sessions/<id>                     ok: the close's zxid
  heartbeat POST /v1/sessions/<id>/heartbeat             (counted, not recorded)

**When a session may end.** An acknowledged close ends it at its zxid. Any
other session may end (expire) once the expiry authority has gone a ttl
without hearing of it, and a heartbeat a node acknowledged can still be lost
on its way there: a follower passes heartbeats to the leader every 500 ms
and may be cut off right after taking one, and a new leader restarts every
ttl from its own start. So the client holds its session as surely alive only
up to ``LEASE_MARGIN_S`` short of a ttl after the last acknowledged
heartbeat was sent (``Session.lease_until_s``), and records the session's end
at the highest zxid it had seen by then (or by when it sent a close that
ended unknown, or stopped heartbeating): a zxid committed before the session
could end, so a lower bound of the end's own; an acknowledged write that
needed the session alive (an ephemeral create, a lock holder's fenced access)
raises it to that write's zxid. An ephemeral removed before it is an anomaly.
The same bound tells a lock holder when to stop using its lock
(workload_locks.py).

Session writes go through the node the client holds its session on, as a
ZooKeeper client does: another node may not have applied the open yet, and
answers ``SessionExpired`` for it. A client told ``SessionExpired`` asks the
same node again with ``X-Coord-Min-Zxid`` (``GET /v1/sessions/<id>``) before
it believes it; how often a node behind said so is counted in the summary.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.checkers import (
    Anomaly,
    EphemeralEvent,
    SessionLease,
    WatchEvent,
    check_ephemerals,
    check_session_leases,
    under,
)
from tests.chaos.history import History, Op
from tests.chaos.workload import ClientThreads, Workload, problem_code, send_write
from tests.integration.cluster import Cluster, http

TTL_MS = 4000
# What a heartbeat can lose between its acknowledgement and the expiry
# authority, at worst: a ping interval (500 ms) and a follower cut off for up to
# an election timeout (500 ms) before it stops taking heartbeats, a new leader
# elected meanwhile, and the scheduling of a busy machine.
LEASE_MARGIN_S = 2.0
HEARTBEAT_EVERY_S = 0.6
HEARTBEAT_TIMEOUT_S = 1.0
# Pause after a heartbeat that got no answer before the next node is tried.
HEARTBEAT_RETRY_S = 0.1
EPHEMERALS = "/chaos-eph"
EPHEMERAL_KEY = "eph"
# How long an ephemeral client holds its session before closing or dropping it.
HOLD_S = (0.2, 2.0)


@dataclass
class Session:
    """One session as its client knows it. Times are monotonic seconds."""

    id: str
    owner: str
    ttl_ms: int
    acked_s: float  # when the last acknowledged heartbeat (or open) was sent
    seen: list[tuple[float, int]] = field(default_factory=list)  # (received s, zxid)
    alive_zxid: int = 0  # an acknowledged write that needed it alive took this zxid
    closed_zxid: int | None = None
    released_s: float | None = None  # the client sent a close or stopped heartbeating
    expired_seen_s: float | None = None  # when a node confirmed SessionExpired
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, zxid: int) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), zxid))

    def acked(self, sent_s: float) -> None:
        with self.lock:
            self.acked_s = max(self.acked_s, sent_s)

    def alive_at(self, zxid: int) -> None:
        with self.lock:
            self.alive_zxid = max(self.alive_zxid, zxid)

    def lease_until_s(self) -> float:
        with self.lock:
            return self.acked_s + self.ttl_ms / 1000 - LEASE_MARGIN_S

    def usable(self) -> bool:
        """Surely alive now, as far as this client can tell."""
        return not self.done.is_set() and time.monotonic() < self.lease_until_s()

    def end_event(self) -> EphemeralEvent:
        if self.closed_zxid is not None:
            return EphemeralEvent(self.closed_zxid, "close", session=self.id)
        cutoff_s = self.lease_until_s()
        if self.released_s is not None:
            cutoff_s = min(cutoff_s, self.released_s)
        with self.lock:
            zxid = max((z for t, z in self.seen if t <= cutoff_s), default=self.alive_zxid)
            zxid = max(zxid, self.alive_zxid)
        return EphemeralEvent(zxid, "expire", session=self.id)


class SessionKeeper:
    """One client's current session, heartbeated from a thread of its own
    through one node at a time (the next one when it does not answer)."""

    def __init__(
        self,
        cluster: Cluster,
        history: History,
        process: str,
        rng: random.Random,
        threads: ClientThreads,
        record: EphemeralRecord,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.process = process
        self.rng = rng
        self.threads = threads
        self.record = record
        self.ids = sorted(m.node_id for m in cluster)
        self.node = rng.choice(self.ids)
        self.current: Session | None = None
        self.zxid_seen = 0
        self._guard = threading.Lock()

    def url(self, node: int | None = None) -> str:
        return self.cluster[self.node if node is None else node].url

    def saw(self, zxid: int) -> None:
        self.zxid_seen = max(self.zxid_seen, zxid)
        session = self.current
        if session is not None:
            session.saw(zxid)

    def open(self) -> Session | None:
        self.node = self.rng.choice(self.ids)
        op = self.history.invoke(self.process, "open", self.record.key)
        sent_s = time.monotonic()
        body = json.dumps({"ttl_ms": TTL_MS}).encode()
        op, doc = send_write(self.history, op, "POST", self.url() + "/v1/sessions", body)
        if op.outcome != "ok":
            return None  # one opened unknown dies alone: nobody heartbeats it
        session = Session(str(doc["id"]), self.process, int(doc["ttl_ms"]), sent_s)
        self.record.add_session(session)
        with self._guard:
            self.current = session
        self.saw(int(doc["zxid"]))
        return session

    def release(self) -> None:
        """Stop heartbeating the current session: it dies a ttl later."""
        with self._guard:
            session, self.current = self.current, None
        if session is not None and not session.done.is_set():
            session.released_s = time.monotonic()
            session.done.set()

    def close(self) -> None:
        with self._guard:
            session, self.current = self.current, None
        if session is None:
            return
        op = self.history.invoke(self.process, "close", self.record.key, session.id)
        if session.released_s is None:
            session.released_s = time.monotonic()
        session.done.set()
        op, doc = send_write(self.history, op, "DELETE", self.url() + f"/v1/sessions/{session.id}")
        if op.outcome == "ok":
            session.closed_zxid = int(doc["zxid"])
            self.saw(session.closed_zxid)

    def create(
        self, session: Session, path: str, sequential: bool = False
    ) -> tuple[Op, str | None, int]:
        """Create an ephemeral of ``session``: (op, real path, czxid) when ok."""
        op = self.history.invoke(self.process, "create", self.record.key, path)
        query = "?ephemeral=true&sequential=true" if sequential else "?ephemeral=true"
        sent_s = time.monotonic()
        # Through the session's own node: another one may not have its open yet.
        op, doc = send_write(
            self.history,
            op,
            "POST",
            self.url() + "/v1/nodes" + path + query,
            headers={"X-Coord-Session": session.id},
        )
        if op.outcome == "ok":
            # An ephemeral create is also a heartbeat, taken by the node it went to.
            session.acked(sent_s)
            zxid = int(doc["zxid"])
            self.saw(zxid)
            session.alive_at(zxid)
            self.record.add(EphemeralEvent(zxid, "create", doc["path"], session.id, op.id))
            return op, str(doc["path"]), int(doc["stat"]["czxid"])
        if doc == "SessionExpired" and self.gone(session):
            self.release()
        return op, None, 0

    def gone(self, session: Session) -> bool:
        """A node answered SessionExpired: whether the session is really gone.

        A node that has not applied the session's open yet answers so too (the
        heartbeat takes no ``X-Coord-Min-Zxid``), so ask the same node again
        with a read that first waits for every zxid this client has seen."""
        try:
            status, _, _ = http(
                "GET",
                self.url() + f"/v1/sessions/{session.id}",
                headers={"X-Coord-Min-Zxid": str(self.zxid_seen)},
                timeout=HEARTBEAT_TIMEOUT_S * 2,
            )
        except OSError:
            return False
        if status == 404:
            session.expired_seen_s = time.monotonic()
            return True
        if status == 200:
            self.record.count("SessionExpired from a node behind")
        return False

    def delete(self, path: str) -> Op:
        before = self.zxid_seen
        op = self.history.invoke(self.process, "delete", self.record.key, path)
        url = self.url(self.rng.choice(self.ids)) + "/v1/nodes" + path
        op, doc = send_write(self.history, op, "DELETE", url)
        if op.outcome == "ok":
            zxid = int(doc["zxid"])
            self.saw(zxid)
            self.record.add(EphemeralEvent(zxid, "delete", path, op_id=op.id))
        elif op.outcome == "unknown":
            self.record.add(EphemeralEvent(before, "maybe_delete", path, op_id=op.id))
        return op

    def heartbeats(self, end_s: float) -> None:
        """Thread: heartbeat whatever session is current until the client ends."""
        while self.threads.running(end_s):
            session = self.current
            if session is None or session.done.is_set():
                self.threads.pause(0.02)
                continue
            sent_s = time.monotonic()
            try:
                status, headers, body = http(
                    "POST",
                    self.url() + f"/v1/sessions/{session.id}/heartbeat",
                    timeout=HEARTBEAT_TIMEOUT_S,
                )
            except OSError:
                status, headers, body = 0, {}, b""
            self.record.count(f"heartbeat {status or 'no answer'}")
            if status == 200:
                session.acked(sent_s)
                self.saw(int(headers["X-Coord-Zxid"]))
                self.threads.pause(HEARTBEAT_EVERY_S)
            elif problem_code(body) == "SessionExpired":
                if self.gone(session) and session is self.current:
                    self.release()
                self.threads.pause(HEARTBEAT_RETRY_S)
            else:
                self.node = self.rng.choice([i for i in self.ids if i != self.node] or self.ids)
                self.threads.pause(HEARTBEAT_RETRY_S)
        self.release()


@dataclass
class EphemeralRecord:
    """What the clients of one workload learned about their sessions and
    ephemerals, for ``check_ephemerals``."""

    key: str  # the history key of its creates and deletes
    prefix: str  # where its ephemerals live
    events: list[EphemeralEvent] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: EphemeralEvent) -> None:
        with self._lock:
            self.events.append(event)

    def add_session(self, session: Session) -> None:
        with self._lock:
            self.sessions.append(session)

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def check(self, committed: list[WatchEvent]) -> list[Anomaly]:
        """``committed``: the replayed events; their ``deleted`` under the prefix
        are the removals. A session its client saw expire must have gone a ttl
        unheard first (less the margin)."""
        with self._lock:
            events = list(self.events) + [s.end_event() for s in self.sessions]
            leases = [
                SessionLease(s.id, s.ttl_ms, int(s.acked_s * 1e9), int(s.expired_seen_s * 1e9))
                for s in self.sessions
                if s.expired_seen_s is not None
            ]
        events += [
            EphemeralEvent(e.zxid, "removed", e.path)
            for e in committed
            if e.type == "deleted" and under(e.path, self.prefix)
        ]
        return check_ephemerals(events) + check_session_leases(leases, int(LEASE_MARGIN_S * 1000))

    def summary(self) -> str:
        with self._lock:
            expired = sum(1 for s in self.sessions if s.expired_seen_s is not None)
            closed = sum(1 for s in self.sessions if s.closed_zxid is not None)
            beats = sum(n for what, n in self.counts.items() if what.startswith("heartbeat"))
            return (
                f"{len(self.sessions)} sessions ({closed} closed, {expired} seen expired),"
                f" {beats} heartbeats ({self.counts['heartbeat 200']} ok),"
                f" {self.counts['SessionExpired from a node behind']} SessionExpired from a"
                " node behind"
            )


@dataclass
class EphemeralClients(Workload):
    cluster: Cluster
    history: History
    seed: int
    clients: int = 2
    record: EphemeralRecord = field(
        default_factory=lambda: EphemeralRecord(EPHEMERAL_KEY, EPHEMERALS)
    )
    threads: ClientThreads = field(default_factory=ClientThreads)

    keys = (EPHEMERAL_KEY,)
    parents = (EPHEMERALS,)

    def _client(self, c: int, rng: random.Random, end_s: float) -> None:
        keeper = SessionKeeper(
            self.cluster,
            self.history,
            f"eph-{c}",
            random.Random(rng.random()),
            self.threads,
            self.record,
        )
        beat = threading.Thread(target=keeper.heartbeats, args=(end_s,), daemon=True)
        beat.start()
        n = 0
        try:
            while self.threads.running(end_s):
                session = keeper.open()
                if session is None:
                    self.threads.pause(0.1)
                    continue
                created: list[str] = []
                for _ in range(rng.randint(1, 3)):
                    n += 1
                    _, path, _ = keeper.create(session, f"{EPHEMERALS}/{c}-{n}")
                    if path is not None:
                        created.append(path)
                if created and rng.random() < 0.3:
                    keeper.delete(rng.choice(created))
                self.threads.pause(rng.uniform(*HOLD_S))
                if rng.random() < 0.5:
                    keeper.close()
                else:
                    keeper.release()
        finally:
            keeper.release()
            beat.join(HEARTBEAT_TIMEOUT_S * 3)
