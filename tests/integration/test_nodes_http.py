"""The znode and multi routes against a real ``httpcoord serve`` process."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import ServerProcess, start_server

PROBLEM = "application/problem+json"


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


async def problem(response: aiohttp.ClientResponse, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body = await response.json(content_type=PROBLEM)
    assert body["code"] == code and body["status"] == status
    assert "X-Coord-Zxid" in response.headers
    return body


async def test_create_get_set_delete_round_trip(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/nodes/rt", data=b"hello") as r:
        assert r.status == 201
        created = await r.json()
        assert r.headers["Location"] == "/v1/nodes/rt"
        assert int(r.headers["X-Coord-Zxid"]) == created["zxid"] == created["stat"]["czxid"]
    async with http.get("/v1/nodes/rt") as r:
        body = await r.json()
        assert body["data"] == "hello" and body["encoding"] == "utf-8"
        assert body["stat"]["version"] == 0 and body["stat"]["data_length"] == 5
        assert int(r.headers["X-Coord-Zxid"]) >= created["zxid"]
    async with http.put("/v1/nodes/rt?version=0", data=b"world") as r:
        assert r.status == 200
        updated = await r.json()
        assert updated["stat"]["version"] == 1 and updated["zxid"] == created["zxid"] + 1
    async with http.delete("/v1/nodes/rt?version=1") as r:
        assert r.status == 200
        assert (await r.json())["zxid"] == updated["zxid"] + 1
    await problem(await http.get("/v1/nodes/rt"), 404, "NoNode")


async def test_binary_data_is_base64_in_json_and_raw_on_request(
    http: aiohttp.ClientSession,
) -> None:
    data = b"\xff\x00\xfe"
    await (await http.post("/v1/nodes/bin", data=data)).read()
    async with http.get("/v1/nodes/bin") as r:
        body = await r.json()
        assert body["encoding"] == "base64" and base64.b64decode(body["data"]) == data
    async with http.get("/v1/nodes/bin?raw=true") as r:
        assert await r.read() == data
        assert r.headers["X-Coord-Stat-Data-Length"] == "3"


async def test_head_answers_the_stat_in_headers(http: aiohttp.ClientSession) -> None:
    await (await http.post("/v1/nodes/h", data=b"abc")).read()
    async with http.head("/v1/nodes/h") as r:
        assert r.status == 200
        assert r.headers["X-Coord-Stat-Version"] == "0"
        assert r.headers["X-Coord-Stat-Data-Length"] == "3"
        assert r.headers["X-Coord-Stat-Num-Children"] == "0"
    async with http.head("/v1/nodes/h-missing") as r:
        assert r.status == 404


async def test_root_is_served_with_and_without_a_slash(http: aiohttp.ClientSession) -> None:
    for url in ("/v1/nodes", "/v1/nodes/"):
        async with http.get(url + "?children=true") as r:
            body = await r.json()
            assert body["path"] == "/" and isinstance(body["children"], list)
            assert body["children"] == sorted(body["children"])


async def test_sequential_and_parents(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/nodes/jobs/a/b/job-?sequential=true&parents=true") as r:
        assert r.status == 201
        first = await r.json()
        assert first["path"] == "/jobs/a/b/job-0000000000"
    async with http.post("/v1/nodes/jobs/a/b/job-?sequential=true") as r:
        assert (await r.json())["path"] == "/jobs/a/b/job-0000000001"
    async with http.get("/v1/nodes/jobs/a?children=true") as r:
        body = await r.json()
        # Parents and node were created by one txn.
        assert body["stat"]["czxid"] == first["zxid"] and body["children"] == ["b"]
    await problem(await http.post("/v1/nodes/nope/child"), 404, "NoNode")


async def test_put_is_an_upsert_without_version_and_a_cas_with_one(
    http: aiohttp.ClientSession,
) -> None:
    async with http.put("/v1/nodes/cfg", data=b"v1") as r:
        assert r.status == 201
    async with http.put("/v1/nodes/cfg", data=b"v2") as r:
        assert r.status == 200 and (await r.json())["stat"]["version"] == 1
    body = await problem(await http.put("/v1/nodes/cfg?version=0", data=b"x"), 409, "BadVersion")
    assert body["version"] == 1
    await problem(await http.put("/v1/nodes/cfg-missing?version=-1", data=b"x"), 404, "NoNode")
    await problem(await http.put("/v1/nodes/cfg-missing?version=0", data=b"x"), 404, "NoNode")


async def test_delete_rules(http: aiohttp.ClientSession) -> None:
    for path in ("/d", "/d/e", "/d/e/f"):
        await (await http.post("/v1/nodes" + path)).read()
    await problem(await http.delete("/v1/nodes/d"), 409, "NotEmpty")
    await problem(await http.delete("/v1/nodes/d?version=4"), 409, "BadVersion")
    await problem(await http.delete("/v1/nodes/d-missing?version=4"), 404, "NoNode")
    await problem(await http.delete("/v1/nodes/"), 400, "BadArguments")
    await problem(await http.delete("/v1/nodes"), 400, "BadArguments")
    async with http.delete("/v1/nodes/d?recursive=true") as r:
        assert r.status == 200
    await problem(await http.get("/v1/nodes/d/e/f"), 404, "NoNode")


async def test_a_refused_write_takes_no_zxid(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/nodes/z1") as r:
        zxid = (await r.json())["zxid"]
    refused = await http.post("/v1/nodes/z1")
    await problem(refused, 409, "NodeExists")
    assert int(refused.headers["X-Coord-Zxid"]) == zxid
    async with http.post("/v1/nodes/z2") as r:
        assert (await r.json())["zxid"] == zxid + 1


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/nodes/a//b",
        "/v1/nodes/a/",
        "/v1/nodes/a/./b",
        "/v1/nodes/a/../b",
        "/v1/nodes/a/%2e%2e/b",
        "/v1/nodes/a%00b",
        "/v1/nodes/a%1fb",
        "/v1/nodes/a%0Ab",
        "/v1/nodes/a%ff",
        "/v1/nodes/" + "x" * 1100,
    ],
)
async def test_invalid_paths_are_refused(server: ServerProcess, raw_path: str) -> None:
    # Raw HTTP, so that no client normalises the path before it is judged.
    status, headers, body = await raw_request(server, f"POST {raw_path} HTTP/1.1", b"data")
    assert status == 400, body
    assert b'"code":"InvalidPath"' in body
    assert "x-coord-zxid" in headers


@pytest.mark.parametrize(
    "query", ["version=abc", "version=1.5", "version=-2", "version=99999999999"]
)
async def test_bad_versions_are_refused(http: aiohttp.ClientSession, query: str) -> None:
    await (await http.put("/v1/nodes/bv", data=b"x")).read()
    await problem(await http.put(f"/v1/nodes/bv?{query}", data=b"y"), 400, "BadArguments")
    await problem(await http.delete(f"/v1/nodes/bv?{query}"), 400, "BadArguments")
    async with http.get("/v1/nodes/bv") as r:
        assert (await r.json())["data"] == "x"


async def test_unknown_and_malformed_query_parameters_are_refused(
    http: aiohttp.ClientSession,
) -> None:
    await problem(await http.put("/v1/nodes/q?verison=3", data=b"x"), 400, "BadArguments")
    await problem(await http.post("/v1/nodes/q?sequential=maybe"), 400, "BadArguments")
    await problem(await http.get("/v1/nodes/?children=true&children=false"), 400, "BadArguments")


async def test_unknown_route_and_method_are_problems(http: aiohttp.ClientSession) -> None:
    await problem(await http.get("/v2/nothing"), 404, "NotFound")
    await problem(await http.patch("/v1/nodes/x"), 405, "MethodNotAllowed")


async def test_data_over_the_limit_is_refused_before_the_body_is_read(
    server: ServerProcess,
) -> None:
    # Declare 100 MiB and send none of it: the answer must come at once.
    head = f"POST /v1/nodes/big HTTP/1.1\r\nHost: x\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert b" 413 " in status_line


async def test_streamed_data_over_the_limit_is_refused(http: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    await problem(await http.post("/v1/nodes/big2", data=chunks()), 413, "PayloadTooLarge")
    await problem(await http.get("/v1/nodes/big2"), 404, "NoNode")


async def test_multi_applies_all_ops_under_one_zxid(http: aiohttp.ClientSession) -> None:
    ops = [
        {"op": "create", "path": "/m", "data": "root"},
        {"op": "create", "path": "/m/s-", "sequential": True},
        {
            "op": "create",
            "path": "/m/bin",
            "data": base64.b64encode(b"\xff").decode(),
            "encoding": "base64",
        },
        {"op": "set", "path": "/m", "data": "v2", "version": 0},
        {"op": "check", "path": "/m", "version": 1},
        {"op": "delete", "path": "/m/bin"},
    ]
    async with http.post("/v1/multi", json={"ops": ops}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert [x["op"] for x in body["results"]] == [
        "create",
        "create",
        "create",
        "set",
        "check",
        "delete",
    ]
    assert body["results"][1]["path"] == "/m/s-0000000000"
    assert int(r.headers["X-Coord-Zxid"]) == body["zxid"]
    async with http.get("/v1/nodes/m?children=true") as r:
        node = await r.json()
    assert node["data"] == "v2" and node["children"] == ["s-0000000000"]
    assert node["stat"]["mzxid"] == node["stat"]["czxid"] == body["zxid"]


async def test_failed_multi_reports_every_op_and_applies_nothing(
    http: aiohttp.ClientSession,
) -> None:
    ops = [
        {"op": "create", "path": "/mf"},
        {"op": "delete", "path": "/mf-missing"},
        {"op": "create", "path": "/mf2"},
    ]
    body = await problem(await http.post("/v1/multi", json={"ops": ops}), 404, "NoNode")
    assert body["failed_op"] == 1
    assert [x["status"] for x in body["results"]] == ["rolled_back", "error", "not_run"]
    await problem(await http.get("/v1/nodes/mf"), 404, "NoNode")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"ops": "x"}',
        b'{"ops": [{"op": "rename", "path": "/a"}]}',
        b'{"ops": [{"op": "create", "path": "/a", "sequential": "yes"}]}',
        b'{"ops": [{"op": "check", "path": "/a"}]}',
        b'{"ops": [{"op": "create", "path": "/a", "extra": 1}]}',
        b'{"ops": [{"op": "create", "path": "/a", "data": "!", "encoding": "base64"}]}',
        b'{"ops": [], "more": true}',
        b'{"ops": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    ],
)
async def test_malformed_multi_is_refused(http: aiohttp.ClientSession, body: bytes) -> None:
    response = await http.post("/v1/multi", data=body, headers={"Content-Type": "application/json"})
    await problem(response, 400, "BadArguments")


async def test_multi_op_with_an_invalid_path_names_the_op(http: aiohttp.ClientSession) -> None:
    ops = [{"op": "create", "path": "/ok"}, {"op": "create", "path": "/bad/"}]
    body = await problem(await http.post("/v1/multi", json={"ops": ops}), 400, "InvalidPath")
    assert body["failed_op"] == 1


async def test_empty_multi_succeeds_and_takes_no_zxid(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/multi", json={"ops": []}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["results"] == [] and int(r.headers["X-Coord-Zxid"]) == body["zxid"]


async def test_limits_are_configurable(tmp_path: Path) -> None:
    with start_server(
        tmp_path / "data",
        "--max-data-bytes",
        "4",
        "--max-multi-ops",
        "2",
        "--max-path-length",
        "8",
        "--max-request-bytes",
        "2048",
    ) as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            await problem(await http.post("/v1/nodes/a", data=b"12345"), 413, "PayloadTooLarge")
            await problem(await http.post("/v1/nodes/abcdefgh"), 400, "InvalidPath")
            ops = [{"op": "check", "path": "/", "version": -1}] * 3
            await problem(await http.post("/v1/multi", json={"ops": ops}), 400, "BadArguments")
            big = {"ops": [{"op": "create", "path": "/a", "data": "x" * 4096}]}
            await problem(await http.post("/v1/multi", json=big), 413, "PayloadTooLarge")
            async with http.post("/v1/nodes/a", data=b"1234") as r:
                assert r.status == 201


async def test_sigterm_shuts_down_cleanly_and_keeps_every_write(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        results = await asyncio.gather(
            *(http.post(f"/v1/nodes/t{i}", data=b"%d" % i) for i in range(50))
        )
        assert all(r.status == 201 for r in results)
    assert srv.stop(timeout=5) == 0
    with start_server(tmp_path / "data") as again:
        async with (
            aiohttp.ClientSession(base_url=again.url) as http,
            http.get("/v1/nodes/?children=true") as r,
        ):
            assert len((await r.json())["children"]) == 50


async def raw_request(
    server: ServerProcess, request_line: str, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written by hand, so the path reaches the server
    exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"{request_line}\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload
