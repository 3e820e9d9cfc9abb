"""What every request leaves behind: its id (``X-Request-Id``, in the log
lines written while it is handled and in its answer: see
``problems.node_headers``), its count and latency per route and status in
the metrics, the figures ZooKeeper's ``mntr`` gives (``/v1/stats``), and,
with ``--access-log``, one log line.

One middleware does it all, outermost, so it sees the final status of every
answer, problems included. The request path only adds to plain counters (a
prometheus-client Counter and Histogram cost about 35 µs a request here,
half again the CPU of a read); the metric families are built from them at
scrape time.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from httpcoord.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id

# Long-polls and streams last up to minutes: the upper buckets hold them.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
)  # fmt: skip
_CLIENT_WENT_AWAY = 499  # the connection closed before the answer (nginx's code)

access_log = logging.getLogger("httpcoord.access")


class RequestMetrics(Collector):
    """Requests by route, method and status, their latency by route and
    method, and mntr's running figures."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        # Per (route, method): a count per bucket (the last: above them all), the sum.
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = {}
        # mntr: since the start, over every request (streams included).
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def observe(self, route: str, method: str, status: int, took_s: float) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        timed = (route, method)
        buckets = self.buckets.get(timed)
        if buckets is None:
            buckets = self.buckets[timed] = [0] * (len(SECONDS_BUCKETS) + 1)
            self.sums[timed] = 0.0
        buckets[bisect.bisect_left(SECONDS_BUCKETS, took_s)] += 1
        self.sums[timed] += took_s
        self.count += 1
        self.total_s += took_s
        self.min_s = min(self.min_s, took_s)
        self.max_s = max(self.max_s, took_s)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "httpcoord_http_requests",
            "requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(self.counts.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        seconds = HistogramMetricFamily(
            "httpcoord_http_request_seconds",
            "time from a request's arrival to the end of its answer (streams: their life)",
            labels=["route", "method"],
        )
        for (route, method), counts in sorted(self.buckets.items()):
            cumulative, running = [], 0
            for bound, n in zip((*SECONDS_BUCKETS, math.inf), counts, strict=True):
                running += n
                cumulative.append((_bound_label(bound), running))
            seconds.add_metric([route, method], cumulative, self.sums[(route, method)])
        yield seconds


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


REQUEST_METRICS = web.AppKey("request_metrics", RequestMetrics)


def install(app: web.Application, registry: CollectorRegistry, log_requests: bool) -> None:
    """Count, time and identify every request of ``app`` (outermost middleware)."""
    metrics = RequestMetrics()
    registry.register(metrics)
    app[REQUEST_METRICS] = metrics

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
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

    app.middlewares.insert(0, observe)
