"""JSON shapes of nodes and stats, built as plain dicts for orjson (the hot
path: orjson serialises the ``Stat`` dataclass itself); ``routes/models.py``
describes the same shapes for the spec."""

from __future__ import annotations

import base64

import orjson
from aiohttp import web

from httpcoord.routes.keys import ZXID_HEADER
from httpcoord.tree.stat import STAT_FIELDS, Stat

UTF8 = "utf-8"
BASE64 = "base64"


def encode_data(data: bytes) -> tuple[str, str]:
    """Node data for JSON: text when the bytes are UTF-8, else base64."""
    try:
        return data.decode("utf-8"), UTF8
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), BASE64


def stat_headers(stat: Stat) -> dict[str, str]:
    """The stat as ``X-Coord-Stat-*`` headers (HEAD and ``?raw=true``)."""
    return {
        "X-Coord-Stat-" + name.replace("_", "-").title(): str(getattr(stat, name))
        for name in STAT_FIELDS
    }


def json_response(body: object, status: int = 200, zxid: int | None = None) -> web.Response:
    """A JSON answer; a write passes its own zxid for ``X-Coord-Zxid`` (the
    middleware stamps every other answer with the node's applied zxid)."""
    response = web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
    if zxid is not None:
        response.headers[ZXID_HEADER] = str(zxid)
    return response
