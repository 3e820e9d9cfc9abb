"""One process of contenders for tests/integration/test_client.py's lock and
election tests: ``python -m tests.integration.lock_worker MODE ENDPOINTS
CONTENDERS ROUNDS``, MODE ``lock`` or ``elect``.

Each contender opens its own session and, ROUNDS times, takes the lock (or
leadership) on /recipes/mutex, then uses the fenced resource /recipes/fence
(its data: the highest token that used it): it reads the fence, and writes
its own token with a multi that holds only if its grant's node still
exists and nobody wrote the fence since the read. One JSON line per hold
goes to stdout: token, monotonic ns when the grant came and when the
holder stopped using the resource, the fence it found, whether its write
held. Run until done; bounded by the test's timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from httpcoord.client import CheckOp, Client, MultiFailed, NoNode, SetOp
from httpcoord.client.recipes.election import LeaderElection
from httpcoord.client.recipes.lock import Grant, Lock

MUTEX = "/recipes/mutex"
FENCE = "/recipes/fence"


async def use_resource(client: Client, grant: Grant) -> dict[str, object]:
    try:
        node = await client.get(FENCE)
        seen, version = int(node.data), node.stat.version
    except NoNode:
        seen, version = 0, -1
    ops = [grant.guard(), SetOp(FENCE, str(grant.token).encode())]
    if version >= 0:
        ops.insert(1, CheckOp(FENCE, version))
    try:
        if version < 0:
            await client.create(FENCE, str(grant.token).encode(), parents=True)
        else:
            await client.multi(ops)
        held = True
    except (MultiFailed, NoNode) as exc:
        held = False
        print(f"fenced write refused: {exc!r}", file=sys.stderr)
    await asyncio.sleep(0.005)
    return {"seen": seen, "held": held}


async def contender(mode: str, endpoints: str, rounds: int, name: str) -> None:
    async with Client(endpoints) as client, client.session(5000) as session:
        for _ in range(rounds):
            if mode == "lock":
                lock = Lock(client, MUTEX, session, data=name.encode())
                grant = await lock.acquire()
                release = lock.release
            else:
                election = LeaderElection(client, MUTEX, session, name.encode())
                grant = await election.campaign()
                release = election.resign
            acquired = time.monotonic_ns()
            outcome = await use_resource(client, grant)
            released = time.monotonic_ns()
            await release()
            record = {"name": name, "token": grant.token, "acquired": acquired}
            record.update(outcome, released=released)
            print(json.dumps(record), flush=True)


async def main(mode: str, endpoints: str, contenders: int, rounds: int) -> None:
    tag = f"p{int(time.monotonic_ns()) % 100000}"
    await asyncio.gather(
        *(contender(mode, endpoints, rounds, f"{tag}-{i}") for i in range(contenders))
    )


if __name__ == "__main__":
    mode, endpoints, contenders, rounds = sys.argv[1:5]
    asyncio.run(main(mode, endpoints, int(contenders), int(rounds)))
