"""Deliberately wrong Raft rules, one subclass each, for proving the simulator
bites (tests/sim/test_simulator_catches_bugs.py). Never used outside tests."""

from __future__ import annotations

from httpcoord.cluster.raft.core import Raft
from httpcoord.cluster.raft.messages import NONE, HardState, Message, VoteResponse


class CommitOldTermByCounting(Raft):
    """Counts replicas to commit an entry of an earlier term (Figure 8)."""

    bug_name = "commit_old_term"

    def _commit_term_ok(self, index: int) -> bool:
        return True


class VoteWithoutLogCheck(Raft):
    """Grants votes without the up-to-date log check (§5.4.1)."""

    bug_name = "vote_without_log_check"

    def _log_ok_for_vote(self, last_index: int, last_term: int) -> bool:
        return True


class ForgetVote(Raft):
    """Never makes the vote durable: after a restart it can vote again."""

    bug_name = "forget_vote"

    def _hard_state(self) -> HardState:
        return HardState(self.term, NONE, self.log.committed)


class ApplyBeforeCommit(Raft):
    """Hands entries to the state machine as soon as they are in the log."""

    bug_name = "apply_before_commit"

    def _apply_limit(self) -> int:
        return self.log.last_index()


class ReadWithoutHeartbeat(Raft):
    """Serves ReadIndex from the leader's commit index without confirming
    leadership with a heartbeat round."""

    bug_name = "read_without_heartbeat"

    def _read_needs_quorum(self) -> bool:
        return False


class SendBeforeSave(Raft):
    """Not a core rule but the driver's: send a Ready's messages before its
    save is durable (the simulator's driver honours this marker)."""

    bug_name = "send_before_save"
    driver_sends_before_save = True


class CountStaleVotes(Raft):
    """Counts a vote granted in an earlier term (delivered late, perhaps to an
    earlier incarnation of this node) towards the current election."""

    bug_name = "count_stale_votes"

    def step(self, m: Message) -> None:
        if isinstance(m, VoteResponse) and m.term < self.term and m.dst == self.id:
            self._step(m)
            return
        super().step(m)


class ReadNeverReleased(Raft):
    """Never releases a ReadIndex read that waits for a heartbeat round (a
    liveness bug: reads hang while writes keep committing)."""

    bug_name = "read_never_released"

    def _release_reads(self) -> None:
        pass


BUGS: dict[str, type[Raft]] = {
    cls.bug_name: cls
    for cls in (
        CommitOldTermByCounting,
        VoteWithoutLogCheck,
        ForgetVote,
        ApplyBeforeCommit,
        ReadWithoutHeartbeat,
        SendBeforeSave,
        CountStaleVotes,
        ReadNeverReleased,
    )
}
