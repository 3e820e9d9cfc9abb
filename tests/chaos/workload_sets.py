"""Sequential creates: clients create ``/chaos-set/item-`` sequential nodes
through random nodes; once the cluster has healed, one linearizable read of
the parent's children. Nothing is ever deleted under the parent, so each
create bumps its cversion by one and the final sequence numbers must run
without a gap (``check_sequential_creates``).

  create   POST /v1/nodes/chaos-set/item-?sequential=true   ok: the real path

The data names the client and its attempt, so a child that is not an
acknowledged create can be told from one (an unknown create that took effect).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from tests.chaos.checkers import Anomaly, check_sequential_creates
from tests.chaos.history import History, Op
from tests.chaos.workload import REQUEST_TIMEOUT_S, ClientThreads, Workload, send_write
from tests.integration.cluster import Cluster, http, wait_for

PARENT = "/chaos-set"
KEY = "set"
# Think time between two creates of one client: the set is one workload among
# several on a small machine.
THINK_S = (0.0, 0.02)
FINAL_READ_S = 30.0


@dataclass
class SequentialSet(Workload):
    cluster: Cluster
    history: History
    seed: int
    clients: int = 2
    final_children: list[str] = field(default_factory=list)
    threads: ClientThreads = field(default_factory=ClientThreads)

    keys = (KEY,)
    parents = (PARENT,)

    def _client(self, c: int, rng: random.Random, end_s: float) -> None:
        ids = sorted(m.node_id for m in self.cluster)
        n = 0
        while self.threads.running(end_s):
            n += 1
            node = rng.choice(ids)
            op = self.history.invoke(f"set-{c}", "create", KEY, f"{c}-{n}")
            url = f"{self.cluster[node].url}/v1/nodes{PARENT}/item-?sequential=true"
            send_write(
                self.history, op, "POST", url, f"{c}-{n}".encode(), timeout_s=REQUEST_TIMEOUT_S
            )
            self.threads.pause(rng.uniform(*THINK_S))

    def final_read(self) -> None:
        """The parent's children, read linearizably through any node that answers."""

        def read() -> tuple[list[str]] | None:
            for m in self.cluster:
                status, _, body = http(
                    "GET",
                    f"{m.url}/v1/nodes{PARENT}?children=true&consistency=linearizable",
                    timeout=5,
                )
                if status == 200:
                    return (list(json.loads(body)["children"]),)  # truthy when empty too
            return None

        (self.final_children,) = wait_for("the set's children", read, FINAL_READ_S)

    def ops(self) -> list[Op]:
        return [op for op in self.history.ops() if op.key == KEY]

    def check(self) -> list[Anomaly]:
        ops = self.ops()
        acked = [op for op in ops if op.outcome == "ok"]
        unknown = sum(1 for op in ops if op.outcome == "unknown")
        return check_sequential_creates(acked, unknown, self.final_children)
