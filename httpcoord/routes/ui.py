"""``GET /ui``: the web UI, static files served from the package's ``ui``
directory.

The files are read once at import into a fixed table keyed by file name, so
a request can only ever name one of them: nothing from the URL reaches the
file system, and there is no path to traverse. The pages are plain ES
modules that talk to the same origin's API; the Content-Security-Policy
allows nothing but this origin and no inline script.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

from httpcoord.errors import NotFound

routes = web.RouteTableDef()

_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Only this origin, no inline script or style attribute injection, no
# framing by other sites, no plugins; the UI's own fetches and EventSource
# streams go to 'self'.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _load() -> dict[str, tuple[bytes, str]]:
    """Every served file of the ``ui`` directory: name -> (body, type)."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("httpcoord").joinpath("ui").iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if entry.is_file() and suffix in _CONTENT_TYPES:
            files[name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    return files


FILES: Final = _load()


def _serve(name: str) -> web.Response:
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"no UI file named {name!r}")
    body, content_type = found
    return web.Response(
        body=body,
        headers={
            "Content-Type": content_type,
            # Revalidate every time: a node upgraded in place serves new files.
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@routes.get("/ui")
async def ui_root(request: web.Request) -> web.Response:
    """The UI lives under ``/ui/`` so that its relative module URLs resolve."""
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def ui_index(request: web.Request) -> web.Response:
    return _serve("index.html")


@routes.get("/ui/{name}")
async def ui_file(request: web.Request) -> web.Response:
    return _serve(request.match_info["name"])
