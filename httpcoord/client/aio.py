"""The asyncio client: every route of the API, over several endpoints.

Failover. A request goes to the current endpoint; when that one cannot be
reached, or answers that nothing was done and another node may do it (503
``Unavailable``, 507 ``DiskFull``, 429 ``TooManyRequests``, and for reads 504
``ZxidNotReached``), the client moves to the next endpoint and tries again,
with exponential backoff and full jitter once every endpoint has been tried,
within ``RetryPolicy``. A write is retried only where retrying is safe: when
its connection never opened, or the server said it did nothing. A write
whose connection broke after it was sent, or that the server answered 503
``OutcomeUnknown``, raises ``OutcomeUnknown``: it may or may not have been
applied, and only the caller knows whether doing it twice is harmless.

Sequential consistency across nodes. The client keeps the highest zxid any
answer carried (``last_zxid``) and sends it as ``X-Coord-Min-Zxid`` on every
read, so after moving to another node it never reads data older than what
it has already seen or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from httpcoord.client.errors import error_from_problem
from httpcoord.client.models import (
    MultiResult,
    Node,
    Op,
    OpResult,
    SessionInfo,
    Stat,
    WriteResult,
    decode_data,
)
from httpcoord.errors import (
    CoordError,
    DiskFull,
    NoNode,
    OutcomeUnknown,
    SessionExpired,
    TooManyRequests,
    Unavailable,
    ZxidNotReached,
)

if TYPE_CHECKING:
    from httpcoord.client.models import Event, Resync
    from httpcoord.client.session import Session

ZXID_HEADER = "X-Coord-Zxid"
MIN_ZXID_HEADER = "X-Coord-Min-Zxid"
SESSION_HEADER = "X-Coord-Session"

# Answers that mean "nothing was done here; another node may do it".
_NOTHING_DONE = (Unavailable, DiskFull, TooManyRequests)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Enough to ride out a leader election: with three endpoints, ten
    # rounds whose pauses add up to about 1.5 s on average.
    attempts: int = 30  # tries of one request, over all endpoints
    backoff_ms_min: int = 20  # first pause, once every endpoint failed
    backoff_ms_max: int = 500  # the pause doubles up to this

    def pause_s(self, round_no: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, min * 2^round)]."""
        cap = min(self.backoff_ms_max, self.backoff_ms_min * (1 << min(round_no, 16)))
        return rng.uniform(0, cap) / 1000


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"127.0.0.1:8181,127.0.0.1:8281"`` or a list; a scheme is optional."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    urls = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        url = item if "://" in item else f"http://{item}"
        urls.append(url.rstrip("/"))
    if not urls:
        raise ValueError("no endpoint given")
    return urls


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """An asyncio client of one httpcoord cluster.

    ``async with Client("127.0.0.1:8181,127.0.0.1:8281") as c: ...``; or call
    ``close()`` when done. One client serves any number of concurrent tasks.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        shuffle: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.request_timeout_s = request_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.last_zxid = 0
        # Clients configured alike spread over the nodes, unless told to
        # start at the first endpoint.
        self._current = self.rng.randrange(len(self.endpoints)) if shuffle else 0
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self.live_sessions: set[Session] = set()  # open ones, closed with the client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the sessions opened through this client (their ephemerals
        go), then the connections. The client cannot be used after."""
        for session in list(self.live_sessions):
            with contextlib.suppress(CoordError):
                await session.close()
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- plumbing (sessions, watches and recipes use it too) ---------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession()
            # aiohttp resends a PUT or DELETE once, silently, when a kept-alive
            # connection breaks: a write whose outcome is unknown would be
            # applied twice (or come back BadVersion). Retrying is this
            # client's decision alone. No public switch exists for this.
            if hasattr(self._http, "_retry_connection"):
                self._http._retry_connection = False
        return self._http

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def next_endpoint(self) -> str:
        self._current = (self._current + 1) % len(self.endpoints)
        return self.endpoint

    async def fail_over(self, failures: int) -> None:
        """After the ``failures``-th failure in a row: move to the next
        endpoint, and once every endpoint has failed again, pause (the
        retry policy's backoff, longer each round)."""
        self.next_endpoint()
        rounds, rest = divmod(failures, len(self.endpoints))
        if rest == 0:
            await asyncio.sleep(self.retry.pause_s(rounds - 1, self.rng))

    def note_zxid(self, zxid: int) -> None:
        self.last_zxid = max(self.last_zxid, zxid)

    def note_headers(self, headers: Mapping[str, str]) -> None:
        raw = headers.get(ZXID_HEADER)
        if raw is not None and raw.isdigit():
            self.note_zxid(int(raw))

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        read: bool = False,
        idempotent: bool = False,
        op_count: int = 0,
    ) -> Answer:
        """Send one request with failover. ``url`` is the path and is sent
        as it is (percent-encode it first). ``read`` marks a request that
        changes nothing, so that any failure may be retried; ``idempotent``
        a write that may be applied twice with the effect of once (an
        upsert), retried after a broken connection too."""
        last_error: CoordError | None = None
        for attempt in range(1, max(1, self.retry.attempts) + 1):
            base = self.endpoint
            target = URL(base + url, encoded=True)  # encoded once, by the caller
            sent_headers = dict(headers or {})
            if read and self.last_zxid:
                sent_headers[MIN_ZXID_HEADER] = str(self.last_zxid)
            try:
                async with self.http.request(
                    method,
                    target,
                    params=params or None,
                    data=body,
                    headers=sent_headers,
                    timeout=self._timeout,
                ) as resp:
                    answer = Answer(resp.status, resp.headers, await resp.read())
            except aiohttp.ClientConnectorError as exc:
                last_error = Unavailable(f"cannot connect to {base}: {exc}", endpoint=base)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not (read or idempotent):
                    raise OutcomeUnknown(
                        f"the connection to {base} failed after the write was sent"
                        f" ({type(exc).__name__}): it may or may not have been applied",
                        endpoint=base,
                    ) from exc
                last_error = Unavailable(f"{base} failed: {type(exc).__name__}", endpoint=base)
            else:
                self.note_headers(answer.headers)
                if answer.status < 400:
                    return answer
                error = error_from_problem(answer.status, answer.body, op_count)
                retry = isinstance(error, _NOTHING_DONE) or (
                    read and isinstance(error, ZxidNotReached)
                )
                if not retry:
                    raise error
                last_error = error
            await self.fail_over(attempt)
        assert last_error is not None
        raise last_error

    # ---- znodes -----------------------------------------------------------------------

    async def get(
        self, path: str, *, children: bool = False, consistency: str | None = None
    ) -> Node:
        """The node's data and stat (and child names); ``NoNode`` if missing.
        ``consistency="linearizable"`` reads through the leader's ReadIndex.
        A node with more children than the server answers at once
        (``--children-page``) is read in pages, each at a zxid no older than
        the one before: children created or deleted between two pages may
        be missing or shown."""
        params = {"children": "true"} if children else {}
        if consistency:
            params["consistency"] = consistency
        answer = await self.request("GET", self._node(path), params=params, read=True)
        body = answer.json()
        names: list[str] | None = body.get("children")
        following = body.get("children_next")
        while names is not None and following is not None:
            page = await self.request(
                "GET", self._node(path), params={**params, "after": following}, read=True
            )
            more = page.json()
            names += more["children"]
            following = more.get("children_next")
        return Node(
            path=body["path"],
            data=decode_data(body),
            stat=Stat.from_json(body["stat"]),
            children=names,
            zxid=int(answer.headers.get(ZXID_HEADER, "0")),
        )

    async def exists(self, path: str) -> Stat | None:
        try:
            return (await self.get(path)).stat
        except NoNode:
            return None

    async def get_children(self, path: str) -> list[str]:
        node = await self.get(path, children=True)
        return node.children or []

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        sequential: bool = False,
        parents: bool = False,
        ephemeral: bool = False,
        container: bool = False,
        ttl_ms: int | None = None,
        session: str | None = None,
    ) -> WriteResult:
        """Create a node; ``ephemeral`` needs ``session`` (an id, or
        ``Session.id``). The result's path is the name a sequential create got."""
        params: dict[str, str] = {}
        for name, on in (
            ("sequential", sequential),
            ("parents", parents),
            ("ephemeral", ephemeral),
            ("container", container),
        ):
            if on:
                params[name] = "true"
        if ttl_ms is not None:
            params["ttl_ms"] = str(ttl_ms)
        headers = {SESSION_HEADER: session} if session else None
        answer = await self.request(
            "POST", self._node(path), params=params, body=data, headers=headers
        )
        return _write_result(answer.json())

    async def set(self, path: str, data: bytes, version: int | None = None) -> WriteResult:
        """Without ``version`` an upsert; with it ZooKeeper's setData
        (``BadVersion`` if the node's version differs)."""
        params = {"version": str(version)} if version is not None else None
        # An upsert applied twice leaves what it leaves once: retried after a
        # broken connection (as after a node's death on a kept-alive one).
        answer = await self.request(
            "PUT", self._node(path), params=params, body=data, idempotent=version is None
        )
        return _write_result(answer.json())

    async def delete(
        self, path: str, version: int | None = None, *, recursive: bool = False
    ) -> WriteResult:
        params: dict[str, str] = {}
        if version is not None:
            params["version"] = str(version)
        if recursive:
            params["recursive"] = "true"
        answer = await self.request("DELETE", self._node(path), params=params)
        return _write_result(answer.json())

    async def multi(self, ops: Sequence[Op], *, session: str | None = None) -> MultiResult:
        """All ops under one zxid, or none (``MultiFailed``, whose ``error``
        is the failing op's and ``failed_op`` its index)."""
        body = orjson.dumps({"ops": [op.to_json() for op in ops]})
        headers = {"Content-Type": "application/json"}
        if session:
            headers[SESSION_HEADER] = session
        answer = await self.request(
            "POST", "/v1/multi", body=body, headers=headers, op_count=len(ops)
        )
        result = answer.json()
        return MultiResult(
            zxid=result["zxid"],
            results=[
                OpResult(
                    op=r["op"],
                    path=r["path"],
                    stat=Stat.from_json(r["stat"]) if r.get("stat") else None,
                )
                for r in result["results"]
            ],
        )

    # ---- sessions ---------------------------------------------------------------------

    async def open_session_id(self, ttl_ms: int) -> tuple[str, int]:
        """Open a bare session (no keepalive): (id, granted ttl_ms). Most
        callers want ``session()`` instead, which keeps it alive."""
        answer = await self.request(
            "POST",
            "/v1/sessions",
            body=orjson.dumps({"ttl_ms": ttl_ms}),
            headers={"Content-Type": "application/json"},
        )
        body = answer.json()
        return body["id"], body["ttl_ms"]

    async def heartbeat(self, session_id: str) -> int:
        """One heartbeat over HTTP; the session's ttl. Safe to retry."""
        answer = await self.request(
            "POST", f"/v1/sessions/{quote(session_id, safe='')}/heartbeat", read=True
        )
        ttl: int = answer.json()["ttl_ms"]
        return ttl

    async def close_session(self, session_id: str) -> list[str]:
        """Close a session; the ephemerals deleted with it. Closing one that
        is already gone is not an error (the result is then empty)."""
        try:
            answer = await self.request("DELETE", f"/v1/sessions/{quote(session_id, safe='')}")
        except SessionExpired:
            return []
        deleted: list[str] = answer.json()["deleted"]
        return deleted

    async def session_info(self, session_id: str) -> SessionInfo:
        answer = await self.request("GET", f"/v1/sessions/{quote(session_id, safe='')}", read=True)
        body = answer.json()
        return SessionInfo(body["id"], body["ttl_ms"], body["expires_in_ms"], body["ephemerals"])

    async def sessions(self) -> list[dict[str, Any]]:
        """Every open session: ``{"id", "ttl_ms", "ephemeral_count"}``, by id."""
        answer = await self.request("GET", "/v1/sessions", read=True)
        listed: list[dict[str, Any]] = answer.json()["sessions"]
        return listed

    async def open_session(self, ttl_ms: int = 10_000) -> Session:
        """Open a session that keeps itself alive until ``close()``."""
        from httpcoord.client.session import Session

        opened_at = time.monotonic()
        session_id, granted = await self.open_session_id(ttl_ms)
        session = Session(self, session_id, granted, opened_at=opened_at)
        session.start()
        return session

    @asynccontextmanager
    async def session(self, ttl_ms: int = 10_000) -> AsyncIterator[Session]:
        """``async with client.session(ttl_ms) as s:`` opens a kept-alive
        session and closes it (deleting its ephemerals) on the way out."""
        session = await self.open_session(ttl_ms)
        try:
            yield session
        finally:
            await session.close()

    # ---- watches and the cluster ------------------------------------------------------

    def watch(
        self,
        path: str,
        *,
        recursive: bool = False,
        since: int | None = None,
        data: bool = False,
    ) -> AsyncGenerator[Event | Resync, None]:
        """``async for item in client.watch("/app", recursive=True)``: see
        ``httpcoord.client.watch``."""
        from httpcoord.client.watch import watch

        return watch(self, path, recursive=recursive, since=since, data=data)

    async def cluster(self) -> dict[str, Any]:
        answer = await self.request("GET", "/v1/cluster", read=True)
        view: dict[str, Any] = answer.json()
        return view

    @staticmethod
    def _node(path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"a znode path is absolute: {path!r}")
        return "/v1/nodes" + quote(path, safe="/")


def _write_result(body: dict[str, Any]) -> WriteResult:
    stat = body.get("stat")
    return WriteResult(body["path"], body["zxid"], Stat.from_json(stat) if stat else None)
