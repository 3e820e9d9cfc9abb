"""The consensus core's vocabulary: log entries, durable state, snapshots and
the messages peers exchange, plus their JSON wire encoding.

Everything here is a frozen, slotted dataclass: cheap to create, safe to share
between the core, the storage edge and the transport. Entry data is opaque
bytes to the core (the tree's txn encoding, or a membership record).

Wire format (for the peer transport): one JSON object per message, encoded
with orjson, ``{"t": <type name>, ...fields}``; bytes travel as base64.
``decode_message`` validates every field's type and range and raises
``MessageDecodeError`` on anything else; it never instantiates a type named by
the peer beyond the closed table below, and never uses pickle.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, Final

import orjson

NONE: Final = 0  # "no node": node ids are positive ints, never reused


class EntryKind(IntEnum):
    NORMAL = 0  # a tree txn; the values agree with the SQLite log's kinds
    NOOP = 1  # a new leader's empty entry, committed to learn the commit index
    CONF = 2  # a membership record: data is an encoded ConfState


@dataclass(frozen=True, slots=True)
class Entry:
    # The log index: counts every entry (no-ops, membership, refused txns).
    # Never the zxid, which counts successful txns only (the tree assigns it).
    index: int
    term: int
    kind: EntryKind
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int
    vote: int
    commit: int


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership: voters decide elections and commits; learners only
    replicate. A node id is in at most one of the two sets."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        return orjson.dumps({"voters": sorted(self.voters), "learners": sorted(self.learners)})

    @staticmethod
    def decode(data: bytes) -> ConfState:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MessageDecodeError(f"conf state is not JSON: {exc}") from None
        return _conf_from_obj(obj)

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int  # last log index the snapshot covers
    term: int  # term of that entry
    conf: ConfState  # membership in effect at that index


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes  # the application state, opaque to the core


# ---- messages ------------------------------------------------------------------
# Every message carries src, dst and the sender's term; the core compares terms
# before anything else.


@dataclass(frozen=True, slots=True)
class VoteRequest:
    src: int
    dst: int
    term: int  # the term the candidate runs for (for a pre-vote: its term + 1)
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False  # sent on TimeoutNow: overrides the receivers' leader lease


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: int
    dst: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Accept: index is the follower's last index matching the leader. Reject:
    index is the rejected prev_index, and (hint_index, hint_term) is the
    follower's guess at the last entry that might match (fast backtracking)."""

    src: int
    dst: int
    term: int
    reject: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    src: int
    dst: int
    term: int
    commit: int  # min(follower's match, leader's commit): never past what it holds
    read_seq: int  # the leader's newest ReadIndex round, echoed back


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    src: int
    dst: int
    term: int
    read_seq: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: int
    dst: int
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver starts an election at once."""

    src: int
    dst: int
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower or learner asks the leader for a linearizable read index."""

    src: int
    dst: int
    term: int
    ctx: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    src: int
    dst: int
    term: int
    ctx: int
    index: int


Message = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)


# ---- wire encoding ---------------------------------------------------------------


class MessageDecodeError(ValueError):
    """A peer sent something that is not a well-formed message."""


_TYPES: Final[dict[str, type[Any]]] = {
    "vote": VoteRequest,
    "vote_resp": VoteResponse,
    "app": AppendEntries,
    "app_resp": AppendResponse,
    "hb": Heartbeat,
    "hb_resp": HeartbeatResponse,
    "snap": InstallSnapshot,
    "timeout_now": TimeoutNow,
    "read": ReadIndexRequest,
    "read_resp": ReadIndexResponse,
}
_NAMES: Final[dict[type[Any], str]] = {cls: name for name, cls in _TYPES.items()}
_FIELDS: Final[dict[type[Any], tuple[tuple[str, str], ...]]] = {
    cls: tuple((f.name, str(f.type)) for f in fields(cls)) for cls in _TYPES.values()
}

INT_MAX: Final = 2**63 - 1  # what SQLite and every peer can hold


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _entry_to_obj(e: Entry) -> list[Any]:
    return [e.index, e.term, int(e.kind), _b64(e.data)]


def _snapshot_to_obj(s: Snapshot) -> dict[str, Any]:
    m = s.meta
    return {
        "index": m.index,
        "term": m.term,
        "voters": sorted(m.conf.voters),
        "learners": sorted(m.conf.learners),
        "data": _b64(s.data),
    }


def encode_message(msg: Message) -> bytes:
    cls = type(msg)
    obj: dict[str, Any] = {"t": _NAMES[cls]}
    for name, _ in _FIELDS[cls]:
        value = getattr(msg, name)
        if name == "entries":
            obj[name] = [_entry_to_obj(e) for e in value]
        elif name == "snapshot":
            obj[name] = _snapshot_to_obj(value)
        else:
            obj[name] = value
    return orjson.dumps(obj)


def _int(obj: dict[str, Any], key: str, lo: int = 0) -> int:
    v = obj.get(key)
    # bool is an int subclass; a peer sending true for an index is malformed.
    if type(v) is not int or not lo <= v <= INT_MAX:
        raise MessageDecodeError(f"{key!r} must be an int in [{lo}, {INT_MAX}]")
    return v


def _bool(obj: dict[str, Any], key: str) -> bool:
    v = obj.get(key)
    if type(v) is not bool:
        raise MessageDecodeError(f"{key!r} must be a bool")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not str:
        raise MessageDecodeError(f"{what} must be base64 text")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise MessageDecodeError(f"{what} is not valid base64") from None


def _ids(v: Any, what: str) -> frozenset[int]:
    if type(v) is not list or any(type(x) is not int or not 0 < x <= INT_MAX for x in v):
        raise MessageDecodeError(f"{what} must be a list of positive node ids")
    return frozenset(v)


def _conf_from_obj(obj: Any) -> ConfState:
    if type(obj) is not dict:
        raise MessageDecodeError("conf state must be an object")
    voters = _ids(obj.get("voters"), "voters")
    learners = _ids(obj.get("learners"), "learners")
    if voters & learners:
        raise MessageDecodeError("a node cannot be both voter and learner")
    return ConfState(voters, learners)


def _entry(v: Any) -> Entry:
    if type(v) is not list or len(v) != 4:
        raise MessageDecodeError("an entry must be [index, term, kind, data]")
    index, term, kind, data = v
    if type(index) is not int or type(term) is not int or not (0 < index <= INT_MAX):
        raise MessageDecodeError("entry index/term must be positive ints")
    if not 0 < term <= INT_MAX:
        raise MessageDecodeError("entry term must be a positive int")
    if type(kind) is not int or kind not in (0, 1, 2):
        raise MessageDecodeError("entry kind must be 0, 1 or 2")
    return Entry(index, term, EntryKind(kind), _bytes(data, "entry data"))


def decode_message(raw: bytes) -> Message:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"not JSON: {exc}") from None
    if type(obj) is not dict:
        raise MessageDecodeError("a message must be a JSON object")
    kind = obj.get("t")
    cls = _TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise MessageDecodeError(f"unknown message type {obj.get('t')!r}")
    expected = {name for name, _ in _FIELDS[cls]} | {"t"}
    if set(obj) != expected:
        raise MessageDecodeError(f"fields must be exactly {sorted(expected)}")
    kwargs: dict[str, Any] = {}
    for name, typ in _FIELDS[cls]:
        if name == "entries":
            raw_entries = obj[name]
            if type(raw_entries) is not list:
                raise MessageDecodeError("entries must be a list")
            entries = tuple(_entry(e) for e in raw_entries)
            for a, b in itertools.pairwise(entries):
                if b.index != a.index + 1:
                    raise MessageDecodeError("entries must have consecutive indexes")
            kwargs[name] = entries
        elif name == "snapshot":
            s = obj[name]
            if type(s) is not dict or set(s) != {"index", "term", "voters", "learners", "data"}:
                raise MessageDecodeError("malformed snapshot")
            meta = SnapshotMeta(_int(s, "index"), _int(s, "term"), _conf_from_obj(s))
            kwargs[name] = Snapshot(meta, _bytes(s["data"], "snapshot data"))
        elif typ == "bool":
            kwargs[name] = _bool(obj, name)
        else:
            kwargs[name] = _int(obj, name, 1 if name in ("src", "dst") else 0)
    if cls is AppendEntries and kwargs["entries"]:
        # The core trusts both: a first entry past prev_index + 1 would leave a
        # gap in the follower's log (an assertion crash), and no leader of a
        # term holds entries of a later one.
        entries = kwargs["entries"]
        if entries[0].index != kwargs["prev_index"] + 1:
            raise MessageDecodeError("entries must start at prev_index + 1")
        if any(e.term > kwargs["term"] for e in entries):
            raise MessageDecodeError("an entry's term exceeds the sender's term")
    msg: Message = cls(**kwargs)
    return msg
