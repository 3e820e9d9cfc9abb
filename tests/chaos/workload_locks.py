"""Locks from ephemeral sequential nodes, fenced by the lock node's czxid.

Each client opens a session (heartbeated from a thread, workload_sessions.py)
and takes the lock recipe:

1. create ``/chaos-lock/lock-`` ephemeral and sequential; its czxid is the
   fencing token;
2. list ``/chaos-lock`` on any node with ``X-Coord-Min-Zxid`` = that create's
   zxid (the node sees its own lock node); the lowest sequence holds the lock;
   otherwise wait for the predecessor's ``deleted`` (a long-poll watch from
   the zxid of the listing), and list again;
3. while holding, use the guarded resource: a multi that checks the lock
   node is still there and creates ``/chaos-fence/<token>-<client>-<op id>-``
   sequential. The resource accepts an access only while the lock node lives,
   and the fence log's sequence numbers are the order it accepted them in;
4. release: delete the lock node, or close the session, or let it die.

One hold in ten stalls instead: the holder stops heartbeating, waits past
its ttl, then accesses the resource without looking (a process paused by the
machine, a client cut off): the check in the multi must refuse it, as the
session and its lock node are gone, and if a leader change kept the session
alive, no other holder can have accessed in between.

A client that cannot tell its session is alive (``Session.usable``: no
acknowledged heartbeat for a ttl less the lease margin), whose lock node is
gone, or whose create or access ended unknown stops using the resource and
lets its session die. ``check_fencing`` reads the fence log once the cluster
has healed: tokens never decrease, a token has one holder, and a holder never
resumes after another's access. The lock nodes also feed ``check_ephemerals``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.checkers import Access, Anomaly, check_fencing, sequence_number
from tests.chaos.history import History, Op
from tests.chaos.workload import ClientThreads, Workload, send_write
from tests.chaos.workload_sessions import (
    HEARTBEAT_TIMEOUT_S,
    EphemeralRecord,
    Session,
    SessionKeeper,
)
from tests.integration.cluster import Cluster, http, wait_for

LOCKS = "/chaos-lock"
FENCE = "/chaos-fence"
LOCK_KEY = "lock"
FENCE_KEY = "fence"
READ_TIMEOUT_S = 2.0
# A long-poll on the predecessor returns at least this often, so the waiter
# looks at its session again.
WAIT_POLL_S = 1
# A waiter gives up (and lets its session die) after this long.
WAIT_MAX_S = 15.0
ACCESSES = (1, 3)
# The share of holds where the holder stalls past its ttl, then accesses anyway
# (after the ttl and this much more).
ZOMBIE_SHARE = 0.1
ZOMBIE_EXTRA_S = 1.0
FINAL_READ_S = 30.0


@dataclass
class LockClients(Workload):
    cluster: Cluster
    history: History
    seed: int
    clients: int = 3
    record: EphemeralRecord = field(default_factory=lambda: EphemeralRecord(LOCK_KEY, LOCKS))
    threads: ClientThreads = field(default_factory=ClientThreads)
    fence_log: list[str] = field(default_factory=list)
    holds: int = 0
    zombies: Counter[bool] = field(default_factory=Counter)  # stalled holders' accesses accepted?
    _lock: threading.Lock = field(default_factory=threading.Lock)

    keys = (LOCK_KEY, FENCE_KEY)
    parents = (LOCKS, FENCE)

    # ---- one client ---------------------------------------------------------------------

    def _client(self, c: int, rng: random.Random, end_s: float) -> None:
        keeper = SessionKeeper(
            self.cluster,
            self.history,
            f"lock-{c}",
            random.Random(rng.random()),
            self.threads,
            self.record,
        )
        beat = threading.Thread(target=keeper.heartbeats, args=(end_s,), daemon=True)
        beat.start()
        try:
            while self.threads.running(end_s):
                session = keeper.current or keeper.open()
                if session is None:
                    self.threads.pause(0.1)
                    continue
                self._round(c, rng, keeper, session, end_s)
        finally:
            keeper.release()
            beat.join(HEARTBEAT_TIMEOUT_S * 3)

    def _round(
        self, c: int, rng: random.Random, keeper: SessionKeeper, session: Session, end_s: float
    ) -> None:
        """One acquire, use and release; any doubt lets the session die."""
        op, path, token = keeper.create(session, LOCKS + "/lock-", sequential=True)
        if op.outcome == "unknown":
            keeper.release()  # a lock node may exist that nobody will release
            return
        if path is None:
            self.threads.pause(0.05)
            return
        if not self._wait_until_held(rng, keeper, session, path, end_s):
            keeper.release()
            return
        with self._lock:
            self.holds += 1
        if rng.random() < ZOMBIE_SHARE:
            self._zombie(c, rng, keeper, session, path, token)
            return
        for _ in range(rng.randint(*ACCESSES)):
            if not session.usable() or not self._access(c, rng, keeper, session, path, token):
                keeper.release()
                return
        roll = rng.random()
        if roll < 0.7:
            if keeper.delete(path).outcome == "unknown":
                keeper.release()
        elif roll < 0.9:
            keeper.close()
        else:
            keeper.release()

    def _zombie(
        self,
        c: int,
        rng: random.Random,
        keeper: SessionKeeper,
        session: Session,
        path: str,
        token: int,
    ) -> None:
        """A holder stalled past its session's ttl (a long pause, a lost
        network), which then uses the resource without asking: the fence
        must refuse it once the session has gone (its lock node with it)."""
        keeper.release()
        self.threads.pause(session.ttl_ms / 1000 + ZOMBIE_EXTRA_S)
        accepted = self._access(c, rng, keeper, session, path, token)
        with self._lock:
            self.zombies[accepted] += 1

    def _wait_until_held(
        self, rng: random.Random, keeper: SessionKeeper, session: Session, path: str, end_s: float
    ) -> bool:
        mine = path.rsplit("/", 1)[-1]
        give_up_s = min(end_s, time.monotonic() + WAIT_MAX_S)
        ids = sorted(m.node_id for m in self.cluster)
        while self.threads.running(give_up_s):
            if not session.usable():
                return False
            node = rng.choice(ids)
            try:
                status, headers, body = http(
                    "GET",
                    f"{self.cluster[node].url}/v1/nodes{LOCKS}?children=true",
                    headers={"X-Coord-Min-Zxid": str(keeper.zxid_seen)},
                    timeout=READ_TIMEOUT_S,
                )
            except OSError:
                continue
            if status != 200:
                self.threads.pause(0.05)
                continue
            read_zxid = int(headers["X-Coord-Zxid"])
            keeper.saw(read_zxid)
            children = sorted(json.loads(body)["children"], key=lambda n: sequence_number(n) or 0)
            if mine not in children:
                return False  # its session ended: the lock node went with it
            at = children.index(mine)
            if at == 0:
                return True
            predecessor = f"{LOCKS}/{children[at - 1]}"
            try:
                http(
                    "GET",
                    f"{self.cluster[node].url}/v1/watch{predecessor}"
                    f"?since={read_zxid}&timeout={WAIT_POLL_S}",
                    timeout=WAIT_POLL_S + READ_TIMEOUT_S,
                )
            except OSError:
                continue
        return False

    def _access(
        self,
        c: int,
        rng: random.Random,
        keeper: SessionKeeper,
        session: Session,
        path: str,
        token: int,
    ) -> bool:
        """One fenced access; whether the client may go on holding the lock."""
        op = self.history.invoke(f"lock-{c}", "access", FENCE_KEY, token)
        ops = [
            {"op": "check", "path": path, "version": 0},
            {"op": "create", "path": f"{FENCE}/{token:012d}-lock-{c}-{op.id}-", "sequential": True},
        ]
        node = rng.choice(sorted(m.node_id for m in self.cluster))
        op, doc = send_write(
            self.history,
            op,
            "POST",
            f"{self.cluster[node].url}/v1/multi",
            json.dumps({"ops": ops}).encode(),
        )
        if op.outcome != "ok":
            return False
        zxid = int(doc["zxid"])
        keeper.saw(zxid)
        session.alive_at(zxid)  # its lock node was there
        return True

    # ---- after the run -------------------------------------------------------------------

    def final_read(self) -> None:
        def read() -> tuple[list[str]] | None:
            for m in self.cluster:
                status, _, body = http(
                    "GET",
                    f"{m.url}/v1/nodes{FENCE}?children=true&consistency=linearizable",
                    timeout=5,
                )
                if status == 200:
                    return (list(json.loads(body)["children"]),)
            return None

        (self.fence_log,) = wait_for("the fence log", read, FINAL_READ_S)

    def accesses(self) -> list[Access]:
        """The fence log in the order the resource accepted it."""
        ops: dict[int, Op] = {op.id: op for op in self.history.ops() if op.key == FENCE_KEY}
        found = []
        for name in sorted(self.fence_log, key=lambda n: sequence_number(n) or 0):
            token, holder_a, holder_b, op_id, _ = name.split("-")
            op = ops.get(int(op_id))
            time_ns = 0 if op is None else (op.complete_ns or op.invoke_ns)
            found.append(Access(time_ns, int(token), f"{holder_a}-{holder_b}", int(op_id)))
        return found

    def check(self) -> list[Anomaly]:
        return check_fencing(self.accesses())

    def summary(self) -> str:
        return (
            f"{self.holds} holds, {len(self.fence_log)} accepted accesses,"
            f" stalled holders refused {self.zombies[False]} / accepted {self.zombies[True]}"
        )
