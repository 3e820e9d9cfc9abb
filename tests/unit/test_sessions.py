"""Sessions, ephemeral, container and TTL nodes, driven by an injected clock:
no test waits for a timer."""

from __future__ import annotations

from pathlib import Path

import pytest

from httpcoord.cluster.node import ClusterConfig, Node, NodeLimits
from httpcoord.cluster.sessions import SessionTracker
from httpcoord.errors import (
    BadArguments,
    MultiFailed,
    NoChildrenForEphemerals,
    NoNode,
    SessionExpired,
)
from httpcoord.tree.tree import Tree
from httpcoord.tree.txn import (
    CloseSessionOp,
    CreateOp,
    DeleteOp,
    OpenSessionOp,
    ReapOp,
    SetDataOp,
    Txn,
)


class Clock:
    """Monotonic and wall time, moved by hand."""

    def __init__(self) -> None:
        self.mono_ms = 1_000_000
        self.wall_ms = 1_700_000_000_000

    def advance(self, ms: int) -> None:
        self.mono_ms += ms
        self.wall_ms += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_node(path: Path, clock: Clock) -> Node:
    node = await Node.open(
        path,
        ClusterConfig(),
        NodeLimits(),
        wall_ms=lambda: clock.wall_ms,
        monotonic_ms=lambda: clock.mono_ms,
    )
    node.start(maintenance=False)
    return node


# ---- the tracker ---------------------------------------------------------------


def test_tracker_expires_at_the_deadline_not_before() -> None:
    tracker = SessionTracker()
    tracker.open("s", 1000, now_ms=0)
    assert tracker.due(999, limit=10) == []
    assert tracker.due(1000, limit=10) == ["s"]
    # Once expiring, heartbeats fail and it is not handed out twice.
    assert not tracker.touch("s", 1000)
    assert tracker.due(5000, limit=10) == []


def test_tracker_heartbeat_moves_the_deadline() -> None:
    tracker = SessionTracker()
    tracker.open("s", 1000, now_ms=0)
    assert tracker.touch("s", 900)
    assert tracker.due(1000, limit=10) == []
    assert tracker.due(1899, limit=10) == []
    assert tracker.due(1900, limit=10) == ["s"]


def test_tracker_forgets_closed_sessions_and_retries_failed_expiries() -> None:
    tracker = SessionTracker()
    tracker.open("a", 100, 0)
    tracker.open("b", 100, 0)
    tracker.forget("a")
    assert tracker.due(100, limit=10) == ["b"]
    tracker.retry("b", 150)
    assert tracker.due(150, limit=10) == ["b"]
    assert not tracker.touch("a", 150)


def test_tracker_bounds_one_check() -> None:
    tracker = SessionTracker()
    for i in range(5):
        tracker.open(f"s{i}", 10, 0)
    assert len(tracker.due(10, limit=3)) == 3
    assert len(tracker.due(10, limit=3)) == 2


# ---- the tree ------------------------------------------------------------------


def apply(tree: Tree, *ops, multi: bool = False, time_ms: int = 1000):  # type: ignore[no-untyped-def]
    return tree.apply(Txn(tuple(ops), time_ms, multi))


def test_ephemeral_needs_a_live_session() -> None:
    tree = Tree()
    with pytest.raises(SessionExpired):
        apply(tree, CreateOp("/e", ephemeral_owner="nope"))
    apply(tree, OpenSessionOp("s", 5000))
    result, _ = apply(tree, CreateOp("/e", ephemeral_owner="s"))
    assert result.results[0].stat.ephemeral_owner == "s"
    assert tree.sessions["s"].ephemerals == {"/e"}


def test_no_children_under_an_ephemeral() -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    apply(tree, CreateOp("/e", ephemeral_owner="s"))
    with pytest.raises(NoChildrenForEphemerals):
        apply(tree, CreateOp("/e/child"))
    with pytest.raises(NoChildrenForEphemerals):
        apply(tree, CreateOp("/e/a/b", parents=True))


def test_closing_a_session_removes_its_ephemerals_in_the_same_txn() -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    apply(tree, CreateOp("/app"))
    apply(tree, CreateOp("/app/lock-", ephemeral_owner="s", sequential=True))
    apply(tree, CreateOp("/member", ephemeral_owner="s"))
    apply(tree, CreateOp("/keep"))
    result, events = apply(tree, CloseSessionOp("s", expired=True))
    assert result.results[0].deleted == ("/app/lock-0000000000", "/member")
    assert {e.zxid for e in events} == {result.zxid}
    assert [(e.type, e.path) for e in events if e.type == "deleted"] == [
        ("deleted", "/app/lock-0000000000"),
        ("deleted", "/member"),
    ]
    assert "s" not in tree.sessions
    assert tree.exists("/keep") and tree.children("/app") == []
    with pytest.raises(SessionExpired):
        apply(tree, CloseSessionOp("s"))


def test_deleting_an_ephemeral_by_hand_unlinks_it_from_its_session() -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    apply(tree, CreateOp("/e", ephemeral_owner="s"))
    apply(tree, DeleteOp("/e"))
    result, _ = apply(tree, CloseSessionOp("s"))
    assert result.results[0].deleted == ()


def test_a_failed_multi_leaves_sessions_and_ephemerals_untouched() -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    before = tree.snapshot_bytes()
    with pytest.raises(MultiFailed):
        apply(tree, CreateOp("/e", ephemeral_owner="s"), CreateOp("/e"), multi=True)
    assert tree.snapshot_bytes() == before
    assert tree.sessions["s"].ephemerals == set()


@pytest.mark.parametrize(
    "op",
    [
        CreateOp("/x", ephemeral_owner="s", container=True),
        CreateOp("/x", ephemeral_owner="s", ttl_ms=10),
        CreateOp("/x", container=True, ttl_ms=10),
        CreateOp("/x", ttl_ms=-1),
    ],
)
def test_node_kinds_exclude_each_other(op: CreateOp) -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    with pytest.raises(BadArguments):
        apply(tree, op)


def test_container_is_reaped_only_after_it_had_a_child_and_is_empty() -> None:
    tree = Tree()
    apply(tree, CreateOp("/c", container=True))
    assert tree.reap_candidates(now_ms=10**9, limit=10) == []
    apply(tree, CreateOp("/c/x"))
    assert tree.reap_candidates(now_ms=10**9, limit=10) == []
    apply(tree, DeleteOp("/c/x"))
    due = tree.reap_candidates(now_ms=10**9, limit=10)
    assert due == [("/c", 1)]
    _result, events = apply(tree, ReapOp("/c", 1))
    assert not tree.exists("/c")
    assert ("deleted", "/c") in [(e.type, e.path) for e in events]


def test_ttl_node_is_reaped_once_unmodified_for_its_ttl() -> None:
    tree = Tree()
    apply(tree, CreateOp("/t", ttl_ms=500), time_ms=1000)
    assert tree.reap_candidates(now_ms=1499, limit=10) == []
    apply(tree, SetDataOp("/t", b"touch"), time_ms=1400)
    assert tree.reap_candidates(now_ms=1899, limit=10) == []
    assert tree.reap_candidates(now_ms=1900, limit=10) == [("/t", 1)]
    # The reap is judged again on the txn's own time: too early is refused.
    with pytest.raises(BadArguments):
        apply(tree, ReapOp("/t", 1), time_ms=1899)
    apply(tree, ReapOp("/t", 1), time_ms=1900)
    assert not tree.exists("/t")


def test_reap_leaves_a_recreated_node_alone() -> None:
    tree = Tree()
    apply(tree, CreateOp("/c", container=True))
    apply(tree, CreateOp("/c/x"))
    apply(tree, DeleteOp("/c/x"))
    ((path, czxid),) = tree.reap_candidates(10**9, 10)
    apply(tree, DeleteOp("/c"))
    apply(tree, CreateOp("/c"))
    with pytest.raises(NoNode):
        apply(tree, ReapOp(path, czxid))
    assert tree.exists("/c")


def test_sessions_and_kinds_survive_a_snapshot() -> None:
    tree = Tree()
    apply(tree, OpenSessionOp("s", 5000))
    apply(tree, CreateOp("/e", ephemeral_owner="s"))
    apply(tree, CreateOp("/c", container=True))
    apply(tree, CreateOp("/t", ttl_ms=9))
    restored = Tree.from_snapshot(tree.snapshot_chunks())
    assert restored.snapshot_bytes() == tree.snapshot_bytes()
    assert restored.sessions["s"].ephemerals == {"/e"}
    assert restored.get("/c").kind == "container" and restored.get("/t").kind == "ttl"
    assert restored.reap_candidates(10**9, 10) == [("/t", 4)]


# ---- the node: expiry authority with an injected clock ---------------------------


async def test_session_expires_at_its_ttl_with_its_ephemerals(tmp_path: Path, clock: Clock) -> None:
    node = await open_node(tmp_path, clock)
    await node.propose((OpenSessionOp("s", 2000),))
    await node.propose((CreateOp("/e", ephemeral_owner="s"),))
    clock.advance(1999)
    assert await node.expire_sessions() == []
    assert node.exists("/e")
    clock.advance(1)
    assert await node.expire_sessions() == ["s"]
    assert not node.exists("/e") and node.session("s") is None
    with pytest.raises(SessionExpired):
        node.heartbeat("s")
    await node.close()


async def test_heartbeats_keep_a_session_alive(tmp_path: Path, clock: Clock) -> None:
    node = await open_node(tmp_path, clock)
    await node.propose((OpenSessionOp("s", 2000),))
    fsyncs = node.storage.fsyncs
    for _ in range(10):
        clock.advance(1500)
        assert node.heartbeat("s") == 2000
        assert await node.expire_sessions() == []
    # Heartbeats are not log entries.
    assert node.storage.fsyncs == fsyncs
    await node.close()


async def test_a_session_survives_a_restart_with_its_full_ttl(tmp_path: Path, clock: Clock) -> None:
    node = await open_node(tmp_path, clock)
    await node.propose((OpenSessionOp("s", 2000),))
    await node.propose((CreateOp("/e", ephemeral_owner="s"),))
    clock.advance(1900)
    await node.close()
    clock.advance(60_000)  # the server was down far longer than the ttl
    node = await open_node(tmp_path, clock)
    assert node.exists("/e")
    clock.advance(1999)
    assert await node.expire_sessions() == []
    node.heartbeat("s")
    clock.advance(2000)
    assert await node.expire_sessions() == ["s"]
    assert not node.exists("/e")
    await node.close()


async def test_closing_a_session_is_durable(tmp_path: Path, clock: Clock) -> None:
    node = await open_node(tmp_path, clock)
    await node.propose((OpenSessionOp("s", 2000),))
    await node.propose((CreateOp("/e", ephemeral_owner="s"),))
    await node.propose((CloseSessionOp("s"),))
    await node.close()
    node = await open_node(tmp_path, clock)
    assert not node.exists("/e") and node.session_count == 0
    assert len(node.sessions) == 0
    await node.close()


async def test_reaper_removes_containers_and_ttl_nodes(tmp_path: Path, clock: Clock) -> None:
    node = await open_node(tmp_path, clock)
    await node.propose((CreateOp("/c", container=True),))
    await node.propose((CreateOp("/c/child"),))
    await node.propose((DeleteOp("/c/child"),))
    await node.propose((CreateOp("/t", ttl_ms=1000),))
    assert await node.reap() == ["/c"]
    clock.advance(999)
    assert await node.reap() == []
    clock.advance(1)
    assert await node.reap() == ["/t"]
    assert not node.exists("/c") and not node.exists("/t")
    await node.close()


async def test_an_expired_session_is_announced_and_others_keep_their_deadline(
    tmp_path: Path, clock: Clock
) -> None:
    node = await open_node(tmp_path, clock)
    closed: list[str] = []
    node.session_closed_listeners.append(closed.append)
    await node.propose((OpenSessionOp("a", 1000),))
    await node.propose((OpenSessionOp("b", 5000),))
    clock.advance(1000)
    assert await node.expire_sessions() == ["a"]
    # Keepalive sockets learn of the close from the applied txn.
    assert closed == ["a"]
    assert node.session_expires_in_ms("b") == 4000
    assert node.session_expires_in_ms("a") is None
    await node.close()
