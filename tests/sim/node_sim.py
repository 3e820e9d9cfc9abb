"""Deterministic simulation of whole nodes: driver, storage, tree, sessions.

Where tests/sim/simulator.py runs consensus cores alone, this runs the code
that ships: real ``Node`` objects (their ``Driver`` loop, ``Forwarder``,
``MirroredStorage``, ``Tree``, watch history and maintenance tasks), all in
one ``SimLoop`` whose clock is virtual, over

- a simulated network (``SimTransport``): every Raft message arrives after a
  seeded delay (so reordered), may be lost or duplicated, and is cut by
  partitions (symmetric or one-way), judged on arrival; peer RPCs
  (forwarded writes, session pings, status) reach the target's handlers
  with the real transport's failure semantics: ``PeerUnavailable`` when the
  request never got there, ``OutcomeUnknown`` when it did and the answer was
  lost, timed out or the target crashed meanwhile; snapshots are staged from
  the sender's disk into the receiver's before the InstallSnapshot arrives;
- a simulated disk (``tests.sim.sim_disk``): a crash loses, lands or tears
  the save in flight; the simulation also crashes nodes exactly while a save
  is in flight, the window the driver's persistence ordering is about;
- crashes (every task of the incarnation cancelled, its disk fenced) and
  restarts through ``Node.open`` on what the disk kept; at most a minority
  is down at once (save for the amnesia mix's leader crash: a moment);
- register clients at random nodes: ``propose`` of upserts and
  compare-and-sets, linearizable reads (``barrier(linearizable=True)``) and
  default reads with the client's highest zxid as ``min_zxid``;
- session clients: open a session (``OpenSessionOp``), heartbeat it at
  random nodes (``Node.heartbeat``, as the route does: a node that has not
  seen it looks again after a linearizable barrier), create ephemerals
  under ``/eph`` (a heartbeat, then ``CreateOp`` with the owner), delete
  some, then close it or stop heartbeating and let the leader expire it.

One seeded ``random.Random`` drives everything, so a seed replays exactly
(``SimResult.trace`` hashes what happened; a test runs a seed twice and
compares). After the chaos every fault heals and every node restarts; the
run then checks, with the fault suite's checkers: every key's history is
linearizable (``VersionedRegister``), no client saw its zxid go back, at most
one leader per term was ever seen, and every node converges to one zxid and
one tree digest within a bound (liveness). Sessions: every ephemeral removal
any node applied (its listeners and its replayed watch history) is explained
by a delete or by its session's end as the client can place it
(``check_ephemerals``); no session ended, as first applied anywhere or told
to its client, sooner than a ttl less ``NodeMix.lease_slack_ms`` after the
last heartbeat that surely renewed it (``check_session_leases``); after the
heal every session and ephemeral is gone within a ttl and the slack.

Fault mixes (``MIXES``): default, crashy (more crashes, also inside saves),
lossy (loss, duplication, long delays, lost RPC answers), five (5 nodes),
slowdisk (each disk its own latency bound: followers lag in applying),
snapshots (a snapshot every 20 entries, duplicated InstallSnapshots), long,
amnesia (a crash inside a save that never lands, then the leader's), and
unheard (long one-way cuts, sticky session clients).

Not simulated: membership changes, the wire encoding, wall-clock jumps.
It found a storage bug on its first day: the same snapshot staged again (a
resent InstallSnapshot) while its save was in flight let the collector
delete the chunk set the save then made visible (``MirroredStorage._save``
now pins it; seed 3 of the snapshots mix replays it).

Replay a seed:  python -m tests.sim.node_sim --seed N [--mix MIX] [--bug BUG]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from httpcoord.cluster.driver import DriverLimits
from httpcoord.cluster.forward import PROPOSE_PATH
from httpcoord.cluster.node import STATUS_PATH, TOUCH_PATH, ClusterConfig, Node, NodeLimits
from httpcoord.cluster.node_storage import SnapshotCorrupt, SnapshotMissing
from httpcoord.cluster.raft.core import Role
from httpcoord.cluster.raft.messages import InstallSnapshot, Message
from httpcoord.cluster.transport import OutcomeUnknown as PeerOutcomeUnknown
from httpcoord.cluster.transport import PeerCallFailed, PeerUnavailable
from httpcoord.errors import CoordError, SessionExpired
from httpcoord.tree.tree import Event
from httpcoord.tree.txn import CloseSessionOp, CreateOp, DeleteOp, OpenSessionOp, SetDataOp
from tests.chaos.checkers import (
    EphemeralEvent,
    Observation,
    SessionLease,
    check_ephemerals,
    check_monotonic_zxids,
    check_session_leases,
)
from tests.chaos.history import History
from tests.chaos.linearizable import VersionedRegister, check_linearizable
from tests.sim.sim_disk import SimDisk
from tests.sim.sim_loop import SimLoop, Stuck, owned_context

T = TypeVar("T")

WALL_MS_START = 1_700_000_000_000
INITIAL = "init"
# Refusals that mean the write was never logged (or, BadVersion, refused by
# the tree): the same reading as the fault suite's register clients.
DEFINITE_REFUSALS = frozenset({"Unavailable", "TooManyRequests", "BadVersion", "ZxidNotReached"})
CHECK_BUDGET_S = 10.0  # linearizability search time per run
EPHEMERALS = "/eph"  # every child is an ephemeral of a session client


class Violation(AssertionError):
    """A safety or liveness property failed."""


@dataclass(frozen=True)
class NodeMix:
    name: str
    nodes: int = 3
    clients: int = 4
    keys: tuple[str, ...] = ("a", "b")
    tick_ms: int = 10
    election_ticks: int = 10
    chaos_ms: int = 3000  # faults and workload
    steady_ms: int = 500  # workload on the healed cluster
    heal_ms_max: int = 8000  # then every node must converge within this
    msg_delay_ms_max: int = 6  # delivery after 1..this ms: reordered
    loss: float = 0.02  # per message
    dup: float = 0.02  # per message
    rpc_answer_loss: float = 0.02  # per peer call: the answer is lost (OutcomeUnknown)
    nemesis_ms_mean: int = 250  # a fault every 1..2x this
    partition: float = 0.25  # chances of each fault when one comes
    one_way: float = 0.3  # of partitions: cut one direction only
    isolate_leader: float = 0.15
    heal: float = 0.2
    crash: float = 0.15
    restart: float = 0.25
    crash_in_save: float = 0.01  # per save: the node crashes while it is in flight
    reboot_ms_max: int = 300  # such a node restarts within this
    # > 0: a crash inside a save is followed within this by the leader's crash
    # (even past a minority down, for the reboot's moment): the leader is gone
    # before it can tell a follower that it lost entries it acknowledged.
    leader_crash_after_ms_max: int = 0
    disk_latency_ms_max: int = 4
    slow_disk_ms_max: int = 0  # > latency: each disk's latency bound is drawn up to this
    torn_rate: float = 0.4  # of saves in flight at a crash: torn
    lands_rate: float = 0.3  # ... or landed whole (else lost)
    snapshot_entries: int = 60  # snapshot after this many applied entries
    request_timeout_ms: int = 1500
    client_timeout_ms: int = 2000
    think_ms_max: int = 30
    # Peer messages in a whole run (a healthy 3-node run of 5 virtual seconds
    # sends about 5,000); past this the run stops as livelocked.
    msgs_max: int = 100_000
    read_share: float = 0.35  # linearizable reads
    seq_read_share: float = 0.15  # default reads with min_zxid
    cas_share: float = 0.25  # the rest: upserts
    session_clients: int = 2
    session_ttl_ms: int = 1000
    heartbeat_ms: int = 150  # a session client's next step after ms/2..ms
    session_hold_ms_max: int = 1500  # a session is held 1..this ms, then closed or dropped
    session_close_share: float = 0.5  # of sessions held to the end: closed (else dropped)
    create_share: float = 0.25  # of a session's steps: create an ephemeral
    delete_share: float = 0.1  # ... delete one of its ephemerals (the rest: heartbeats)
    session_ping_ms: int = 100  # the node's: a follower passes heartbeats on this often
    session_check_ms: int = 20  # the node's: how often the leader looks for expired sessions
    # A session client stays on one node until it fails it, as a ZooKeeper
    # client does (else every step goes to a random node).
    sticky_sessions: bool = False

    @property
    def lease_slack_ms(self) -> int:
        """How much sooner than a ttl after its last acknowledged heartbeat a
        session may end. The heartbeats a follower took since its last ping
        are lost when it is cut off from its leader, and it goes on taking
        them for up to an election timeout after it last heard one (its
        pings then reach no authority, or a deposed one): that loses up to a
        ping interval and an election timeout of them, and the one counted
        before may be a heartbeat interval older; plus a few ticks and
        message delays."""
        margin_ms = 2 * self.tick_ms + 4 * self.msg_delay_ms_max + self.session_check_ms
        lost_ms = self.session_ping_ms + self.election_ticks * self.tick_ms
        return lost_ms + self.heartbeat_ms + margin_ms

    @property
    def lease_reach_ms(self) -> int:
        """How long a heartbeat a follower took may take to reach the leader:
        it waits for the next ping, which is on the way a message delay."""
        return self.session_ping_ms + 2 * self.msg_delay_ms_max + self.tick_ms


MIXES: dict[str, NodeMix] = {
    m.name: m
    for m in [
        NodeMix("default"),
        NodeMix("crashy", crash=0.35, restart=0.35, crash_in_save=0.03, partition=0.1),
        NodeMix("lossy", loss=0.15, dup=0.1, msg_delay_ms_max=20, rpc_answer_loss=0.1),
        NodeMix("five", nodes=5, clients=5),
        NodeMix("slowdisk", slow_disk_ms_max=60, read_share=0.5, partition=0.1, crash=0.1),
        NodeMix(
            "snapshots",
            snapshot_entries=20,
            dup=0.2,
            crash=0.3,
            restart=0.35,
            slow_disk_ms_max=20,
        ),
        NodeMix("long", chaos_ms=15_000, steady_ms=1000),
        # Crashes inside saves that never land, each followed within 20 ms by
        # the leader's (even when that leaves a majority down for a moment:
        # both reboot within 30 ms), and a lossy network that leaves the
        # third node behind: what a node acknowledged before its save was
        # durable is then missing from the majority that elects next.
        NodeMix(
            "amnesia",
            loss=0.1,
            crash_in_save=0.05,
            lands_rate=0.0,
            torn_rate=0.5,
            reboot_ms_max=30,
            leader_crash_after_ms_max=20,
            partition=0.1,
            isolate_leader=0.05,
        ),
        # Long one-way cuts only: a follower its leader cannot hear still
        # hears the leader; it must stop acknowledging heartbeats once its
        # pings stop arriving (it did not: sessions expired early).
        NodeMix(
            "unheard",
            clients=2,
            partition=1.0,
            one_way=1.0,
            isolate_leader=0.0,
            heal=0.3,
            crash=0.0,
            restart=0.0,
            crash_in_save=0.0,
            nemesis_ms_mean=1500,
            chaos_ms=6000,
            session_hold_ms_max=3000,
            sticky_sessions=True,
            create_share=0.05,  # a failed create moves a sticky client elsewhere
        ),
    ]
}


@dataclass
class SimResult:
    seed: int
    mix: str
    bug: str | None
    trace: str  # sha256 of what happened: the same seed gives the same value
    ops: Counter[str] = field(default_factory=Counter)  # by f and outcome
    faults: Counter[str] = field(default_factory=Counter)
    virtual_ms: int = 0
    wall_s: float = 0.0
    max_zxid: int = 0
    snapshots: int = 0
    # Session clients' steps by kind and outcome, and how their sessions ended.
    session_ops: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        ops = sum(self.ops.values())
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(self.ops.items()))
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        sessions = " ".join(f"{k}={v}" for k, v in sorted(self.session_ops.items()))
        return (
            f"seed {self.seed} mix {self.mix}{' bug ' + self.bug if self.bug else ''}: "
            f"{ops} ops ({outcomes}); sessions: {sessions}; faults: {faults}; zxid {self.max_zxid}; "
            f"snapshots {self.snapshots}; {self.virtual_ms} virtual ms in {self.wall_s:.2f}s; "
            f"trace {self.trace[:16]}"
        )


def replay_command(seed: int, mix: str, bug: str | None) -> str:
    cmd = f"python -m tests.sim.node_sim --seed {seed}"
    if mix != "default":
        cmd += f" --mix {mix}"
    if bug:
        cmd += f" --bug {bug}"
    return cmd


@dataclass
class SimSession:
    """One session as its client knows it (times: virtual monotonic ns)."""

    id: str
    client: str
    ttl_ms: int
    acks_sent_ns: list[int]  # when each acknowledged heartbeat (or the open) was sent
    seen: list[tuple[int, int]] = field(default_factory=list)  # (received ns, zxid)
    alive_zxid: int = 0  # an acknowledged create that needed it alive took this zxid
    closed_zxid: int | None = None
    close_sent_ns: int | None = None  # a close was sent: it may end any time after
    released_ns: int | None = None  # the client sent a close or stopped heartbeating
    gone_seen_ns: int | None = None  # a node answered SessionExpired
    ephemerals: list[str] = field(default_factory=list)
    node: int = 0  # where a sticky client sends its steps

    def lease_ack_ns(self, before_ns: int | None, slack_ms: int, reach_ms: int) -> int:
        """When the latest heartbeat that surely renewed the lease was sent.

        Acknowledged heartbeats count in order, each only if sent while the
        lease (a ttl less ``slack_ms`` after the last one counted) still
        held for another ``reach_ms``: a follower passes it on at its next
        ping, and one that arrives after the deadline renews nothing. Once
        one misses, the client can no longer be sure of the session. None
        sent after ``before_ns`` (the end) count: a node behind may
        acknowledge a session that is already gone."""
        acks = sorted(t for t in self.acks_sent_ns if before_ns is None or t < before_ns)
        counted = acks[0]  # the open
        for t in acks[1:]:
            if t + reach_ms * 1_000_000 > counted + (self.ttl_ms - slack_ms) * 1_000_000:
                break
            counted = t
        return counted

    def end_event(self, slack_ms: int, reach_ms: int, ended_ns: int | None) -> EphemeralEvent:
        """Where the session ended as its client can place it: at its close's
        zxid, else no earlier than the highest zxid it saw while its lease
        surely held (see ``lease_ack_ns``) and it still heartbeated, or its
        last create."""
        if self.closed_zxid is not None:
            return EphemeralEvent(self.closed_zxid, "close", session=self.id)
        lease_ns = self.lease_ack_ns(ended_ns, slack_ms, reach_ms)
        cutoff_ns = lease_ns + (self.ttl_ms - slack_ms) * 1_000_000
        if self.released_ns is not None:
            cutoff_ns = min(cutoff_ns, self.released_ns)
        zxid = max((z for t, z in self.seen if t <= cutoff_ns), default=0)
        return EphemeralEvent(max(zxid, self.alive_zxid), "expire", session=self.id)


class _Gone(Exception):
    """A node answered SessionExpired; ``zxid`` is the one its answer carried."""

    def __init__(self, zxid: int) -> None:
        super().__init__(f"session expired (zxid {zxid})")
        self.zxid = zxid


class _Down(Exception):
    """The client could not reach the node: the request was never sent."""


class _Lost(Exception):
    """The node crashed or timed out with the request: outcome unknown."""


# ---- the network ------------------------------------------------------------------------


class SimTransport:
    """The driver's Transport for one incarnation of one node."""

    def __init__(self, sim: NodeSimulation, node_id: int, owner: str) -> None:
        self.sim = sim
        self.node_id = node_id
        self.owner = owner

    def send(self, messages: Iterable[Message]) -> None:
        sim = self.sim
        if not sim.alive(self.node_id, self.owner):
            return  # a dead incarnation's callbacks still run: it sends nothing
        rng = sim.rng
        mix = sim.mix
        loop = sim.loop
        for m in messages:
            sim.stats["msgs"] += 1
            if sim.stats["msgs"] > mix.msgs_max:
                sim.abort(f"liveness: a message storm, over {mix.msgs_max} messages sent")
                return
            if rng.random() < mix.loss:
                sim.stats["msgs_lost"] += 1
                continue
            copies = 2 if rng.random() < mix.dup else 1
            for _ in range(copies):
                delay_s = rng.randint(1, mix.msg_delay_ms_max) / 1000
                if isinstance(m, InstallSnapshot):
                    loop.call_later(delay_s, sim.install_snapshot, m)
                else:
                    loop.call_later(delay_s, sim.deliver, m)

    def reachable(self, peer_id: int) -> bool:
        return self.sim.node(peer_id) is not None and self.sim.link_up(self.node_id, peer_id)

    async def call(
        self,
        peer_id: int,
        path: str,
        body: bytes,
        timeout_ms: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        sim = self.sim
        await asyncio.sleep(sim.rng.randint(1, sim.mix.msg_delay_ms_max) / 1000)
        target = sim.node(peer_id)
        if target is None or not sim.link_up(self.node_id, peer_id):
            raise PeerUnavailable(f"node {peer_id} cannot be reached")
        # The handler runs as the target's task: a crash there cancels it.
        task = sim.loop.create_task(
            _dispatch(target, path, body), context=owned_context(sim.owner_of(peer_id))
        )
        done, _ = await asyncio.wait([task], timeout=timeout_ms / 1000)
        if not done:
            task.cancel()
            raise PeerOutcomeUnknown(f"call to node {peer_id} {path} timed out")
        if task.cancelled():
            raise PeerOutcomeUnknown(f"node {peer_id} crashed while answering {path}")
        exc = task.exception()
        if isinstance(exc, CoordError):
            problem = orjson.dumps({"code": exc.code, "detail": str(exc)})
            raise PeerCallFailed(exc.status, problem, peer_id)
        if exc is not None:
            raise exc
        await asyncio.sleep(sim.rng.randint(1, sim.mix.msg_delay_ms_max) / 1000)
        if not sim.link_up(peer_id, self.node_id) or sim.rng.random() < sim.mix.rpc_answer_loss:
            raise PeerOutcomeUnknown(f"the answer of node {peer_id} to {path} was lost")
        answer: bytes = task.result()
        return answer


async def _dispatch(node: Node, path: str, body: bytes) -> bytes:
    if path == PROPOSE_PATH:
        return await node.handle_propose(body)
    if path == TOUCH_PATH:
        return node.handle_touch(body)
    if path == STATUS_PATH:
        return node.handle_status()
    raise AssertionError(f"no peer route {path}")


# ---- the simulation -------------------------------------------------------------------------


class NodeSimulation:
    def __init__(
        self,
        seed: int,
        mix: NodeMix | str = "default",
        bug: str | None = None,
        node_cls: type[Node] = Node,
    ) -> None:
        self.mix = MIXES[mix] if isinstance(mix, str) else mix
        self.seed = seed
        self.bug = bug
        self.node_cls = node_cls
        self.rng = random.Random(seed)
        total_ms = self.mix.chaos_ms + self.mix.steady_ms + self.mix.heal_ms_max + 10_000
        self.loop = SimLoop(deadline_s=total_ms / 1000)
        self.ids = list(range(1, self.mix.nodes + 1))
        self.disks = {
            i: SimDisk(
                self.ids,
                self.rng,
                self.rng.randint(
                    self.mix.disk_latency_ms_max,
                    max(self.mix.disk_latency_ms_max, self.mix.slow_disk_ms_max),
                ),
                self.mix.torn_rate,
                self.mix.lands_rate,
            )
            for i in self.ids
        }
        for i, disk in self.disks.items():
            disk.on_save_start = self._save_hook(i)
        self._nodes: dict[int, Node | None] = dict.fromkeys(self.ids)
        self._incarnation: dict[int, int] = dict.fromkeys(self.ids, 0)
        self._restarting: set[int] = set()
        self.cut: set[tuple[int, int]] = set()  # (src, dst): messages src -> dst lost
        self.history = History(clock_ns=self.loop.monotonic_ns)
        self.zxids_seen: dict[str, list[Observation]] = {}
        self.leader_of_term: dict[int, int] = {}
        self.stats: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._trace = hashlib.sha256()
        self.violations: list[str] = []
        self._chaos = False
        self._stop_clients = False
        self.snapshots = 0
        self._aborted = False
        self.sessions: list[SimSession] = []
        self.ephemeral_events: list[EphemeralEvent] = []
        self.removed: set[tuple[int, str]] = set()  # (zxid, path): an ephemeral went
        self.session_closed_ns: dict[str, int] = {}  # first applied anywhere
        self.session_ops: Counter[str] = Counter()
        self._ephemeral_seq = 0

    # ---- who is up ----------------------------------------------------------------------

    def owner_of(self, nid: int) -> str:
        return f"n{nid}.{self._incarnation[nid]}"

    def node(self, nid: int) -> Node | None:
        return self._nodes.get(nid)

    def alive(self, nid: int, owner: str) -> bool:
        return self._nodes.get(nid) is not None and self.owner_of(nid) == owner

    def link_up(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.cut

    def live_ids(self) -> list[int]:
        return [i for i in self.ids if self._nodes[i] is not None]

    def note(self, *what: object) -> None:
        self._trace.update(orjson.dumps([self.loop.monotonic_ms(), *map(str, what)]))

    # ---- the network's deliveries ------------------------------------------------------------

    def deliver(self, m: Message) -> None:
        target = self._nodes.get(m.dst)
        if target is None or not self.link_up(m.src, m.dst):
            return
        target.driver.deliver(m)

    def install_snapshot(self, m: InstallSnapshot) -> None:
        sender, receiver = self._nodes.get(m.src), self._nodes.get(m.dst)
        if sender is None or receiver is None or not self.link_up(m.src, m.dst):
            return
        owner = self.owner_of(m.dst)
        self.loop.create_task(self._install(sender, receiver, m), context=owned_context(owner))

    async def _install(self, sender: Node, receiver: Node, m: InstallSnapshot) -> None:
        try:
            staged = await receiver.storage.stage_snapshot(
                m.snapshot.meta, m.snapshot.data, sender.storage.snapshot_chunks(m.snapshot)
            )
        except (SnapshotMissing, SnapshotCorrupt):
            return  # replaced meanwhile: the leader sends the newer one
        self.stats["snapshots_sent"] += 1
        self.deliver(InstallSnapshot(m.src, m.dst, m.term, staged))

    # ---- crashes and restarts -------------------------------------------------------------------

    async def start(self, nid: int) -> None:
        assert self._nodes[nid] is None
        self._incarnation[nid] += 1
        owner = self.owner_of(nid)
        storage = self.disks[nid].open()
        node_rng = random.Random(self.rng.getrandbits(64))
        mix = self.mix
        peers = {i: "" for i in self.ids}
        loop = self.loop
        skew_ms = self.rng.randint(-50, 50)  # wall clocks disagree a little

        async def open_node() -> Node:
            node = await self.node_cls.open(
                Path("sim-unused"),
                ClusterConfig(
                    node_id=nid, peers=peers, tick_ms=mix.tick_ms, election_ticks=mix.election_ticks
                ),
                NodeLimits(
                    snapshot_entries=mix.snapshot_entries,
                    request_timeout_ms=mix.request_timeout_ms,
                    session_ping_ms=mix.session_ping_ms,
                    session_check_ms=mix.session_check_ms,
                ),
                DriverLimits(tick_ms=mix.tick_ms),
                transport_factory=lambda n: SimTransport(self, nid, owner),
                storage=storage,
                wall_ms=lambda: WALL_MS_START + skew_ms + loop.monotonic_ms(),
                monotonic_ms=loop.monotonic_ms,
                rng=node_rng,
            )
            node.start()
            return node

        task = loop.create_task(open_node(), context=owned_context(owner))
        node = await task
        self._nodes[nid] = node
        self._watch_ephemerals(node)
        self.note("start", nid)

    def _watch_ephemerals(self, node: Node) -> None:
        """Record every ephemeral removal and session close this incarnation
        applies, its recovery included: some node applied each txn (the one
        that took the first snapshot past it did), so together they see all."""
        history = node.history
        for group in history.after(history.compacted_zxid):
            self._on_events(group.zxid, group.events)
        node.listeners.append(self._on_events)
        node.session_closed_listeners.append(self._on_session_closed)

    def _on_events(self, zxid: int, events: Iterable[Event]) -> None:
        for e in events:
            if e.type == "deleted" and e.path.startswith(EPHEMERALS + "/"):
                self.removed.add((zxid, e.path))

    def _on_session_closed(self, session_id: str) -> None:
        self.session_closed_ns.setdefault(session_id, self.loop.monotonic_ns())

    def crash(self, nid: int, why: str) -> None:
        node = self._nodes[nid]
        if node is None:
            return
        self.snapshots += node.snapshots_taken
        self._nodes[nid] = None
        self.disks[nid].crash()
        self.loop.kill(self.owner_of(nid))
        self.faults[why] += 1
        self.note("crash", nid, why)

    def _save_hook(self, nid: int) -> Callable[[], None]:
        def on_save_start() -> None:
            if not self._chaos or self.rng.random() >= self.mix.crash_in_save:
                return
            if len(self.ids) - len(self.live_ids()) >= self._down_max():
                return
            # Later in this save's window: after the turn's other callbacks.
            self.loop.call_soon(self._crash_and_reboot, nid)

        return on_save_start

    def _crash_and_reboot(self, nid: int) -> None:
        if self._nodes[nid] is None or self.disks[nid].inflight is None:
            return
        self.crash(nid, "crash_in_save")
        delay_s = self.rng.randint(1, self.mix.reboot_ms_max) / 1000
        self.loop.call_later(delay_s, self._restart_soon, nid)
        if self.mix.leader_crash_after_ms_max:
            delay_s = self.rng.randint(1, self.mix.leader_crash_after_ms_max) / 1000
            self.loop.call_later(delay_s, self._crash_leader)

    def _crash_leader(self) -> None:
        leaders = [i for i in self.live_ids() if self._is_leader(i)]
        # It may leave a majority down for a moment: both restart within
        # reboot_ms_max, and the run goes on as usual.
        if (
            not self._chaos
            or not leaders
            or len(self.ids) - len(self.live_ids()) > self._down_max()
        ):
            return
        self.crash(leaders[0], "crash_leader")
        delay_s = self.rng.randint(1, self.mix.reboot_ms_max) / 1000
        self.loop.call_later(delay_s, self._restart_soon, leaders[0])

    def _restart_soon(self, nid: int) -> None:
        if self._nodes[nid] is None and nid not in self._restarting:
            self._restarting.add(nid)
            self.loop.create_task(self._restart(nid))

    async def _restart(self, nid: int) -> None:
        try:
            if self._nodes[nid] is None:
                await self.start(nid)
        finally:
            self._restarting.discard(nid)

    def _down_max(self) -> int:
        return (len(self.ids) - 1) // 2

    # ---- the nemesis ------------------------------------------------------------------------------

    async def _nemesis(self) -> None:
        mix = self.mix
        rng = self.rng
        kinds = [
            ("partition", mix.partition),
            ("isolate_leader", mix.isolate_leader),
            ("heal", mix.heal),
            ("crash", mix.crash),
            ("restart", mix.restart),
        ]
        total = sum(w for _, w in kinds)
        while self._chaos:
            await asyncio.sleep(
                rng.randint(mix.nemesis_ms_mean // 2, 2 * mix.nemesis_ms_mean) / 1000
            )
            if not self._chaos:
                return
            roll = rng.random() * total
            for kind, weight in kinds:
                roll -= weight
                if roll < 0:
                    break
            if kind == "partition":
                self._partition()
            elif kind == "isolate_leader":
                leaders = [i for i in self.live_ids() if self._is_leader(i)]
                if leaders:
                    self._isolate(leaders[0])
            elif kind == "heal":
                self.cut.clear()
                self.note("heal")
            elif kind == "crash":
                live = self.live_ids()
                if len(self.ids) - len(live) < self._down_max() and live:
                    self.crash(rng.choice(live), "crash")
            elif kind == "restart":
                down = [i for i in self.ids if self._nodes[i] is None]
                if down:
                    self._restart_soon(rng.choice(down))
                    self.faults["restart"] += 1

    def _is_leader(self, nid: int) -> bool:
        node = self._nodes[nid]
        return node is not None and node.driver.core.role is Role.LEADER

    def _partition(self) -> None:
        rng = self.rng
        side = set(rng.sample(self.ids, rng.randint(1, self._down_max() or 1)))
        one_way = rng.random() < self.mix.one_way
        self.cut.clear()
        for a in side:
            for b in self.ids:
                if b not in side:
                    self.cut.add((a, b))
                    if not one_way:
                        self.cut.add((b, a))
        self.faults["partition_one_way" if one_way else "partition"] += 1
        self.note("partition", sorted(side), one_way)

    def _isolate(self, nid: int) -> None:
        self.cut.clear()
        for b in self.ids:
            if b != nid:
                self.cut.update({(nid, b), (b, nid)})
        self.faults["isolate_leader"] += 1
        self.note("isolate", nid)

    # ---- the monitor -------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """At most one leader per term, sampled every half tick."""
        step_s = self.mix.tick_ms / 2000
        while not self._stop_clients or self._chaos:
            for nid in self.live_ids():
                node = self._nodes[nid]
                assert node is not None
                core = node.driver.core
                if core.role is Role.LEADER:
                    other = self.leader_of_term.setdefault(core.term, nid)
                    if other != nid:
                        self.violate(f"nodes {other} and {nid} both led term {core.term}")
                    self.note("leader", core.term, nid)
            await asyncio.sleep(step_s)

    def abort(self, what: str) -> None:
        """Stop the run now (it cannot end well, and would only burn time)."""
        if self._aborted:
            return
        self.violate(what)
        self._aborted = True
        self.loop.stop()

    def violate(self, what: str) -> None:
        if what not in self.violations:
            self.violations.append(what)
            self.note("violation", what)

    # ---- the clients ---------------------------------------------------------------------------------

    async def on_node(self, nid: int, call: Callable[[Node], Awaitable[T]]) -> T:
        """Run ``call`` as the node's task (a crash cancels it), bounded by the
        client's timeout."""
        node = self._nodes[nid]
        if node is None:
            raise _Down(f"node {nid} is down")

        async def run() -> T:
            return await call(node)

        task = self.loop.create_task(run(), context=owned_context(self.owner_of(nid)))
        done, _ = await asyncio.wait([task], timeout=self.mix.client_timeout_ms / 1000)
        if not done:
            task.cancel()
            raise _Lost("client timeout")
        if task.cancelled():
            raise _Lost("node crashed")
        return task.result()

    async def _client(self, cid: str, rng: random.Random) -> None:
        mix = self.mix
        versions: dict[str, int] = dict.fromkeys(mix.keys, 0)
        high_zxid = 0
        seen = self.zxids_seen.setdefault(cid, [])
        n = 0
        while not self._stop_clients:
            await asyncio.sleep(rng.randint(1, mix.think_ms_max) / 1000)
            nid = rng.choice(self.ids)
            key = rng.choice(mix.keys)
            path = f"/reg-{key}"
            roll = rng.random()
            n += 1
            if roll < mix.read_share:
                await self._lin_read(cid, nid, key)
            elif roll < mix.read_share + mix.seq_read_share:
                try:
                    zxid = await self.on_node(nid, _seq_read(high_zxid))
                except (CoordError, _Down, _Lost):
                    continue
                seen.append(Observation(self.loop.monotonic_ns(), zxid))
                high_zxid = max(high_zxid, zxid)
            else:
                value = f"{cid}.{n}"
                if roll < mix.read_share + mix.seq_read_share + mix.cas_share:
                    expected = max(0, versions[key] + rng.randint(-1, 1))  # -1 is ANY_VERSION
                    op = self.history.invoke(cid, "cas", key, (expected, value))
                    set_op = SetDataOp(path, value.encode(), version=expected)
                else:
                    op = self.history.invoke(cid, "write", key, value)
                    set_op = SetDataOp(path, value.encode(), upsert=True)
                try:
                    result = await self.on_node(nid, _propose(set_op))
                except CoordError as exc:
                    if exc.code in DEFINITE_REFUSALS:
                        self.history.fail(op, exc.code)
                    else:
                        self.history.unknown(op, exc.code)
                    continue
                except _Down:
                    self.history.fail(op, "Down")
                    continue
                except _Lost as exc:
                    self.history.unknown(op, str(exc))
                    continue
                stat = result.results[0].stat
                assert stat is not None
                versions[key] = stat.version
                self.history.ok(op, stat.version)
                seen.append(Observation(self.loop.monotonic_ns(), result.zxid, op.id))
                high_zxid = max(high_zxid, result.zxid)

    async def _lin_read(self, cid: str, nid: int, key: str) -> bool:
        op = self.history.invoke(cid, "read", key)
        try:
            data, version = await self.on_node(nid, _lin_read(f"/reg-{key}"))
        except CoordError as exc:
            self.history.fail(op, exc.code)
            return False
        except (_Down, _Lost) as exc:
            self.history.fail(op, type(exc).__name__)
            return False
        self.history.ok(op, (data, version))
        return True

    # ---- the session clients ----------------------------------------------------------------------------

    async def _session_client(self, cid: str, rng: random.Random) -> None:
        """Open a session, heartbeat it at random nodes, create and delete
        ephemerals under it, then close it or stop heartbeating; again."""
        mix = self.mix
        while not self._stop_clients:
            await asyncio.sleep(rng.randint(1, mix.think_ms_max) / 1000)
            session = await self._open_session(cid, rng)
            if session is None:
                continue  # one opened unknown dies alone: nobody heartbeats it
            self.sessions.append(session)
            hold_until_ms = self.loop.monotonic_ms() + rng.randint(1, mix.session_hold_ms_max)
            while not self._stop_clients and session.gone_seen_ns is None:
                if self.loop.monotonic_ms() >= hold_until_ms:
                    break
                await asyncio.sleep(rng.randint(mix.heartbeat_ms // 2, mix.heartbeat_ms) / 1000)
                roll = rng.random()
                if roll < mix.create_share:
                    await self._create_ephemeral(session, rng)
                elif roll < mix.create_share + mix.delete_share and session.ephemerals:
                    await self._delete_ephemeral(session, rng)
                else:
                    await self._heartbeat(session, rng)
            if session.gone_seen_ns is not None:
                continue
            session.released_ns = self.loop.monotonic_ns()
            if not self._stop_clients and rng.random() < mix.session_close_share:
                await self._close_session(session, rng)
            else:
                self.session_ops["dropped"] += 1
                self.note("drop", session.id)

    def _saw(self, session: SimSession, zxid: int) -> None:
        session.seen.append((self.loop.monotonic_ns(), zxid))

    async def _open_session(self, cid: str, rng: random.Random) -> SimSession | None:
        session_id = f"{rng.getrandbits(64):016x}"
        sent_ns = self.loop.monotonic_ns()
        op = OpenSessionOp(session_id, self.mix.session_ttl_ms)
        nid = rng.choice(self.ids)
        try:
            result = await self.on_node(nid, _propose(op))
        except (CoordError, _Down, _Lost) as exc:
            self._count("open", exc)
            return None
        self._count("open", None)
        self.note("open", cid, session_id, result.zxid)
        session = SimSession(session_id, cid, self.mix.session_ttl_ms, [sent_ns], node=nid)
        self._saw(session, result.zxid)
        return session

    async def _heartbeat(self, session: SimSession, rng: random.Random) -> None:
        sent_ns = self.loop.monotonic_ns()
        try:
            zxid = await self.on_node(self._session_node(session, rng), _heartbeat(session.id))
        except _Gone as gone:
            self._count("heartbeat", gone)
            self._gone(session, gone.zxid)
            return
        except (CoordError, _Down, _Lost) as exc:
            self._count("heartbeat", exc)
            self._move(session, rng)
            return
        self._count("heartbeat", None)
        session.acks_sent_ns.append(sent_ns)
        self._saw(session, zxid)

    async def _create_ephemeral(self, session: SimSession, rng: random.Random) -> None:
        self._ephemeral_seq += 1
        path = f"{EPHEMERALS}/{session.client}-{self._ephemeral_seq}"
        sent_ns = self.loop.monotonic_ns()
        op = CreateOp(path, b"", ephemeral_owner=session.id)
        try:
            result = await self.on_node(
                self._session_node(session, rng), _heartbeat_then_propose(op)
            )
        except _Gone as gone:
            self._count("create", gone)
            self._gone(session, gone.zxid)
            return
        except (CoordError, _Down, _Lost) as exc:
            self._count("create", exc)
            self._move(session, rng)
            return
        self._count("create", None)
        # The create went through a heartbeat on that node, and needed the
        # session alive when it applied.
        session.acks_sent_ns.append(sent_ns)
        self._saw(session, result.zxid)
        session.alive_zxid = max(session.alive_zxid, result.zxid)
        session.ephemerals.append(path)
        self.ephemeral_events.append(EphemeralEvent(result.zxid, "create", path, session.id))
        self.note("create", path, result.zxid)

    async def _delete_ephemeral(self, session: SimSession, rng: random.Random) -> None:
        path = session.ephemerals.pop(rng.randrange(len(session.ephemerals)))
        seen = max((z for _, z in session.seen), default=0)
        try:
            result = await self.on_node(self._session_node(session, rng), _propose(DeleteOp(path)))
        except CoordError as exc:
            self._count("delete", exc)
            if exc.code in DEFINITE_REFUSALS:
                session.ephemerals.append(path)
            elif exc.code != "NoNode":
                self.ephemeral_events.append(EphemeralEvent(seen, "maybe_delete", path))
            if exc.code != "NoNode":
                self._move(session, rng)
            return
        except _Down as exc:
            self._count("delete", exc)
            session.ephemerals.append(path)
            self._move(session, rng)
            return
        except _Lost as exc:
            self._count("delete", exc)
            self.ephemeral_events.append(EphemeralEvent(seen, "maybe_delete", path))
            self._move(session, rng)
            return
        self._count("delete", None)
        self._saw(session, result.zxid)
        self.ephemeral_events.append(EphemeralEvent(result.zxid, "delete", path))
        self.note("delete", path, result.zxid)

    async def _close_session(self, session: SimSession, rng: random.Random) -> None:
        session.close_sent_ns = self.loop.monotonic_ns()
        try:
            result = await self.on_node(
                self._session_node(session, rng), _propose(CloseSessionOp(session.id))
            )
        except (CoordError, _Down, _Lost) as exc:
            self._count("close", exc)
            return  # closed or not, nobody heartbeats it now
        self._count("close", None)
        session.closed_zxid = result.zxid
        self._saw(session, result.zxid)
        self.note("close", session.id, result.zxid)

    def _session_node(self, session: SimSession, rng: random.Random) -> int:
        return session.node if self.mix.sticky_sessions else rng.choice(self.ids)

    def _move(self, session: SimSession, rng: random.Random) -> None:
        """A sticky client tries another node after a failure."""
        if self.mix.sticky_sessions:
            session.node = rng.choice([i for i in self.ids if i != session.node])

    def _gone(self, session: SimSession, zxid: int) -> None:
        # The answer's zxid counts: seen before the lease could lapse, a
        # zxid at or past the session's end says it ended too soon.
        session.gone_seen_ns = self.loop.monotonic_ns()
        self._saw(session, zxid)
        self.note("gone", session.id)

    def _count(self, f: str, exc: BaseException | None) -> None:
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, CoordError):
            outcome = exc.code
        else:
            outcome = type(exc).__name__.strip("_")
        self.session_ops[f"{f}_{outcome}"] += 1

    # ---- the run -----------------------------------------------------------------------------------------

    async def _poll(self, what: str, done: Callable[[], bool], within_ms: int) -> bool:
        deadline = self.loop.monotonic_ms() + within_ms
        while not done():
            if self.loop.monotonic_ms() >= deadline:
                self.violate(f"liveness: not {what} within {within_ms} ms")
                return False
            await asyncio.sleep(0.01)
        return True

    def _leader(self) -> Node | None:
        leaders = [n for n in self._nodes.values() if n is not None and n.driver.is_leader]
        if len(leaders) != 1:
            return None
        core = leaders[0].driver.core
        if core.log.term(core.committed) != core.term or leaders[0].applied_index < core.committed:
            return None
        return leaders[0]

    def _converged(self) -> bool:
        nodes = [n for n in self._nodes.values() if n is not None]
        leader = self._leader()
        if leader is None or len(nodes) != len(self.ids):
            return False
        committed = leader.driver.core.committed
        return all(n.applied_index == committed for n in nodes) and (
            len({(n.zxid, n.digest()) for n in nodes}) == 1
        )

    async def _main(self) -> None:
        mix = self.mix
        for nid in self.ids:
            await self.start(nid)
        monitor = self.loop.create_task(self._monitor())
        if not await self._poll("a leader is elected", lambda: self._leader() is not None, 5000):
            return
        for key in mix.keys:
            await self._create(f"/reg-{key}")
        await self._create(EPHEMERALS)
        self._chaos = True
        nemesis = self.loop.create_task(self._nemesis())
        clients = [
            self.loop.create_task(self._client(f"c{c}", random.Random(self.rng.getrandbits(64))))
            for c in range(mix.clients)
        ]
        clients += [
            self.loop.create_task(
                self._session_client(f"s{c}", random.Random(self.rng.getrandbits(64)))
            )
            for c in range(mix.session_clients)
        ]
        await asyncio.sleep(mix.chaos_ms / 1000)
        self._chaos = False
        await nemesis
        self.cut.clear()
        self.note("heal all")
        for nid in self.ids:
            if self._nodes[nid] is None and nid not in self._restarting:
                await self.start(nid)
        await self._poll(
            "every node is up", lambda: all(n is not None for n in self._nodes.values()), 2000
        )
        await asyncio.sleep(mix.steady_ms / 1000)
        self._stop_clients = True
        await asyncio.gather(*clients)
        converged = await self._poll("every node converged", self._converged, mix.heal_ms_max)
        if converged:
            # Nobody heartbeats now: every session must expire, its
            # ephemerals with it, within a ttl and the slack of the last
            # heartbeat (the check is every session_check_ms).
            await self._poll(
                "every session ended",
                self._sessions_ended,
                mix.session_ttl_ms + mix.lease_slack_ms + mix.heal_ms_max // 4,
            )
            converged = await self._poll(
                "every node converged after the expiries", self._converged, mix.heal_ms_max
            )
        self._check_divergence()
        if converged:
            for nid in self.ids:
                for key in mix.keys:
                    await self._lin_read("final", nid, key)
        await monitor

    def _sessions_ended(self) -> bool:
        nodes = [n for n in self._nodes.values() if n is not None]
        return all(
            n.session_count == 0 and (not n.exists(EPHEMERALS) or not n.get(EPHEMERALS).children)
            for n in nodes
        )

    def _check_divergence(self) -> None:
        """Nodes at one zxid hold one tree (whether or not they converged), and
        no node's loop stopped on an error."""
        by_zxid: dict[int, dict[str, list[int]]] = {}
        for nid in self.live_ids():
            node = self._nodes[nid]
            assert node is not None
            if node.driver.failed is not None:
                # No fault injected here fails a write: the loop broke on its own.
                self.violate(f"node {nid}'s loop failed: {node.driver.failed!r}")
            by_zxid.setdefault(node.zxid, {}).setdefault(node.digest(), []).append(nid)
        for zxid, digests in sorted(by_zxid.items()):
            if len(digests) > 1:
                groups = " vs ".join(str(ids) for ids in digests.values())
                self.violate(f"nodes at zxid {zxid} hold different trees: {groups}")
        if not self._converged():
            self.violate(f"not converged: {self._describe()}")

    def _describe(self) -> str:
        cells = []
        for nid in self.ids:
            node = self._nodes[nid]
            if node is None:
                cells.append(f"{nid}:down")
                continue
            core = node.driver.core
            cells.append(
                f"{nid}:{core.role.value} t{core.term} c{core.committed} a{node.applied_index}"
                f" l{core.log.last_index()} z{node.zxid} {node.digest()[:8]}"
                f"{' failed' if node.driver.failed else ''}"
            )
        return " | ".join(cells)

    async def _create(self, path: str) -> None:
        for _ in range(50):
            leader = self._leader()
            if leader is not None:
                try:
                    await self.on_node(leader.node_id, _propose(CreateOp(path, INITIAL.encode())))
                    return
                except (CoordError, _Down, _Lost):
                    pass
            await asyncio.sleep(0.05)
        self.violate(f"liveness: could not create {path}")

    async def _shutdown(self) -> None:
        for nid in self.ids:
            node = self._nodes[nid]
            if node is not None:
                self.snapshots += node.snapshots_taken
                self._nodes[nid] = None
                self.loop.kill(self.owner_of(nid))
        await asyncio.sleep(0.001)

    def run(self) -> SimResult:
        started = time.perf_counter()
        loop = self.loop
        try:
            loop.run_until_complete(self._main())
        except Stuck as exc:
            self.violate(f"liveness: {exc}")
        except RuntimeError:
            if not self._aborted:
                raise
        finally:
            try:
                loop.run_until_complete(self._shutdown())
            except (Stuck, RuntimeError):
                pass  # an aborted run: its nodes are gone, what is left is not checked
            loop.close()
        ops = self.history.ops()
        result = SimResult(
            self.seed,
            self.mix.name,
            self.bug,
            "",
            Counter(f"{op.f}_{op.outcome}" for op in ops),
            Counter(self.faults),
            loop.monotonic_ms(),
            max_zxid=max((o.zxid for obs in self.zxids_seen.values() for o in obs), default=0),
            snapshots=self.snapshots,
        )
        for op in ops:
            self._trace.update(orjson.dumps(op.to_json(), option=orjson.OPT_SORT_KEYS))
        self._check(ops)
        self._check_sessions()
        result.session_ops = Counter(self.session_ops)
        self._trace.update(orjson.dumps(sorted(self.session_ops.items())))
        result.trace = self._trace.hexdigest()
        result.wall_s = time.perf_counter() - started
        if self.violations:
            raise Violation(
                f"{'; '.join(self.violations)} ({result.summary()}; "
                f"replay: {replay_command(self.seed, self.mix.name, self.bug)})"
            )
        return result

    def _check(self, ops: list[Any]) -> None:
        lin = check_linearizable(
            ops, VersionedRegister(initial=INITIAL), time_budget_s=CHECK_BUDGET_S
        )
        for anomaly in lin.anomalies():
            # A search out of budget proves nothing either way: never a pass.
            self.violate(f"{anomaly.kind.replace('_', ' ')}: {anomaly.message}")
        for anomaly in check_monotonic_zxids(self.zxids_seen):
            self.violate(f"zxid went back: {anomaly.message}")

    def _check_sessions(self) -> None:
        """Every ephemeral went by a delete or with its session, no earlier
        than its client can place the session's end; no session ended
        sooner than a ttl (less the slack) after its last acknowledged
        heartbeat, unless its client had sent a close."""
        slack_ms, reach_ms = self.mix.lease_slack_ms, self.mix.lease_reach_ms
        events = list(self.ephemeral_events)
        events += [EphemeralEvent(zxid, "removed", path) for zxid, path in sorted(self.removed)]
        leases = []
        for session in self.sessions:
            closed = self.session_closed_ns.get(session.id)
            ended = min((t for t in (closed, session.gone_seen_ns) if t is not None), default=None)
            if ended is not None:
                if session.close_sent_ns is None or ended < session.close_sent_ns:
                    last_ns = session.lease_ack_ns(ended, slack_ms, reach_ms)
                    leases.append(SessionLease(session.id, session.ttl_ms, last_ns, ended))
                    self.session_ops["expired"] += 1
                else:
                    self.session_ops["closed"] += 1
            events.append(session.end_event(slack_ms, reach_ms, ended))
        self.session_ops["ephemerals_removed"] = len(self.removed)
        for anomaly in check_ephemerals(events):
            self.violate(f"ephemeral removed early: {anomaly.message}")
        for anomaly in check_session_leases(leases, slack_ms):
            self.violate(f"session expired early: {anomaly.message}")


def _propose(op: Any) -> Callable[[Node], Awaitable[Any]]:
    async def call(node: Node) -> Any:
        return await node.propose((op,))

    return call


def _lin_read(path: str) -> Callable[[Node], Awaitable[tuple[str, int]]]:
    async def call(node: Node) -> tuple[str, int]:
        await node.barrier(linearizable=True)
        znode = node.get(path)
        return znode.data.decode(), znode.version

    return call


def _heartbeat(session_id: str) -> Callable[[Node], Awaitable[int]]:
    """What ``POST /v1/sessions/{id}/heartbeat`` does (routes/sessions.py);
    the node's zxid, which every answer carries."""

    async def call(node: Node) -> int:
        try:
            node.heartbeat(session_id)
        except SessionExpired:
            if node.session(session_id) is not None:
                raise _Gone(node.zxid) from None  # known here and being expired: gone
            # Not applied here yet, maybe: look again at a linearizable point.
            await node.barrier(linearizable=True)
            try:
                node.heartbeat(session_id)
            except SessionExpired:
                raise _Gone(node.zxid) from None
        return node.zxid

    return call


def _heartbeat_then_propose(op: CreateOp) -> Callable[[Node], Awaitable[Any]]:
    """An ephemeral create as ``POST /v1/nodes`` makes it: a heartbeat first."""
    beat = _heartbeat(op.ephemeral_owner)

    async def call(node: Node) -> Any:
        await beat(node)
        try:
            return await node.propose((op,))
        except SessionExpired:
            raise _Gone(node.zxid) from None  # the txn found no session: gone

    return call


def _seq_read(min_zxid: int) -> Callable[[Node], Awaitable[int]]:
    async def call(node: Node) -> int:
        await node.barrier(min_zxid=min_zxid)
        return node.zxid

    return call


def run_seed(seed: int, mix: str = "default", bug: str | None = None) -> SimResult:
    from tests.sim.node_bugs import NODE_BUGS

    node_cls = NODE_BUGS[bug] if bug else Node
    return NodeSimulation(seed, mix, bug, node_cls).run()


def main(argv: list[str] | None = None) -> int:
    from tests.sim.node_bugs import NODE_BUGS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--mix", choices=sorted(MIXES), default="default")
    p.add_argument("--bug", choices=sorted(NODE_BUGS), default=None)
    args = p.parse_args(argv)
    try:
        result = run_seed(args.seed, args.mix, args.bug)
    except Violation as v:
        print(f"VIOLATION: {v}")
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
