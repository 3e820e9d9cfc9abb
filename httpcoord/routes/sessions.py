"""``/v1/sessions``: ZooKeeper sessions as HTTP leases.

Opening and closing are txns (durable, replicated); a heartbeat only moves
the deadline on the expiry authority, so it stays cheap.
"""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from httpcoord.errors import BadArguments, SessionExpired, Unavailable
from httpcoord.routes.expect import expect_body_within
from httpcoord.routes.keys import CONFIG, NODE
from httpcoord.routes.models import SessionRequest
from httpcoord.routes.params import query, read_body
from httpcoord.routes.reads import CONSISTENCY, read_barrier
from httpcoord.routes.render import json_response
from httpcoord.tree.txn import CloseSessionOp, OpenSessionOp

routes = web.RouteTableDef()

SESSION_HEADER = "X-Coord-Session"
_SESSION_BODY_BYTES_MAX = 4096
_NO_PARAMS = frozenset[str]()
_READ_PARAMS = frozenset({CONSISTENCY})
_KEEPALIVE_MESSAGE_BYTES_MAX = 1024
WS_SESSION_EXPIRED = 4404  # a private-use WebSocket close code: the session is gone
# session id -> its keepalive sockets -> the handler task serving each
KeepaliveSockets = dict[str, dict[web.WebSocketResponse, "asyncio.Task[object]"]]
KEEPALIVES = web.AppKey("keepalive_sockets", KeepaliveSockets)
SESSION_GONE = "session closed"  # the cancel message end_keepalives sends
SERVER_STOPPING = "server stopping"  # ... and stop_keepalives


async def session_of(request: web.Request) -> str:
    """The session an ephemeral create names (and keeps alive)."""
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise BadArguments(f"an ephemeral node needs a session: send the {SESSION_HEADER} header")
    # Any use of a session is a sign of life, as in ZooKeeper; an unknown
    # one is refused here and again, authoritatively, when the txn applies.
    await heartbeat_known(request, session_id)
    return session_id


async def heartbeat_known(request: web.Request, session_id: str) -> int:
    """A heartbeat (its ttl). A session this node has not seen is looked for
    again at a linearizable point before the answer is SessionExpired: a
    node behind may not have applied its open yet, and a client told
    SessionExpired gives its session up."""
    node = request.app[NODE]
    try:
        return node.heartbeat(session_id)
    except SessionExpired:
        if node.session(session_id) is not None:
            raise  # known here and being expired: gone
        await node.barrier(linearizable=True)
        return node.heartbeat(session_id)


def new_session_id() -> str:
    """128 random bits: one id tells nothing about another."""
    return secrets.token_hex(16)


@routes.post("/v1/sessions", expect_handler=expect_body_within(lambda _: _SESSION_BODY_BYTES_MAX))
async def open_session(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    query(request, _NO_PARAMS)
    raw = await read_body(request, _SESSION_BODY_BYTES_MAX)
    try:
        body = SessionRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise BadArguments(
            'expected {"ttl_ms": <non-negative integer>}',
            errors=[{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()],
        ) from None
    ttl_ms = min(max(body.ttl_ms, limits.session_ttl_min_ms), limits.session_ttl_max_ms)
    session_id = new_session_id()
    txn = await request.app[NODE].propose((OpenSessionOp(session_id, ttl_ms),))
    response = json_response({"id": session_id, "ttl_ms": ttl_ms, "zxid": txn.zxid}, 201, txn.zxid)
    response.headers["Location"] = f"/v1/sessions/{session_id}"
    return response


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    await read_barrier(request, query(request, _READ_PARAMS))
    items = [
        {"id": s.id, "ttl_ms": s.ttl_ms, "ephemeral_count": len(s.ephemerals)}
        for s in sorted(request.app[NODE].all_sessions(), key=lambda s: s.id)
    ]
    return json_response({"sessions": items})


@routes.get("/v1/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    await read_barrier(request, query(request, _READ_PARAMS))
    node = request.app[NODE]
    session_id = request.match_info["id"]
    session = node.session(session_id)
    if session is None:
        raise SessionExpired(session=session_id)
    return json_response(
        {
            "id": session.id,
            "ttl_ms": session.ttl_ms,
            "expires_in_ms": node.session_expires_in_ms(session.id),
            "ephemerals": sorted(session.ephemerals),
        }
    )


@routes.post("/v1/sessions/{id}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    query(request, _NO_PARAMS)
    session_id = request.match_info["id"]
    ttl_ms = await heartbeat_known(request, session_id)
    return json_response({"id": session_id, "ttl_ms": ttl_ms})


@routes.get("/v1/sessions/{id}/keepalive")
async def keepalive(request: web.Request) -> web.StreamResponse:
    """A WebSocket on which every message the client sends is a heartbeat.

    An HTTP request per heartbeat costs the server ~70 us, almost all of it
    aiohttp's per-request work; a WebSocket frame costs a fraction of that,
    so 10,000 sessions beating every ttl/3 stay cheap. The server sends
    nothing while the session lives; when the session is gone (expired,
    closed elsewhere) it closes the socket with code 4404 in the same turn
    of the loop, so the client learns of the loss at once."""
    query(request, _NO_PARAMS)
    node = request.app[NODE]
    session_id = request.match_info["id"]
    await heartbeat_known(request, session_id)  # unknown or expired: 404 before the upgrade
    ws = web.WebSocketResponse(max_msg_size=_KEEPALIVE_MESSAGE_BYTES_MAX)
    if not ws.can_prepare(request).ok:
        raise BadArguments("expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
    await ws.prepare(request)
    sockets = request.app[KEEPALIVES]
    peers = sockets.setdefault(session_id, {})
    task = asyncio.current_task()
    assert task is not None
    peers[ws] = task
    try:
        # No timeout per frame (that was most of a frame's cost): when the
        # session closes, however it happens, end_keepalives cancels this
        # handler, which then closes the socket itself. Closing it from
        # another task while this one waits in receive() tears the
        # connection down without the close handshake (the client may see
        # a reset instead of code 4404).
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            node.heartbeat(session_id)
    except SessionExpired:
        await ws.close(code=WS_SESSION_EXPIRED, message=b"SessionExpired")
    except Unavailable:
        # This node lost its leader: the session may well live on, but not
        # through here. "Try again later" tells the client to move.
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"Unavailable")
    except asyncio.CancelledError as cancelled:
        if cancelled.args == (SESSION_GONE,):
            task.uncancel()
            await ws.close(code=WS_SESSION_EXPIRED, message=b"SessionExpired")
        elif cancelled.args == (SERVER_STOPPING,):
            # The session lives on (it gets its full ttl after the restart):
            # "going away" tells the client to reconnect, not to start over.
            task.uncancel()
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        else:
            raise  # the client went away
    finally:
        peers.pop(ws, None)
        if not peers and sockets.get(session_id) is peers:
            del sockets[session_id]
    return ws


def stop_keepalives(app: web.Application) -> None:
    """Shutdown: every keepalive handler closes its socket with 1001 now,
    rather than hold the shutdown until its timeout."""
    for peers in app[KEEPALIVES].values():
        for task in peers.values():
            task.cancel(SERVER_STOPPING)


def end_keepalives(app: web.Application, session_id: str) -> None:
    """The session is closed: its keepalive handlers close their sockets
    with code 4404."""
    for task in app[KEEPALIVES].get(session_id, {}).values():
        task.cancel(SESSION_GONE)


@routes.delete("/v1/sessions/{id}")
async def close_session(request: web.Request) -> web.Response:
    query(request, _NO_PARAMS)
    session_id = request.match_info["id"]
    node = request.app[NODE]
    if node.session(session_id) is None:
        # Refused here so an unknown id costs no log entry (the txn checks
        # again), once a linearizable point shows it is not merely unseen.
        await node.barrier(linearizable=True)
        if node.session(session_id) is None:
            raise SessionExpired(session=session_id)
    txn = await node.propose((CloseSessionOp(session_id),))
    deleted = list(txn.results[0].deleted)
    return json_response({"id": session_id, "zxid": txn.zxid, "deleted": deleted}, 200, txn.zxid)
