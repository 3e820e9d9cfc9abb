"""Deliberately wrong driver and node code, one ``Node`` subclass each, for
proving the whole-node simulation bites (tests/sim/test_node_simulation.py).
The consensus core is the real one in every case: these are bugs of the
code around it. Never used outside tests.

``Node`` builds its ``Driver`` itself, so a driver bug is planted by a node
subclass that swaps the driver right after construction (same core, same
storage, same transport slot).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from httpcoord.cluster.driver import Driver
from httpcoord.cluster.node import Node, Outcome
from httpcoord.cluster.raft.core import Ready, Role
from httpcoord.cluster.raft.messages import Entry
from httpcoord.cluster.sessions import SessionTracker
from httpcoord.errors import Unavailable


class _SendBeforeSaveDriver(Driver):
    async def _handle(self, rd: Ready) -> None:
        # Wrong: a vote or an append acknowledgement promises what is not yet on disk.
        if rd.messages:
            self.transport.send(rd.messages)
        await super()._handle(replace(rd, messages=[]))


class SendBeforeSave(Node):
    """The driver sends a Ready's messages before saving it."""

    driver_cls = _SendBeforeSaveDriver


class _ApplyOnAppendDriver(Driver):
    async def _handle(self, rd: Ready) -> None:
        fsm = self.fsm
        assert isinstance(fsm, Node)
        if rd.soft_state.role is Role.LEADER and rd.entries:
            # Wrong: the leader applies (and answers) what it has only appended.
            fresh = [e for e in rd.entries if e.index > fsm.applied_index]
            if fresh and fresh[0].index == fsm.applied_index + 1:
                fsm.apply(fresh)
        done = fsm.applied_index
        committed = [e for e in rd.committed_entries if e.index > done]
        await super()._handle(replace(rd, committed_entries=committed))


class ApplyOnAppend(Node):
    """The leader's driver applies entries when it appends them, not when
    they commit, and skips them when they do."""

    driver_cls = _ApplyOnAppendDriver


class ReadSkipsApplyWait(Node):
    """A linearizable read returns once the leader confirmed the read index,
    without waiting until this node has applied up to it."""

    async def barrier(self, linearizable: bool = False, min_zxid: int | None = None) -> None:
        await super().barrier(False, min_zxid)
        if linearizable:
            if not self.driver.has_live_leader():
                raise Unavailable("no leader is known: cannot read linearizably")
            try:
                await asyncio.wait_for(
                    self.driver.read_index(), self.limits.request_timeout_ms / 1000
                )
            except TimeoutError:
                raise Unavailable("no majority confirmed the leader in time") from None


class OutcomeIgnoresTerm(Node):
    """A write is answered with the outcome of whatever entry was applied at
    its index, even one of another term that took its place."""

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            waiting = self._index_waiters.get(e.index)
            if waiting:
                self._index_waiters[e.index] = [(e.term, f) for _, f in waiting]
        super().apply(entries)

    def _recent_outcome(self, index: int, term: int) -> Outcome:
        recent = self._recent
        if recent and recent[0][0] <= index < recent[0][0] + len(recent):
            term = recent[index - recent[0][0]][1]
        return super()._recent_outcome(index, term)


class NoRenewalOnFailover(Node):
    """A new leader carries no session renewal over: it counts every session
    as last heard from a ttl ago and expires them all as it takes office,
    before any client can heartbeat it."""

    _takeover_expiry: asyncio.Task[list[str]] | None = None

    def _maybe_activate_sessions(self) -> None:
        was_active = self._sessions_active
        super()._maybe_activate_sessions()
        if self._sessions_active and not was_active:
            tracker = SessionTracker()
            now = self._monotonic_ms()
            for session in self.all_sessions():
                tracker.open(session.id, session.ttl_ms, now - session.ttl_ms)
            self.sessions = tracker
            self._takeover_expiry = asyncio.get_running_loop().create_task(self.expire_sessions())


class ExpireEarly(Node):
    """The leader takes a follower's ping for news, not for heartbeats: a
    session heartbeated only at followers expires a ttl after its last
    heartbeat at the leader."""

    def handle_touch(self, body: bytes) -> bytes:
        return orjson.dumps({"unknown": []})  # Wrong: touches nothing


NODE_BUGS: dict[str, type[Node]] = {
    "send_before_save": SendBeforeSave,
    "apply_on_append": ApplyOnAppend,
    "read_skips_apply_wait": ReadSkipsApplyWait,
    "outcome_ignores_term": OutcomeIgnoresTerm,
    "no_renewal_on_failover": NoRenewalOnFailover,
    "expire_early": ExpireEarly,
}
