"""What the queue-like recipes share: a contender is an ephemeral
sequential child of the recipe's node, contenders are ordered by the
counter the server appended, and a contender waits for the one just ahead
of it to go (each watches one node: no herd when the head leaves).

A contender's name carries a random tag (``<prefix><tag>-<counter>``), so
that a create whose answer was lost (``OutcomeUnknown``) is found again
rather than left in the queue as a contender nobody serves, and a create
applied twice is noticed and its extra copy deleted."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import TypeVar

from httpcoord.client.aio import Client
from httpcoord.client.models import Event, Resync
from httpcoord.client.session import Session, SessionState
from httpcoord.errors import CoordError, NodeExists, NoNode, OutcomeUnknown, SessionExpired

T = TypeVar("T")

SEQUENCE_DIGITS = 10


def sequence_of(name: str) -> int:
    """The counter at the end of a sequential node's name."""
    return int(name[-SEQUENCE_DIGITS:])


def ordered(children: list[str], prefix: str | tuple[str, ...]) -> list[str]:
    """Children named ``<prefix>...<counter>`` (any of the prefixes), in
    counter order."""
    mine = [c for c in children if c.startswith(prefix) and c[-SEQUENCE_DIGITS:].isdigit()]
    return sorted(mine, key=sequence_of)


async def wait_deleted(client: Client, path: str) -> None:
    """Return once ``path`` does not exist (at once if it is already gone)."""
    try:
        node = await client.get(path)
    except NoNode:
        return
    # Watch from the read: a delete between the read and the watch is
    # replayed, never missed.
    stream = client.watch(path, since=node.zxid)
    try:
        async for item in stream:
            if isinstance(item, Resync):
                if item.nodes.get(path) is None:
                    return
            elif isinstance(item, Event) and item.type == "deleted":
                return
    finally:
        await stream.aclose()


# Tries of one create, or one delete, whose outcome stayed unknown.
WRITE_ATTEMPTS_MAX = 5


async def create_contender(
    client: Client, parent: str, prefix: str, data: bytes, session: Session
) -> tuple[str, int]:
    """Create ``<parent>/<prefix><guid>-NNNNNNNNNN`` (ephemeral, sequential):
    its path and czxid. A create whose outcome is unknown is looked for by
    its guid before it is tried again."""
    tag = f"{prefix}{secrets.token_hex(8)}-"
    try:
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
                # The lost create may yet be applied after a retry: the tag
                # is dropped whole when this contender leaves.
                _UNSURE_TAGS.add(tag)
                found = await _find_tagged(client, parent, tag)
                if found is not None:
                    return found
                continue
            assert created.stat is not None
            return created.path, created.stat.czxid
        raise OutcomeUnknown(f"creating a contender under {parent}: no outcome known")
    except BaseException:
        # Cancelled or failed with a create perhaps applied: leave no node
        # that would block the queue for as long as the session lives.
        await asyncio.shield(drop_tag(client, session, parent, tag))
        raise


# Tags whose create had an unknown outcome: a copy may land late, so leaving
# drops every node of the tag, not just the one this contender holds.
_UNSURE_TAGS: set[str] = set()


async def leave(client: Client, session: Session, node: str) -> None:
    """A contender leaves: its node goes, and any late copy of it."""
    await drop(client, session, node)
    parent, name = node.rsplit("/", 1)
    tag = name[:-SEQUENCE_DIGITS]
    if tag in _UNSURE_TAGS:
        await drop_tag(client, session, parent or "/", tag)


async def drop_tag(client: Client, session: Session, parent: str, tag: str) -> None:
    """Delete every node of a contender (its tag), as the leader sees them."""
    _UNSURE_TAGS.discard(tag)
    if not session.alive:
        return  # they went, or go, with the session
    try:
        listing = await client.get(parent, children=True, consistency="linearizable")
    except CoordError:
        return  # nothing to drop, or nobody to ask: the session's end takes them
    for name in listing.children or []:
        if name.startswith(tag):
            await drop(client, session, f"{parent}/{name}")


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
    for name in ordered(listing.children or [], tag):
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
