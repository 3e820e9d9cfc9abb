"""A deterministic asyncio event loop on virtual time.

``SimLoop`` is asyncio's own ``BaseEventLoop`` with two things replaced: its
clock (``time()``) reads a virtual counter, and its selector, instead of
waiting for I/O, moves that counter to the next timer. So a run never sleeps,
``asyncio.sleep``, ``wait_for`` and ``call_later`` all follow the virtual
clock, and with no threads and no real I/O the order of callbacks depends
only on what the program does: the same program and seed give the same run.

The loop refuses to wait forever (nothing ready, no timer: every task is
stuck) and to run past ``deadline_s`` of virtual time, so a livelocked run
ends with an error instead of hanging.

Which simulated node a task belongs to is kept in the ``OWNER`` context
variable (tasks inherit the context they were created in); the loop indexes
live tasks by owner, so a crash can cancel every task of one node
incarnation and nothing else.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

# The node incarnation a task works for ("" for the harness and the clients).
_OWNED_TASKS_PRUNE_AT = 256  # finished tasks are dropped from an owner's list past this

OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("sim_owner", default="")


class Stuck(RuntimeError):
    """No callback is ready and no timer is set, or virtual time ran out."""


class _VirtualSelector:
    """What BaseEventLoop polls for I/O: there is none, so a poll with a
    timeout is the moment virtual time jumps to the next timer."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Stuck("no callback is ready and no timer is set: every task waits forever")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    def __init__(self, deadline_s: float) -> None:
        super().__init__()
        self._now_s = 0.0
        self._deadline_s = deadline_s
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        # Insertion-ordered (a crash cancels in creation order: deterministic).
        self._by_owner: dict[str, list[asyncio.Task[Any]]] = {}
        self.set_task_factory(self._make_task)

    def time(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        self._now_s += seconds
        if self._now_s > self._deadline_s:
            raise Stuck(f"virtual time passed {self._deadline_s:.1f} s")

    def monotonic_ms(self) -> int:
        return int(self._now_s * 1000)

    def monotonic_ns(self) -> int:
        return int(self._now_s * 1e9)

    # BaseEventLoop's hooks for I/O: there is none.
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _make_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        context: contextvars.Context | None = kwargs.get("context")
        owner = context.get(OWNER, "") if context is not None else OWNER.get()
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        if owner:
            tasks = self._by_owner.setdefault(owner, [])
            if len(tasks) >= _OWNED_TASKS_PRUNE_AT:
                tasks[:] = [t for t in tasks if not t.done()]
            tasks.append(task)
        return task

    def kill(self, owner: str) -> int:
        """Cancel every live task of ``owner`` (a crash); how many."""
        tasks = self._by_owner.pop(owner, None)
        if tasks is None:
            return 0
        alive = [t for t in tasks if not t.done()]
        for t in alive:
            t.cancel()
        return len(alive)


def owned_context(owner: str) -> contextvars.Context:
    """A context whose tasks belong to ``owner``."""
    ctx = contextvars.copy_context()
    ctx.run(OWNER.set, owner)
    return ctx
