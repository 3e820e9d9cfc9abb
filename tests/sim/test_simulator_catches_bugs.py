"""The simulation must bite: each deliberately wrong rule (tests/sim/bugs.py)
is switched on alone, and the simulator must report a violation within its
seed budget. A rule the simulator cannot catch is a hole in the checks or in
the fault mixes, and fails here."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.sim import replay
from tests.sim.bugs import BUGS
from tests.sim.conftest import SimTally
from tests.sim.simulator import MIXES, Simulation, Violation

pytestmark = pytest.mark.sim


@dataclass(frozen=True)
class Hunt:
    mixes: tuple[str, ...]  # cycled through, one seed each: the faults that expose the bug
    budget: int  # seeds; a wide margin over the seed that finds it today
    expect: str = ""  # the violation must say this (the failure the hunt is about)


HUNTS: dict[str, Hunt] = {
    "commit_old_term": Hunt(("figure8",), 2000),
    "vote_without_log_check": Hunt(("partition3", "crash3", "everything"), 300),
    "forget_vote": Hunt(("figure8", "leadercrash3"), 1000),
    "apply_before_commit": Hunt(("crash3", "partition3"), 300),
    "read_without_heartbeat": Hunt(("isolation3", "partition3"), 1000),
    "send_before_save": Hunt(("crash3", "figure8"), 1000),
    # A lone voter commits at once: only its learners can see the early commit.
    "leader_sends_unsaved_commit": Hunt(("solo1",), 300),
    # Seen only with stale messages re-delivered across terms and restarts,
    # about once in 1,000-2,000 seeds of these mixes (today: seed 95).
    "count_stale_votes": Hunt(("crash3", "reboot5"), 4000),
    # Seen only by the healed cluster's bound on answering reads.
    "read_never_released": Hunt(("lossy3",), 50),
    # Seen only by the progress check made while a minority is still down
    # (after a full heal every voter is back and the rule is harmless).
    "commit_needs_every_voter": Hunt(("down3", "down5"), 40, "with a minority down for good"),
    # Seen only when a short or overlapping append reaches a follower that
    # still holds a deposed leader's suffix (about 1 seed in 15).
    "follower_commits_past_append": Hunt(("shortappends3",), 400),
    # Seen only with a leader cut off right after proposing a change, on four
    # voters (about 1 seed in 25).
    "conf_change_before_noop": Hunt(("confrace4",), 500),
    # The answer to a read asked before a crash, re-delivered to the restarted
    # node (whose new reads carry a new boot prefix).
    "follower_accepts_unknown_read": Hunt(("crash3", "reboot5"), 100, "earlier incarnation"),
    # Removing one of two voters, the leader deposed before the other has it
    # (about 1 seed in 30).
    "removed_voter_never_campaigns": Hunt(("solo1",), 600, "after healing"),
}


def test_every_bug_has_a_hunt() -> None:
    assert set(HUNTS) == set(BUGS)
    assert all(m in MIXES for h in HUNTS.values() for m in h.mixes)


@pytest.mark.parametrize("bug", sorted(HUNTS))
def test_simulator_finds_the_injected_bug(bug: str, sim_tally: SimTally) -> None:
    hunt = HUNTS[bug]
    start = time.perf_counter()
    found: str | None = None
    seeds = 0
    for seed in range(hunt.budget):
        mix = hunt.mixes[seed % len(hunt.mixes)]
        seeds += 1
        try:
            Simulation(MIXES[mix], seed, BUGS[bug]).run()
        except Violation as v:
            found = str(v)
            break
    sim_tally.bug_seeds += seeds
    elapsed = time.perf_counter() - start
    assert found is not None, f"{bug}: no violation in {hunt.budget} seeds ({elapsed:.1f}s)"
    print(f"{bug}: caught after {seeds} seeds: {found}")
    assert hunt.expect in found, f"{bug}: caught, but not as expected: {found}"
    # The failure names one command, and that command replays it exactly.
    command = found.split("replay: ", 1)[1].rstrip(")")
    assert command == f"python -m tests.sim.replay --mix {mix} --seed {seed} --bug {bug}"
    assert replay.main(command.split()[3:]) == 1
