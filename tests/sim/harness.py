"""A fault-free, step-by-step cluster of cores for unit tests and the
benchmark: messages are delivered only when the test says so, which makes
scripted scenarios (Figure 8, a lagging follower, a transfer) easy to write.

The driver loop in ``process`` is the persistence-ordering contract in its
simplest form: save, then send, then apply, then advance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from httpcoord.cluster.raft.core import Config, Raft, ReadState, Role
from httpcoord.cluster.raft.messages import Entry, Message
from httpcoord.cluster.raft.storage import MemoryStorage


class Cluster:
    def __init__(
        self,
        ids: Iterable[int] = (1, 2, 3),
        seed: int = 0,
        raft_cls: Callable[..., Raft] = Raft,
        **config: object,
    ) -> None:
        self.ids = list(ids)
        self.config = config
        self.raft_cls = raft_cls
        self.rng = random.Random(seed)
        self.storage: dict[int, MemoryStorage] = {
            i: MemoryStorage.bootstrapped(self.ids) for i in self.ids
        }
        self.nodes: dict[int, Raft] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.reads: dict[int, list[ReadState]] = {i: [] for i in self.ids}
        self.inbox: list[Message] = []
        self.cut: set[int] = set()  # isolated nodes: their messages are dropped
        for i in self.ids:
            self.start(i)

    def start(self, i: int, storage: MemoryStorage | None = None) -> Raft:
        if storage is not None:
            self.storage[i] = storage
            self.applied.setdefault(i, [])
            self.reads.setdefault(i, [])
        cfg = Config(node_id=i, **self.config)  # type: ignore[arg-type]
        self.nodes[i] = self.raft_cls(cfg, self.storage[i], random.Random(self.rng.random()))
        return self.nodes[i]

    def crash(self, i: int) -> None:
        """Lose everything not saved: the core goes, the storage stays."""
        del self.nodes[i]
        self.inbox = [m for m in self.inbox if m.dst != i]

    def process(self, i: int) -> None:
        r = self.nodes[i]
        if not r.has_ready():
            return
        rd = r.ready()
        self.storage[i].save(rd.hard_state, rd.snapshot, rd.entries)
        self.inbox.extend(rd.messages)
        self.applied[i].extend(rd.committed_entries)
        self.reads[i].extend(rd.read_states)
        r.advance(rd)

    def process_all(self) -> None:
        for i in list(self.nodes):
            self.process(i)

    def deliver(self, keep: Callable[[Message], bool] = lambda m: True) -> int:
        """Deliver every queued message (those keep() rejects are dropped)."""
        msgs, self.inbox = self.inbox, []
        n = 0
        for m in msgs:
            if m.src in self.cut or m.dst in self.cut or m.dst not in self.nodes:
                continue
            if keep(m):
                self.nodes[m.dst].step(m)
                n += 1
        return n

    def stabilize(self, rounds_max: int = 100) -> None:
        for _ in range(rounds_max):
            self.process_all()
            if not self.inbox:
                return
            self.deliver()
        raise AssertionError("cluster did not stabilize")

    def tick(self, ids: Iterable[int] | None = None, n: int = 1) -> None:
        for _ in range(n):
            for i in list(ids if ids is not None else self.nodes):
                if i in self.nodes:
                    self.nodes[i].tick()
            self.stabilize()

    def campaign(self, i: int) -> None:
        """Make i start an election now, as a leadership transfer would (so the
        others' leader lease does not stop it)."""
        self.nodes[i]._campaign(transfer=True)
        self.stabilize()

    def leader(self) -> int | None:
        leaders = [i for i, r in self.nodes.items() if r.role is Role.LEADER and i not in self.cut]
        return max(leaders, key=lambda i: self.nodes[i].term) if leaders else None

    def elect(self, i: int) -> Raft:
        self.campaign(i)
        assert self.nodes[i].role is Role.LEADER, f"{i} did not win"
        return self.nodes[i]
