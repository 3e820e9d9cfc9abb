"""The one closed set of typed errors.

Every refusal the service can answer is one of these classes: a stable
``code`` (ZooKeeper's names where ZooKeeper has one), the HTTP status it maps
to, and a short title. The tree raises them at apply time, the routes raise
them while validating, and ``routes/problems.py`` renders them as
``application/problem+json`` in one place. Anything that is not a
``CoordError`` is a bug and is answered 500 without details.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CoordError(Exception):
    code: ClassVar[str] = "Internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "internal error"
    retry_after_s: ClassVar[int | None] = None  # sent as Retry-After when set

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        # Extra members of the problem document (e.g. ``path``, ``oldest_zxid``).
        self.extra = extra

    @property
    def http_status(self) -> int:
        return self.status

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:httpcoord:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class NoNode(CoordError):
    code, status, title = "NoNode", 404, "node does not exist"


class NodeExists(CoordError):
    code, status, title = "NodeExists", 409, "node already exists"


class BadVersion(CoordError):
    code, status, title = "BadVersion", 409, "version does not match"


class NotEmpty(CoordError):
    code, status, title = "NotEmpty", 409, "node has children"


class NoChildrenForEphemerals(CoordError):
    code, status, title = "NoChildrenForEphemerals", 400, "ephemeral nodes cannot have children"


class InvalidPath(CoordError):
    code, status, title = "InvalidPath", 400, "invalid znode path"


class BadArguments(CoordError):
    code, status, title = "BadArguments", 400, "bad arguments"


class SessionExpired(CoordError):
    code, status, title = "SessionExpired", 404, "session expired or unknown"


class OriginNotAllowed(CoordError):
    code, status, title = "OriginNotAllowed", 403, "origin not allowed"


class NotFound(CoordError):
    code, status, title = "NotFound", 404, "no such route"


class MethodNotAllowed(CoordError):
    code, status, title = "MethodNotAllowed", 405, "method not allowed"


class Compacted(CoordError):
    code, status, title = "Compacted", 410, "history compacted"


class PayloadTooLarge(CoordError):
    code, status, title = "PayloadTooLarge", 413, "payload too large"


class UnsupportedMediaType(CoordError):
    code, status, title = "UnsupportedMediaType", 415, "unsupported media type"


class TooManyRequests(CoordError):
    code, status, title = "TooManyRequests", 429, "too many requests"
    retry_after_s: ClassVar[int | None] = 1


class Unavailable(CoordError):
    """Nothing was done; retrying (after ``Retry-After``, on this or another
    node) is safe."""

    code, status, title = "Unavailable", 503, "service unavailable"
    retry_after_s: ClassVar[int | None] = 1


class OutcomeUnknown(CoordError):
    """The write was handed to the leader, but the leader was lost (or the
    request timed out) before its outcome was known: it may or may not have
    been applied. Read before retrying a write that is not idempotent."""

    code, status, title = "OutcomeUnknown", 503, "outcome of the write unknown"
    retry_after_s: ClassVar[int | None] = 1


class ZxidNotReached(CoordError):
    """``X-Coord-Min-Zxid`` asked for a zxid this node has not applied within
    the request timeout (it is behind, or the zxid does not exist yet)."""

    code, status, title = "ZxidNotReached", 504, "zxid not reached in time"


class DiskFull(CoordError):
    """This node cannot write to its data dir (no space left): it takes no
    writes until space is freed, then resumes by itself. Nothing was done;
    reads still answer here, and another node may take the write."""

    code, status, title = "DiskFull", 507, "insufficient storage"
    retry_after_s: ClassVar[int | None] = 1


class MultiFailed(CoordError):
    """A multi was refused: nothing applied. Status and code are the failing op's."""

    code, status, title = "MultiFailed", 409, "multi failed"

    def __init__(self, failed_op: int, error: CoordError, op_count: int) -> None:
        super().__init__(f"op {failed_op}: {error.detail}")
        self.failed_op = failed_op
        self.error = error
        # ZooKeeper's report of a failed multi: the ops before the failure
        # rolled back, the failing op's error, the ops after it not run.
        self.results: list[dict[str, Any]] = [{"status": "rolled_back"}] * failed_op
        self.results.append({"status": "error", "code": error.code, "detail": error.detail})
        self.results.extend([{"status": "not_run"}] * (op_count - failed_op - 1))

    def problem(self) -> dict[str, Any]:
        body = self.error.problem()
        body["failed_op"] = self.failed_op
        body["results"] = self.results
        return body

    @property
    def http_status(self) -> int:
        return self.error.status


ALL_ERRORS: tuple[type[CoordError], ...] = (
    NoNode,
    NodeExists,
    BadVersion,
    NotEmpty,
    NoChildrenForEphemerals,
    InvalidPath,
    BadArguments,
    SessionExpired,
    NotFound,
    OriginNotAllowed,
    MethodNotAllowed,
    Compacted,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Unavailable,
    OutcomeUnknown,
    ZxidNotReached,
    DiskFull,
)


_BY_CODE: dict[str, type[CoordError]] = {cls.code: cls for cls in ALL_ERRORS}


def error_from_problem(problem: object) -> CoordError | None:
    """A problem document another node (or process) answered, as the error it
    names: an unknown code is Unavailable (nothing is known to be done)."""
    if type(problem) is not dict:
        return None
    cls = _BY_CODE.get(str(problem.get("code")), Unavailable)
    return cls(str(problem.get("detail", "")))
