"""Leader election (Curator's LeaderLatch, kazoo's Election).

Candidates queue as a fair lock does (``Lock``, with ``candidate-`` nodes
holding each candidate's identifier); the head of the queue leads. The
leadership is a ``Grant``: its ``token`` fences the leader's actions (a
leader that was paused and replaced acts with a lower token than its
successor), and its ``lost`` event is set as soon as the leadership can no
longer be relied on: the session is ``SUSPENDED`` or ``LOST``, or the
leader resigned. A leader must stop acting as one when ``lost`` is set,
and campaign again if it wants to lead.
"""

from __future__ import annotations

from httpcoord.client.aio import Client
from httpcoord.client.recipes._sequence import ordered
from httpcoord.client.recipes.lock import Grant, Lock
from httpcoord.client.session import Session
from httpcoord.errors import NoNode

CANDIDATE_PREFIX = "candidate-"


class LeaderElection:
    def __init__(self, client: Client, path: str, session: Session, identifier: bytes) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self._lock = Lock(client, path, session, data=identifier, prefix=CANDIDATE_PREFIX)

    @property
    def is_leader(self) -> bool:
        return self._lock.held

    async def campaign(self, timeout_s: float | None = None) -> Grant:
        """Wait until this candidate leads; its leadership."""
        return await self._lock.acquire(timeout_s)

    async def resign(self) -> None:
        await self._lock.release()

    async def contenders(self) -> list[bytes]:
        """The candidates' identifiers, the leader first."""
        return await contenders(self.client, self.path)

    async def leader(self) -> bytes | None:
        """The current leader's identifier, None when nobody campaigns."""
        candidates = await self.contenders()
        return candidates[0] if candidates else None


async def contenders(client: Client, path: str) -> list[bytes]:
    """The identifiers of the candidates of the election at ``path``, the
    leader first (no session needed: anyone may look)."""
    path = path.rstrip("/") or "/"
    try:
        names = ordered(await client.get_children(path), CANDIDATE_PREFIX)
    except NoNode:
        return []
    out = []
    for name in names:
        try:
            out.append((await client.get(f"{path}/{name}")).data)
        except NoNode:
            continue  # left meanwhile
    return out
