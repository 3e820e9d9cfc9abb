"""Txns: what the log holds and the tree applies.

A txn is the *request* (create, set, delete, check, or a multi of them) plus
the leader's timestamp. The tree decides the outcome at apply time, so every
replica that applies the same log decides the same way; a refused txn
changes nothing and takes no zxid. The log encoding is JSON (orjson) with
node data in base64, versioned by ``v``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

ANY_VERSION = -1
TXN_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CreateOp:
    path: str
    data: bytes = b""
    sequential: bool = False
    parents: bool = False
    ephemeral_owner: str = ""  # a session id makes the node ephemeral
    container: bool = False  # reaped once it has had children and is empty again
    ttl_ms: int = 0  # > 0: reaped once unmodified this long and childless


@dataclass(frozen=True, slots=True)
class SetDataOp:
    path: str
    data: bytes
    version: int = ANY_VERSION
    # Without a version, a set on a missing node creates it (HTTP PUT upsert).
    upsert: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    path: str
    version: int = ANY_VERSION
    recursive: bool = False


@dataclass(frozen=True, slots=True)
class CheckOp:
    path: str
    version: int = ANY_VERSION


@dataclass(frozen=True, slots=True)
class OpenSessionOp:
    session_id: str  # chosen at random by the node that accepted the request
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class CloseSessionOp:
    session_id: str
    expired: bool = False  # closed by the expiry authority, not by its client


@dataclass(frozen=True, slots=True)
class ReapOp:
    """The server's removal of a container or TTL node. Carries the czxid the
    reaper saw, so a node deleted and created again in between is left alone;
    the conditions are checked again at apply time."""

    path: str
    czxid: int


Op = CreateOp | SetDataOp | DeleteOp | CheckOp | OpenSessionOp | CloseSessionOp | ReapOp


@dataclass(frozen=True, slots=True)
class Txn:
    ops: tuple[Op, ...]
    time_ms: int
    # A multi answers with a result per op and fails as a whole; a single op
    # answers with its own result or error.
    multi: bool = False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _op_to_json(op: Op) -> dict[str, Any]:
    if isinstance(op, CreateOp):
        d: dict[str, Any] = {"op": "create", "path": op.path, "data": _b64(op.data)}
        if op.sequential:
            d["sequential"] = True
        if op.parents:
            d["parents"] = True
        if op.ephemeral_owner:
            d["ephemeral_owner"] = op.ephemeral_owner
        if op.container:
            d["container"] = True
        if op.ttl_ms:
            d["ttl_ms"] = op.ttl_ms
        return d
    if isinstance(op, SetDataOp):
        d = {"op": "set", "path": op.path, "data": _b64(op.data), "version": op.version}
        if op.upsert:
            d["upsert"] = True
        return d
    if isinstance(op, DeleteOp):
        d = {"op": "delete", "path": op.path, "version": op.version}
        if op.recursive:
            d["recursive"] = True
        return d
    if isinstance(op, CheckOp):
        return {"op": "check", "path": op.path, "version": op.version}
    if isinstance(op, OpenSessionOp):
        return {"op": "open_session", "session": op.session_id, "ttl_ms": op.ttl_ms}
    if isinstance(op, CloseSessionOp):
        return {"op": "close_session", "session": op.session_id, "expired": op.expired}
    return {"op": "reap", "path": op.path, "czxid": op.czxid}


def encode_txn(txn: Txn) -> bytes:
    return orjson.dumps(
        {
            "v": TXN_FORMAT_VERSION,
            "time": txn.time_ms,
            "multi": txn.multi,
            "ops": [_op_to_json(op) for op in txn.ops],
        }
    )


class TxnDecodeError(ValueError):
    pass


def _op_from_json(d: dict[str, Any]) -> Op:
    kind = d["op"]
    if kind == "create":
        return CreateOp(
            d["path"],
            base64.b64decode(d["data"], validate=True),
            bool(d.get("sequential", False)),
            bool(d.get("parents", False)),
            str(d.get("ephemeral_owner", "")),
            bool(d.get("container", False)),
            int(d.get("ttl_ms", 0)),
        )
    if kind == "set":
        return SetDataOp(
            d["path"],
            base64.b64decode(d["data"], validate=True),
            int(d["version"]),
            bool(d.get("upsert", False)),
        )
    if kind == "delete":
        return DeleteOp(d["path"], int(d["version"]), bool(d.get("recursive", False)))
    if kind == "check":
        return CheckOp(d["path"], int(d["version"]))
    if kind == "open_session":
        return OpenSessionOp(str(d["session"]), int(d["ttl_ms"]))
    if kind == "close_session":
        return CloseSessionOp(str(d["session"]), bool(d["expired"]))
    if kind == "reap":
        return ReapOp(d["path"], int(d["czxid"]))
    raise TxnDecodeError(f"unknown op {kind!r}")


def decode_txn(raw: bytes) -> Txn:
    """Decode a log entry; a corrupt or unknown entry is an error, never guessed at."""
    try:
        d = orjson.loads(raw)
        if d.get("v") != TXN_FORMAT_VERSION:
            raise TxnDecodeError(f"unknown txn format {d.get('v')!r}")
        ops = tuple(_op_from_json(o) for o in d["ops"])
        return Txn(ops=ops, time_ms=int(d["time"]), multi=bool(d["multi"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        if isinstance(exc, TxnDecodeError):
            raise
        raise TxnDecodeError(str(exc)) from exc
