"""The watch hub: subscribers indexed by path, fed in zxid order.

A subscriber watches one path, alone (the node and its child list: events
whose path is exactly it) or with its subtree (``recursive``), or several
such paths on one stream (``/v1/watches``). Publishing an event costs a dict
lookup for the exact path and one per ancestor for the recursive watchers,
plus the matching subscribers: never a scan of them all.

Each subscriber has a bounded queue of whole txns (``Delivery``): a txn is
never split, so a resume by zxid never repeats or skips part of one. When a
queue would exceed its bound the subscriber is marked ``overflowed`` and gets
nothing more; its connection then ends with where to resume. Nothing is
dropped silently, and a slow subscriber never slows the writers or the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from httpcoord.errors import TooManyRequests
from httpcoord.tree.paths import ROOT, ancestors
from httpcoord.tree.tree import Event
from httpcoord.watch.history import History

# Keepalives go out within 1/8 of a period of falling due, spread over time.
_SWEEPS_PER_KEEPALIVE = 8


@dataclass(slots=True)
class Delivery:
    """One txn's events for every watcher of one path: shared, never copied
    per watcher, and encoded for SSE at most once per form (with or without
    data) however many watchers receive it."""

    zxid: int
    events: tuple[Event, ...]
    sse_cache: dict[bool, bytes] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Subscriber:
    paths: tuple[str, ...]  # one, or several on one stream; none under another if recursive
    recursive: bool
    client: str  # the remote address, for the per-client bound
    queue_events_max: int
    queue: deque[Delivery] = field(default_factory=deque)
    queued_events: int = 0
    last_zxid: int = 0  # the last zxid queued (or the start): where a resume begins
    start_zxid: int = 0  # events after this one are delivered
    overflowed: bool = False
    closed: bool = False  # the server is shutting down: end the watch
    keepalive_due: bool = False  # an SSE stream has been idle for a keepalive period
    stream: bool = False  # an SSE stream (long-polls get no keepalives)
    last_active_s: float = 0.0  # loop time of the stream's last write
    cut_off_s: float | None = None  # loop time a sweep first saw it cut off
    abort: Callable[[], None] | None = None  # drops the connection
    # A bare future rather than an asyncio.Event: Event.wait() looks up the
    # running loop each time, a getpid() system call on Python 3.11, which at
    # 10,000 watchers was a fifth of the fan-out's CPU.
    waiter: asyncio.Future[None] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.queue) or self.overflowed or self.closed or self.keepalive_due

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until there is something to do (the caller bounds the wait)."""
        if self.ready:
            return
        self.waiter = loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def matches(self, path: str) -> bool:
        paths = self.paths
        if path in paths:
            return True
        if not self.recursive:
            return False
        return any(p == ROOT or path.startswith(p + "/") for p in paths)

    def offer(self, delivery: Delivery) -> None:
        if self.overflowed:
            return
        if self.queued_events + len(delivery.events) > self.queue_events_max:
            self.overflowed = True
        else:
            self.queue.append(delivery)
            self.queued_events += len(delivery.events)
            self.last_zxid = delivery.zxid
        self.wake()

    def take(self) -> list[Delivery]:
        out = list(self.queue)
        self.queue.clear()
        self.queued_events = 0
        return out


class WatchHub:
    def __init__(self, history: History, per_client_max: int, queue_events_max: int) -> None:
        self.history = history
        self.per_client_max = per_client_max
        self.queue_events_max = queue_events_max
        self._exact: dict[str, set[Subscriber]] = {}
        self._recursive: dict[str, set[Subscriber]] = {}
        self._per_client: Counter[str] = Counter()
        # Every subscriber once (one of several paths is in several index sets).
        self._subscribers: set[Subscriber] = set()
        self.closed = False  # shutting down: new watches end at once too
        self.cut_off = 0  # watchers cut off as slow consumers (counted by the routes)
        self.dropped_streams = 0  # streams aborted for reading nothing once cut off

    def subscribe(self, path: str, recursive: bool, since: int | None, client: str) -> Subscriber:
        return self.subscribe_many((path,), recursive, since, client)

    def subscribe_many(
        self, paths: Sequence[str], recursive: bool, since: int | None, client: str
    ) -> Subscriber:
        """Register a watcher of ``paths`` (each counts against the client's
        bound); with ``since``, queue the kept events after it first
        (synchronously, so no event can fall between replay and live)."""
        paths = covering(paths, recursive)
        if self._per_client[client] + len(paths) > self.per_client_max:
            raise TooManyRequests(
                f"at most {self.per_client_max} watchers per client address", client=client
            )
        start = self.history.last_zxid if since is None else since
        if since is not None:
            self.history.check_since(since)
        sub = Subscriber(
            paths,
            recursive,
            client,
            self.queue_events_max,
            last_zxid=start,
            start_zxid=start,
            closed=self.closed,
        )
        if since is not None:
            # The replay is bounded by the history itself; the queue bound is
            # for live events piling up behind a slow reader.
            for group in self.history.after(since):
                matching = tuple(e for e in group.events if sub.matches(e.path))
                if matching:
                    sub.queue.append(Delivery(group.zxid, matching))
                    sub.last_zxid = group.zxid
            if sub.queue:
                sub.wake()
        index = self._recursive if recursive else self._exact
        for path in paths:
            index.setdefault(path, set()).add(sub)
        self._per_client[client] += len(paths)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub not in self._subscribers:
            return  # already gone
        self._subscribers.discard(sub)
        index = self._recursive if sub.recursive else self._exact
        for path in sub.paths:
            subs = index[path]
            subs.discard(sub)
            if not subs:
                del index[path]
        self._per_client[sub.client] -= len(sub.paths)
        if self._per_client[sub.client] <= 0:
            del self._per_client[sub.client]

    @property
    def count(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """Shutdown: wake every watcher so its request ends now, not at the
        shutdown timeout."""
        self.closed = True
        for sub in self._subscribers:
            sub.closed = True
            sub.wake()

    def cut_off_all(self, zxid: int) -> None:
        """The node's tree jumped to ``zxid`` (a snapshot from the leader):
        no watcher can be given the events it skipped, so each is cut off as
        a slow consumer would be, and resumes (or learns it must re-read)."""
        for sub in self._subscribers:
            sub.overflowed = True
            sub.wake()

    def stream_count(self) -> int:
        return sum(1 for sub in self._subscribers if sub.stream)

    async def sweep_forever(self, keepalive_s: float) -> None:
        """``sweep`` within 1/8 of a keepalive period of each falling due."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(keepalive_s / _SWEEPS_PER_KEEPALIVE)
            self.sweep(loop.time(), keepalive_s)

    def sweep(self, now_s: float, keepalive_s: float) -> None:
        """Run every fraction of the keepalive period, for SSE streams: wake
        those idle for a whole period to send a keepalive line (streams opened
        at different times fall due at different sweeps, so keepalives do not
        all go out at once), and abort the connection of one cut off
        (overflowed or closing) for a whole period that still has not gone,
        so a client that reads nothing cannot hold its watcher for ever. One
        pass here replaces a timer per stream."""
        for sub in self._subscribers:
            if not sub.stream:
                continue
            if sub.overflowed or sub.closed:
                if sub.cut_off_s is None:
                    sub.cut_off_s = now_s
                elif now_s - sub.cut_off_s >= keepalive_s and sub.abort is not None:
                    sub.abort()
                    sub.abort = None  # once
                    self.dropped_streams += 1
            elif now_s - sub.last_active_s >= keepalive_s:
                sub.last_active_s = now_s
                sub.keepalive_due = True
                sub.wake()

    def publish(self, zxid: int, events: list[Event]) -> None:
        """Hand each subscriber the events of this txn that it watches (the
        node has already recorded them in the history). Subscribers of the
        same path and kind see the same events, so they share one Delivery;
        one of several paths gets the txn's events it matches, once, in the
        txn's order, however many of its paths they match."""
        if not events or not self._subscribers:
            return
        exact, recursive = self._exact, self._recursive
        by_path: dict[str, list[Event]] = {}
        by_prefix: dict[str, list[Event]] = {}
        for event in events:
            if event.path in exact:
                by_path.setdefault(event.path, []).append(event)
            if recursive:
                for prefix in (*ancestors(event.path), event.path):
                    if prefix in recursive:
                        by_prefix.setdefault(prefix, []).append(event)
        several: set[Subscriber] = set()
        for groups, index in ((by_path, exact), (by_prefix, recursive)):
            for key, matched in groups.items():
                delivery = Delivery(zxid, tuple(matched))
                for sub in index[key]:
                    if len(sub.paths) == 1:
                        sub.offer(delivery)
                    else:
                        several.add(sub)
        for sub in several:
            sub.offer(Delivery(zxid, tuple(e for e in events if sub.matches(e.path))))


def covering(paths: Sequence[str], recursive: bool) -> tuple[str, ...]:
    """``paths`` without repeats, in their order; recursive, without those
    under another one (its subtree covers them)."""
    unique = tuple(dict.fromkeys(paths))
    if not recursive:
        return unique
    watched = set(unique)
    return tuple(p for p in unique if not any(a in watched for a in ancestors(p)))
