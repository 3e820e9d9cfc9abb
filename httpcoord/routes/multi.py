"""``POST /v1/multi``: an atomic list of create/set/delete/check ops."""

from __future__ import annotations

import base64

import orjson
from aiohttp import web
from pydantic import ValidationError

from httpcoord.config import Limits
from httpcoord.errors import BadArguments, CoordError, MultiFailed, PayloadTooLarge
from httpcoord.routes.expect import expect_body_within
from httpcoord.routes.keys import CONFIG, NODE
from httpcoord.routes.models import CheckOpIn, CreateOpIn, DeleteOpIn, MultiRequest, SetOpIn
from httpcoord.routes.params import path_length_max, query, read_body
from httpcoord.routes.render import json_response
from httpcoord.routes.sessions import session_of
from httpcoord.tree.paths import validate_path
from httpcoord.tree.tree import check_node_kind
from httpcoord.tree.txn import CheckOp, CreateOp, DeleteOp, Op, SetDataOp

routes = web.RouteTableDef()


@routes.post(
    "/v1/multi", expect_handler=expect_body_within(lambda limits: limits.request_bytes_max)
)
async def multi(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    query(request, frozenset())
    raw = await read_body(request, limits.request_bytes_max)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadArguments(f"body is not valid JSON: {exc}") from None
    # Count before validating, so a huge op list costs no model building.
    ops_in = doc.get("ops") if isinstance(doc, dict) else None
    if isinstance(ops_in, list) and len(ops_in) > limits.multi_ops_max:
        raise BadArguments(f"a multi holds at most {limits.multi_ops_max} ops")
    try:
        request_model = MultiRequest.model_validate(doc)
    except ValidationError as exc:
        raise BadArguments("invalid multi request", errors=_errors(exc)) from None
    needs_session = any(isinstance(o, CreateOpIn) and o.ephemeral for o in request_model.ops)
    owner = await session_of(request) if needs_session else ""
    ops = _to_ops(request_model, limits, owner)
    node = request.app[NODE]
    if not ops:
        # Nothing to do: answer at once, take no zxid.
        return json_response({"zxid": node.zxid, "results": []}, zxid=node.zxid)
    txn = await node.propose(ops, multi=True)
    results = []
    for r in txn.results:
        item: dict[str, object] = {"op": r.op, "path": r.path}
        if r.stat is not None:
            item["stat"] = r.stat
        results.append(item)
    return json_response({"zxid": txn.zxid, "results": results}, zxid=txn.zxid)


def _to_ops(request_model: MultiRequest, limits: Limits, owner: str) -> tuple[Op, ...]:
    """Edge checks per op; a refusal names the op, as a failed multi does."""
    ops: list[Op] = []
    count = len(request_model.ops)
    for index, item in enumerate(request_model.ops):
        try:
            ops.append(_to_op(item, limits, owner))
        except CoordError as exc:
            raise MultiFailed(index, exc, count) from None
    return tuple(ops)


def _to_op(item: CreateOpIn | SetOpIn | DeleteOpIn | CheckOpIn, limits: Limits, owner: str) -> Op:
    sequential = isinstance(item, CreateOpIn) and item.sequential
    path = validate_path(
        item.path, sequential=sequential, max_length=path_length_max(limits, sequential)
    )
    if isinstance(item, CreateOpIn):
        check_node_kind(path, item.ephemeral, item.container, item.ttl_ms)
        data = _data(item.data, item.encoding, limits)
        return CreateOp(
            path,
            data,
            sequential,
            item.parents,
            owner if item.ephemeral else "",
            item.container,
            item.ttl_ms,
        )
    if isinstance(item, SetOpIn):
        return SetDataOp(path, _data(item.data, item.encoding, limits), item.version)
    if isinstance(item, DeleteOpIn):
        return DeleteOp(path, item.version, item.recursive)
    return CheckOp(path, item.version)


def _data(text: str, encoding: str, limits: Limits) -> bytes:
    if encoding == "base64":
        try:
            data = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise BadArguments("data is not valid base64") from None
    else:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadArguments("data is not valid UTF-8 text; use base64") from None
    if len(data) > limits.data_bytes_max:
        raise PayloadTooLarge(
            f"data of {len(data)} bytes exceeds the limit of {limits.data_bytes_max}"
        )
    return data


def _errors(exc: ValidationError) -> list[dict[str, object]]:
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:20]]
