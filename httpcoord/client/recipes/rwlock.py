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
from types import TracebackType

from httpcoord.client.aio import Client
from httpcoord.client.recipes._sequence import (
    create_contender,
    drop,
    drop_strays,
    ordered,
    unless_session_ends,
    wait_deleted,
)
from httpcoord.client.recipes.lock import Grant
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import NoNode

READ_PREFIX = "read-"
WRITE_PREFIX = "write-"


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
            queue = ordered(children, (READ_PREFIX, WRITE_PREFIX))
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
