"""Every fault mix, many seeds: the safety checks run after every step and
liveness is checked after the faults heal. A failure names the one command
that replays its seed exactly."""

from __future__ import annotations

import time

import pytest

from tests.sim.conftest import SimTally
from tests.sim.simulator import MIXES, Simulation, Violation

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_safety_and_liveness_hold_under_faults(
    mix: str, sim_seeds: int, sim_tally: SimTally
) -> None:
    start = time.perf_counter()
    ran = 0
    try:
        for seed in range(sim_seeds):
            ran += 1
            Simulation(MIXES[mix], seed).run()
    except Violation as v:
        pytest.fail(f"mix {mix}, seed {seed}: {v}", pytrace=False)
    finally:
        sim_tally.add(mix, ran, time.perf_counter() - start)


def test_a_seed_replays_identically() -> None:
    a = Simulation(MIXES["everything"], 7).run()
    b = Simulation(MIXES["everything"], 7).run()
    assert a == b
    assert a.max_commit > 0 and a.leaders > 0
