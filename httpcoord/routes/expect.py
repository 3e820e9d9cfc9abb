"""``Expect: 100-continue`` for routes that take a body.

aiohttp's default answers "100 Continue" to every such request, so a client
that asks first whether it may send 100 MiB is told yes and then refused
after sending it all. A route's handler here answers 413 at once when the
declared Content-Length is over the route's limit. It runs before the
middleware, so it renders the problem and stamps ``X-Coord-Zxid`` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, web

from httpcoord.config import Limits
from httpcoord.errors import PayloadTooLarge
from httpcoord.routes.keys import CONFIG, READS, ZXID_HEADER
from httpcoord.routes.problems import problem_response

ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def expect_body_within(body_max: Callable[[Limits], int]) -> ExpectHandler:
    """An ``expect_handler`` refusing a declared body over ``body_max(limits)``."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        limit = body_max(request.app[CONFIG].limits)
        declared = request.content_length
        if declared is not None and declared > limit:
            exc = PayloadTooLarge(
                f"body of {declared} bytes exceeds the limit of {limit}", limit=limit
            )
            response = problem_response(exc)
            response.headers[ZXID_HEADER] = str(request.app[READS].zxid)
            response.force_close()  # the declared body is never read
            return response
        # What aiohttp does by default (its helper is private): go ahead.
        if request.version == HttpVersion11:
            if request.headers.get("Expect", "").lower() != "100-continue":
                raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the response proper has not started
        return None

    return expect
