"""A read worker: a process of its own that answers reads and watches on the
node's client port, from a copy of the node's tree.

The node (its "primary" process) and its workers all listen on the same
address with ``SO_REUSEPORT``: the kernel deals each new connection to one of
them. A worker answers from its copy (``replica``):

- ``GET`` and ``HEAD`` of ``/v1/nodes/...``, ``/v1/watch/...`` and
  ``/v1/watches``, with the node's consistency rules;
- everything else (writes, multi, sessions, cluster, health, metrics) and a
  watch resumed from a zxid older than its copy's history it passes to the
  primary over the primary's unix socket, unchanged. After a write it waits
  until its copy has applied the write's zxid, as a follower does after a
  forwarded write: a client reads its own writes on the connection it wrote
  on.

A worker lives as long as its feed: when the feed ends (the primary stopped,
restarted, or cut a worker that fell behind), the worker stops; the primary
starts a fresh one (``supervisor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from aiohttp.client_exceptions import UnixClientConnectorError
from aiohttp.client_proto import ResponseHandler
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from yarl import URL

from httpcoord.config import Config, Limits
from httpcoord.errors import (
    BadArguments,
    Compacted,
    CoordError,
    NotFound,
    OutcomeUnknown,
    SessionExpired,
    Unavailable,
    ZxidNotReached,
    error_from_problem,
)
from httpcoord.logs import REQUEST_ID, REQUEST_ID_HEADER
from httpcoord.routes import cors, nodes, observe, watch
from httpcoord.routes.keys import CONFIG, HUB, READS, ZXID_HEADER
from httpcoord.routes.problems import problems_middleware
from httpcoord.tree.collector import building_long_lived
from httpcoord.tree.tree import Tree
from httpcoord.watch.history import History
from httpcoord.watch.hub import WatchHub
from httpcoord.workers import feed
from httpcoord.workers.replica import Replica

log = logging.getLogger(__name__)

_CONNECT_WITHIN_S = 60.0  # the primary opens its socket after its recovery
_STOP_WITHIN_S = 5.0  # requests in flight get this long to finish at a stop
_BODY_SLACK_BYTES = 64 * 1024
# Request headers that belong to one connection, not to the request.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",  # answered here (100 Continue) before the body is read
    }
)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HANDSHAKE_ERRORS: dict[int, type[CoordError]] = {404: SessionExpired, 400: BadArguments}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker needs from its node's configuration (JSON on its command line)."""

    worker_id: int
    node_id: int
    socket: str  # the primary's abstract unix socket, without its leading NUL
    limits: Limits
    request_timeout_ms: int
    watch_history_events: int
    watch_history_bytes: int
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False
    log_format: str = "text"

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, raw: str) -> WorkerSettings:
        fields = orjson.loads(raw)
        fields["limits"] = Limits(**fields["limits"])
        fields["cors_origins"] = tuple(fields.get("cors_origins", ()))
        return cls(**fields)


PRIMARY = web.AppKey("primary", aiohttp.ClientSession)
SETTINGS = web.AppKey("worker_settings", WorkerSettings)

_PRIMARY_URL = URL("http://node")


async def serve_worker(settings: WorkerSettings, bind: Callable[[], list[socket.socket]]) -> None:
    """Copy the tree, then listen (``bind``: the node's address with
    ``SO_REUSEPORT``), until SIGTERM or SIGINT or the end of the feed. A
    worker listens only once it can answer: the kernel hands a listening
    socket its share of new connections at once."""
    runner = web.AppRunner(
        create_worker_app(settings),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_STOP_WITHIN_S,
    )
    await runner.setup()
    try:
        for sock in bind():
            await web.SockSite(runner, sock).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def create_worker_app(settings: WorkerSettings) -> web.Application:
    limits = settings.limits
    app = web.Application(
        middlewares=[problems_middleware],
        client_max_size=max(limits.data_bytes_max, limits.request_bytes_max) + _BODY_SLACK_BYTES,
    )
    app[SETTINGS] = settings
    app[CONFIG] = Config(limits=limits)
    app.cleanup_ctx.append(_follow_lifecycle)
    app.on_shutdown.append(_end_watches)
    app.add_routes(
        [r for r in nodes.routes if isinstance(r, web.RouteDef) and r.method in ("GET", "HEAD")]
    )
    app.router.add_get(watch.WATCH_URL, _from_copy(watch.watch), allow_head=False)
    app.router.add_get(watch.WATCHES_URL, _from_copy(watch.watches), allow_head=False)
    app.router.add_route("*", r"/{tail:[\s\S]*}", proxy)
    cors.install(app, settings.cors_origins)
    # Request ids and the access log; the node's /metrics counts the node alone.
    observe.install(app, CollectorRegistry(auto_describe=False), settings.access_log)
    return app


async def _end_watches(app: web.Application) -> None:
    if HUB in app:
        app[HUB].close_all()


async def _follow_lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = _AbstractUnixConnector(path="\0" + settings.socket)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
    )
    app[PRIMARY] = session
    try:
        ws = await _connect(session)
        replica = await _copy(ws, session, settings)
    except BaseException:
        await session.close()
        raise
    app[READS] = replica
    hub = WatchHub(
        replica.history,
        settings.limits.watchers_per_client_max,
        settings.limits.watch_queue_events_max,
    )
    replica.listeners.append(hub.publish)
    app[HUB] = hub
    follower = asyncio.create_task(_follow(ws, replica))
    sweeper = asyncio.create_task(hub.sweep_forever(settings.limits.sse_keepalive_ms / 1000))
    log.info(
        "read worker %d of node %d serving from zxid %d",
        settings.worker_id,
        settings.node_id,
        replica.zxid,
    )
    yield
    for task in (follower, sweeper):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await ws.close()
    await session.close()


class _AbstractUnixConnector(aiohttp.UnixConnector):
    """uvloop cannot connect to an abstract unix socket by name (EINVAL), but
    takes a socket already connected: connect it here."""

    async def _create_connection(
        self, req: aiohttp.ClientRequest, traces: Any, timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await self._loop.sock_connect(sock, self.path)
            _, proto = await self._loop.create_unix_connection(
                lambda: ResponseHandler(loop=self._loop), sock=sock
            )
        except OSError as exc:
            sock.close()
            raise UnixClientConnectorError(self.path, req.connection_key, exc) from exc
        return proto


async def _connect(session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CONNECT_WITHIN_S
    delay = 0.05
    while True:
        try:
            # The feed is trusted and its frames are as large as a snapshot chunk.
            return await session.ws_connect(_PRIMARY_URL.with_path(feed.FEED_PATH), max_msg_size=0)
        except (aiohttp.ClientError, OSError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)


async def _copy(
    ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession, settings: WorkerSettings
) -> Replica:
    """HELLO, the snapshot chunks, READY: the copy the feed goes on from."""
    hello = await _frame(ws)
    if hello[:1] != feed.HELLO:
        raise RuntimeError("the feed did not start with HELLO")
    meta = orjson.loads(hello[1:])
    if meta.get("v") != feed.FEED_VERSION:
        raise RuntimeError(f"feed version {meta.get('v')!r}, expected {feed.FEED_VERSION}")
    chunks: list[bytes] = []
    while (frame := await _frame(ws))[:1] == feed.SNAPSHOT:
        chunks.append(frame[1:])
    if frame[:1] != feed.READY:
        raise RuntimeError("the feed's snapshot did not end with READY")
    with building_long_lived():
        tree = Tree.from_snapshot(chunks)
    if tree.zxid != meta["zxid"]:
        raise RuntimeError(f"the feed's copy is at zxid {tree.zxid}, it said {meta['zxid']}")
    history = History(settings.watch_history_events, settings.watch_history_bytes, tree.zxid)
    return Replica(
        settings.node_id,
        settings.worker_id,
        tree,
        int(meta["leader"]),
        history,
        _read_index_via(session),
        settings.request_timeout_ms,
    )


def _read_index_via(session: aiohttp.ClientSession) -> Callable[[], Awaitable[int]]:
    async def read_index() -> int:
        """The zxid the node has applied after its own ReadIndex round."""
        try:
            async with session.post(_PRIMARY_URL.with_path(feed.READ_INDEX_PATH)) as resp:
                body = await resp.read()
        except aiohttp.ClientError as exc:
            raise Unavailable(f"this read worker cannot reach its node: {exc}") from None
        if resp.status != 200:
            raise _refusal(body)
        return int(orjson.loads(body)["zxid"])

    return read_index


def _refusal(body: bytes) -> CoordError:
    try:
        error = error_from_problem(orjson.loads(body))
    except orjson.JSONDecodeError:
        error = None
    return error or Unavailable("unreadable answer from the node")


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    msg = await ws.receive()
    if msg.type is not WSMsgType.BINARY:
        raise ConnectionError(f"the feed ended ({msg.type.name}: {msg.extra or msg.data})")
    data: bytes = msg.data
    return data


async def _follow(ws: aiohttp.ClientWebSocketResponse, replica: Replica) -> None:
    """Apply the feed until it ends, then stop this worker: a copy that no
    longer follows its node must not answer."""
    try:
        while True:
            leader, txns = feed.parse_txns_frame(await _frame(ws))
            replica.apply(leader, txns)
    except (ConnectionError, ValueError) as exc:
        log.warning("read worker stops: %s", exc)
    except Exception:
        log.exception("read worker stops: applying the feed failed")
    replica.fail_waiting(Unavailable("this read worker lost its node; retry"))
    os.kill(os.getpid(), signal.SIGTERM)  # serve_worker's graceful stop


# ---- answered here, or by the primary ---------------------------------------------------


def _from_copy(handler: Handler) -> Handler:
    """A watch route answered from the copy; a watch resumed from before the
    copy's history (the worker started after it) is the primary's to
    answer, from its own."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Compacted:
            return await proxy(request)

    return answer


async def proxy(request: web.Request) -> web.StreamResponse:
    """The request as the primary answers it, once the copy has applied the
    zxid of the answer."""
    if request.path.startswith(feed.INTERNAL_PREFIX):
        raise NotFound(f"no route {request.path}")  # the primary's own, for its workers
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _proxy_websocket(request)
    session = request.app[PRIMARY]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers[REQUEST_ID_HEADER] = REQUEST_ID.get()  # the node's lines name the same request
    body = await request.read()
    url = URL(str(_PRIMARY_URL) + request.raw_path, encoded=True)
    is_write = request.method not in _READ_METHODS
    try:
        async with session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as resp:
            out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            if resp.content_type == "text/event-stream":
                return await _stream(request, resp, out_headers)
            answer = await resp.read()
    except aiohttp.ClientConnectorError as exc:
        raise Unavailable(f"this read worker cannot reach its node: {exc}") from None
    except aiohttp.ClientError as exc:
        if is_write:
            raise OutcomeUnknown(f"the node went away during the write: {exc}") from None
        raise Unavailable(f"the node went away during the request: {exc}") from None
    zxid = resp.headers.get(ZXID_HEADER, "")
    if zxid.isdigit():
        # What the node answered (a write, or a refusal decided on its tree)
        # is never newer than what this connection reads next: the copy
        # catches up first. A client reads its own writes here.
        with contextlib.suppress(ZxidNotReached):
            await request.app[READS].wait_for_zxid(int(zxid))
    return web.Response(status=resp.status, reason=resp.reason, body=answer, headers=out_headers)


async def _stream(
    request: web.Request, resp: aiohttp.ClientResponse, headers: dict[str, str]
) -> web.StreamResponse:
    out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
    await out.prepare(request)
    async for chunk in resp.content.iter_any():
        await out.write(chunk)
    await out.write_eof()
    return out


async def _proxy_websocket(request: web.Request) -> web.StreamResponse:
    """A session's keepalive WebSocket, relayed frame by frame to the primary."""
    session = request.app[PRIMARY]
    url = URL(str(_PRIMARY_URL) + request.raw_path, encoded=True)
    try:
        upstream = await session.ws_connect(url, autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        raise _HANDSHAKE_ERRORS.get(exc.status, Unavailable)(exc.message) from None
    except aiohttp.ClientError as exc:
        raise Unavailable(f"this read worker cannot reach its node: {exc}") from None
    downstream = web.WebSocketResponse()
    await downstream.prepare(request)
    relay_down = asyncio.create_task(_relay(upstream, downstream))
    try:
        await _relay(downstream, upstream)
    finally:
        relay_down.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay_down
        await upstream.close()
    return downstream


async def _relay(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        else:
            break
    await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)
