"""Three Nodes in one process, on in-memory storage and a loopback transport.

The transport below implements the driver's ``Transport`` protocol the way
the real one behaves: messages arrive later (``loop.call_soon``) and in
order, unless their link is cut; RPCs reach the target node's peer handlers
(``handle_propose`` / ``handle_touch`` / ``handle_status``) and fail with the
real transport's errors; an ``InstallSnapshot`` is delivered only after its
chunks were staged from the sender's storage into the receiver's, as the
snapshot stream does. Ticks are 5 ms of the injected monotonic clock, which
is real time plus an offset a test moves by hand (session expiry), and every
wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from httpcoord.cluster.driver import DriverLimits
from httpcoord.cluster.forward import PROPOSE_PATH
from httpcoord.cluster.node import (
    STATUS_PATH,
    TOUCH_PATH,
    ClusterConfig,
    Node,
    NodeLimits,
)
from httpcoord.cluster.node_storage import MemoryNodeStorage, SnapshotCorrupt, SnapshotMissing
from httpcoord.cluster.raft.core import Role
from httpcoord.cluster.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    HardState,
    InstallSnapshot,
    Message,
    ReadIndexResponse,
    Snapshot,
)
from httpcoord.cluster.transport import OutcomeUnknown as PeerOutcomeUnknown
from httpcoord.cluster.transport import PeerCallFailed, PeerUnavailable
from httpcoord.errors import (
    Compacted,
    CoordError,
    NoNode,
    OutcomeUnknown,
    Unavailable,
    ZxidNotReached,
)
from httpcoord.tree.tree import Event, TxnResult
from httpcoord.tree.txn import CreateOp, OpenSessionOp

TICK_MS = 5
# An election timeout is 20-39 ticks (100-195 ms). A turn catches up at most
# 10 ticks, so neither a stalled event loop nor a test moving the clock by
# hand makes a follower campaign while its leader is alive.
ELECTION_TICKS = 20
TICKS_PER_TURN_MAX = 10
POLL_DEADLINE_S = 10.0
WALL_MS = 1_000_000


async def poll(what: str, done: Callable[[], bool], deadline_s: float = POLL_DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not done():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.002)


def exists(node: Node, path: str) -> bool:
    try:
        node.get(path)
    except NoNode:
        return False
    return True


# ---- the loopback network -------------------------------------------------------------


class Net:
    """Who can reach whom. A cut link drops messages both ways, and RPCs
    too unless it was cut with ``calls=False``; ``drop`` drops more."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self._no_msgs: set[frozenset[int]] = set()
        self._no_calls: set[frozenset[int]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.delivered: Counter[tuple[str, int]] = Counter()  # (message type, dst)
        self.snapshots_installed: Counter[int] = Counter()  # by receiver

    def cut(self, a: int, b: int, calls: bool = True) -> None:
        self._no_msgs.add(frozenset((a, b)))
        if calls:
            self._no_calls.add(frozenset((a, b)))

    def isolate(self, a: int, calls: bool = True) -> None:
        for b in self.nodes:
            if b != a:
                self.cut(a, b, calls)

    def allow_calls(self, a: int, b: int) -> None:
        self._no_calls.discard(frozenset((a, b)))

    def heal(self) -> None:
        self._no_msgs.clear()
        self._no_calls.clear()

    def msgs_pass(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self._no_msgs

    def calls_pass(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self._no_calls


class Loopback:
    """The driver's ``Transport`` for one node of a ``Net``."""

    def __init__(self, net: Net, node_id: int) -> None:
        self.net = net
        self.node_id = node_id
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, messages: Iterable[Message]) -> None:
        loop = asyncio.get_running_loop()
        for m in messages:
            if isinstance(m, InstallSnapshot):
                task = loop.create_task(self._install(m))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                loop.call_soon(self._deliver, m)

    def _deliver(self, m: Message) -> None:
        # Judged on arrival: a link cut while a message is in flight loses it.
        target = self.net.nodes.get(m.dst)
        if target is None or not self.net.msgs_pass(m.src, m.dst):
            return
        if self.net.drop is not None and self.net.drop(m):
            return
        self.net.delivered[(type(m).__name__, m.dst)] += 1
        target.driver.deliver(m)

    async def _install(self, m: InstallSnapshot) -> None:
        sender, receiver = self.net.nodes[m.src], self.net.nodes.get(m.dst)
        if receiver is None or not self.net.msgs_pass(m.src, m.dst):
            return
        try:
            staged = await receiver.storage.stage_snapshot(
                m.snapshot.meta, m.snapshot.data, sender.storage.snapshot_chunks(m.snapshot)
            )
        except (SnapshotMissing, SnapshotCorrupt):
            return  # replaced meanwhile: the leader sends the newer one after a timeout
        self.net.snapshots_installed[m.dst] += 1
        self._deliver(InstallSnapshot(m.src, m.dst, m.term, staged))

    def reachable(self, peer_id: int) -> bool:
        return peer_id in self.net.nodes and self.net.msgs_pass(self.node_id, peer_id)

    async def call(
        self,
        peer_id: int,
        path: str,
        body: bytes,
        timeout_ms: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        target = self.net.nodes.get(peer_id)
        if target is None or not self.net.calls_pass(self.node_id, peer_id):
            raise PeerUnavailable(f"node {peer_id} cannot be reached")
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                answer = await _dispatch(target, path, body)
        except TimeoutError:
            raise PeerOutcomeUnknown(f"call to node {peer_id} {path} timed out") from None
        except CoordError as exc:
            problem = orjson.dumps({"code": exc.code, "detail": str(exc)})
            raise PeerCallFailed(exc.status, problem, peer_id) from None
        if not self.net.calls_pass(self.node_id, peer_id):
            raise PeerOutcomeUnknown(f"the answer of node {peer_id} to {path} was lost")
        return answer

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _dispatch(node: Node, path: str, body: bytes) -> bytes:
    if path == PROPOSE_PATH:
        return await node.handle_propose(body)
    if path == TOUCH_PATH:
        return node.handle_touch(body)
    if path == STATUS_PATH:
        return node.handle_status()
    raise AssertionError(f"no peer route {path}")


# ---- the cluster --------------------------------------------------------------------------


class Cluster:
    def __init__(self, net: Net) -> None:
        self.net = net
        self.offset_ms = 0  # added to the real monotonic clock of every node
        self.wall_ms = {i: WALL_MS for i in (1, 2, 3)}

    @property
    def nodes(self) -> list[Node]:
        return list(self.net.nodes.values())

    def wall_clock(self, node_id: int) -> Callable[[], int]:
        return lambda: self.wall_ms[node_id]

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000 + self.offset_ms

    def others(self, *nodes: Node) -> list[Node]:
        return [n for n in self.nodes if n not in nodes]

    async def leader(self, among: list[Node] | None = None) -> Node:
        """Wait until one of ``among`` leads with its own no-op committed and
        applied, and the rest of ``among`` follow it."""
        group = among or self.nodes
        found: list[Node] = []

        def settled() -> bool:
            leaders = [n for n in group if n.driver.core.role is Role.LEADER]
            if len(leaders) != 1:
                return False
            core = leaders[0].driver.core
            if core.log.term(core.committed) != core.term:
                return False
            if leaders[0].applied_index < core.committed:
                return False
            if any(n.leader_id != leaders[0].node_id for n in group):
                return False
            found[:] = leaders
            return True

        await poll("a leader is elected", settled)
        return found[0]

    async def advance(self, ms: int, among: list[Node]) -> None:
        """Move every node's monotonic clock by ``ms``, then let a heartbeat
        round pass so the next move cannot look like a dead leader."""
        self.offset_ms += ms
        turns = {n.node_id: n.driver.turns for n in among}
        await poll(
            "the clock move is absorbed",
            lambda: (
                all(n.driver.turns >= turns[n.node_id] + 3 for n in among)
                and all(
                    n.driver.core.election_elapsed <= 2 for n in among if not n.driver.is_leader
                )
            ),
        )

    async def converged(self) -> None:
        """Wait until every node has applied the same zxid, with one digest."""

        def same() -> bool:
            zxids = {n.zxid for n in self.nodes}
            return len(zxids) == 1 and len({n.digest() for n in self.nodes}) == 1

        await poll("every node has applied the same txns", same)


@asynccontextmanager
async def cluster(tmp_path: Path, **limits: int) -> AsyncIterator[Cluster]:
    net = Net()
    c = Cluster(net)
    peers = {1: "", 2: "", 3: ""}
    try:
        for i in peers:
            net.nodes[i] = await Node.open(
                tmp_path / f"n{i}",
                ClusterConfig(
                    node_id=i, peers=peers, tick_ms=TICK_MS, election_ticks=ELECTION_TICKS
                ),
                NodeLimits(**limits),
                DriverLimits(tick_ms=TICK_MS, ticks_per_turn_max=TICKS_PER_TURN_MAX),
                transport_factory=lambda node: Loopback(net, node.node_id),
                storage=MemoryNodeStorage(bootstrap_voters=sorted(peers)),
                wall_ms=c.wall_clock(i),
                monotonic_ms=c.monotonic_ms,
                rng=random.Random(i),
            )
        for node in net.nodes.values():
            node.start(maintenance=False)
        yield c
    finally:
        await asyncio.gather(*(node.close() for node in net.nodes.values()))


def count_calls(obj: Any, name: str) -> list[int]:
    """Wrap ``obj.name`` to count its calls (in a one-element list)."""
    counter = [0]
    real = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    return counter


def record_events(node: Node) -> list[tuple[int, list[Event]]]:
    seen: list[tuple[int, list[Event]]] = []
    node.listeners.append(lambda zxid, events: seen.append((zxid, events)))
    return seen


# ---- writes -----------------------------------------------------------------------------------


async def test_a_write_on_a_follower_is_answered_from_its_own_apply(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, g = c.others(leader)
        result = await f.propose((CreateOp("/a", b"1"),))
        # Forwarded to the leader and answered here once applied here: read at once.
        assert f.zxid >= result.zxid == 1
        assert f.get("/a").stat() == result.results[0].stat

        # The follower hears nothing from the leader for a while; the
        # leader and g are a majority and commit the forwarded write.
        c.net.cut(leader.node_id, f.node_id, calls=False)
        write = asyncio.ensure_future(f.propose((CreateOp("/b", b"2"),)))
        await poll("the majority applied it", lambda: exists(leader, "/b") and exists(g, "/b"))
        assert not write.done(), "answered before the follower applied it"
        assert not exists(f, "/b")
        c.net.heal()
        result = await asyncio.wait_for(write, POLL_DEADLINE_S)
        assert f.zxid >= result.zxid == 2
        stat = result.results[0].stat
        assert f.get("/b").stat() == stat == leader.get("/b").stat() == g.get("/b").stat()


async def test_a_proposal_fails_unavailable_when_another_entry_takes_its_index(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, request_timeout_ms=5000) as c:
        old = await c.leader()
        f, g = c.others(old)
        await old.propose((CreateOp("/before"),))
        await c.converged()
        # The leader is cut off; a follower can still hand it a write (its
        # RPCs go through), so two writes end up in the old leader's log only.
        c.net.isolate(old.node_id)
        c.net.allow_calls(f.node_id, old.node_id)
        last = old.storage.last_index()
        on_leader = asyncio.ensure_future(old.propose((CreateOp("/lost1"),)))
        forwarded = asyncio.ensure_future(f.propose((CreateOp("/lost2"),)))
        await poll("the old leader logged both", lambda: old.storage.last_index() == last + 2)
        c.net.isolate(old.node_id)
        new = await c.leader(among=[f, g])
        for i in range(3):
            await new.propose((CreateOp(f"/n{i}"),))
        c.net.heal()
        # Other entries took their indexes: not committed, safe to retry.
        for proposal in (on_leader, forwarded):
            with pytest.raises(Unavailable) as refused:
                await asyncio.wait_for(proposal, POLL_DEADLINE_S)
            assert type(refused.value) is Unavailable, refused.value
        await c.converged()
        for n in c.nodes:
            assert not exists(n, "/lost1") and not exists(n, "/lost2")
            assert exists(n, "/n2")


async def test_a_proposal_whose_fate_is_not_known_in_time_is_outcome_unknown(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, request_timeout_ms=400) as c:
        old = await c.leader()
        c.net.isolate(old.node_id)
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(old.propose((CreateOp("/maybe"),)), POLL_DEADLINE_S)
        # Within the request timeout (plus scheduling), never hanging.
        assert time.monotonic() - started < 0.4 + 1.0
        # It was in fact lost: the others elected a leader and never saw it.
        new = await c.leader(among=c.others(old))
        await new.propose((CreateOp("/after"),))
        c.net.heal()
        await c.converged()
        assert not exists(old, "/maybe") and exists(old, "/after")


async def test_a_forwarded_write_in_flight_when_its_node_closes_is_outcome_unknown(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        c.net.cut(leader.node_id, f.node_id, calls=False)
        write = asyncio.ensure_future(f.propose((CreateOp("/w"),)))
        await poll("the leader applied it", lambda: exists(leader, "/w"))
        await f.close()
        # Committed: a client told "nothing was done, retry" would write it twice.
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(write, POLL_DEADLINE_S)


# ---- reads ----------------------------------------------------------------------------------


async def test_linearizable_reads_arriving_together_share_one_read_index_round(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        await leader.propose((CreateOp("/x"),))
        leader_rounds = count_calls(leader.driver.core, "read_index")
        follower_rounds = count_calls(f.driver.core, "read_index")
        forwarded_before = c.net.delivered[("ReadIndexRequest", leader.node_id)]

        await asyncio.wait_for(
            asyncio.gather(*(leader.barrier(linearizable=True) for _ in range(20))),
            POLL_DEADLINE_S,
        )
        assert leader_rounds == [1]
        await asyncio.wait_for(
            asyncio.gather(*(f.barrier(linearizable=True) for _ in range(20))),
            POLL_DEADLINE_S,
        )
        assert follower_rounds == [1]
        assert c.net.delivered[("ReadIndexRequest", leader.node_id)] == forwarded_before + 1

        # A linearizable read on a follower sees a write committed before it
        # started, even if the follower had not received it yet.
        c.net.cut(leader.node_id, f.node_id, calls=False)
        await leader.propose((CreateOp("/y"),))
        assert not exists(f, "/y")
        c.net.heal()
        await asyncio.wait_for(f.barrier(linearizable=True), POLL_DEADLINE_S)
        assert exists(f, "/y")


async def test_a_read_cut_off_from_the_majority_is_unavailable_within_the_timeout(
    tmp_path: Path,
) -> None:
    timeout_ms = 1000
    async with cluster(tmp_path, request_timeout_ms=timeout_ms) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        await leader.propose((CreateOp("/x", b"v"),))
        await c.converged()
        for cut_off in (f, leader):
            c.net.isolate(cut_off.node_id)
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await asyncio.wait_for(cut_off.barrier(linearizable=True), POLL_DEADLINE_S)
            assert time.monotonic() - started < timeout_ms / 1000 + 1.0
            # Sequential reads go on.
            assert cut_off.get("/x").data == b"v"
            c.net.heal()
            await c.leader()


async def test_a_read_answer_for_a_context_this_node_never_asked_releases_nothing(
    tmp_path: Path,
) -> None:
    timeout_ms = 500
    async with cluster(tmp_path, request_timeout_ms=timeout_ms) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        c.net.cut(leader.node_id, f.node_id, calls=False)
        read = asyncio.ensure_future(f.barrier(linearizable=True))
        turns = f.driver.turns
        await poll("the read is asked", lambda: f.driver.turns >= turns + 2)
        # An answer from the leader's term to a read of another incarnation.
        term = leader.driver.core.term
        for ctx in (0, 1, 2**62):
            f.driver.deliver(ReadIndexResponse(leader.node_id, f.node_id, term, ctx, 0))
        turns = f.driver.turns
        await poll("the answers are stepped", lambda: f.driver.turns >= turns + 3)
        assert not read.done()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(read, POLL_DEADLINE_S)


async def test_min_zxid_waits_until_applied_and_times_out_otherwise(tmp_path: Path) -> None:
    timeout_ms = 500
    async with cluster(tmp_path, request_timeout_ms=timeout_ms) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        c.net.cut(leader.node_id, f.node_id, calls=False)
        written = await leader.propose((CreateOp("/m"),))
        waiting = asyncio.ensure_future(f.barrier(min_zxid=written.zxid))
        turns = f.driver.turns
        await poll("the follower turns a few times", lambda: f.driver.turns >= turns + 5)
        assert not waiting.done() and not exists(f, "/m")
        c.net.heal()
        await asyncio.wait_for(waiting, POLL_DEADLINE_S)
        assert exists(f, "/m")
        # Reached already: no wait at all.
        await asyncio.wait_for(f.wait_for_zxid(written.zxid), 0.1)

        started = time.monotonic()
        with pytest.raises(ZxidNotReached) as behind:
            await f.barrier(min_zxid=f.zxid + 100)
        elapsed = time.monotonic() - started
        assert timeout_ms / 1000 * 0.9 <= elapsed < timeout_ms / 1000 + 1.0
        assert behind.value.status == 504


async def test_the_cluster_status_shows_every_member_and_who_is_reachable(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, g = c.others(leader)
        await f.propose((CreateOp("/s", b"x"),))
        await c.converged()
        status = await f.cluster_status()
        assert status["leader"] == leader.node_id
        rows = {row["id"]: row for row in status["members"]}
        assert sorted(rows) == [1, 2, 3]
        assert all(row["reachable"] and row["voter"] for row in rows.values())
        assert rows[leader.node_id]["role"] == "leader"
        # One zxid, one digest: the replicas agree, and it shows from any node.
        assert {row["zxid"] for row in rows.values()} == {leader.zxid}
        assert len({row["digest"] for row in rows.values()}) == 1
        c.net.isolate(g.node_id)
        rows = {row["id"]: row for row in (await f.cluster_status())["members"]}
        assert not rows[g.node_id]["reachable"] and rows[leader.node_id]["reachable"]


# ---- the leader's clock ------------------------------------------------------------------------


async def test_txn_stamps_never_go_back_across_a_leader_change(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        old = await c.leader()
        c.wall_ms[old.node_id] = WALL_MS + 5_000_000  # the old leader's clock runs ahead
        first = await old.propose((CreateOp("/a"),))
        stat_a = first.results[0].stat
        assert stat_a is not None and stat_a.ctime == WALL_MS + 5_000_000
        await c.converged()
        c.net.isolate(old.node_id)
        new = await c.leader(among=c.others(old))
        second = await new.propose((CreateOp("/b"),))
        stat_b = second.results[0].stat
        assert stat_b is not None and stat_b.ctime >= stat_a.ctime
        c.net.heal()
        await c.converged()
        # One stamp, carried by the txn: identical on every replica.
        assert {n.get("/b").ctime for n in c.nodes} == {stat_b.ctime}


async def test_txn_stamps_never_go_back_after_a_snapshot_install(tmp_path: Path) -> None:
    async with cluster(tmp_path, snapshot_entries=50) as c:
        old = await c.leader()
        f, _g = c.others(old)
        c.net.isolate(f.node_id)
        c.wall_ms[old.node_id] = WALL_MS + 5_000_000
        for i in range(0, 60, 10):
            await asyncio.gather(*(old.propose((CreateOp(f"/k{j}"),)) for j in range(i, i + 10)))
        await old.take_snapshot()  # the snapshot covers every txn
        assert old.storage.snapshot().meta.index == old.applied_index
        c.net.heal()
        await c.converged()
        assert c.net.snapshots_installed[f.node_id] >= 1
        old.driver.core.transfer_leadership(f.node_id)
        await poll("the follower takes over", lambda: f.driver.is_leader)
        assert await c.leader() is f
        after = await f.propose((CreateOp("/after"),))
        stat = after.results[0].stat
        assert stat is not None and stat.ctime >= old.get("/k59").ctime


async def test_txn_stamps_never_go_back_for_a_write_taken_during_a_new_leaders_first_save(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        old = await c.leader()
        rest = c.others(old)
        c.wall_ms[old.node_id] = WALL_MS + 5_000_000
        # The followers get the entry but never learn that it committed.
        c.net.drop = lambda m: (
            m.src == old.node_id and not (isinstance(m, AppendEntries) and m.entries)
        )
        first = await old.propose((CreateOp("/a"),))
        c.net.isolate(old.node_id)
        c.net.drop = None
        assert all(n.storage.last_index() > n.applied_index for n in rest)
        taken: list[asyncio.Future[TxnResult]] = []

        def hook(n: Node) -> None:
            real_save = n.storage.save

            async def save(
                hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
            ) -> None:
                if not taken and n.driver.is_leader:
                    # Elected in this turn: a write arrives while its first Ready is saved.
                    taken.append(asyncio.ensure_future(n.propose((CreateOp("/b"),))))
                    await asyncio.sleep(0)
                await real_save(hard_state, snapshot, entries)

            n.storage.save = save  # type: ignore[method-assign]

        for n in rest:
            hook(n)
        await c.leader(among=rest)
        assert taken
        second = await asyncio.wait_for(taken[0], POLL_DEADLINE_S)
        stat_a, stat_b = first.results[0].stat, second.results[0].stat
        assert stat_a is not None and stat_b is not None
        assert stat_b.ctime >= stat_a.ctime


# ---- sessions ------------------------------------------------------------------------------------


async def test_a_heartbeat_on_a_follower_keeps_the_session_alive_on_the_leader(
    tmp_path: Path,
) -> None:
    ttl_ms = 60_000
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        f, g = c.others(leader)
        seen = {n.node_id: record_events(n) for n in c.nodes}
        await f.propose((OpenSessionOp("s", ttl_ms),))
        await f.propose((CreateOp("/e1", ephemeral_owner="s"),))
        await leader.propose((CreateOp("/e2", ephemeral_owner="s"),))
        for _ in range(3):
            await c.advance(40_000, c.nodes)
            left = leader.session_expires_in_ms("s")
            assert left is not None and left <= ttl_ms - 40_000
            assert f.heartbeat("s") == ttl_ms
            await f.ping_leader()
            # The follower's ping moved the deadline on the leader.
            left = leader.session_expires_in_ms("s")
            assert left is not None and left >= ttl_ms - 5_000
            assert await leader.expire_sessions() == []
        # Far past the ttl since it opened: only the heartbeats kept it.
        assert leader.session("s") is not None
        await c.advance(ttl_ms, c.nodes)
        # Only the leader expires.
        assert f.session_expires_in_ms("s") is None
        assert await f.expire_sessions() == [] and await g.expire_sessions() == []
        assert await leader.expire_sessions() == ["s"]
        await c.converged()
        closes = set()
        for n in c.nodes:
            assert n.session("s") is None
            assert not exists(n, "/e1") and not exists(n, "/e2")
            deleted = {
                e.path: zxid
                for zxid, events in seen[n.node_id]
                for e in events
                if e.type == "deleted"
            }
            # Both ephemerals went in the txn that closed the session.
            assert deleted["/e1"] == deleted["/e2"]
            closes.add(deleted["/e1"])
        assert len(closes) == 1  # ... and it is the same txn on every node


async def test_a_new_leader_expires_nothing_before_its_no_op_then_gives_the_full_ttl(
    tmp_path: Path,
) -> None:
    ttl_ms = 60_000
    async with cluster(tmp_path) as c:
        old = await c.leader()
        await old.propose((OpenSessionOp("s", ttl_ms),))
        await old.propose((CreateOp("/e", ephemeral_owner="s"),))
        await c.converged()
        # No heartbeat for 40 s: 20 s are left on the old leader.
        await c.advance(40_000, c.nodes)
        left = old.session_expires_in_ms("s")
        assert left is not None and left <= 20_000
        # The old leader is lost; its successor is elected, but nothing it
        # appends commits (every append acknowledgement is lost).
        c.net.drop = lambda m: isinstance(m, AppendResponse)
        c.net.isolate(old.node_id)
        rest = c.others(old)
        await poll(
            "a new leader is elected",
            lambda: any(n.driver.core.role is Role.LEADER for n in rest),
        )
        (new,) = [n for n in rest if n.driver.core.role is Role.LEADER]
        core = new.driver.core
        assert core.log.term(core.committed) != core.term
        await c.advance(2 * ttl_ms, rest)
        assert await new.expire_sessions() == []
        assert new.session_expires_in_ms("s") is None
        assert new.session("s") is not None

        c.net.drop = None
        await poll(
            "the new leader applied its no-op", lambda: new.session_expires_in_ms("s") is not None
        )
        # The full ttl from then on, not what was left on the old leader.
        left = new.session_expires_in_ms("s")
        assert left is not None and left >= ttl_ms - 5_000
        await c.advance(ttl_ms - 10_000, rest)
        assert await new.expire_sessions() == []
        await c.advance(10_000, rest)
        assert await new.expire_sessions() == ["s"]
        c.net.heal()
        await c.converged()
        for n in c.nodes:
            assert n.session("s") is None and not exists(n, "/e")


# ---- catching up --------------------------------------------------------------------------------


async def test_a_follower_far_behind_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    async with cluster(tmp_path, snapshot_entries=50) as c:
        leader = await c.leader()
        f, _g = c.others(leader)
        seen = record_events(f)
        resets: list[int] = []
        f.reset_listeners.append(resets.append)
        await leader.propose((CreateOp("/base"),))
        await c.converged()
        behind = f.zxid
        c.net.isolate(f.node_id)
        for i in range(0, 150, 10):
            await asyncio.gather(*(leader.propose((CreateOp(f"/k{j}"),)) for j in range(i, i + 10)))
        # The leader's log no longer holds what f needs next.
        await poll(
            "the leader compacted past the follower",
            lambda: leader.storage.first_index() > f.applied_index + 1,
        )
        c.net.heal()
        await c.converged()
        assert c.net.snapshots_installed[f.node_id] >= 1
        assert exists(f, "/k149") and f.digest() == leader.digest()
        # Its watchers are told that the events in between are gone, and get
        # every event after the snapshot: nothing skipped silently.
        assert len(resets) == 1 and behind < resets[0] <= f.zxid
        after = [zxid for zxid, _ in seen if zxid > behind]
        assert after == list(range(resets[0] + 1, f.zxid + 1))
        with pytest.raises(Compacted):
            f.history.check_since(behind)
        f.history.check_since(resets[0])
