"""The watch history and hub: ordering, resume, compaction, matching, bounds."""

from __future__ import annotations

import pytest

from httpcoord.errors import BadArguments, Compacted, TooManyRequests
from httpcoord.tree.tree import Event, Tree
from httpcoord.tree.txn import (
    CloseSessionOp,
    CreateOp,
    DeleteOp,
    Op,
    OpenSessionOp,
    SetDataOp,
    Txn,
)
from httpcoord.watch.history import History
from httpcoord.watch.hub import WatchHub


class Feed:
    """A tree whose applied events go to a history and a hub, as in the node."""

    def __init__(self, events_max: int = 1000, per_client: int = 100, queue: int = 1000) -> None:
        self.tree = Tree()
        self.history = History(events_max, 10**9)
        self.hub = WatchHub(self.history, per_client, queue)

    def apply(self, *ops: Op, multi: bool = False) -> int:
        result, events = self.tree.apply(Txn(tuple(ops), 1, multi))
        self.history.append(result.zxid, events)
        self.hub.publish(result.zxid, events)
        return result.zxid


def seen(sub) -> list[tuple[int, str, str]]:  # type: ignore[no-untyped-def]
    return [(e.zxid, e.type, e.path) for d in sub.take() for e in d.events]


def test_a_watch_sees_its_node_and_child_list_only() -> None:
    feed = Feed()
    sub = feed.hub.subscribe("/a", recursive=False, since=None, client="c")
    feed.apply(CreateOp("/a"))
    feed.apply(CreateOp("/a/b"))
    feed.apply(SetDataOp("/a/b", b"x"))
    feed.apply(SetDataOp("/a", b"y"))
    feed.apply(CreateOp("/other"))
    assert seen(sub) == [
        (1, "created", "/a"),
        (2, "children_changed", "/a"),
        (4, "data_changed", "/a"),
    ]


def test_a_recursive_watch_sees_the_subtree_but_not_siblings() -> None:
    feed = Feed()
    feed.apply(CreateOp("/a"))
    sub = feed.hub.subscribe("/a", recursive=True, since=None, client="c")
    feed.apply(CreateOp("/ab"))  # a sibling whose name starts like it
    feed.apply(CreateOp("/a/b/c", parents=True))
    assert seen(sub) == [
        (3, "created", "/a/b"),
        (3, "children_changed", "/a"),
        (3, "created", "/a/b/c"),
        (3, "children_changed", "/a/b"),
    ]


def test_root_recursive_watch_sees_everything() -> None:
    feed = Feed()
    sub = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    feed.apply(CreateOp("/x"))
    feed.apply(DeleteOp("/x"))
    assert [t for _, t, _ in seen(sub)] == [
        "created",
        "children_changed",
        "deleted",
        "children_changed",
    ]


def test_one_txn_is_one_delivery_under_one_zxid() -> None:
    feed = Feed()
    sub = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    feed.apply(CreateOp("/m"), CreateOp("/m/1"), SetDataOp("/m", b"v"), multi=True)
    deliveries = sub.take()
    assert len(deliveries) == 1 and deliveries[0].zxid == 1
    assert {e.zxid for e in deliveries[0].events} == {1}


def test_session_expiry_events_share_the_close_txn_zxid() -> None:
    feed = Feed()
    feed.apply(OpenSessionOp("s", 1000))
    feed.apply(CreateOp("/e1", ephemeral_owner="s"))
    feed.apply(CreateOp("/e2", ephemeral_owner="s"))
    sub = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    zxid = feed.apply(CloseSessionOp("s", expired=True))
    deliveries = sub.take()
    assert [d.zxid for d in deliveries] == [zxid]
    assert [(e.type, e.path) for e in deliveries[0].events if e.type == "deleted"] == [
        ("deleted", "/e1"),
        ("deleted", "/e2"),
    ]


def test_since_replays_exactly_the_missed_events_then_goes_live() -> None:
    feed = Feed()
    for i in range(5):
        feed.apply(CreateOp(f"/n{i}"))
    sub = feed.hub.subscribe("/", recursive=True, since=3, client="c")
    feed.apply(CreateOp("/n5"))
    assert [(z, p) for z, t, p in seen(sub) if t == "created"] == [
        (4, "/n3"),
        (5, "/n4"),
        (6, "/n5"),
    ]


def test_without_since_nothing_of_the_past_is_replayed() -> None:
    feed = Feed()
    feed.apply(CreateOp("/old"))
    sub = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    assert sub.take() == []


def test_since_older_than_the_history_is_compacted() -> None:
    feed = Feed(events_max=4)  # each create yields 2 events
    for i in range(6):
        feed.apply(CreateOp(f"/n{i}"))
    assert feed.history.compacted_zxid == 4
    with pytest.raises(Compacted) as info:
        feed.hub.subscribe("/", recursive=True, since=3, client="c")
    assert info.value.extra["oldest_zxid"] == 4 and info.value.extra["zxid"] == 6
    sub = feed.hub.subscribe("/", recursive=True, since=4, client="c")
    assert [z for z, t, _ in seen(sub) if t == "created"] == [5, 6]


def test_since_in_the_future_is_a_bad_argument() -> None:
    feed = Feed()
    feed.apply(CreateOp("/a"))
    with pytest.raises(BadArguments):
        feed.hub.subscribe("/", recursive=True, since=2, client="c")


def test_txns_without_events_still_advance_the_history() -> None:
    feed = Feed()
    feed.apply(OpenSessionOp("s", 1000))
    assert feed.history.last_zxid == 1
    feed.hub.subscribe("/", recursive=True, since=1, client="c")


def test_a_slow_subscriber_overflows_and_knows_where_to_resume() -> None:
    feed = Feed(queue=5)
    slow = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    fast = feed.hub.subscribe("/", recursive=True, since=None, client="c")
    for i in range(10):
        feed.apply(CreateOp(f"/n{i}"))
        fast.take()
    assert slow.overflowed and not fast.overflowed
    delivered = slow.take()
    assert sum(len(d.events) for d in delivered) <= 5
    # Everything up to last_zxid was delivered; the rest is in the history.
    assert delivered[-1].zxid == slow.last_zxid == 2
    again = feed.hub.subscribe("/", recursive=True, since=slow.last_zxid, client="c")
    assert [z for z, t, _ in seen(again) if t == "created"] == list(range(3, 11))


def test_watchers_per_client_are_bounded_and_freed() -> None:
    feed = Feed(per_client=2)
    a = feed.hub.subscribe("/a", recursive=False, since=None, client="c")
    feed.hub.subscribe("/b", recursive=True, since=None, client="c")
    with pytest.raises(TooManyRequests):
        feed.hub.subscribe("/c", recursive=False, since=None, client="c")
    feed.hub.subscribe("/c", recursive=False, since=None, client="other")
    feed.hub.unsubscribe(a)
    feed.hub.unsubscribe(a)  # idempotent
    feed.hub.subscribe("/c", recursive=False, since=None, client="c")
    assert feed.hub.count == 3


def test_publish_touches_only_matching_subscribers() -> None:
    feed = Feed(per_client=20_000)
    subs = [feed.hub.subscribe(f"/w{i}", False, None, "c") for i in range(10_000)]
    feed.apply(CreateOp("/w7"))
    assert [len(s.queue) for s in subs[:10]] == [0] * 7 + [1] + [0] * 2
    assert sum(len(s.queue) for s in subs) == 1


def test_history_is_bounded_in_bytes_too() -> None:
    history = History(events_max=10**6, bytes_max=10_000)
    for zxid in range(1, 200):
        history.append(zxid, [Event("data_changed", "/k", zxid, None, b"x" * 100)])
    assert len(history) < 40
    assert history.compacted_zxid > 150


def test_after_shutdown_begins_new_watches_end_at_once() -> None:
    feed = Feed()
    before = feed.hub.subscribe("/a", recursive=False, since=None, client="c")
    feed.hub.close_all()
    after = feed.hub.subscribe("/b", recursive=False, since=None, client="c")
    assert before.closed and before.ready
    assert after.closed and after.ready


def test_watchers_of_one_path_share_one_delivery() -> None:
    feed = Feed()
    subs = [feed.hub.subscribe("/s", recursive=False, since=None, client="c") for _ in range(3)]
    feed.apply(CreateOp("/s"))
    deliveries = [sub.take()[0] for sub in subs]
    assert deliveries[0] is deliveries[1] is deliveries[2]


def test_sweep_wakes_idle_streams_and_aborts_stuck_ones() -> None:
    feed = Feed(queue=1)
    aborted: list[str] = []
    idle = feed.hub.subscribe("/i", recursive=False, since=None, client="c")
    stuck = feed.hub.subscribe("/s", recursive=True, since=None, client="c")
    poll = feed.hub.subscribe("/p", recursive=False, since=None, client="c")
    for sub, name in ((idle, "idle"), (stuck, "stuck")):
        sub.stream = True
        sub.abort = lambda name=name: aborted.append(name)
    feed.apply(CreateOp("/s"))
    feed.apply(CreateOp("/s/x"))  # nobody reads: over the stuck stream's buffer of one
    assert stuck.overflowed
    idle.last_active_s = 100.0
    feed.hub.sweep(now_s=114.9, keepalive_s=15)
    assert not idle.keepalive_due and aborted == []
    feed.hub.sweep(now_s=115.0, keepalive_s=15)
    assert idle.keepalive_due and not poll.keepalive_due and aborted == []
    # Cut off since the sweep at 114.9: aborted a whole period after that.
    feed.hub.sweep(now_s=129.8, keepalive_s=15)
    assert aborted == []
    feed.hub.sweep(now_s=129.9, keepalive_s=15)
    assert aborted == ["stuck"]


# ---- several paths on one subscriber (/v1/watches) ------------------------------------


def test_several_paths_see_each_event_once_in_txn_order() -> None:
    feed = Feed()
    feed.apply(CreateOp("/a"), CreateOp("/b"), multi=True)
    sub = feed.hub.subscribe_many(["/b", "/a", "/a"], recursive=False, since=None, client="c")
    assert sub.paths == ("/b", "/a")  # repeats dropped, order kept
    # One txn touching both watched nodes and an unwatched one.
    z = feed.apply(SetDataOp("/a", b"1"), CreateOp("/c"), SetDataOp("/b", b"2"), multi=True)
    feed.apply(CreateOp("/a/x"))
    assert seen(sub) == [
        (z, "data_changed", "/a"),
        (z, "data_changed", "/b"),
        (z + 1, "children_changed", "/a"),
    ]


def test_recursive_paths_under_another_are_covered_by_it() -> None:
    feed = Feed(per_client=2)
    sub = feed.hub.subscribe_many(["/a/b", "/a", "/x"], recursive=True, since=None, client="c")
    assert sub.paths == ("/a", "/x")  # two watches, not three
    z = feed.apply(CreateOp("/a"), CreateOp("/a/b"), CreateOp("/a/b/c"), multi=True)
    assert seen(sub) == [
        (z, "created", "/a"),  # the root's children_changed is not watched
        (z, "created", "/a/b"),
        (z, "children_changed", "/a"),
        (z, "created", "/a/b/c"),
        (z, "children_changed", "/a/b"),
    ]


def test_several_paths_count_against_the_client_bound_and_are_freed_together() -> None:
    feed = Feed(per_client=3)
    sub = feed.hub.subscribe_many(["/a", "/b", "/c"], recursive=False, since=None, client="c")
    with pytest.raises(TooManyRequests):
        feed.hub.subscribe("/d", recursive=False, since=None, client="c")
    feed.hub.unsubscribe(sub)
    feed.hub.unsubscribe(sub)  # twice is harmless
    assert feed.hub.count == 0
    feed.hub.subscribe_many(["/x", "/y", "/z"], recursive=False, since=None, client="c")


def test_several_paths_replay_from_since() -> None:
    feed = Feed()
    start = feed.apply(CreateOp("/a"))
    feed.apply(CreateOp("/b"))
    feed.apply(CreateOp("/other"))
    feed.apply(SetDataOp("/a", b"x"))
    sub = feed.hub.subscribe_many(["/a", "/b"], recursive=False, since=start, client="c")
    assert seen(sub) == [(start + 1, "created", "/b"), (start + 3, "data_changed", "/a")]
