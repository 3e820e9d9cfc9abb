"""The queue and cache recipes against a real three-node cluster: FIFO order
and no item handed out twice with concurrent producers and consumers,
claims that go back to the queue when their session ends, caches that
never go back in time and equal the server's tree after bursts of writes,
node kills and a resync after 410."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from httpcoord.client import (
    Client,
    CreateOp,
    Node,
    NodeExists,
    NoNode,
    RetryPolicy,
    SessionExpired,
    SessionState,
    SetOp,
    Stat,
)
from httpcoord.client.recipes.cache import CacheEvent, NodeCache, TreeCache
from httpcoord.client.recipes.queue import Item, LockingQueue, Queue
from httpcoord.client.session import Session
from tests.integration.cluster import Cluster, start_cluster

# A short kept history, so that a watch cut off for a while resumes past it
# (410, then a Resync); short sessions, so that one expires quickly.
CLUSTER_ARGS = ("--watch-history-events", "64", "--session-ttl-min-ms", "500")
WAIT_S = 15.0  # bound on any one wait in these tests
# Enough tries to outlast an election when a test kills the leader.
PATIENT = RetryPolicy(attempts=40)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("recipes-qc"), 3, *CLUSTER_ARGS) as c:
        yield c


@pytest.fixture
def healed(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, every member up again after the test."""
    yield cluster
    cluster.heal()


def endpoints(cluster: Cluster, first: int | None = None) -> list[str]:
    return cluster.urls(first)


def follower(cluster: Cluster) -> int:
    leader = cluster.leader()
    return next(m.node_id for m in cluster if m.node_id != leader)


async def server_tree(client: Client, root: str) -> dict[str, tuple[bytes, Stat, list[str]]]:
    """The subtree as the server has it: data, stat and child names by path."""
    tree: dict[str, tuple[bytes, Stat, list[str]]] = {}
    pending = [root]
    while pending:
        path = pending.pop()
        try:
            node = await client.get(path, children=True)
        except NoNode:
            continue
        children = node.children or []
        tree[path] = (node.data, node.stat, children)
        pending.extend(f"{path.rstrip('/')}/{c}" for c in children)
    return tree


def cache_tree(cache: TreeCache) -> dict[str, tuple[bytes, Stat, list[str]]]:
    return {
        path: (node.data, node.stat, cache.children(path) or [])
        for path, node in cache.nodes().items()
    }


class ForwardOnly:
    """A TreeCache listener that notes any path shown at a zxid older than
    one it was shown at before."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.events: list[CacheEvent] = []
        self.backwards: list[tuple[CacheEvent, int]] = []

    def __call__(self, event: CacheEvent) -> None:
        self.events.append(event)
        before = self.last.get(event.path, -1)
        if event.zxid < before:
            self.backwards.append((event, before))
        self.last[event.path] = event.zxid


# ---- Queue ------------------------------------------------------------------------------


async def test_queue_hands_out_items_first_in_first_out(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as producer, Client(endpoints(healed)) as consumer:
        queue = Queue(producer, "/rq/order")
        await queue.put_all([b"0", b"1", b"2"])
        for i in range(3, 8):
            await queue.put(str(i).encode())
        assert await queue.size() == 8
        taking = Queue(consumer, "/rq/order")
        assert [await taking.get(WAIT_S) for _ in range(8)] == [str(i).encode() for i in range(8)]
        assert await taking.poll() is None
        with pytest.raises(TimeoutError):
            await taking.get(timeout_s=0.3)


async def test_queue_hands_each_item_to_one_of_many_consumers(healed: Cluster) -> None:
    producers_n, consumers_n, per_producer = 3, 4, 20
    total = producers_n * per_producer
    clients = [Client(endpoints(healed)) for _ in range(producers_n + consumers_n)]
    taken: list[tuple[int, bytes]] = []  # (consumer, item)
    all_taken = asyncio.Event()

    async def consume(i: int) -> None:
        queue = Queue(clients[producers_n + i], "/rq/many")
        while True:
            taken.append((i, await queue.get()))
            if len(taken) >= total:
                all_taken.set()

    async def produce(i: int) -> None:
        queue = Queue(clients[i], "/rq/many")
        for k in range(per_producer):
            await queue.put(f"{i}-{k:02}".encode())

    try:
        # The consumers wait first: every item wakes them.
        consumers = [asyncio.create_task(consume(i)) for i in range(consumers_n)]
        await asyncio.gather(*(produce(i) for i in range(producers_n)))
        await asyncio.wait_for(all_taken.wait(), WAIT_S)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    items = [item for _, item in taken]
    assert len(items) == total and len(set(items)) == total  # none twice, none lost
    # FIFO: each consumer takes any one producer's items in the order they were put.
    for c in range(consumers_n):
        for p in range(producers_n):
            mine = [item for who, item in taken if who == c and item.startswith(f"{p}-".encode())]
            assert mine == sorted(mine), (c, p, mine)
    assert len({who for who, _ in taken}) > 1  # the consumers really competed


async def test_a_waiting_consumer_outlives_the_node_it_talks_to(healed: Cluster) -> None:
    victim = healed.leader()
    async with (
        Client(endpoints(healed, victim), shuffle=False, retry=PATIENT) as consumer,
        Client(endpoints(healed, follower(healed)), shuffle=False, retry=PATIENT) as producer,
    ):
        waiting = asyncio.create_task(Queue(consumer, "/rq/kill").get(WAIT_S))
        await asyncio.sleep(0.3)  # it is waiting on its watch
        assert not waiting.done()
        healed.kill(victim)
        queue = Queue(producer, "/rq/kill")
        for i in range(5):
            await queue.put(str(i).encode())
        got = [await waiting] + [await Queue(consumer, "/rq/kill").get(WAIT_S) for _ in range(4)]
        assert got == [str(i).encode() for i in range(5)]
        assert consumer.endpoint != healed[victim].url


# ---- LockingQueue -----------------------------------------------------------------------


async def test_locking_queue_acks_each_item_once_among_consumers(healed: Cluster) -> None:
    consumers_n, total = 3, 30
    async with Client(endpoints(healed)) as producer:
        clients = [Client(endpoints(healed)) for _ in range(consumers_n)]
        sessions = [await c.open_session(5000) for c in clients]
        await LockingQueue(producer, "/rq/lq", sessions[0]).put_all(
            [f"job-{i:02}".encode() for i in range(total)]
        )
        holding: set[str] = set()
        twice: list[str] = []
        acked: list[Item] = []
        done = asyncio.Event()

        async def consume(i: int) -> None:
            queue = LockingQueue(clients[i], "/rq/lq", sessions[i])
            released = 0
            while True:
                item = await queue.get()
                if item.name in holding:
                    twice.append(item.name)
                holding.add(item.name)
                await asyncio.sleep(0)  # let the others run while it holds the item
                if released < 2 and item.data.endswith(b"7"):
                    released += 1
                    holding.discard(item.name)
                    await queue.release(item)  # handed out again later
                    continue
                assert await queue.ack(item)
                holding.discard(item.name)
                acked.append(item)
                if len(acked) == total:
                    done.set()

        try:
            tasks = [asyncio.create_task(consume(i)) for i in range(consumers_n)]
            await asyncio.wait_for(done.wait(), WAIT_S)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results), results
            assert twice == []
            assert sorted(i.data for i in acked) == [f"job-{i:02}".encode() for i in range(total)]
            tokens = [i.token for i in acked]
            assert len(set(tokens)) == total  # every claim its own zxid
            # The acks went through the consumers' nodes: a linearizable read
            # brings the producer's node (and its later reads) up to them.
            await producer.get("/rq/lq", consistency="linearizable")
            assert await LockingQueue(producer, "/rq/lq", sessions[0]).size() == 0
            assert await producer.get_children("/rq/lq/taken") == []
        finally:
            for session in sessions:
                await session.close()
            for client in clients:
                await client.close()


async def test_a_claim_returns_to_the_queue_when_its_session_is_closed(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as a, Client(endpoints(healed)) as b:
        sa, sb = await a.open_session(10_000), await b.open_session(10_000)
        qa, qb = LockingQueue(a, "/rq/closed", sa), LockingQueue(b, "/rq/closed", sb)
        await qa.put(b"job")
        first = await qa.get(WAIT_S)
        waiting = asyncio.create_task(qb.get(WAIT_S))
        a_waiting = asyncio.create_task(qa.get(WAIT_S))
        await asyncio.sleep(0.3)
        assert not waiting.done() and not a_waiting.done()  # claimed by a: not handed out again
        await b.close_session(sa.id)  # from outside, as an operator would
        with pytest.raises(SessionExpired):  # a stops waiting: it could claim nothing
            await asyncio.wait_for(a_waiting, 5)
        second = await waiting
        assert (second.name, second.data) == (first.name, b"job")
        assert second.token > first.token
        await asyncio.wait_for(first.lost.wait(), 5)  # a was told
        assert await qa.ack(first) is False  # too late: b has it
        assert await qb.ack(second) is True
        assert await qb.size() == 0
        await sb.close()


async def test_a_claim_returns_to_the_queue_when_its_session_expires(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as a, Client(endpoints(healed)) as b:
        # A session nobody keeps alive: it expires after its ttl.
        session_id, ttl_ms = await a.open_session_id(500)
        silent = Session(a, session_id, ttl_ms)
        sb = await b.open_session(10_000)
        qa, qb = LockingQueue(a, "/rq/expired", silent), LockingQueue(b, "/rq/expired", sb)
        await qa.put_all([b"x", b"y"])
        first = await qa.get(WAIT_S)
        assert first.data == b"x"
        assert (await qb.get(WAIT_S)).data == b"y"  # the next free item, not the claimed one
        again = await qb.get(WAIT_S)  # waits for x to come back
        assert (again.name, again.data) == (first.name, b"x")
        assert await qa.ack(first) is False
        assert await qb.ack(again) is True
        await sb.close()


async def test_a_claim_outlives_the_node_its_consumer_talks_to(healed: Cluster) -> None:
    victim = follower(healed)
    async with (
        Client(endpoints(healed, victim), shuffle=False) as a,
        Client(endpoints(healed, healed.leader()), shuffle=False) as b,
    ):
        sa, sb = await a.open_session(4000), await b.open_session(4000)
        qa, qb = LockingQueue(a, "/rq/nodekill", sa), LockingQueue(b, "/rq/nodekill", sb)
        await qb.put(b"job")
        item = await qa.get(WAIT_S)
        healed.kill(victim)
        # Its node died: the claim cannot be relied on until the session is
        # heard again, though the session (and so the claim) lives on.
        await asyncio.wait_for(item.lost.wait(), 5)
        await asyncio.wait_for(sa.wait_for(SessionState.CONNECTED), 5)
        assert await qb.poll() is None  # still claimed
        assert await qa.ack(item) is True
        assert await qb.size() == 0
        await sa.close()
        await sb.close()


# ---- NodeCache --------------------------------------------------------------------------


async def test_node_cache_follows_concurrent_writers_and_never_goes_back(healed: Cluster) -> None:
    path = "/rc/node"
    writers = [Client(endpoints(healed)) for _ in range(3)]
    shown: list[Node | None] = []
    try:
        async with Client(endpoints(healed)) as reader, NodeCache(reader, path) as cache:
            cache.add_listener(shown.append)
            assert cache.node is None
            await writers[0].create(path, b"start", parents=True)

            async def write(i: int) -> int:
                zxid = 0
                for k in range(15):
                    zxid = (await writers[i].set(path, f"{i}-{k}".encode())).zxid
                return zxid

            await asyncio.gather(*(write(i) for i in range(3)))
            await writers[1].delete(path)
            last = await writers[2].create(path, b"last")
            await cache.wait_zxid(last.zxid, WAIT_S)
            server = await reader.get(path)
            assert cache.node is not None
            assert (cache.node.data, cache.node.stat) == (server.data, server.stat)
    finally:
        for w in writers:
            await w.close()
    assert shown[0] is not None and shown[0].data == b"start"
    assert shown[-2] is None and shown[-1] is not None and shown[-1].data == b"last"
    nodes = [n for n in shown if n is not None]
    assert len(nodes) == 47  # the create, 45 sets, the create again: each shown once
    mzxids = [n.stat.mzxid for n in nodes]
    assert mzxids == sorted(set(mzxids))  # only forward


async def test_node_cache_applies_every_event_of_one_txn(healed: Cluster) -> None:
    path = "/rc/onetxn/k"
    async with Client(endpoints(healed)) as client, NodeCache(client, path) as cache:
        shown: list[Node | None] = []
        cache.add_listener(shown.append)
        written = await client.multi(
            [CreateOp(path, b"made", parents=True), SetOp(path, b"set"), SetOp(path, b"again")]
        )
        await cache.wait_zxid(written.zxid, WAIT_S)
        assert cache.node is not None
        assert cache.node.stat == (await client.get(path)).stat
        assert [n.data if n else None for n in shown] == [b"made", b"set", b"again"]


async def test_node_cache_sees_an_ephemeral_go_with_its_session(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as owner, Client(endpoints(healed)) as other:
        await owner.create("/rc/eph-parent", parents=True)
        session = await owner.open_session(10_000)
        await owner.create("/rc/eph-parent/e", b"here", ephemeral=True, session=session.id)
        other.note_zxid(owner.last_zxid)  # read what the owner wrote, from any node
        async with NodeCache(other, "/rc/eph-parent/e") as cache:
            assert cache.node is not None and cache.node.stat.ephemeral_owner == session.id
            gone = asyncio.Event()
            cache.add_listener(lambda node: gone.set() if node is None else None)
            await other.close_session(session.id)
            await asyncio.wait_for(gone.wait(), WAIT_S)
            assert cache.node is None
        await session.close()


# ---- TreeCache --------------------------------------------------------------------------


async def test_tree_cache_equals_the_server_tree_after_a_burst(healed: Cluster) -> None:
    root = "/rc/tree"
    writers = [Client(endpoints(healed)) for _ in range(3)]
    forward = ForwardOnly()
    try:
        async with Client(endpoints(healed)) as reader:
            # Some of the tree exists before the cache starts: the walk loads it.
            await reader.create(f"{root}/a/pre", b"p", parents=True)
            session = await writers[0].open_session(10_000)
            await writers[0].create(f"{root}/eph", b"e", ephemeral=True, session=session.id)
            async with TreeCache(reader, root) as cache:
                cache.add_listener(forward)
                assert cache.get(f"{root}/a/pre") is not None
                assert cache.children(root) == ["a", "eph"]

                async def burst(i: int) -> int:
                    rng = random.Random(i)
                    newest = 0
                    for _ in range(40):
                        path = f"{root}/{rng.choice('abc')}/n{rng.randrange(6)}"
                        try:
                            if rng.random() < 0.25:
                                written = await writers[i].delete(path)
                            elif rng.random() < 0.5:
                                written = await writers[i].create(path, b"c", parents=True)
                            else:
                                written = await writers[i].set(path, f"{i}".encode())
                        except (NoNode, NodeExists):
                            continue
                        newest = max(newest, written.zxid)
                    return newest

                newest = max(await asyncio.gather(*(burst(i) for i in range(3))))
                # One txn that makes several events on one path, and on a
                # new parent and its new child.
                deep = f"{root}/m/x/y"
                one_txn = await reader.multi(
                    [CreateOp(deep, b"0", parents=True), SetOp(deep, b"1"), SetOp(deep, b"2")]
                )
                newest = max(newest, one_txn.zxid)
                # A participant's session closed from outside: its ephemeral goes.
                await reader.close_session(session.id)
                newest = max(newest, reader.last_zxid)
                await cache.wait_zxid(newest, WAIT_S)
                assert cache.get(f"{root}/eph") is None
                made = cache.get(deep)
                assert made is not None and (made.data, made.stat.version) == (b"2", 2)
                assert cache.children(f"{root}/m") == ["x"]
                assert cache_tree(cache) == await server_tree(reader, root)
                assert cache.rebuilds == 0
    finally:
        for w in writers:
            await w.close()
    assert forward.backwards == []
    assert len(forward.events) > 40


async def test_caches_follow_through_the_death_of_their_node(healed: Cluster) -> None:
    victim = healed.leader()
    root = "/rc/kill"
    async with (
        Client(endpoints(healed, victim), shuffle=False, retry=PATIENT) as reader,
        Client(endpoints(healed, follower(healed)), shuffle=False, retry=PATIENT) as writer,
    ):
        await writer.create(f"{root}/k", b"0", parents=True)
        reader.note_zxid(writer.last_zxid)
        forward = ForwardOnly()
        async with NodeCache(reader, f"{root}/k") as node_cache, TreeCache(reader, root) as tree:
            tree.add_listener(forward)
            healed.kill(victim)
            for i in range(1, 21):
                last_set = await writer.set(f"{root}/k", str(i).encode())
                await writer.create(f"{root}/n{i}", str(i).encode())
            newest = writer.last_zxid
            await node_cache.wait_zxid(last_set.zxid, WAIT_S)
            await tree.wait_zxid(newest, WAIT_S)
            assert node_cache.node is not None and node_cache.node.data == b"20"
            reader.note_zxid(newest)
            assert cache_tree(tree) == await server_tree(reader, root)
            assert node_cache.node.stat == (await reader.get(f"{root}/k")).stat
        assert reader.endpoint != healed[victim].url
    assert forward.backwards == []


async def test_caches_rebuild_after_missing_more_than_the_kept_history(
    healed: Cluster,
) -> None:
    victim = follower(healed)
    root = "/rc/resync"
    async with (
        Client(endpoints(healed, victim), shuffle=False) as reader,
        Client(endpoints(healed, healed.leader()), shuffle=False) as writer,
    ):
        await writer.create(f"{root}/gone", b"g", parents=True)
        await writer.create(f"{root}/kept", b"0")
        reader.note_zxid(writer.last_zxid)
        forward = ForwardOnly()
        async with TreeCache(reader, root) as cache, NodeCache(reader, f"{root}/kept") as kept:
            cache.add_listener(forward)
            await cache.wait_zxid(writer.last_zxid, WAIT_S)
            # The cache's node freezes with its stream open; the others go
            # on past what they keep; then it dies and the watch resumes
            # elsewhere, too late (410).
            os.kill(healed[victim].pid, signal.SIGSTOP)
            try:
                await writer.delete(f"{root}/gone")
                for i in range(1, 81):  # more events than the 64 kept
                    last_set = await writer.set(f"{root}/kept", str(i).encode())
                await writer.create(f"{root}/new", b"n")
                newest = writer.last_zxid
                assert cache.zxid < newest
            finally:
                healed.kill(victim)  # a stopped process dies too
            await cache.wait_zxid(newest, WAIT_S)
            assert cache.rebuilds == 1
            assert cache.get(f"{root}/gone") is None
            cached = cache.get(f"{root}/kept")
            assert cached is not None and cached.data == b"80"
            await kept.wait_zxid(last_set.zxid, WAIT_S)
            assert kept.rebuilds == 1
            assert kept.node is not None and kept.node.stat == cached.stat
            assert cache_tree(cache) == await server_tree(reader, root)
    assert forward.backwards == []
    removed = [e for e in forward.events if e.type == "removed"]
    assert [e.path for e in removed] == [f"{root}/gone"]


async def test_caches_started_in_a_burst_never_show_what_their_reads_passed(
    healed: Cluster,
) -> None:
    # The walk reads node after node while writers go on, and the watch
    # starts from the walk's first read: it replays changes that later
    # reads already saw, which the caches must not show again.
    root = "/rc/busy"
    # The walk reads the cold nodes first (it takes the last child first)
    # and the hot ones, which the writers hammer, last.
    cold = [f"{root}/n{i:02}" for i in range(40)]
    paths = [f"{root}/a{i}" for i in range(3)]
    writers = [Client(endpoints(healed)) for _ in range(3)]
    stop = asyncio.Event()
    writes = [0]  # attempted so far, by all writers

    async def write(i: int) -> None:
        rng = random.Random(100 + i)
        while not stop.is_set():
            path = rng.choice(paths)
            try:
                if rng.random() < 0.1:
                    await writers[i].delete(path)
                else:
                    await writers[i].set(path, str(rng.random()).encode())  # an upsert
            except NoNode:
                pass
            writes[0] += 1
            await asyncio.sleep(0)

    try:
        async with Client(endpoints(healed)) as reader:
            await reader.multi([CreateOp(p, b"0", parents=True) for p in [*paths, *cold]])
            tasks = [asyncio.create_task(write(i)) for i in range(3)]
            await asyncio.sleep(0.1)  # the burst is under way
            forward = ForwardOnly()
            shown: list[Node | None] = []
            node_cache = NodeCache(reader, paths[0])
            node_cache.add_listener(shown.append)
            tree = TreeCache(reader, root)
            tree.add_listener(forward)
            async with tree, node_cache:
                # The burst runs on while both caches start and follow.
                target, deadline = writes[0] + 200, time.monotonic() + WAIT_S
                while writes[0] < target and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.gather(*tasks)
                final = await reader.set(paths[0], b"final")
                await tree.wait_zxid(final.zxid, WAIT_S)
                await node_cache.wait_zxid(final.zxid, WAIT_S)
                assert cache_tree(tree) == await server_tree(reader, root)
                server = await reader.get(paths[0])
                assert node_cache.node is not None
                assert (node_cache.node.data, node_cache.node.stat) == (b"final", server.stat)
    finally:
        stop.set()
        for w in writers:
            await w.close()
    assert forward.backwards == []
    assert len(forward.events) > 20  # the walk's nodes, then the burst's changes
    mzxids = [n.stat.mzxid for n in shown if n is not None]
    assert mzxids == sorted(set(mzxids)) and len(mzxids) > 1


class WritesBeforeReads(Client):
    """A client that, before its first read of each path in ``before``,
    has another client make that path's writes: as if they landed in the
    middle of a walk, after the walk's first read (where its watch starts)."""

    def __init__(
        self, endpoints: list[str], before: dict[str, Callable[[], Awaitable[int]]]
    ) -> None:
        super().__init__(endpoints)
        self.before = dict(before)

    async def get(
        self, path: str, *, children: bool = False, consistency: str | None = None
    ) -> Node:
        writes = self.before.pop(path, None)
        if writes is not None:
            self.note_zxid(await writes())
        return await super().get(path, children=children, consistency=consistency)


async def test_tree_cache_never_shows_what_its_walk_read_past(healed: Cluster) -> None:
    root = "/rc/walkgap"
    async with Client(endpoints(healed)) as writer:
        await writer.create(f"{root}/doomed", b"first", parents=True)
        await writer.create(f"{root}/stays", b"s")
        await writer.create(f"{root}/sub", b"")

        async def doom() -> int:
            # Listed by the root's read, gone by its own: set twice, deleted.
            await writer.set(f"{root}/doomed", b"second")
            await writer.set(f"{root}/doomed", b"third")
            return (await writer.delete(f"{root}/doomed")).zxid

        async def ghost() -> int:
            # Made and gone before its parent's read: never listed at all.
            await writer.create(f"{root}/sub/ghost", b"boo")
            return (await writer.delete(f"{root}/sub/ghost")).zxid

        reader = WritesBeforeReads(
            endpoints(healed), {f"{root}/doomed": doom, f"{root}/sub": ghost}
        )
        reader.note_zxid(writer.last_zxid)
        forward = ForwardOnly()
        try:
            cache = TreeCache(reader, root)
            cache.add_listener(forward)
            async with cache:
                assert not reader.before  # both struck during the walk
                # The watch replays those writes, which the walk's reads
                # already saw: neither node may show up.
                final = await writer.set(f"{root}/stays", b"t")
                await cache.wait_zxid(final.zxid, WAIT_S)
                assert cache.children(root) == ["stays", "sub"]
                assert cache.children(f"{root}/sub") == []
                assert cache_tree(cache) == await server_tree(writer, root)
        finally:
            await reader.close()
    shown = sorted({e.path for e in forward.events})
    assert shown == [root, f"{root}/stays", f"{root}/sub"]
    assert forward.backwards == []
