"""The one place errors become HTTP: ``application/problem+json`` (RFC 9457)
with a stable ``code``, and the ``X-Coord-Zxid`` header on every response."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from httpcoord.errors import (
    BadArguments,
    CoordError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from httpcoord.logs import REQUEST_ID, REQUEST_ID_HEADER
from httpcoord.routes.keys import (
    LEADER_HEADER,
    NODE_HEADER,
    READS,
    WORKER_HEADER,
    ZXID_HEADER,
    ReadSource,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# aiohttp's own refusals (no route, wrong method, body over client_max_size).
_HTTP_TO_ERROR: dict[int, type[CoordError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def node_headers(node: ReadSource) -> dict[str, str]:
    """Which node answered and which one leads: a client (or an operator with
    curl) sees where it is without another request; and the request's id."""
    headers = {NODE_HEADER: str(node.node_id)}
    rid = REQUEST_ID.get()
    if rid:
        headers[REQUEST_ID_HEADER] = rid  # set by routes.observe
    if node.worker_id:
        headers[WORKER_HEADER] = str(node.worker_id)
    if node.leader_id:
        headers[LEADER_HEADER] = str(node.leader_id)
    return headers


def problem_response(exc: CoordError) -> web.Response:
    problem = exc.problem()
    try:
        body = orjson.dumps(problem)
    except orjson.JSONEncodeError:
        # A member echoes raw request bytes that are not UTF-8 (a header, say).
        body = orjson.dumps(_printable(problem))
    response = web.Response(
        status=exc.http_status,
        body=body,
        content_type=PROBLEM_JSON,
        # JSON is UTF-8, but clients guess for types other than application/json.
        charset="utf-8",
    )
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _printable(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except CoordError as exc:
        response = problem_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error_type = _HTTP_TO_ERROR.get(exc.status, BadArguments)
        response = problem_response(error_type(exc.reason))
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = problem_response(CoordError())
    if not response.prepared:
        node = request.app[READS]
        headers = response.headers
        if ZXID_HEADER not in headers:
            headers[ZXID_HEADER] = str(node.zxid)
        headers.update(node_headers(node))
    return response
