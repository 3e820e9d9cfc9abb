"""How fresh a read must be: ``?consistency=`` and ``X-Coord-Min-Zxid``.

Every read route passes through ``read_barrier`` before it looks at the
node's data, so the rules live in one place (``Node.barrier``):

- default (``sequential``): the local tree as it is, like a ZooKeeper read;
- ``consistency=linearizable``: ReadIndex: everything committed when the
  read arrived is applied here first (503 ``Unavailable`` without a majority);
- ``X-Coord-Min-Zxid: N``: wait until this node has applied zxid N (504
  ``ZxidNotReached`` after the request timeout): read your own writes after
  switching nodes, like ZooKeeper's client-side last zxid.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from httpcoord.errors import BadArguments
from httpcoord.routes.keys import READS
from httpcoord.routes.params import parse_int

CONSISTENCY = "consistency"
MIN_ZXID_HEADER = "X-Coord-Min-Zxid"
_LEVELS = frozenset({"sequential", "linearizable"})


async def read_barrier(request: web.Request, q: MultiMapping[str]) -> None:
    level = q.get(CONSISTENCY, "sequential")
    if level not in _LEVELS:
        raise BadArguments(f"consistency must be one of {sorted(_LEVELS)}, got {level!r}")
    min_zxid = min_zxid_of(request)
    linearizable = level == "linearizable"
    if linearizable or min_zxid is not None:
        await request.app[READS].barrier(linearizable, min_zxid)


def min_zxid_of(request: web.Request) -> int | None:
    raw = request.headers.get(MIN_ZXID_HEADER)
    if raw is None or raw == "":
        return None
    value = parse_int(raw, MIN_ZXID_HEADER)
    if value < 0:
        raise BadArguments(f"{MIN_ZXID_HEADER} must not be negative, got {value}")
    return value
