"""A NodeStorage over a simulated disk that survives crashes of its node.

``SimDisk`` is what a crash leaves: the durable raft state (a ``MemoryStorage``)
and the durable snapshot chunk sets. ``SimStorage`` is the node's view of it
for one incarnation: the same ``MirroredStorage`` base as the SQLite and
memory storages (so the same validation, ordering and mirroring), with writes
that take virtual time.

A save is written, then synced: between the start of a save and its return it
is in flight. A crash then (``SimDisk.crash``) decides its fate with the
seeded rng, as tests/sim/simulator.py does: lost, landed whole, or torn (a
prefix of its entries, without the hard state, which is written last). Once a
save has returned it is durable. Snapshot chunks and the switch that makes a
snapshot visible are durable when their write returns; one cut short by a
crash is lost (the chunks of a set nobody points at are garbage).

``SimDisk.on_save_start`` lets the simulation crash the node while a save is in
flight (the window the persistence-ordering rule is about).
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable

from httpcoord.cluster.node_storage import MirroredStorage, SavePlan
from httpcoord.cluster.raft.messages import Snapshot
from httpcoord.cluster.raft.storage import MemoryStorage


class SimDisk:
    def __init__(
        self,
        voters: list[int],
        rng: random.Random,
        latency_ms_max: int,
        torn_rate: float,
        lands_rate: float,
    ) -> None:
        self.durable = MemoryStorage.bootstrapped(voters)
        self.chunks: dict[int, list[bytes]] = {}
        self.visible_set = 0
        self.next_set = 1
        self._rng = rng
        self.latency_ms_max = latency_ms_max
        self.torn_rate = torn_rate
        self.lands_rate = lands_rate
        self.inflight: SavePlan | None = None
        self.current: SimStorage | None = None
        self.on_save_start: Callable[[], None] | None = None
        self.saves = 0
        self.torn = 0
        self.lost = 0

    def open(self) -> SimStorage:
        """The storage a restarted node opens: exactly what is durable."""
        self.inflight = None
        self.current = SimStorage(self)
        return self.current

    def crash(self) -> None:
        """The node died: decide what its in-flight save left on the disk."""
        if self.current is not None:
            self.current.dead = True
            self.current = None
        plan, self.inflight = self.inflight, None
        if plan is None:
            return
        roll = self._rng.random()
        if roll < self.lands_rate:
            self._land(plan)
        elif plan.snapshot is None and plan.entries and roll < self.lands_rate + self.torn_rate:
            keep = self._rng.randrange(len(plan.entries))  # a strict prefix, maybe none
            if keep:
                self.durable.save(None, None, plan.entries[:keep])
            self.torn += 1
        else:
            self.lost += 1

    def _land(self, plan: SavePlan) -> None:
        self.durable.save(plan.hard_state, plan.snapshot, plan.entries)
        if plan.snapshot is not None:
            self.visible_set = plan.snapshot_set

    def latency_s(self) -> float:
        return self._rng.randint(1, self.latency_ms_max) / 1000


class SimStorage(MirroredStorage):
    """One incarnation's storage on a ``SimDisk``."""

    def __init__(self, disk: SimDisk) -> None:
        super().__init__(copy.deepcopy(disk.durable), disk.visible_set, disk.next_set)
        self.disk = disk
        self.dead = False  # set by a crash: a dead incarnation writes nothing more

    def _check_alive(self) -> None:
        if self.dead:
            raise asyncio.CancelledError("the node crashed")

    def _new_set(self) -> int:
        set_id = super()._new_set()
        self.disk.next_set = max(self.disk.next_set, set_id + 1)  # ids never reused
        return set_id

    async def _commit_save(self, plan: SavePlan) -> None:
        disk = self.disk
        self._check_alive()
        disk.inflight = plan
        if disk.on_save_start is not None:
            disk.on_save_start()
        await asyncio.sleep(disk.latency_s())
        self._check_alive()
        # The fsync returned: durable.
        disk.inflight = None
        disk.saves += 1
        disk._land(plan)

    async def _commit_chunks(self, set_id: int, first_seq: int, chunks: list[bytes]) -> None:
        await asyncio.sleep(self.disk.latency_s())
        self._check_alive()
        stored = self.disk.chunks.setdefault(set_id, [])
        assert len(stored) == first_seq
        stored.extend(chunks)

    async def _commit_visible(self, set_id: int, snapshot: Snapshot) -> None:
        await asyncio.sleep(self.disk.latency_s())
        self._check_alive()
        durable = self.disk.durable
        meta = snapshot.meta
        durable.create_snapshot(meta.index, meta.conf, snapshot.data)
        durable.compact(meta.index)
        self.disk.visible_set = set_id

    async def _read_chunk(self, set_id: int, seq: int) -> bytes | None:
        stored = self.disk.chunks.get(set_id)
        return stored[seq] if stored is not None and seq < len(stored) else None

    async def _delete_garbage_batch(self, keep_sets: frozenset[int], log_upto: int) -> int:
        # A dead incarnation's collector may still be scheduled (a stream read
        # by a peer's task started it): it must not judge the next one's sets.
        self._check_alive()
        # Earlier incarnations' tasks are all cancelled: their sets in progress
        # are garbage too.
        garbage = [s for s in self.disk.chunks if s not in keep_sets and s != self.disk.visible_set]
        for s in garbage:
            del self.disk.chunks[s]
        return len(garbage)

    async def _close_backend(self) -> None:
        pass
