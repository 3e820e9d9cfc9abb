"""The server's problem documents as the server's own exception classes.

A client catches exactly what the server raises (``httpcoord.errors``):
``NoNode``, ``NodeExists``, ``BadVersion``, ``SessionExpired``,
``Unavailable``, ``OutcomeUnknown``... each with the problem's ``detail``
and its other members in ``extra`` (``path``, ``session``...). A refused
multi is ``MultiFailed``, whose ``error`` is the failing op's error.
"""

from __future__ import annotations

import orjson

from httpcoord.errors import ALL_ERRORS, CoordError, MultiFailed

_BY_CODE: dict[str, type[CoordError]] = {cls.code: cls for cls in ALL_ERRORS}
_STANDARD = {"type", "title", "status", "code", "detail"}


def error_from_problem(status: int, body: bytes, op_count: int = 0) -> CoordError:
    """The exception a response with this status and body stands for."""
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        problem = None
    if not isinstance(problem, dict):
        return _unexpected(status, body)
    cls = _BY_CODE.get(str(problem.get("code")))
    if cls is None:
        return _unexpected(status, body)
    extra = {k: v for k, v in problem.items() if k not in _STANDARD}
    failed_op = extra.pop("failed_op", None)
    error = cls(str(problem.get("detail") or ""), **extra)
    if isinstance(failed_op, int):
        extra.pop("results", None)
        return MultiFailed(failed_op, error, max(op_count, failed_op + 1))
    return error


def _unexpected(status: int, body: bytes) -> CoordError:
    # Not a problem document: a proxy's error page, or a server bug (500).
    text = body[:200].decode(errors="replace")
    error = CoordError(f"unexpected answer {status}: {text}")
    error.extra = {"status": status}
    return error
