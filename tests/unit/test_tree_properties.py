"""Properties of the tree over random txn sequences (hypothesis):
determinism, snapshot + log restore, and multi atomicity."""

from __future__ import annotations

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
