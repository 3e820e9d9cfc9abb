"""``GET /v1/watch/{path}`` and ``GET /v1/watches?path=..&path=..``: changes
as long-poll JSON or Server-Sent Events, of one path or of several on one
stream (a browser holds at most six HTTP/1.1 connections per origin).

Without ``since`` a watch starts at the current zxid (a ZooKeeper one-shot
watch is a long-poll without ``since``). With ``since`` (or SSE's
``Last-Event-ID``, which wins) it first replays the kept events after it, or
answers 410 Compacted. With ``initial=true`` (and no ``since``) it first
sends the watched nodes as they are, all read at one zxid, then a
``bookmark`` event with that zxid, then every change after it: list, then
watch, without a gap or an overlap between the two. In SSE the ``id:`` line
comes with the last event of each txn (and with the bookmark), so a browser
that reconnects resumes after a whole txn: never in the middle of one.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web
from multidict import MultiMapping

from httpcoord.errors import BadArguments, InvalidPath, NoNode, PayloadTooLarge
from httpcoord.routes.keys import CONFIG, HUB, READS, ZXID_HEADER, ReadSource
from httpcoord.routes.params import flag, parse_int, query, znode_path
from httpcoord.routes.problems import node_headers
from httpcoord.routes.render import encode_data
from httpcoord.tree.paths import join, validate_path
from httpcoord.tree.tree import Event
from httpcoord.watch.hub import Delivery, Subscriber

routes = web.RouteTableDef()

WATCH_PREFIX = "/v1/watch"
WATCH_URL = WATCH_PREFIX + r"{path:(/[\s\S]*)?}"
WATCHES_URL = "/v1/watches"
_PARAMS = frozenset({"since", "recursive", "data", "timeout", "initial"})
_MANY_PARAMS = _PARAMS | {"path"}
_REPEATED = frozenset({"path"})
INITIAL = "initial"  # the type of an event of the state a watch starts from
BOOKMARK = "bookmark"  # the type of the event that ends that state
_DEFAULT_TIMEOUT_S = 30.0
_SSE_RETRY_MS = 1000
_STATE_EVENTS_PER_WRITE = 500


def event_json(event: Event, with_data: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "type": event.type,
        "path": event.path,
        "zxid": event.zxid,
        "stat": event.stat,
    }
    if with_data and event.data is not None:
        body["data"], body["encoding"] = encode_data(event.data)
    return body


def sse_frames(delivery: Delivery, with_data: bool) -> bytes:
    cached = delivery.sse_cache.get(with_data)
    if cached is not None:
        return cached
    parts = []
    last = len(delivery.events) - 1
    for i, event in enumerate(delivery.events):
        frame = b"event: " + event.type.encode() + b"\n"
        if i == last:
            frame += b"id: %d\n" % delivery.zxid
        frame += b"data: " + orjson.dumps(event_json(event, with_data)) + b"\n\n"
        parts.append(frame)
    encoded = delivery.sse_cache[with_data] = b"".join(parts)
    return encoded


def _state_frame(event: Event, with_data: bool, last: bool) -> bytes:
    frame = b"event: " + event.type.encode() + b"\n"
    if last:
        frame += b"id: %d\n" % event.zxid
    return frame + b"data: " + orjson.dumps(event_json(event, with_data)) + b"\n\n"


def _since(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("since")
    if raw is None or raw == "":
        return None
    value = parse_int(raw, "since")
    if value < 0:
        raise BadArguments(f"since must not be negative, got {value}")
    return value


def _timeout(request: web.Request) -> float:
    raw = request.query.get("timeout")
    limit = request.app[CONFIG].limits.watch_timeout_max_s
    if raw is None:
        return min(_DEFAULT_TIMEOUT_S, limit)
    try:
        value = float(raw)
    except ValueError:
        raise BadArguments(f"timeout must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= limit:
        raise BadArguments(f"timeout must be between 0 and {limit} seconds, got {raw}")
    return value


@routes.get(WATCH_URL, allow_head=False)
async def watch(request: web.Request) -> web.StreamResponse:
    q = query(request, _PARAMS)
    limits = request.app[CONFIG].limits
    path = znode_path(request, max_length=limits.path_length_max, prefix=WATCH_PREFIX)
    return await _watch(request, q, (path,))


@routes.get(WATCHES_URL, allow_head=False)
async def watches(request: web.Request) -> web.StreamResponse:
    q = query(request, _MANY_PARAMS, repeatable=_REPEATED)
    limits = request.app[CONFIG].limits
    raw = q.getall("path", [])
    if not raw:
        raise BadArguments("give the paths to watch as path=/a&path=/b")
    # How many: each path counts against --max-watchers-per-client (429).
    paths = []
    for value in raw:
        try:
            paths.append(validate_path(value, max_length=limits.path_length_max))
        except InvalidPath as exc:
            raise InvalidPath(f"{exc.detail}: {value!r}", path=value) from None
    return await _watch(request, q, tuple(paths))


async def _watch(
    request: web.Request, q: MultiMapping[str], paths: tuple[str, ...]
) -> web.StreamResponse:
    recursive, with_data = flag(q, "recursive"), flag(q, "data")
    since = _since(request)
    initial = flag(q, INITIAL)
    if initial and "since" in q:
        raise BadArguments("initial=true starts from the current state: it takes no since")
    if initial and since is not None:
        initial = False  # a reconnecting EventSource (Last-Event-ID): resume, do not list again
    sse = "text/event-stream" in request.headers.get("Accept", "")
    timeout = _timeout(request)  # checked for SSE too, where it is not used
    node = request.app[READS]
    if since is not None and since > node.zxid:
        # Resumed here with an id another node gave: replay only once this
        # node has applied it, so nothing is missed and nothing repeated.
        await node.wait_for_zxid(since)
    hub = request.app[HUB]
    state: list[Event] | None = None
    if initial:
        # The state and the subscription in one step, with no await between:
        # the live events start exactly after the zxid the state was read at.
        since = node.zxid
        limit = request.app[CONFIG].limits.watch_initial_nodes_max
        state = initial_state(node, paths, recursive, since, limit)
    sub = hub.subscribe_many(paths, recursive, since, request.remote or "unknown")
    try:
        if sse:
            return await _stream(request, sub, with_data, state)
        return await _long_poll(request, sub, with_data, timeout, state)
    finally:
        # Also on cancellation: a dropped connection frees its watcher at once.
        hub.unsubscribe(sub)


def initial_state(
    reads: ReadSource, paths: tuple[str, ...], recursive: bool, zxid: int, limit: int
) -> list[Event]:
    """Each watched path's nodes as they are, as ``initial`` events at
    ``zxid`` (a subtree parents first, children by name), then that path's
    ``bookmark``."""
    events: list[Event] = []
    for path in paths:
        try:
            stack = [(path, reads.get(path))]
        except NoNode:
            stack = []  # nothing there yet: its creation will come as an event
        while stack:
            at, znode = stack.pop()
            events.append(Event(INITIAL, at, zxid, znode.stat(), znode.data))
            if len(events) > limit:
                raise PayloadTooLarge(
                    f"more than {limit} nodes to send as the initial state: watch a"
                    " smaller subtree, or read it in pages (?children=true) and watch with since",
                    limit=limit,
                )
            if recursive:
                for name in sorted(znode.children, reverse=True):
                    child = join(at, name)
                    stack.append((child, reads.get(child)))
        events.append(Event(BOOKMARK, path, zxid, None))
    return events


async def _long_poll(
    request: web.Request,
    sub: Subscriber,
    with_data: bool,
    timeout: float,
    state: list[Event] | None,
) -> web.Response:
    if state is None and not sub.ready and timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wait(asyncio.get_running_loop()), timeout)
    deliveries = sub.take()
    events = [event_json(e, with_data) for e in state or ()]
    events += [event_json(e, with_data) for d in deliveries for e in d.events]
    # Everything up to "zxid" that matches was delivered: the next since. An
    # overflowed watcher got less than all, so it resumes from what it got.
    zxid = sub.last_zxid if sub.overflowed else request.app[READS].zxid
    if sub.overflowed:
        request.app[HUB].cut_off += 1
    body = {"events": events, "zxid": zxid, "truncated": sub.overflowed}
    response = web.Response(body=orjson.dumps(body), content_type="application/json")
    response.headers[ZXID_HEADER] = str(request.app[READS].zxid)
    return response


async def _stream(
    request: web.Request, sub: Subscriber, with_data: bool, state: list[Event] | None
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies: do not buffer the stream
            ZXID_HEADER: str(request.app[READS].zxid),
            # The middleware cannot add these to a response already started.
            **node_headers(request.app[READS]),
        }
    )
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        return response
    # Keepalives and the cut-off of a client that reads nothing come from the
    # hub's periodic sweep (see WatchHub.sweep), not from a timer per stream.
    sub.stream, sub.abort = True, transport.close
    loop = asyncio.get_running_loop()
    sub.last_active_s = loop.time()
    if state is None:
        # An id with no data sets the browser's last event ID without
        # dispatching an event: a stream dropped before its first event still
        # resumes from where it started, not from whatever is current then.
        await response.write(b"retry: %d\nid: %d\n\n" % (_SSE_RETRY_MS, sub.start_zxid))
    else:
        # No id until the last bookmark: a stream dropped while it sends the
        # state reconnects without Last-Event-ID and gets the whole state again.
        await response.write(b"retry: %d\n\n" % _SSE_RETRY_MS)
        for at in range(0, len(state), _STATE_EVENTS_PER_WRITE):
            part = state[at : at + _STATE_EVENTS_PER_WRITE]
            await response.write(b"".join(_state_frame(e, with_data, e is state[-1]) for e in part))
    while True:
        if sub.queue:
            frames = b"".join(sse_frames(d, with_data) for d in sub.take())
            await response.write(frames)
            sub.last_active_s = loop.time()
        elif sub.closed:
            break
        elif sub.overflowed:
            request.app[HUB].cut_off += 1
            # Where to resume: the browser's EventSource reconnects on its
            # own with Last-Event-ID, which is exactly this zxid.
            final = orjson.dumps({"reason": "slow consumer", "resume_from": sub.last_zxid})
            await response.write(b"event: overflow\ndata: " + final + b"\n\n")
            break
        elif sub.keepalive_due:
            sub.keepalive_due = False
            await response.write(b": keepalive\n\n")
        else:
            await sub.wait(loop)
    response.force_close()  # end the connection, not just the response
    return response
