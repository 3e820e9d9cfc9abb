#!/usr/bin/env python3
"""A bare aiohttp server with httpcoord's two hot routes, answering from a dict:
what the HTTP stack alone costs (issue 14). The same stack as ``httpcoord
serve`` (uvloop, no access log, handler cancellation, its gc threshold), the
same routes, status codes, headers and JSON bodies as its ``GET`` and ``PUT
/v1/nodes/{path}``, and nothing else. With ``--fsync`` a PUT is answered after
an ``fdatasync`` of an append-only file that holds it, shared by the writes of
a loop turn and those that arrived during the previous fsync (group commit in
a thread, like httpcoord's log). ``GET /metrics`` counts writes and fsyncs.

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
# fmt: off
STAT_FIELDS = ("czxid", "mzxid", "pzxid", "ctime", "mtime", "version", "cversion", "aversion",
               "ephemeral_owner", "data_length", "num_children")  # httpcoord's order
# fmt: on
# httpcoord's 404 problem, less the path.
NO_NODE = {"type": "urn:httpcoord:problem:NoNode", "title": "node does not exist", "status": 404}
NO_NODE |= {"code": "NoNode", "detail": "node does not exist"}


class GroupLog:
    """An append-only file written and fdatasynced once per batch of records."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.writes_total = 0
        self.fsyncs_total = 0

    async def append(self, record: bytes) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.pending.append((record, waiter))
        self.wake.set()
        await waiter

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            error: OSError | None = None
            try:
                await loop.run_in_executor(None, self._save, b"".join(r for r, _ in batch))
                self.writes_total += len(batch)
                self.fsyncs_total += 1
            except OSError as exc:
                error = exc
            for _, w in batch:
                if not w.done():  # else a cancelled handler (client gone)
                    w.set_result(None) if error is None else w.set_exception(error)

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


def answer(body: object, zxid: int, status: int = 200, ctype: str = JSON) -> web.Response:
    # The headers httpcoord's middleware adds to every answer.
    headers = {"X-Coord-Zxid": str(zxid), "X-Coord-Node": "1", "X-Coord-Leader": "1"}
    charset = "utf-8" if ctype != JSON else None  # as httpcoord sends its problems
    return web.Response(
        status=status, body=orjson.dumps(body), content_type=ctype, charset=charset, headers=headers
    )


async def get_node(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.match_info["path"]
    node = state.nodes.get(path)
    if node is None:
        return answer({**NO_NODE, "path": path}, state.zxid, 404, "application/problem+json")
    try:
        data, encoding = node[0].decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        data, encoding = base64.b64encode(node[0]).decode("ascii"), "base64"
    return answer({"path": path, "data": data, "encoding": encoding, "stat": node[1]}, state.zxid)


async def put_node(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.match_info["path"]
    data = await request.read()
    state.zxid += 1
    zxid = state.zxid
    now_ms = time.time_ns() // 1_000_000
    old = state.nodes.get(path)
    if old is None:
        values = (zxid, zxid, zxid, now_ms, now_ms, 0, 0, 0, "", len(data), 0)
        stat: dict[str, int | str] = dict(zip(STAT_FIELDS, values, strict=True))
    else:
        stat = old[1] | {"mzxid": zxid, "mtime": now_ms, "data_length": len(data)}
        stat["version"] = int(stat["version"]) + 1
    # Applied before it is durable (a reader may see it early): the cost is
    # the same either way, and it keeps the versions in arrival order.
    state.nodes[path] = (data, stat)
    if state.log is not None:
        await state.log.append(b"%d %d %s\n%s\n" % (zxid, len(data), path.encode(), data))
    return answer({"path": path, "zxid": zxid, "stat": stat}, zxid, 201 if old is None else 200)


async def metrics(request: web.Request) -> web.Response:
    log = request.app[STATE].log
    writes, fsyncs = (log.writes_total, log.fsyncs_total) if log else (0, 0)
    return web.Response(text=f"bare_writes_total {writes}\nbare_fsyncs_total {fsyncs}\n")


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
    if args.fsync:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.data_dir / "writes.log" if args.fsync else None
    gc.set_threshold(50_000, 20, 20)  # as httpcoord serve sets it
    loop = uvloop.new_event_loop()
    app = create_app(log_path)
    # As httpcoord serve runs its app: no access log, handlers cancelled with their client.
    web.run_app(
        app, host=host, port=int(port), loop=loop, access_log=None, handler_cancellation=True
    )


if __name__ == "__main__":
    main()
