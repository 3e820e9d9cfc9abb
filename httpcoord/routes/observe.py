"""What every request leaves behind: its id (``X-Request-Id``, in the log
lines written while it is handled and in its answer), its count and latency
per route and status in the metrics, the figures ZooKeeper's ``mntr`` gives
(``/v1/stats``), and, with ``--access-log``, one log line.

One middleware does it all, outermost, so it sees the final status of every
answer, problems included; its cost is a few microseconds per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram

from httpcoord.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id

_REQUEST_ID_KEY = "httpcoord_request_id"
# Long-polls and streams last up to minutes: the upper buckets hold them.
_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
)  # fmt: skip

_CLIENT_WENT_AWAY = 499  # the connection closed before the answer (nginx's code)

access_log = logging.getLogger("httpcoord.access")


class RequestMetrics:
    """Requests by route and status, their latency, and mntr's running figures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "httpcoord_http_requests",
            "requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "httpcoord_http_request_seconds",
            "time from a request's arrival to the end of its answer (streams: their life)",
            ["route", "method"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        # mntr: since the start, over every request (streams included).
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def observe(self, route: str, method: str, status: int, took_s: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.seconds.labels(route, method).observe(took_s)
        self.count += 1
        self.total_s += took_s
        self.min_s = min(self.min_s, took_s)
        self.max_s = max(self.max_s, took_s)


REQUEST_METRICS = web.AppKey("request_metrics", RequestMetrics)


def install(app: web.Application, registry: CollectorRegistry, log_requests: bool) -> None:
    """Count, time and identify every request of ``app`` (outermost middleware)."""
    metrics = RequestMetrics(registry)
    app[REQUEST_METRICS] = metrics

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        request[_REQUEST_ID_KEY] = rid
        token = REQUEST_ID.set(rid)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = _CLIENT_WENT_AWAY
            raise
        finally:
            took_s = time.perf_counter() - started
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.observe(route, request.method, status, took_s)
            if log_requests:
                access_log.info(
                    "%s %s %d %.1fms %s",
                    request.method,
                    request.path_qs,
                    status,
                    took_s * 1000,
                    rid,
                )
            REQUEST_ID.reset(token)

    async def answer_id(request: web.Request, response: web.StreamResponse) -> None:
        rid = request.get(_REQUEST_ID_KEY)
        if rid is not None:
            response.headers[REQUEST_ID_HEADER] = rid

    app.middlewares.insert(0, observe)
    app.on_response_prepare.append(answer_id)
