"""Deliberately wrong Raft rules, one subclass each, for proving the simulator
bites (tests/sim/test_simulator_catches_bugs.py). Never used outside tests."""

from __future__ import annotations

from httpcoord.cluster.raft.core import Raft
from httpcoord.cluster.raft.messages import (
    NONE,
    AppendEntries,
    HardState,
    Message,
    ReadIndexResponse,
    VoteResponse,
)


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


class LeaderSendsUnsavedCommit(Raft):
    """Not a core rule but the driver's: a leader sends a Ready's messages
    before its save even when the Ready's commit index covers the leader's
    own unsaved entries (a leader that is a majority alone commits at once),
    so a learner can apply an entry the leader then loses in a crash."""

    bug_name = "leader_sends_unsaved_commit"
    driver_leader_sends_unsaved_commit = True


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


class CommitNeedsEveryVoter(Raft):
    """Advances the commit index only when every voter has the entry (a
    liveness bug: one voter down for good stops all writes)."""

    bug_name = "commit_needs_every_voter"

    def _commit_quorum_size(self) -> int:
        return len(self.conf.voters)


class FollowerCommitsPastAppend(Raft):
    """A follower commits up to min(leader commit, its own last index), not
    min(leader commit, the last entry this append carried): a stale suffix
    from an older term past a short append gets committed."""

    bug_name = "follower_commits_past_append"

    def _follower_commit_limit(self, m: AppendEntries, last_new: int) -> int:
        return self.log.last_index()


class ConfChangeBeforeNoop(Raft):
    """A new leader may propose a membership change once the last one in its
    log is committed, before its own term's no-op commits (the single-server
    change bug of the thesis' errata)."""

    bug_name = "conf_change_before_noop"

    def _conf_change_allowed(self) -> bool:
        return self._confs[-1][0] <= self.log.committed


class FollowerAcceptsUnknownRead(Raft):
    """A follower releases any ReadIndexResponse as a read, including a
    duplicate or a stale one meant for an earlier incarnation."""

    bug_name = "follower_accepts_unknown_read"

    def _read_response_known(self, m: ReadIndexResponse) -> bool:
        self._forwarded_reads.pop(m.ctx, NONE)
        return True


class RemovedVoterNeverCampaigns(Raft):
    """A voter whose removal is in its log but uncommitted never campaigns:
    removing one of two voters deadlocks if the leader is deposed before the
    other has the removal (a liveness bug)."""

    bug_name = "removed_voter_never_campaigns"

    def promotable(self) -> bool:
        return self.id in self.conf.voters and self.log.unstable_snapshot() is None


BUGS: dict[str, type[Raft]] = {
    cls.bug_name: cls
    for cls in (
        CommitOldTermByCounting,
        VoteWithoutLogCheck,
        ForgetVote,
        ApplyBeforeCommit,
        ReadWithoutHeartbeat,
        SendBeforeSave,
        LeaderSendsUnsavedCommit,
        CountStaleVotes,
        ReadNeverReleased,
        CommitNeedsEveryVoter,
        FollowerCommitsPastAppend,
        ConfChangeBeforeNoop,
        FollowerAcceptsUnknownRead,
        RemovedVoterNeverCampaigns,
    )
}
