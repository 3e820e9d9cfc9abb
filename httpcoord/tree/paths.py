"""Znode path rules (ZooKeeper's PathUtils): absolute, no empty, ``.`` or
``..`` segments, no trailing slash, no control or reserved characters."""

from __future__ import annotations

import re

from httpcoord.errors import InvalidPath

ROOT = "/"

# ZooKeeper refuses NUL, the C0 and C1 control ranges, DEL, the surrogates and
# private use area, and the specials block; so do we.
_BAD_CHAR = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")

SEQUENCE_DIGITS = 10


def validate_path(path: str, *, sequential: bool = False, max_length: int | None = None) -> str:
    """Return ``path`` if it is a valid znode path, else raise ``InvalidPath``.

    A sequential create may end in ``/`` (the server appends the counter, so
    ``/queue/`` becomes ``/queue/0000000007``), exactly as ZooKeeper allows.
    """
    if max_length is not None and len(path) > max_length:
        raise InvalidPath(f"path is longer than {max_length} characters", path=path[:max_length])
    if not path.startswith("/"):
        raise InvalidPath("path must start with /", path=path)
    if path == ROOT:
        # A sequential create at "/" names a child of the root: "/0000000000".
        return path
    bad = _BAD_CHAR.search(path)
    if bad is not None:
        raise InvalidPath(f"invalid character {bad.group()!r} at offset {bad.start()}", path=path)
    checked = path + "0" if sequential else path
    if checked.endswith("/"):
        raise InvalidPath("path must not end with /", path=path)
    for segment in checked[1:].split("/"):
        if segment == "":
            raise InvalidPath("empty segment in path", path=path)
        if segment in (".", ".."):
            raise InvalidPath("relative segment in path", path=path)
    return path


def parent_of(path: str) -> str:
    """The parent of a non-root path (``/a/b`` -> ``/a``, ``/a`` -> ``/``)."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else ROOT


def name_of(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def join(parent: str, name: str) -> str:
    return parent + name if parent == ROOT else f"{parent}/{name}"


def ancestors(path: str) -> list[str]:
    """Proper ancestors of ``path``, root first (``/a/b/c`` -> ``/``, ``/a``, ``/a/b``)."""
    out = [ROOT]
    cut = path.find("/", 1)
    while cut != -1:
        out.append(path[:cut])
        cut = path.find("/", cut + 1)
    return out if path != ROOT else []


def sequence_name(path: str, counter: int) -> str:
    """ZooKeeper's sequential name: the counter zero-padded to 10 digits."""
    return f"{path}{counter:0{SEQUENCE_DIGITS}d}"
