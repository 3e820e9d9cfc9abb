"""The synchronization recipes (read-write lock, semaphore, barriers,
party) against a real three-node cluster: each with several concurrent
participants, with a participant's session closed from outside, and with
the node a participant talks to killed.

Every participant has a client of its own, given all three endpoints, and
a session of its own. One cluster serves the whole module; a test that
kills a node starts it again before it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass

import pytest

from httpcoord.client import (
    Client,
    CoordError,
    NoNode,
    OutcomeUnknown,
    RetryPolicy,
    Session,
    SessionExpired,
    SessionState,
    WriteResult,
)
from httpcoord.client.recipes.barrier import READY, Barrier, DoubleBarrier
from httpcoord.client.recipes.party import Party, ShallowParty
from httpcoord.client.recipes.rwlock import READ_PREFIX, WRITE_PREFIX, ReadWriteLock
from httpcoord.client.recipes.semaphore import Semaphore
from tests.integration.cluster import Cluster, start_cluster

SESSION_TTL_MS = 6000
DEADLINE_S = 15.0  # for anything that must happen
# For what must not happen: how long a blocked participant is watched to
# stay blocked (the recipes answer in milliseconds when they are wrong).
STAYS_BLOCKED_S = 0.3
POLL_S = 0.02
# The default policy gives up within a tenth of a second, shorter than the
# election that follows a leader's death: these clients ride one out.
RIDES_OUT_AN_ELECTION = RetryPolicy(attempts=40, backoff_ms_max=500)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("recipes"), 3) as running:
        yield running


@dataclass
class Participant:
    client: Client
    session: Session


@asynccontextmanager
async def participants(cluster: Cluster, n: int) -> AsyncIterator[list[Participant]]:
    endpoints = ",".join(m.url for m in cluster)
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            client = await stack.enter_async_context(Client(endpoints, retry=RIDES_OUT_AN_ELECTION))
            session = await client.open_session(SESSION_TTL_MS)
            stack.push_async_callback(_close_quietly, session)
            out.append(Participant(client, session))
        yield out


async def _close_quietly(session: Session) -> None:
    try:
        await session.close()
    except CoordError:
        pass  # closed from outside, or its node is down: it expires anyway


async def eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE_S}s")
        await asyncio.sleep(POLL_S)


async def stays_blocked(*tasks: asyncio.Task[object]) -> None:
    done, _ = await asyncio.wait(tasks, timeout=STAYS_BLOCKED_S)
    assert not done, [t.result() for t in done]


async def children(client: Client, path: str, prefix: str = "") -> list[str]:
    try:
        return [c for c in await client.get_children(path) if c.startswith(prefix)]
    except NoNode:
        return []


def count_is(client: Client, path: str, n: int, prefix: str = "") -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await children(client, path, prefix)) == n

    return check


@asynccontextmanager
async def node_killed(cluster: Cluster, client: Client) -> AsyncIterator[int]:
    """SIGKILL the node ``client`` talks to; start it again on the way out."""
    victim = next(m.node_id for m in cluster if m.url == client.endpoint)
    await asyncio.to_thread(cluster.kill, victim)
    try:
        yield victim
    finally:
        await asyncio.to_thread(cluster.start, victim)
        await asyncio.to_thread(cluster.wait_ready, [victim])


# ---- read-write lock --------------------------------------------------------------------


async def test_rwlock_readers_share_and_a_waiting_writer_holds_back_later_readers(
    cluster: Cluster,
) -> None:
    path = "/recipes/rw/fair"
    async with participants(cluster, 5) as ps:
        readers = [ReadWriteLock(p.client, path, p.session).read_lock for p in ps[:3]]
        read_grants = await asyncio.gather(*(r.acquire(DEADLINE_S) for r in readers))
        assert all(r.held for r in readers)  # three readers at once

        writer = ReadWriteLock(ps[3].client, path, ps[3].session).write_lock
        granted: list[str] = []
        w_task = asyncio.create_task(writer.acquire(DEADLINE_S))
        w_task.add_done_callback(lambda _: granted.append("writer"))
        await eventually("the writer queued", count_is(ps[0].client, path, 1, WRITE_PREFIX))
        late = ReadWriteLock(ps[4].client, path, ps[4].session).read_lock
        r_task = asyncio.create_task(late.acquire(DEADLINE_S))
        r_task.add_done_callback(lambda _: granted.append("late reader"))
        await eventually("the late reader queued", count_is(ps[0].client, path, 4, READ_PREFIX))

        await readers[0].release()
        await readers[1].release()
        await stays_blocked(w_task, r_task)  # one reader still holds
        await readers[2].release()
        w_grant = await w_task
        await stays_blocked(r_task)  # behind the writer, though readers hold it
        assert w_grant.token > max(g.token for g in read_grants)
        await writer.release()
        r_grant = await r_task
        assert granted == ["writer", "late reader"]
        assert r_grant.token > w_grant.token
        await late.release()
        assert await children(ps[4].client, path) == []


async def test_rwlock_never_admits_a_writer_beside_anyone(cluster: Cluster) -> None:
    path = "/recipes/rw/load"
    rounds = 3
    readers_in = writers_in = 0
    violations: list[str] = []
    write_tokens: list[int] = []

    async def work(p: Participant, write: bool) -> None:
        nonlocal readers_in, writers_in
        rw = ReadWriteLock(p.client, path, p.session)
        lock = rw.write_lock if write else rw.read_lock
        for _ in range(rounds):
            grant = await lock.acquire(DEADLINE_S)
            if writers_in or (write and readers_in):
                violations.append(f"{readers_in} readers, {writers_in} writers at a grant")
            if write:
                writers_in += 1
                write_tokens.append(grant.token)
            else:
                readers_in += 1
            await p.client.get(path)  # hold across a round trip: holders overlap
            if write:
                writers_in -= 1
            else:
                readers_in -= 1
            await lock.release()

    async with participants(cluster, 6) as ps:
        await asyncio.gather(*(work(p, write=i % 2 == 0) for i, p in enumerate(ps)))
    assert violations == []
    assert len(write_tokens) == 3 * rounds
    assert write_tokens == sorted(write_tokens)  # fencing tokens grow grant after grant


async def test_rwlock_a_closed_session_frees_the_lock_and_ends_its_waiters(
    cluster: Cluster,
) -> None:
    path = "/recipes/rw/session"
    async with participants(cluster, 4) as ps:
        holder = ReadWriteLock(ps[0].client, path, ps[0].session).read_lock
        grant = await holder.acquire(DEADLINE_S)
        writer = ReadWriteLock(ps[1].client, path, ps[1].session).write_lock
        w_task = asyncio.create_task(writer.acquire(DEADLINE_S))
        await eventually("a writer queued", count_is(ps[3].client, path, 1, WRITE_PREFIX))
        doomed = ReadWriteLock(ps[2].client, path, ps[2].session).write_lock
        d_task = asyncio.create_task(doomed.acquire(DEADLINE_S))
        await eventually("a writer behind it", count_is(ps[3].client, path, 2, WRITE_PREFIX))
        await stays_blocked(w_task, d_task)

        # The reader's session closed from outside: the lock passes on, and
        # the reader learns it holds nothing.
        await ps[3].client.close_session(ps[0].session.id)
        await asyncio.wait_for(w_task, DEADLINE_S)
        await asyncio.wait_for(grant.lost.wait(), DEADLINE_S)
        assert not holder.held

        # A waiter whose session is closed stops waiting, its place gone.
        await ps[3].client.close_session(ps[2].session.id)
        with pytest.raises((SessionExpired, NoNode)):
            await asyncio.wait_for(d_task, DEADLINE_S)
        await writer.release()
        assert await children(ps[1].client, path) == []


async def test_rwlock_waiter_gets_the_lock_after_its_node_is_killed(cluster: Cluster) -> None:
    path = "/recipes/rw/kill"
    async with participants(cluster, 2) as ps:
        first = ReadWriteLock(ps[0].client, path, ps[0].session).write_lock
        first_grant = await first.acquire(DEADLINE_S)
        second = ReadWriteLock(ps[1].client, path, ps[1].session).write_lock
        task = asyncio.create_task(second.acquire(DEADLINE_S))
        await eventually("the second writer queued", count_is(ps[0].client, path, 2))
        async with node_killed(cluster, ps[1].client):
            await first.release()
            second_grant = await asyncio.wait_for(task, DEADLINE_S)
            assert second_grant.token > first_grant.token
            await second.release()
            assert ps[1].session.state is not SessionState.LOST


async def test_rwlock_writer_may_downgrade_to_a_reader(cluster: Cluster) -> None:
    path = "/recipes/rw/downgrade"
    async with participants(cluster, 2) as ps:
        rw = ReadWriteLock(ps[0].client, path, ps[0].session)
        await rw.write_lock.acquire(DEADLINE_S)
        await rw.read_lock.acquire(DEADLINE_S)  # its own writer does not hold it back
        other = ReadWriteLock(ps[1].client, path, ps[1].session).write_lock
        task = asyncio.create_task(other.acquire(DEADLINE_S))
        await eventually("the other writer queued", count_is(ps[0].client, path, 2, WRITE_PREFIX))
        await rw.write_lock.release()
        await stays_blocked(task)  # the read grant still holds the lock
        assert rw.read_lock.held
        await rw.read_lock.release()
        await asyncio.wait_for(task, DEADLINE_S)
        await other.release()


class LosesOneAnswer(Client):
    """Applies its first sequential create but answers as a connection
    broken after the request was sent would."""

    answers_lost = 0
    lost_path = ""  # the node the lost answer named

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        sequential: bool = False,
        parents: bool = False,
        ephemeral: bool = False,
        container: bool = False,
        ttl_ms: int | None = None,
        session: str | None = None,
    ) -> WriteResult:
        result = await super().create(
            path,
            data,
            sequential=sequential,
            parents=parents,
            ephemeral=ephemeral,
            container=container,
            ttl_ms=ttl_ms,
            session=session,
        )
        if sequential and not self.answers_lost:
            self.answers_lost += 1
            self.lost_path = result.path
            raise OutcomeUnknown("the answer was lost (injected)")
        return result


async def test_rwlock_finds_its_node_after_a_create_with_an_unknown_outcome(
    cluster: Cluster,
) -> None:
    path = "/recipes/rw/unknown"
    async with LosesOneAnswer(",".join(m.url for m in cluster)) as client:
        session = await client.open_session(SESSION_TTL_MS)
        lock = ReadWriteLock(client, path, session).write_lock
        grant = await lock.acquire(DEADLINE_S)
        assert client.answers_lost == 1
        # The node the lost answer was about is found and is the grant's: no
        # orphan is left in the queue to block every later contender.
        assert grant.node == client.lost_path
        assert await children(client, path) == [grant.node.rsplit("/", 1)[1]]
        await lock.release()
        assert await children(client, path) == []
        await session.close()


# ---- semaphore --------------------------------------------------------------------------


async def test_semaphore_grants_at_most_max_leases_in_arrival_order(cluster: Cluster) -> None:
    path = "/recipes/sem/fair"
    async with participants(cluster, 4) as ps:
        sems = [Semaphore(p.client, path, p.session, 2, data=b"%d" % i) for i, p in enumerate(ps)]
        first = await sems[0].acquire(DEADLINE_S)
        second = await sems[1].acquire(DEADLINE_S)
        third = asyncio.create_task(sems[2].acquire(DEADLINE_S))
        await eventually("the third acquirer waits", count_is(ps[0].client, f"{path}/leases", 3))
        fourth = asyncio.create_task(sems[3].acquire(DEADLINE_S))
        await eventually("the fourth queued", count_is(ps[0].client, f"{path}/locks", 2))
        await stays_blocked(third, fourth)
        assert sorted(await sems[0].holders()) == [b"0", b"1", b"2"]

        await sems[0].release(first)
        third_lease = await asyncio.wait_for(third, DEADLINE_S)
        await stays_blocked(fourth)
        assert third_lease.token > second.token
        await sems[1].release(second)
        fourth_lease = await asyncio.wait_for(fourth, DEADLINE_S)
        await sems[2].release(third_lease)
        await sems[3].release(fourth_lease)
        assert await children(ps[3].client, f"{path}/leases") == []


async def test_semaphore_never_has_more_than_max_leases_holders(cluster: Cluster) -> None:
    path = "/recipes/sem/load"
    max_leases, rounds = 2, 3
    holding = most = grants = 0

    async def work(p: Participant) -> None:
        nonlocal holding, most, grants
        sem = Semaphore(p.client, path, p.session, max_leases)
        for _ in range(rounds):
            async with sem.lease(DEADLINE_S):
                holding += 1
                grants += 1
                most = max(most, holding)
                await p.client.get(path)  # hold across a round trip
                holding -= 1

    async with participants(cluster, 5) as ps:
        await asyncio.gather(*(work(p) for p in ps))
    assert grants == 5 * rounds
    assert most <= max_leases


async def test_semaphore_lease_goes_with_its_session(cluster: Cluster) -> None:
    path = "/recipes/sem/session"
    async with participants(cluster, 4) as ps:
        sems = [Semaphore(p.client, path, p.session, 1) for p in ps]
        lease = await sems[0].acquire(DEADLINE_S)
        waiter = asyncio.create_task(sems[1].acquire(DEADLINE_S))
        await eventually("the second acquirer waits", count_is(ps[3].client, f"{path}/leases", 2))

        await ps[3].client.close_session(ps[0].session.id)
        second = await asyncio.wait_for(waiter, DEADLINE_S)
        await asyncio.wait_for(lease.lost.wait(), DEADLINE_S)

        # An acquirer waiting for room (and holding the acquirers' mutex)
        # whose session is closed gives up both: the next one gets in.
        doomed = asyncio.create_task(sems[2].acquire(DEADLINE_S))
        await eventually("the third acquirer waits", count_is(ps[3].client, f"{path}/leases", 2))
        await ps[3].client.close_session(ps[2].session.id)
        with pytest.raises((SessionExpired, NoNode)):
            await asyncio.wait_for(doomed, DEADLINE_S)
        await sems[1].release(second)
        last = await sems[3].acquire(DEADLINE_S)
        assert last.token > second.token
        await sems[3].release(last)


async def test_semaphore_waiter_gets_a_lease_after_its_node_is_killed(cluster: Cluster) -> None:
    path = "/recipes/sem/kill"
    async with participants(cluster, 2) as ps:
        holder = Semaphore(ps[0].client, path, ps[0].session, 1)
        waiter = Semaphore(ps[1].client, path, ps[1].session, 1)
        lease = await holder.acquire(DEADLINE_S)
        task = asyncio.create_task(waiter.acquire(DEADLINE_S))
        await eventually("the waiter waits", count_is(ps[0].client, f"{path}/leases", 2))
        async with node_killed(cluster, ps[1].client):
            await holder.release(lease)
            got = await asyncio.wait_for(task, DEADLINE_S)
            assert got.token > lease.token
            await waiter.release(got)


# ---- barriers ---------------------------------------------------------------------------


async def test_barrier_holds_every_waiter_until_removed(cluster: Cluster) -> None:
    path = "/recipes/barrier/plain"
    async with participants(cluster, 4) as ps:
        await Barrier(ps[0].client, path).create()
        await Barrier(ps[0].client, path).create()  # already up: fine
        waiters = [asyncio.create_task(Barrier(p.client, path).wait()) for p in ps[1:]]
        assert await Barrier(ps[0].client, path).wait(timeout_s=STAYS_BLOCKED_S) is False
        await stays_blocked(*waiters)
        assert await Barrier(ps[0].client, path).remove() is True
        assert await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE_S) == [True] * 3
        assert await Barrier(ps[0].client, path).wait(timeout_s=0) is True
        assert await Barrier(ps[0].client, path).remove() is False


async def test_double_barrier_enters_and_leaves_all_together(cluster: Cluster) -> None:
    path = "/recipes/barrier/double"
    n = 4
    async with participants(cluster, n) as ps:
        barriers = [DoubleBarrier(p.client, path, p.session, n) for p in ps]
        early = [asyncio.create_task(b.enter(DEADLINE_S)) for b in barriers[:-1]]
        await eventually("three entered", count_is(ps[0].client, path, n - 1))
        await stays_blocked(*early)
        await barriers[-1].enter(DEADLINE_S)
        await asyncio.wait_for(asyncio.gather(*early), DEADLINE_S)
        assert READY in await children(ps[0].client, path)

        # Three leave; none gets out while the fourth is still inside. The
        # leavers delete their nodes, but the lowest, which goes last.
        leaving = [asyncio.create_task(b.leave(DEADLINE_S)) for b in barriers[:-1]]
        lowest_stays = min(b.name for b in barriers) != barriers[-1].name
        inside = 2 if lowest_stays else 1
        await eventually("the leavers' nodes gone", count_is(ps[0].client, path, inside + 1))
        await stays_blocked(*leaving)
        await barriers[-1].leave(DEADLINE_S)
        await asyncio.wait_for(asyncio.gather(*leaving), DEADLINE_S)
        await eventually("the barrier empty", count_is(ps[0].client, path, 0))


async def test_double_barrier_counts_a_closed_session_as_gone(cluster: Cluster) -> None:
    path = "/recipes/barrier/session"
    async with participants(cluster, 5) as ps:
        barriers = [DoubleBarrier(p.client, path, p.session, 3) for p in ps]
        # Entering: a participant whose session is closed no longer counts.
        first = asyncio.create_task(barriers[0].enter(DEADLINE_S))
        doomed = asyncio.create_task(barriers[1].enter(DEADLINE_S))
        await eventually("two entered", count_is(ps[4].client, path, 2))
        await ps[4].client.close_session(ps[1].session.id)
        with pytest.raises((SessionExpired, NoNode)):
            await asyncio.wait_for(doomed, DEADLINE_S)
        third = asyncio.create_task(barriers[2].enter(DEADLINE_S))
        await eventually("two entered again", count_is(ps[4].client, path, 2))
        await stays_blocked(first, third)
        await barriers[3].enter(DEADLINE_S)
        await asyncio.wait_for(asyncio.gather(first, third), DEADLINE_S)

        # Leaving: one closed from outside counts as left.
        leaving = [asyncio.create_task(b.leave(DEADLINE_S)) for b in (barriers[0], barriers[2])]
        await stays_blocked(*leaving)
        await ps[4].client.close_session(ps[3].session.id)
        await asyncio.wait_for(asyncio.gather(*leaving), DEADLINE_S)
        with pytest.raises((SessionExpired, NoNode)):
            await barriers[3].leave(DEADLINE_S)


async def test_barriers_release_waiters_whose_node_was_killed(cluster: Cluster) -> None:
    path = "/recipes/barrier/kill"
    async with participants(cluster, 3) as ps:
        gate = Barrier(ps[0].client, f"{path}/gate")
        await gate.create()
        double = [DoubleBarrier(p.client, f"{path}/double", p.session, 3) for p in ps]
        entering = [asyncio.create_task(b.enter(DEADLINE_S)) for b in double[:2]]
        waiting = asyncio.create_task(Barrier(ps[1].client, f"{path}/gate").wait())
        await eventually("two entered", count_is(ps[0].client, f"{path}/double", 2))
        async with node_killed(cluster, ps[1].client):
            await double[2].enter(DEADLINE_S)
            await asyncio.wait_for(asyncio.gather(*entering), DEADLINE_S)
            await gate.remove()
            assert await asyncio.wait_for(waiting, DEADLINE_S) is True
            await asyncio.wait_for(asyncio.gather(*(b.leave() for b in double)), DEADLINE_S)


# ---- party ------------------------------------------------------------------------------


async def test_party_members_and_followers_see_joins_and_leaves(cluster: Cluster) -> None:
    path = "/recipes/party/basic"
    async with participants(cluster, 6) as ps:
        watcher = Party(ps[0].client, path, ps[0].session)
        seen: list[list[bytes]] = []
        async with aclosing(watcher.follow()) as follow:
            assert await anext(follow) == []
            parties = [Party(p.client, path, p.session, b"m%d" % i) for i, p in enumerate(ps)]
            for party in parties[:3]:
                await party.join()  # one after another: members list them in this order
            assert await watcher.members() == [b"m0", b"m1", b"m2"]
            await asyncio.gather(*(party.join() for party in parties[3:]))
            await parties[3].join()  # joined already: no second member
            everyone = sorted(b"m%d" % i for i in range(6))

            async def until(expected: list[bytes]) -> None:
                while sorted(seen[-1] if seen else []) != expected:
                    seen.append(await anext(follow))

            await asyncio.wait_for(until(everyone), DEADLINE_S)
            await parties[1].leave()
            await parties[4].leave()
            assert not parties[1].joined
            await asyncio.wait_for(until([b"m0", b"m2", b"m3", b"m5"]), DEADLINE_S)
        assert sorted(await parties[5].members()) == [b"m0", b"m2", b"m3", b"m5"]
        # Each member once in every list followed.
        assert all(len(set(m)) == len(m) for m in seen)

    async with participants(cluster, 3) as ps:
        shallow = [
            ShallowParty(p.client, f"{path}-shallow", p.session, f"w-{i}") for i, p in enumerate(ps)
        ]
        await asyncio.gather(*(s.join() for s in shallow))
        assert await shallow[0].members() == ["w-0", "w-1", "w-2"]


async def test_party_member_goes_with_its_session(cluster: Cluster) -> None:
    path = "/recipes/party/session"
    async with participants(cluster, 3) as ps:
        parties = [Party(p.client, path, p.session, b"m%d" % i) for i, p in enumerate(ps)]
        for party in parties:
            await party.join()
        async with aclosing(parties[2].follow()) as follow:
            assert await anext(follow) == [b"m0", b"m1", b"m2"]
            await ps[2].client.close_session(ps[1].session.id)
            assert await asyncio.wait_for(anext(follow), DEADLINE_S) == [b"m0", b"m2"]
        await asyncio.wait_for(ps[1].session.wait_for(SessionState.LOST), DEADLINE_S)
        assert not parties[1].joined
        assert parties[0].joined


async def test_party_follower_goes_on_after_its_node_is_killed(cluster: Cluster) -> None:
    path = "/recipes/party/kill"
    async with participants(cluster, 2) as ps:
        member = Party(ps[0].client, path, ps[0].session, b"first")
        await member.join()
        follower = Party(ps[1].client, path, ps[1].session)
        async with aclosing(follower.follow()) as follow:
            assert await anext(follow) == [b"first"]
            async with node_killed(cluster, ps[1].client):
                second = Party(ps[0].client, path, ps[0].session, b"second")
                await second.join()
                assert await asyncio.wait_for(anext(follow), DEADLINE_S) == [b"first", b"second"]
                await member.leave()
                assert await asyncio.wait_for(anext(follow), DEADLINE_S) == [b"second"]
