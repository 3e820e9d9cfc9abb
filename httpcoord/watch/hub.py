"""The watch hub: subscribers indexed by path, fed in zxid order.

A subscriber watches one path, alone (the node and its child list: events
whose path is exactly it) or with its subtree (``recursive``). Publishing an
event costs a dict lookup for the exact path and one per ancestor for the
recursive watchers, plus the matching subscribers: never a scan of them all.

Each subscriber has a bounded queue of whole txns (``Delivery``): a txn is
never split, so a resume by zxid never repeats or skips part of one. When a
queue would exceed its bound the subscriber is marked ``overflowed`` and gets
nothing more; its connection then ends with where to resume. Nothing is
dropped silently, and a slow subscriber never slows the writers or the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field

from httpcoord.errors import TooManyRequests
from httpcoord.tree.paths import ROOT, ancestors
from httpcoord.tree.tree import Event
from httpcoord.watch.history import History


@dataclass(frozen=True, slots=True)
class Delivery:
    zxid: int
    events: tuple[Event, ...]


@dataclass(eq=False, slots=True)
class Subscriber:
    path: str
    recursive: bool
    client: str  # the remote address, for the per-client bound
    queue_events_max: int
    queue: deque[Delivery] = field(default_factory=deque)
    queued_events: int = 0
    last_zxid: int = 0  # the last zxid queued (or the start): where a resume begins
    start_zxid: int = 0  # events after this one are delivered
    overflowed: bool = False
    closed: bool = False  # the server is shutting down: end the watch
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, path: str) -> bool:
        if path == self.path:
            return True
        if not self.recursive:
            return False
        return self.path == ROOT or path.startswith(self.path + "/")

    def offer(self, delivery: Delivery) -> None:
        if self.overflowed:
            return
        if self.queued_events + len(delivery.events) > self.queue_events_max:
            self.overflowed = True
        else:
            self.queue.append(delivery)
            self.queued_events += len(delivery.events)
            self.last_zxid = delivery.zxid
        self.wake.set()

    def take(self) -> list[Delivery]:
        out = list(self.queue)
        self.queue.clear()
        self.queued_events = 0
        self.wake.clear()
        return out


class WatchHub:
    def __init__(self, history: History, per_client_max: int, queue_events_max: int) -> None:
        self.history = history
        self.per_client_max = per_client_max
        self.queue_events_max = queue_events_max
        self._exact: dict[str, set[Subscriber]] = {}
        self._recursive: dict[str, set[Subscriber]] = {}
        self._per_client: Counter[str] = Counter()
        self.count = 0
        self.closed = False  # shutting down: new watches end at once too

    def subscribe(self, path: str, recursive: bool, since: int | None, client: str) -> Subscriber:
        """Register a watcher; with ``since``, queue the kept events after it
        first (synchronously, so no event can fall between replay and live)."""
        if self._per_client[client] >= self.per_client_max:
            raise TooManyRequests(
                f"at most {self.per_client_max} watchers per client address", client=client
            )
        start = self.history.last_zxid if since is None else since
        if since is not None:
            self.history.check_since(since)
        sub = Subscriber(
            path,
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
                sub.wake.set()
        index = self._recursive if recursive else self._exact
        index.setdefault(path, set()).add(sub)
        self._per_client[client] += 1
        self.count += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        index = self._recursive if sub.recursive else self._exact
        subs = index.get(sub.path)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del index[sub.path]
        self._per_client[sub.client] -= 1
        if self._per_client[sub.client] <= 0:
            del self._per_client[sub.client]
        self.count -= 1

    def close_all(self) -> None:
        """Shutdown: wake every watcher so its request ends now, not at the
        shutdown timeout."""
        self.closed = True
        for index in (self._exact, self._recursive):
            for subs in index.values():
                for sub in subs:
                    sub.closed = True
                    sub.wake.set()

    def publish(self, zxid: int, events: list[Event]) -> None:
        """Hand each subscriber the events of this txn that it watches (the
        node has already recorded them in the history)."""
        if not events or not self.count:
            return
        per_sub: dict[Subscriber, list[Event]] = {}
        exact, recursive = self._exact, self._recursive
        for event in events:
            for sub in exact.get(event.path, ()):
                per_sub.setdefault(sub, []).append(event)
            if recursive:
                for prefix in (*ancestors(event.path), event.path):
                    for sub in recursive.get(prefix, ()):
                        per_sub.setdefault(sub, []).append(event)
        for sub, matched in per_sub.items():
            sub.offer(Delivery(zxid, tuple(matched)))
