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


Op = CreateOp | SetDataOp | DeleteOp | CheckOp


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
    return {"op": "check", "path": op.path, "version": op.version}


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
