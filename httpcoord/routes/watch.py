"""``GET /v1/watch/{path}``: changes as long-poll JSON or Server-Sent Events.

Without ``since`` a watch starts at the current zxid (a ZooKeeper one-shot
watch is a long-poll without ``since``). With ``since`` (or SSE's
``Last-Event-ID``, which wins) it first replays the kept events after it, or
answers 410 Compacted. In SSE the ``id:`` line comes with the last event of
each txn, so a browser that reconnects resumes after a whole txn: never in
the middle of one.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from httpcoord.errors import BadArguments
from httpcoord.routes.keys import CONFIG, HUB, READS, ZXID_HEADER
from httpcoord.routes.params import flag, parse_int, query, znode_path
from httpcoord.routes.problems import node_headers
from httpcoord.routes.render import encode_data
from httpcoord.tree.tree import Event
from httpcoord.watch.hub import Delivery, Subscriber

routes = web.RouteTableDef()

WATCH_PREFIX = "/v1/watch"
WATCH_URL = WATCH_PREFIX + r"{path:(/[\s\S]*)?}"
_PARAMS = frozenset({"since", "recursive", "data", "timeout"})
_DEFAULT_TIMEOUT_S = 30.0
_SSE_RETRY_MS = 1000


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
    limits = request.app[CONFIG].limits
    q = query(request, _PARAMS)
    path = znode_path(request, max_length=limits.path_length_max, prefix=WATCH_PREFIX)
    recursive, with_data = flag(q, "recursive"), flag(q, "data")
    since = _since(request)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    timeout = _timeout(request)  # checked for SSE too, where it is not used
    node = request.app[READS]
    if since is not None and since > node.zxid:
        # Resumed here with an id another node gave: replay only once this
        # node has applied it, so nothing is missed and nothing repeated.
        await node.wait_for_zxid(since)
    hub = request.app[HUB]
    sub = hub.subscribe(path, recursive, since, request.remote or "unknown")
    try:
        if sse:
            return await _stream(request, sub, with_data)
        return await _long_poll(request, sub, with_data, timeout)
    finally:
        # Also on cancellation: a dropped connection frees its watcher at once.
        hub.unsubscribe(sub)


async def _long_poll(
    request: web.Request, sub: Subscriber, with_data: bool, timeout: float
) -> web.Response:
    if not sub.ready and timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wait(asyncio.get_running_loop()), timeout)
    deliveries = sub.take()
    events = [event_json(e, with_data) for d in deliveries for e in d.events]
    # Everything up to "zxid" that matches was delivered: the next since. An
    # overflowed watcher got less than all, so it resumes from what it got.
    zxid = sub.last_zxid if sub.overflowed else request.app[READS].zxid
    body = {"events": events, "zxid": zxid, "truncated": sub.overflowed}
    response = web.Response(body=orjson.dumps(body), content_type="application/json")
    response.headers[ZXID_HEADER] = str(request.app[READS].zxid)
    return response


async def _stream(request: web.Request, sub: Subscriber, with_data: bool) -> web.StreamResponse:
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
    # An id with no data sets the browser's last event ID without dispatching
    # an event: a stream dropped before its first event still resumes from
    # where it started, not from whatever is current when it reconnects.
    await response.write(b"retry: %d\nid: %d\n\n" % (_SSE_RETRY_MS, sub.start_zxid))
    while True:
        if sub.queue:
            frames = b"".join(sse_frames(d, with_data) for d in sub.take())
            await response.write(frames)
            sub.last_active_s = loop.time()
        elif sub.closed:
            break
        elif sub.overflowed:
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
