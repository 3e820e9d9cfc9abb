"""Builds of the server that are wrong on purpose, for proving the fault suite
bites (tests/chaos/test_planted_bugs.py). Never used outside tests.

  python -m tests.chaos.planted BUG serve --id 1 ...

swaps one wrong class into the server, then runs the ``httpcoord`` command
line as usual. ``BUG`` is one of ``PLANTED`` or ``none`` (the correct build,
for the control runs). Each bug is one rule the suite relies on, broken:

  ack_before_majority     the leader answers a write once its own disk has it,
                          before a majority has fsynced it (the core hands
                          entries to the state machine as soon as they are
                          in the log)
  read_before_apply       a linearizable read is answered once the ReadIndex
                          round confirmed the leader, without waiting until
                          this node has applied the index it returned
  forward_before_apply    a follower answers a forwarded write with the
                          leader's outcome as soon as the leader applied it,
                          before applying the entry itself
  no_renewal_on_failover  a new leader carries no session renewal over: it
                          counts every session as last heard from one ttl ago
                          and expires them all as it takes office

Every build, the correct one included, replicates with one append of at most
4 KiB in flight per follower: there is no way here to delay a link (no
netem), and a small window is what lets a paused follower lag in entries the
way a slow link makes it lag.
"""

from __future__ import annotations

import functools
import pickle
import sys
from collections.abc import Sequence

import orjson

from httpcoord.cluster import node as node_module
from httpcoord.cluster.forward import PROPOSE_PATH
from httpcoord.cluster.raft.core import Config as RaftConfig
from httpcoord.cluster.raft.messages import NONE
from httpcoord.cluster.transport import PeerError, PeerUnavailable
from httpcoord.errors import CoordError, OutcomeUnknown, Unavailable
from httpcoord.routes import app as app_module
from httpcoord.tree.tree import TxnResult
from httpcoord.tree.txn import Op, Txn, encode_txn
from tests.sim.bugs import ApplyBeforeCommit
from tests.sim.node_bugs import NoRenewalOnFailover, ReadSkipsApplyWait

Node = node_module.Node

# The forward_before_apply build's own forwarding: the body starts with this
# line, and the leader answers the pickled outcome once it applied the txn.
_APPLIED_MARK = b"planted:applied\n"


class ForwardBeforeApply(Node):
    async def propose(self, ops: tuple[Op, ...], multi: bool = False) -> TxnResult:
        driver = self.driver
        if driver.is_leader or driver.leader == NONE or not driver.has_live_leader():
            return await super().propose(ops, multi)
        body = _APPLIED_MARK + encode_txn(Txn(ops, 0, multi))
        try:
            raw = await self.transport.call(
                driver.leader, PROPOSE_PATH, body, self.limits.request_timeout_ms
            )
        except PeerUnavailable:
            raise Unavailable("the leader cannot be reached") from None
        except PeerError as exc:
            raise OutcomeUnknown(f"forwarding failed: {exc!r}") from None
        outcome = pickle.loads(raw)
        if isinstance(outcome, TxnResult):
            return outcome  # the bug: this node has not applied it
        raise Unavailable(f"the leader refused the write: {outcome}")

    async def handle_propose(
        self, body: bytes, sender: int = 0, request_ids: Sequence[str] = ()
    ) -> bytes:
        if not body.startswith(_APPLIED_MARK):
            return await super().handle_propose(body, sender, request_ids)
        rest = body[len(_APPLIED_MARK) :]
        placed = orjson.loads(await super().handle_propose(rest, sender, request_ids))[0]
        if type(placed) is not list:
            return pickle.dumps(f"refused: {placed}")
        index, term = placed
        deadline = self._monotonic_ms() + self.limits.request_timeout_ms
        try:
            outcome = await self._outcome(index, term, deadline)
        except CoordError as exc:
            return pickle.dumps(f"{exc.code}: {exc}")
        return pickle.dumps(outcome if isinstance(outcome, TxnResult) else repr(outcome))


PLANTED = (
    "ack_before_majority",
    "read_before_apply",
    "forward_before_apply",
    "no_renewal_on_failover",
)


def plant(bug: str) -> None:
    """Swap the wrong class for ``bug`` into the server (``none``: no bug)."""
    node_module.RaftConfig = functools.partial(  # type: ignore[attr-defined,assignment]
        RaftConfig, max_inflight_msgs=1, max_bytes_per_msg=4096
    )
    if bug == "none":
        return
    if bug == "ack_before_majority":
        node_module.Raft = ApplyBeforeCommit  # type: ignore[attr-defined]
        return
    node_class = {
        "read_before_apply": ReadSkipsApplyWait,
        "forward_before_apply": ForwardBeforeApply,
        "no_renewal_on_failover": NoRenewalOnFailover,
    }[bug]
    app_module.Node = node_class  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (*PLANTED, "none"):
        raise SystemExit(f"usage: python -m tests.chaos.planted {{{'|'.join(PLANTED)}|none}} ...")
    plant(argv[0])
    from httpcoord.cli import main as cli_main

    cli_main(argv[1:], prog_name="httpcoord")


if __name__ == "__main__":
    main(sys.argv[1:])
