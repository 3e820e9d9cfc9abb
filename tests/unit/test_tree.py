"""The znode tree as a specification: ZooKeeper's stat and error semantics."""

from __future__ import annotations

import pytest

from httpcoord.errors import (
    BadArguments,
    BadVersion,
    InvalidPath,
    MultiFailed,
    NodeExists,
    NoNode,
    NotEmpty,
)
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import CheckOp, CreateOp, DeleteOp, Op, SetDataOp, Txn


def run(tree: Tree, *ops: Op, multi: bool = False, time_ms: int = 1000):
    return tree.apply(Txn(tuple(ops), time_ms, multi))


def test_create_sets_stat_of_node_and_parent() -> None:
    tree = Tree()
    result, _ = run(tree, CreateOp("/a", b"hello"), time_ms=42)
    stat = result.results[0].stat
    assert result.zxid == 1
    assert (stat.czxid, stat.mzxid, stat.pzxid) == (1, 1, 1)
    assert (stat.ctime, stat.mtime, stat.version, stat.cversion) == (42, 42, 0, 0)
    assert stat.data_length == 5 and stat.num_children == 0 and stat.ephemeral_owner == ""
    root = tree.get("/").stat()
    assert (root.cversion, root.pzxid, root.num_children, root.mzxid) == (1, 1, 1, 0)


def test_set_bumps_version_mzxid_mtime_but_not_czxid() -> None:
    tree = Tree()
    run(tree, CreateOp("/a", b"x"))
    result, events = run(tree, SetDataOp("/a", b"yy", version=0), time_ms=2000)
    stat = result.results[0].stat
    assert (stat.czxid, stat.mzxid, stat.version, stat.mtime, stat.data_length) == (
        1,
        2,
        1,
        2000,
        2,
    )
    assert [e.type for e in events] == ["data_changed"]


def test_set_of_the_same_data_still_counts_as_a_change() -> None:
    tree = Tree()
    run(tree, CreateOp("/a", b"x"))
    result, _ = run(tree, SetDataOp("/a", b"x"))
    assert result.results[0].stat.version == 1


def test_set_with_a_version_on_a_missing_node_is_nonode() -> None:
    tree = Tree()
    with pytest.raises(NoNode):
        run(tree, SetDataOp("/missing", b"x", version=3))
    with pytest.raises(NoNode):
        run(tree, SetDataOp("/missing", b"x", version=-1))


def test_upsert_creates_a_missing_node() -> None:
    tree = Tree()
    result, _ = run(tree, SetDataOp("/a", b"x", upsert=True))
    assert result.results[0].created
    assert tree.get("/a").data == b"x"


def test_bad_version_is_refused_and_changes_nothing() -> None:
    tree = Tree()
    run(tree, CreateOp("/a", b"x"))
    before = tree.snapshot_bytes()
    with pytest.raises(BadVersion):
        run(tree, SetDataOp("/a", b"y", version=5))
    assert tree.snapshot_bytes() == before
    assert tree.zxid == 1


def test_a_refused_write_takes_no_zxid() -> None:
    tree = Tree()
    run(tree, CreateOp("/a"))
    with pytest.raises(NodeExists):
        run(tree, CreateOp("/a"))
    result, _ = run(tree, CreateOp("/b"))
    assert result.zxid == 2


def test_delete_checks_nonode_then_badversion_then_notempty() -> None:
    tree = Tree()
    run(tree, CreateOp("/a"))
    run(tree, CreateOp("/a/b"))
    with pytest.raises(NoNode):
        run(tree, DeleteOp("/x", version=7))
    with pytest.raises(BadVersion):
        run(tree, DeleteOp("/a", version=7))
    with pytest.raises(NotEmpty):
        run(tree, DeleteOp("/a", version=0))


def test_delete_of_the_root_is_refused() -> None:
    with pytest.raises(BadArguments):
        run(Tree(), DeleteOp("/"))


def test_delete_updates_parent_pzxid_and_cversion() -> None:
    tree = Tree()
    run(tree, CreateOp("/a"))
    run(tree, CreateOp("/a/b"))
    result, events = run(tree, DeleteOp("/a/b"))
    parent = tree.get("/a").stat()
    assert parent.pzxid == result.zxid == 3
    assert parent.num_children == 0
    assert parent.cversion == 2
    assert [(e.type, e.path) for e in events] == [("deleted", "/a/b"), ("children_changed", "/a")]


def test_recursive_delete_removes_the_subtree_in_one_txn() -> None:
    tree = Tree()
    for path in ("/a", "/a/b", "/a/b/c", "/a/d"):
        run(tree, CreateOp(path))
    result, events = run(tree, DeleteOp("/a", recursive=True))
    assert not tree.exists("/a") and not tree.exists("/a/b/c")
    assert {e.zxid for e in events} == {result.zxid}
    deleted = [e.path for e in events if e.type == "deleted"]
    assert sorted(deleted) == ["/a", "/a/b", "/a/b/c", "/a/d"]
    # Children before their parents.
    assert deleted.index("/a/b/c") < deleted.index("/a/b") < deleted.index("/a")


def test_create_without_parent_is_nonode_and_parents_flag_creates_them() -> None:
    tree = Tree()
    with pytest.raises(NoNode):
        run(tree, CreateOp("/a/b/c"))
    result, events = run(tree, CreateOp("/a/b/c", b"leaf", parents=True))
    assert result.zxid == 1
    assert tree.get("/a/b").data == b""
    assert tree.get("/a/b/c").data == b"leaf"
    assert [e.path for e in events if e.type == "created"] == ["/a", "/a/b", "/a/b/c"]


def test_sequential_suffix_is_ten_digits_from_the_parent_counter() -> None:
    tree = Tree()
    run(tree, CreateOp("/q"))
    run(tree, CreateOp("/q/plain"))
    result, _ = run(tree, CreateOp("/q/job-", sequential=True))
    assert result.results[0].path == "/q/job-0000000001"
    result, _ = run(tree, CreateOp("/q/", sequential=True))
    assert result.results[0].path == "/q/0000000002"


def test_sequential_suffix_counts_creates_not_deletes() -> None:
    tree = Tree()
    run(tree, CreateOp("/q"))
    run(tree, CreateOp("/q/n", sequential=True))
    run(tree, CreateOp("/q/n", sequential=True))
    run(tree, DeleteOp("/q/n0000000000"))
    assert tree.get("/q").stat().cversion == 3
    result, _ = run(tree, CreateOp("/q/n", sequential=True))
    assert result.results[0].path == "/q/n0000000002"


def test_sequential_create_whose_name_exists_is_nodeexists() -> None:
    tree = Tree()
    run(tree, CreateOp("/q"))
    run(tree, CreateOp("/q/n0000000001"))
    with pytest.raises(NodeExists):
        run(tree, CreateOp("/q/n", sequential=True))


@pytest.mark.parametrize(
    "path",
    ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/.", "/a\x00", "/a\x1f", "/\ud800"],
)
def test_invalid_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        run(Tree(), CreateOp(path))


def test_multi_is_all_or_nothing_with_one_zxid() -> None:
    tree = Tree()
    run(tree, CreateOp("/a", b"1"))
    result, events = run(
        tree,
        CreateOp("/b"),
        CreateOp("/b/c"),
        SetDataOp("/a", b"2", version=0),
        CheckOp("/a", version=1),
        DeleteOp("/b/c"),
        multi=True,
    )
    assert result.zxid == 2
    assert {e.zxid for e in events} == {2}
    assert tree.get("/a").stat().mzxid == 2 and tree.get("/b").stat().cversion == 2


def test_failed_multi_reports_each_op_and_applies_nothing() -> None:
    tree = Tree()
    run(tree, CreateOp("/a"))
    before = tree.snapshot_bytes()
    with pytest.raises(MultiFailed) as info:
        run(tree, CreateOp("/b"), SetDataOp("/a", b"", version=9), DeleteOp("/a"), multi=True)
    failure = info.value
    assert failure.failed_op == 1
    assert failure.error.code == "BadVersion" and failure.http_status == 409
    assert [r["status"] for r in failure.results] == ["rolled_back", "error", "not_run"]
    assert tree.snapshot_bytes() == before
    assert tree.zxid == 1


def test_failed_multi_rolls_back_a_recursive_delete() -> None:
    tree = Tree()
    for path in ("/a", "/a/b", "/a/b/c"):
        run(tree, CreateOp(path, path.encode()))
    before = tree.snapshot_bytes()
    with pytest.raises(MultiFailed):
        run(tree, DeleteOp("/a", recursive=True), CheckOp("/a", 0), multi=True)
    assert tree.snapshot_bytes() == before
    assert tree.children("/a/b") == ["c"]


def test_snapshot_round_trip_is_identical() -> None:
    tree = Tree()
    run(tree, CreateOp("/a", b"\xff\x00binary"))
    run(tree, CreateOp("/a/s", sequential=True))
    run(tree, SetDataOp("/a", b"text"))
    restored = Tree.from_snapshot(tree.snapshot_chunks(nodes_per_chunk=1))
    assert restored.snapshot_bytes() == tree.snapshot_bytes()
    assert restored.zxid == 3
    assert restored.get("/a").stat() == tree.get("/a").stat()
    assert restored.children("/a") == ["s0000000000"]
