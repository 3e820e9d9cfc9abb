"""Replay one simulation seed exactly, and say what happened.

    python -m tests.sim.replay --mix crash3 --seed 1234 [--bug BUG] [--trace]

``--trace`` prints each node's role, term, commit and applied index per step.
"""

from __future__ import annotations

import argparse
import sys

from tests.sim.bugs import BUGS
from tests.sim.simulator import MIXES, Simulation, Violation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mix", required=True, choices=sorted(MIXES))
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--bug", choices=sorted(BUGS), default=None)
    p.add_argument("--trace", action="store_true")
    args = p.parse_args(argv)
    raft_cls = BUGS[args.bug] if args.bug else None
    sim = (
        Simulation(MIXES[args.mix], args.seed, raft_cls)
        if raft_cls
        else Simulation(MIXES[args.mix], args.seed)
    )
    if args.trace:
        original = sim.step

        def traced(chaos: bool) -> None:
            original(chaos)
            cells = []
            for n in sim.nodes.values():
                r = n.raft
                if r is None:
                    cells.append(f"{n.id}:down")
                else:
                    cells.append(
                        f"{n.id}:{r.role.value[:4]} t{r.term} c{r.committed} a{n.applied} "
                        f"l{r.log.last_index()}{' cut' if any(n.id in c for c in sim.cut) else ''}"
                    )
            print(f"{sim.now:5d} " + " | ".join(cells))

        sim.step = traced  # type: ignore[method-assign]
    try:
        result = sim.run()
    except Violation as v:
        print(f"VIOLATION: {v}")
        return 1
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
