"""``/v1/nodes/{path}``: read, create, set and delete one znode."""

from __future__ import annotations

import heapq
from collections.abc import Collection
from urllib.parse import quote

from aiohttp import web
from multidict import MultiMapping

from httpcoord.config import Limits
from httpcoord.errors import BadArguments
from httpcoord.routes.expect import expect_body_within
from httpcoord.routes.keys import CONFIG, NODE, READS
from httpcoord.routes.params import (
    flag,
    integer,
    path_length_max,
    query,
    read_body,
    version,
    znode_path,
)
from httpcoord.routes.reads import CONSISTENCY, read_barrier
from httpcoord.routes.render import encode_data, json_response, stat_headers
from httpcoord.routes.sessions import session_of
from httpcoord.tree.tree import TTL_MS_MAX, check_node_kind
from httpcoord.tree.txn import CreateOp, DeleteOp, SetDataOp

routes = web.RouteTableDef()

# [\s\S] rather than ".": a %0A in a path must reach the validator (400), not miss the route.
NODE_URL = r"/v1/nodes{path:(/[\s\S]*)?}"

_GET_PARAMS = frozenset({"children", "limit", "after", "raw", CONSISTENCY})
_HEAD_PARAMS = frozenset({CONSISTENCY})
_CREATE_PARAMS = frozenset({"sequential", "parents", "ephemeral", "container", "ttl_ms"})
_SET_PARAMS = frozenset({"version"})
_DELETE_PARAMS = frozenset({"version", "recursive"})
_EXPECT_DATA = expect_body_within(lambda limits: limits.data_bytes_max)


@routes.get(NODE_URL, allow_head=False)
async def get_node(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    q = query(request, _GET_PARAMS)
    path = znode_path(request, max_length=limits.path_length_max)
    await read_barrier(request, q)
    node = request.app[READS].get(path)
    stat = node.stat()
    if flag(q, "raw"):
        return web.Response(
            body=node.data, content_type="application/octet-stream", headers=stat_headers(stat)
        )
    data, encoding = encode_data(node.data)
    body: dict[str, object] = {"path": path, "data": data, "encoding": encoding, "stat": stat}
    if flag(q, "children"):
        body["children"], following = children_page(node.children, q, limits)
        if following is not None:
            body["children_next"] = following  # the after of the next page
    elif "limit" in q or "after" in q:
        raise BadArguments("limit and after page the children: they need children=true")
    return json_response(body)


def children_page(
    names: Collection[str], q: MultiMapping[str], limits: Limits
) -> tuple[list[str], str | None]:
    """The child names after ``after``, at most ``limit`` of them (sorted, as
    ZooKeeper's getChildren is not, so pages and diffs are stable), and the
    ``after`` of the next page: None when this one reaches the end."""
    page_max = limits.children_page_max
    limit = integer(q, "limit", 1, page_max) or page_max
    after = q.get("after")
    # The smallest limit + 1: one more says whether another page follows.
    page = heapq.nsmallest(limit + 1, names if after is None else (n for n in names if n > after))
    if len(page) <= limit:
        return page, None
    return page[:limit], page[limit - 1]


@routes.head(NODE_URL)
async def head_node(request: web.Request) -> web.Response:
    q = query(request, _HEAD_PARAMS)
    path = znode_path(request, max_length=request.app[CONFIG].limits.path_length_max)
    await read_barrier(request, q)
    stat = request.app[READS].get(path).stat()
    return web.Response(headers=stat_headers(stat))


@routes.post(NODE_URL, expect_handler=_EXPECT_DATA)
async def create_node(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    q = query(request, _CREATE_PARAMS)
    sequential = flag(q, "sequential")
    path = znode_path(
        request, sequential=sequential, max_length=path_length_max(limits, sequential)
    )
    ephemeral, container = flag(q, "ephemeral"), flag(q, "container")
    ttl_ms = integer(q, "ttl_ms", 1, TTL_MS_MAX) or 0
    check_node_kind(path, ephemeral, container, ttl_ms)
    owner = await session_of(request) if ephemeral else ""
    data = await read_body(request, limits.data_bytes_max)
    op = CreateOp(path, data, sequential, flag(q, "parents"), owner, container, ttl_ms)
    txn = await request.app[NODE].propose((op,))
    result = txn.results[0]
    response = json_response(
        {"path": result.path, "zxid": txn.zxid, "stat": result.stat}, 201, txn.zxid
    )
    response.headers["Location"] = "/v1/nodes" + quote(result.path)
    return response


@routes.put(NODE_URL, expect_handler=_EXPECT_DATA)
async def set_node(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    q = query(request, _SET_PARAMS)
    path = znode_path(request, max_length=limits.path_length_max)
    expected = version(q)
    data = await read_body(request, limits.data_bytes_max)
    # Without a version PUT is an upsert; with one it is ZooKeeper's setData.
    op = SetDataOp(path, data, expected, upsert="version" not in q)
    txn = await request.app[NODE].propose((op,))
    result = txn.results[0]
    body = {"path": path, "zxid": txn.zxid, "stat": result.stat}
    return json_response(body, 201 if result.created else 200, txn.zxid)


@routes.delete(NODE_URL)
async def delete_node(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    q = query(request, _DELETE_PARAMS)
    path = znode_path(request, max_length=limits.path_length_max)
    op = DeleteOp(path, version(q), recursive=flag(q, "recursive"))
    txn = await request.app[NODE].propose((op,))
    return json_response({"path": path, "zxid": txn.zxid}, 200, txn.zxid)
