"""Replay the ZooKeeper 3.8 reference recording against our tree.

``tests/zk_reference/zk_reference.json`` holds 19 scenarios recorded from a
real ZooKeeper server (its ``format`` key explains the fields; FINDINGS.md
summarises them). Every step of every scenario is replayed here, in order, on
a fresh ``Tree``, and our result, error and the stats of every node the
recording snapshotted after the step must equal ZooKeeper's.

Where httpcoord differs from ZooKeeper on purpose, ZooKeeper's expectation is
translated into ours in ONE place: the section "Deliberate differences" below.
Nothing else in this file bends a comparison. A difference that is not listed
there fails the test (docs/zookeeper-differences.md lists the same set).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from httpcoord.errors import CoordError, MultiFailed
from httpcoord.tree.paths import parent_of
from httpcoord.tree.stat import Stat
from httpcoord.tree.tree import OpResult, Tree
from httpcoord.tree.txn import CheckOp, CreateOp, DeleteOp, Op, SetDataOp, Txn

REFERENCE = json.loads(
    (Path(__file__).parent.parent / "zk_reference" / "zk_reference.json").read_text("utf-8")
)
SCENARIOS = {s["name"]: s for s in REFERENCE["scenarios"]}
READS = ("exists", "get", "get_children")


# =============================================================================
# Deliberate differences: ZooKeeper's expectation -> ours. Every one is here.
# =============================================================================

# --- 1. zxids ----------------------------------------------------------------
# ZooKeeper gives EVERY write a zxid, failed or not (also a failed or an empty
# multi); httpcoord gives the next zxid only to a write that succeeds, and a
# refused write takes none. So a zxid-valued stat field (czxid, mzxid, pzxid)
# is compared through a map built during the replay: ZooKeeper's relative zxid
# of each successful write step -> our zxid of the same step. The map must be
# exact (a stat naming a zxid outside it fails). Our own zxids must be
# contiguous over successful writes (checked in ``Replay.write``).
#
# --- 2. the root ---------------------------------------------------------------
# ZooKeeper's root holds /zookeeper (never created by a txn, so a fresh root
# has cversion -1 and numChildren 1) plus the bases of the scenarios recorded
# before this one. Our tree is fresh per scenario. So the root's cversion and
# numChildren are compared as differences from the scenario's start
# (``root_at_start``); a root pzxid older than the scenario ("pre") is our 0
# (nothing predates the scenario in a fresh tree); and the root's sequence
# counter (creates ever made under "/", see root_writes) is compared as a
# difference from its value at the start too. httpcoord has no /zookeeper
# node: reading it is NoNode for us and creating it succeeds.
#
# --- 3. paths --------------------------------------------------------------------
# httpcoord validates the path of every op (delete included) before anything
# else. ZooKeeper does not validate delete paths, and checks a create's parent
# before its path, so it answers NoNode where we answer InvalidPath. ZooKeeper's
# BadArguments for a malformed path is our InvalidPath; deleting "/" is
# BadArguments in both. Reads validate no path, in ZooKeeper as in our tree
# (a malformed path is simply missing). Not in the original list of
# differences, found by this replay: ZooKeeper's MarshallingError for the
# empty path "" (its wire protocol refuses "" before the tree sees it) is
# InvalidPath for a write and NoNode for a read (path_validation steps 12, 27).
#
# --- 4. versions below -1 -----------------------------------------------------------
# No difference at tree level: ZooKeeper and our tree both answer BadVersion
# (the HTTP edge refuses such versions earlier with 400). Not translated.
#
# --- 5. null data -------------------------------------------------------------------
# ZooKeeper distinguishes null data from empty bytes; httpcoord has no null:
# null is sent and compared as b"".
#
# --- 6. steps we cannot replay at tree level ------------------------------------------
# Ephemeral creates need sessions (a later issue): such steps are skipped, and
# so is every later step naming a path at or under an ephemeral node that
# ZooKeeper created; the ephemeral nodes are left out of snapshots and child
# lists, and their parent's cversion, numChildren and pzxid (which counted
# them) are not compared. No scenario depends on ephemerals as a whole, so none
# is skipped entirely; the skipped steps are listed in EPHEMERAL_STEPS.
# kazoo's makepath (client-side: a failed create, one create per missing
# ancestor, a retry, each its own zxid) is replayed as one atomic
# ``CreateOp(parents=True)``: only the final tree state is compared, with every
# zxid the client-side attempts consumed mapped to our one zxid.
#
# --- 7. failed multi --------------------------------------------------------------------
# ZooKeeper reports the ops before the failing one as RolledBackError, the
# failing one with its error and the later ones as RuntimeInconsistency; ours
# are MultiFailed.results with status rolled_back / error (with code) / not_run.

ZK_ERROR_TO_CODE = {
    "NoNodeError": "NoNode",
    "NodeExistsError": "NodeExists",
    "BadVersionError": "BadVersion",
    "NotEmptyError": "NotEmpty",
    "NoChildrenForEphemeralsError": "NoChildrenForEphemerals",
    "BadArgumentsError": "BadArguments",  # refined by expected_code (3.)
}

ZK_MULTI_STATUS = {"RolledBackError": "rolled_back", "RuntimeInconsistency": "not_run"}  # 7.

ZK_SYSTEM_NODE = "/zookeeper"  # 2.

# 6. Steps skipped because they need an ephemeral node: scenario -> step indices.
EPHEMERAL_STEPS = {
    "sequential_under_base_and_errors": {6, 7, 8},
    "create_errors": {4, 5, 6, 7, 8, 9, 10, 11},
    "multi_dependencies": {6},
}

# ZooKeeper's PathUtils.validatePath, written out from its rules (not ours), so
# that translating its answer does not lean on the code under test.
_ZK_BAD_CHAR = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")


def zk_malformed(path: str, sequential: bool = False) -> bool:
    if not path.startswith("/"):
        return True
    if path == "/":
        return False
    checked = path + "1" if sequential else path
    return (
        checked.endswith("/")
        or _ZK_BAD_CHAR.search(checked) is not None
        or any(seg in ("", ".", "..") for seg in checked[1:].split("/"))
    )


def is_system_path(path: str) -> bool:  # 2.
    return path == ZK_SYSTEM_NODE or path.startswith(ZK_SYSTEM_NODE + "/")


def expected_code(kind: str, path: str, zk_error: str, sequential: bool = False) -> str:
    """ZooKeeper's error class for op ``kind`` on ``path`` -> our error code."""
    if zk_error == "MarshallingError" and path == "":  # 3.
        return "NoNode" if kind in READS else "InvalidPath"
    if zk_error == "BadArgumentsError" and zk_malformed(path, sequential):  # 3.
        return "InvalidPath"
    if (
        zk_error == "NoNodeError"
        and kind in ("create", "delete")
        and zk_malformed(path, sequential)
    ):
        return "InvalidPath"  # 3.: ZooKeeper looked the node / parent up first
    return ZK_ERROR_TO_CODE[zk_error]


def expected_write_success(kind: str, path: str, zk_error: str) -> bool:
    """2.: creating /zookeeper, which ZooKeeper refuses as existing, succeeds with us."""
    return kind == "create" and path == ZK_SYSTEM_NODE and zk_error == "NodeExistsError"


def our_read_result(op: str, path: str, zk_result: dict[str, Any]) -> dict[str, Any]:
    """2.: we have no /zookeeper node, so ZooKeeper's answer for it becomes "missing"."""
    if not (is_system_path(path) and zk_result["ok"]):
        return zk_result
    return {"ok": True, "value": None} if op == "exists" else {"ok": False, "error": "NoNodeError"}


def zk_data(data_hex: str | None) -> bytes:
    return b"" if data_hex is None else bytes.fromhex(data_hex)  # 5.


def our_sequential_name(zk_path: str, root_creates_at_start: int) -> str:
    """2.: under "/", ZooKeeper's counter also counted earlier scenarios' creates."""
    if parent_of(zk_path) != "/":
        return zk_path
    return f"{zk_path[:-10]}{int(zk_path[-10:]) - root_creates_at_start:010d}"


def our_zxid(zk_value: int | str, zxid_map: dict[int, int], where: str) -> int:
    """1. and 2.: a relative ZooKeeper zxid -> ours."""
    if zk_value == 0 or zk_value == "pre":  # never set / older than the scenario
        return 0
    assert zk_value in zxid_map, f"{where}: ZooKeeper zxid {zk_value} is no successful write"
    return zxid_map[int(zk_value)]


def expected_stat(
    zk: dict[str, Any],
    *,
    root: bool,
    root_at_start: dict[str, Any],
    zxid_map: dict[int, int],
    where: str,
    omit: tuple[str, ...] = (),
) -> dict[str, Any]:
    """ZooKeeper's stat (plus ctime_eq_mtime / mtime_changed) in our terms,
    without the (our-named) fields in ``omit``."""
    out: dict[str, Any] = {
        f: our_zxid(zk[f], zxid_map, where) for f in ("czxid", "mzxid", "pzxid") if f not in omit
    }
    out |= {
        "version": zk["version"],
        "cversion": zk["cversion"],
        "aversion": zk["aversion"],
        "ephemeral_owner": "" if zk["ephemeralOwner"] == 0 else zk["ephemeralOwner"],
        "data_length": zk["dataLength"],
        "num_children": zk["numChildren"],
        "ctime_eq_mtime": zk["ctime_eq_mtime"],
    }
    if "mtime_changed" in zk:
        out["mtime_changed"] = zk["mtime_changed"]
    if root:  # 2.: our fresh root starts at cversion 0, numChildren 0
        out["cversion"] = zk["cversion"] - root_at_start["cversion"]
        out["num_children"] = zk["numChildren"] - root_at_start["numChildren"]
    for f in omit:
        out.pop(f, None)
    return out


# =============================================================================
# The replay
# =============================================================================

# Fields of a parent that counted a child we could not create (6.).
COUNTED_CHILD_FIELDS = ("cversion", "num_children", "pzxid")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class Replay:
    def __init__(self, scenario: dict[str, Any]) -> None:
        self.sc = scenario
        self.name = scenario["name"]
        self.tree = Tree()
        self.clock = 1_000  # time_ms: +1 per write, so mtimes of writes differ
        self.zxid_map: dict[int, int] = {}  # 1.
        self.last_zxid = 0  # our zxid of the last successful write
        self.prev_zk_zxid = 0  # zxid_after of the previous step
        root0 = scenario["root_at_start"]
        self.root_creates_at_start = (root0["cversion"] + root0["numChildren"]) // 2  # 2.
        self.created: dict[int, str] = {}  # step -> our path its create made
        self.alias: dict[str, str] = {}  # ZooKeeper path -> ours (root sequential names)
        self.ephemerals: set[str] = set()  # 6.: ZooKeeper's ephemeral nodes we lack
        self.counted: dict[str, str] = {}  # 6.: nodes whose counted-child fields differ
        self.skipped: dict[int, str] = {}
        self.prev_snap: dict[str, tuple[int, int] | None] = {}
        self.compared = 0

    # ---- helpers ----------------------------------------------------------------

    def ours(self, zk_path: str) -> str:
        return self.alias.get(zk_path, zk_path)

    def where(self, i: int, what: str = "") -> str:
        return f"{self.name} step {i}" + (f" {what}" if what else "")

    def actual_stat(self, st: Stat, mtime_changed: Any = "absent") -> dict[str, Any]:
        d = st.to_dict()
        del d["ctime"], d["mtime"]
        d["ctime_eq_mtime"] = st.ctime == st.mtime
        if mtime_changed != "absent":
            d["mtime_changed"] = mtime_changed
        return d

    def check_stat(
        self, zk: dict[str, Any], st: Stat, zk_path: str, where: str, mtime_changed: Any = "absent"
    ) -> None:
        omit = COUNTED_CHILD_FIELDS if zk_path in self.counted else ()  # 6.
        exp = expected_stat(
            zk,
            root=zk_path == "/",
            root_at_start=self.sc["root_at_start"],
            zxid_map=self.zxid_map,
            where=where,
            omit=omit,
        )
        act = self.actual_stat(st, mtime_changed)
        for f in omit:
            del act[f]
        assert act == exp, f"{where}: stat of {zk_path}"
        self.compared += 1

    def needs_ephemeral(self, step: dict[str, Any]) -> str | None:  # 6.
        args = step["args"]
        for o in args["ops"] if step["op"] == "multi" else [args]:
            if o.get("ephemeral"):
                return "ephemeral create (no sessions at tree level yet)"
            for e in self.ephemerals:
                if _under(o["path"], e):
                    return f"names {o['path']}, at or under ephemeral node {e}"
        return None

    # ---- one step ------------------------------------------------------------------

    def step(self, i: int, step: dict[str, Any]) -> None:
        op, args, res = step["op"], step["args"], step["result"]
        is_write = op not in READS
        # The model behind 1.: ZooKeeper spends one zxid per write (makepath:
        # one per client-side attempt), none per read.
        if not args.get("makepath"):
            assert step["zxid_consumed"] == (1 if is_write else 0), self.where(i)
        reason = self.needs_ephemeral(step)
        if reason is not None:
            self.skipped[i] = reason
            self.skip_ephemeral(step)
        elif is_write:
            self.write(i, step)
        else:
            self.read(i, op, args, res)
        self.compare_snapshot(i, step["nodes"])
        self.prev_zk_zxid = step["zxid_after"]

    def skip_ephemeral(self, step: dict[str, Any]) -> None:  # 6.
        res = step["result"]
        if step["op"] == "create" and res["ok"] and step["args"]["ephemeral"]:
            self.ephemerals.add(res["value"])
            self.counted[parent_of(res["value"])] = "counted an ephemeral child"

    def path_of(self, args: dict[str, Any]) -> str:
        if "path_from_step" in args:
            return self.created[args["path_from_step"]]
        return str(args["path"])

    def to_op(self, kind: str, o: dict[str, Any], path: str) -> Op:
        if kind == "create":
            seq = bool(o["sequential"])
            seq_parent = parent_of(path + "0") if seq else parent_of(path)
            assert not (seq and seq_parent in self.counted), "sequence counter not replayable"
            # 6.: kazoo's client-side makepath -> our atomic parents=True
            return CreateOp(path, zk_data(o["data_hex"]), seq, bool(o.get("makepath")))
        if kind == "set":
            return SetDataOp(path, zk_data(o["data_hex"]), o["version"])
        if kind == "delete":
            return DeleteOp(path, o["version"])
        assert kind == "check", kind
        return CheckOp(path, o["version"])

    def write(self, i: int, step: dict[str, Any]) -> None:
        op, args, res = step["op"], step["args"], step["result"]
        multi = op == "multi"
        specs = (
            [(o["op"], o, o["path"]) for o in args["ops"]]
            if multi
            else [(op, args, self.path_of(args))]
        )
        ops = tuple(self.to_op(kind, o, path) for kind, o, path in specs)
        self.clock += 1
        before = self.tree.zxid
        outcome: Any
        try:
            outcome, _events = self.tree.apply(Txn(ops, self.clock, multi))
        except CoordError as exc:
            outcome = exc

        zk_ok = bool(res["ok"])
        if not multi and not zk_ok and expected_write_success(op, specs[0][2], res["error"]):
            zk_ok = True  # 2.: no /zookeeper node with us
            self.counted["/"] = "holds our /zookeeper"
            self.alias[ZK_SYSTEM_NODE] = ZK_SYSTEM_NODE
        if not zk_ok:
            assert isinstance(outcome, CoordError), (
                f"{self.where(i)}: ZooKeeper refused, we did not"
            )
            assert self.tree.zxid == before, f"{self.where(i)}: a refused write took a zxid"  # 1.
            if multi:
                self.check_multi_failure(i, specs, res["value"], outcome)
            else:
                kind, o, path = specs[0]
                exp = expected_code(kind, path, res["error"], bool(o.get("sequential")))
                assert outcome.code == exp, f"{self.where(i)}: {res['error']} -> {outcome!r}"
            self.compared += 1
            return

        assert not isinstance(outcome, CoordError), f"{self.where(i)}: we refused {outcome!r}"
        # 1.: our zxids are contiguous over successful writes ...
        assert outcome.zxid == self.last_zxid + 1 == self.tree.zxid, self.where(i, "zxid")
        self.last_zxid = outcome.zxid
        # ... and each ZooKeeper zxid of a successful write maps to ours (6.:
        # every zxid of kazoo's client-side makepath maps to our one txn).
        first = self.prev_zk_zxid + 1 if args.get("makepath") else step["zxid_after"]
        for z in range(first, step["zxid_after"] + 1):
            self.zxid_map[z] = outcome.zxid
        if multi:
            assert len(outcome.results) == len(res["value"]), self.where(i)
            for k, (r, zk_r) in enumerate(zip(outcome.results, res["value"], strict=True)):
                assert zk_r["ok"], self.where(i, f"op {k}")
                self.check_op_result(i, ops[k], r, zk_r["value"], k)
        elif res["ok"]:
            self.check_op_result(i, ops[0], outcome.results[0], res["value"], None)
        self.compared += 1

    def check_op_result(self, i: int, op: Op, r: OpResult, zk_value: Any, k: int | None) -> None:
        where = self.where(i, "" if k is None else f"op {k}")
        if isinstance(op, CreateOp):
            assert isinstance(zk_value, str)
            exp = zk_value
            if op.sequential:
                exp = our_sequential_name(zk_value, self.root_creates_at_start)  # 2.
            assert r.path == exp, f"{where}: created path"
            self.alias[zk_value] = r.path
            if k is None:
                self.created[i] = r.path
        elif isinstance(op, SetDataOp):
            assert r.stat is not None
            self.check_stat(zk_value, r.stat, r.path, where)
        else:  # delete, check
            assert zk_value is None and r.stat is None, where

    def check_multi_failure(
        self,
        i: int,
        specs: list[tuple[str, dict[str, Any], str]],
        zk_values: list[dict[str, Any]],
        exc: CoordError,
    ) -> None:  # 7.
        assert isinstance(exc, MultiFailed), f"{self.where(i)}: {exc!r}"
        expected: list[dict[str, Any]] = []
        for (kind, o, path), zk_r in zip(specs, zk_values, strict=True):
            assert not zk_r["ok"], self.where(i)
            if zk_r["error"] in ZK_MULTI_STATUS:
                expected.append({"status": ZK_MULTI_STATUS[zk_r["error"]]})
            else:
                code = expected_code(kind, path, zk_r["error"], bool(o.get("sequential")))
                expected.append({"status": "error", "code": code})
        failed = [k for k, e in enumerate(expected) if e["status"] == "error"]
        assert [exc.failed_op] == failed, f"{self.where(i)}: failed op"
        actual = [{k: v for k, v in r.items() if k != "detail"} for r in exc.results]
        assert actual == expected, f"{self.where(i)}: multi results"

    def read(self, i: int, op: str, args: dict[str, Any], res: dict[str, Any]) -> None:
        path = self.ours(self.path_of(args))
        node = self.tree.get(path) if self.tree.exists(path) else None
        where = self.where(i, f"{op} {path!r}")
        res = our_read_result(op, path, res)  # 2.
        value: Any = res.get("value")
        if op == "exists":
            assert res["ok"]
            if value is None:
                assert node is None, where
            else:
                assert node is not None, where
                self.check_stat(value, node.stat(), path, where)
        elif not res["ok"]:
            exp = expected_code(op, path, res["error"])
            with pytest.raises(CoordError) as info:
                self.tree.get(path) if op == "get" else self.tree.children(path)
            assert info.value.code == exp, where
        elif op == "get":
            assert node is not None, where
            assert node.data == zk_data(value["data_hex"]), where  # 5.
            self.check_stat(value["stat"], node.stat(), path, where)
        else:
            names = [
                n
                for n in value
                if not any(  # 6.: ephemeral children we lack
                    _under(path.rstrip("/") + "/" + n, e) for e in self.ephemerals
                )
            ]
            assert self.tree.children(path) == names, where
        self.compared += 1

    def compare_snapshot(self, i: int, nodes: dict[str, Any]) -> None:
        snap: dict[str, tuple[int, int] | None] = {}
        base = self.sc["base"]
        for zk_path, zk_node in nodes.items():
            if any(_under(zk_path, e) for e in self.ephemerals):  # 6.
                continue
            path = self.ours(zk_path)
            where = self.where(i, f"snapshot {zk_path!r}")
            node = self.tree.get(path) if self.tree.exists(path) else None
            snap[path] = None if node is None else (node.czxid, node.mtime)
            if is_system_path(zk_path):  # 2.: ZooKeeper's system node is not ours
                assert node is None or zk_path in self.alias, where
                continue
            if zk_node is None:
                assert node is None, f"{where}: ZooKeeper has no such node, we do"
                continue
            assert node is not None, f"{where}: ZooKeeper has this node, we do not"
            assert node.data == zk_data(zk_node["data_hex"]), f"{where}: data"  # 5.
            prev = self.prev_snap.get(path)
            changed = None if prev is None or prev[0] != node.czxid else prev[1] != node.mtime
            self.check_stat(zk_node["stat"], node.stat(), zk_path, where, changed)
        self.prev_snap = snap
        # Nothing extra on our side: our subtree of ``base`` is ZooKeeper's.
        zk_sub = {
            self.ours(p)
            for p, n in nodes.items()
            if n is not None and _under(p, base) and not any(_under(p, e) for e in self.ephemerals)
        }
        assert set(self.subtree(base)) == zk_sub, self.where(i, f"subtree {base}")

    def subtree(self, top: str) -> list[str]:
        if not self.tree.exists(top):
            return []
        out = [top]
        for name in self.tree.children(top):
            out += self.subtree(f"{top}/{name}")
        return out


# Real differences found by this replay: scenario -> reason (none so far).
KNOWN_BUGS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
        if n in KNOWN_BUGS
        else n
        for n in SCENARIOS
    ],
)
def test_tree_matches_zookeeper(name: str) -> None:
    scenario = SCENARIOS[name]
    replay = Replay(scenario)
    for i, step in enumerate(scenario["steps"]):
        replay.step(i, step)
    assert set(replay.skipped) == EPHEMERAL_STEPS.get(name, set()), replay.skipped
    assert replay.compared > len(scenario["steps"])


def test_recording_covers_every_scenario() -> None:
    assert len(SCENARIOS) == 19
    assert set(EPHEMERAL_STEPS) <= set(SCENARIOS)
