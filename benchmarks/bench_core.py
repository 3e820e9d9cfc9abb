"""Throughput of the consensus core alone: a 3-node cluster in one process,
MemoryStorage, messages handed over in memory, no I/O and no encoding.

Each loop turn the leader takes one batch of proposals (group commit in the
real driver does the same), then every node runs the driver loop once: save
the Ready, deliver its messages, apply, advance. The number reported is
entries committed and applied on every node per second.

    python benchmarks/bench_core.py [--entries 500000] [--batch 1024] [--size 64]

The target is >= 200,000 entries/s: well above the ~8,000 fsyncs/s of this
machine's disk, so group commit and the disk, not the core, set the write rate.
"""

from __future__ import annotations

import argparse
import random
import time

from httpcoord.cluster.raft.core import Config, Raft, Role
from httpcoord.cluster.raft.messages import Message
from httpcoord.cluster.raft.storage import MemoryStorage


def run(entries: int, batch: int, size: int) -> tuple[float, int]:
    ids = [1, 2, 3]
    storages = {i: MemoryStorage.bootstrapped(ids) for i in ids}
    nodes = {
        i: Raft(
            Config(
                node_id=i,
                max_entries_per_msg=8192,
                max_inflight_msgs=256,
                max_bytes_per_msg=64 << 20,
            ),
            storages[i],
            random.Random(i),
        )
        for i in ids
    }
    inbox: list[Message] = []
    applied = {i: 0 for i in ids}

    def turn() -> None:
        nonlocal inbox
        for i, r in nodes.items():
            if r.has_ready():
                rd = r.ready()
                storages[i].save(rd.hard_state, rd.snapshot, rd.entries)
                inbox.extend(rd.messages)
                if rd.committed_entries:
                    applied[i] = rd.committed_entries[-1].index
                r.advance(rd)
        msgs, inbox = inbox, []
        for m in msgs:
            nodes[m.dst].step(m)

    while nodes[1].role is not Role.LEADER:
        nodes[1].tick()
        turn()
    for _ in range(10):
        turn()
    leader = nodes[1]
    payload = [b"x" * size] * batch
    start_index = leader.log.last_index()
    target = start_index + entries
    t0 = time.perf_counter()
    proposed = start_index
    while min(applied.values()) < target:
        if proposed < target:
            proposed = leader.propose_batch(payload)
        turn()
        if not inbox and proposed >= target:
            leader.tick()  # heartbeats carry the final commit index to followers
    elapsed = time.perf_counter() - t0
    done = min(applied.values()) - start_index
    return done / elapsed, done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, default=500_000)
    p.add_argument("--batch", type=int, default=1024, help="proposals per loop turn")
    p.add_argument("--size", type=int, default=64, help="bytes of data per entry")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    best = 0.0
    for k in range(args.runs):
        rate, done = run(args.entries, args.batch, args.size)
        best = max(best, rate)
        print(
            f"run {k + 1}: {done} entries of {args.size} B committed and applied on 3 nodes: "
            f"{rate:,.0f} entries/s"
        )
    print(f"best: {best:,.0f} entries/s (batch {args.batch}); target >= 200,000")


if __name__ == "__main__":
    main()
