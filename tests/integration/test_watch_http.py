"""Watches against real server processes: long-poll, SSE, resume, history
bounds, per-client bounds, dropped connections and slow consumers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerProcess, start_server

SSE = {"Accept": "text/event-stream"}
DEADLINE_S = 10.0


@dataclass
class Frame:
    event: str = "message"
    id: str | None = None
    data: dict = field(default_factory=dict)


async def frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
    """Parse an SSE stream (comments and retry lines are skipped)."""
    frame, has_data = Frame(), False
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if has_data:
                yield frame
            frame, has_data = Frame(), False
        elif line.startswith("event: "):
            frame.event = line[7:]
        elif line.startswith("id: "):
            frame.id = line[4:]
        elif line.startswith("data: "):
            frame.data, has_data = orjson.loads(line[6:]), True


async def take(stream: AsyncIterator[Frame], n: int) -> list[Frame]:
    async def collect() -> list[Frame]:
        return [await anext(stream) for _ in range(n)]

    return await asyncio.wait_for(collect(), DEADLINE_S)


async def write(http: aiohttp.ClientSession, method: str, path: str, data: bytes = b"") -> int:
    async with http.request(method, "/v1/nodes" + path, data=data) as r:
        assert r.status in (200, 201), await r.text()
        return int(r.headers["X-Coord-Zxid"])


async def watchers(http: aiohttp.ClientSession) -> int:
    async with http.get("/metrics") as r:
        match = re.search(r"^httpcoord_watchers (\S+)$", await r.text(), re.MULTILINE)
    assert match
    return int(float(match.group(1)))


async def until_watchers(http: aiohttp.ClientSession, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while await watchers(http) != n:
        assert asyncio.get_running_loop().time() < deadline, f"watchers never became {n}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


async def test_long_poll_without_since_waits_for_the_next_change(
    http: aiohttp.ClientSession,
) -> None:
    await write(http, "POST", "/lp")
    poll = asyncio.create_task(http.get("/v1/watch/lp?timeout=10"))
    await until_watchers(http, 1)
    zxid = await write(http, "PUT", "/lp", b"new")
    async with await poll as r:
        body = await r.json()
    assert [(e["type"], e["path"], e["zxid"]) for e in body["events"]] == [
        ("data_changed", "/lp", zxid)
    ]
    assert body["zxid"] >= zxid and body["truncated"] is False


async def test_long_poll_times_out_with_the_current_zxid(http: aiohttp.ClientSession) -> None:
    zxid = await write(http, "POST", "/lp-idle")
    async with http.get("/v1/watch/lp-idle?timeout=0.2") as r:
        body = await r.json()
    assert body["events"] == [] and body["zxid"] >= zxid


async def test_long_poll_since_answers_at_once_with_data(http: aiohttp.ClientSession) -> None:
    first = await write(http, "POST", "/lps", b"one")
    await write(http, "PUT", "/lps", b"\xff")
    async with http.get(f"/v1/watch/lps?since={first - 1}&data=true&timeout=10") as r:
        events = (await r.json())["events"]
    assert [(e["type"], e["data"], e["encoding"]) for e in events] == [
        ("created", "one", "utf-8"),
        ("data_changed", "/w==", "base64"),
    ]


async def test_sse_resumes_exactly_after_last_event_id(http: aiohttp.ClientSession) -> None:
    await write(http, "POST", "/sse")
    expected: list[tuple[int, str, str]] = []
    async with http.get("/v1/watch/sse?recursive=true", headers=SSE) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        stream = frames(r)
        z = await write(http, "POST", "/sse/a")
        expected += [(z, "created", "/sse/a"), (z, "children_changed", "/sse")]
        z = await write(http, "PUT", "/sse/a", b"x")
        expected.append((z, "data_changed", "/sse/a"))
        got = await take(stream, 3)
    # The id line comes once per txn, on its last event.
    assert [f.id for f in got] == [None, str(expected[1][0]), str(expected[2][0])]
    last_id = got[-1].id
    # Changes while disconnected, including a multi of several events.
    async with http.post(
        "/v1/multi",
        json={
            "ops": [
                {"op": "create", "path": "/sse/b"},
                {"op": "delete", "path": "/sse/a"},
            ]
        },
    ) as m:
        z = (await m.json())["zxid"]
    expected += [
        (z, "created", "/sse/b"),
        (z, "children_changed", "/sse"),
        (z, "deleted", "/sse/a"),
        (z, "children_changed", "/sse"),
    ]
    headers = {**SSE, "Last-Event-ID": str(last_id)}
    # Last-Event-ID wins over a since that would replay everything again.
    async with http.get("/v1/watch/sse?recursive=true&since=0", headers=headers) as r:
        got += await take(frames(r), 4)
    assert [(f.data["zxid"], f.data["type"], f.data["path"]) for f in got] == expected


async def test_bad_watch_requests(http: aiohttp.ClientSession) -> None:
    for url, status, code in [
        ("/v1/watch/x?since=abc", 400, "BadArguments"),
        ("/v1/watch/x?since=-1", 400, "BadArguments"),
        ("/v1/watch/x?since=%2B1", 400, "BadArguments"),
        ("/v1/watch/x?since=1_0", 400, "BadArguments"),
        ("/v1/watch/x?since=%201", 400, "BadArguments"),
        ("/v1/watch/x?timeout=-1", 400, "BadArguments"),
        ("/v1/watch/x?timeout=1e9", 400, "BadArguments"),
        ("/v1/watch/x?bogus=1", 400, "BadArguments"),
        ("/v1/watch/a//b", 400, "InvalidPath"),
    ]:
        async with http.get(url) as r:
            assert r.status == status, url
            assert (await r.json(content_type=None))["code"] == code, url
    async with http.get("/v1/watch/x", headers={**SSE, "Last-Event-ID": "zz"}) as r:
        assert r.status == 400
    async with http.get("/v1/watch/x?timeout=abc", headers=SSE) as r:
        assert r.status == 400
    async with http.head("/v1/watch/x") as r:
        assert r.status == 405


async def test_a_dropped_connection_frees_its_watcher_at_once(http: aiohttp.ClientSession) -> None:
    before = await watchers(http)
    async with aiohttp.ClientSession(base_url=str(http._base_url)) as other:
        response = await other.get("/v1/watch/drop", headers=SSE)
        await until_watchers(http, before + 1)
        response.close()
    await until_watchers(http, before)


async def test_compacted_history_answers_410(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", "--watch-history-events", "4") as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            for i in range(6):
                last = await write(http, "POST", f"/c{i}")
            async with http.get("/v1/watch/?since=1&recursive=true") as r:
                assert r.status == 410
                body = await r.json(content_type=None)
            assert body["code"] == "Compacted" and body["zxid"] == last
            oldest = body["oldest_zxid"]
            async with http.get(f"/v1/watch/?since={oldest}&recursive=true") as r:
                assert r.status == 200 and (await r.json())["events"]


async def test_watchers_per_client_are_bounded(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", "--max-watchers-per-client", "2") as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            open_streams = [await http.get(f"/v1/watch/n{i}", headers=SSE) for i in range(2)]
            async with http.get("/v1/watch/n3", headers=SSE) as r:
                assert r.status == 429
                assert (await r.json(content_type=None))["code"] == "TooManyRequests"
            open_streams[0].close()
            await until_watchers(http, 1)
            async with http.get("/v1/watch/n3?timeout=0") as r:
                assert r.status == 200
            open_streams[1].close()


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with start_server(data) as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            zxids = [await write(http, "POST", f"/r{i}") for i in range(3)]
    with start_server(data) as srv:
        async with (
            aiohttp.ClientSession(base_url=srv.url) as http,
            http.get("/v1/watch/?since=0&recursive=true") as r,
        ):
            events = (await r.json())["events"]
    assert [e["zxid"] for e in events if e["type"] == "created"] == zxids


async def test_a_slow_consumer_is_cut_off_with_where_to_resume(tmp_path: Path) -> None:
    """A reader that stops reading while 40 large events arrive: its buffer
    (8 events) overflows, it gets what was buffered, then an overflow event
    naming the zxid to resume from, and the resume delivers the rest. The
    writes were never held up by it."""
    payload = b"x" * 512 * 1024  # enough to fill the socket buffers
    with start_server(tmp_path / "data", "--watch-buffer-events", "8") as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            await write(http, "POST", "/slow")
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(
                b"GET /v1/watch/slow?data=true HTTP/1.1\r\nHost: x\r\n"
                b"Accept: text/event-stream\r\n\r\n"
            )
            await writer.drain()
            await until_watchers(http, 1)
            written = [await write(http, "PUT", "/slow", payload) for _ in range(40)]
            # Now read everything the server sends until it closes.
            raw = await asyncio.wait_for(reader.read(-1), DEADLINE_S)
            writer.close()
            text = raw.decode()
            # The first id is the stream's opening resume point (no event).
            start, *ids = [int(m) for m in re.findall(r"^id: (\d+)$", text, re.MULTILINE)]
            assert start == written[0] - 1
            overflow = re.search(r"^event: overflow\ndata: (.*)$", text, re.MULTILINE)
            assert overflow, "no overflow event"
            resume_from = orjson.loads(overflow.group(1))["resume_from"]
            assert ids == written[: len(ids)] and resume_from == ids[-1] < written[-1]
            async with http.get(f"/v1/watch/slow?since={resume_from}&timeout=0") as r:
                rest = [e["zxid"] for e in (await r.json())["events"]]
            assert ids + rest == written


async def test_idle_sse_streams_get_keepalive_comments(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", "--sse-keepalive-ms", "100") as srv:
        async with (
            aiohttp.ClientSession(base_url=srv.url) as http,
            http.get("/v1/watch/quiet", headers=SSE) as r,
        ):
            seen = b""
            async with asyncio.timeout(DEADLINE_S):
                while seen.count(b": keepalive\n\n") < 2:
                    seen += await r.content.readany()
            assert seen.startswith(b"retry: 1000\nid: 0\n\n")
