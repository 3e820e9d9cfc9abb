"""A shared counter (Curator's DistributedAtomicLong, kazoo's Counter):
the value is the node's data as decimal text, changed by compare-and-set
on the node's version, retried until no other writer came in between."""

from __future__ import annotations

from httpcoord.client.aio import Client
from httpcoord.errors import BadVersion, NodeExists, NoNode


class Counter:
    def __init__(self, client: Client, path: str, *, attempts_max: int = 1000) -> None:
        self.client = client
        self.path = path
        self.attempts_max = attempts_max  # CAS tries before giving up (heavy contention)

    async def get(self) -> int:
        try:
            return int((await self.client.get(self.path)).data or b"0")
        except NoNode:
            return 0

    async def add(self, delta: int = 1) -> int:
        """Add ``delta`` atomically; the new value."""
        for _ in range(self.attempts_max):
            try:
                node = await self.client.get(self.path)
            except NoNode:
                try:
                    await self.client.create(self.path, str(delta).encode(), parents=True)
                    return delta
                except NodeExists:
                    continue  # another writer created it first: add to theirs
            value = int(node.data or b"0") + delta
            try:
                await self.client.set(self.path, str(value).encode(), version=node.stat.version)
            except BadVersion:
                continue  # changed since the read: read again
            except NoNode:
                continue  # deleted since the read: start again from 0
            return value
        raise BadVersion(f"{self.path}: {self.attempts_max} compare-and-set attempts all lost")
