"""Cross-origin requests from the browser origins an operator allowed
(``--cors-origin``), for a web page served elsewhere that talks to the API:
fetch, and EventSource for watches.

An allowed origin gets ``Access-Control-Allow-Origin`` (its own origin,
echoed, with ``Vary: Origin``) on every answer, streams included, and every
``X-Coord-*`` header the answer carries is exposed to its script. A preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) from it is answered 204
with the methods and the request headers it asked for, cached 10 minutes.
A preflight from any other origin is refused (403 ``OriginNotAllowed``);
its simple requests are answered as before, with no CORS header, so the
browser keeps the answer from the page. No credentials: the API has no
cookies. ``*`` allows every origin.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from httpcoord.errors import OriginNotAllowed
from httpcoord.logs import REQUEST_ID_HEADER
from httpcoord.routes.problems import problems_middleware

ANY_ORIGIN = "*"
_METHODS = "GET, HEAD, POST, PUT, DELETE"
_PREFLIGHT_MAX_AGE_S = "600"
_EXPOSED_ALSO = ("Retry-After", "Location", REQUEST_ID_HEADER)  # beside every X-Coord-* header


def check_origin(value: str) -> str:
    """``*``, or an origin as a browser sends it: scheme://host[:port]."""
    if value == ANY_ORIGIN:
        return value
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host or value != str(url.origin()):
        raise ValueError("expected scheme://host[:port] with no path, as a browser sends it, or *")
    return value


def install(app: web.Application, origins: tuple[str, ...]) -> None:
    """Answer preflights and add the CORS headers for ``origins`` (nothing
    when there are none)."""
    if not origins:
        return
    allowed = frozenset(origins)

    def allows(origin: str | None) -> bool:
        return origin is not None and (ANY_ORIGIN in allowed or origin in allowed)

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if not allows(origin):
            raise OriginNotAllowed(
                f"origin {origin!r} is not allowed here (--cors-origin)", origin=origin
            )
        headers = {
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE_S,
        }
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return web.Response(status=204, headers=headers)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        response.headers.add("Vary", "Origin")  # caches keep one answer per origin
        if not allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        exposed = [h for h in response.headers if h.lower().startswith("x-coord-")]
        exposed += [h for h in _EXPOSED_ALSO if h in response.headers]
        if exposed:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(exposed)

    # Inside the problem middleware, which renders its refusal.
    app.middlewares.insert(app.middlewares.index(problems_middleware) + 1, preflight)
    app.on_response_prepare.append(add_headers)
