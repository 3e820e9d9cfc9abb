"""Distributed queues: ``Queue`` (kazoo's Queue, Curator's SimpleDistributedQueue)
and ``LockingQueue`` (kazoo's LockingQueue).

Queue. ``put`` creates a persistent sequential node ``<path>/entry-NNNNNNNNNN``
holding the item; the counter the server appends orders the items, so they
come out first in, first out. ``get`` lists the children, reads the lowest
and deletes it: only one delete of a node can succeed, so a consumer that
loses the race to another tries the next item, and no item is handed out
twice. A consumer that finds the queue empty watches ``<path>`` (from the
zxid before its listing, so no put is missed) and lists again when its
child list changes. The queue holds no session: ``SUSPENDED`` and ``LOST``
do not apply to it, and the client carries its requests to another node
when one dies. An item is handed out at most once: a ``get`` that raises
``OutcomeUnknown`` (its node died during the delete), or is cancelled while
it takes an item, may have removed one without handing it to anyone. Use
``LockingQueue`` when an item must not be lost with its consumer.

LockingQueue. Items are ``<path>/entries/entry-NNNNNNNNNN``. ``get`` claims
the lowest unclaimed item with one multi: an ephemeral node
``<path>/taken/<name>`` in the consumer's session, and a rewrite of the item
with its own data at the version just read, which bumps its version. The
item is deleted only by ``ack``, a multi that deletes it at that version
with the claim; ``release`` gives it back. The version is the claim's
fence: if the session ended, the ephemeral went with it and the item is
back in the queue, and once another consumer claimed it the version moved
on, so a late ``ack`` fails (``False``) instead of consuming someone else's
claim. Each claim carries a ``token`` (the zxid of its rewrite), which only
grows, for fencing what the item drives. When the session is ``SUSPENDED``
the consumer cannot know whether it still holds its claims, and when it is
``LOST`` it does not: every held ``Item.lost`` is set, and the consumer
should stop work on it; its ``ack`` still succeeds if the claim survived.
Once the session is ``LOST`` (or ``CLOSED``), ``get`` raises
``SessionExpired``, also while it waits: open a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from httpcoord.client.aio import Client
from httpcoord.client.models import (
    CheckOp,
    CreateOp,
    DeleteOp,
    Event,
    Op,
    Resync,
    SetOp,
    child_path,
)
from httpcoord.client.recipes._sequence import ordered
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import (
    BadVersion,
    MultiFailed,
    NodeExists,
    NoNode,
    OutcomeUnknown,
    SessionExpired,
)

ENTRY_PREFIX = "entry-"

T = TypeVar("T")


class Queue:
    """``await Queue(client, "/jobs").put(b"job")``; ``data = await queue.get()``"""

    def __init__(self, client: Client, path: str, *, prefix: str = ENTRY_PREFIX) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.prefix = prefix

    async def put(self, data: bytes) -> str:
        """Append an item; the path its node got."""
        created = await self.client.create(
            child_path(self.path, self.prefix), data, sequential=True, parents=True
        )
        return created.path

    async def put_all(self, items: Sequence[bytes]) -> list[str]:
        """Append items in one txn: all or none, in this order, contiguous."""
        return await _put_all(self.client, self.path, self.prefix, items)

    async def poll(self) -> bytes | None:
        """Take the head item, or None when the queue is empty (no waiting)."""
        for name in await _children(self.client, self.path, self.prefix):
            node_path = child_path(self.path, name)
            try:
                data = (await self.client.get(node_path)).data
                await self.client.delete(node_path)
            except NoNode:
                continue  # another consumer took it first
            return data
        return None

    async def get(self, timeout_s: float | None = None) -> bytes:
        """Take the head item, waiting for one (``TimeoutError`` after
        ``timeout_s``)."""
        return await _take_waiting(
            self.client, self.path, False, lambda e: e.path == self.path, self.poll, timeout_s
        )

    async def size(self) -> int:
        return len(await _children(self.client, self.path, self.prefix))


@dataclass(eq=False)
class Item:
    """A claimed item of a ``LockingQueue``: ``ack`` it once done."""

    name: str  # entry-NNNNNNNNNN
    data: bytes
    token: int  # the zxid of the claim: grows with every claim of any item
    version: int  # the item's version after the claim: the ack's fence
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class LockingQueue:
    """``item = await q.get(); ...; await q.ack(item)`` with the consumer's session."""

    def __init__(
        self, client: Client, path: str, session: Session, *, prefix: str = ENTRY_PREFIX
    ) -> None:
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.session = session
        self.prefix = prefix
        self.entries = child_path(self.path, "entries")
        self.taken = child_path(self.path, "taken")
        self._held: dict[str, Item] = {}

    async def put(self, data: bytes) -> str:
        created = await self.client.create(
            child_path(self.entries, self.prefix), data, sequential=True, parents=True
        )
        return created.path

    async def put_all(self, items: Sequence[bytes]) -> list[str]:
        return await _put_all(self.client, self.entries, self.prefix, items)

    async def poll(self) -> Item | None:
        """Claim the oldest unclaimed item, or None when there is none (no waiting)."""
        if not self.session.alive:
            raise SessionExpired(f"session {self.session.id} is {self.session.state.value}")
        # Claims listed first: an item claimed after this listing only
        # makes its claim below fail, never succeed twice.
        taken = set(await _children(self.client, self.taken, self.prefix))
        for name in await _children(self.client, self.entries, self.prefix):
            if name not in taken and (item := await self._claim(name)) is not None:
                return item
        return None

    async def get(self, timeout_s: float | None = None) -> Item:
        """Claim the oldest unclaimed item, waiting for one (``TimeoutError``
        after ``timeout_s``). ``SessionExpired`` once the session is gone,
        waiting or not: nothing could be claimed with it."""
        dirs = (self.entries, self.taken)
        taking = asyncio.ensure_future(
            _take_waiting(
                self.client,
                self.path,
                True,
                lambda e: e.type == "children_changed" and e.path in dirs,
                self.poll,
                timeout_s,
            )
        )
        ended = asyncio.ensure_future(self.session.wait_for(SessionState.LOST, SessionState.CLOSED))
        try:
            await asyncio.wait((taking, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not taking.done():
                taking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await taking
        if taking.done() and not taking.cancelled():
            return taking.result()
        raise SessionExpired(f"session {self.session.id} ended while waiting for an item")

    async def ack(self, item: Item) -> bool:
        """Remove the item for good. False if the claim was lost first (the
        session ended): the item went back to the queue, or to another consumer."""
        self._forget(item)
        try:
            await self.client.multi(
                [
                    DeleteOp(child_path(self.entries, item.name), item.version),
                    DeleteOp(child_path(self.taken, item.name)),
                ]
            )
        except MultiFailed as exc:
            if isinstance(exc.error, NoNode | BadVersion):
                return False
            raise
        return True

    async def release(self, item: Item) -> None:
        """Give the item back, first in line again (a no-op if the claim was lost)."""
        self._forget(item)
        try:
            await self.client.multi(
                [
                    CheckOp(child_path(self.entries, item.name), item.version),
                    DeleteOp(child_path(self.taken, item.name)),
                ]
            )
        except MultiFailed as exc:
            if not isinstance(exc.error, NoNode | BadVersion):
                raise

    async def size(self) -> int:
        """Items not yet acked, claimed or not."""
        return len(await _children(self.client, self.entries, self.prefix))

    async def _claim(self, name: str) -> Item | None:
        entry = child_path(self.entries, name)
        try:
            node = await self.client.get(entry)
        except NoNode:
            return None
        ops: list[Op] = [
            SetOp(entry, node.data, node.stat.version),
            CreateOp(child_path(self.taken, name), ephemeral=True, parents=True),
        ]
        try:
            result = await self.client.multi(ops, session=self.session.id)
        except MultiFailed as exc:
            if isinstance(exc.error, NoNode | BadVersion | NodeExists):
                return None  # acked or claimed by another consumer meanwhile
            raise exc.error from exc
        except OutcomeUnknown:
            # Perhaps claimed: the claim node says by whom.
            return await self._claimed_already(name)
        stat = result.results[0].stat
        assert stat is not None
        return self._hold(Item(name, node.data, stat.mzxid, stat.version))

    async def _claimed_already(self, name: str) -> Item | None:
        try:
            # Linearizable: a claim committed but not yet applied on this
            # node must not be taken for no claim.
            claim = await self.client.get(child_path(self.taken, name), consistency="linearizable")
            node = await self.client.get(child_path(self.entries, name))
        except NoNode:
            return None
        if claim.stat.ephemeral_owner != self.session.id:
            return None
        # Nobody else rewrites an item while this claim exists.
        return self._hold(Item(name, node.data, node.stat.mzxid, node.stat.version))

    def _hold(self, item: Item) -> Item:
        if not self._held:
            self.session.add_listener(self._on_session)
        self._held[item.name] = item
        if self.session.state is not SessionState.CONNECTED:
            item.lost.set()
        return item

    def _forget(self, item: Item) -> None:
        item.lost.set()
        if self._held.pop(item.name, None) is not None and not self._held:
            self.session.remove_listener(self._on_session)

    def _on_session(self, state: SessionState) -> None:
        if state is not SessionState.CONNECTED:
            for item in self._held.values():
                item.lost.set()


async def _take_waiting(
    client: Client,
    watch_path: str,
    recursive: bool,
    relevant: Callable[[Event], bool],
    attempt: Callable[[], Awaitable[T | None]],
    timeout_s: float | None,
) -> T:
    """``attempt()`` until it takes something, trying again each time the
    watched children change. Only the wait is timed: an attempt that took
    an item is never cut short, which would lose the item."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    if client.last_zxid == 0:
        await client.exists(watch_path)  # any read gives the zxid to watch from
    # From the zxid before the listing: a change between it and the watch
    # is replayed, never missed. The stream connects on the first wait.
    stream = client.watch(watch_path, recursive=recursive, since=client.last_zxid)
    try:
        while True:
            got = await attempt()
            if got is not None:
                return got
            async with asyncio.timeout_at(deadline):
                await _next_change(stream, relevant)
    finally:
        await stream.aclose()


async def _next_change(
    stream: AsyncGenerator[Event | Resync, None], relevant: Callable[[Event], bool]
) -> None:
    while True:
        item = await anext(stream)
        # A Resync means events were missed: list again.
        if isinstance(item, Resync) or relevant(item):
            return


async def _put_all(client: Client, parent: str, prefix: str, items: Sequence[bytes]) -> list[str]:
    if not items:
        return []
    ops: list[Op] = [
        CreateOp(child_path(parent, prefix), data, sequential=True, parents=True) for data in items
    ]
    result = await client.multi(ops)
    return [r.path for r in result.results]


async def _children(client: Client, path: str, prefix: str) -> list[str]:
    try:
        return ordered(await client.get_children(path), prefix)
    except NoNode:
        return []
