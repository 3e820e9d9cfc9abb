"""What the queue-like recipes share: a contender is an ephemeral
sequential child of the recipe's node, contenders are ordered by the
counter the server appended, and a contender waits for the one just ahead
of it to go (each watches one node: no herd when the head leaves)."""

from __future__ import annotations

from httpcoord.client.aio import Client
from httpcoord.client.models import Event, Resync
from httpcoord.errors import NoNode

SEQUENCE_DIGITS = 10


def sequence_of(name: str) -> int:
    """The counter at the end of a sequential node's name."""
    return int(name[-SEQUENCE_DIGITS:])


def ordered(children: list[str], prefix: str) -> list[str]:
    """Children named ``prefix<counter>``, in counter order."""
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
