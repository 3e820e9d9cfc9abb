"""Group membership (kazoo's Party and ShallowParty, Curator's
GroupMember).

A member is an ephemeral child of the party's node with a random name, so
it stays a member exactly as long as its session (or until ``leave()``).
``Party`` keeps each member's data in its node and ``members()`` reads them
all, in the order the members joined; ``ShallowParty`` puts the member's
identifier in the node's name, ``<identifier>-<random>``, so ``members()``
is one read of the children. ``follow()`` yields the members now and again
after each change, from one watch of the party's node: a burst of joins and
leaves may come as one change, and it never yields a list older than one
it yielded.

Suspended and lost. ``SUSPENDED`` changes nothing: the member node most
likely still exists and the others still see this member. On ``LOST`` the
node is gone with the session (the others' ``follow()`` shows it leave) and
``joined`` turns false: join again through a new session to be a member
again. ``members()`` and ``follow()`` read without a session and go on
whatever the session's state.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from httpcoord.client.aio import Client
from httpcoord.client.recipes._sequence import WRITE_ATTEMPTS_MAX, create_ephemeral, drop
from httpcoord.client.session import Session
from httpcoord.errors import NodeExists, NoNode, OutcomeUnknown, Unavailable

M = TypeVar("M")
_RANDOM_HEX_CHARS = 32


class _Group(Generic[M]):
    def __init__(self, client: Client, path: str, session: Session, name: str, data: bytes) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.node = f"{self.path}/{name}"
        self._data = data
        self._joined = False

    @property
    def joined(self) -> bool:
        """Joined, left by no ``leave()``, and the session not gone."""
        return self._joined and self.session.alive

    async def join(self) -> None:
        """Become a member (already a member is fine)."""
        await create_ephemeral(self.client, self.node, self._data, self.session)
        self._joined = True

    async def leave(self) -> None:
        self._joined = False
        await drop(self.client, self.session, self.node)

    async def members(self) -> list[M]:
        try:
            names = await self.client.get_children(self.path)
        except NoNode:
            return []
        return await self._members_of(names)

    async def follow(self) -> AsyncGenerator[list[M], None]:
        """``async for members in party.follow():`` the members now, then
        after every change of them; ``aclose()`` (or ``aclosing``) ends it."""
        zxid, members = await self._start()
        yield members
        stream = self.client.watch(self.path, since=zxid)
        try:
            async for _ in stream:
                # Read afresh rather than apply the event: one read catches
                # up with a whole burst, and the client reads no older than
                # the event it just saw.
                now = await self.members()
                if now != members:
                    members = now
                    yield members
        finally:
            await stream.aclose()

    async def _start(self) -> tuple[int, list[M]]:
        """The members, and the zxid of the read they come from."""
        for _ in range(WRITE_ATTEMPTS_MAX):
            try:
                listing = await self.client.get(self.path, children=True)
            except NoNode:
                # Create the party to have a zxid to watch from.
                try:
                    created = await self.client.create(self.path, parents=True)
                except (NodeExists, OutcomeUnknown):
                    continue  # read again
                return created.zxid, []
            return listing.zxid, await self._members_of(listing.children or [])
        raise Unavailable(f"{self.path} kept coming and going: no members read")

    async def _members_of(self, names: list[str]) -> list[M]:
        raise NotImplementedError


class Party(_Group[bytes]):
    """``Party(client, "/services/api", session, b"10.0.0.7:8080")``: members
    are their data, in the order they joined."""

    def __init__(self, client: Client, path: str, session: Session, data: bytes = b"") -> None:
        super().__init__(client, path, session, secrets.token_hex(_RANDOM_HEX_CHARS // 2), data)
        self.data = data

    async def _members_of(self, names: list[str]) -> list[bytes]:
        async def read(name: str) -> tuple[int, bytes] | None:
            try:
                node = await self.client.get(f"{self.path}/{name}")
            except NoNode:
                return None  # left meanwhile
            return node.stat.czxid, node.data

        found = await asyncio.gather(*(read(n) for n in names))
        return [data for _, data in sorted(m for m in found if m is not None)]


class ShallowParty(_Group[str]):
    """``ShallowParty(client, "/services/api", session, "10.0.0.7:8080")``:
    members are their identifiers, sorted; the identifier is part of a
    znode name, so it holds no ``/``."""

    def __init__(self, client: Client, path: str, session: Session, identifier: str) -> None:
        if not identifier or "/" in identifier:
            raise ValueError(f"an identifier is a non-empty name without '/': {identifier!r}")
        name = f"{identifier}-{secrets.token_hex(_RANDOM_HEX_CHARS // 2)}"
        super().__init__(client, path, session, name, b"")
        self.identifier = identifier

    async def _members_of(self, names: list[str]) -> list[str]:
        suffix = _RANDOM_HEX_CHARS + 1  # "-" and the random part
        return sorted(n[:-suffix] for n in names if len(n) > suffix and n[-suffix] == "-")
