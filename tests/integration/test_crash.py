"""Crash safety: SIGKILL the server while concurrent writes are in flight,
restart it on the same data dir, and find every acknowledged write there."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import ServerProcess, start_server

WRITERS = 16
ACK_WAIT_S = 30.0


class Acks:
    """What the server acknowledged before it died."""

    def __init__(self) -> None:
        self.created: dict[int, int] = {}  # writer -> highest acknowledged index
        self.counter = -1  # highest acknowledged CAS value of /crash/counter
        self.total = 0


async def writer(http: aiohttp.ClientSession, w: int, acks: Acks, start: int) -> None:
    i = start
    while True:
        try:
            async with http.post(f"/v1/nodes/crash/w{w}-{i:06d}", data=b"%d" % i) as r:
                if r.status != 201:
                    raise AssertionError(f"write refused: {r.status} {await r.text()}")
        except (TimeoutError, aiohttp.ClientError):
            return  # the server is gone
        acks.created[w] = i
        acks.total += 1
        i += 1


async def counter(http: aiohttp.ClientSession, acks: Acks) -> None:
    """Compare-and-set increments: the value always equals the node's version."""
    while True:
        try:
            async with http.get("/v1/nodes/crash/counter") as r:
                stat = (await r.json())["stat"]
            version = stat["version"]
            url = f"/v1/nodes/crash/counter?version={version}"
            async with http.put(url, data=b"%d" % (version + 1)) as r:
                if r.status != 200:
                    raise AssertionError(f"CAS refused: {r.status} {await r.text()}")
        except (TimeoutError, aiohttp.ClientError):
            return
        acks.counter = version + 1
        acks.total += 1


async def crash_round(srv: ServerProcess, rng: random.Random, starts: dict[int, int]) -> Acks:
    acks = Acks()
    kill_after = rng.randint(100, 600)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base_url=srv.url, timeout=timeout) as http:
        tasks = [asyncio.create_task(writer(http, w, acks, starts[w])) for w in range(WRITERS)]
        tasks.append(asyncio.create_task(counter(http, acks)))
        deadline = asyncio.get_running_loop().time() + ACK_WAIT_S
        while acks.total < kill_after:
            assert asyncio.get_running_loop().time() < deadline, "writes stalled"
            await asyncio.sleep(0.005)
        # Mid-flight: 17 clients have requests outstanding right now.
        os.kill(srv.pid, signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=ACK_WAIT_S)
    srv.proc.wait(10)
    return acks


async def verify(srv: ServerProcess, acks: Acks, starts: dict[int, int]) -> None:
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.get("/v1/nodes/crash?children=true") as r:
            names = set((await r.json())["children"])
        for w in range(WRITERS):
            present = sorted(int(n.split("-")[1]) for n in names if n.startswith(f"w{w}-"))
            last_acked = acks.created.get(w, starts[w] - 1)
            # Every acknowledged write is there, and there are no holes: the
            # writer issued write i+1 only after i was acknowledged.
            if present:
                assert present == list(range(present[0], present[0] + len(present)))
            assert (present[-1] if present else -1) >= last_acked, f"writer {w} lost acked writes"
            starts[w] = (present[-1] + 1) if present else 0
        async with http.get("/v1/nodes/crash/counter") as r:
            node = await r.json()
        assert node["stat"]["version"] >= acks.counter
        assert node["data"] == str(node["stat"]["version"])
        # The next write's zxid is above every zxid the tree holds.
        async with http.post("/v1/nodes/crash/after") as r:
            after = (await r.json())["zxid"]
        assert after > node["stat"]["mzxid"]
        async with http.delete("/v1/nodes/crash/after") as r:
            assert r.status == 200


async def run_crashes(tmp_path: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    # Small snapshot interval so that crashes also hit snapshot + truncation.
    args = ("--snapshot-entries", "150")
    with start_server(data_dir, *args) as srv:
        async with aiohttp.ClientSession(base_url=srv.url) as http:
            await (await http.post("/v1/nodes/crash/counter?parents=true", data=b"0")).read()
    starts = {w: 0 for w in range(WRITERS)}
    for _ in range(rounds):
        srv = start_server(data_dir, *args)
        try:
            acks = await crash_round(srv, rng, starts)
        finally:
            srv.stop()
        with start_server(data_dir, *args) as again:
            await verify(again, acks, starts)


async def test_sigkill_during_concurrent_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    await run_crashes(tmp_path, rounds=3, seed=1)


@pytest.mark.chaos
@pytest.mark.parametrize("seed", range(5))
async def test_many_crashes(tmp_path: Path, seed: int) -> None:
    await run_crashes(tmp_path, rounds=10, seed=seed)
