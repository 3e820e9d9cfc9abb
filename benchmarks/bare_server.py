#!/usr/bin/env python3
"""A bare aiohttp server with httpcoord's two hot routes, answering from a dict.

It measures what the HTTP stack alone costs, so that httpcoord's own cost
can be told apart from it (issue 14). Same stack as ``httpcoord serve``
(aiohttp on uvloop, no access log, handler cancellation on, the same gc
threshold); same routes, status codes, headers and JSON bodies as
httpcoord's ``GET`` and ``PUT /v1/nodes/{path}``, so the same bytes cross
the socket; and nothing else: no validation, middleware, tree, watch hub,
session, consensus or logging.

``--fsync``: a PUT is answered only after an ``fdatasync`` of an append-only
file that holds it. All writes that arrive while no fsync runs share the
next one (group commit, one fsync at a time, in a thread so the loop keeps
serving), like httpcoord's log. ``GET /metrics`` counts writes and fsyncs.

    python benchmarks/bare_server.py --listen 127.0.0.1:8190 [--fsync --data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import uvloop
from aiohttp import web

NODE_URL = r"/v1/nodes{path:(/[\s\S]*)?}"  # httpcoord's route pattern
JSON = "application/json"


class GroupLog:
    """An append-only file; the records queued by one loop turn (and while
    the previous fsync ran) go out in one write and one fdatasync."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.records: list[bytes] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()
        self.writes_total = 0
        self.fsyncs_total = 0

    async def append(self, record: bytes) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.records.append(record)
        self.waiters.append(waiter)
        self.wake.set()
        await waiter

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            records, waiters = self.records, self.waiters
            self.records, self.waiters = [], []
            try:
                await loop.run_in_executor(None, self._save, b"".join(records))
            except OSError as exc:
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            self.writes_total += len(waiters)
            self.fsyncs_total += 1
            for w in waiters:
                if not w.done():  # a cancelled handler (client gone)
                    w.set_result(None)

    def _save(self, blob: bytes) -> None:
        view = memoryview(blob)
        while view:
            view = view[os.write(self.fd, view) :]
        os.fdatasync(self.fd)


@dataclass
class State:
    nodes: dict[str, tuple[bytes, dict[str, int | str]]] = field(default_factory=dict)
    zxid: int = 0
    log: GroupLog | None = None


STATE = web.AppKey("state", State)


def headers(zxid: int) -> dict[str, str]:
    # httpcoord's middleware adds these to every answer.
    return {"X-Coord-Zxid": str(zxid), "X-Coord-Node": "1", "X-Coord-Leader": "1"}


def encode_data(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


async def get_node(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.match_info["path"]
    node = state.nodes.get(path)
    if node is None:
        problem = {
            "type": "urn:httpcoord:problem:NoNode",
            "title": "node does not exist",
            "status": 404,
            "code": "NoNode",
            "detail": "node does not exist",
            "path": path,
        }
        return web.Response(
            status=404,
            body=orjson.dumps(problem),
            content_type="application/problem+json",
            charset="utf-8",
            headers=headers(state.zxid),
        )
    data, encoding = encode_data(node[0])
    body = {"path": path, "data": data, "encoding": encoding, "stat": node[1]}
    return web.Response(body=orjson.dumps(body), content_type=JSON, headers=headers(state.zxid))


async def put_node(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.match_info["path"]
    data = await request.read()
    state.zxid += 1
    zxid = state.zxid
    now_ms = time.time_ns() // 1_000_000
    old = state.nodes.get(path)
    if old is None:
        stat: dict[str, int | str] = {
            "czxid": zxid,
            "mzxid": zxid,
            "pzxid": zxid,
            "ctime": now_ms,
            "mtime": now_ms,
            "version": 0,
            "cversion": 0,
            "aversion": 0,
            "ephemeral_owner": "",
            "data_length": len(data),
            "num_children": 0,
        }
    else:
        stat = dict(old[1])
        stat.update(mzxid=zxid, mtime=now_ms, data_length=len(data))
        stat["version"] = int(stat["version"]) + 1
    # Applied before it is durable (a reader may see it early): the cost is
    # the same either way, and it keeps the versions in arrival order.
    state.nodes[path] = (data, stat)
    if state.log is not None:
        await state.log.append(b"%d %d %s\n%s\n" % (zxid, len(data), path.encode(), data))
    body = {"path": path, "zxid": zxid, "stat": stat}
    return web.Response(
        status=201 if old is None else 200,
        body=orjson.dumps(body),
        content_type=JSON,
        headers=headers(zxid),
    )


async def metrics(request: web.Request) -> web.Response:
    log = request.app[STATE].log
    writes, fsyncs = (log.writes_total, log.fsyncs_total) if log else (0, 0)
    return web.Response(text=f"bare_writes_total {writes}\nbare_fsyncs_total {fsyncs}\n")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(log_path: Path | None) -> web.Application:
    app = web.Application()
    app[STATE] = State()

    async def committer(app: web.Application) -> AsyncIterator[None]:
        log = app[STATE].log = GroupLog(log_path) if log_path else None
        task = asyncio.create_task(log.run()) if log else None
        yield
        if task:
            task.cancel()
        if log:
            os.close(log.fd)

    app.cleanup_ctx.append(committer)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(NODE_URL, get_node, allow_head=False)
    app.router.add_put(NODE_URL, put_node)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:8190", help="HOST:PORT")
    p.add_argument("--fsync", action="store_true", help="answer PUTs after a group fdatasync")
    p.add_argument("--data-dir", type=Path, default=Path("bare-data"), help="for --fsync")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    log_path = None
    if args.fsync:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = args.data_dir / "writes.log"
    gc.set_threshold(50_000, 20, 20)  # as httpcoord serve sets it
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        create_app(log_path),
        host=host,
        port=int(port),
        loop=loop,
        access_log=None,
        handler_cancellation=True,
        print=None,
    )


if __name__ == "__main__":
    main()
