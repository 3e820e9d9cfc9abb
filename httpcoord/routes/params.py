"""Parsing of URL parts: znode paths, query flags and versions.

Strict on purpose: an unknown query parameter is refused rather than ignored,
so a typo such as ``?verison=3`` cannot turn a compare-and-set into a blind
overwrite.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

from aiohttp import web
from multidict import MultiMapping

from httpcoord.config import Limits
from httpcoord.errors import BadArguments, InvalidPath, PayloadTooLarge
from httpcoord.tree.paths import SEQUENCE_DIGITS, validate_path
from httpcoord.tree.txn import ANY_VERSION

NODES_PREFIX = "/v1/nodes"
VERSION_MAX = 2**31 - 1  # ZooKeeper's versions are signed 32-bit

_TRUE = frozenset({"true", "1", "yes", ""})
_FALSE = frozenset({"false", "0", "no"})


def path_length_max(limits: Limits, sequential: bool) -> int:
    """The longest path a request may name: a sequential create's counter
    must still fit, or the node it creates could not be addressed."""
    return limits.path_length_max - (SEQUENCE_DIGITS if sequential else 0)


def znode_path(
    request: web.Request,
    *,
    sequential: bool = False,
    max_length: int,
    prefix: str = NODES_PREFIX,
) -> str:
    """The znode path of a ``/v1/nodes/...`` (or ``/v1/watch/...``) URL,
    percent-decoded from the raw URL so that ``%2e%2e`` or ``%00`` are judged,
    never normalised away."""
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith(prefix):
        raise InvalidPath("not a znode URL")
    raw = raw[len(prefix) :] or "/"
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("path is not valid UTF-8 after percent-decoding") from None
    return validate_path(path, sequential=sequential, max_length=max_length)


def query(
    request: web.Request, allowed: frozenset[str], repeatable: frozenset[str] = frozenset()
) -> MultiMapping[str]:
    """The query, if it names only ``allowed`` parameters, each at most once
    except those ``repeatable``."""
    q = request.query
    for key in q:
        if key not in allowed:
            raise BadArguments(
                f"unknown query parameter {key!r}; allowed: {', '.join(sorted(allowed)) or 'none'}"
            )
    once = [key for key, _ in q.items() if key not in repeatable]
    if len(once) != len(set(once)):
        raise BadArguments("a query parameter is given more than once")
    return q


def flag(q: MultiMapping[str], name: str) -> bool:
    value = q.get(name)
    if value is None:
        return False
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadArguments(f"{name} must be true or false, got {value!r}")


def version(q: MultiMapping[str], name: str = "version") -> int:
    value = q.get(name)
    if value is None:
        return ANY_VERSION
    return parse_version(value, name)


# Plain decimal only: Python's int() would also take " 5 ", "+5" and "1_0".
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def parse_int(value: str, name: str) -> int:
    if _DECIMAL.fullmatch(value) is None:
        raise BadArguments(f"{name} must be an integer, got {value!r}")
    return int(value)


def integer(q: MultiMapping[str], name: str, low: int, high: int) -> int | None:
    value = q.get(name)
    if value is None:
        return None
    n = parse_int(value, name)
    if not low <= n <= high:
        raise BadArguments(f"{name} must be between {low} and {high}, got {n}")
    return n


def parse_version(value: str, name: str = "version") -> int:
    v = parse_int(value, name)
    if not ANY_VERSION <= v <= VERSION_MAX:
        raise BadArguments(f"{name} must be between -1 and {VERSION_MAX}, got {v}")
    return v


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed
    ``limit``: at once from Content-Length, else while streaming."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", limit=limit)
    if declared == 0:
        return b""
    if declared is not None:
        try:
            return await request.content.readexactly(declared)
        except asyncio.IncompleteReadError:
            raise BadArguments("request body is shorter than its Content-Length") from None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        parts.append(chunk)
    return b"".join(parts)
