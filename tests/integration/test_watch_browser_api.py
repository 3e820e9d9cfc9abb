"""What a browser page needs from the API, against real server processes:
a watch that starts with the current state (``initial=true``), several
watches on one stream (``/v1/watches``), child lists in pages, and CORS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from httpcoord.client import Client
from tests.integration.conftest import ServerProcess, start_server
from tests.integration.test_watch_http import SSE, frames, take, write

ORIGIN = "http://ui.example:8080"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small pages and state bounds, and one allowed origin."""
    with start_server(
        tmp_path_factory.mktemp("small") / "data",
        "--children-page",
        "4",
        "--watch-initial-nodes",
        "5",
        "--max-watchers-per-client",
        "3",
        "--cors-origin",
        ORIGIN,
    ) as srv:
        yield srv


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


@pytest.fixture
async def small_http(small: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=small.url) as session:
        yield session


def brief(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["path"]) for e in events]


# ---- initial=true ----------------------------------------------------------------------


async def test_long_poll_initial_state_then_bookmark_then_changes(
    http: aiohttp.ClientSession,
) -> None:
    await write(http, "POST", "/init")
    await write(http, "POST", "/init/b", b"bee")
    await write(http, "POST", "/init/a", b"\xff")
    await write(http, "POST", "/init/a/x")
    async with http.get("/v1/watch/init?recursive=true&initial=true&data=true") as r:
        assert r.status == 200
        body = await r.json()
    z = body["zxid"]
    events = body["events"]
    # Parents first, children by name, then the bookmark; all at one zxid.
    assert brief(events) == [
        ("initial", "/init"),
        ("initial", "/init/a"),
        ("initial", "/init/a/x"),
        ("initial", "/init/b"),
        ("bookmark", "/init"),
    ]
    assert {e["zxid"] for e in events} == {z}
    assert [(e.get("data"), e.get("encoding")) for e in events[1:4]] == [
        ("/w==", "base64"),
        ("", "utf-8"),
        ("bee", "utf-8"),
    ]
    assert all(e["stat"]["mzxid"] <= z for e in events[:4]) and events[4]["stat"] is None
    # The changes after it, from the bookmark's zxid.
    changed = await write(http, "PUT", "/init/b", b"new")
    async with http.get(f"/v1/watch/init?recursive=true&since={z}&timeout=5") as r:
        later = (await r.json())["events"]
    assert [(e["type"], e["path"], e["zxid"]) for e in later] == [
        ("data_changed", "/init/b", changed)
    ]


async def test_initial_state_of_a_missing_node_is_the_bookmark_alone(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/v1/watch/not-yet?initial=true") as r:
        events = (await r.json())["events"]
    assert brief(events) == [("bookmark", "/not-yet")]


async def test_sse_initial_state_carries_its_id_on_the_bookmark_only(
    http: aiohttp.ClientSession,
) -> None:
    await write(http, "POST", "/ssei")
    await write(http, "POST", "/ssei/c")
    async with http.get("/v1/watch/ssei?recursive=true&initial=true", headers=SSE) as r:
        # The opening frame has no id: dropped before the bookmark, an
        # EventSource reconnects without Last-Event-ID and gets it all again.
        assert await r.content.readuntil(b"\n\n") == b"retry: 1000\n\n"
        stream = frames(r)
        state = await take(stream, 3)
        z = await write(http, "POST", "/ssei/d")
        live = await take(stream, 2)
    assert [(f.event, f.data["path"], f.id) for f in state] == [
        ("initial", "/ssei", None),
        ("initial", "/ssei/c", None),
        ("bookmark", "/ssei", str(state[0].data["zxid"])),
    ]
    assert [(f.event, f.data["path"], f.id) for f in live] == [
        ("created", "/ssei/d", None),
        ("children_changed", "/ssei", str(z)),
    ]
    # A reconnect with Last-Event-ID resumes after it, without the state.
    z2 = await write(http, "PUT", "/ssei/c", b"v")
    headers = {**SSE, "Last-Event-ID": str(z)}
    async with http.get("/v1/watch/ssei?recursive=true&initial=true", headers=headers) as r:
        (resumed,) = await take(frames(r), 1)
    assert (resumed.event, resumed.data["path"], resumed.id) == ("data_changed", "/ssei/c", str(z2))


async def test_the_state_and_the_changes_meet_without_gap_or_overlap(
    http: aiohttp.ClientSession,
) -> None:
    """Writes run while the watch starts: the state plus the changes after
    its bookmark is exactly the tree at the end."""
    keys = [f"/race/k{i}" for i in range(5)]
    for key in keys:
        await write(http, "POST", key + "?parents=true", b"0")

    async def writer() -> int:
        last = 0
        for i in range(150):
            key = keys[i % len(keys)]
            if i % 7 == 6:
                last = await write(http, "DELETE", key)
                last = await write(http, "POST", key, b"again")
            else:
                last = await write(http, "PUT", key, str(i).encode())
        return last

    writing = asyncio.create_task(writer())
    await asyncio.sleep(0.05)  # let some writes land first
    view: dict[str, str] = {}
    url = "/v1/watch/race?recursive=true&initial=true&data=true"
    async with http.get(url, headers=SSE) as r:
        stream = frames(r)
        bookmark = None
        while bookmark is None:
            (f,) = await take(stream, 1)
            if f.event == "bookmark":
                bookmark = f.data["zxid"]
            else:
                view[f.data["path"]] = f.data["data"]
        last = await writing
        reached = bookmark
        while reached < last:
            (f,) = await take(stream, 1)
            assert f.data["zxid"] > bookmark  # nothing from before the state again
            if f.event == "deleted":
                del view[f.data["path"]]
            elif f.event in ("created", "data_changed"):
                view[f.data["path"]] = f.data["data"]
            reached = f.data["zxid"]
    for key in keys:
        async with http.get("/v1/nodes" + key) as r:
            assert view[key] == (await r.json())["data"], key
    assert set(view) == {"/race", *keys}


async def test_initial_with_since_is_refused(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/watch/x?initial=true&since=0") as r:
        assert r.status == 400
        assert (await r.json())["code"] == "BadArguments"


async def test_an_initial_state_over_the_bound_is_413(small_http: aiohttp.ClientSession) -> None:
    for name in "abcdef":
        await write(small_http, "POST", f"/big/{name}?parents=true")
    async with small_http.get("/v1/watch/big?recursive=true&initial=true") as r:
        assert r.status == 413
        problem = await r.json()
    assert problem["code"] == "PayloadTooLarge" and problem["limit"] == 5
    async with small_http.get("/v1/watch/big/a?recursive=true&initial=true") as r:
        assert r.status == 200  # a smaller subtree fits


# ---- /v1/watches -------------------------------------------------------------------------


async def test_several_paths_on_one_stream(http: aiohttp.ClientSession) -> None:
    await write(http, "POST", "/many/a?parents=true")
    await write(http, "POST", "/many/b")
    url = "/v1/watches?path=/many/a&path=/many/b&path=/many/none&initial=true"
    async with http.get(url, headers=SSE) as r:
        stream = frames(r)
        state = await take(stream, 5)
        za = await write(http, "PUT", "/many/a", b"1")
        await write(http, "POST", "/many/c")  # a sibling: not watched
        zb = await write(http, "DELETE", "/many/b")
        zn = await write(http, "POST", "/many/none")
        live = await take(stream, 3)
    assert [(f.event, f.data["path"], f.id) for f in state] == [
        ("initial", "/many/a", None),
        ("bookmark", "/many/a", None),
        ("initial", "/many/b", None),
        ("bookmark", "/many/b", None),
        ("bookmark", "/many/none", str(state[0].data["zxid"])),
    ]
    assert [(f.event, f.data["path"], f.id) for f in live] == [
        ("data_changed", "/many/a", str(za)),
        ("deleted", "/many/b", str(zb)),
        ("created", "/many/none", str(zn)),
    ]


async def test_several_paths_long_poll_and_refusals(small_http: aiohttp.ClientSession) -> None:
    z = await write(small_http, "POST", "/lp2")
    async with small_http.get(f"/v1/watches?path=/lp2&path=/&since={z - 1}&timeout=5") as r:
        events = (await r.json())["events"]
    assert brief(events) == [("created", "/lp2"), ("children_changed", "/")]
    for query, status, code in [
        ("", 400, "BadArguments"),
        ("?recursive=true", 400, "BadArguments"),
        ("?path=relative", 400, "InvalidPath"),
        ("?path=/a&since=1&since=2", 400, "BadArguments"),
        ("?path=/a&initial=true&since=1", 400, "BadArguments"),
        ("?path=/a&path=/b&path=/c&path=/d", 429, "TooManyRequests"),  # 3 per client here
    ]:
        separator = "&" if "?" in query else "?"
        async with small_http.get(f"/v1/watches{query}{separator}timeout=0") as r:
            answer = await r.json()
            assert (r.status, answer.get("code")) == (status, code), (query, answer)


# ---- children in pages -------------------------------------------------------------------


async def test_children_come_in_pages(
    small: ServerProcess, small_http: aiohttp.ClientSession
) -> None:
    names = [f"c{i}" for i in range(7)]
    for name in reversed(names):
        await write(small_http, "POST", f"/paged/{name}?parents=true")

    async def page(query: str) -> dict:
        async with small_http.get("/v1/nodes/paged?children=true" + query) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    first = await page("")  # the server's page: 4
    assert first["children"] == names[:4] and first["children_next"] == "c3"
    second = await page("&after=c3")
    assert second["children"] == names[4:] and "children_next" not in second
    assert (await page("&limit=2&after=c1"))["children"] == ["c2", "c3"]
    assert (await page("&limit=3&after=c3"))["children"] == names[4:]
    for query in ("&limit=0", "&limit=5", "&limit=x"):
        async with small_http.get("/v1/nodes/paged?children=true" + query) as r:
            assert r.status == 400, query
    async with small_http.get("/v1/nodes/paged?limit=2") as r:
        assert r.status == 400  # limit pages the children: it needs children=true
    # The client reads every page.
    async with Client([small.url]) as client:
        assert await client.get_children("/paged") == names


# ---- CORS -------------------------------------------------------------------------------


async def test_cors_for_the_allowed_origin_only(small_http: aiohttp.ClientSession) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type,x-coord-session",
    }
    async with small_http.options("/v1/nodes/cors", headers=preflight) as r:
        assert r.status == 204
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == "content-type,x-coord-session"
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with small_http.options(
        "/v1/nodes/cors", headers={**preflight, "Origin": "http://elsewhere"}
    ) as r:
        assert r.status == 403
        assert (await r.json())["code"] == "OriginNotAllowed"
        assert "Access-Control-Allow-Origin" not in r.headers
    async with small_http.get("/v1/nodes/", headers={"Origin": ORIGIN}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Origin" in r.headers.getall("Vary")
        exposed = r.headers["Access-Control-Expose-Headers"]
        assert {"X-Coord-Zxid", "X-Coord-Node"} <= set(exposed.split(", "))
    async with small_http.get("/v1/nodes/", headers={"Origin": "http://elsewhere"}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    async with small_http.get("/v1/nodes/") as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    # An EventSource's stream carries it too (its headers go out before any event).
    async with small_http.get("/v1/watch/cors", headers={**SSE, "Origin": ORIGIN}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_a_malformed_cors_origin_stops_the_server(tmp_path: Path) -> None:
    for bad in ("ui.example", "http://ui.example/", "http://ui.example/app", "ftp://x"):
        with pytest.raises(RuntimeError, match="--cors-origin"):
            start_server(tmp_path / "data", "--cors-origin", bad, timeout=10)
