"""``GET /v1/cluster``: every member, its role, and how far it has got."""

from __future__ import annotations

from aiohttp import web

from httpcoord.routes.keys import NODE
from httpcoord.routes.models import ClusterView
from httpcoord.routes.params import query
from httpcoord.routes.render import json_response

routes = web.RouteTableDef()

_NO_PARAMS = frozenset[str]()


@routes.get("/v1/cluster")
async def cluster(request: web.Request) -> web.Response:
    """Members (id, client and peer address, voter or learner, reachable,
    role, term, commit and applied index, zxid, digest of the tree), the
    leader and the term, as this node sees them: members at one zxid must
    show one digest, so divergence shows from outside."""
    query(request, _NO_PARAMS)
    status = await request.app[NODE].cluster_status()
    # Through the model, so an unreachable member's unknown values are left
    # out rather than sent as null.
    view = ClusterView.model_validate(status)
    return json_response(view.model_dump(exclude_none=True))
