"""Faults on a seeded schedule, one at a time: a fault holds for a while,
then everything is healed (links restored, stopped processes continued,
killed ones restarted) and the cluster gets a calm spell before the next.

At most a minority is ever faulty, so the cluster must stay available
between elections, and every fault kind the suite knows comes up:

  isolate     one node cut off from every peer (both ways)
  partition   a random minority cut off from the rest
  one_way     one node stops hearing every peer (they still hear it)
  bridge      (5 nodes) two pairs cut apart, the fifth node hears both
  kill        SIGKILL a random node; restarted on its data dir at the heal
  kill_leader SIGKILL the leader
  pause       SIGSTOP a node for longer than an election timeout, then SIGCONT
  kill_some   SIGKILL several nodes at once (two up to a minority; one of 3);
              restarted at the heal
  rolling     restart every node in turn, each by SIGTERM or SIGKILL, waiting
              for it to be ready before the next (heals itself: no hold)
  disk_full   (data dirs on tmpfs) fill one node's file system; the filler
              is deleted at the heal and the node resumes by itself
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.disk import fill, free
from tests.chaos.harness import FaultNetwork
from tests.integration.cluster import Cluster

KINDS = (
    "isolate",
    "partition",
    "one_way",
    "bridge",
    "kill",
    "kill_leader",
    "pause",
    "kill_some",
    "rolling",
    "disk_full",
)
# How long a node restarted by the rolling restart may take to be ready.
ROLLING_READY_S = 20.0


@dataclass
class Nemesis:
    cluster: Cluster
    net: FaultNetwork
    rng: random.Random
    fault_s: tuple[float, float] = (1.0, 3.0)  # how long one fault holds
    calm_s: tuple[float, float] = (0.5, 1.5)  # healthy spell after each heal
    injected: Counter[str] = field(default_factory=Counter)
    log: list[tuple[float, str]] = field(default_factory=list)  # (monotonic s, what)
    disk_faults: bool = False  # the data dirs are on tmpfs: disk_full may come up
    _killed: list[int] = field(default_factory=list)
    _paused: list[int] = field(default_factory=list)
    _filled: list[int] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return sorted(m.node_id for m in self.cluster)

    def run(self, until_monotonic_s: float) -> None:
        """Fault, heal, calm, until the deadline; healed when it returns."""
        try:
            while time.monotonic() < until_monotonic_s:
                kind = self.rng.choice(self._kinds())
                self.inject(kind)
                hold_s = self.rng.uniform(*self.fault_s)  # drawn always: one schedule per seed
                if kind != "rolling":
                    time.sleep(hold_s)
                self.heal()
                time.sleep(self.rng.uniform(*self.calm_s))
        finally:
            self.heal()

    def _kinds(self) -> tuple[str, ...]:
        return tuple(
            k
            for k in KINDS
            if (k != "bridge" or len(self.ids) >= 5) and (k != "disk_full" or self.disk_faults)
        )

    def inject(self, kind: str) -> None:
        ids, rng = self.ids, self.rng
        minority = len(ids) // 2 if len(ids) > 1 else 0
        if kind == "isolate":
            node = rng.choice(ids)
            self.net.isolate(node)
            what = f"isolate {node}"
        elif kind == "partition":
            side = rng.sample(ids, rng.randint(1, minority))
            self.net.partition(side, [i for i in ids if i not in side])
            what = f"partition {sorted(side)} | rest"
        elif kind == "one_way":
            node = rng.choice(ids)
            for other in ids:
                if other != node:
                    self.net.drop(node, other)
            what = f"{node} hears nobody"
        elif kind == "bridge":
            shuffled = rng.sample(ids, len(ids))
            self.net.partition(shuffled[:2], shuffled[3:5])
            what = f"bridge {shuffled[2]} between {shuffled[:2]} and {shuffled[3:5]}"
        elif kind in ("kill", "kill_leader"):
            node = rng.choice(ids)
            if kind == "kill_leader":
                node = self.cluster.leader_named_by(rng.choice(ids)) or node
            self.cluster.kill(node, signal.SIGKILL)
            self._killed.append(node)
            what = f"kill -9 {node}"
        elif kind == "kill_some":
            some = rng.sample(ids, max(1, rng.randint(min(2, minority), minority)))
            for node in some:
                self.cluster.kill(node, signal.SIGKILL)
            self._killed.extend(some)
            what = f"kill -9 {sorted(some)}"
        elif kind == "rolling":
            steps = []
            for node in rng.sample(ids, len(ids)):
                sig = rng.choice((signal.SIGTERM, signal.SIGKILL))
                self.cluster.kill(node, sig)
                self.cluster.start(node)
                self.cluster.wait_ready([node], timeout=ROLLING_READY_S)
                steps.append(f"{node}:{sig.name}")
            what = f"rolling restart {' '.join(steps)}"
        elif kind == "pause":
            node = rng.choice(ids)
            self.cluster.kill(node, signal.SIGSTOP)
            self._paused.append(node)
            what = f"SIGSTOP {node}"
        elif kind == "disk_full":
            node = rng.choice(ids)
            fill(self.cluster[node].data_dir)
            self._filled.append(node)
            what = f"disk of {node} full"
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.injected[kind] += 1
        self.log.append((time.monotonic(), what))

    def heal(self) -> None:
        self.net.heal()
        for node in self._paused:
            self.cluster.kill(node, signal.SIGCONT)
        self._paused.clear()
        for node in self._killed:
            self.cluster.start(node)
        self._killed.clear()
        for node in self._filled:
            free(self.cluster[node].data_dir)
        self._filled.clear()
        self.log.append((time.monotonic(), "heal"))
