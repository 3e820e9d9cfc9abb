"""The layering docs/architecture.md states, checked on the imports of every
module (read with ``ast``, so nothing is imported to check it):

- ``httpcoord/tree/`` is the pure state machine: nothing of ``cluster``,
  ``watch`` or ``routes``, and no I/O, clock or event loop;
- ``httpcoord/cluster/raft/`` is the pure consensus core: no asyncio, aiohttp,
  SQLite, sockets, clock or threads, and no httpcoord module outside itself;
- ``httpcoord/watch/`` imports nothing of ``cluster`` or ``routes``;
- ``httpcoord/client/`` imports nothing of the server but ``errors``.

Every import counts, wherever it stands (inside a function or an
``if TYPE_CHECKING:`` block too): a layer is a design rule, not only a
runtime one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "httpcoord"

# What a pure core must not reach for: the event loop, the network, storage,
# the clock and threads.
IO_MODULES = (
    "asyncio",
    "aiohttp",
    "aiosqlite",
    "sqlite3",
    "socket",
    "selectors",
    "ssl",
    "time",
    "datetime",
    "threading",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "uvloop",
)


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules under ``package`` import none of ``forbidden`` (a name forbids
    the module and everything below it) and, when ``own_package_only``, no
    ``httpcoord`` module outside ``package``."""

    package: str
    forbidden: tuple[str, ...]
    own_package_only: bool = False
    why: str = ""


RULES = (
    Rule(
        "httpcoord.tree",
        ("httpcoord.cluster", "httpcoord.watch", "httpcoord.routes", *IO_MODULES),
        why="the znode tree is a pure, deterministic state machine",
    ),
    Rule(
        "httpcoord.cluster.raft",
        IO_MODULES,
        own_package_only=True,
        why="the consensus core does no I/O and reads no clock (simulation runs it)",
    ),
    Rule(
        "httpcoord.watch",
        ("httpcoord.cluster", "httpcoord.routes"),
        why="watches are fed by the node, they do not reach into it or the HTTP edge",
    ),
    Rule(
        "httpcoord.client",
        ("httpcoord.cluster", "httpcoord.routes", "httpcoord.tree", "httpcoord.watch"),
        why="the client speaks the public HTTP API only (the server's errors are shared)",
    ),
)


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """``httpcoord/cluster/raft/core.py`` -> ``httpcoord.cluster.raft.core``
    (a package's ``__init__.py`` is the package itself)."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module name ``source`` (the text of ``module``) imports, relative
    imports resolved. ``from a import b`` yields ``a`` and ``a.b``: ``b`` may be
    a submodule (``from httpcoord import routes``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(
    sources: Mapping[str, tuple[str, bool]], rules: tuple[Rule, ...] = RULES
) -> list[str]:
    """For ``{module: (source, is_package)}``, one line per import that breaks
    a rule: ``module imports name (why)``."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        for rule in rules:
            if not _within(module, rule.package):
                continue
            for name in sorted(set(imported_modules(source, module, is_package))):
                if any(_within(name, f) for f in rule.forbidden) or (
                    rule.own_package_only
                    and _within(name, "httpcoord")
                    and not _within(name, rule.package)
                ):
                    found.append(f"{module} imports {name} ({rule.why})")
    return found


def package_sources(root: Path = PACKAGE_ROOT) -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, root): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(root.rglob("*.py"))
    }


# ---- the real package -----------------------------------------------------------------


def test_every_layer_keeps_to_its_imports() -> None:
    assert violations(package_sources()) == []


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.package)
def test_each_rule_applies_to_modules_that_exist(rule: Rule) -> None:
    # A moved or renamed package would otherwise pass the check vacuously.
    modules = [m for m in package_sources() if _within(m, rule.package)]
    assert len(modules) >= 2, modules


# ---- the checker itself, on planted violations ----------------------------------------


def _check(module: str, source: str, is_package: bool = False) -> list[str]:
    return violations({module: (source, is_package)})


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("httpcoord.tree.tree", "from httpcoord.routes import app\n"),
        ("httpcoord.tree.tree", "import httpcoord.cluster.node\n"),
        ("httpcoord.tree.tree", "from httpcoord import watch\n"),
        ("httpcoord.tree.tree", "from ..routes.app import create_app\n"),
        ("httpcoord.tree.tree", "def f():\n    import asyncio\n"),
        ("httpcoord.cluster.raft.core", "import time\n"),
        ("httpcoord.cluster.raft.core", "from socket import socket\n"),
        ("httpcoord.cluster.raft.core", "import sqlite3\n"),
        ("httpcoord.cluster.raft.core", "from concurrent.futures import Future\n"),
        ("httpcoord.cluster.raft.core", "from httpcoord.errors import Unavailable\n"),
        ("httpcoord.cluster.raft.core", "from ..node import LocalNode\n"),
        ("httpcoord.cluster.raft.core", "from .. import sqlite_log\n"),
        (
            "httpcoord.cluster.raft.core",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import aiosqlite\n",
        ),
        ("httpcoord.watch.hub", "from httpcoord.cluster.node import LocalNode\n"),
        ("httpcoord.watch.hub", "from ..routes import keys\n"),
    ],
)
def test_a_planted_violation_is_reported(module: str, source: str) -> None:
    found = _check(module, source)
    assert len(found) >= 1
    assert all(line.startswith(f"{module} imports ") for line in found)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("httpcoord.tree.tree", "from httpcoord.errors import NoNode\nimport orjson\n"),
        ("httpcoord.tree.tree", "from .paths import ROOT\n"),
        ("httpcoord.cluster.raft.core", "from httpcoord.cluster.raft.log import RaftLog\n"),
        ("httpcoord.cluster.raft.core", "from .messages import Entry\nimport random\n"),
        ("httpcoord.watch.hub", "import asyncio\nfrom httpcoord.tree.tree import Event\n"),
        # The edges may import the cores: the rules bind the cores only.
        ("httpcoord.cluster.node", "import asyncio\nfrom httpcoord.watch import history\n"),
        ("httpcoord.routes.app", "from httpcoord.cluster.node import LocalNode\n"),
    ],
)
def test_an_allowed_import_is_not_reported(module: str, source: str) -> None:
    assert _check(module, source) == []


def test_a_relative_import_in_a_package_init_resolves_from_the_package_itself() -> None:
    # In httpcoord/cluster/raft/__init__.py, "from . import core" is the core
    # (allowed) and "from .. import node" is httpcoord.cluster.node (not).
    assert _check("httpcoord.cluster.raft", "from . import core\n", is_package=True) == []
    assert _check("httpcoord.cluster.raft", "from .. import node\n", is_package=True) == [
        f"httpcoord.cluster.raft imports httpcoord.cluster ({RULES[1].why})",
        f"httpcoord.cluster.raft imports httpcoord.cluster.node ({RULES[1].why})",
    ]


def test_module_names_follow_the_file_layout() -> None:
    root = Path("checkout") / "httpcoord"
    raft = root / "cluster" / "raft"
    assert module_name(raft / "__init__.py", root) == "httpcoord.cluster.raft"
    assert module_name(raft / "core.py", root) == "httpcoord.cluster.raft.core"
