"""The simulation must bite: each deliberately wrong rule (tests/sim/bugs.py)
is switched on alone, and the simulator must report a violation within its
seed budget. A rule the simulator cannot catch is a hole in the checks or in
the fault mixes, and fails here."""

from __future__ import annotations

import time

import pytest

from tests.sim import replay
from tests.sim.bugs import BUGS
from tests.sim.conftest import SimTally
from tests.sim.simulator import MIXES, Simulation, Violation

pytestmark = pytest.mark.sim

# bug -> (fault mixes to cycle through, seed budget). The mixes are the ones
# whose faults make the bug observable; the budgets leave a wide margin over
# the seed that finds it today.
HUNTS: dict[str, tuple[tuple[str, ...], int]] = {
    "commit_old_term": (("figure8",), 2000),
    "vote_without_log_check": (("partition3", "crash3", "everything"), 300),
    "forget_vote": (("figure8", "leadercrash3"), 1000),
    "apply_before_commit": (("crash3", "partition3"), 300),
    "read_without_heartbeat": (("isolation3", "partition3"), 1000),
    "send_before_save": (("crash3", "figure8"), 1000),
    # Seen only with stale messages re-delivered across terms and restarts.
    "count_stale_votes": (("crash3", "reboot5", "membership5"), 1500),
    # Seen only by the healed cluster's bound on answering reads.
    "read_never_released": (("lossy3",), 50),
}


def test_every_bug_has_a_hunt() -> None:
    assert set(HUNTS) == set(BUGS)
    assert len(BUGS) >= 4


@pytest.mark.parametrize("bug", sorted(HUNTS))
def test_simulator_finds_the_injected_bug(bug: str, sim_tally: SimTally) -> None:
    mixes, budget = HUNTS[bug]
    start = time.perf_counter()
    found: str | None = None
    seeds = 0
    for seed in range(budget):
        mix = mixes[seed % len(mixes)]
        seeds += 1
        try:
            Simulation(MIXES[mix], seed, BUGS[bug]).run()
        except Violation as v:
            found = str(v)
            break
    sim_tally.bug_seeds += seeds
    elapsed = time.perf_counter() - start
    assert found is not None, f"{bug}: no violation in {budget} seeds ({elapsed:.1f}s)"
    print(f"{bug}: caught after {seeds} seeds: {found}")
    # The failure names one command, and that command replays it exactly.
    command = found.split("replay: ", 1)[1].rstrip(")")
    assert command == f"python -m tests.sim.replay --mix {mix} --seed {seed} --bug {bug}"
    assert replay.main(command.split()[3:]) == 1
