"""A counting semaphore with leases (Curator's InterProcessSemaphoreV2,
kazoo's Semaphore): at most ``max_leases`` leases are held at any time.

A lease is an ephemeral sequential node ``<path>/leases/lease-<guid>-N``
of its holder's session. Acquirers take turns through a fair mutex (a
``WriteLock`` on ``<path>/locks``): the one holding it creates its lease
node, and while more than ``max_leases`` lease nodes exist it watches the
children of ``<path>/leases``; then it lets the next acquirer in. So
acquirers are served in arrival order, only one of them watches the leases
at a time, and each other waiter watches one node of the mutex's queue.
Every participant must use the same ``max_leases``: the count is not
stored on the server.

Fencing. A lease's ``token`` is the czxid of its node (it grows with every
lease granted) and ``guard()`` makes a multi conditional on the lease.

Suspended and lost. A lease lives as long as its node, which goes with its
session. On ``SUSPENDED`` the holder cannot know it still holds its leases
and on ``LOST`` it does not: every lease's ``lost`` event is set and the
holder should stop using the resource (``release`` them and acquire again
once ``CONNECTED``, or on a new session). An acquirer still waiting when
its session is lost or closed raises ``SessionExpired``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from httpcoord.client.aio import Client
from httpcoord.client.recipes._sequence import (
    create_contender,
    drop_strays,
    leave,
    ordered,
    unless_session_ends,
)
from httpcoord.client.recipes.lock import Grant
from httpcoord.client.recipes.rwlock import WriteLock
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import NoNode

LEASE_PREFIX = "lease-"


class Lease(Grant):
    """One lease: its node, token and ``lost`` event, as a lock's ``Grant``."""


class Semaphore:
    """``async with Semaphore(client, "/sem/db", session, 3).lease() as lease:``"""

    def __init__(
        self,
        client: Client,
        path: str,
        session: Session,
        max_leases: int,
        *,
        data: bytes = b"",
    ) -> None:
        if max_leases < 1:
            raise ValueError(f"max_leases must be at least 1, got {max_leases}")
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.max_leases = max_leases
        self.data = data  # stored in each lease node (who holds it, say)
        self.leases: list[Lease] = []  # held by this participant, oldest first
        self._leases_path = f"{self.path}/leases"

    async def acquire(self, timeout_s: float | None = None) -> Lease:
        """Wait for a lease (``TimeoutError`` after ``timeout_s``, the
        place in line given up). One participant may hold several."""
        mutex = WriteLock(self.client, f"{self.path}/locks", self.session)
        lease: Lease | None = None
        try:
            async with asyncio.timeout(timeout_s):
                await mutex.acquire()
                lease = Lease(
                    *await create_contender(
                        self.client, self._leases_path, LEASE_PREFIX, self.data, self.session
                    )
                )
                await unless_session_ends(self.session, self._wait_for_room(lease.node))
        except BaseException:
            if lease is not None:
                await asyncio.shield(leave(self.client, self.session, lease.node))
            raise
        finally:
            await mutex.release()
        if not self.leases:
            self.session.add_listener(self._on_session)
        self.leases.append(lease)
        if self.session.state is not SessionState.CONNECTED:
            lease.lost.set()
        return lease

    async def release(self, lease: Lease) -> None:
        if lease not in self.leases:
            return
        self.leases.remove(lease)
        if not self.leases:
            self.session.remove_listener(self._on_session)
        lease.lost.set()
        await leave(self.client, self.session, lease.node)

    @asynccontextmanager
    async def lease(self, timeout_s: float | None = None) -> AsyncIterator[Lease]:
        lease = await self.acquire(timeout_s)
        try:
            yield lease
        finally:
            await self.release(lease)

    async def holders(self) -> list[bytes]:
        """The data of every lease node, oldest first (the holders, plus
        the one acquirer that may be waiting for room)."""
        try:
            names = ordered(await self.client.get_children(self._leases_path), (LEASE_PREFIX,))
        except NoNode:
            return []
        out = []
        for name in names:
            try:
                out.append((await self.client.get(f"{self._leases_path}/{name}")).data)
            except NoNode:
                continue  # released meanwhile
        return out

    async def _wait_for_room(self, mine: str) -> None:
        name = mine.rsplit("/", 1)[1]
        while True:
            listing = await self.client.get(self._leases_path, children=True)
            leases = ordered(listing.children or [], (LEASE_PREFIX,))
            if name not in leases:
                raise NoNode(f"this acquirer's lease node {mine} is gone (its session ended)")
            leases = await drop_strays(self.client, self.session, self._leases_path, leases, name)
            # Curator's rule: every lease node counts, this one included.
            if len(leases) <= self.max_leases:
                return
            stream = self.client.watch(self._leases_path, since=listing.zxid)
            try:
                async for _ in stream:
                    break  # a lease came or went: count again
            finally:
                await stream.aclose()

    def _on_session(self, state: SessionState) -> None:
        if state is not SessionState.CONNECTED:
            for lease in self.leases:
                lease.lost.set()
