"""Watching over SSE, resumed on any node without missing or repeating.

``async for item in client.watch(path, recursive=True):`` yields ``Event``s
in zxid order. The server marks the last event of each txn with its zxid
(the SSE ``id:``); the iterator hands out a txn's events only once that
mark has arrived, and remembers it. When the stream breaks (the node died,
the connection dropped, the server cut off a slow reader), it reconnects,
to the next endpoint if the node is gone, with ``Last-Event-ID`` set to that
zxid: the node waits until it has applied it, then replays what came after.
So every event is yielded once, whole txns at a time, across any number of
reconnects.

``410 Compacted`` means the node no longer holds the events since that
zxid. The iterator then watches again with ``initial=true``: the server
sends the watched node (or subtree) as it is at one zxid, then the changes
after it, on the same stream. The iterator yields that state as a
``Resync``, then the events after it: nothing is missed or repeated. A
subtree larger than the server sends at once (``--watch-initial-nodes``,
413) is read instead by a walk, one read per node; the events after that
``Resync`` start at the zxid of the walk's first read, so some may repeat a
change the walk already saw: apply them as upserts (``TreeCache`` does).

The iterator ends only when its consumer stops (``break``, or ``aclose()``);
an error it cannot get past (a bad path, say) is raised.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import aiohttp
import orjson

from httpcoord.client.errors import error_from_problem
from httpcoord.client.models import Event, Node, Resync, Stat, child_path, decode_data
from httpcoord.errors import (
    Compacted,
    DiskFull,
    NoNode,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
    ZxidNotReached,
)

if TYPE_CHECKING:
    from httpcoord.client.aio import Client

# A stream silent this long is taken for dead and resumed elsewhere: the
# server sends a keepalive comment every 15 s by default (--sse-keepalive-ms).
IDLE_TIMEOUT_S = 45.0
# An event line with data=True: 1 MiB of data as base64 in JSON, and more.
LINE_BYTES_MAX = 4 * 1024 * 1024
_EVENT_TYPES = frozenset({"created", "deleted", "data_changed", "children_changed"})
# Answers after which another node (or the same one later) will do; 429 is
# this client address's watch limit, which frees as its other watches end.
_RETRY = (Unavailable, DiskFull, ZxidNotReached, TooManyRequests)


class Frame:
    __slots__ = ("data", "event", "id")

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.id: str | None = None


class ChunkReader(Protocol):
    async def readany(self) -> bytes: ...


async def lines(content: ChunkReader, line_bytes_max: int = LINE_BYTES_MAX) -> AsyncIterator[bytes]:
    """The stream's lines, each without its end. aiohttp's own readline
    refuses lines over 512 KiB; an event with ``data=True`` can be longer."""
    buffer = b""
    while chunk := await content.readany():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r")
        if len(buffer) > line_bytes_max:
            raise ValueError(f"an SSE line longer than {line_bytes_max} bytes")
    # A last line with no end is a frame cut off: dropped.


async def frames(content: AsyncIterator[bytes]) -> AsyncIterator[Frame]:
    """Server-Sent Events frames from the stream's lines, as the SSE spec
    reads them (comments and ``retry:`` skipped)."""
    frame = Frame()
    async for raw in content:
        line = raw.decode()
        if not line:
            if frame.data or frame.id is not None:
                yield frame
            frame = Frame()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            frame.event = value
        elif name == "data":
            frame.data.append(value)
        elif name == "id":
            frame.id = value


async def watch(
    client: Client,
    path: str,
    *,
    recursive: bool = False,
    since: int | None = None,
    data: bool = False,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> AsyncGenerator[Event | Resync, None]:
    url = "/v1/watch" + quote(path, safe="/")
    params = {"recursive": "true" if recursive else "false", "data": "true" if data else "false"}
    last = since  # the zxid of the last whole txn handed out (None: start live)
    failures = 0
    resyncing = False  # compacted: the next stream starts with the state (initial=true)
    while True:
        base = client.endpoint
        headers = {"Accept": "text/event-stream"}
        query = params
        if resyncing:
            query = {**params, "initial": "true", "data": "true"}
        elif last is not None:
            headers["Last-Event-ID"] = str(last)
        txn: list[Event] = []
        state: State | None = State(path, recursive) if resyncing else None
        try:
            async with client.http.get(
                base + url,
                params=query,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=client.request_timeout_s, sock_read=idle_timeout_s
                ),
            ) as resp:
                if resp.status >= 400:
                    error = error_from_problem(resp.status, await resp.read())
                    if isinstance(error, Compacted):
                        resyncing = True
                        continue
                    if isinstance(error, PayloadTooLarge) and resyncing:
                        resync = await _resync(client, path, recursive)  # too big for one answer
                        last, resyncing = resync.zxid, False
                        yield resync
                        continue
                    raise error  # caught below when another node may do better
                failures = 0
                async for frame in frames(lines(resp.content)):
                    if state is not None and frame.data:
                        done = state.add(frame.event, orjson.loads("\n".join(frame.data)))
                        if done is not None:
                            client.note_zxid(done.zxid)
                            last, resyncing, state = done.zxid, False, None
                            yield done
                        continue
                    if frame.event in _EVENT_TYPES and frame.data:
                        txn.append(Event.from_json(orjson.loads("\n".join(frame.data))))
                    if frame.event == "overflow":
                        break  # cut off as a slow reader: resume from `last`
                    if frame.id is not None and frame.id.isdigit():
                        zxid = int(frame.id)
                        # Before the events go out: a read their consumer
                        # makes must not be older than them.
                        client.note_zxid(zxid)
                        last = zxid if last is None else max(last, zxid)
                        events, txn = txn, []
                        for event in events:
                            yield event
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, *_RETRY):
            # (an answer in _RETRY, or a read of the resync failing as a node goes)
            failures += 1
            await client.fail_over(failures)


class State:
    """The state an ``initial=true`` stream sends first: its ``initial``
    events, gathered until the bookmark of the watched path."""

    def __init__(self, path: str, recursive: bool) -> None:
        self.path = path
        self.recursive = recursive
        self.nodes: dict[str, Node | None] = {}

    def add(self, kind: str, body: dict[str, object]) -> Resync | None:
        """Take one frame; the Resync once the state is whole."""
        zxid = body["zxid"]
        stat = body["stat"]
        assert isinstance(zxid, int)
        if kind == "initial":
            assert isinstance(stat, dict)
            path = str(body["path"])
            # A recursive watch's nodes list their children, as a walk reads
            # them: the server sends a parent before its children, by name.
            names: list[str] | None = [] if self.recursive else None
            self.nodes[path] = Node(path, decode_data(body), Stat.from_json(stat), names, zxid)
            if self.recursive and path != self.path:
                above, _, name = path.rpartition("/")
                parent = self.nodes[above or "/"]
                assert parent is not None and parent.children is not None
                parent.children.append(name)
            return None
        if kind != "bookmark":
            return None
        nodes = dict(self.nodes)
        nodes.setdefault(self.path, None)  # the watched node does not exist (yet)
        return Resync(zxid, nodes)


async def _resync(client: Client, path: str, recursive: bool) -> Resync:
    nodes: dict[str, Node | None] = {}
    seen = client.last_zxid  # the read below is at this zxid or later
    try:
        first = await client.get(path, children=recursive)
    except NoNode:
        # Absent at some zxid >= seen: going on from seen may replay a
        # create and delete in between, in order, but misses nothing.
        nodes[path] = None
        return Resync(seen, nodes)
    nodes[path] = first
    pending = [child_path(path, c) for c in (first.children or [])]
    while pending:
        child = pending.pop()
        try:
            node = await client.get(child, children=True)
        except NoNode:
            continue  # deleted during the walk: its event comes after the Resync
        nodes[child] = node
        pending.extend(child_path(child, c) for c in (node.children or []))
    return Resync(first.zxid, nodes)
