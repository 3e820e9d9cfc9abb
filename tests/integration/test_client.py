"""httpcoord.client against real clusters: failover, reads that never go
back, writes whose outcome is unknown, sessions through node failures,
watches resumed on another node, and the lock and election recipes fenced
across processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpcoord.client import (
    Client,
    Event,
    MultiFailed,
    NoNode,
    OutcomeUnknown,
    Resync,
    RetryPolicy,
    Session,
    SessionState,
    SetOp,
    SyncClient,
    ZxidNotReached,
)
from httpcoord.client.recipes.election import LeaderElection
from httpcoord.client.recipes.lock import Lock
from tests.integration.cluster import Cluster, start_cluster
from tests.integration.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("client"), 3) as c:
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


async def test_requests_fail_over_when_the_node_in_use_is_killed(healed: Cluster) -> None:
    victim = follower(healed)
    async with Client(endpoints(healed, victim), shuffle=False) as client:
        await client.create("/fo/a", b"1", parents=True)
        assert client.endpoint == healed[victim].url
        healed.kill(victim)
        written = await client.set("/fo/a", b"2")  # the connection is refused: safe to retry
        assert client.endpoint != healed[victim].url
        node = await client.get("/fo/a")
        assert node.data == b"2" and node.stat.mzxid == written.zxid


async def test_reads_wait_for_the_newest_zxid_the_client_has_seen(healed: Cluster) -> None:
    lagging = follower(healed)
    async with (
        Client(endpoints(healed, healed.leader()), shuffle=False) as writer,
        Client([healed[lagging].url], shuffle=False) as reader,
    ):
        await writer.create("/mz/k", b"old", parents=True)
        await reader.get("/mz/k")
        os.kill(healed[lagging].pid, signal.SIGSTOP)  # it falls behind
        try:
            written = await writer.set("/mz/k", b"new")
            reader.note_zxid(written.zxid)  # as if this client had written it
            read = asyncio.create_task(reader.get("/mz/k"))
            await asyncio.sleep(0.3)
        finally:
            os.kill(healed[lagging].pid, signal.SIGCONT)
        node = await read
        assert node.data == b"new" and node.zxid >= written.zxid
    # A zxid that no node has reached: the node waits its request timeout
    # (5 s), then answers 504, which the client passes on once out of tries.
    async with Client([healed[lagging].url], retry=RetryPolicy(attempts=1)) as ahead:
        ahead.note_zxid(written.zxid + 10_000)
        with pytest.raises(ZxidNotReached):
            await ahead.get("/mz/k")


async def test_a_write_cut_off_after_it_was_sent_is_outcome_unknown(healed: Cluster) -> None:
    stalled = follower(healed)
    async with Client(endpoints(healed, stalled), shuffle=False, request_timeout_s=1.0) as c:
        await c.create("/ou/k", b"0", parents=True)
        os.kill(healed[stalled].pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(OutcomeUnknown):
                await c.set("/ou/k", b"1", version=0)  # conditional: not retried
            assert time.monotonic() - started < 3  # not retried on the others
            assert c.endpoint == healed[stalled].url
            # A read is safe to retry: it moves on and answers.
            assert (await c.get("/ou/k")).data in (b"0", b"1")
            assert c.endpoint != healed[stalled].url
        finally:
            os.kill(healed[stalled].pid, signal.SIGCONT)


async def test_a_session_lives_through_a_leader_kill(healed: Cluster) -> None:
    leader = healed.leader()
    states: list[SessionState] = []
    async with Client(endpoints(healed, leader), shuffle=False) as client:
        async with client.session(4000) as session:
            session.add_listener(states.append)
            await client.create("/sl/eph", session=session.id, ephemeral=True, parents=True)
            healed.kill(leader)
            # Two ttls: a session that was not kept alive would be gone.
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                assert session.state is not SessionState.LOST
            assert session.state is SessionState.CONNECTED
            node = await client.get("/sl/eph")
            assert node.stat.ephemeral_owner == session.id
        assert SessionState.SUSPENDED in states  # it noticed the node go
        assert states[-1] is SessionState.CLOSED
        assert await client.exists("/sl/eph") is None


async def test_a_session_closed_elsewhere_is_lost_at_once(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as client, Client(endpoints(healed)) as other:
        session = await client.open_session(10_000)
        opened = session.acknowledged_at
        deadline = time.monotonic() + 5
        while session.acknowledged_at == opened:  # until its keepalive socket has a pong
            assert time.monotonic() < deadline, "no heartbeat acknowledged"
            await asyncio.sleep(0.01)
        await other.close_session(session.id)
        started = time.monotonic()
        await asyncio.wait_for(session.wait_for(SessionState.LOST), 3)
        assert time.monotonic() - started < 2  # the server closed the socket: no ttl wait
        await session.close()
        assert session.state is SessionState.LOST


async def test_a_session_nobody_can_reach_is_lost_after_its_ttl(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 1) as single:
        async with Client([single[1].url]) as client:
            session = await client.open_session(2000)
            single.kill(1)
            await asyncio.wait_for(session.wait_for(SessionState.SUSPENDED), 2)
            started = time.monotonic()
            await asyncio.wait_for(session.wait_for(SessionState.LOST), 5)
            assert time.monotonic() - started < 2.5  # within its ttl, not much later


async def test_a_watch_resumes_on_another_node_missing_nothing(healed: Cluster) -> None:
    watched = follower(healed)
    async with (
        Client(endpoints(healed, watched), shuffle=False) as watcher,
        Client(endpoints(healed, healed.leader()), shuffle=False) as writer,
    ):
        await writer.create("/wr/k", b"0", parents=True)
        got: list[Event] = []
        stream = watcher.watch("/wr/k", since=writer.last_zxid)

        async def follow() -> None:
            async for item in stream:
                assert isinstance(item, Event)
                got.append(item)
                if item.data is None and len(got) >= 200:
                    return

        task = asyncio.create_task(follow())
        zxids = []
        for i in range(1, 201):
            zxids.append((await writer.set("/wr/k", str(i).encode())).zxid)
            if i == 80:
                healed.kill(watched)
        await asyncio.wait_for(task, 20)
        await stream.aclose()
        assert [e.zxid for e in got] == zxids  # each once, in order, none missed
        assert {e.type for e in got} == {"data_changed"}


async def test_a_watch_past_the_kept_history_resyncs(tmp_path: Path) -> None:
    with start_cluster(tmp_path, 1, "--watch-history-events", "5") as single:
        async with Client([single[1].url]) as client:
            await client.create("/rs")
            for i in range(30):
                await client.set("/rs/k", str(i).encode())
            stream = client.watch("/rs/k", since=1)
            first = await anext(stream)
            assert isinstance(first, Resync)
            node = first.nodes["/rs/k"]
            assert node is not None and node.data == b"29" and first.zxid == node.zxid
            written = await client.set("/rs/k", b"after")
            event = await anext(stream)
            assert isinstance(event, Event) and event.zxid == written.zxid
            await stream.aclose()


async def test_a_recursive_resync_is_one_state_or_a_walk_when_too_big(tmp_path: Path) -> None:
    args = ("--watch-history-events", "5", "--watch-initial-nodes", "3")
    with start_cluster(tmp_path, 1, *args) as single:
        async with Client([single[1].url]) as client:
            await client.create("/small/x", b"0", parents=True)
            for name in "abc":
                await client.create(f"/big/{name}", parents=True)
            for i in range(30):
                await client.set("/small/x", str(i).encode())
            # Fits in one answer: the state at one zxid, then what follows.
            stream = client.watch("/small", recursive=True, since=1)
            first = await anext(stream)
            assert isinstance(first, Resync) and set(first.nodes) == {"/small", "/small/x"}
            small, x = first.nodes["/small"], first.nodes["/small/x"]
            assert small is not None and small.children == ["x"]
            assert x is not None and x.data == b"29" and x.children == []
            assert {n.zxid for n in first.nodes.values() if n} == {first.zxid}
            written = await client.set("/small/x", b"after")
            event = await anext(stream)
            assert isinstance(event, Event) and event.zxid == written.zxid
            await stream.aclose()
            # Four nodes, more than the server sends at once: read by a walk.
            walked = client.watch("/big", recursive=True, since=1)
            first = await anext(walked)
            assert isinstance(first, Resync) and set(first.nodes) == {
                "/big",
                *(f"/big/{n}" for n in "abc"),
            }
            await walked.aclose()


def run_contenders(cluster: Cluster, mode: str, procs: int, per_proc: int, rounds: int) -> list:
    urls = ",".join(endpoints(cluster))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.lock_worker",
                mode,
                urls,
                str(per_proc),
                str(rounds),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(procs)
    ]
    holds = []
    for w in workers:
        try:
            out, err = w.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for x in workers:
                x.kill()
            raise
        assert w.returncode == 0, err.decode()[-2000:]
        holds.extend(json.loads(line) for line in out.decode().splitlines())
    return holds


def check_fenced_holds(holds: list, expected: int) -> None:
    assert len(holds) == expected
    holds.sort(key=lambda h: h["acquired"])
    for before, after in itertools.pairwise(holds):
        assert after["acquired"] >= before["released"], (before, after)  # one holder at a time
        assert after["token"] > before["token"]  # tokens only grow
    assert all(h["held"] for h in holds), [h for h in holds if not h["held"]]
    assert all(h["seen"] < h["token"] for h in holds)  # the fence never saw a newer token


def test_the_lock_excludes_twenty_contenders_in_four_processes(healed: Cluster) -> None:
    holds = run_contenders(healed, "lock", procs=4, per_proc=5, rounds=2)
    check_fenced_holds(holds, 40)


def test_at_most_one_elected_leader_acts_at_a_time(healed: Cluster) -> None:
    holds = run_contenders(healed, "elect", procs=2, per_proc=3, rounds=2)
    check_fenced_holds(holds, 12)


async def test_a_lock_whose_session_ends_passes_on_and_fences_its_old_holder(
    healed: Cluster,
) -> None:
    async with Client(endpoints(healed)) as client:
        first = await client.open_session(10_000)
        second = await client.open_session(10_000)
        old = await Lock(client, "/recipes/expiring", first).acquire()
        waiting = asyncio.create_task(Lock(client, "/recipes/expiring", second).acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await client.close_session(first.id)  # as if it expired
        new = await asyncio.wait_for(waiting, 5)
        assert new.token > old.token
        await asyncio.wait_for(old.lost.wait(), 3)  # the old holder was told
        with pytest.raises(MultiFailed) as refused:
            await client.multi([old.guard(), SetOp("/recipes/expiring", b"stale")])
        assert isinstance(refused.value.error, NoNode)
        await client.multi([new.guard(), SetOp("/recipes/expiring", b"fresh")])
        await second.close()
        await first.close()


async def test_leadership_is_lost_when_the_leaders_node_dies(healed: Cluster) -> None:
    async with (
        Client(endpoints(healed, follower(healed)), shuffle=False) as c1,
        Client(endpoints(healed, healed.leader()), shuffle=False) as c2,
    ):
        s1, s2 = await c1.open_session(4000), await c2.open_session(4000)
        e1 = LeaderElection(c1, "/recipes/elect-kill", s1, b"one")
        e2 = LeaderElection(c2, "/recipes/elect-kill", s2, b"two")
        grant = await e1.campaign()
        assert e1.is_leader and await e2.leader() == b"one"
        healed.kill(_member_at(healed, c1.endpoint))
        # Its node died: the session is suspended, so the leadership cannot
        # be relied on any more, though the session itself lives on.
        await asyncio.wait_for(grant.lost.wait(), 5)
        assert not e1.is_leader
        await asyncio.wait_for(s1.wait_for(SessionState.CONNECTED), 5)
        await s1.close()
        await asyncio.wait_for(e2.campaign(), 5)
        assert await e2.leader() == b"two"
        await s2.close()


def _member_at(cluster: Cluster, url: str) -> int:
    return next(m.node_id for m in cluster if m.url == url)


def test_the_blocking_client_reads_writes_and_watches(healed: Cluster) -> None:
    with SyncClient(endpoints(healed)) as client:
        client.create("/sync/k", b"1", parents=True)
        assert client.get("/sync/k").data == b"1"
        since = client.last_zxid
        written = client.set("/sync/k", b"2", version=0)
        events = client.watch("/sync/k", since=since)
        event = next(events)
        events.close()
        assert isinstance(event, Event) and event.zxid == written.zxid
        with client.session(3000) as session:
            client.create("/sync/eph", ephemeral=True, session=session.id)
            assert session.state is SessionState.CONNECTED
        assert client.exists("/sync/eph") is None


async def test_a_lock_holders_node_dying_suspends_the_grant_but_keeps_the_lock(
    healed: Cluster,
) -> None:
    holder_node = follower(healed)
    async with (
        Client(endpoints(healed, holder_node), shuffle=False) as holder,
        Client(endpoints(healed, healed.leader()), shuffle=False) as other,
    ):
        s1, s2 = await holder.open_session(4000), await other.open_session(4000)
        grant = await Lock(holder, "/recipes/node-dies", s1).acquire()
        waiting = asyncio.create_task(Lock(other, "/recipes/node-dies", s2).acquire())
        healed.kill(holder_node)
        # The holder cannot know it still holds the lock: told at once.
        await asyncio.wait_for(grant.lost.wait(), 5)
        # But its session moves to another node and lives: the lock stays
        # its own, the waiter keeps waiting, and fenced writes still hold.
        await asyncio.wait_for(s1.wait_for(SessionState.CONNECTED), 5)
        deadline = time.monotonic() + 5  # more than a ttl
        while time.monotonic() < deadline:
            assert not waiting.done()
            await asyncio.sleep(0.2)
        await holder.multi([grant.guard(), SetOp("/recipes/node-dies", b"still mine")])
        await s1.close()
        second = await asyncio.wait_for(waiting, 5)
        assert second.token > grant.token
        await s2.close()


async def test_a_lock_passes_on_when_its_holders_session_expires(healed: Cluster) -> None:
    async with Client(endpoints(healed)) as client:
        # A session nobody keeps alive: the leader expires it one ttl after
        # its last sign of life (the lock's create).
        session_id, ttl_ms = await client.open_session_id(2000)
        silent = Session(client, session_id, ttl_ms)
        old = await Lock(client, "/recipes/expires", silent).acquire()
        async with client.session(10_000) as waiter:
            started = time.monotonic()
            new = await asyncio.wait_for(Lock(client, "/recipes/expires", waiter).acquire(), 10)
            assert time.monotonic() - started >= ttl_ms / 1000 * 0.5
            assert new.token > old.token
            with pytest.raises(MultiFailed):
                await client.multi([old.guard(), SetOp("/recipes/expires", b"stale")])


async def test_a_write_cut_off_is_sent_once_never_resent_behind_the_callers_back() -> None:
    # aiohttp itself resends a PUT or DELETE once when a kept-alive
    # connection breaks; a write whose outcome is unknown must reach the
    # server once, and the caller must be told OutcomeUnknown.
    received: list[bytes] = []

    async def answer_then_cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        writer.transport.abort()

    server = await asyncio.start_server(answer_then_cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Client(f"127.0.0.1:{port}") as client:
            for write in (
                client.set("/x", b"1", version=3),
                client.delete("/x", version=0),
                client.create("/x", b"1"),
            ):
                received.clear()
                with pytest.raises(OutcomeUnknown):
                    await write
                assert len(received) == 1, received
    finally:
        server.close()
        await server.wait_closed()
