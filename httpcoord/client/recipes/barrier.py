"""Barriers (Curator's DistributedBarrier and DistributedDoubleBarrier,
kazoo's Barrier and DoubleBarrier).

``Barrier``: while the node ``<path>`` exists the barrier is up, and
``wait()`` returns once it is gone. The node is persistent, so the barrier
stays up when the one who set it dies (remove it by hand then). It needs no
session: a waiter that loses its node of the cluster resumes its watch on
another, and neither ``SUSPENDED`` nor ``LOST`` changes anything.

``DoubleBarrier``: ``num_participants`` meet, do their work, and leave
together. Each participant is an ephemeral child of ``<path>`` with a
random name (its data: the participant's ``data``). ``enter()`` returns once
``num_participants`` have entered: the participant that sees that many
children creates ``<path>/ready``, which the others watch for; later
entrants find ``ready`` and pass at once. ``leave()`` returns once every
participant has left, as in ZooKeeper's recipe: the participant with the
lowest name waits for the highest to go; every other one deletes its node
and waits for the lowest to go. Once all are out, ``ready`` is deleted.

Suspended and lost (double barrier). ``SUSPENDED`` changes nothing: the
node probably still exists, and the waits go on. On ``LOST`` the
participant's node is gone, so the others count it as never entered (if
``ready`` was not there yet) or as left; its own ``enter()`` or ``leave()``
raises ``SessionExpired``.
"""

from __future__ import annotations

import asyncio
import secrets

from httpcoord.client.aio import Client
from httpcoord.client.models import Event, Resync
from httpcoord.client.recipes._sequence import (
    WRITE_ATTEMPTS_MAX,
    create_ephemeral,
    drop,
    unless_session_ends,
    wait_deleted,
)
from httpcoord.client.session import Session
from httpcoord.errors import NodeExists, NoNode, OutcomeUnknown

READY = "ready"  # not a participant's name: those are hex


class Barrier:
    """``await Barrier(client, "/barriers/deploy").wait()``"""

    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path

    async def create(self) -> None:
        """Put the barrier up (already up is fine)."""
        await _ensure(self.client, self.path)

    async def remove(self) -> bool:
        """Take the barrier down: whether it was up."""
        try:
            await self.client.delete(self.path)
        except NoNode:
            return False
        return True

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the barrier is down: False if it still was after
        ``timeout_s`` (0: only look)."""
        if await self.client.exists(self.path) is None:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await wait_deleted(self.client, self.path)
        except TimeoutError:
            return False
        return True


class DoubleBarrier:
    """``async with DoubleBarrier(client, "/barriers/job", session, 5):``
    enters, and leaves on the way out."""

    def __init__(
        self,
        client: Client,
        path: str,
        session: Session,
        num_participants: int,
        *,
        data: bytes = b"",
    ) -> None:
        if num_participants < 1:
            raise ValueError(f"num_participants must be at least 1, got {num_participants}")
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.num_participants = num_participants
        self.data = data
        self.name = secrets.token_hex(16)
        self.node = f"{self.path}/{self.name}"
        self.entered = False

    async def enter(self, timeout_s: float | None = None) -> None:
        """Wait until ``num_participants`` have entered (``TimeoutError``
        after ``timeout_s``, this participant gone again)."""
        if self.entered:
            raise RuntimeError("this participant has entered already")
        await create_ephemeral(self.client, self.node, self.data, self.session)
        try:
            async with asyncio.timeout(timeout_s):
                await unless_session_ends(self.session, self._wait_ready())
        except BaseException:
            await drop(self.client, self.session, self.node)
            raise
        self.entered = True

    async def leave(self, timeout_s: float | None = None) -> None:
        """Wait until every participant has left (``TimeoutError`` after
        ``timeout_s``; this participant's node may be gone already)."""
        if not self.entered:
            raise RuntimeError("this participant has not entered")
        self.entered = False
        async with asyncio.timeout(timeout_s):
            await unless_session_ends(self.session, self._wait_all_left())
        try:
            await self.client.delete(f"{self.path}/{READY}")
        except NoNode:
            pass  # another participant was last out too

    async def __aenter__(self) -> None:
        await self.enter()

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    async def _wait_ready(self) -> None:
        ready = f"{self.path}/{READY}"
        while True:
            listing = await self.client.get(self.path, children=True)
            names = listing.children or []
            if READY in names:
                return
            if self.name not in names:
                raise NoNode(f"this participant's node {self.node} is gone (its session ended)")
            if len(names) >= self.num_participants:
                await _ensure(self.client, ready)
                return
            if await _wait_created(self.client, ready, since=listing.zxid):
                return

    async def _wait_all_left(self) -> None:
        mine_exists = True
        while True:
            listing = await self.client.get(self.path, children=True)
            names = sorted(c for c in listing.children or [] if c != READY)
            if self.name not in names and mine_exists:
                raise NoNode(f"this participant's node {self.node} is gone (its session ended)")
            if not names:
                return
            if names == [self.name]:
                await drop(self.client, self.session, self.node)
                return
            if names[0] == self.name:
                # The lowest goes last: it waits for the others, one at a time.
                await wait_deleted(self.client, f"{self.path}/{names[-1]}")
                continue
            if mine_exists:
                await drop(self.client, self.session, self.node)
                mine_exists = False
            await wait_deleted(self.client, f"{self.path}/{names[0]}")


async def _ensure(client: Client, path: str) -> None:
    """Create the persistent ``path`` unless it exists."""
    for _ in range(WRITE_ATTEMPTS_MAX):
        try:
            await client.create(path, parents=True)
        except NodeExists:
            return
        except OutcomeUnknown:
            continue  # try again: NodeExists if the first one was applied
        return
    raise OutcomeUnknown(f"creating {path}: no outcome known")


async def _wait_created(client: Client, path: str, *, since: int) -> bool:
    """Wait for ``path`` to be created after zxid ``since``: True once it
    was; False when the watch had to start afresh and it still is not
    there (look again)."""
    stream = client.watch(path, since=since)
    try:
        async for item in stream:
            if isinstance(item, Resync):
                return item.nodes.get(path) is not None
            if isinstance(item, Event) and item.type == "created":
                return True
    finally:
        await stream.aclose()
    return False
