"""The peer transport: Raft messages, snapshot streams and the node's RPCs
between the members of one cluster, over aiohttp on the peer listener.

The wire format is specified in docs/peer-protocol.md; this is the summary.

Identity. Every request to the peer listener, on every route, names the
protocol version, the cluster id, the sender and the receiver in four
headers. One middleware (``install``) refuses anything else, for the node's
own RPC routes as well as for the transport's.

Messages. Each node dials each peer once and sends its messages, in order, on
that outbound WebSocket; it receives on the sockets its peers dialed (one
socket per direction: ordered, and no request/response matching). A frame
(one binary WebSocket message) holds one or more encoded messages
(``messages.encode_message``) separated by ``\\n``: the sender drains its whole
queue into as few frames as ``frame_bytes_max`` allows and never waits for an
answer, so appends are pipelined. The receiver decodes a whole frame before
delivering any of it, and refuses it (closing the socket) if any message in
it is malformed, is an InstallSnapshot, or names another sender or receiver.

Snapshots. An InstallSnapshot never travels as a message: a task per peer
POSTs a stream of records (a header, the chunks of ``SnapshotIO.read`` cut
into records of at most ``snapshot_chunk_bytes_max``, each with its crc32,
and an end record with the totals) on a connection of its own, so heartbeats
are never stuck behind it. The receiver puts each chunk back together (the
storage's chunk boundaries carry meaning: its descriptor counts them), hands
it to ``SnapshotIO.stage`` and delivers the staged snapshot only if every
record checked out.

RPC. ``call`` POSTs to a route of a peer's listener on a pooled keep-alive
session with the identity headers, and tells apart a call that never reached
the peer (``PeerUnavailable``: safe to retry elsewhere), one the peer refused
(``PeerCallFailed``) and one whose outcome is unknown (``OutcomeUnknown``).

Nothing here blocks the caller or raises for a peer's problem: queues are
bounded and drop (and count) when full, because Raft retries anyway
(heartbeats are resent, lost appends re-probed, snapshots re-sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
import zlib
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final, Protocol

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from httpcoord.cluster.raft.messages import (
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)

# Bump on ANY change a peer of the previous version could not read: the
# decoders refuse unknown message types and fields, so even an added field is
# an incompatible change. See "Versioning" in docs/peer-protocol.md.
PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({PROTOCOL_VERSION})

VERSION_HEADER: Final = "X-Coord-Peer-Version"
CLUSTER_HEADER: Final = "X-Coord-Cluster"
FROM_HEADER: Final = "X-Coord-Peer-From"
TO_HEADER: Final = "X-Coord-Peer-To"

STREAM_PATH: Final = "/peer/v1/stream"
SNAPSHOT_PATH: Final = "/peer/v1/snapshot"

_ID_DIGITS_MAX: Final = 19  # INT_MAX has 19 digits

# The middleware's refusals: (HTTP status, problem code) by reason.
_REFUSAL_STATUS: Final = {
    "unknown_version": (400, "PeerProtocolVersion"),
    "wrong_cluster": (403, "WrongCluster"),
    "not_a_member": (403, "NotAMember"),
    "wrong_receiver": (421, "WrongReceiver"),
}


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Every bound the transport keeps. The defaults fit the core's defaults
    (``raft.core.Config``) and a LAN; each says why."""

    # Up to 64 pipelined appends per follower (the core's max_inflight_msgs)
    # plus heartbeats, votes and reads: a deeper queue only forms behind a
    # stalled peer, whose appends the core re-probes anyway.
    queue_msgs_max: int = 8192
    # The core's largest append (1 MiB of data, base64 in JSON) is ~1.4 MiB
    # encoded; 64 MiB holds dozens of them per peer and bounds the memory a
    # stalled peer can pin.
    queue_bytes_max: int = 64 * 1024 * 1024
    # One frame holds the core's largest append with room to spare; it is
    # also the largest message, snapshot header or RPC answer accepted.
    frame_bytes_max: int = 4 * 1024 * 1024
    # A dial on a LAN takes well under a millisecond; an election timeout is
    # 0.3-0.6 s with the node's default ticks, so a slower peer is as good as down.
    connect_timeout_ms: int = 1000
    # A peer that has not taken a frame (TCP buffers full) for this long is
    # cut off and redialed, dropping what was queued for it.
    write_timeout_ms: int = 5000
    # Redial pauses double from min to max, with jitter: a restarted peer is
    # redialed within ~2 s, and a dead one costs a dial every 1-2 s.
    backoff_min_ms: int = 50
    backoff_max_ms: int = 2000
    # The largest record of a snapshot stream (a storage chunk, or a part of
    # a bigger one): big enough that the crc32 and record header are noise.
    snapshot_chunk_bytes_max: int = 1024 * 1024
    # call() without a timeout of its own; also how long a snapshot receiver
    # waits for the next record before giving the stream up.
    rpc_timeout_ms: int = 5000
    # Added fields (the brief's fields come first and keep their meaning).
    # WebSocket ping interval on an outbound socket; aiohttp closes it when
    # the pong is not back within half of this.
    keepalive_ms: int = 2000
    # An inbound socket silent this long (no frame, no ping) is closed, and
    # its peer is no longer ``reachable``: three pings missed.
    idle_timeout_ms: int = 6000
    # After the last chunk, the receiver verifies and fsyncs the snapshot
    # before it answers: big snapshots on slow disks take seconds.
    snapshot_ack_timeout_ms: int = 60_000
    # The whole tree lives in memory on every node; a stream claiming more
    # than this is refused rather than written to disk.
    snapshot_bytes_max: int = 8 * 1024 * 1024 * 1024
    # One storage chunk, put back together from its records before it is
    # staged (the sender holds it whole in memory too). SQLite stores no
    # value over 1e9 bytes, so no storage chunk is larger.
    snapshot_stored_chunk_bytes_max: int = 1024 * 1024 * 1024
    # Pooled keep-alive connections for call(), all peers together.
    rpc_connections_max: int = 64
    # At most one log line per refusal reason (and peer) per interval.
    log_interval_ms: int = 5000

    def __post_init__(self) -> None:
        assert self.queue_msgs_max > 0 and self.queue_bytes_max > 0
        assert self.frame_bytes_max >= 1024, "a frame must hold any small message"
        assert self.connect_timeout_ms > 0 and self.write_timeout_ms > 0
        assert 0 < self.backoff_min_ms <= self.backoff_max_ms
        assert self.snapshot_chunk_bytes_max >= 1024
        assert self.rpc_timeout_ms > 0 and self.snapshot_ack_timeout_ms > 0
        assert 0 < self.keepalive_ms < self.idle_timeout_ms
        assert self.snapshot_bytes_max > 0 and self.rpc_connections_max > 0
        assert self.snapshot_stored_chunk_bytes_max >= self.snapshot_chunk_bytes_max
        assert self.log_interval_ms >= 0


class SnapshotIO(Protocol):
    """The storage's snapshots, as the transport streams them."""

    def read(self, snapshot: Snapshot) -> AsyncIterator[bytes]:
        """Leader side: the chunks of a snapshot in order (``Snapshot.data`` is
        a small descriptor). ``stage`` on the follower gets the same chunks,
        boundaries included, however the transport cuts them on the wire."""
        ...

    async def stage(
        self, meta: SnapshotMeta, descriptor: bytes, chunks: AsyncIterator[bytes]
    ) -> Snapshot:
        """Follower side: store the streamed chunks, verify them against the
        descriptor and return the Snapshot the core is to step. An exception
        raised by ``chunks`` (a refused stream) must propagate."""
        ...


class PeerError(Exception):
    """A call to a peer did not give an answer."""


class PeerUnavailable(PeerError):
    """Nothing reached the peer (not a member, refused connection, or a
    timeout before the request was written): safe to retry anywhere."""


class PeerCallFailed(PeerError):
    """The peer answered with a status other than 2xx."""

    def __init__(self, status: int, body: bytes, peer_id: int = 0) -> None:
        super().__init__(f"node {peer_id} answered {status}: {body[:200]!r}")
        self.status = status
        self.body = body
        self.peer_id = peer_id


class OutcomeUnknown(PeerError):
    """The request was written, then the connection broke or the time ran
    out before the answer: the peer may or may not have acted on it."""


def peer_sender(request: web.Request) -> int:
    """The member that sent a request to the peer listener. Only meaningful
    behind the transport's middleware, which has checked the header."""
    sender = _parse_id(request.headers.get(FROM_HEADER))
    assert sender is not None, "peer_sender called outside the peer listener"
    return sender


def backoff_ms(failures: int, limits: TransportLimits, rng: random.Random) -> float:
    """The pause before the next dial after ``failures`` (>= 1) failed ones:
    doubling from backoff_min_ms up to backoff_max_ms, uniform in [d/2, d]
    ("equal jitter"), so members that lost the same peer do not redial it in
    lockstep, and the range never moves down as failures grow."""
    assert failures >= 1
    ceiling_ms = min(limits.backoff_max_ms, limits.backoff_min_ms * (1 << min(failures - 1, 32)))
    return rng.uniform(ceiling_ms / 2, ceiling_ms)


# ---- frames ------------------------------------------------------------------------


class Refused(ValueError):
    """Something a peer sent is refused; ``reason`` is one of a closed set and
    names the counter (``PeerTransport.refusals``) and the log line."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_frame(encoded: Sequence[bytes]) -> bytes:
    """One frame from encoded messages. orjson never writes a raw newline (it
    escapes control characters in strings), so ``\\n`` separates them."""
    return b"\n".join(encoded)


def decode_frame(data: bytes, sender: int, receiver: int) -> list[Message]:
    """The messages of one frame, all or none: raises ``Refused`` if any is
    malformed, is an InstallSnapshot (those come as a stream, staged) or
    names another sender or receiver than the connection's."""
    if not data:
        return []  # an empty frame is valid and carries nothing
    out: list[Message] = []
    for line in data.split(b"\n"):
        try:
            msg = decode_message(line)
        except (ValueError, TypeError) as exc:  # TypeError: e.g. a list as the type name
            raise Refused("malformed_frame", str(exc)[:200]) from None
        if isinstance(msg, InstallSnapshot):
            raise Refused("inline_snapshot", "snapshots travel as a stream, not in a frame")
        if msg.src != sender:
            raise Refused("wrong_src", f"src {msg.src} on a connection from node {sender}")
        if msg.dst != receiver:
            raise Refused("wrong_dst", f"dst {msg.dst} on a connection to node {receiver}")
        out.append(msg)
    return out


# ---- snapshot stream records ------------------------------------------------------

_RECORD: Final = struct.Struct(">cII")  # kind, payload length, crc32 of the payload
RECORD_HEADER: Final = b"H"  # payload: the InstallSnapshot, encoded (data = descriptor)
RECORD_PART: Final = b"P"  # payload: 1..snapshot_chunk_bytes_max bytes; the chunk goes on
RECORD_CHUNK: Final = b"C"  # payload: 0..snapshot_chunk_bytes_max bytes; the chunk ends here
RECORD_END: Final = b"E"  # payload: {"chunks": n, "bytes": total}
_END_BYTES_MAX: Final = 256


def encode_record(kind: bytes, payload: bytes) -> bytes:
    return _RECORD.pack(kind, len(payload), zlib.crc32(payload)) + payload


def encode_chunk(chunk: bytes, record_bytes_max: int) -> Iterator[bytes]:
    """One storage chunk as records of at most ``record_bytes_max``: parts,
    then the last part (an empty chunk is one empty last part)."""
    view = memoryview(chunk)
    last = max(0, (len(chunk) - 1) // record_bytes_max * record_bytes_max)
    for offset in range(0, last, record_bytes_max):
        yield encode_record(RECORD_PART, bytes(view[offset : offset + record_bytes_max]))
    yield encode_record(RECORD_CHUNK, bytes(view[last:]))


class _RecordReader:
    """Records from a request body, each checked before it is returned."""

    def __init__(self, content: aiohttp.StreamReader, timeout_s: float) -> None:
        self._content = content
        self._timeout_s = timeout_s

    async def read(self, payload_bytes_max: int) -> tuple[bytes, bytes]:
        try:
            async with asyncio.timeout(self._timeout_s):
                head = await self._content.readexactly(_RECORD.size)
                kind, length, crc = _RECORD.unpack(head)
                if length > payload_bytes_max:
                    raise Refused("bad_snapshot_stream", f"a record of {length} bytes")
                payload = await self._content.readexactly(length)
        except Refused:
            raise
        except TimeoutError:
            raise Refused("bad_snapshot_stream", "stalled: no record in time") from None
        except Exception as exc:  # whatever the body's parser raises is the peer's doing
            raise Refused("bad_snapshot_stream", f"truncated or broken: {exc!r}"[:200]) from exc
        if zlib.crc32(payload) != crc:
            raise Refused("bad_snapshot_stream", "a record's crc32 does not match")
        return kind, payload


class _Superseded(Exception):
    """A newer snapshot stream from the same sender replaced this one."""


class _ChunkStream:
    """The chunks of one incoming snapshot, checked as they are read, and how
    the stream ended (``error`` is what it raised, if it did)."""

    def __init__(
        self, reader: _RecordReader, limits: TransportLimits, current: Callable[[], bool]
    ) -> None:
        self._reader = reader
        self._limits = limits
        self._current = current
        self.error: Exception | None = None
        self.ended = False
        self.chunks = 0
        self.bytes = 0

    async def chunks_iter(self) -> AsyncGenerator[bytes, None]:
        limits = self._limits
        parts: list[bytes] = []  # of the chunk being put back together
        parts_bytes = 0
        try:
            while True:  # bounded by snapshot_bytes_max and the per-record timeout
                if not self._current():
                    raise _Superseded()
                kind, payload = await self._reader.read(limits.snapshot_chunk_bytes_max)
                if kind in (RECORD_PART, RECORD_CHUNK):
                    self._count(payload)
                    parts_bytes += len(payload)
                    if parts_bytes > limits.snapshot_stored_chunk_bytes_max:
                        raise Refused("bad_snapshot_stream", "a chunk over its bound")
                    if kind == RECORD_PART:
                        if not payload:
                            raise Refused("bad_snapshot_stream", "an empty part")
                        parts.append(payload)
                        continue
                    chunk = b"".join([*parts, payload]) if parts else payload
                    parts, parts_bytes = [], 0
                    self.chunks += 1
                    yield chunk
                elif kind == RECORD_END and not parts:
                    self._check_end(payload)
                    self.ended = True
                    return
                else:
                    raise Refused("bad_snapshot_stream", f"unexpected record {kind!r}")
        except (Refused, _Superseded) as exc:
            self.error = exc
            raise

    def _count(self, payload: bytes) -> None:
        self.bytes += len(payload)
        if self.bytes > self._limits.snapshot_bytes_max:
            raise Refused("bad_snapshot_stream", "the snapshot exceeds snapshot_bytes_max")

    def _check_end(self, payload: bytes) -> None:
        try:
            end = orjson.loads(payload) if len(payload) <= _END_BYTES_MAX else None
        except orjson.JSONDecodeError:
            end = None
        if end != {"chunks": self.chunks, "bytes": self.bytes}:
            raise Refused(
                "bad_snapshot_stream",
                f"end record {payload[:_END_BYTES_MAX]!r} does not match "
                f"{self.chunks} chunks of {self.bytes} bytes received",
            )


# ---- logging -----------------------------------------------------------------------


class _Throttle:
    """At most one log line per key per interval; the lines held back are
    counted and reported with the next one. Keys are (reason, peer id): a
    closed set of reasons times the members, so this stays small."""

    def __init__(self, interval_ms: int) -> None:
        self._interval_s = interval_ms / 1000
        self._last: dict[tuple[str, int], float] = {}
        self._held: Counter[tuple[str, int]] = Counter()

    def warn(self, key: tuple[str, int], fmt: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] += 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            log.warning(fmt + " (and %d more like it)", *args, held)
        else:
            log.warning(fmt, *args)


# ---- per-peer state --------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Link:
    """One outbound WebSocket and the task reading it (for closes and pongs)."""

    ws: aiohttp.ClientWebSocketResponse
    reader: asyncio.Task[None]
    opened_at: float


@dataclass(slots=True, eq=False)
class _Peer:
    id: int
    address: str
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    link: _Link | None = None
    failures: int = 0  # consecutive failed dials (or connections that died young)
    backoff_ms: float = 0.0
    # counters
    sent: int = 0
    frames: int = 0
    dropped: int = 0
    connects: int = 0
    connect_failures: int = 0
    received: int = 0
    # snapshots we send
    snapshot_msg: InstallSnapshot | None = None
    snapshot_task: asyncio.Task[None] | None = None
    snapshots_sent: int = 0
    snapshots_failed: int = 0
    snapshots_superseded: int = 0
    snapshots_received: int = 0
    # the socket this peer dialed to us
    inbound: web.WebSocketResponse | None = None
    last_heard: float = float("-inf")


def _same_snapshot(a: InstallSnapshot, b: InstallSnapshot) -> bool:
    return (a.term, a.snapshot.meta.index, a.snapshot.meta.term) == (
        b.term,
        b.snapshot.meta.index,
        b.snapshot.meta.term,
    )


def _parse_id(text: str | None) -> int | None:
    """A positive id in canonical decimal (no sign, space or leading zero)."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > _ID_DIGITS_MAX:
        return None
    return int(text) if text[0] != "0" else None


def _problem(status: int, code: str, detail: str) -> web.Response:
    body = {
        "type": f"urn:httpcoord:problem:{code}",
        "title": "refused by the peer listener",
        "status": status,
        "code": code,
        "detail": detail,
    }
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers={VERSION_HEADER: ",".join(str(v) for v in sorted(SUPPORTED_VERSIONS))},
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class _AnswerTooLarge(Exception):
    pass


async def _read_bounded(resp: aiohttp.ClientResponse, bytes_max: int) -> bytes:
    if resp.content_length is not None and resp.content_length > bytes_max:
        raise _AnswerTooLarge(f"{resp.content_length} bytes")
    buf = bytearray()
    async for piece in resp.content.iter_chunked(64 * 1024):
        buf += piece
        if len(buf) > bytes_max:
            raise _AnswerTooLarge(f"more than {bytes_max} bytes")
    return bytes(buf)


@dataclass(slots=True)
class _CallProgress:
    written: bool = False  # the request line and headers went to the socket


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    progress = ctx.trace_request_ctx
    if isinstance(progress, _CallProgress):
        progress.written = True


# ---- the transport ---------------------------------------------------------------------


class PeerTransport:
    """Sends this node's messages to its peers and delivers theirs; streams
    snapshots; makes RPCs. See the module docstring and docs/peer-protocol.md."""

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        peers: dict[int, str],
        deliver: Callable[[Message], None],
        snapshots: SnapshotIO,
        limits: TransportLimits,
        rng: random.Random,
    ) -> None:
        assert node_id > 0 and node_id not in peers
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.limits = limits
        self._deliver = deliver
        self._snapshots = snapshots
        self._rng = rng
        self._peers: dict[int, _Peer] = {pid: _Peer(pid, addr) for pid, addr in peers.items()}
        self._throttle = _Throttle(limits.log_interval_ms)
        self._refusals: Counter[str] = Counter()
        self._dropped_unknown = 0
        # The current snapshot stream of each sender; numbers never repeat, so
        # a stream of a removed and re-added member never becomes current again.
        self._snapshot_gen: dict[int, int] = {}
        self._snapshot_seq = 0
        self._background: set[asyncio.Task[None]] = set()
        self._inbound_all: set[web.WebSocketResponse] = set()
        self._streams: aiohttp.ClientSession | None = None  # WebSockets, snapshot POSTs
        self._rpc: aiohttp.ClientSession | None = None  # call()
        self._started = False
        self._closed = False

    # ---- wiring --------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the transport's routes and the identity middleware (outermost,
        so it runs before any other middleware or route of the app)."""

        @web.middleware
        async def identity(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                self._check_identity(request.headers)
            except Refused as exc:
                return self._refuse_request(exc, request)
            return await handler(request)

        app.middlewares.insert(0, identity)
        app.router.add_get(STREAM_PATH, self._handle_stream)
        app.router.add_post(SNAPSHOT_PATH, self._handle_snapshot)
        app.on_shutdown.append(self._on_shutdown)

    async def start(self) -> None:
        """Open the client sessions and start one sender task per peer. Dials
        happen in those tasks when there is something to send, never here."""
        assert not self._started and not self._closed
        self._started = True
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_headers_sent)
        connect_s = self.limits.connect_timeout_ms / 1000
        # No total timeout on the sessions: a snapshot stream may take minutes;
        # each use bounds itself (dial, write, record and call timeouts).
        self._streams = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_s),
        )
        self._rpc = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.limits.rpc_connections_max),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_s),
            trace_configs=[trace],
        )
        for peer in self._peers.values():
            self._start_peer(peer)

    def _start_peer(self, peer: _Peer) -> None:
        peer.sender = asyncio.get_running_loop().create_task(
            self._run_sender(peer), name=f"peer-sender-{peer.id}"
        )
        if peer.snapshot_msg is not None and peer.snapshot_task is None:
            self._start_snapshot(peer, peer.snapshot_msg)

    def set_peers(self, peers: dict[int, str]) -> None:
        """The membership changed: ``peers`` is every OTHER member's peer
        address. A removed member's queue, sockets and stream are dropped and
        its requests refused from now on; a moved one is redialed."""
        assert self.node_id not in peers
        for pid in [pid for pid in self._peers if pid not in peers]:
            self._drop_peer(self._peers.pop(pid))
        for pid, address in peers.items():
            peer = self._peers.get(pid)
            if peer is None:
                peer = self._peers[pid] = _Peer(pid, address)
                if self._started and not self._closed:
                    self._start_peer(peer)
            elif peer.address != address:
                peer.address = address
                peer.failures = 0
                if self._started and not self._closed:
                    # The sender owns its socket and closes it as it ends.
                    if peer.sender is not None:
                        peer.sender.cancel()
                    if peer.snapshot_task is not None:
                        peer.snapshot_task.cancel()  # to the old address: the core re-sends
                        peer.snapshot_task = peer.snapshot_msg = None
                    self._start_peer(peer)

    def _drop_peer(self, peer: _Peer) -> None:
        peer.dropped += len(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0
        for task in (peer.sender, peer.snapshot_task):
            if task is not None:
                task.cancel()
        if peer.inbound is not None:
            self._spawn(self._close_inbound(peer.inbound, aiohttp.WSCloseCode.POLICY_VIOLATION))
        self._snapshot_gen.pop(peer.id, None)  # a stream in flight is no longer current

    async def close(self) -> None:
        """Stop every task, close every socket (both directions) and the
        client sessions. Bounded by the write timeout."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        for peer in self._peers.values():
            for task in (peer.sender, peer.snapshot_task):
                if task is not None:
                    task.cancel()
                    tasks.append(task)
        self._snapshot_gen.clear()
        if tasks:
            await asyncio.wait(tasks)  # each closes its own socket, bounded
        await self._close_all_inbound()
        if self._background:
            await asyncio.wait(list(self._background), timeout=self._close_timeout_s())
        for session in (self._streams, self._rpc):
            if session is not None:
                await session.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Without this, the listener's shutdown waits out its timeout on
        # handlers that sit in receive() on sockets nobody closes.
        await self._close_all_inbound()

    async def _close_all_inbound(self) -> None:
        sockets = list(self._inbound_all)
        if sockets:
            await asyncio.gather(
                *(self._close_inbound(ws, aiohttp.WSCloseCode.GOING_AWAY) for ws in sockets)
            )

    # ---- sending -------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for their peers; never blocks, never raises for a
        peer's problem. A full queue drops the message and counts it."""
        limits = self.limits
        for m in messages:
            assert m.src == self.node_id, f"sending a message from node {m.src}"
            peer = self._peers.get(m.dst)
            if peer is None or self._closed:
                self._dropped_unknown += 1
                if not self._closed:
                    self._throttle.warn(
                        ("not_a_peer", m.dst),
                        "dropping a %s for node %d: not a peer",
                        type(m).__name__,
                        m.dst,
                    )
                continue
            if isinstance(m, InstallSnapshot):
                self._queue_snapshot(peer, m)
                continue
            data = encode_message(m)
            if len(data) > limits.frame_bytes_max:
                peer.dropped += 1
                self._throttle.warn(
                    ("oversized_message", peer.id),
                    "dropping a %d-byte %s for node %d: larger than frame_bytes_max",
                    len(data),
                    type(m).__name__,
                    peer.id,
                )
                continue
            if (
                len(peer.queue) >= limits.queue_msgs_max
                or peer.queued_bytes + len(data) > limits.queue_bytes_max
            ):
                peer.dropped += 1
                self._throttle.warn(
                    ("queue_full", peer.id), "queue for node %d is full: dropping", peer.id
                )
                continue
            peer.queue.append(data)
            peer.queued_bytes += len(data)
            peer.wake.set()

    def _take_frame(self, peer: _Peer) -> tuple[bytes, int]:
        """As many queued messages as fit in one frame (at least one: every
        queued message fits by itself)."""
        budget = self.limits.frame_bytes_max
        queue = peer.queue
        parts: list[bytes] = []
        size = -1  # n messages take n-1 separators
        while queue and size + 1 + len(queue[0]) <= budget:
            data = queue.popleft()
            parts.append(data)
            size += 1 + len(data)
        peer.queued_bytes -= size + 1 - len(parts)
        return encode_frame(parts), len(parts)

    def _drop_queue(self, peer: _Peer) -> None:
        # Built against a state that is stale by the next dial; Raft resends.
        peer.dropped += len(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0

    async def _run_sender(self, peer: _Peer) -> None:
        """One peer's outbound socket, for as long as the peer is a member.
        Owns the socket: it closes it whenever it ends (cancelled included)."""
        link: _Link | None = None
        write_s = self.limits.write_timeout_ms / 1000
        try:
            while True:  # ends when cancelled (close, removal, address change)
                if link is None or link.ws.closed:
                    if link is not None:
                        young = await self._hang_up(peer, link)
                        link = None
                        peer.failures = peer.failures + 1 if young else 0
                    if not peer.queue:  # dial lazily: only with something to send
                        peer.wake.clear()
                        await peer.wake.wait()
                        continue
                    if peer.failures:
                        peer.backoff_ms = backoff_ms(peer.failures, self.limits, self._rng)
                        await asyncio.sleep(peer.backoff_ms / 1000)
                    link = await self._dial(peer)
                    if link is None:
                        peer.failures += 1
                        peer.connect_failures += 1
                        self._drop_queue(peer)
                    continue
                if not peer.queue:
                    peer.wake.clear()
                    await peer.wake.wait()  # set by send() and by the reader when the socket ends
                    continue
                frame, count = self._take_frame(peer)
                try:
                    async with asyncio.timeout(write_s):
                        await link.ws.send_bytes(frame)
                except (TimeoutError, OSError, aiohttp.ClientError, RuntimeError) as exc:
                    peer.dropped += count
                    self._throttle.warn(
                        ("write_failed", peer.id),
                        "write to node %d failed: %s",
                        peer.id,
                        _describe(exc),
                    )
                    young = await self._hang_up(peer, link)
                    link = None
                    peer.failures = peer.failures + 1 if young else 0
                    continue
                peer.sent += count
                peer.frames += 1
        finally:
            if link is not None:
                await self._hang_up(peer, link)

    async def _dial(self, peer: _Peer) -> _Link | None:
        assert self._streams is not None
        url = f"http://{peer.address}{STREAM_PATH}"
        try:
            async with asyncio.timeout(self.limits.connect_timeout_ms / 1000):
                ws = await self._streams.ws_connect(
                    url,
                    headers=self._identity(peer.id),
                    heartbeat=self.limits.keepalive_ms / 1000,
                    compress=0,
                    max_msg_size=64 * 1024,  # the receiver sends nothing but control frames
                )
        except aiohttp.WSServerHandshakeError as exc:
            self._throttle.warn(
                ("dial_refused", peer.id),
                "node %d at %s refused our stream: %d %s",
                peer.id,
                peer.address,
                exc.status,
                exc.message,
            )
            return None
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            self._throttle.warn(
                ("dial_failed", peer.id),
                "cannot reach node %d at %s: %s",
                peer.id,
                peer.address,
                _describe(exc),
            )
            return None
        loop = asyncio.get_running_loop()
        if peer.connects:
            log.info("reconnected to node %d at %s", peer.id, peer.address)
        peer.connects += 1
        reader = loop.create_task(self._read_outbound(peer, ws), name=f"peer-reader-{peer.id}")
        link = _Link(ws, reader, loop.time())
        peer.link = link
        return link

    async def _hang_up(self, peer: _Peer, link: _Link) -> bool:
        """Close an outbound socket; whether it died young. One that did counts
        as a failed dial, so a peer that accepts and drops at once is redialed
        with backoff, not in a loop; one that lived long is redialed at once."""
        if peer.link is link:
            peer.link = None
        link.reader.cancel()
        await asyncio.wait([link.reader])
        if not link.ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout_s()):
                    await link.ws.close()
        lived_ms = (asyncio.get_running_loop().time() - link.opened_at) * 1000
        return lived_ms < self.limits.backoff_max_ms

    async def _read_outbound(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Reads an outbound socket so that pongs and closes are seen; the
        receiver sends no data on a socket it accepted."""
        try:
            while True:  # ends with the socket
                msg = await ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return
                self._throttle.warn(
                    ("unexpected_data", peer.id),
                    "node %d sent data on our outbound stream: closing it",
                    peer.id,
                )
                await ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
                return
        finally:
            peer.wake.set()  # the sender notices the socket is gone

    def _identity(self, peer_id: int) -> dict[str, str]:
        return {
            VERSION_HEADER: str(PROTOCOL_VERSION),
            CLUSTER_HEADER: self.cluster_id,
            FROM_HEADER: str(self.node_id),
            TO_HEADER: str(peer_id),
        }

    def _close_timeout_s(self) -> float:
        return self.limits.write_timeout_ms / 1000

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- snapshots, sending side ------------------------------------------------------

    def _queue_snapshot(self, peer: _Peer, msg: InstallSnapshot) -> None:
        task = peer.snapshot_task
        current = peer.snapshot_msg
        if task is not None and not task.done() and current is not None:
            if _same_snapshot(current, msg):
                return  # the core's retry of the stream already under way
            task.cancel()  # a newer snapshot supersedes the one in flight
            peer.snapshots_superseded += 1
        peer.snapshot_msg = msg
        peer.snapshot_task = None
        if self._started and not self._closed:
            self._start_snapshot(peer, msg)

    def _start_snapshot(self, peer: _Peer, msg: InstallSnapshot) -> None:
        peer.snapshot_task = asyncio.get_running_loop().create_task(
            self._stream_snapshot(peer, msg), name=f"peer-snapshot-{peer.id}"
        )

    async def _stream_snapshot(self, peer: _Peer, msg: InstallSnapshot) -> None:
        assert self._streams is not None
        limits = self.limits
        loop = asyncio.get_running_loop()
        header = encode_message(msg)
        meta = msg.snapshot.meta
        try:
            if len(header) > limits.frame_bytes_max:
                raise ValueError(f"its descriptor makes a {len(header)}-byte header")
            chunk_max = limits.snapshot_chunk_bytes_max
            first_s = (limits.connect_timeout_ms + limits.write_timeout_ms) / 1000
            async with asyncio.timeout(first_s) as deadline:

                async def body() -> AsyncIterator[bytes]:
                    # Every record produced pushes the deadline out: the stream
                    # as a whole may take minutes, a stall may not.
                    yield encode_record(RECORD_HEADER, header)
                    chunks = total = 0
                    async for chunk in self._snapshots.read(msg.snapshot):
                        for record in encode_chunk(chunk, chunk_max):
                            deadline.reschedule(loop.time() + limits.write_timeout_ms / 1000)
                            yield record
                        chunks += 1
                        total += len(chunk)
                    deadline.reschedule(loop.time() + limits.snapshot_ack_timeout_ms / 1000)
                    end = orjson.dumps({"chunks": chunks, "bytes": total})
                    yield encode_record(RECORD_END, end)

                url = f"http://{peer.address}{SNAPSHOT_PATH}"
                async with self._streams.post(
                    url, data=body(), headers=self._identity(peer.id)
                ) as resp:
                    answer = await _read_bounded(resp, limits.frame_bytes_max)
            if resp.status != 204:
                raise ValueError(f"answered {resp.status}: {answer[:200]!r}")
            peer.snapshots_sent += 1
            log.info("snapshot at index %d streamed to node %d", meta.index, peer.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - storage or network: the core re-sends anyway
            peer.snapshots_failed += 1
            self._throttle.warn(
                ("snapshot_failed", peer.id),
                "snapshot at index %d to node %d failed: %s",
                meta.index,
                peer.id,
                _describe(exc),
            )
        finally:
            if peer.snapshot_msg is msg:
                peer.snapshot_msg = None

    # ---- receiving -------------------------------------------------------------------

    def _check_identity(self, headers: Mapping[str, str]) -> int:
        version = _parse_id(headers.get(VERSION_HEADER))
        if version is None or version not in SUPPORTED_VERSIONS:
            raise Refused(
                "unknown_version", f"protocol version {headers.get(VERSION_HEADER)!r}"[:200]
            )
        cluster = headers.get(CLUSTER_HEADER)
        if cluster != self.cluster_id:
            raise Refused("wrong_cluster", f"cluster id {cluster!r}"[:200])
        sender = _parse_id(headers.get(FROM_HEADER))
        if sender is None or sender not in self._peers:
            raise Refused("not_a_member", f"sender {headers.get(FROM_HEADER)!r}"[:200])
        receiver = _parse_id(headers.get(TO_HEADER))
        if receiver != self.node_id:
            raise Refused("wrong_receiver", f"receiver {headers.get(TO_HEADER)!r}"[:200])
        return sender

    def _refuse_request(self, exc: Refused, request: web.Request) -> web.Response:
        self._count_refusal(exc, 0, f"{request.method} {request.path[:100]} from {request.remote}")
        status, code = _REFUSAL_STATUS[exc.reason]
        return _problem(status, code, exc.detail)

    def _count_refusal(self, exc: Refused, peer_id: int, where: str) -> None:
        self._refusals[exc.reason] += 1
        self._throttle.warn(
            (exc.reason, peer_id), "refused from the peer listener (%s): %s", where, exc
        )

    def _deliver_all(self, peer: _Peer, messages: list[Message]) -> None:
        for m in messages:
            try:
                self._deliver(m)
            except Exception:  # the node's bug, not the peer's: keep the stream
                log.exception("delivering %s from node %d failed", type(m).__name__, peer.id)
        peer.received += len(messages)

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        """The socket a peer dialed: its messages to us, in order."""
        sender = peer_sender(request)
        peer = self._peers.get(sender)
        if self._closed:
            return _problem(503, "ShuttingDown", "the peer transport is closing")
        if peer is None:  # removed between the middleware and here
            return _problem(403, "NotAMember", f"node {sender} is not a member")
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.frame_bytes_max,
            autoping=False,  # pings are answered below, and count as signs of life
            receive_timeout=self.limits.idle_timeout_ms / 1000,
            timeout=self._close_timeout_s(),
            compress=False,
        )
        await ws.prepare(request)
        previous, peer.inbound = peer.inbound, ws
        peer.last_heard = time.monotonic()
        self._inbound_all.add(ws)
        if previous is not None:
            # The sender dials again only when its old socket is gone for it.
            self._spawn(self._close_inbound(previous, aiohttp.WSCloseCode.GOING_AWAY))
        try:
            await self._receive(peer, ws)
        finally:
            self._inbound_all.discard(ws)
            if peer.inbound is ws:
                peer.inbound = None
            await self._close_inbound(ws, aiohttp.WSCloseCode.GOING_AWAY)
        return ws

    async def _receive(self, peer: _Peer, ws: web.WebSocketResponse) -> None:
        while True:  # ends with the socket, an idle timeout or a refusal
            try:
                msg = await ws.receive()
            except TimeoutError:
                self._throttle.warn(
                    ("idle", peer.id), "stream from node %d silent: closing it", peer.id
                )
                return
            if msg.type is aiohttp.WSMsgType.BINARY:
                peer.last_heard = time.monotonic()
                try:
                    messages = decode_frame(msg.data, peer.id, self.node_id)
                except Refused as exc:
                    self._count_refusal(exc, peer.id, f"stream from node {peer.id}")
                    code = (
                        aiohttp.WSCloseCode.INVALID_TEXT  # 1007: undecodable payload
                        if exc.reason == "malformed_frame"
                        else aiohttp.WSCloseCode.POLICY_VIOLATION  # 1008: decodable, not allowed
                    )
                    await self._close_inbound(ws, code)
                    return
                if self._peers.get(peer.id) is not peer:
                    return  # removed meanwhile: its socket is being closed
                self._deliver_all(peer, messages)
            elif msg.type is aiohttp.WSMsgType.PING:
                peer.last_heard = time.monotonic()
                with contextlib.suppress(Exception):
                    await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                peer.last_heard = time.monotonic()
            elif msg.type is aiohttp.WSMsgType.TEXT:
                refused = Refused("text_frame", "frames are binary")
                self._count_refusal(refused, peer.id, f"stream from node {peer.id}")
                await self._close_inbound(ws, aiohttp.WSCloseCode.UNSUPPORTED_DATA)
                return
            elif msg.type is aiohttp.WSMsgType.ERROR:
                too_big = (
                    isinstance(msg.data, aiohttp.WebSocketError)
                    and msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                )
                reason = "oversized_frame" if too_big else "bad_websocket"
                refused = Refused(reason, repr(msg.data)[:200])
                self._count_refusal(refused, peer.id, f"stream from node {peer.id}")
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _close_inbound(self, ws: web.WebSocketResponse, code: int) -> None:
        if ws.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_timeout_s()):
                await ws.close(code=code)

    # ---- snapshots, receiving side -------------------------------------------------------

    async def _handle_snapshot(self, request: web.Request) -> web.StreamResponse:
        """A snapshot stream: stage its chunks as they come; deliver the staged
        snapshot only if every record checked out and no newer stream from
        the same sender started meanwhile."""
        sender = peer_sender(request)
        self._snapshot_seq += 1
        gen = self._snapshot_seq
        self._snapshot_gen[sender] = gen

        def current() -> bool:
            return not self._closed and self._snapshot_gen.get(sender) == gen

        where = f"snapshot stream from node {sender}"
        reader = _RecordReader(request.content, self.limits.rpc_timeout_ms / 1000)
        try:
            kind, payload = await reader.read(self.limits.frame_bytes_max)
            if kind != RECORD_HEADER:
                raise Refused("bad_snapshot_stream", f"first record is {kind!r}, not a header")
            try:
                msg = decode_message(payload)
            except (ValueError, TypeError) as exc:
                raise Refused("bad_snapshot_stream", f"header: {exc}"[:200]) from None
            if not isinstance(msg, InstallSnapshot):
                raise Refused("bad_snapshot_stream", "the header is not an InstallSnapshot")
            if msg.src != sender or msg.dst != self.node_id:
                raise Refused("bad_snapshot_stream", f"header from {msg.src} to {msg.dst}")
        except Refused as exc:
            self._count_refusal(exc, sender, where)
            return _problem(400, "BadSnapshotStream", exc.detail)

        stream = _ChunkStream(reader, self.limits, current)
        chunks = stream.chunks_iter()
        try:
            staged = await self._snapshots.stage(msg.snapshot.meta, msg.snapshot.data, chunks)
            if not stream.ended:
                # The storage stopped reading: the rest must be the end record.
                async for _ in chunks:
                    raise Refused("bad_snapshot_stream", "more chunks than the snapshot holds")
        except Exception as exc:  # noqa: BLE001 - the stream's or the storage's refusal
            failure = stream.error or exc
            if isinstance(failure, _Superseded) or not current():
                # Its sender gave it up for a newer one: not a refusal.
                return _problem(409, "SnapshotSuperseded", "a newer stream replaced this one")
            if isinstance(failure, Refused):
                self._count_refusal(failure, sender, where)
                return _problem(400, "BadSnapshotStream", failure.detail)
            refused = Refused("snapshot_refused", f"staging failed: {exc!r}"[:200])
            self._count_refusal(refused, sender, where)
            return _problem(422, "SnapshotRefused", refused.detail)
        finally:
            await chunks.aclose()
        peer = self._peers.get(sender)
        if not current() or peer is None:
            return _problem(409, "SnapshotSuperseded", "a newer stream replaced this one")
        peer.snapshots_received += 1
        self._deliver_all(peer, [InstallSnapshot(msg.src, msg.dst, msg.term, staged)])
        return web.Response(status=204)

    # ---- RPC -------------------------------------------------------------------------------

    async def call(
        self,
        peer_id: int,
        path: str,
        body: bytes,
        timeout_ms: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """POST ``body`` to ``path`` on a peer's listener and return the body of
        its 2xx answer (at most frame_bytes_max). ``timeout_ms`` bounds the
        whole exchange (default rpc_timeout_ms); ``headers`` go with the
        identity headers."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise PeerUnavailable(f"node {peer_id} is not a peer")
        if self._rpc is None or self._closed:
            raise PeerUnavailable("the peer transport is not running")
        assert path.startswith("/"), path
        timeout_s = (self.limits.rpc_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        progress = _CallProgress()
        url = f"http://{peer.address}{path}"
        try:
            async with asyncio.timeout(timeout_s):
                async with self._rpc.post(
                    url,
                    data=body,
                    headers={**(headers or {}), **self._identity(peer_id)},
                    trace_request_ctx=progress,
                ) as resp:
                    status = resp.status
                    answer = await _read_bounded(resp, self.limits.frame_bytes_max)
        except _AnswerTooLarge as exc:
            raise OutcomeUnknown(f"node {peer_id} answered {path} with {exc}") from None
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({_describe(exc)})"
            if progress.written:
                raise OutcomeUnknown(f"call to node {peer_id} {path} {what} after sending") from exc
            raise PeerUnavailable(f"call to node {peer_id} {path} {what} before sending") from exc
        if not 200 <= status < 300:
            raise PeerCallFailed(status, answer, peer_id)
        return answer

    # ---- observation ---------------------------------------------------------------------

    def reachable(self, peer_id: int) -> bool:
        """Whether the peer's socket to us is open and has carried something
        (a frame or a ping) within idle_timeout_ms."""
        peer = self._peers.get(peer_id)
        if peer is None or peer.inbound is None or peer.inbound.closed:
            return False
        silent_s = time.monotonic() - peer.last_heard
        return silent_s * 1000 <= self.limits.idle_timeout_ms

    def status(self) -> dict[int, dict[str, object]]:
        out: dict[int, dict[str, object]] = {}
        for pid, p in sorted(self._peers.items()):
            out[pid] = {
                "address": p.address,
                "connected": p.link is not None and not p.link.ws.closed,
                "reachable": self.reachable(pid),
                "queued_msgs": len(p.queue),
                "queued_bytes": p.queued_bytes,
                "sent": p.sent,
                "frames": p.frames,
                "dropped": p.dropped,
                "received": p.received,
                "reconnects": max(0, p.connects - 1),
                "connect_failures": p.connect_failures,
                "backoff_ms": round(p.backoff_ms, 1),
                "snapshot_streaming": p.snapshot_task is not None and not p.snapshot_task.done(),
                "snapshots_sent": p.snapshots_sent,
                "snapshots_failed": p.snapshots_failed,
                "snapshots_superseded": p.snapshots_superseded,
                "snapshots_received": p.snapshots_received,
            }
        return out

    def refusals(self) -> dict[str, int]:
        """How many requests, frames and streams were refused, by reason."""
        return dict(self._refusals)

    @property
    def dropped_unknown(self) -> int:
        """Messages dropped because their dst is not a peer (or after close)."""
        return self._dropped_unknown
