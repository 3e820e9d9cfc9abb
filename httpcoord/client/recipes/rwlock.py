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

from httpcoord.client.aio import Client
from httpcoord.client.recipes.lock import Lock
from httpcoord.client.session import Session

READ_PREFIX = "read-"
WRITE_PREFIX = "write-"


class WriteLock(Lock):
    """Exclusive: held when no contender of either kind is ahead. Alone (with
    no readers) it is a fair mutex."""

    def __init__(self, client: Client, path: str, session: Session, *, data: bytes = b"") -> None:
        super().__init__(client, path, session, data=data, prefix=WRITE_PREFIX)
        self.queue_prefixes = (READ_PREFIX, WRITE_PREFIX)


class ReadLock(Lock):
    """Shared: held when no writer is ahead (but ``writer``'s own held grant)."""

    def __init__(
        self,
        client: Client,
        path: str,
        session: Session,
        *,
        data: bytes = b"",
        writer: WriteLock | None = None,
    ) -> None:
        super().__init__(client, path, session, data=data, prefix=READ_PREFIX)
        self.queue_prefixes = (READ_PREFIX, WRITE_PREFIX)
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
