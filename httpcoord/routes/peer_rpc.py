"""The node's own routes on the peer listener: forwarded writes, session
pings and status. The transport's middleware has already checked that the
caller is a member of this cluster; these handlers stay thin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from httpcoord.cluster.forward import PROPOSE_PATH
from httpcoord.cluster.node import STATUS_PATH, TOUCH_PATH, Node
from httpcoord.cluster.transport import peer_sender
from httpcoord.errors import CoordError
from httpcoord.logs import REQUEST_ID_HEADER
from httpcoord.routes.problems import problem_response

_JSON = "application/json"

Answer = Callable[[bytes], Awaitable[bytes]]


def routes(node: Node) -> list[web.RouteDef]:
    async def touch(body: bytes) -> bytes:
        return node.handle_touch(body)

    async def status(body: bytes) -> bytes:
        return node.handle_status()

    async def propose(request: web.Request) -> web.Response:
        # The ids of the requests the writes came in, one per txn (logs.py).
        ids = request.headers.get(REQUEST_ID_HEADER, "")
        request_ids = [i for i in ids.split(",") if i != "-"] if ids else []
        sender = peer_sender(request)
        return await _handler(lambda body: node.handle_propose(body, sender, request_ids))(request)

    return [
        web.post(PROPOSE_PATH, propose),
        web.post(TOUCH_PATH, _handler(touch)),
        web.post(STATUS_PATH, _handler(status)),
    ]


def _handler(answer: Answer) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await answer(await request.read())
        except CoordError as exc:
            # The same problem+json as the client API, for the forwarder to read.
            return problem_response(exc)
        return web.Response(body=body, content_type=_JSON)

    return handle
