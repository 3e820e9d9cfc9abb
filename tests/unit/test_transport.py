"""The peer transport against real sockets on 127.0.0.1: two or three
transports in one process, each on its own peer listener, with an in-memory
SnapshotIO. Nothing sleeps waiting for a timer: tests poll with a deadline."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace

import aiohttp
import orjson
import pytest
from aiohttp import web

from httpcoord.cluster.raft.messages import (
    AppendEntries,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
    VoteRequest,
    encode_message,
)
from httpcoord.cluster.transport import (
    CLUSTER_HEADER,
    FROM_HEADER,
    PROTOCOL_VERSION,
    RECORD_CHUNK,
    RECORD_END,
    RECORD_HEADER,
    RECORD_PART,
    SNAPSHOT_PATH,
    STREAM_PATH,
    TO_HEADER,
    VERSION_HEADER,
    OutcomeUnknown,
    PeerCallFailed,
    PeerTransport,
    PeerUnavailable,
    TransportLimits,
    backoff_ms,
    decode_frame,
    encode_chunk,
    encode_frame,
    encode_record,
    peer_sender,
)

CLUSTER = "test-cluster"
FAST = TransportLimits(
    connect_timeout_ms=1000,
    write_timeout_ms=2000,
    backoff_min_ms=10,
    backoff_max_ms=80,
    snapshot_chunk_bytes_max=1024,
    rpc_timeout_ms=2000,
    keepalive_ms=5000,  # a late pong on a loaded machine must not drop a test's socket
    idle_timeout_ms=15000,
    frame_bytes_max=64 * 1024,
    log_interval_ms=0,
)


# ---- helpers ---------------------------------------------------------------------------


class MemorySnapshots:
    """In-memory SnapshotIO. A descriptor is JSON naming the blob, its size and
    sha256; stage() verifies the digest, as a real storage would."""

    def __init__(self, read_piece_bytes: int = 3000) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gates: dict[str, asyncio.Event] = {}  # read() waits on a blob's gate
        self.read_piece_bytes = read_piece_bytes
        self.corrupt_reads = False
        self.staged: dict[bytes, bytes] = {}
        self.chunk_sizes: list[int] = []
        self.stage_errors: list[BaseException] = []

    def put(self, name: str, data: bytes, index: int, term: int) -> Snapshot:
        self.blobs[name] = data
        digest = hashlib.sha256(data).hexdigest()
        descriptor = orjson.dumps({"name": name, "size": len(data), "sha256": digest})
        return Snapshot(SnapshotMeta(index, term, ConfState(frozenset({1, 2, 3}))), descriptor)

    async def read(self, snapshot: Snapshot) -> AsyncIterator[bytes]:
        name = orjson.loads(snapshot.data)["name"]
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()
        data = self.blobs[name]
        if self.corrupt_reads:
            data = bytes([data[0] ^ 1]) + data[1:]
        for offset in range(0, len(data), self.read_piece_bytes):
            yield data[offset : offset + self.read_piece_bytes]

    async def stage(
        self, meta: SnapshotMeta, descriptor: bytes, chunks: AsyncIterator[bytes]
    ) -> Snapshot:
        want = orjson.loads(descriptor)
        buf = bytearray()
        try:
            async for chunk in chunks:
                self.chunk_sizes.append(len(chunk))
                buf += chunk
        except Exception as exc:
            self.stage_errors.append(exc)
            raise
        if hashlib.sha256(buf).hexdigest() != want["sha256"]:
            error = ValueError("snapshot digest mismatch")
            self.stage_errors.append(error)
            raise error
        staged = orjson.dumps({"staged": want["name"], "n": len(self.staged)})
        self.staged[staged] = bytes(buf)
        return Snapshot(meta, staged)


@dataclass
class Member:
    id: int
    transport: PeerTransport
    snapshots: MemorySnapshots
    runner: web.AppRunner | None
    port: int
    inbox: list[Message] = field(default_factory=list)
    rpc_calls: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def of_type(self, cls: type[Message]) -> list[Message]:
        return [m for m in self.inbox if isinstance(m, cls)]


def add_test_routes(app: web.Application, member: Member) -> None:
    """Routes standing in for the node's own RPCs on the peer listener."""
    hang_forever = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        member.rpc_calls.append(peer_sender(request))
        body = await request.read()
        return web.Response(
            body=orjson.dumps({"from": peer_sender(request), "body": body.decode(errors="replace")})
        )

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=409, body=b"not the leader")

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        await hang_forever.wait()
        return web.Response()

    async def drop(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.abort()  # the connection breaks after the request arrived
        await hang_forever.wait()
        return web.Response()

    app.router.add_post("/peer/v1/echo", echo)
    app.router.add_post("/peer/v1/fail", fail)
    app.router.add_post("/peer/v1/hang", hang)
    app.router.add_post("/peer/v1/drop", drop)


async def listen(member: Member, port: int = 0) -> None:
    app = web.Application()
    member.transport.install(app)
    add_test_routes(app, member)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    member.runner = runner
    member.port = runner.addresses[0][1]


async def start_members(
    ids: tuple[int, ...] = (1, 2), limits: TransportLimits = FAST, seed: int = 1
) -> list[Member]:
    members: list[Member] = []
    for node_id in ids:
        snapshots = MemorySnapshots()
        member = Member(node_id, None, snapshots, None, 0)  # type: ignore[arg-type]
        member.transport = PeerTransport(
            node_id, CLUSTER, {}, member.inbox.append, snapshots, limits, random.Random(seed)
        )
        await listen(member)
        members.append(member)
    for member in members:
        member.transport.set_peers({m.id: m.address for m in members if m is not member})
        await member.transport.start()
    return members


async def stop_members(members: list[Member]) -> None:
    for member in members:
        await member.transport.close()
        if member.runner is not None:
            await member.runner.cleanup()


@pytest.fixture
async def pair() -> AsyncIterator[list[Member]]:
    members = await start_members((1, 2))
    yield members
    await stop_members(members)


@pytest.fixture
async def trio() -> AsyncIterator[list[Member]]:
    members = await start_members((1, 2, 3))
    yield members
    await stop_members(members)


async def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def hb(src: int, dst: int, commit: int) -> Heartbeat:
    return Heartbeat(src, dst, 1, commit, 0)


def commits(member: Member, src: int) -> list[int]:
    return [m.commit for m in member.inbox if isinstance(m, Heartbeat) and m.src == src]


def identity(src: int, dst: int, cluster: str = CLUSTER) -> dict[str, str]:
    return {
        VERSION_HEADER: str(PROTOCOL_VERSION),
        CLUSTER_HEADER: cluster,
        FROM_HEADER: str(src),
        TO_HEADER: str(dst),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def keep_flowing(a: Member, b: Member, start: int, count: int) -> None:
    """Valid traffic from a to b: sent now, all of it arrives, in order."""
    a.transport.send([hb(a.id, b.id, c) for c in range(start, start + count)])
    await wait_until(lambda: commits(b, a.id)[-count:] == list(range(start, start + count)))


# ---- ordered, pipelined, coalesced delivery ---------------------------------------------


async def test_thousands_of_messages_arrive_in_order_both_ways(pair: list[Member]) -> None:
    a, b = pair
    batches, per_batch = 50, 100
    for n in range(batches):
        a.transport.send([hb(1, 2, n * per_batch + i) for i in range(per_batch)])
        b.transport.send([hb(2, 1, n * per_batch + i) for i in range(per_batch)])
        if n % 5 == 0:
            await asyncio.sleep(0)  # let the senders run between some of the batches
    total = batches * per_batch
    await wait_until(lambda: len(b.inbox) == total and len(a.inbox) == total)
    assert commits(b, 1) == list(range(total))
    assert commits(a, 2) == list(range(total))
    status = a.transport.status()[2]
    assert status["sent"] == total and status["dropped"] == 0
    # Coalesced: a frame carries everything queued when the sender ran.
    assert isinstance(status["frames"], int) and status["frames"] < total / 10


async def test_appends_are_pipelined_without_waiting_for_answers(pair: list[Member]) -> None:
    a, b = pair
    appends = [
        AppendEntries(1, 2, 2, i, 2, (Entry(i + 1, 2, EntryKind.NORMAL, b"x" * 100),), i)
        for i in range(1, 301)
    ]
    a.transport.send(appends)  # b never answers: a keeps writing regardless
    await wait_until(lambda: len(b.of_type(AppendEntries)) == 300)
    assert b.of_type(AppendEntries) == appends


async def test_a_message_larger_than_a_frame_is_dropped_and_counted(pair: list[Member]) -> None:
    a, b = pair
    big = AppendEntries(1, 2, 2, 0, 0, (Entry(1, 2, EntryKind.NORMAL, b"y" * 70_000),), 0)
    a.transport.send([big, hb(1, 2, 7)])
    await wait_until(lambda: commits(b, 1) == [7])
    assert a.transport.status()[2]["dropped"] == 1
    assert b.of_type(AppendEntries) == []


def test_frames_round_trip_and_name_their_sender_and_receiver() -> None:
    msgs: list[Message] = [hb(1, 2, 5), VoteRequest(1, 2, 3, 10, 2, pre_vote=True)]
    frame = encode_frame([encode_message(m) for m in msgs])
    assert decode_frame(frame, 1, 2) == msgs
    assert decode_frame(b"", 1, 2) == []
    for sender, receiver, reason in ((3, 2, "wrong_src"), (1, 3, "wrong_dst")):
        with pytest.raises(ValueError, match=reason):
            decode_frame(frame, sender, receiver)
    with pytest.raises(ValueError, match="malformed_frame"):
        decode_frame(frame + b"\n{}", 1, 2)  # all or nothing: one bad message refuses all


# ---- bounded queues ----------------------------------------------------------------------


async def test_a_full_queue_drops_new_messages_and_counts_them() -> None:
    limits = replace(FAST, queue_msgs_max=10)
    t = PeerTransport(1, CLUSTER, {2: "127.0.0.1:1"}, lambda m: None, MemorySnapshots(), limits,
                      random.Random(1))  # fmt: skip
    t.send([hb(1, 2, i) for i in range(25)])  # not started: nothing leaves the queue
    status = t.status()[2]
    assert (status["queued_msgs"], status["dropped"]) == (10, 15)
    await t.close()


async def test_the_queue_is_bounded_in_bytes_too() -> None:
    one = len(encode_message(hb(1, 2, 0)))
    limits = replace(FAST, queue_bytes_max=one * 4 + one // 2)
    t = PeerTransport(1, CLUSTER, {2: "127.0.0.1:1"}, lambda m: None, MemorySnapshots(), limits,
                      random.Random(1))  # fmt: skip
    t.send([hb(1, 2, 0) for _ in range(9)])
    status = t.status()[2]
    assert (status["queued_msgs"], status["dropped"]) == (4, 5)
    assert status["queued_bytes"] == 4 * one
    t.send([hb(1, 99, 0)])  # not a peer: dropped, never raises
    assert t.dropped_unknown == 1
    await t.close()


async def test_messages_for_a_peer_that_is_down_are_dropped_not_kept(pair: list[Member]) -> None:
    a, _ = pair
    a.transport.set_peers({2: f"127.0.0.1:{free_port()}"})  # nobody listens there
    a.transport.send([hb(1, 2, i) for i in range(5)])
    await wait_until(lambda: a.transport.status()[2]["dropped"] == 5)
    assert a.transport.status()[2]["queued_msgs"] == 0


# ---- reconnect and backoff ------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_bounded() -> None:
    limits = replace(FAST, backoff_min_ms=50, backoff_max_ms=2000)
    rng = random.Random(42)
    pauses = [backoff_ms(n, limits, rng) for n in range(1, 40)]
    for n, pause in enumerate(pauses, start=1):
        ceiling = min(2000, 50 * 2 ** (n - 1))
        assert ceiling / 2 <= pause <= ceiling
    # The ranges never move down: each pause is at least the previous ceiling's half.
    assert all(b >= min(a, 1000) for a, b in itertools.pairwise(pauses))
    assert max(pauses) <= 2000 and pauses[-1] >= 1000
    # The jitter comes from the injected rng: the same seed, the same pauses.
    again = random.Random(42)
    assert pauses == [backoff_ms(n, limits, again) for n in range(1, 40)]
    assert pauses != [backoff_ms(n, limits, random.Random(43)) for n in range(1, 40)]


async def test_dialing_a_dead_peer_backs_off_with_the_injected_rng() -> None:
    limits = replace(FAST, backoff_min_ms=5, backoff_max_ms=40)
    t = PeerTransport(1, CLUSTER, {2: f"127.0.0.1:{free_port()}"}, lambda m: None,
                      MemorySnapshots(), limits, random.Random(7))  # fmt: skip
    await t.start()
    expected_rng = random.Random(7)
    expected = [backoff_ms(n, limits, expected_rng) for n in range(1, 12)]
    seen: list[float] = []

    def progress() -> bool:
        t.send([hb(1, 2, 0)])  # the sender dials only with something to send
        pause = t.status()[2]["backoff_ms"]
        assert isinstance(pause, float)
        if pause and (not seen or seen[-1] != pause):
            seen.append(pause)
        failures = t.status()[2]["connect_failures"]
        return isinstance(failures, int) and failures >= 8

    await wait_until(progress)
    await t.close()
    rounded = [round(p, 1) for p in expected]
    assert seen and all(p in rounded for p in seen)
    assert [rounded.index(p) for p in seen] == sorted(rounded.index(p) for p in seen)
    assert max(seen) <= 40


async def test_reconnects_after_the_peer_listener_is_stopped_and_started(
    pair: list[Member],
) -> None:
    a, b = pair
    await keep_flowing(a, b, 0, 10)
    assert b.runner is not None
    await b.runner.cleanup()  # the listener goes away, b's transport stays
    await wait_until(lambda: not a.transport.status()[2]["connected"])
    a.transport.send([hb(1, 2, 100)])  # dropped: nobody listens
    await wait_until(lambda: a.transport.status()[2]["connect_failures"] != 0)
    await listen(b, b.port)  # the same transport on a new app, same port

    def delivered_after_restart() -> bool:
        a.transport.send([hb(1, 2, 200)])  # Raft resends; so does this test
        return 200 in commits(b, 1)

    await wait_until(delivered_after_restart)
    status = a.transport.status()[2]
    assert status["reconnects"] == 1 and status["connected"]
    assert commits(b, 1)[:10] == list(range(10))


async def test_reachable_means_a_live_socket_that_carried_something_recently(
    pair: list[Member],
) -> None:
    a, b = pair
    assert not b.transport.reachable(1) and not a.transport.reachable(2)
    await keep_flowing(a, b, 0, 1)
    assert b.transport.reachable(1)
    assert not a.transport.reachable(2)  # b has sent nothing: it has not dialed a
    assert b.transport.status()[1]["reachable"] is True
    await a.transport.close()
    await wait_until(lambda: not b.transport.reachable(1))


async def test_pings_keep_a_quiet_socket_reachable_and_a_silent_one_is_closed() -> None:
    members = await start_members((1, 2, 3), replace(FAST, keepalive_ms=100, idle_timeout_ms=600))
    a, b, _ = members
    try:
        await keep_flowing(a, b, 0, 1)
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + 1.5  # well past the idle timeout, with no message
        while loop.time() < quiet_until:
            assert b.transport.reachable(1)  # a's pings alone keep it so
            await asyncio.sleep(0.02)
        http, ws = await raw_stream(b, 3)  # no pings from this one
        try:
            await ws.send_bytes(encode_message(hb(3, 2, 5)))
            await wait_until(lambda: b.transport.reachable(3))
            closed = await ws.receive(timeout=10)  # b gives up on the silent socket
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        finally:
            await ws.close()
            await http.close()
        assert not b.transport.reachable(3) and b.transport.reachable(1)
    finally:
        await stop_members(members)


# ---- snapshots -------------------------------------------------------------------------------


async def test_a_snapshot_is_streamed_in_bounded_records_and_staged_chunk_for_chunk(
    pair: list[Member],
) -> None:
    a, b = pair
    data = random.Random(3).randbytes(10_000)
    snap = a.snapshots.put("s1", data, index=50, term=2)
    a.transport.send([InstallSnapshot(1, 2, 3, snap)])
    await wait_until(lambda: len(b.of_type(InstallSnapshot)) == 1)
    got = b.of_type(InstallSnapshot)[0]
    assert isinstance(got, InstallSnapshot)
    assert (got.src, got.dst, got.term, got.snapshot.meta) == (1, 2, 3, snap.meta)
    assert b.snapshots.staged[got.snapshot.data] == data  # the staged copy, not the leader's
    # The storage's chunks (3000 bytes) cross the wire in records of at most
    # 1024 (the receiver refuses larger ones) and arrive whole: storages count
    # and parse chunks, so their boundaries are kept.
    assert b.snapshots.chunk_sizes == [3000, 3000, 3000, 1000]
    await wait_until(lambda: a.transport.status()[2]["snapshots_sent"] == 1)


async def test_empty_and_exact_size_chunks_keep_their_boundaries(pair: list[Member]) -> None:
    a, b = pair
    a.snapshots.read_piece_bytes = 1024
    snap = a.snapshots.put("s2", b"e" * 2048, index=60, term=2)
    a.transport.send([InstallSnapshot(1, 2, 3, snap)])
    await wait_until(lambda: len(b.of_type(InstallSnapshot)) == 1)
    assert b.snapshots.chunk_sizes == [1024, 1024]


def test_a_chunk_is_cut_into_parts_and_a_last_record() -> None:
    kinds = {
        n: [(r[:1], len(r) - 9) for r in encode_chunk(bytes(n), 1024)]
        for n in (0, 1, 1024, 1025, 3000)
    }
    assert kinds == {
        0: [(b"C", 0)],
        1: [(b"C", 1)],
        1024: [(b"C", 1024)],
        1025: [(b"P", 1024), (b"C", 1)],
        3000: [(b"P", 1024), (b"P", 1024), (b"C", 952)],
    }


async def test_a_snapshot_that_fails_verification_is_not_delivered(pair: list[Member]) -> None:
    a, b = pair
    snap = a.snapshots.put("s1", b"z" * 5000, index=50, term=2)
    a.snapshots.corrupt_reads = True  # every chunk's crc is right, the digest is not
    a.transport.send([InstallSnapshot(1, 2, 3, snap)])
    await wait_until(lambda: a.transport.status()[2]["snapshots_failed"] == 1)
    assert b.of_type(InstallSnapshot) == []
    assert b.transport.refusals().get("snapshot_refused") == 1
    await keep_flowing(a, b, 0, 5)


def snapshot_stream(
    src: int, dst: int, data: bytes, chunk: int = 1000
) -> tuple[list[bytes], list[bytes]]:
    """(header record, chunk records..., end record) for a raw POST."""
    snaps = MemorySnapshots()
    snap = snaps.put("raw", data, index=9, term=1)
    header = encode_record(RECORD_HEADER, encode_message(InstallSnapshot(src, dst, 1, snap)))
    chunks = [encode_record(RECORD_CHUNK, data[i : i + chunk]) for i in range(0, len(data), chunk)]
    end = encode_record(RECORD_END, orjson.dumps({"chunks": len(chunks), "bytes": len(data)}))
    return [header], chunks + [end]


def corrupt(record: bytes) -> bytes:
    return record[:-1] + bytes([record[-1] ^ 0xFF])


STREAM_DEFECTS: dict[str, Callable[[list[bytes], list[bytes]], bytes]] = {
    "corrupted chunk": lambda h, rest: b"".join(h + [rest[0], corrupt(rest[1])] + rest[2:]),
    "truncated, no end record": lambda h, rest: b"".join(h + rest[:-1]),
    "end record with wrong totals": lambda h, rest: b"".join(
        h + rest[:-2] + [encode_record(RECORD_END, b'{"chunks": 99, "bytes": 1}')]
    ),
    "chunk over the bound": lambda h, rest: b"".join(
        h + [encode_record(RECORD_CHUNK, b"q" * 2000)] + rest
    ),
    "corrupted header": lambda h, rest: b"".join([corrupt(h[0])] + rest),
    "chunk before header": lambda h, rest: b"".join(rest),
    "unknown record kind": lambda h, rest: b"".join(h + [struct.pack(">cII", b"X", 0, 0)] + rest),
    "a part never finished": lambda h, rest: b"".join(
        h + rest[:-1] + [encode_record(RECORD_PART, b"p")] + rest[-1:]
    ),
    "an empty part": lambda h, rest: b"".join(h + [encode_record(RECORD_PART, b"")] + rest),
}


@pytest.mark.parametrize("defect", sorted(STREAM_DEFECTS))
async def test_a_broken_snapshot_stream_is_refused_and_nothing_delivered(
    pair: list[Member], defect: str
) -> None:
    a, b = pair
    header, rest = snapshot_stream(1, 2, random.Random(5).randbytes(4000))
    body = STREAM_DEFECTS[defect](header, rest)
    async with aiohttp.ClientSession() as http:
        url = f"http://{b.address}{SNAPSHOT_PATH}"
        async with http.post(url, data=body, headers=identity(1, 2)) as resp:
            assert resp.status == 400
            problem = await resp.json(content_type=None)
    assert problem["code"] == "BadSnapshotStream"
    assert b.of_type(InstallSnapshot) == [] and b.snapshots.staged == {}
    assert b.transport.refusals().get("bad_snapshot_stream") == 1
    await keep_flowing(a, b, 0, 5)


async def test_a_well_formed_raw_stream_is_staged(pair: list[Member]) -> None:
    _, b = pair
    data = random.Random(6).randbytes(4000)
    header, rest = snapshot_stream(1, 2, data)
    async with aiohttp.ClientSession() as http:
        url = f"http://{b.address}{SNAPSHOT_PATH}"
        async with http.post(url, data=b"".join(header + rest), headers=identity(1, 2)) as resp:
            assert resp.status == 204
    [got] = b.of_type(InstallSnapshot)
    assert isinstance(got, InstallSnapshot) and b.snapshots.staged[got.snapshot.data] == data


async def test_a_newer_snapshot_supersedes_the_one_in_flight(pair: list[Member]) -> None:
    a, b = pair
    old = a.snapshots.put("old", b"o" * 3000, index=10, term=1)
    new = a.snapshots.put("new", b"n" * 3000, index=20, term=1)
    a.snapshots.gates["old"] = asyncio.Event()  # the old stream stalls in read()
    a.transport.send([InstallSnapshot(1, 2, 2, old)])
    await wait_until(lambda: a.transport.status()[2]["snapshot_streaming"] is True)
    await keep_flowing(a, b, 0, 20)  # heartbeats are not stuck behind a snapshot
    a.transport.send([InstallSnapshot(1, 2, 2, old)])  # the core's retry: not restarted
    assert a.transport.status()[2]["snapshots_superseded"] == 0
    a.transport.send([InstallSnapshot(1, 2, 2, new)])
    await wait_until(lambda: len(b.of_type(InstallSnapshot)) == 1)
    [got] = b.of_type(InstallSnapshot)
    assert isinstance(got, InstallSnapshot) and got.snapshot.meta.index == 20
    assert a.transport.status()[2]["snapshots_superseded"] == 1
    a.snapshots.gates["old"].set()
    await wait_until(lambda: a.transport.status()[2]["snapshot_streaming"] is False)
    assert len(b.of_type(InstallSnapshot)) == 1


# ---- refusals ---------------------------------------------------------------------------------

BAD_IDENTITIES: dict[str, tuple[dict[str, str], int, str]] = {
    "wrong cluster": (identity(1, 2, cluster="other"), 403, "WrongCluster"),
    "non-member sender": (identity(7, 2), 403, "NotAMember"),
    "wrong receiver": (identity(1, 3), 421, "WrongReceiver"),
    "unknown version": ({**identity(1, 2), VERSION_HEADER: "2"}, 400, "PeerProtocolVersion"),
    "no headers": ({}, 400, "PeerProtocolVersion"),
    "sender not a number": ({**identity(1, 2), FROM_HEADER: "1; drop"}, 403, "NotAMember"),
    "sender is itself": (identity(2, 2), 403, "NotAMember"),
    "sender not in canonical form": ({**identity(1, 2), FROM_HEADER: "01"}, 403, "NotAMember"),
    "receiver not in canonical form": ({**identity(1, 2), TO_HEADER: "+2"}, 421, "WrongReceiver"),
}


@pytest.mark.parametrize("case", sorted(BAD_IDENTITIES))
@pytest.mark.parametrize("path", [STREAM_PATH, SNAPSHOT_PATH, "/peer/v1/echo", "/nowhere"])
async def test_requests_not_naming_this_cluster_a_member_and_this_node_are_refused(
    pair: list[Member], case: str, path: str
) -> None:
    a, b = pair
    headers, status, code = BAD_IDENTITIES[case]
    async with aiohttp.ClientSession() as http:
        if path == STREAM_PATH:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://{b.address}{path}", headers=headers)
            assert refused.value.status == status
        else:
            async with http.post(f"http://{b.address}{path}", headers=headers, data=b"{}") as r:
                assert r.status == status
                assert (await r.json(content_type=None))["code"] == code
                assert r.headers[VERSION_HEADER] == str(PROTOCOL_VERSION)
    assert b.rpc_calls == [] and b.inbox == []
    assert sum(b.transport.refusals().values()) == 1
    await keep_flowing(a, b, 0, 5)


async def raw_stream(
    member: Member, src: int
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"http://{member.address}{STREAM_PATH}", headers=identity(src, 2))
    return http, ws


GARBAGE: dict[str, tuple[bytes | str, str]] = {
    "not JSON": (b"\x00\xffnot json", "malformed_frame"),
    "JSON, not a message": (b'{"t": "hb"}', "malformed_frame"),
    "a list as the type": (b'{"t": []}', "malformed_frame"),
    "another sender's message": (encode_message(hb(1, 2, 1)), "wrong_src"),
    "for another node": (encode_message(hb(3, 1, 1)), "wrong_dst"),
    "good then bad": (encode_message(hb(3, 2, 1)) + b"\n[]", "malformed_frame"),
    "a snapshot inline": (
        encode_message(InstallSnapshot(3, 2, 1, MemorySnapshots().put("x", b"x", 1, 1))),
        "inline_snapshot",
    ),
    "a text frame": ("hello", "text_frame"),
    "an oversized frame": (b"[" * (FAST.frame_bytes_max + 1), "oversized_frame"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_garbage_frames_are_refused_while_valid_traffic_keeps_flowing(
    trio: list[Member], case: str
) -> None:
    a, b, _ = trio
    frame, reason = GARBAGE[case]
    await keep_flowing(a, b, 0, 50)
    http, ws = await raw_stream(b, 3)  # a member's identity, garbage on the wire
    try:
        await ws.send_bytes(encode_message(hb(3, 2, 1000)))  # valid: delivered
        await wait_until(lambda: commits(b, 3) == [1000])
        if isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_bytes(frame)
        a.transport.send([hb(1, 2, c) for c in range(50, 100)])
        closed = await ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
        await http.close()
    await wait_until(lambda: commits(b, 1) == list(range(100)))
    assert commits(b, 3) == [1000]  # nothing of the refused frame was delivered
    assert b.transport.refusals() == {reason: 1}
    await keep_flowing(a, b, 100, 10)


async def test_a_removed_member_is_refused_and_a_moved_one_redialed(trio: list[Member]) -> None:
    a, b, c = trio
    await keep_flowing(a, b, 0, 5)
    b.transport.set_peers({3: c.address})  # node 1 is no longer a member for b

    def refused() -> bool:
        a.transport.send([hb(1, 2, 100)])
        return a.transport.status()[2]["connect_failures"] != 0

    await wait_until(refused)  # b closed a's socket, then refuses its dials
    assert 100 not in commits(b, 1) and b.transport.refusals().get("not_a_member")
    # b comes back as a member, listening somewhere else.
    b.transport.set_peers({1: a.address, 3: c.address})
    assert b.runner is not None
    await b.runner.cleanup()
    await listen(b)
    a.transport.set_peers({2: b.address, 3: c.address})

    def delivered() -> bool:
        a.transport.send([hb(1, 2, 200)])
        return 200 in commits(b, 1)

    await wait_until(delivered)
    assert a.transport.status()[2]["address"] == b.address


# ---- call() -------------------------------------------------------------------------------------


async def test_call_reaches_a_route_with_the_identity_headers(pair: list[Member]) -> None:
    a, b = pair
    answer = await a.transport.call(2, "/peer/v1/echo", b"ping", 2000)
    assert orjson.loads(answer) == {"from": 1, "body": "ping"}
    assert b.rpc_calls == [1]
    again = await a.transport.call(2, "/peer/v1/echo", b"pong")  # default timeout
    assert orjson.loads(again)["body"] == "pong"


async def test_call_raises_call_failed_with_status_and_body(pair: list[Member]) -> None:
    a, _ = pair
    with pytest.raises(PeerCallFailed) as failed:
        await a.transport.call(2, "/peer/v1/fail", b"", 2000)
    assert (failed.value.status, failed.value.body) == (409, b"not the leader")
    with pytest.raises(PeerCallFailed) as missing:
        await a.transport.call(2, "/peer/v1/no-such-route", b"", 2000)
    assert missing.value.status == 404


async def test_call_to_nobody_listening_or_no_member_is_unavailable(pair: list[Member]) -> None:
    a, _ = pair
    with pytest.raises(PeerUnavailable):
        await a.transport.call(9, "/peer/v1/echo", b"", 2000)
    a.transport.set_peers({2: f"127.0.0.1:{free_port()}"})
    with pytest.raises(PeerUnavailable):
        await a.transport.call(2, "/peer/v1/echo", b"", 2000)


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A listener whose accept queue is full: a connect to it never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    held = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        held.append(c)
    yield port
    for c in held:
        c.close()
    server.close()


async def test_call_that_times_out_before_sending_is_unavailable(
    pair: list[Member], unaccepting_port: int
) -> None:
    a, _ = pair
    a.transport.set_peers({2: f"127.0.0.1:{unaccepting_port}"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PeerUnavailable, match="before sending"):
        await a.transport.call(2, "/peer/v1/echo", b"", 300)
    assert loop.time() - started < 2


async def test_call_that_times_out_after_sending_has_an_unknown_outcome(
    pair: list[Member],
) -> None:
    a, _ = pair
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(OutcomeUnknown, match="timed out after sending"):
        await a.transport.call(2, "/peer/v1/hang", b"write", 300)
    assert loop.time() - started < 2


async def test_call_whose_connection_breaks_after_sending_has_an_unknown_outcome(
    pair: list[Member],
) -> None:
    a, _ = pair
    with pytest.raises(OutcomeUnknown, match="after sending"):
        await a.transport.call(2, "/peer/v1/drop", b"write", 2000)
    answer = await a.transport.call(2, "/peer/v1/echo", b"next", 2000)  # the pool recovers
    assert orjson.loads(answer)["body"] == "next"


# ---- shutdown ----------------------------------------------------------------------------------


async def test_close_ends_both_directions_promptly(pair: list[Member]) -> None:
    a, b = pair
    await keep_flowing(a, b, 0, 5)
    await keep_flowing(b, a, 0, 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await b.transport.close()
    assert loop.time() - started < 2
    await wait_until(lambda: not a.transport.status()[2]["connected"])
    with pytest.raises(PeerUnavailable):
        await b.transport.call(1, "/peer/v1/echo", b"", 500)
    b.transport.send([hb(2, 1, 99)])  # after close: dropped, never raises
    assert b.transport.dropped_unknown == 1
