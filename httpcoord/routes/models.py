"""pydantic models of the JSON bodies: they validate requests at the HTTP
edge (``extra="forbid"``, strict types) and are the source of the schemas in
``openapi.yaml`` (a test keeps the two in agreement)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Version = Annotated[int, Field(ge=-1, le=2**31 - 1)]
Encoding = Literal["utf-8", "base64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


TtlMs = Annotated[int, Field(ge=0, le=2**40 - 1)]


class CreateOpIn(_Strict):
    op: Literal["create"]
    path: str
    data: str = ""
    encoding: Encoding = "utf-8"
    sequential: bool = False
    parents: bool = False
    ephemeral: bool = False  # owned by the session in the X-Coord-Session header
    container: bool = False
    ttl_ms: TtlMs = 0


class SetOpIn(_Strict):
    op: Literal["set"]
    path: str
    data: str = ""
    encoding: Encoding = "utf-8"
    version: Version = -1


class DeleteOpIn(_Strict):
    op: Literal["delete"]
    path: str
    version: Version = -1
    recursive: bool = False


class CheckOpIn(_Strict):
    op: Literal["check"]
    path: str
    version: Version


OpIn = Annotated[CreateOpIn | SetOpIn | DeleteOpIn | CheckOpIn, Field(discriminator="op")]


class MultiRequest(_Strict):
    ops: list[OpIn]


class SessionRequest(_Strict):
    ttl_ms: Annotated[int, Field(ge=0)]


class SessionOut(BaseModel):
    id: str
    ttl_ms: int
    zxid: int


class SessionSummary(BaseModel):
    id: str
    ttl_ms: int
    ephemeral_count: int


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class SessionDetail(BaseModel):
    id: str
    ttl_ms: int
    expires_in_ms: int | None
    ephemerals: list[str]


class HeartbeatOut(BaseModel):
    id: str
    ttl_ms: int


class SessionClosedOut(BaseModel):
    id: str
    zxid: int
    deleted: list[str]


class Stat(BaseModel):
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: str
    data_length: int
    num_children: int


class NodeOut(BaseModel):
    path: str
    data: str
    encoding: Encoding
    stat: Stat
    children: list[str] | None = None
    children_next: str | None = None  # more children: the after of the next page


class WriteOut(BaseModel):
    path: str
    zxid: int
    stat: Stat


class DeleteOut(BaseModel):
    path: str
    zxid: int


class OpResultOut(BaseModel):
    op: Literal["create", "set", "delete", "check"]
    path: str
    stat: Stat | None = None


class MultiOut(BaseModel):
    zxid: int
    results: list[OpResultOut]


class OpFailureOut(BaseModel):
    status: Literal["rolled_back", "error", "not_run"]
    code: str | None = None
    detail: str | None = None


class WatchEventOut(BaseModel):
    type: Literal["created", "deleted", "data_changed", "children_changed", "initial", "bookmark"]
    path: str
    zxid: int
    stat: Stat | None  # None for deleted and bookmark
    data: str | None = None  # with ?data=true, after created / data_changed
    encoding: Encoding | None = None


class WatchPollOut(BaseModel):
    events: list[WatchEventOut]
    zxid: int  # the since of the next long-poll
    truncated: bool  # the watcher was cut off as a slow consumer


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str
    path: str | None = None  # the znode the error is about
    session: str | None = None  # SessionExpired: the session id
    version: int | None = None  # BadVersion: the node's current version
    limit: int | None = None  # PayloadTooLarge: the limit in bytes
    errors: list[dict[str, object]] | None = None  # BadArguments: what the body got wrong
    failed_op: int | None = None
    results: list[OpFailureOut] | None = None
    oldest_zxid: int | None = None  # Compacted: the oldest since still served
    zxid: int | None = None  # Compacted: the last zxid applied
    applied_zxid: int | None = None  # ZxidNotReached: the zxid this node had applied
    client: str | None = None  # TooManyRequests for watches: the client address
    data_dir: str | None = None  # DiskFull: the data dir of the node that answered


Role = Literal["follower", "pre_candidate", "candidate", "leader"]


class ClusterMember(BaseModel):
    """One member as the answering node sees it. The members after
    ``reachable`` are the member's own answer; an unreachable one has none."""

    id: int
    peer_url: str  # its peer listener ("" in a cluster of one)
    voter: bool  # False: a learner (replicates, never votes)
    reachable: bool  # it answered the status request in time (itself: always)
    client_url: str | None = None  # --advertise-url
    role: Role | None = None
    term: int | None = None
    leader: int | None = None  # the leader it knows; 0: none
    commit_index: int | None = None  # log indexes, not zxids
    applied_index: int | None = None
    zxid: int | None = None  # the last zxid applied to its tree
    digest: str | None = None  # 64-bit digest (hex) of its tree at that zxid


class ClusterView(BaseModel):
    """``GET /v1/cluster``: the answering node and every member."""

    id: int  # the node that answered
    leader: int  # the leader it knows; 0: none
    term: int
    commit_index: int
    applied_index: int
    zxid: int
    members: list[ClusterMember]  # sorted by id
