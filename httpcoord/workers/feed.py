"""The node's side of its read workers: the feed of its tree, and ReadIndex.

A read worker (``httpcoord.workers.worker``) reaches the node over the node's
local unix socket, never over TCP (``local_only``), and opens ``FEED_PATH``: a
WebSocket whose binary frames carry, in this order,

- ``HELLO``: JSON ``{"v": 1, "zxid": Z, "leader": L}``;
- ``SNAPSHOT``: the tree's snapshot chunks at zxid Z (``Tree.from_snapshot``);
- ``READY``: the copy is complete;
- ``TXNS``, again and again: the id of the leader this node knows (4 bytes),
  then every committed txn the node applied since the last frame, each as a
  4-byte length and its bytes, in log order (a failed txn too: it fails the
  same way on the copy, which is a pure function of the txns).

The copy and the tap are taken in the same turn of the loop, so the worker
misses no txn after Z and sees none twice. A worker that falls more than
``FEED_BYTES_MAX`` behind, or a node whose whole tree a snapshot from the
leader replaced, ends the feed: the worker then exits and the node starts a
fresh one (``supervisor``).

``READ_INDEX_PATH`` answers a linearizable read's barrier for a worker: the
node does its own ReadIndex round and answers the zxid it then has applied,
which the worker waits for before it reads its copy.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque

import orjson
from aiohttp import web

from httpcoord.errors import NotFound
from httpcoord.routes.keys import NODE
from httpcoord.routes.render import json_response

INTERNAL_PREFIX = "/internal/"  # never passed on by a worker's proxy
FEED_PATH = INTERNAL_PREFIX + "v1/feed"
READ_INDEX_PATH = INTERNAL_PREFIX + "v1/read-index"
FEED_VERSION = 1

HELLO, SNAPSHOT, READY, TXNS = b"H", b"S", b"R", b"T"
FEED_BYTES_MAX = 64 * 1024 * 1024  # txns waiting for one worker; beyond: the feed ends
FRAME_BYTES_MAX = 4 * 1024 * 1024  # txns sent in one TXNS frame (at least one)
_IDLE_S = 0.2  # a leader change reaches the workers within this, writes or not

_LEN = struct.Struct(">I")

routes = web.RouteTableDef()


def local_only(request: web.Request) -> None:
    """The internal routes exist only on the node's unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        raise NotFound(f"no route {request.path}")


class FeedCut(Exception):
    """The feed cannot go on: the worker fell too far behind, or the tree was replaced."""


class Backlog:
    """The txns applied since the last frame, for one worker."""

    def __init__(self) -> None:
        self._txns: deque[bytes] = deque()
        self._bytes = 0
        self._cut: str | None = None
        self._ready = asyncio.Event()

    def push(self, txn: bytes) -> None:
        if self._cut is not None:
            return
        self._txns.append(txn)
        self._bytes += len(txn)
        if self._bytes > FEED_BYTES_MAX:
            self.cut(f"the worker fell more than {FEED_BYTES_MAX} bytes of txns behind")
        self._ready.set()

    def cut(self, reason: object) -> None:
        self._cut = str(reason)
        self._txns.clear()
        self._ready.set()

    async def take(self, idle_s: float) -> list[bytes]:
        """The txns waiting (at most about FRAME_BYTES_MAX), after waiting up to idle_s for one."""
        if not self._txns and self._cut is None:
            try:
                await asyncio.wait_for(self._ready.wait(), idle_s)
            except TimeoutError:
                pass
        self._ready.clear()
        if self._cut is not None:
            raise FeedCut(self._cut)
        txns = self._txns
        batch: list[bytes] = []
        size = 0
        while txns and (not batch or size + len(txns[0]) <= FRAME_BYTES_MAX):
            txn = txns.popleft()
            batch.append(txn)
            size += len(txn)
        self._bytes -= size
        if txns:
            self._ready.set()
        return batch


def txns_frame(leader: int, txns: list[bytes]) -> bytes:
    parts = [TXNS, _LEN.pack(leader)]
    for txn in txns:
        parts.append(_LEN.pack(len(txn)))
        parts.append(txn)
    return b"".join(parts)


def parse_txns_frame(frame: bytes) -> tuple[int, list[bytes]]:
    """(leader, txns) of a TXNS frame; ValueError when it is malformed."""
    if frame[:1] != TXNS or len(frame) < 5:
        raise ValueError("not a TXNS frame")
    (leader,) = _LEN.unpack_from(frame, 1)
    txns: list[bytes] = []
    at = 5
    end = len(frame)
    while at < end:
        if at + 4 > end:
            raise ValueError("truncated txn length")
        (size,) = _LEN.unpack_from(frame, at)
        at += 4
        if at + size > end:
            raise ValueError("truncated txn")
        txns.append(frame[at : at + size])
        at += size
    return leader, txns


@routes.get(FEED_PATH)
async def feed(request: web.Request) -> web.StreamResponse:
    local_only(request)
    node = request.app[NODE]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    backlog = Backlog()
    # Same turn of the loop: the copy at zxid Z and every txn after it.
    view = node.tree_view()
    node.txn_taps.append(backlog.push)
    node.reset_listeners.append(backlog.cut)
    try:
        hello = {"v": FEED_VERSION, "zxid": view.zxid, "leader": node.leader_id}
        await ws.send_bytes(HELLO + orjson.dumps(hello))
        try:
            for chunk in view.chunks():
                await ws.send_bytes(SNAPSHOT + chunk)
                await asyncio.sleep(0)  # a chunk per turn: requests go on meanwhile
        finally:
            view.close()
        await ws.send_bytes(READY)
        leader = -1
        while not ws.closed:
            txns = await backlog.take(_IDLE_S)
            if txns or node.leader_id != leader:
                leader = node.leader_id
                await ws.send_bytes(txns_frame(leader, txns))
    except FeedCut as exc:
        await ws.close(message=str(exc).encode()[:120])
    except ConnectionResetError:
        pass  # the worker went away
    finally:
        node.txn_taps.remove(backlog.push)
        node.reset_listeners.remove(backlog.cut)
    return ws


@routes.post(READ_INDEX_PATH)
async def read_index(request: web.Request) -> web.Response:
    local_only(request)
    node = request.app[NODE]
    await node.barrier(linearizable=True)
    return json_response({"zxid": node.zxid})
