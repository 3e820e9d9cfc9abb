"""Simulation fixtures: the seed budget, and a terminal summary of how many
seeds ran (so a green run says how much it proved)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

DEFAULT_SEEDS_PER_MIX = 400  # x 22 fault mixes = 8,800 seeds in the default run (~1.5 min)


@dataclass
class SimTally:
    seeds: int = 0
    by_mix: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bug_seeds: int = 0

    def add(self, mix: str, seeds: int, seconds: float) -> None:
        self.seeds += seeds
        self.by_mix[mix] = self.by_mix.get(mix, 0) + seeds
        self.seconds += seconds


TALLY_KEY = pytest.StashKey[SimTally]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TALLY_KEY] = SimTally()


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> int:
    n = request.config.getoption("--sim-seeds")
    return int(n) if n is not None else DEFAULT_SEEDS_PER_MIX


@pytest.fixture
def sim_tally(request: pytest.FixtureRequest) -> SimTally:
    return request.config.stash[TALLY_KEY]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    tally = config.stash.get(TALLY_KEY, None)
    if tally is None or (tally.seeds == 0 and tally.bug_seeds == 0):
        return
    tr = terminalreporter
    tr.section("consensus simulation")
    if tally.seeds:
        mixes = ", ".join(f"{k}={v}" for k, v in sorted(tally.by_mix.items()))
        tr.write_line(
            f"sim: {tally.seeds} seeds across {len(tally.by_mix)} fault mixes in "
            f"{tally.seconds:.1f}s ({mixes})"
        )
    if tally.bug_seeds:
        tr.write_line(f"sim: {tally.bug_seeds} seeds run against deliberately broken cores")
