# mypy: ignore-errors
# (hand-run recorder built on kazoo, which ships no type information)
"""Record ZooKeeper's exact znode-tree semantics as replayable JSON.

Run by hand (not part of the test suite; it needs a real ZooKeeper and kazoo):

    pip install kazoo
    apt-get install zookeeper          # Debian's package, provides the server jar
    python tests/zk_reference/record.py            # starts a private server
    python tests/zk_reference/record.py --hosts 127.0.0.1:2181   # or use one

It runs a fixed list of scenarios, each under its own fresh subtree /s<N>,
and writes tests/zk_reference/zk_reference.json (format described in the
"format" key of that file). Operations are sent as raw ZooKeeper protocol
requests through kazoo's connection, so the server sees paths exactly as
written (kazoo's high-level API would normalise them); only "makepath"
creates use kazoo's client-side helper, because ZooKeeper has no such
server-side flag.

Use a fresh server: the recording assumes nothing else writes to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, ZookeeperError
from kazoo.protocol.serialization import (
    CheckVersion,
    Create,
    Delete,
    Exists,
    GetChildren,
    GetData,
    SetData,
    Transaction,
)
from kazoo.security import OPEN_ACL_UNSAFE

HERE = Path(__file__).resolve().parent
OUT = HERE / "zk_reference.json"

# Debian package locations (overridable with --zk-classpath).
DEFAULT_CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"

ZK_CODE_NAMES = {
    0: "OK",
    -1: "SYSTEMERROR",
    -2: "RUNTIMEINCONSISTENCY",
    -3: "DATAINCONSISTENCY",
    -4: "CONNECTIONLOSS",
    -5: "MARSHALLINGERROR",
    -6: "UNIMPLEMENTED",
    -7: "OPERATIONTIMEOUT",
    -8: "BADARGUMENTS",
    -12: "UNKNOWNSESSION",
    -13: "NEWCONFIGNOQUORUM",
    -14: "RECONFIGINPROGRESS",
    -100: "APIERROR",
    -101: "NONODE",
    -102: "NOAUTH",
    -103: "BADVERSION",
    -108: "NOCHILDRENFOREPHEMERALS",
    -110: "NODEEXISTS",
    -111: "NOTEMPTY",
    -112: "SESSIONEXPIRED",
    -114: "INVALIDACL",
    -115: "AUTHFAILED",
    -118: "SESSIONMOVED",
    -119: "NOTREADONLY",
    -125: "QUOTAEXCEEDED",
}

FLAG_EPHEMERAL = 1
FLAG_SEQUENTIAL = 2

STAT_INT_FIELDS = ("version", "cversion", "aversion", "dataLength", "numChildren")

FORMAT = """\
Ground truth of ZooKeeper's znode tree, recorded from a real server by
tests/zk_reference/record.py. Top level: zookeeper_version, kazoo_version,
zxid_semantics (measured summary), root_at_run_start, scenarios.

Each scenario has: name, description, base (its subtree, e.g. "/s3"),
root_at_start (stat of "/" right before the scenario's first step) and steps.
Replay a scenario by executing its steps in order on a tree that does not
contain `base`; step 0 always creates `base` (so the scenario's first write is
step 0 and it gets relative zxid 1).

Step fields:
  op: create | set | delete | exists | get | get_children | multi
  args: the exact request. Paths are absolute and sent verbatim (no client
    normalisation). data_hex: hex of the bytes, or null = protocol null buffer.
    create: path, data_hex, ephemeral, sequential, makepath (makepath=true is
      kazoo's CLIENT-SIDE helper: try create; on NoNode create each missing
      ancestor with empty data, then retry; all of those are separate writes).
    set: path, data_hex, version.  delete: path, version (non-recursive).
    exists/get/get_children: path.
    multi: ops = list of {op: create|set|delete|check, ...same args};
      check has path, version.
    args.path_from_step = k: use the path that step k created (its name
      depends on the root's counter, see root_writes).
  note: human explanation of why the step is there.
  result: {"ok": true, "value": V} or
          {"ok": false, "error": <kazoo exception class>, "code": <ZK int code>,
           "zk_code": <ZooKeeper KeeperException.Code name>}
    V for create: created path; set: stat of the node after the set;
    delete: null; exists: stat or null; get: {data_hex, stat};
    get_children: sorted child names (ZooKeeper's own order is unspecified);
    multi: always {"ok": <true only if every op succeeded>, "value": list}
      with one entry per op, each {"ok": true, "value": ...} (create: path,
      set: stat, delete/check: null) or an error object as above.
  zxid_after: relative zxid in the reply header of this step (the server's
    last zxid when it replied; for a write it is the zxid that write used).
  zxid_consumed: zxid_after minus zxid_after of the previous step (or of the
    state before the scenario for step 0): how many zxids this step used.
  nodes: snapshot after the step: every node of the subtree `base`, "/", and
    every path the step named (plus its parent); a missing node is null.
    A node is {"data_hex", "stat"}.

Stat fields (ZooKeeper names): czxid, mzxid, pzxid, version, cversion,
aversion, ephemeralOwner, dataLength, numChildren, plus ctime_eq_mtime
(ctime == mtime) and mtime_changed (vs the same node, identified by czxid, in
the previous snapshot; null when the node is new). Raw times are omitted.
Zxids are relative: 0 stays 0 (never set), the scenario's first write is 1,
and any zxid older than the scenario is the string "pre".
ephemeralOwner: 0, or "session" (the recording client's own session).
For "/", cversion and numChildren are raw server values: compare them as a
difference from the scenario's root_at_start (the server also holds
/zookeeper and earlier scenarios' subtrees).
"""


def hexdata(data: bytes | None) -> str | None:
    return None if data is None else bytes(data).hex()


def unhex(h: str | None) -> bytes | None:
    return None if h is None else bytes.fromhex(h)


def t(s: str) -> str:
    """Text -> data_hex."""
    return s.encode().hex()


def parent_of(path: str) -> str | None:
    """Parent of an absolute path as ZooKeeper computes it (text before the last '/')."""
    if not path.startswith("/") or path == "/":
        return None
    i = path.rfind("/")
    return "/" if i == 0 else path[:i]


# ----------------------------------------------------------------------------
# step constructors (paths may contain "{b}", replaced by the scenario base)


def create(path, data="", *, seq=False, eph=False, makepath=False, note=None):
    return _step(
        "create", note, path=path, data_hex=data, ephemeral=eph, sequential=seq, makepath=makepath
    )


def set_(path, data, version=-1, note=None):
    return _step("set", note, path=path, data_hex=data, version=version)


def delete(path, version=-1, note=None):
    return _step("delete", note, path=path, version=version)


def exists(path, note=None):
    return _step("exists", note, path=path)


def get(path, note=None):
    return _step("get", note, path=path)


def children(path, note=None):
    return _step("get_children", note, path=path)


def multi(*ops, note=None):
    return _step("multi", note, ops=list(ops))


def m_create(path, data="", *, seq=False, eph=False):
    return {"op": "create", "path": path, "data_hex": data, "ephemeral": eph, "sequential": seq}


def m_set(path, data, version=-1):
    return {"op": "set", "path": path, "data_hex": data, "version": version}


def m_delete(path, version=-1):
    return {"op": "delete", "path": path, "version": version}


def m_check(path, version):
    return {"op": "check", "path": path, "version": version}


def _with(step, **extra):
    step["args"].update(extra)
    return step


def _step(op, note, **args):
    return {"op": op, "args": args, "note": note}


# ----------------------------------------------------------------------------
# scenarios

SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "basic_stat_evolution",
        "description": "create child, set child, delete child, create again; stat of child, parent, base, /",
        "steps": [
            create("{b}/p", note="parent, empty data"),
            create(
                "{b}/p/c",
                t("hello"),
                note="child: parent cversion/pzxid/numChildren change, parent mzxid/version not",
            ),
            set_("{b}/p/c", t("world!"), -1, note="set with version -1 (any)"),
            set_(
                "{b}/p/c",
                t("world!"),
                1,
                note="same data again with matching version: version still increments?",
            ),
            set_("{b}/p", t("x"), 0, note="set parent data: children-related fields unchanged"),
            get("{b}/p/c"),
            delete("{b}/p/c", -1, note="delete child: parent cversion/pzxid?"),
            create("{b}/p/c", t("again"), note="re-create: fresh czxid, version 0"),
            children("{b}/p"),
            exists("{b}/p/c"),
            delete("{b}/p/c", 0),
            delete("{b}/p", 1, note="parent version is 1 after one set"),
            exists("{b}/p"),
        ],
    },
    {
        "name": "sequential_interleaved_plain",
        "description": "sequential and plain creates under one parent; different prefixes share the counter?",
        "steps": [
            create("{b}/q"),
            create("{b}/q/n", seq=True, note="first sequential: suffix 0000000000?"),
            create("{b}/q/plain1", note="plain create between sequential ones"),
            create("{b}/q/n", seq=True),
            create("{b}/q/m", seq=True, note="different prefix, same parent"),
            create("{b}/q/", seq=True, note="empty prefix (path ends with '/')"),
            set_("{b}/q", t("data"), -1, note="set on parent: does not touch cversion"),
            create("{b}/q/n", seq=True, note="after a set of the parent"),
            create("{b}/q/n-", t("x"), seq=True, note="prefix with punctuation"),
            children("{b}/q"),
        ],
    },
    {
        "name": "sequential_after_deletes",
        "description": "do deletes advance cversion and therefore the sequential counter? does a failed create?",
        "steps": [
            create("{b}/q"),
            create("{b}/q/n", seq=True),
            create("{b}/q/n", seq=True),
            delete("{b}/q/n0000000000", note="delete of a child: parent cversion +1?"),
            create("{b}/q/n", seq=True, note="suffix counts the delete?"),
            delete("{b}/q/n0000000001"),
            delete("{b}/q/n0000000002"),
            create("{b}/q/n", seq=True),
            create("{b}/q/x"),
            create("{b}/q/x", note="failed create (NodeExists): cversion unchanged?"),
            delete("{b}/q/missing", note="failed delete (NoNode) of a child"),
            create("{b}/q/n", seq=True, note="suffix after the failed create/delete"),
            children("{b}/q"),
        ],
    },
    {
        "name": "sequential_collision",
        "description": "sequential create whose computed name already exists",
        "steps": [
            create("{b}/q"),
            create(
                "{b}/q/n0000000003",
                t("plain"),
                note="plain create of a name the counter will reach",
            ),
            create("{b}/q/n", seq=True),
            create("{b}/q/n", seq=True),
            create("{b}/q/n", seq=True, note="computed name n0000000003 exists"),
            create("{b}/q/n", seq=True, note="again: the counter did not move, so collides again?"),
            create("{b}/q/other", note="a plain create advances cversion"),
            create("{b}/q/n", seq=True, note="now past the collision"),
            children("{b}/q"),
        ],
    },
    {
        "name": "sequential_under_base_and_errors",
        "description": "sequential directly under the scenario base; sequential under a missing parent",
        "steps": [
            create("{b}/x", seq=True),
            create("{b}/", seq=True, note="empty prefix directly under base"),
            create("{b}/x", seq=True),
            create("{b}/missing/n", seq=True, note="parent missing"),
            create("{b}/x", seq=True, note="after the failed sequential create"),
            create("{b}/e", eph=True),
            create("{b}/e/n", seq=True, note="sequential under an ephemeral"),
            create("{b}/se", eph=True, seq=True, note="ephemeral+sequential node"),
            children("{b}"),
        ],
    },
    {
        "name": "set_errors_and_versions",
        "description": "set on missing node with/without version, -1, wrong version, other negative versions",
        "steps": [
            set_(
                "{b}/missing", t("v"), 5, note="missing node and a version: NoNode or BadVersion?"
            ),
            set_("{b}/missing", t("v"), -1),
            create("{b}/a", t("1")),
            set_("{b}/a", t("2"), 3, note="wrong version"),
            set_("{b}/a", t("2"), 0),
            set_("{b}/a", t("3"), 0, note="stale version"),
            set_("{b}/a", t("3"), -1),
            set_("{b}/a", t("4"), -2, note="negative version other than -1"),
            set_("{b}/a", t("4"), 2),
            get("{b}/a"),
            set_("{b}/missing/deeper", t("v"), -1, note="parent missing too"),
        ],
    },
    {
        "name": "delete_error_order",
        "description": "order of checks in delete: NoNode, BadVersion, NotEmpty",
        "steps": [
            delete("{b}/missing", 3, note="missing node with a version"),
            delete("{b}/missing/deeper", -1),
            create("{b}/a"),
            create("{b}/a/c"),
            delete("{b}/a", 5, note="non-empty AND wrong version: which error?"),
            delete("{b}/a", 0, note="non-empty, right version"),
            delete("{b}/a", -1, note="non-empty, any version"),
            delete("{b}/a/c", 1, note="wrong version"),
            delete("{b}/a/c", -2, note="negative version other than -1"),
            delete("{b}/a/c", 0),
            delete("{b}/a", -1),
            delete("{b}/a", -1, note="already gone"),
        ],
    },
    {
        "name": "create_errors",
        "description": "missing parent, existing node, children of ephemerals, error precedence",
        "steps": [
            create("{b}/missing/child", note="parent missing"),
            create("{b}/a", t("1")),
            create("{b}/a", t("2"), note="exists"),
            create("{b}/a", t("2"), eph=True, note="exists, ephemeral flag"),
            create("{b}/e", t("eph"), eph=True),
            create("{b}/e/child", note="child of an ephemeral"),
            create("{b}/e/child", eph=True, note="ephemeral child of an ephemeral"),
            create("{b}/e", note="existing ephemeral"),
            children("{b}/e"),
            set_("{b}/e", t("changed"), 0, note="set on ephemeral keeps owner"),
            delete("{b}/e", 1),
        ],
    },
    {
        "name": "makepath_client_side",
        "description": "kazoo makepath=True is client-side; server create with missing parent is NoNode",
        "steps": [
            create(
                "{b}/x/y/z",
                t("d"),
                makepath=True,
                note="kazoo: failed create, then ancestors, then retry",
            ),
            create("{b}/m/n", t("d"), note="server-side create, parent missing"),
            create("{b}/x/y/z", t("d"), makepath=True, note="already exists"),
            create("{b}/x/y/w", t("d"), makepath=True, note="parent exists: a plain create"),
            create(
                "{b}/x/s/", seq=True, makepath=True, note="makepath + sequential with trailing '/'"
            ),
        ],
    },
    {
        "name": "path_validation",
        "description": "invalid paths sent verbatim (no client normalisation); root writes",
        "steps": [
            create("/", note="create the root"),
            delete("/", -1, note="delete the root"),
            delete("/", 0, note="delete the root with version"),
            create("{b}/a/", note="trailing slash, not sequential"),
            create("{b}//a", note="empty component"),
            create("{b}/./a", note="'.' component"),
            create("{b}/../a", note="'..' component"),
            create("{b}/.", note="'.' as last component"),
            create("{b}/..."),
            create("{b}/.a"),
            create("relative", note="no leading slash"),
            create("", note="empty path"),
            create("{b}/nul\u0000x", note="NUL char"),
            create("{b}/ctl\u0001x", note="control char U+0001"),
            create("{b}/del\u007fx", note="U+007F"),
            create("{b}/sp ace"),
            create("{b}/\u00fcnicode\u20ac"),
            create("{b}/zookeeper", note="reserved name below another node"),
            exists("{b}/sp ace/", note="read with trailing slash"),
            get("{b}/sp ace/"),
            exists("{b}//sp ace"),
            children("{b}/"),
            set_("{b}/sp ace/", t("x"), -1, note="write with trailing slash"),
            delete("{b}/sp ace/", -1),
            create("{b}/s/", seq=True, note="sequential, parent missing"),
            exists("relative"),
            children(""),
            create("{b}/sp ace/", note="trailing slash, parent exists"),
            create("{b}/sp ace//x", note="empty component, parent (with trailing slash) missing"),
            create("{b}/sp ace/.", note="'.' last, parent exists"),
            create("{b}/sp ace/..", note="'..' last, parent exists"),
            create(
                "{b}/sp ace/x/",
                seq=True,
                note="sequential with trailing slash: parent is {b}/sp ace/x, missing",
            ),
            set_("{b}//sp ace", t("x"), -1, note="set, empty component"),
            set_("relative", t("x"), -1),
            set_("{b}/missing/", t("x"), -1, note="set, trailing slash, node missing"),
            delete("{b}//sp ace", -1, note="delete, empty component"),
            delete("relative", -1),
            delete("{b}/sp ace/.", -1),
            delete("{b}/", -1, note="delete, trailing slash on existing node"),
            multi(m_check("{b}/sp ace/", -1), note="check with trailing slash"),
            multi(m_create("{b}/sp ace/"), note="create with trailing slash in a multi"),
            create("/zookeeper", note="reserved node exists"),
        ],
    },
    {
        "name": "cversion_counts_creates",
        "description": "reported cversion vs the sequential counter when children are deleted",
        "steps": [
            create("{b}/q"),
            create("{b}/q/a"),
            create("{b}/q/b"),
            create("{b}/q/c"),
            delete("{b}/q/a"),
            delete("{b}/q/b"),
            create("{b}/q/n", seq=True, note="suffix: creates so far (3) or cversion (5)?"),
            delete("{b}/q/c"),
            multi(
                m_create("{b}/q/n", seq=True),
                m_delete("{b}/q/n0000000003"),
                m_create("{b}/q/n", seq=True),
                note="in-multi delete before a sequential create",
            ),
            create("{b}/q/n", seq=True),
            children("{b}/q"),
        ],
    },
    {
        "name": "multi_success",
        "description": "create+set+delete+check in one multi: one zxid for all?",
        "steps": [
            create("{b}/a", t("0")),
            create("{b}/d"),
            multi(
                m_create("{b}/n", t("1")),
                m_set("{b}/a", t("2"), 0),
                m_delete("{b}/d", -1),
                m_check("{b}/a", 1),
            ),
            exists("{b}/n"),
            create("{b}/after", note="next write after the multi"),
        ],
    },
    {
        "name": "multi_failure",
        "description": "per-op results of a failed multi; zxid consumption; error in first/middle/last op",
        "steps": [
            create("{b}/a", t("0")),
            multi(
                m_create("{b}/n", t("1")),
                m_set("{b}/a", t("2"), 99),
                m_create("{b}/m", t("1")),
                m_check("{b}/a", 0),
                note="op 2 of 4 fails (BadVersion)",
            ),
            create("{b}/after1", note="did the failed multi consume a zxid?"),
            multi(
                m_create("{b}/a"),
                m_create("{b}/n"),
                note="op 1 of 2 fails (NodeExists)",
            ),
            multi(
                m_create("{b}/n"),
                m_set("{b}/a", t("x"), 0),
                m_check("{b}/a", 5),
                note="last op (check) fails",
            ),
            multi(
                m_create("{b}/n"),
                m_delete("{b}/missing"),
                m_set("{b}/a", t("x"), 99),
                note="op 2 and op 3 would both fail",
            ),
            multi(
                m_check("{b}/missing", -1),
                note="check on a missing node",
            ),
            multi(
                m_create("{b}/n"),
                m_create("{b}/n"),
                note="same create twice",
            ),
            multi(
                m_create("{b}/q/x"),
                m_create("{b}/q", seq=True),
                note="op depends on a later op (wrong order)",
            ),
            multi(
                m_delete("{b}/a", 3),
                m_create("{b}/a/child"),
                note="delete with wrong version; next op fine",
            ),
            create("{b}/after2"),
            exists("{b}/n"),
            exists("{b}/a"),
        ],
    },
    {
        "name": "multi_sequential",
        "description": "sequential creates inside a multi: suffixes see earlier ops of the same multi?",
        "steps": [
            create("{b}/q"),
            multi(
                m_create("{b}/q/n", seq=True),
                m_create("{b}/q/n", seq=True),
                m_create("{b}/q/x"),
                m_create("{b}/q/n", seq=True),
                m_delete("{b}/q/x"),
                m_create("{b}/q/n", seq=True),
            ),
            multi(
                m_create("{b}/q/n", seq=True),
                m_create("{b}/q/n", seq=True),
                m_check("{b}/q", 99),
                note="failed multi with sequential creates: counter unchanged?",
            ),
            create("{b}/q/n", seq=True),
            children("{b}/q"),
        ],
    },
    {
        "name": "multi_dependencies",
        "description": "ops that depend on earlier ops of the same multi",
        "steps": [
            multi(
                m_create("{b}/a", t("1")),
                m_create("{b}/a/b", t("2")),
                m_set("{b}/a/b", t("3"), 0),
                m_check("{b}/a/b", 1),
                m_set("{b}/a/b", t("4"), 1),
                m_check("{b}/a", 0),
                note="create parent+child, set twice, checks see in-multi versions",
            ),
            multi(
                m_delete("{b}/a/b", 2),
                m_delete("{b}/a", 0),
                note="delete child then parent",
            ),
            multi(
                m_create("{b}/x"),
                m_delete("{b}/x"),
                note="create and delete the same node",
            ),
            create("{b}/c", t("c")),
            multi(
                m_delete("{b}/c"),
                m_create("{b}/c", t("new")),
                note="delete and re-create the same node",
            ),
            multi(
                m_create("{b}/p"),
                m_create("{b}/p/e", eph=True),
                m_create("{b}/p/e/x"),
                note="child of an ephemeral created in the same multi",
            ),
            multi(
                m_create("{b}/p"),
                m_delete("{b}/p"),
                m_delete("{b}/p"),
                note="second delete of a node deleted earlier in the multi",
            ),
            multi(note="empty multi"),
            create("{b}/after"),
        ],
    },
    {
        "name": "root_stat",
        "description": "stat of / as children are created and deleted under it (via the base node)",
        "steps": [
            exists("/"),
            create("{b}/a"),
            delete("{b}/a"),
            exists("/zookeeper"),
            children("/zookeeper"),
            delete("{b}", note="delete the base itself: root cversion/pzxid/numChildren"),
            create("{b}", note="re-create the base"),
            exists("/"),
        ],
    },
    {
        "name": "data_values",
        "description": "empty vs null data, binary data, multibyte text, same data again",
        "steps": [
            create("{b}/empty", ""),
            create("{b}/null", None, note="protocol null buffer"),
            get("{b}/empty"),
            get("{b}/null", note="null comes back as null or empty?"),
            create("{b}/bin", bytes(range(256)).hex()),
            create("{b}/utf", t("\u00fc\u20ac\U0001f600"), note="dataLength counts bytes"),
            get("{b}/utf"),
            set_("{b}/empty", None, 0, note="set null"),
            get("{b}/empty"),
            set_(
                "{b}/bin", bytes(range(256)).hex(), 0, note="same data: version and mzxid change?"
            ),
            set_("{b}/bin", "", 1),
            get("{b}/bin"),
            multi(m_create("{b}/mnull", None), m_set("{b}/empty", "", -1)),
            get("{b}/mnull"),
        ],
    },
    {
        "name": "failed_writes_consume_zxids",
        "description": "explicit measurement: successful writes around failed writes and reads",
        "steps": [
            create("{b}/a"),
            create("{b}/a", note="NodeExists"),
            create("{b}/b", note="czxid tells whether the failed create used a zxid"),
            set_("{b}/missing", t("x"), -1, note="NoNode"),
            delete("{b}/missing", -1, note="NoNode"),
            set_("{b}/a", t("x"), 7, note="BadVersion"),
            delete("{b}/a", 3, note="BadVersion"),
            create("{b}/missing/x", note="NoNode"),
            create("/", note="BadArguments or NodeExists"),
            create("{b}//bad", note="BadArguments"),
            create("{b}/c"),
            exists("{b}/a"),
            get("{b}/a"),
            children("{b}"),
            get("{b}/missing", note="failed read"),
            create("{b}/d", note="reads do not use zxids?"),
        ],
    },
    {
        "name": "root_writes",
        "description": "writes on / itself (last scenario: changes the root's own stat)",
        "steps": [
            create(
                "/zkref_seq",
                seq=True,
                note="sequential under /: suffix = root cversion (see root_at_start)",
            ),
            _with(
                delete("/zkref_seq", note="path is the one step 1 created (args.path_from_step)"),
                path_from_step=1,
            ),
            set_("/", t("rootdata"), -1, note="set data on the root"),
            get("/"),
            set_("/", "", 1),
        ],
    },
]


# ----------------------------------------------------------------------------
# recorder


class Recorder:
    def __init__(self, client: KazooClient):
        self.client = client
        self.session_id = client.client_id[0]
        self.first = 0  # absolute zxid of the current scenario's first write
        self.prev_snapshot: dict[str, Any] = {}

    # raw protocol calls ------------------------------------------------------
    def call(self, request):
        ar = self.client.handler.async_result()
        self.client._call(request, ar)
        return ar.get(timeout=15)

    def rz(self, z: int) -> int | str:
        if z == 0:
            return 0
        if z < self.first:
            return "pre"
        return z - self.first + 1

    def stat(self, st) -> dict[str, Any]:
        out: dict[str, Any] = {
            "czxid": self.rz(st.czxid),
            "mzxid": self.rz(st.mzxid),
            "pzxid": self.rz(st.pzxid),
        }
        for f in STAT_INT_FIELDS:
            out[f] = getattr(st, f)
        owner = st.ephemeralOwner
        out["ephemeralOwner"] = (
            0 if owner == 0 else ("session" if owner == self.session_id else "other-session")
        )
        out["ctime_eq_mtime"] = st.ctime == st.mtime
        return out

    def err(self, e: BaseException) -> dict[str, Any]:
        code = getattr(e, "code", None)
        if not isinstance(code, int):
            code = None
        return {
            "ok": False,
            "error": type(e).__name__,
            "code": code,
            "zk_code": ZK_CODE_NAMES.get(code) if code is not None else "client-side",
        }

    # snapshot ----------------------------------------------------------------
    def walk(self, path: str, out: list[str]) -> None:
        out.append(path)
        try:
            kids = self.call(GetChildren(path, None))
        except ZookeeperError:
            return
        for k in sorted(kids):
            self.walk(path.rstrip("/") + "/" + k, out)

    def node(self, path: str):
        try:
            data, st = self.call(GetData(path, None))
        except ZookeeperError:
            return None
        return data, st

    def snapshot(self, base: str, extra: list[str]) -> dict[str, Any]:
        paths: list[str] = []
        if self.node(base) is not None:
            self.walk(base, paths)
        wanted = ["/"] + paths
        for p in extra:
            for q in (p, parent_of(p)):
                if q and q.startswith("/") and "\u0000" not in q and q not in wanted:
                    wanted.append(q)
        snap: dict[str, Any] = {}
        for p in sorted(set(wanted), key=lambda s: (s != "/", s)):
            n = self.node(p)
            if n is None:
                snap[p] = None
                continue
            data, st = n
            s = self.stat(st)
            prev = self.prev_snapshot.get(p)
            if prev is not None and prev["_czxid_abs"] == st.czxid:
                s["mtime_changed"] = prev["_mtime"] != st.mtime
            else:
                s["mtime_changed"] = None
            snap[p] = {
                "data_hex": hexdata(data),
                "stat": s,
                "_czxid_abs": st.czxid,
                "_mtime": st.mtime,
            }
        self.prev_snapshot = snap
        return {
            p: (None if v is None else {"data_hex": v["data_hex"], "stat": v["stat"]})
            for p, v in snap.items()
        }

    # operations --------------------------------------------------------------
    def do(self, op: str, a: dict[str, Any]) -> dict[str, Any]:
        try:
            if op == "create":
                flags = (FLAG_EPHEMERAL if a["ephemeral"] else 0) | (
                    FLAG_SEQUENTIAL if a["sequential"] else 0
                )
                if a["makepath"]:
                    v = self.client.create(
                        a["path"],
                        unhex(a["data_hex"]) or b"",
                        ephemeral=a["ephemeral"],
                        sequence=a["sequential"],
                        makepath=True,
                    )
                else:
                    v = self.call(Create(a["path"], unhex(a["data_hex"]), OPEN_ACL_UNSAFE, flags))
                return {"ok": True, "value": v}
            if op == "set":
                st = self.call(SetData(a["path"], unhex(a["data_hex"]), a["version"]))
                return {"ok": True, "value": self.stat(st)}
            if op == "delete":
                self.call(Delete(a["path"], a["version"]))
                return {"ok": True, "value": None}
            if op == "exists":
                st = self.call(Exists(a["path"], None))
                return {"ok": True, "value": None if st is None else self.stat(st)}
            if op == "get":
                data, st = self.call(GetData(a["path"], None))
                return {"ok": True, "value": {"data_hex": hexdata(data), "stat": self.stat(st)}}
            if op == "get_children":
                return {"ok": True, "value": sorted(self.call(GetChildren(a["path"], None)))}
            if op == "multi":
                reqs = []
                for o in a["ops"]:
                    if o["op"] == "create":
                        fl = (FLAG_EPHEMERAL if o["ephemeral"] else 0) | (
                            FLAG_SEQUENTIAL if o["sequential"] else 0
                        )
                        reqs.append(Create(o["path"], unhex(o["data_hex"]), OPEN_ACL_UNSAFE, fl))
                    elif o["op"] == "set":
                        reqs.append(SetData(o["path"], unhex(o["data_hex"]), o["version"]))
                    elif o["op"] == "delete":
                        reqs.append(Delete(o["path"], o["version"]))
                    elif o["op"] == "check":
                        reqs.append(CheckVersion(o["path"], o["version"]))
                res = self.call(Transaction(reqs))
                per = []
                for o, r in zip(a["ops"], res):
                    if isinstance(r, BaseException):
                        per.append(self.err(r))
                    elif o["op"] == "create":
                        per.append({"ok": True, "value": r})
                    elif o["op"] == "set":
                        per.append({"ok": True, "value": self.stat(r)})
                    else:
                        per.append({"ok": True, "value": None})
                out = {"ok": all(p["ok"] for p in per), "value": per}
                if len(res) != len(a["ops"]):
                    out["result_count_mismatch"] = len(res)
                return out
            raise ValueError(op)
        except (KazooException, ValueError, TypeError) as e:
            return self.err(e)

    def run_scenario(self, idx: int, sc: dict[str, Any]) -> dict[str, Any]:
        base = f"/s{idx}"

        def sub(x):
            if isinstance(x, str):
                return x.replace("{b}", base)
            if isinstance(x, list):
                return [sub(i) for i in x]
            if isinstance(x, dict):
                return {k: sub(v) for k, v in x.items()}
            return x

        steps = [create(base, note="scenario base")] + sub(sc["steps"])
        # zxid before the scenario: from the reply header of a read
        self.call(Exists("/", None))
        start_zxid = self.client.last_zxid
        self.first = start_zxid + 1
        self.prev_snapshot = {}
        root_at_start = self.stat(self.call(Exists("/", None)))
        root_at_start.pop("ctime_eq_mtime")
        prev_z = start_zxid
        out_steps: list[dict[str, Any]] = []
        for step in steps:
            args = dict(step["args"])
            if "path_from_step" in args:
                args["path"] = out_steps[args["path_from_step"]]["result"]["value"]
            time.sleep(0.01)  # make mtimes of consecutive writes differ (ms resolution)
            result = self.do(step["op"], args)
            # reply header zxid of the step itself
            z = self.client.last_zxid
            touched = [args["path"]] if "path" in args else [o["path"] for o in args.get("ops", [])]
            if step["op"] == "create" and result["ok"]:
                touched.append(result["value"])
            if step["op"] == "multi" and result["ok"]:
                touched += [r["value"] for r in result["value"] if isinstance(r.get("value"), str)]
            rec = {
                "op": step["op"],
                "args": args,
                "note": step["note"],
                "result": result,
                "zxid_after": self.rz(z),
                "zxid_consumed": z - prev_z,
            }
            if rec["note"] is None:
                del rec["note"]
            rec["nodes"] = self.snapshot(base, touched)
            prev_z = z
            out_steps.append(rec)
            if len(out_steps) == 1 and not result["ok"]:
                raise SystemExit(f"cannot create {base} ({result['error']}): use a fresh server")
        return {
            "name": sc["name"],
            "description": sc["description"],
            "base": base,
            "root_at_start": root_at_start,
            "steps": out_steps,
        }


def summarise(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Measured facts about zxid use, derived from the recorded steps."""
    failed_write, ok_write, reads, multi_failed = set(), set(), set(), set()
    for sc in scenarios:
        for st in sc["steps"]:
            if st["op"] in ("exists", "get", "get_children"):
                reads.add(st["zxid_consumed"])
            elif st["op"] == "multi" and not st["result"]["ok"]:
                multi_failed.add(st["zxid_consumed"])
            elif st["args"].get("makepath"):
                continue
            elif st["result"]["ok"]:
                ok_write.add(st["zxid_consumed"])
            elif st["result"].get("zk_code") != "client-side":
                failed_write.add(st["zxid_consumed"])
    # which formula gives the 10-digit suffix of a single sequential create?
    seq_total = seq_cversion = seq_creates = 0
    for sc in scenarios:
        for i, st in enumerate(sc["steps"]):
            a = st["args"]
            if (
                st["op"] != "create"
                or not a.get("sequential")
                or a.get("makepath")
                or not st["result"]["ok"]
            ):
                continue
            parent = (
                parent_of(a["path"]) if not a["path"].endswith("/") else (a["path"][:-1] or "/")
            )
            before = sc["steps"][i - 1]["nodes"].get(parent)
            if not before:
                continue
            suffix = int(st["result"]["value"][-10:])
            ps = before["stat"]
            seq_total += 1
            seq_cversion += suffix == ps["cversion"]
            seq_creates += 2 * suffix == ps["cversion"] + ps["numChildren"]
    return {
        "single_sequential_creates_checked": seq_total,
        "suffix_equals_parent_cversion_before": seq_cversion,
        "suffix_equals_(parent_cversion+parent_numChildren)/2_before": seq_creates,
        "zxids_used_by_successful_single_write": sorted(ok_write),
        "zxids_used_by_failed_single_write": sorted(failed_write),
        "zxids_used_by_failed_multi": sorted(multi_failed),
        "zxids_used_by_read": sorted(reads),
    }


# ----------------------------------------------------------------------------
# optional private server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(classpath: str):
    tmp = tempfile.mkdtemp(prefix="zkref-")
    port = free_port()
    os.mkdir(os.path.join(tmp, "data"))
    cfg = os.path.join(tmp, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write(
            "tickTime=2000\n"
            f"dataDir={tmp}/data\n"
            f"clientPort={port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr\n"
        )
    log_path = os.path.join(tmp, "zk.log")
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            ["java", "-cp", classpath, "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("ZooKeeper exited; see " + log_path)
            time.sleep(0.3)
    return proc, tmp, f"127.0.0.1:{port}"


def server_version(client: KazooClient) -> str:
    try:
        out = client.command(b"srvr")
    except (KazooException, OSError, ValueError):  # four-letter words unavailable
        return "unknown"
    for line in out.splitlines():
        if line.lower().startswith("zookeeper version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def dump(doc: dict[str, Any]) -> str:
    """JSON with every innermost object (stats, args, results) on one line."""

    def one_line(m: re.Match[str]) -> str:
        try:
            return json.dumps(json.loads(m.group(0)), ensure_ascii=True)
        except ValueError:
            return m.group(0)

    text = json.dumps(doc, indent=1, ensure_ascii=True)
    return re.sub(r"\{[^{}\[\]]*\}", one_line, text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", help="host:port of a fresh ZooKeeper; default: start a private one")
    ap.add_argument("--zk-classpath", default=DEFAULT_CLASSPATH)
    ap.add_argument("--out", default=str(OUT))
    opts = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # kazoo warns on the expected disconnect at the end

    proc = tmp = None
    hosts = opts.hosts
    if not hosts:
        proc, tmp, hosts = start_server(opts.zk_classpath)
    try:
        client = KazooClient(hosts=hosts, timeout=15)
        client.start(timeout=30)
        try:
            version = server_version(client)
            rec = Recorder(client)
            rec.first = 1
            root0 = rec.stat(rec.call(Exists("/", None)))
            root0.pop("ctime_eq_mtime")
            root0_children = sorted(rec.call(GetChildren("/", None)))
            scenarios = [rec.run_scenario(i, sc) for i, sc in enumerate(SCENARIOS, 1)]
        finally:
            client.stop()
            client.close()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)

    import kazoo

    doc = {
        "format": FORMAT.splitlines(),
        "zookeeper_version": version,
        "kazoo_version": getattr(kazoo, "__version__", "unknown"),
        "regenerate": "python tests/zk_reference/record.py",
        "zxid_semantics": summarise(scenarios),
        "root_at_run_start": {
            "stat": root0,
            "children": root0_children,
            "note": "absolute zxids here; the recording session's createSession used one",
        },
        "scenarios": scenarios,
    }
    Path(opts.out).write_text(dump(doc))
    print(f"wrote {opts.out}: {len(scenarios)} scenarios, ZooKeeper {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
