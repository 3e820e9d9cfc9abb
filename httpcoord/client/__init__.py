"""The Python client of httpcoord: asyncio first, with a blocking twin.

    from httpcoord.client import Client

    async with Client("127.0.0.1:8181,127.0.0.1:8281,127.0.0.1:8381") as c:
        await c.create("/app/config", b"v1", parents=True)
        node = await c.get("/app/config")

Errors are the server's own classes (``httpcoord.errors``), re-exported
here. docs/client.md is the guide; the recipes are in
``httpcoord.client.recipes``.
"""

from httpcoord.client.aio import Client, RetryPolicy
from httpcoord.client.models import (
    CheckOp,
    CreateOp,
    DeleteOp,
    Event,
    MultiResult,
    Node,
    OpResult,
    Resync,
    SessionInfo,
    SetOp,
    Stat,
    WriteResult,
)
from httpcoord.client.session import Session, SessionState
from httpcoord.client.sync import SyncClient, SyncSession
from httpcoord.errors import (
    BadArguments,
    BadVersion,
    Compacted,
    CoordError,
    DiskFull,
    InvalidPath,
    MultiFailed,
    NoChildrenForEphemerals,
    NodeExists,
    NoNode,
    NotEmpty,
    OutcomeUnknown,
    SessionExpired,
    TooManyRequests,
    Unavailable,
    ZxidNotReached,
)

__all__ = [
    "BadArguments",
    "BadVersion",
    "CheckOp",
    "Client",
    "Compacted",
    "CoordError",
    "CreateOp",
    "DeleteOp",
    "DiskFull",
    "Event",
    "InvalidPath",
    "MultiFailed",
    "MultiResult",
    "NoChildrenForEphemerals",
    "NoNode",
    "Node",
    "NodeExists",
    "NotEmpty",
    "OpResult",
    "OutcomeUnknown",
    "Resync",
    "RetryPolicy",
    "Session",
    "SessionExpired",
    "SessionInfo",
    "SessionState",
    "SetOp",
    "Stat",
    "SyncClient",
    "SyncSession",
    "TooManyRequests",
    "Unavailable",
    "WriteResult",
    "ZxidNotReached",
]
