"""A fair, fenced mutual-exclusion lock (Curator's InterProcessMutex, kazoo's Lock).

Each contender creates an ephemeral sequential node ``<path>/lock-<tag>-NNNNNNNNNN``
in its session; the lowest counter holds the lock, and every other
contender watches only the node just ahead of it, so a release wakes one
waiter, not all of them. Waiters are served in the order they arrived.

Fencing. A grant's ``token`` is the czxid of its node: a later grant's node
was created later, so tokens only grow. A lock alone cannot protect a
resource from a holder that was paused (a long GC, a stopped VM) while its
session expired and the lock passed on: when it wakes it still believes it
holds the lock. Pass the token to the resource and let it refuse any token
lower than one it has seen; for state kept in httpcoord itself, make the
write conditional on the grant with ``guard()`` in a multi, which fails
once the lock node is gone.

Suspended and lost. The grant lives as long as its node, which lives as
long as the session. When the session is ``SUSPENDED`` the holder cannot
know whether it still holds the lock, and when it is ``LOST`` it does not:
``held`` is false in both, ``lost`` (an ``asyncio.Event``) is set, and the
holder should stop touching the resource until it acquires again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType

from httpcoord.client.aio import Client
from httpcoord.client.models import CheckOp
from httpcoord.client.recipes._sequence import (
    create_contender,
    drop_strays,
    leave,
    ordered,
    unless_session_ends,
    wait_deleted,
)
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import NoNode

LOCK_PREFIX = "lock-"


@dataclass
class Grant:
    """One acquisition: its node, its fencing token, and whether it is
    known to be held still."""

    node: str
    token: int  # the czxid of ``node``: grows with every grant
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def guard(self) -> CheckOp:
        """An op that fails a multi unless this grant's node still exists."""
        return CheckOp(self.node)


class Lock:
    """``async with Lock(client, "/locks/db", session) as grant:``"""

    def __init__(
        self,
        client: Client,
        path: str,
        session: Session,
        *,
        data: bytes = b"",
        prefix: str = LOCK_PREFIX,
    ) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.data = data  # stored in the contender's node (who holds it, say)
        self.prefix = prefix
        # The names that queue for this lock (a read-write lock's readers
        # and writers share one queue).
        self.queue_prefixes: tuple[str, ...] = (prefix,)
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
            await asyncio.shield(leave(self.client, self.session, node))
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
        await leave(self.client, self.session, grant.node)

    async def __aenter__(self) -> Grant:
        return await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    def _blocker(self, queue: list[str], at: int) -> str | None:
        """The node this contender waits for to go (None: it holds the lock):
        for a mutex, the one just ahead."""
        return queue[at - 1] if at > 0 else None

    async def _wait_turn(self, mine: str) -> None:
        name = mine.rsplit("/", 1)[1]
        while True:
            queue = ordered(await self.client.get_children(self.path), self.queue_prefixes)
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
