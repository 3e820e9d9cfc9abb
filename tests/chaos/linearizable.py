"""A linearizability checker for recorded histories (tests/chaos/history.py).

The search is Wing & Gong's: repeatedly pick an operation that may take effect next
(one whose invocation precedes every pending return), apply it to a sequential model,
and backtrack when no candidate fits. Lowe's memoization keeps the search finite in
practice: a (set of linearized ops, model state) pair already explored is never
explored again. Keys are independent registers, so each key's sub-history is checked
on its own (P-compositionality): a history is linearizable iff every key's is.

Outcomes:

- ``ok`` ops must take effect between their invocation and their completion, and
  their output must match the model's;
- ``fail`` ops did not happen and are dropped, except those the model calls
  observations (a cas refused with BadVersion saw a version other than the one it
  expected: it must take effect, as a read, within its window);
- ``unknown`` ops may take effect at any time after their invocation, or never; their
  output is unconstrained (their return time is infinite). Unknown read-only ops have
  no effect and are dropped.

The search has a time budget; when it runs out the result is unknown (``ok`` is None),
never a false "linearizable".
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from tests.chaos.checkers import Anomaly, ops_window
from tests.chaos.history import Op, by_key, freeze

S = TypeVar("S")

# How many search steps run between two readings of the clock.
CLOCK_CHECK_STEPS = 512
# Search time for the longest linearization once the model has proved a violation.
PROOF_SEARCH_S = 2.0
# Explored (set, state) pairs kept per key before the search gives up as unknown.
CACHE_ENTRIES_MAX = 3_000_000


class Model(Protocol[S]):
    """A sequential specification. States must be hashable (they key the memo)."""

    def init(self) -> S: ...

    def step(self, state: S, op: Op) -> S | None:
        """The state after ``op`` (whose outcome is ok, fail or unknown), or None when
        its output is impossible from ``state``. For an unknown op, the effect it would
        have had, its output unconstrained."""
        ...

    def is_observation(self, op: Op) -> bool:
        """Whether a failed op still saw the state, and so must be linearized."""
        ...

    def is_read_only(self, op: Op) -> bool:
        """Whether an op never changes the state (an unknown one is then dropped)."""
        ...

    def abstract(self, ops: Sequence[Op]) -> list[Op]:
        """The ops of one key as the search sees them: args hashable, and unknown ops
        that no definite op could tell apart made equal in (f, arg), so the search tries
        one of them where it would try each. ``step`` may read only f and arg of an
        unknown op."""
        ...

    def refute(self, ops: Sequence[Op]) -> tuple[tuple[int, ...], str] | None:
        """A quick, sound proof that ``ops`` (one key, as abstracted) are not
        linearizable: the ids of the ops that contradict each other and why; or None."""
        ...

    def impossible(self, state: S, pending: Sequence[Op]) -> bool:
        """Sound pruning: True only if some op in ``pending`` (definite ops not yet
        linearized) can never be linearized from ``state`` or any later state."""
        ...


RegisterState = tuple[Any, int]


@dataclass(frozen=True, slots=True)
class Unseen:
    """The value of an unknown write that no read returned."""

    def __repr__(self) -> str:
        return "<unseen>"


UNSEEN = Unseen()


@dataclass(frozen=True, slots=True)
class VersionedRegister:
    """One znode: state (value, version), version 0 holding ``initial``.

    ops: ``read`` -> ok value (value, version); ``write`` arg value (unconditional
    set) -> ok value the new version; ``cas`` arg (expected_version, value) -> ok value
    the new version, or fail "BadVersion" (state unchanged, version != expected). An
    ok write or cas whose value is None has its version unchecked.
    """

    initial: Any = None

    def init(self) -> RegisterState:
        return (freeze(self.initial), 0)

    def step(self, state: RegisterState, op: Op) -> RegisterState | None:
        value, version = state
        known = op.outcome == "ok"
        if op.f == "read":
            if known and freeze(op.value) != (value, version):
                return None
            return state
        if op.f == "write":
            if known and op.value is not None and op.value != version + 1:
                return None
            return (freeze(op.arg), version + 1)
        if op.f == "cas":
            expected, new_value = op.arg
            if op.outcome == "fail":
                # BadVersion: the znode was at another version when the cas was applied.
                return state if version != expected else None
            if version != expected:
                # An unknown cas that would be refused here changes nothing.
                return None if known else state
            if known and op.value is not None and op.value != version + 1:
                return None
            return (freeze(new_value), version + 1)
        raise ValueError(f"VersionedRegister: op {op.id} has unknown f {op.f!r}")

    def is_observation(self, op: Op) -> bool:
        return op.f == "cas" and op.error == "BadVersion"

    def abstract(self, ops: Sequence[Op]) -> list[Op]:
        # Only an ok read sees a value; a value it never returns, written by an unknown
        # op, acts as a plain version bump, whichever op wrote it.
        seen = {freeze(op.value)[0] for op in ops if op.f == "read" and op.outcome == "ok"}
        seen.add(freeze(self.initial))
        result = []
        for op in ops:
            arg = freeze(op.arg)
            if op.outcome == "unknown":
                if op.f == "write" and arg not in seen:
                    arg = UNSEEN
                elif op.f == "cas" and arg[1] not in seen:
                    arg = (arg[0], UNSEEN)
            result.append(op if arg == op.arg else replace(op, arg=arg))
        return result

    def is_read_only(self, op: Op) -> bool:
        return op.f == "read"

    def refute(self, ops: Sequence[Op]) -> tuple[tuple[int, ...], str] | None:
        # Each ok op pins the version before and after it; versions only grow, each is
        # made once, and a read sees what the op that made its version wrote.
        pinned: list[tuple[int, int, Op]] = []
        made: dict[int, Op] = {}
        for op in ops:
            if op.outcome != "ok":
                continue
            if op.f == "read":
                version = freeze(op.value)[1]
                pinned.append((version, version, op))
                continue
            if op.f == "write" and op.value is not None:
                after = op.value
            elif op.f == "cas":
                after = op.arg[0] + 1 if op.value is None else op.value
            else:
                continue
            pinned.append((after - 1, after, op))
            other = made.setdefault(after, op)
            if other is not op:
                return (other.id, op.id), f"ops {other.id} and {op.id} both made version {after}"
        for before, _, op in pinned:
            if op.f != "read":
                continue
            value = freeze(op.value)[0]
            maker = made.get(before)
            written = freeze(self.initial) if before == 0 else None
            if maker is not None:
                written = freeze(maker.arg if maker.f == "write" else maker.arg[1])
            if (before == 0 or maker is not None) and value != written:
                ids = (op.id,) if maker is None else (maker.id, op.id)
                return ids, f"read {op.id} saw {value!r} at version {before}, not {written!r}"
        # Real time: an op that completed before another began took effect first.
        by_complete = sorted(pinned, key=lambda p: p[2].complete_ns or 0)
        latest: tuple[int, int, Op] | None = None
        done = 0
        for pin in sorted(pinned, key=lambda p: p[2].invoke_ns):
            before, _, op = pin
            while (
                done < len(by_complete) and (by_complete[done][2].complete_ns or 0) < op.invoke_ns
            ):
                if latest is None or by_complete[done][1] > latest[1]:
                    latest = by_complete[done]
                done += 1
            if latest is not None and latest[1] > before:
                first = latest[2]
                return (first.id, op.id), (
                    f"op {op.id} needs version {before} but op {first.id}, done before it "
                    f"began, had reached version {latest[1]}"
                )
        return None

    def impossible(self, state: RegisterState, pending: Sequence[Op]) -> bool:
        # Versions never decrease: an ok op that needs an older version is lost.
        version = state[1]
        for op in pending:
            if op.outcome != "ok":
                continue
            if op.f == "read":
                needed = freeze(op.value)[1]
            elif op.f == "cas":
                needed = op.arg[0]
            elif op.f == "write" and op.value is not None:
                needed = op.value - 1
            else:
                continue
            if needed < version:
                return True
        return False


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key. On failure, ``prefix`` is the longest order of op ids
    found that linearizes (most definite ops placed), ``state`` the model state after
    it, and ``unplaced`` the definite ops that could take effect next but fit nowhere."""

    key: str
    ok: bool | None
    timed_out: bool
    op_count: int
    steps: int
    prefix: tuple[int, ...] = ()
    state: Any = None
    unplaced: tuple[int, ...] = ()
    window_ns: tuple[int, int] | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """``ok`` is True (every key linearizable), False (some key is not) or None (no
    violation found, but some key's search ran out of budget)."""

    ok: bool | None
    timed_out: bool
    keys: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def failures(self) -> list[KeyResult]:
        return [r for r in self.keys.values() if r.ok is False]

    def anomalies(self) -> list[Anomaly]:
        found = []
        for r in self.keys.values():
            if r.ok is False:
                if r.prefix or not r.note:
                    message = (
                        f"key {r.key!r}: the longest linearization found has "
                        f"{len(r.prefix)} ops (state {r.state!r}); none extends it "
                        f"with the ops that could come next, {list(r.unplaced)}"
                        + (f"; {r.note}" if r.note else "")
                    )
                else:
                    message = f"key {r.key!r}: {r.note}"
                found.append(
                    Anomaly(
                        kind="not_linearizable",
                        message=message,
                        op_ids=r.unplaced + r.prefix[-3:],
                        window_ns=r.window_ns,
                    )
                )
            elif r.timed_out:
                found.append(
                    Anomaly(
                        kind="linearizability_unknown",
                        message=f"key {r.key!r}: {r.note}",
                        op_ids=(),
                        window_ns=None,
                    )
                )
        return found


def check_linearizable(
    ops: Sequence[Op],
    model: Model[Any],
    *,
    time_budget_s: float = 30.0,
    clock_s: Callable[[], float] = time.monotonic,
    cache_entries_max: int = CACHE_ENTRIES_MAX,
) -> LinearizabilityResult:
    """Check every key's sub-history against ``model``, within one shared time budget."""
    deadline_s = clock_s() + time_budget_s
    results: dict[str, KeyResult] = {}
    for key, key_ops in sorted(by_key(ops).items()):
        results[key] = _check_key(key, key_ops, model, deadline_s, clock_s, cache_entries_max)
    if any(r.ok is False for r in results.values()):
        verdict: bool | None = False
    elif all(r.ok for r in results.values()):
        verdict = True
    else:
        verdict = None
    timed_out = any(r.timed_out for r in results.values())
    return LinearizabilityResult(ok=verdict, timed_out=timed_out, keys=results)


def _check_key(
    key: str,
    key_ops: Sequence[Op],
    model: Model[Any],
    deadline_s: float,
    clock_s: Callable[[], float],
    cache_entries_max: int,
) -> KeyResult:
    ops: list[Op] = []
    definite: list[bool] = []
    for op in model.abstract(key_ops):
        if op.outcome == "ok" or (op.outcome == "fail" and model.is_observation(op)):
            if op.complete_ns is None:
                raise ValueError(f"op {op.id}: a definite outcome needs a completion time")
            ops.append(op)
            definite.append(True)
        elif op.outcome == "unknown" and not model.is_read_only(op):
            ops.append(op)
            definite.append(False)
    n = len(ops)
    effect = [(op.f, op.arg) for op in ops]
    proof = model.refute(ops)
    if proof is not None:
        # The verdict is known; the search only looks for the longest linearization
        # to show, within a short budget.
        deadline_s = min(deadline_s, clock_s() + PROOF_SEARCH_S)

    # Entries: a call per op and a return per definite op (an unknown op returns at
    # infinity, so never blocks). At equal times calls sort first: such ops overlap.
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke_ns, 0, i))
        if definite[i]:
            assert op.complete_ns is not None
            if op.complete_ns < op.invoke_ns:
                raise ValueError(f"op {op.id} completes before it is invoked")
            events.append((op.complete_ns, 1, i))
    events.sort()
    # A doubly linked list of entries (0 is the head, len+1 the tail), so lifting an
    # op and putting it back on backtrack are O(1) (dancing links).
    size = len(events)
    tail = size + 1
    nxt = list(range(1, size + 2)) + [tail]
    prv = [0] + list(range(size + 1))
    entry_op = [-1] + [e[2] for e in events] + [-1]
    entry_is_call = [False] + [e[1] == 0 for e in events] + [False]
    call_entry = [0] * n
    return_entry = [0] * n
    for pos, (_, kind, i) in enumerate(events, start=1):
        if kind == 0:
            call_entry[i] = pos
        else:
            return_entry[i] = pos

    def lift(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]

    def unlift(e: int) -> None:
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    def candidates(state: Any) -> tuple[list[int], list[int]]:
        # Ops that may take effect next: calls before the first pending return.
        sure: list[int] = []
        maybe: list[int] = []
        effects: set[tuple[str, Any]] = set()
        e = nxt[0]
        while e != tail and entry_is_call[e]:
            i = entry_op[e]
            if definite[i]:
                sure.append(i)
            elif effect[i] not in effects:
                # Interchangeable with an unknown op already listed: trying it adds nothing.
                effects.add(effect[i])
                maybe.append(i)
            e = nxt[e]
        if model.impossible(state, [ops[i] for i in sure]):
            return sure, []
        return sure, sure + maybe

    total_definite = sum(definite)
    remaining = total_definite
    state = model.init()
    # The memo key: definite ops linearized (a bitmask), the state, and the multiset
    # of unknown ops placed, by effect. Unknown ops never block (no return entry), so
    # the definite set alone fixes which unknown ops are invoked by now, and two of
    # them with the same (f, arg) are interchangeable from then on.
    linearized = 0
    placed_unknown: Counter[tuple[str, Any]] = Counter()
    cache: set[tuple[int, Any, frozenset[tuple[tuple[str, Any], int]]]] = set()
    # Frames: (op lifted, state before it, that level's candidates, next index).
    stack: list[tuple[int, Any, list[int], int]] = []
    path: list[int] = []
    sure, cands = candidates(state)
    index = 0
    best_placed = 0
    best: tuple[list[int], Any, list[int]] = ([], state, sure)
    steps = 0

    def result(ok: bool | None, note: str = "") -> KeyResult:
        if proof is not None:
            proof_ids, proof_note = proof
            # A proof the search then contradicts is a bug in the model's refute().
            assert ok is not True, f"key {key!r}: refuted ({proof_note}) yet linearized"
            if ok is None:
                proof_ops = [op for op in ops if op.id in proof_ids]
                return KeyResult(
                    key,
                    False,
                    False,
                    len(key_ops),
                    steps,
                    unplaced=proof_ids,
                    window_ns=ops_window(proof_ops),
                    note=proof_note,
                )
            note = proof_note
        if ok is not False:
            return KeyResult(key, ok, ok is None, len(key_ops), steps, note=note)
        best_path, best_state, best_sure = best
        unplaced = tuple(ops[i].id for i in best_sure)
        shown = [ops[i] for i in best_sure] + [ops[i] for i in best_path[-3:]]
        start_ns = min(op.invoke_ns for op in shown)
        end_ns = max(op.complete_ns or op.invoke_ns for op in shown)
        return KeyResult(
            key,
            False,
            False,
            len(key_ops),
            steps,
            prefix=tuple(ops[i].id for i in best_path),
            state=best_state,
            unplaced=unplaced,
            window_ns=(start_ns, end_ns),
            note=note,
        )

    while True:
        if remaining == 0:
            return result(True)
        steps += 1
        if steps % CLOCK_CHECK_STEPS == 0 and clock_s() > deadline_s:
            return result(None, f"time budget spent after {steps} steps")
        if len(cache) > cache_entries_max:
            return result(None, f"search memo passed {cache_entries_max} entries")
        placed = False
        while index < len(cands):
            i = cands[index]
            index += 1
            after = model.step(state, ops[i])
            if after is None:
                continue
            if definite[i]:
                memo = (linearized | (1 << i), after, frozenset(placed_unknown.items()))
            elif after == state:
                # An unknown op with no effect here: leaving it pending covers this.
                continue
            else:
                counts = dict(placed_unknown)
                counts[effect[i]] = counts.get(effect[i], 0) + 1
                memo = (linearized, after, frozenset(counts.items()))
            if memo in cache:
                continue
            cache.add(memo)
            stack.append((i, state, cands, index))
            path.append(i)
            lift(call_entry[i])
            if definite[i]:
                lift(return_entry[i])
                remaining -= 1
                linearized |= 1 << i
            else:
                placed_unknown[effect[i]] += 1
            state = after
            sure, cands = candidates(state)
            index = 0
            if total_definite - remaining > best_placed:
                best_placed = total_definite - remaining
                best = (list(path), state, sure)
            placed = True
            break
        if placed:
            continue
        if not stack:
            return result(False)
        i, state, cands, index = stack.pop()
        path.pop()
        if definite[i]:
            unlift(return_entry[i])
            remaining += 1
            linearized &= ~(1 << i)
        else:
            placed_unknown[effect[i]] -= 1
            if not placed_unknown[effect[i]]:
                del placed_unknown[effect[i]]
        unlift(call_entry[i])
