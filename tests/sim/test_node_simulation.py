"""Whole nodes under deterministic simulation (tests/sim/node_sim.py): clean
seeds of every fault mix pass every check, a seed replays exactly, the
simulated disk and loop keep their promises, and each planted driver, node
or session bug (tests/sim/node_bugs.py) is found within a small seed budget."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from httpcoord.cluster.raft.messages import Entry, EntryKind, HardState
from tests.sim import node_sim
from tests.sim.node_bugs import NODE_BUGS
from tests.sim.node_sim import (
    MIXES,
    NodeSimulation,
    Violation,
    replay_command,
    run_seed,
)
from tests.sim.sim_disk import SimDisk
from tests.sim.sim_loop import SimLoop, Stuck

pytestmark = pytest.mark.sim

CLEAN_SEEDS_PER_MIX = 5  # x 6 mixes in the default run (about 6 s); -m chaos runs more
SOAK_SEEDS_PER_MIX = 150


# ---- the pieces ---------------------------------------------------------------------


def test_the_loop_jumps_to_the_next_timer_and_refuses_to_wait_forever() -> None:
    loop = SimLoop(deadline_s=100)

    async def timers() -> float:
        started = time.perf_counter()
        await asyncio.sleep(30)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(60), 5)
        assert time.perf_counter() - started < 1.0  # virtual: no real waiting
        return loop.time()

    assert loop.run_until_complete(timers()) == 35.0

    async def forever() -> None:
        await loop.create_future()

    with pytest.raises(Stuck):
        loop.run_until_complete(forever())
    loop.close()


def _entries(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(first + i, term, EntryKind.NORMAL, b"x") for i in range(count)]


def _disk(lands: float, torn: float) -> SimDisk:
    return SimDisk([1, 2, 3], random.Random(7), 5, torn, lands)


async def _save_then_crash(disk: SimDisk, entries: list[Entry], hs: HardState) -> None:
    storage = disk.open()
    save = asyncio.ensure_future(storage.save(hs, None, entries))
    for _ in range(20):  # a few loop turns until it is written, not yet synced
        if disk.inflight is not None:
            break
        await asyncio.sleep(0)
    assert disk.inflight is not None
    disk.crash()
    save.cancel()
    await asyncio.gather(save, return_exceptions=True)
    await asyncio.sleep(1)  # the shielded write wakes up dead and writes nothing


@pytest.mark.parametrize(
    ("lands", "torn", "expect"), [(0.0, 0.0, "lost"), (1.0, 0.0, "landed"), (0.0, 1.0, "torn")]
)
def test_a_crash_loses_lands_or_tears_the_save_in_flight(
    lands: float, torn: float, expect: str
) -> None:
    loop = SimLoop(deadline_s=10)
    disk = _disk(lands, torn)
    before_last = disk.durable.last_index()
    before_hs = disk.durable.initial_state()[0]
    hs = HardState(before_hs.term + 1, 2, before_hs.commit)
    loop.run_until_complete(_save_then_crash(disk, _entries(before_last + 1, 5, hs.term), hs))
    reopened = disk.open()
    last, saved_hs = reopened.last_index(), reopened.initial_state()[0]
    if expect == "landed":
        assert (last, saved_hs) == (before_last + 5, hs)
    else:
        # Lost or torn: never the hard state (written last), at most a strict prefix.
        assert saved_hs == before_hs
        assert before_last <= last < before_last + 5
    loop.close()


def test_a_save_that_returned_survives_a_crash() -> None:
    loop = SimLoop(deadline_s=10)
    disk = _disk(0.0, 0.0)
    last = disk.durable.last_index()
    hs = HardState(disk.durable.initial_state()[0].term + 1, 1, 0)

    async def save() -> None:
        await disk.open().save(hs, None, _entries(last + 1, 3, hs.term))

    loop.run_until_complete(save())
    disk.crash()
    reopened = disk.open()
    assert (reopened.last_index(), reopened.initial_state()[0]) == (last + 3, hs)
    loop.close()


# ---- clean runs --------------------------------------------------------------------------


def _clean_runs(mixes: list[str], seeds: int) -> None:
    started = time.perf_counter()
    ops = faults = 0
    sessions: Counter[str] = Counter()
    for mix in mixes:
        for seed in range(seeds):
            result = run_seed(seed, mix)
            ops += sum(result.ops.values())
            faults += sum(result.faults.values())
            sessions += result.session_ops
            assert result.ops["write_ok"] + result.ops["cas_ok"] > 0, result.summary()
            assert result.ops["read_ok"] > 0, result.summary()
            assert result.session_ops["open_ok"] > 0, result.summary()
    elapsed = time.perf_counter() - started
    runs = len(mixes) * seeds
    # The session checks judged something: sessions that expired and were
    # closed, ephemerals made, deleted and removed (by deletes or sessions).
    kinds = ("expired", "closed", "create_ok", "delete_ok", "heartbeat_ok", "ephemerals_removed")
    for kind in kinds:
        assert sessions[kind] > 0, (kind, sessions)
    print(
        f"node sim: {runs} seeds ({', '.join(mixes)}) in {elapsed:.1f}s "
        f"({runs / elapsed:.1f} seeds/s): {ops} client ops, {sessions['open_ok']} sessions "
        f"({sessions['expired']} expired, {sessions['closed']} closed, "
        f"{sessions['create_ok']} ephemerals), {faults} faults, all checks passed"
    )


def test_clean_seeds_of_every_mix_pass_every_check() -> None:
    _clean_runs([m for m in MIXES if m != "long"], CLEAN_SEEDS_PER_MIX)


@pytest.mark.chaos
def test_many_clean_seeds_pass_every_check() -> None:
    _clean_runs(sorted(MIXES), SOAK_SEEDS_PER_MIX)


def test_a_follower_unheard_by_its_leader_loses_no_acknowledged_heartbeat() -> None:
    # A one-way cut lets a follower hear its leader (so it has a live
    # leader) while its session pings fail; it took heartbeats that never
    # reached the leader, and those sessions expired early (about one seed in
    # three of this mix) until Node.heartbeat refused once its pings stopped
    # getting through.
    for seed in range(12):
        run_seed(seed, "unheard")


def test_a_seed_replays_exactly() -> None:
    first = run_seed(3, "crashy")
    again = run_seed(3, "crashy")
    assert first.trace == again.trace
    assert first.ops == again.ops and first.faults == again.faults
    assert sum(first.faults.values()) > 0
    assert run_seed(4, "crashy").trace != first.trace


def test_a_crash_run_exercises_snapshots_and_crashes_in_a_save() -> None:
    # What the clean runs claim to cover must happen in them.
    totals: dict[str, int] = {}
    snapshots = 0
    for seed in range(4):
        result = run_seed(seed, "crashy")
        snapshots += result.snapshots
        for k, v in result.faults.items():
            totals[k] = totals.get(k, 0) + v
    assert snapshots > 0
    assert totals.get("crash_in_save", 0) > 0 and totals.get("crash", 0) > 0


def test_a_snapshot_staged_again_during_its_save_keeps_its_chunks() -> None:
    # Before MirroredStorage._save pinned the set it makes visible, a resent
    # InstallSnapshot staged during the save let the collector delete it: the
    # follower's loop failed restoring the snapshot it had just saved (seeds
    # 3, 4, 5 and 6 of this mix).
    for seed in range(3, 7):
        NodeSimulation(seed, "snapshots").run()


# ---- the planted bugs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hunt:
    mixes: tuple[str, ...]  # cycled through, one seed each
    budget: int  # seeds; a wide margin over the seed that finds it today


HUNTS: dict[str, Hunt] = {
    # Follower acks it then loses: the leader believes it holds entries it does not.
    "send_before_save": Hunt(("default", "crashy"), 60),
    # Every seed today: the leader answers writes that are then overwritten.
    "apply_on_append": Hunt(("default",), 10),
    # Needs a follower that lags in applying while the leader answers its read.
    "read_skips_apply_wait": Hunt(("slowdisk",), 80),
    # Needs a leader change while a write waits at an index another entry takes.
    "outcome_ignores_term": Hunt(("lossy",), 60),
    # Needs a leader change while a session lives: nearly every seed.
    "no_renewal_on_failover": Hunt(("default", "crashy"), 10),
    # Needs a session heartbeated only at followers for a ttl: most seeds.
    "expire_early": Hunt(("default", "lossy"), 40),
}


def test_every_node_bug_has_a_hunt() -> None:
    assert set(HUNTS) == set(NODE_BUGS)
    assert all(m in MIXES for h in HUNTS.values() for m in h.mixes)


@pytest.mark.parametrize("bug", sorted(HUNTS))
def test_the_node_simulation_finds_the_planted_bug(bug: str) -> None:
    hunt = HUNTS[bug]
    started = time.perf_counter()
    found: str | None = None
    seeds = 0
    for seed in range(hunt.budget):
        mix = hunt.mixes[seed % len(hunt.mixes)]
        seeds += 1
        try:
            run_seed(seed, mix, bug)
        except Violation as v:
            found = str(v)
            break
    elapsed = time.perf_counter() - started
    assert found is not None, f"{bug}: no violation in {hunt.budget} seeds ({elapsed:.1f}s)"
    print(f"{bug}: caught after {seeds} seeds in {elapsed:.1f}s: {found[:300]}")
    command = found.rsplit("replay: ", 1)[1].rstrip(")")
    assert command == replay_command(seed, mix, bug)
    assert node_sim.main(command.split()[3:]) == 1


SAFETY = ("not linearizable", "both led term", "hold different trees")


def test_send_before_save_loses_an_acknowledged_write_when_the_leader_follows() -> None:
    # The hunt above finds send_before_save by what the core notices (a
    # follower told it holds entries it lost stops its loop). In the amnesia
    # mix the leader crashes right after a follower lost a save whose append
    # it had already acknowledged, so nobody is left to notice: the next
    # majority elects without the entry and a write acknowledged to a
    # client is gone. Rare, and where it falls moves with any change to the
    # node's timing: seeds 3 and 11 of the first 25 once, seed 168 the first
    # of 200 now (0.3 s a seed; the search stops at the first found).
    found: str | None = None
    for seed in range(200):
        try:
            run_seed(seed, "amnesia", "send_before_save")
        except Violation as v:
            if any(kind in str(v) for kind in SAFETY):
                found = str(v)
                break
    assert found is not None, "send_before_save: no safety violation in 200 amnesia seeds"
    print(f"send_before_save as a safety violation, seed {seed}: {found[:300]}")
