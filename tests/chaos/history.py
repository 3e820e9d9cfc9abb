"""A recorded history of concurrent client operations, for the fault suite's checkers.

A client calls ``op = h.invoke(process, f, key, arg)`` just before it sends a request
and exactly one of ``h.ok(op, value)``, ``h.fail(op, error)`` or ``h.unknown(op, reason)``
once it knows how the request ended:

- ``ok``: the operation took effect and returned ``value``;
- ``fail``: it definitely did not take effect (BadVersion, NoNode, Unavailable before
  sending); checkers may still read a failure as an observation (a cas refused with
  BadVersion saw another version);
- ``unknown``: it may or may not have taken effect, at any time after its invocation
  (a timeout, OutcomeUnknown, a connection dropped after sending).

An operation still open when the history is read counts as unknown. Times come from an
injected clock (``time.monotonic_ns`` by default), read under the history's lock, so
the order of ids is the order of the clock readings across all threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

Outcome = Literal["ok", "fail", "unknown"]
Process = str | int

OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "unknown")
# The reason given to an operation nobody completed before the history was read.
OPEN_REASON = "open"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of one process.

    ``complete_ns`` is when the client learned the outcome (for ``unknown``: when it
    stopped waiting; the operation may still take effect later), None if never.
    ``value`` is the result of an ``ok`` operation; ``error`` the code of a ``fail`` or
    the reason of an ``unknown``.
    """

    id: int
    process: Process
    f: str
    key: str
    arg: Any
    invoke_ns: int
    complete_ns: int | None
    outcome: Outcome
    value: Any = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "arg": self.arg,
            "invoke_ns": self.invoke_ns,
            "complete_ns": self.complete_ns,
            "outcome": self.outcome,
            "value": self.value,
            "error": self.error,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> Op:
        outcome = obj["outcome"]
        if outcome not in OUTCOMES:
            raise ValueError(f"op {obj.get('id')}: unknown outcome {outcome!r}")
        complete_ns = obj["complete_ns"]
        return Op(
            id=int(obj["id"]),
            process=obj["process"],
            f=str(obj["f"]),
            key=str(obj["key"]),
            arg=freeze(obj["arg"]),
            invoke_ns=int(obj["invoke_ns"]),
            complete_ns=None if complete_ns is None else int(complete_ns),
            outcome=outcome,
            value=freeze(obj["value"]),
            error=obj["error"],
        )


def freeze(value: Any) -> Any:
    """JSON lists back to tuples, so a loaded op compares (and hashes) like the recorded one."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


class History:
    """Thread-safe recorder of operations; see the module docstring."""

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        # Indexed by op id: the open record until completion, then the completed one.
        self._ops: list[Op] = []
        self._open: set[int] = set()

    def invoke(self, process: Process, f: str, key: str, arg: Any = None) -> Op:
        with self._lock:
            op = Op(
                id=len(self._ops),
                process=process,
                f=f,
                key=key,
                arg=arg,
                invoke_ns=self._clock_ns(),
                complete_ns=None,
                outcome="unknown",
                error=OPEN_REASON,
            )
            self._ops.append(op)
            self._open.add(op.id)
            return op

    def ok(self, op: Op, value: Any = None) -> Op:
        return self._complete(op, "ok", value, None)

    def fail(self, op: Op, error_code: str) -> Op:
        return self._complete(op, "fail", None, error_code)

    def unknown(self, op: Op, reason: str) -> Op:
        return self._complete(op, "unknown", None, reason)

    def _complete(self, op: Op, outcome: Outcome, value: Any, error: str | None) -> Op:
        with self._lock:
            if op.id not in self._open:
                # A second completion would silently rewrite what a checker reads.
                raise ValueError(f"op {op.id} ({op.f} {op.key}) is not open")
            self._open.remove(op.id)
            done = replace(
                self._ops[op.id],
                complete_ns=self._clock_ns(),
                outcome=outcome,
                value=value,
                error=error,
            )
            self._ops[op.id] = done
            return done

    def ops(self) -> list[Op]:
        """Every operation in invocation order; open ones as unknown with no completion."""
        with self._lock:
            return list(self._ops)

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    def dumps(self) -> bytes:
        return dumps_ops(self.ops())

    def dump(self, path: Path | str) -> Path:
        target = Path(path)
        target.write_bytes(self.dumps())
        return target

    @classmethod
    def from_ops(cls, ops: Iterable[Op]) -> History:
        """A closed history holding ``ops`` (ids must be 0..n-1), e.g. one loaded back."""
        history = cls()
        history._ops = sorted(ops, key=lambda o: o.id)
        if [op.id for op in history._ops] != list(range(len(history._ops))):
            raise ValueError("op ids must be 0..n-1")
        return history

    @classmethod
    def load(cls, path: Path | str) -> History:
        return cls.from_ops(loads_ops(Path(path).read_bytes()))


def dumps_ops(ops: Iterable[Op]) -> bytes:
    """JSON Lines, one op per line."""
    return b"".join(orjson.dumps(op.to_json()) + b"\n" for op in ops)


def loads_ops(data: bytes) -> list[Op]:
    return [Op.from_json(orjson.loads(line)) for line in data.splitlines() if line.strip()]


def by_key(ops: Sequence[Op]) -> dict[str, list[Op]]:
    """Ops grouped by key, each group in invocation order."""
    groups: dict[str, list[Op]] = {}
    for op in sorted(ops, key=lambda o: (o.invoke_ns, o.id)):
        groups.setdefault(op.key, []).append(op)
    return groups
