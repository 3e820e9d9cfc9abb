"""The fault suite's checkers checked: known-good and known-bad histories.

Runs in the default suite (no chaos marker): everything here is pure and seeded.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.checkers import (
    Access,
    EphemeralEvent,
    Observation,
    SessionLease,
    WatchEvent,
    check_ephemerals,
    check_fencing,
    check_monotonic_zxids,
    check_sequential_creates,
    check_session_leases,
    check_watch_stream,
)
from tests.chaos.history import History, Op, Outcome, Process, loads_ops
from tests.chaos.linearizable import VersionedRegister, check_linearizable
from tests.chaos.timeline import draw_timeline, write_failure

REGISTER = VersionedRegister(initial="init")


@dataclass(frozen=True, slots=True)
class SearchOnly(VersionedRegister):
    """The register without its quick proof, so the search alone is tested."""

    def refute(self, ops: Sequence[Op]) -> tuple[tuple[int, ...], str] | None:
        return None


SEARCH_ONLY = SearchOnly(initial="init")


class Script:
    """Builds a history by hand: times are whatever the test says they are."""

    def __init__(self) -> None:
        self.now_ns = 0
        self.history = History(clock_ns=lambda: self.now_ns)

    def op(
        self,
        process: int,
        f: str,
        arg: Any,
        start: int,
        end: int | None,
        outcome: str = "ok",
        value: Any = None,
        key: str = "k",
    ) -> Op:
        """One op invoked at ``start`` and completed at ``end`` (None: left open)."""
        self.now_ns = start
        op = self.history.invoke(process, f, key, arg)
        if end is None:
            return op
        self.now_ns = end
        if outcome == "ok":
            return self.history.ok(op, value)
        if outcome == "fail":
            return self.history.fail(op, str(value))
        return self.history.unknown(op, str(value))

    def check(self, **kwargs: Any) -> Any:
        """The verdict, which the search alone must reach too."""
        ops = sorted(self.history.ops(), key=lambda o: o.invoke_ns)
        result = check_linearizable(ops, REGISTER, **kwargs)
        searched = check_linearizable(ops, SEARCH_ONLY, **kwargs)
        assert searched.ok == result.ok
        return result


# --- history --------------------------------------------------------------------------


def test_history_records_outcomes_and_open_ops_count_as_unknown(tmp_path: Path) -> None:
    ticks = itertools.count(100, 10)
    h = History(clock_ns=lambda: next(ticks))
    a = h.invoke("p1", "write", "k", "x")
    b = h.invoke(2, "cas", "k", (1, "y"))
    c = h.invoke(3, "read", "k")
    d = h.invoke(4, "write", "k", "z")
    h.ok(a, 1)
    h.fail(b, "BadVersion")
    h.unknown(c, "timeout")
    with pytest.raises(ValueError):
        h.ok(a, 2)
    ops = h.ops()
    assert [o.outcome for o in ops] == ["ok", "fail", "unknown", "unknown"]
    assert ops[0].invoke_ns == 100 and ops[0].complete_ns == 140
    assert ops[1].error == "BadVersion" and ops[2].error == "timeout"
    assert ops[3] == replace(d) and ops[3].complete_ns is None and h.open_count() == 1
    loaded = History.load(h.dump(tmp_path / "h.jsonl")).ops()
    assert loaded == ops  # tuples survive the JSON round trip
    assert loads_ops(h.dumps())[1].arg == (1, "y")


def test_history_is_safe_across_threads() -> None:
    h = History()
    threads_count, ops_per_thread = 8, 200

    def client(process: int) -> None:
        for n in range(ops_per_thread):
            op = h.invoke(process, "write", "k", n)
            h.ok(op, n)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ops = h.ops()
    assert len(ops) == threads_count * ops_per_thread and h.open_count() == 0
    assert [o.id for o in ops] == list(range(len(ops)))
    # Clock readings are taken under the lock: ids follow invocation times.
    assert all(a.invoke_ns <= b.invoke_ns for a, b in itertools.pairwise(ops))


# --- linearizability: classic cases --------------------------------------------------


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    s = Script()
    s.op(1, "write", "a", 0, 10, value=1)
    stale = s.op(2, "read", None, 20, 30, value=("init", 0))
    result = s.check()
    assert result.ok is False and not result.timed_out
    failure = result.keys["k"]
    assert stale.id in failure.unplaced and failure.state == ("a", 1)


@pytest.mark.parametrize("seen", [("init", 0), ("a", 1)])
def test_read_concurrent_with_a_write_may_see_either(seen: tuple[str, int]) -> None:
    s = Script()
    s.op(1, "write", "a", 0, 30, value=1)
    s.op(2, "read", None, 10, 20, value=seen)
    assert s.check().ok is True


def test_unknown_write_later_observed_is_linearizable() -> None:
    s = Script()
    s.op(1, "write", "a", 0, 5, outcome="unknown", value="timeout")
    s.op(2, "read", None, 50, 60, value=("init", 0))
    s.op(2, "read", None, 70, 80, value=("a", 1))
    s.op(3, "write", "b", 90, 100, value=2)
    assert s.check().ok is True


def test_unknown_write_never_observed_is_linearizable() -> None:
    s = Script()
    s.op(1, "write", "a", 0, None)  # left open: counts as unknown
    s.op(2, "read", None, 50, 60, value=("init", 0))
    s.op(3, "write", "b", 70, 80, value=1)
    s.op(2, "read", None, 90, 100, value=("b", 1))
    assert s.check().ok is True


def test_unknown_write_cannot_take_effect_before_its_invocation() -> None:
    s = Script()
    s.op(2, "read", None, 0, 10, value=("a", 1))
    s.op(1, "write", "a", 20, 30, outcome="unknown", value="timeout")
    assert s.check().ok is False


def test_badversion_cas_contradicting_the_only_possible_version_is_not_linearizable() -> None:
    s = Script()
    s.op(1, "read", None, 0, 10, value=("init", 0))
    refused = s.op(2, "cas", (0, "x"), 20, 30, outcome="fail", value="BadVersion")
    result = s.check()
    assert result.ok is False and result.keys["k"].unplaced == (refused.id,)


def test_badversion_cas_concurrent_with_a_write_is_an_observation_that_fits() -> None:
    s = Script()
    s.op(1, "write", "a", 0, 30, value=1)
    s.op(2, "cas", (0, "x"), 10, 20, outcome="fail", value="BadVersion")
    s.op(3, "read", None, 40, 50, value=("a", 1))
    assert s.check().ok is True


def test_other_failures_did_not_happen_and_are_dropped() -> None:
    s = Script()
    s.op(1, "write", "a", 0, 10, outcome="fail", value="Unavailable")
    s.op(2, "read", None, 20, 30, value=("init", 0))
    assert s.check().ok is True


def test_cas_with_the_right_version_succeeds_and_bumps_it() -> None:
    s = Script()
    s.op(1, "cas", (0, "x"), 0, 10, value=1)
    s.op(1, "cas", (1, "y"), 20, 30, value=2)
    s.op(2, "cas", (1, "z"), 40, 50, outcome="fail", value="BadVersion")
    s.op(2, "read", None, 60, 70, value=("y", 2))
    assert s.check().ok is True
    s.op(3, "cas", (1, "w"), 80, 90, value=3)  # version 1 is long gone
    assert s.check().ok is False


# --- linearizability: generated histories ---------------------------------------------


def generate(
    seed: int,
    ops_count: int,
    keys: int = 1,
    processes: int = 5,
    unknown_share: float = 0.0,
    overlap_ns: int = 40,
) -> list[Op]:
    """A linearizable history: a sequential register per key, each op's effect at a
    point inside a random window of its process. Unknown ops take effect or not."""
    rng = random.Random(seed)
    state = {f"k{n}": ("init", 0) for n in range(keys)}
    free_at = [0] * processes
    ops: list[Op] = []
    point = 0
    while len(ops) < ops_count:
        point += rng.randint(1, 10)
        ready = [p for p in range(processes) if free_at[p] < point]
        if not ready:
            continue
        process = rng.choice(ready)
        key = rng.choice(sorted(state))
        value, version = state[key]
        invoke = rng.randint(max(free_at[process] + 1, point - overlap_ns), point)
        complete = point + rng.randint(0, overlap_ns)
        free_at[process] = complete
        f = rng.choice(["read", "write", "cas", "cas"])
        arg: Any = None
        if f == "write":
            arg = f"v{len(ops)}"
        elif f == "cas":
            arg = (version if rng.random() < 0.6 else rng.randint(0, version + 1), f"c{len(ops)}")
        unknown = rng.random() < unknown_share
        took_effect = not unknown or rng.random() < 0.5
        outcome: Outcome = "ok"
        result: Any = None
        error: str | None = None
        if f == "read":
            result = (value, version)
        elif f == "write":
            result = version + 1
            if took_effect:
                state[key] = (arg, version + 1)
        elif arg[0] == version:
            result = version + 1
            if took_effect:
                state[key] = (arg[1], version + 1)
        else:
            outcome, error = "fail", "BadVersion"
        if unknown:
            outcome, result, error = "unknown", None, "timeout"
        ops.append(Op(len(ops), process, f, key, arg, invoke, complete, outcome, result, error))
    return sorted(ops, key=lambda o: o.invoke_ns)


def stale_read(ops: list[Op], rng: random.Random) -> list[Op] | None:
    """Make a read return an older version than a write that finished before it began:
    not linearizable whatever else happened, as versions never go back."""
    reads = [op for op in ops if op.f == "read" and op.outcome == "ok" and op.value[1] > 0]
    rng.shuffle(reads)
    for read in reads:
        finished = [
            op.value
            for op in ops
            if op.key == read.key
            and op.f in ("write", "cas")
            and op.outcome == "ok"
            and op.complete_ns is not None
            and op.complete_ns < read.invoke_ns
        ]
        if finished and max(finished) >= 1:
            bad = replace(read, value=("stale", max(finished) - 1))
            return [bad if op.id == read.id else op for op in ops]
    return None


def seeds(count: int, base: int) -> Iterator[int]:
    return iter(range(base, base + count))


def test_generated_linearizable_histories_pass() -> None:
    for seed in seeds(60, 1000):
        ops = generate(seed, 150, keys=2, processes=4, unknown_share=0.08)
        result = check_linearizable(ops, REGISTER, time_budget_s=20)
        assert result.ok is True, f"seed {seed}: {result.failures}"


@pytest.mark.parametrize("model", [REGISTER, SEARCH_ONLY], ids=["proof", "search"])
def test_generated_histories_with_a_stale_read_fail(model: VersionedRegister) -> None:
    checked = 0
    for seed in seeds(60, 2000):
        rng = random.Random(seed)
        ops = stale_read(generate(seed, 120, keys=1, processes=4, unknown_share=0.05), rng)
        if ops is None:
            continue
        checked += 1
        result = check_linearizable(ops, model, time_budget_s=20)
        assert result.ok is False, f"seed {seed}: a stale read passed"
        assert result.failures[0].unplaced, f"seed {seed}: no op named"
    assert checked >= 50


def test_a_stale_read_deep_in_a_long_concurrent_history_is_proved_quickly() -> None:
    # Refuting this by search alone means refuting every order of thousands of
    # overlapping ops; the register's version proof names the two ops at once.
    ops = generate(42, 10_000, keys=1, processes=10, unknown_share=0.2, overlap_ns=400)
    bad = stale_read(ops, random.Random(1))
    assert bad is not None
    started = time.monotonic()
    result = check_linearizable(bad, REGISTER, time_budget_s=60)
    elapsed_s = time.monotonic() - started
    assert result.ok is False and not result.timed_out
    [anomaly] = result.anomalies()
    stale = next(op for op in bad if op.f == "read" and op.value and op.value[0] == "stale")
    assert stale.id in anomaly.op_ids and "version" in anomaly.message
    assert anomaly.window_ns is not None
    assert elapsed_s < 15, f"took {elapsed_s:.1f} s"


def test_the_version_proof_finds_a_version_made_twice_and_a_wrong_value() -> None:
    s = Script()
    a = s.op(1, "write", "a", 0, 10, value=1)
    b = s.op(2, "cas", (0, "b"), 0, 10, value=1)
    result = s.check()
    assert result.ok is False and "both made version 1" in result.keys["k"].note
    assert set(result.anomalies()[0].op_ids) >= {a.id, b.id}
    s = Script()
    s.op(1, "write", "a", 0, 10, value=1)
    s.op(2, "read", None, 0, 20, value=("z", 1))
    assert "saw 'z' at version 1, not 'a'" in s.check().keys["k"].note
    s = Script()
    s.op(2, "read", None, 0, 20, value=("z", 0))
    assert "not 'init'" in s.check().keys["k"].note


def test_a_violation_is_reported_with_its_key_only() -> None:
    ops = generate(7, 600, keys=5, processes=6, unknown_share=0.05)
    bad = stale_read([op for op in ops if op.key == "k3"], random.Random(7))
    assert bad is not None
    ops = [op for op in ops if op.key != "k3"] + bad
    result = check_linearizable(ops, REGISTER)
    assert result.ok is False
    assert [r.key for r in result.failures] == ["k3"]
    assert all(r.ok for k, r in result.keys.items() if k != "k3")
    failure = result.failures[0]
    assert failure.unplaced and failure.window_ns is not None
    by_id = {op.id: op for op in ops}
    assert all(by_id[i].key == "k3" for i in failure.unplaced + failure.prefix)
    [anomaly] = result.anomalies()
    assert anomaly.kind == "not_linearizable" and "'k3'" in anomaly.message


def test_ten_thousand_ops_over_five_keys_check_in_seconds() -> None:
    ops = generate(42, 10_000, keys=5, processes=10, unknown_share=0.01)
    started = time.monotonic()
    result = check_linearizable(ops, REGISTER, time_budget_s=60)
    elapsed_s = time.monotonic() - started
    assert result.ok is True, result.failures
    # "A few seconds" on a loaded 2-core machine; typically well under that.
    assert elapsed_s < 10, f"took {elapsed_s:.1f} s"


def fake_clock(step_s: float) -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def hard_to_refute(key: str, script: Script | None = None) -> Script:
    s = script or Script()
    for p in range(16):
        s.op(p, "cas", (99, "x"), 0, 100, outcome="fail", value="BadVersion", key=key)
    s.op(99, "read", None, 10, 20, value=("nobody", 0), key=key)
    return s


def test_an_exhausted_budget_gives_unknown_never_ok() -> None:
    # Sixteen refused cas ops fit in any order and a read of a value nobody wrote
    # fits nowhere: the search tries every subset of the cas ops before it says no
    # (the register's quick proof would see it at once, so the search runs alone).
    ops = hard_to_refute("k").history.ops()
    result = check_linearizable(ops, SEARCH_ONLY, time_budget_s=1.0, clock_s=fake_clock(0.1))
    assert result.ok is None and result.timed_out
    assert result.keys["k"].timed_out and result.keys["k"].ok is None
    assert result.anomalies()[0].kind == "linearizability_unknown"


def test_a_definite_violation_outweighs_a_timeout_on_another_key() -> None:
    s = Script()
    s.op(1, "write", "a", 0, 10, value=1, key="a")
    s.op(2, "read", None, 20, 30, value=("init", 0), key="a")
    ops = hard_to_refute("b", s).history.ops()
    result = check_linearizable(ops, SEARCH_ONLY, time_budget_s=1.0, clock_s=fake_clock(0.1))
    assert result.ok is False and result.timed_out
    assert result.keys["a"].ok is False and result.keys["b"].ok is None


# --- sequential creates -----------------------------------------------------------------


def creates(names: list[str]) -> list[Op]:
    return [
        Op(n, n % 3, "create", "/q", None, n * 10, n * 10 + 5, "ok", f"/q/{name}")
        for n, name in enumerate(names)
    ]


def seq(n: int) -> str:
    return f"item-{n:010d}"


def test_sequential_creates_all_present_and_gap_free_pass() -> None:
    acked = creates([seq(0), seq(1), seq(3)])
    assert check_sequential_creates(acked, 1, [seq(0), seq(1), seq(2), seq(3)]) == []


def test_sequential_creates_lost_duplicate_gap_and_unexplained_are_found() -> None:
    acked = creates([seq(0), seq(1), seq(1), seq(2)])
    final = [seq(0), seq(1), seq(2), seq(5), seq(6)]
    found = check_sequential_creates(acked, 1, final)
    kinds = sorted(a.kind for a in found)
    assert kinds == ["duplicate_sequence", "sequence_gap", "unexplained_child"]
    lost = check_sequential_creates(creates([seq(0), seq(1)]), 0, [seq(0)])
    assert [a.kind for a in lost] == ["lost_create"] and lost[0].op_ids == (1,)
    assert check_sequential_creates([], 2, [seq(0), seq(2)], gap_free=False) == []


# --- fencing ----------------------------------------------------------------------------


def test_fencing_with_increasing_tokens_and_one_holder_at_a_time_passes() -> None:
    log = [Access(1, 1, "a"), Access(2, 1, "a"), Access(3, 2, "b"), Access(4, 3, "a")]
    assert check_fencing(log) == []


def test_fencing_finds_a_lower_token_a_shared_token_and_interleaved_holders() -> None:
    decreased = check_fencing([Access(1, 2, "a", 10), Access(2, 1, "b", 11)])
    assert [a.kind for a in decreased] == ["token_decreased"]
    assert decreased[0].op_ids == (10, 11) and decreased[0].window_ns == (1, 2)
    shared = check_fencing([Access(1, 1, "a"), Access(2, 1, "b")])
    assert [a.kind for a in shared] == ["shared_token"]
    interleaved = check_fencing([Access(1, 1, "a"), Access(2, 1, "b"), Access(3, 1, "a")])
    assert "interleaved_holders" in {a.kind for a in interleaved}


# --- watch streams -------------------------------------------------------------------


COMMITTED = [
    WatchEvent(1, "created", "/w/a"),
    WatchEvent(2, "created", "/other"),
    WatchEvent(3, "changed", "/w/a"),
    WatchEvent(4, "deleted", "/w/a"),
    WatchEvent(4, "deleted", "/w/b"),  # one multi, one zxid
    WatchEvent(5, "created", "/wx"),  # not under /w
    WatchEvent(6, "created", "/w/c"),
]


def test_watch_stream_equal_to_the_committed_events_passes() -> None:
    received = [e for e in COMMITTED if e.path.startswith("/w/") and e.zxid >= 3]
    assert check_watch_stream(COMMITTED, received, "/w") == []
    assert check_watch_stream(COMMITTED, [(1, "created", "/w/a")], "/w") == []  # type: ignore[list-item]


def test_watch_stream_finds_missing_invented_duplicate_and_backward_events() -> None:
    missing = check_watch_stream(COMMITTED, [COMMITTED[0], COMMITTED[3], COMMITTED[6]], "/w")
    assert [a.kind for a in missing] == ["missing_events"]
    assert "zxid=3, type='changed'" in missing[0].message and "/w/b" in missing[0].message
    invented = [COMMITTED[0], WatchEvent(1, "changed", "/w/a")]
    assert [a.kind for a in check_watch_stream(COMMITTED, invented, "/w")] == ["invented_events"]
    twice = [COMMITTED[0], COMMITTED[2], COMMITTED[2]]
    assert [a.kind for a in check_watch_stream(COMMITTED, twice, "/w")] == ["duplicate_event"]
    back = [COMMITTED[2], COMMITTED[0]]
    kinds = [a.kind for a in check_watch_stream(COMMITTED, back, "/w")]
    assert kinds == ["zxid_went_back"]


def test_equal_events_of_one_txn_each_arrive_once() -> None:
    # A session's close deleting two ephemerals of /w: two equal children_changed.
    close = [WatchEvent(9, "deleted", "/w/e1"), WatchEvent(9, "deleted", "/w/e2")]
    close += [WatchEvent(9, "children_changed", "/w")] * 2
    assert check_watch_stream(close, close, "/w") == []
    kinds = [a.kind for a in check_watch_stream(close, [*close, close[-1]], "/w")]
    assert kinds == ["duplicate_event"]
    assert [a.kind for a in check_watch_stream(close, close[:-1], "/w")] == ["missing_events"]


# --- monotonic zxids -----------------------------------------------------------------


def test_zxids_never_going_back_pass_and_a_step_back_is_found() -> None:
    good: dict[Process, list[Observation]] = {
        "c1": [Observation(1, 5), Observation(2, 5), Observation(3, 9)],
        "c2": [],
    }
    assert check_monotonic_zxids(good) == []
    bad: dict[Process, list[Observation]] = {
        "c1": [Observation(1, 5, 0), Observation(2, 9, 1), Observation(3, 7, 2)]
    }
    [anomaly] = check_monotonic_zxids(bad)
    assert anomaly.kind == "zxid_went_back" and anomaly.op_ids == (1, 2)
    assert anomaly.window_ns == (2, 3)


# --- ephemerals --------------------------------------------------------------------------


def test_ephemerals_removed_by_delete_or_session_end_pass() -> None:
    events = [
        EphemeralEvent(1, "create", "/e/a", "s1"),
        EphemeralEvent(2, "create", "/e/b", "s2"),
        EphemeralEvent(3, "create", "/e/c", "s2"),
        EphemeralEvent(4, "delete", "/e/a"),
        EphemeralEvent(4, "removed", "/e/a"),
        EphemeralEvent(5, "maybe_delete", "/e/b"),
        EphemeralEvent(7, "removed", "/e/b"),
        EphemeralEvent(8, "expire", session="s2"),
        EphemeralEvent(8, "removed", "/e/c"),
    ]
    assert check_ephemerals(events) == []


def test_an_ephemeral_removed_before_its_session_ended_is_found() -> None:
    events = [
        EphemeralEvent(1, "create", "/e/a", "s1", op_id=3),
        EphemeralEvent(4, "removed", "/e/a", op_id=9),
        EphemeralEvent(6, "close", session="s1"),
    ]
    [anomaly] = check_ephemerals(events)
    assert anomaly.kind == "ephemeral_removed_early" and anomaly.op_ids == (3, 9)
    # A delete at another zxid does not explain it either.
    late = [*events, EphemeralEvent(5, "delete", "/e/a")]
    assert [a.kind for a in check_ephemerals(late)] == ["ephemeral_removed_early"]


# --- session leases ---------------------------------------------------------------------

MS = 1_000_000


def test_a_session_ending_a_ttl_after_its_last_heartbeat_passes() -> None:
    # Gone 5 s (the ttl) after the last acknowledged heartbeat was sent: allowed.
    assert check_session_leases([SessionLease("s1", 5000, 2000 * MS, 7001 * MS)], 500) == []
    assert check_session_leases([SessionLease("s1", 5000, 2000 * MS, 6600 * MS)], 500) == []
    assert check_session_leases([SessionLease("s2", 5000, 2000 * MS, None)], 500) == []


def test_a_session_gone_while_its_heartbeats_were_acknowledged_is_found() -> None:
    [anomaly] = check_session_leases([SessionLease("s1", 5000, 2000 * MS, 2600 * MS, 7)], 500)
    assert anomaly.kind == "session_expired_early" and anomaly.op_ids == (7,)
    assert anomaly.window_ns == (2000 * MS, 2600 * MS)
    assert "4400 ms before" in anomaly.message


# --- timeline ---------------------------------------------------------------------------


def test_a_failure_writes_history_anomalies_and_a_png(tmp_path: Path) -> None:
    s = Script()
    s.op(1, "write", "a", 0, 10_000_000, value=1)
    s.op(2, "read", None, 20_000_000, 30_000_000, value=("init", 0))
    s.op(3, "write", "b", 5_000_000, None)
    s.op(4, "cas", (0, "x"), 1_000_000, 8_000_000, outcome="fail", value="BadVersion")
    result = s.check()
    assert result.ok is False
    paths = write_failure(tmp_path / "run", s.history, result.anomalies())
    names = [p.name for p in paths]
    assert names[:2] == ["history.jsonl", "anomalies.json"] and len(paths) == 3
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert History.load(paths[0]).ops() == s.history.ops()
    direct = draw_timeline(s.history.ops(), (0, 40_000_000), tmp_path / "t.png", [1])
    assert direct.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and direct.stat().st_size > 1000
