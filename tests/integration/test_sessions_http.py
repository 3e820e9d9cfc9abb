"""Sessions and the node kinds that depend on them, against real server
processes. Expiry here runs on the server's real clock with short ttls, so
these tests poll with a deadline; the exact boundaries are proven with an
injected clock in tests/unit/test_sessions.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import ServerProcess, start_server

FAST = ("--session-ttl-min-ms", "200", "--container-check-ms", "100")
POLL_DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    srv = start_server(tmp_path_factory.mktemp("sessions") / "data", *FAST)
    yield srv  # type: ignore[misc]
    srv.stop()


@pytest.fixture
async def http(fast_server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=fast_server.url) as session:
        yield session


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + POLL_DEADLINE_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def open_session(http: aiohttp.ClientSession, ttl_ms: int) -> str:
    async with http.post("/v1/sessions", json={"ttl_ms": ttl_ms}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def status(http: aiohttp.ClientSession, method: str, url: str, **kw: object) -> int:
    async with http.request(method, url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status


async def test_ttl_is_clamped_into_the_server_bounds(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/sessions", json={"ttl_ms": 1}) as r:
        assert (await r.json())["ttl_ms"] == 200
    async with http.post("/v1/sessions", json={"ttl_ms": 10**9}) as r:
        assert (await r.json())["ttl_ms"] == 60_000


@pytest.mark.parametrize("body", [b"", b"{}", b'{"ttl_ms": "5"}', b'{"ttl_ms": -1}', b"[1]", b"x"])
async def test_bad_ttls_are_refused(http: aiohttp.ClientSession, body: bytes) -> None:
    assert await status(http, "POST", "/v1/sessions", data=body) == 400


async def test_session_ids_are_opaque_and_distinct(http: aiohttp.ClientSession) -> None:
    ids = [await open_session(http, 5000) for _ in range(5)]
    assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)


async def test_close_removes_the_sessions_ephemerals(http: aiohttp.ClientSession) -> None:
    sid = await open_session(http, 30_000)
    header = {"X-Coord-Session": sid}
    assert await status(http, "POST", "/v1/nodes/g1?ephemeral=true", headers=header) == 201
    async with http.post("/v1/nodes/g1-?ephemeral=true&sequential=true", headers=header) as r:
        seq_path = (await r.json())["path"]
    async with http.get(f"/v1/sessions/{sid}") as r:
        detail = await r.json()
    assert detail["ephemerals"] == sorted(["/g1", seq_path])
    async with http.delete(f"/v1/sessions/{sid}") as r:
        closed = await r.json()
    assert closed["deleted"] == sorted(["/g1", seq_path])
    assert await status(http, "GET", "/v1/nodes/g1") == 404
    assert await status(http, "POST", f"/v1/sessions/{sid}/heartbeat") == 404
    assert await status(http, "DELETE", f"/v1/sessions/{sid}") == 404
    body = {"ops": [{"op": "create", "path": "/g2", "ephemeral": True}]}
    assert await status(http, "POST", "/v1/multi", json=body, headers=header) == 404


async def test_ephemeral_errors(http: aiohttp.ClientSession) -> None:
    assert await status(http, "POST", "/v1/nodes/e?ephemeral=true") == 400
    unknown = {"X-Coord-Session": "0" * 32}
    async with http.post("/v1/nodes/e?ephemeral=true", headers=unknown) as r:
        assert r.status == 404 and (await r.json(content_type=None))["code"] == "SessionExpired"
    sid = await open_session(http, 30_000)
    header = {"X-Coord-Session": sid}
    for flags in (
        "ephemeral=true&container=true",
        "ephemeral=true&ttl_ms=5",
        "container=true&ttl_ms=5",
        "ttl_ms=0",
        "ttl_ms=x",
    ):
        assert await status(http, "POST", f"/v1/nodes/e?{flags}", headers=header) == 400
    assert await status(http, "POST", "/v1/nodes/e?ephemeral=true", headers=header) == 201
    assert await status(http, "POST", "/v1/nodes/e/child") == 400
    assert await status(http, "GET", "/v1/nodes/e") == 200


async def test_an_unrenewed_session_expires_and_takes_its_ephemerals(
    http: aiohttp.ClientSession,
) -> None:
    sid = await open_session(http, 300)
    assert (
        await status(http, "POST", "/v1/nodes/x1?ephemeral=true", headers={"X-Coord-Session": sid})
        == 201
    )

    async def gone() -> bool:
        return await status(http, "GET", "/v1/nodes/x1") == 404

    await eventually(gone)
    assert await status(http, "POST", f"/v1/sessions/{sid}/heartbeat") == 404


async def test_heartbeats_keep_the_session_alive(http: aiohttp.ClientSession) -> None:
    sid = await open_session(http, 300)
    assert (
        await status(http, "POST", "/v1/nodes/hb?ephemeral=true", headers={"X-Coord-Session": sid})
        == 201
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.0  # more than three ttls
    while loop.time() < end:
        assert await status(http, "POST", f"/v1/sessions/{sid}/heartbeat") == 200
        await asyncio.sleep(0.05)
    assert await status(http, "GET", "/v1/nodes/hb") == 200


async def test_container_and_ttl_nodes_are_reaped(http: aiohttp.ClientSession) -> None:
    assert await status(http, "POST", "/v1/nodes/box?container=true") == 201
    assert await status(http, "POST", "/v1/nodes/box/item") == 201
    assert await status(http, "DELETE", "/v1/nodes/box/item") == 200
    assert await status(http, "POST", "/v1/nodes/short?ttl_ms=200") == 201

    async def both_gone() -> bool:
        return (
            await status(http, "GET", "/v1/nodes/box") == 404
            and await status(http, "GET", "/v1/nodes/short") == 404
        )

    await eventually(both_gone)


async def test_a_session_survives_a_server_crash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with start_server(data, *FAST) as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            sid = await open_session(http, 5000)
            assert (
                await status(
                    http, "POST", "/v1/nodes/m?ephemeral=true", headers={"X-Coord-Session": sid}
                )
                == 201
            )
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(10)
    with start_server(data, *FAST) as again:
        async with aiohttp.ClientSession(base_url=again.url) as http:
            assert await status(http, "POST", f"/v1/sessions/{sid}/heartbeat") == 200
            async with http.get("/v1/nodes/m") as r:
                assert (await r.json())["stat"]["ephemeral_owner"] == sid
            async with http.get("/v1/sessions") as r:
                assert sid in [s["id"] for s in (await r.json())["sessions"]]


async def test_websocket_keepalive_keeps_the_session_alive(http: aiohttp.ClientSession) -> None:
    sid = await open_session(http, 300)
    assert (
        await status(http, "POST", "/v1/nodes/ws1?ephemeral=true", headers={"X-Coord-Session": sid})
        == 201
    )
    async with http.ws_connect(f"/v1/sessions/{sid}/keepalive") as ws:
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0  # more than three ttls
        while loop.time() < end:
            await ws.send_str(".")
            await asyncio.sleep(0.05)
        assert await status(http, "GET", "/v1/nodes/ws1") == 200
        assert not ws.closed


async def test_websocket_keepalive_is_closed_when_the_session_goes(
    http: aiohttp.ClientSession,
) -> None:
    sid = await open_session(http, 300)
    async with http.ws_connect(f"/v1/sessions/{sid}/keepalive") as ws:
        await ws.send_str(".")
        assert await status(http, "DELETE", f"/v1/sessions/{sid}") == 200
        msg = await asyncio.wait_for(ws.receive(), POLL_DEADLINE_S)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4404


async def test_websocket_keepalive_refuses_unknown_sessions_and_plain_requests(
    http: aiohttp.ClientSession,
) -> None:
    assert await status(http, "GET", f"/v1/sessions/{'0' * 32}/keepalive") == 404
    sid = await open_session(http, 5000)
    assert await status(http, "GET", f"/v1/sessions/{sid}/keepalive") == 400


async def test_websocket_keepalive_is_closed_when_the_session_expires(
    http: aiohttp.ClientSession,
) -> None:
    sid = await open_session(http, 300)
    async with http.ws_connect(f"/v1/sessions/{sid}/keepalive") as ws:
        # Silence: the session expires, and the socket is closed with it.
        msg = await asyncio.wait_for(ws.receive(), POLL_DEADLINE_S)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4404
    assert await status(http, "POST", f"/v1/sessions/{sid}/heartbeat") == 404


async def test_sigterm_ends_keepalives_and_watches_at_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", *FAST)
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        sid = await open_session(http, 5000)
        ws = await http.ws_connect(f"/v1/sessions/{sid}/keepalive")
        sse = await http.get("/v1/watch/x", headers={"Accept": "text/event-stream"})
        await ws.send_str(".")
        loop = asyncio.get_running_loop()
        started = loop.time()
        srv.proc.send_signal(signal.SIGTERM)
        msg = await asyncio.wait_for(ws.receive(), POLL_DEADLINE_S)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        assert await asyncio.wait_for(asyncio.to_thread(srv.proc.wait, 10), 15) == 0
        # Well under the 5 s the server would otherwise wait for open requests.
        assert loop.time() - started < 3
        sse.close()
        await ws.close()
