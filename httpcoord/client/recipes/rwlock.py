"""A fair, fenced read-write lock (Curator's InterProcessReadWriteLock,
kazoo's ReadLock and WriteLock).

Readers and writers queue as ephemeral sequential children of one node,
``<path>/read-<guid>-NNNNNNNNNN`` and ``<path>/write-<guid>-NNNNNNNNNN``,
ordered by the counter the server appended (one counter for both kinds). A
writer holds the lock when its node is the first; a reader holds it when
no writer's node is ahead of its own, so any number of readers hold it
together, and a waiting writer holds back every reader that came after it
(no writer starves). Each waiter watches one node: a writer the node just
ahead of it, a reader the last writer ahead of it.

A holder of the write lock may take the read lock of the same
``ReadWriteLock`` too (its own writer does not block it), then release the
write lock: a downgrade, as Curator allows. There is no upgrade.

Fencing. A grant's ``token`` is the czxid of its node, as ``Lock``'s: a
writer's token is above every token granted before it, read or write.
``guard()`` makes a multi conditional on the grant's node.

Lost creates. A create whose outcome is unknown (the node died with the
request in flight) is found again by the random guid in its name, so it
does not stay in the queue as a contender nobody serves.

Suspended and lost. As ``Lock``: the grant lives as long as its node, which
lives as long as the session. On ``SUSPENDED`` and ``LOST`` ``held`` turns
false and ``lost`` is set: stop touching the resource. A contender still
waiting when its session is lost or closed raises ``SessionExpired`` (its
node went with the session) instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

from httpcoord.client.aio import Client
from httpcoord.client.recipes._sequence import SEQUENCE_DIGITS, sequence_of, wait_deleted
from httpcoord.client.recipes.lock import Grant
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import NodeExists, NoNode, OutcomeUnknown, SessionExpired

READ_PREFIX = "read-"
WRITE_PREFIX = "write-"
# Tries of one create, or one delete, whose outcome stayed unknown.
WRITE_ATTEMPTS_MAX = 5

T = TypeVar("T")


def contenders(children: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Children named ``<prefix>...NNNNNNNNNN``, in counter order."""
    mine = [c for c in children if c.startswith(prefixes) and c[-SEQUENCE_DIGITS:].isdigit()]
    return sorted(mine, key=sequence_of)


async def create_contender(
    client: Client, parent: str, prefix: str, data: bytes, session: Session
) -> tuple[str, int]:
    """Create ``<parent>/<prefix><guid>-NNNNNNNNNN`` (ephemeral, sequential):
    its path and czxid. A create whose outcome is unknown is looked for by
    its guid before it is tried again."""
    tag = f"{prefix}{secrets.token_hex(8)}-"
    for _ in range(WRITE_ATTEMPTS_MAX):
        try:
            created = await client.create(
                f"{parent}/{tag}",
                data,
                sequential=True,
                ephemeral=True,
                parents=True,
                session=session.id,
            )
        except OutcomeUnknown:
            found = await _find_tagged(client, parent, tag)
            if found is not None:
                return found
            continue
        assert created.stat is not None
        return created.path, created.stat.czxid
    raise OutcomeUnknown(f"creating a contender under {parent}: no outcome known")


async def create_ephemeral(client: Client, path: str, data: bytes, session: Session) -> None:
    """Create the ephemeral node ``path``, whose name nobody else uses (a
    random one): a create retried after an unknown outcome that finds the
    node there finds its own."""
    for _ in range(WRITE_ATTEMPTS_MAX):
        try:
            await client.create(path, data, ephemeral=True, parents=True, session=session.id)
        except OutcomeUnknown:
            continue
        except NodeExists:
            pass  # an earlier try was applied
        return
    raise OutcomeUnknown(f"creating {path}: no outcome known")


async def _find_tagged(client: Client, parent: str, tag: str) -> tuple[str, int] | None:
    try:
        # Linearizable: a create the leader committed shows here even when
        # this client never saw its zxid.
        listing = await client.get(parent, children=True, consistency="linearizable")
    except NoNode:
        return None
    for name in contenders([c for c in listing.children or [] if c.startswith(tag)], (tag,)):
        stat = await client.exists(f"{parent}/{name}")
        if stat is not None:
            return f"{parent}/{name}", stat.czxid
    return None


async def drop(client: Client, session: Session, path: str) -> None:
    """Delete a contender's node, if its session can still own it."""
    for _ in range(WRITE_ATTEMPTS_MAX):
        if not session.alive:
            return  # the node went, or goes, with the session
        try:
            await client.delete(path)
        except NoNode:
            return
        except OutcomeUnknown:
            continue  # delete again: NoNode if the first one was applied
        return


async def drop_strays(
    client: Client, session: Session, parent: str, queue: list[str], mine: str
) -> list[str]:
    """Delete the other copies of ``mine`` in ``queue`` (a create retried
    after an unknown outcome may have been applied twice): the queue
    without them."""
    tag = mine[:-SEQUENCE_DIGITS]  # <prefix><guid>-
    strays = [c for c in queue if c.startswith(tag) and c != mine]
    for stray in strays:
        await drop(client, session, f"{parent}/{stray}")
    return [c for c in queue if c not in strays]


async def unless_session_ends(session: Session, waiting: Awaitable[T]) -> T:
    """Await ``waiting``; raise ``SessionExpired`` if the session is lost
    or closed first (a waiter's node went with it: nothing is coming)."""
    work = asyncio.ensure_future(waiting)
    ended = asyncio.ensure_future(session.wait_for(SessionState.LOST, SessionState.CLOSED))
    try:
        await asyncio.wait((work, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, ended):
            task.cancel()
        await asyncio.wait((work, ended))  # let the watch close its stream
    if not work.cancelled():
        return work.result()
    raise SessionExpired(f"session {session.id} ended while waiting", session=session.id)


class _QueueLock:
    """One holder's place in the lock's queue; the kinds differ only in
    which node ahead blocks them (``_blocker``)."""

    prefix = ""

    def __init__(self, client: Client, path: str, session: Session, *, data: bytes = b"") -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.data = data  # stored in the contender's node (who holds it, say)
        self.grant: Grant | None = None

    @property
    def held(self) -> bool:
        return (
            self.grant is not None
            and not self.grant.lost.is_set()
            and self.session.state is SessionState.CONNECTED
        )

    async def acquire(self, timeout_s: float | None = None) -> Grant:
        """Wait until this contender holds the lock (``TimeoutError`` after
        ``timeout_s``, its place given up)."""
        if self.grant is not None:
            raise RuntimeError(f"this {type(self).__name__} is held already; use one per holder")
        node, token = await create_contender(
            self.client, self.path, self.prefix, self.data, self.session
        )
        try:
            async with asyncio.timeout(timeout_s):
                await unless_session_ends(self.session, self._wait_turn(node))
        except BaseException:
            await drop(self.client, self.session, node)
            raise
        grant = Grant(node, token)
        self.grant = grant
        self.session.add_listener(self._on_session)
        if self.session.state is not SessionState.CONNECTED:
            grant.lost.set()  # suspended while the last read was on its way
        return grant

    async def release(self) -> None:
        grant, self.grant = self.grant, None
        if grant is None:
            return
        self.session.remove_listener(self._on_session)
        grant.lost.set()
        await drop(self.client, self.session, grant.node)

    async def __aenter__(self) -> Grant:
        return await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    def _blocker(self, queue: list[str], at: int) -> str | None:
        raise NotImplementedError

    async def _wait_turn(self, mine: str) -> None:
        name = mine.rsplit("/", 1)[1]
        while True:
            children = await self.client.get_children(self.path)
            queue = contenders(children, (READ_PREFIX, WRITE_PREFIX))
            if name not in queue:
                raise NoNode(f"this contender's node {mine} is gone (its session ended)")
            queue = await drop_strays(self.client, self.session, self.path, queue, name)
            blocker = self._blocker(queue, queue.index(name))
            if blocker is None:
                return
            await wait_deleted(self.client, f"{self.path}/{blocker}")

    def _on_session(self, state: SessionState) -> None:
        if state is not SessionState.CONNECTED and self.grant is not None:
            self.grant.lost.set()


class WriteLock(_QueueLock):
    """Exclusive: held when no contender of either kind is ahead. Alone (with
    no readers) it is a fair mutex."""

    prefix = WRITE_PREFIX

    def _blocker(self, queue: list[str], at: int) -> str | None:
        return queue[at - 1] if at > 0 else None


class ReadLock(_QueueLock):
    """Shared: held when no writer is ahead (but ``writer``'s own held grant)."""

    prefix = READ_PREFIX

    def __init__(
        self,
        client: Client,
        path: str,
        session: Session,
        *,
        data: bytes = b"",
        writer: WriteLock | None = None,
    ) -> None:
        super().__init__(client, path, session, data=data)
        self.writer = writer

    def _blocker(self, queue: list[str], at: int) -> str | None:
        own = self.writer.grant if self.writer is not None else None
        own_name = own.node.rsplit("/", 1)[1] if own is not None else None
        for name in reversed(queue[:at]):
            if name.startswith(WRITE_PREFIX) and name != own_name:
                return name
        return None


class ReadWriteLock:
    """``rw = ReadWriteLock(client, "/locks/db", session)``, then
    ``async with rw.read_lock as grant:`` or ``async with rw.write_lock``.
    One ``ReadWriteLock`` per holder, as one ``Lock`` per holder."""

    def __init__(self, client: Client, path: str, session: Session, *, data: bytes = b"") -> None:
        self.write_lock = WriteLock(client, path, session, data=data)
        self.read_lock = ReadLock(client, path, session, data=data, writer=self.write_lock)
