"""Properties of the tree over random txn sequences (hypothesis):
determinism, snapshot + log restore, and multi atomicity."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from httpcoord.errors import CoordError
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import (
    CheckOp,
    CloseSessionOp,
    CreateOp,
    DeleteOp,
    Op,
    OpenSessionOp,
    ReapOp,
    SetDataOp,
    Txn,
    decode_txn,
    encode_txn,
)

# A small namespace so that ops collide: exists, missing parent, not empty...
PATHS = ["/a", "/b", "/a/b", "/a/c", "/a/b/c", "/b/a", "/"]
paths = st.sampled_from(PATHS)
versions = st.integers(min_value=-1, max_value=3)
data = st.binary(max_size=8)

sessions = st.sampled_from(["s1", "s2"])
owners = st.sampled_from(["", "", "s1", "s2"])

ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(CreateOp, paths, data, st.booleans(), st.booleans()),
    st.builds(
        CreateOp,
        paths,
        data,
        st.booleans(),
        st.booleans(),
        owners,
        st.booleans(),
        st.sampled_from([0, 0, 5, 10**6]),
    ),
    st.builds(OpenSessionOp, sessions, st.sampled_from([1000, 5000])),
    st.builds(CloseSessionOp, sessions, st.booleans()),
    st.builds(ReapOp, paths, st.integers(min_value=0, max_value=20)),
    st.builds(SetDataOp, paths, data, versions, st.booleans()),
    st.builds(DeleteOp, paths, versions, st.booleans()),
    st.builds(CheckOp, paths, versions),
)
txns = st.builds(
    Txn,
    st.lists(ops, min_size=1, max_size=4).map(tuple),
    st.integers(min_value=0, max_value=2**41),
    st.booleans(),
).filter(lambda t: t.multi or len(t.ops) == 1)


def apply_all(tree: Tree, log: list[Txn]) -> Tree:
    for txn in log:
        try:
            tree.apply(txn)
        except CoordError:
            pass
    return tree


@settings(max_examples=300, deadline=None)
@given(st.lists(txns, max_size=40))
def test_replaying_the_same_log_gives_byte_identical_trees(log: list[Txn]) -> None:
    first = apply_all(Tree(), log)
    # What replicas and restarts replay is the encoded log, not the objects.
    second = apply_all(Tree(), [decode_txn(encode_txn(t)) for t in log])
    assert first.snapshot_bytes() == second.snapshot_bytes()
    assert first.zxid == second.zxid


@settings(max_examples=300, deadline=None)
@given(st.lists(txns, max_size=40), st.data())
def test_snapshot_plus_log_restores_the_live_tree(log: list[Txn], draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(min_value=0, max_value=len(log)))
    live = apply_all(Tree(), log)
    snapshotted = apply_all(Tree(), log[:cut])
    chunk = draw.draw(st.integers(min_value=1, max_value=5))
    restored = Tree.from_snapshot(list(snapshotted.snapshot_chunks(nodes_per_chunk=chunk)))
    apply_all(restored, log[cut:])
    assert restored.snapshot_bytes() == live.snapshot_bytes()


@settings(max_examples=400, deadline=None)
@given(st.lists(txns, max_size=20), st.lists(ops, min_size=1, max_size=6))
def test_multi_is_atomic_and_equals_its_ops_in_sequence(
    log: list[Txn], multi_ops: list[Op]
) -> None:
    tree = apply_all(Tree(), log)
    before = tree.snapshot_bytes()
    # The same ops one by one, on a copy, stopping at the first refusal.
    one_by_one = Tree.from_snapshot(tree.snapshot_chunks())
    all_succeed = True
    for op in multi_ops:
        try:
            one_by_one.apply(Txn((op,), 7))
        except CoordError:
            all_succeed = False
            break
    try:
        result, events = tree.apply(Txn(tuple(multi_ops), 7, multi=True))
    except CoordError:
        assert not all_succeed
        assert tree.snapshot_bytes() == before
        return
    assert all_succeed
    assert result.zxid == tree.zxid
    assert all(e.zxid == result.zxid for e in events)
    # Same nodes with the same data, versions and child lists (zxids differ:
    # the multi used one, the singles one each).
    for path in _paths(one_by_one):
        a, b = tree.get(path), one_by_one.get(path)
        assert (a.data, a.version, a.cversion, a.children, a.kind, a.ephemeral_owner) == (
            b.data,
            b.version,
            b.cversion,
            b.children,
            b.kind,
            b.ephemeral_owner,
        )
    assert _paths(tree) == _paths(one_by_one)
    assert {k: v.ephemerals for k, v in tree.sessions.items()} == {
        k: v.ephemerals for k, v in one_by_one.sessions.items()
    }


def _paths(tree: Tree) -> list[str]:
    out, stack = [], ["/"]
    while stack:
        path = stack.pop()
        out.append(path)
        stack.extend((path.rstrip("/") + "/" + name) for name in tree.children(path))
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(txns, max_size=40))
def test_the_kept_digest_is_the_digest_computed_from_scratch(log: list[Txn]) -> None:
    tree = Tree()
    for txn in log:
        try:
            tree.apply(txn)
        except CoordError:
            pass  # refused (a multi rolled back): the digest must be restored too
        assert tree.digest == tree.full_digest()
        assert tree.data_bytes == sum(len(tree.get(p).data) for p in _paths(tree))
    # A restore carries the digest over, and an old snapshot gets it computed.
    assert Tree.from_snapshot(tree.snapshot_chunks()).digest == tree.digest
    assert Tree.from_snapshot(tree.snapshot_chunks()).data_bytes == tree.data_bytes
    restored = Tree.from_snapshot(_without_digest(list(tree.snapshot_chunks())))
    assert restored.digest == tree.digest


def _without_digest(chunks: list[bytes]) -> list[bytes]:
    header = orjson.loads(chunks[0])
    del header["digest"]
    return [orjson.dumps(header), *chunks[1:]]


def test_the_digest_tells_trees_apart() -> None:
    a, b = Tree(), Tree()
    for tree, value in ((a, b"x"), (b, b"y")):
        tree.apply(Txn((CreateOp("/n", value),), 1))
    assert a.digest != b.digest
    # Set to the same value, both at version 1: equal trees, one digest.
    a.apply(Txn((SetDataOp("/n", b"x", -1),), 1))
    b.apply(Txn((SetDataOp("/n", b"x", -1),), 1))
    assert a.snapshot_bytes() == b.snapshot_bytes()
    assert a.digest == b.digest


@settings(max_examples=300, deadline=None)
@given(st.lists(txns, max_size=30), st.lists(txns, max_size=30), st.data())
def test_a_view_reads_the_tree_as_it_was_while_it_changes(
    before: list[Txn], after: list[Txn], draw: st.DataObject
) -> None:
    tree = apply_all(Tree(), before)
    per_chunk = draw.draw(st.integers(min_value=1, max_value=4))
    expected = list(tree.snapshot_chunks(per_chunk))
    view = tree.view()
    chunks: list[bytes] = []
    reading = view.chunks(per_chunk)
    pending = list(after)
    for chunk in reading:
        chunks.append(chunk)
        # Between two chunks the tree goes on: a few txns, or none.
        for _ in range(draw.draw(st.integers(min_value=0, max_value=3))):
            if pending:
                apply_all(tree, [pending.pop(0)])
    view.close()
    assert chunks == expected
    # Closed, the view is out of the tree's way: nothing more is kept for it.
    apply_all(tree, pending)
    assert not tree._views


def test_a_view_of_a_large_tree_is_read_a_chunk_at_a_time() -> None:
    tree = Tree()
    tree.apply(Txn(tuple(CreateOp(f"/p{i}", b"v") for i in range(50)), 1, multi=True))
    view = tree.view()
    reading = view.chunks(10)
    header = orjson.loads(next(reading))
    assert header["nodes"] == 51 and header["zxid"] == 1
    first = orjson.loads(next(reading))
    assert [row[0] for row in first[:3]] == ["/", "/p0", "/p1"]  # depth first, by name
    # Deleting a node the view has not reached yet does not hide it.
    tree.apply(Txn((DeleteOp("/p9", -1), CreateOp("/q", b"")), 2, multi=True))
    rest = [row[0] for chunk in reading for row in orjson.loads(chunk)]
    assert "/p9" in rest and "/q" not in rest
    view.close()
