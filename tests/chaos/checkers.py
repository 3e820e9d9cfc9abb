"""Property checkers of the fault suite, one function per property.

Each takes what the workload recorded and returns a list of anomalies (empty: the
property held). They are pure: no I/O, no clock, the same input gives the same list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

from tests.chaos.history import Op, Process

P = TypeVar("P", bound=Process)

# ZooKeeper appends the parent's cversion to a sequential name as 10 digits.
SEQUENCE_SUFFIX = re.compile(r"(\d{10})$")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One violation: what kind, why in words, the history ops involved and when
    (``window_ns``: monotonic ns, None when the checker saw no times)."""

    kind: str
    message: str
    op_ids: tuple[int, ...] = ()
    window_ns: tuple[int, int] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "message": self.message,
            "op_ids": list(self.op_ids),
            "window_ns": None if self.window_ns is None else list(self.window_ns),
        }


def ops_window(ops: Sequence[Op]) -> tuple[int, int] | None:
    """From the first invocation to the last completion (or invocation) of ``ops``."""
    if not ops:
        return None
    return (
        min(op.invoke_ns for op in ops),
        max(op.invoke_ns if op.complete_ns is None else op.complete_ns for op in ops),
    )


def sequence_number(name: str) -> int | None:
    match = SEQUENCE_SUFFIX.search(name.rsplit("/", 1)[-1])
    return None if match is None else int(match.group(1))


def check_sequential_creates(
    acked: Sequence[Op],
    unknown_count: int,
    final_children: Sequence[str],
    *,
    gap_free: bool = True,
) -> list[Anomaly]:
    """Sequential creates under one parent.

    ``acked``: the ok create ops, each ``value`` the created path (or name);
    ``unknown_count``: how many creates ended unknown; ``final_children``: the parent's
    child names read once the cluster healed. Every acked name must be a final child;
    sequence numbers are unique; with ``gap_free`` (no deletes under the parent, so each
    create bumped the parent's cversion by one) the final numbers run without a gap from
    the first; at most ``unknown_count`` final children are not acked creates.
    """
    found: list[Anomaly] = []
    final = set(final_children)
    acked_names: dict[str, Op] = {}
    by_number: dict[int, list[Op]] = {}
    for op in acked:
        name = str(op.value).rsplit("/", 1)[-1]
        acked_names[name] = op
        number = sequence_number(name)
        if number is None:
            found.append(
                Anomaly("bad_sequence_name", f"create {op.id} returned {op.value!r}", (op.id,))
            )
            continue
        by_number.setdefault(number, []).append(op)
        if name not in final:
            found.append(
                Anomaly(
                    "lost_create",
                    f"create {op.id} was acknowledged as {name!r} but is not a final child",
                    (op.id,),
                    ops_window([op]),
                )
            )
    for number, ops in sorted(by_number.items()):
        if len(ops) > 1:
            found.append(
                Anomaly(
                    "duplicate_sequence",
                    f"sequence number {number} acknowledged to {len(ops)} creates",
                    tuple(op.id for op in ops),
                    ops_window(ops),
                )
            )
    final_numbers = Counter(n for n in map(sequence_number, final_children) if n is not None)
    for number, count in sorted(final_numbers.items()):
        if count > 1:
            found.append(
                Anomaly("duplicate_sequence", f"{count} final children share number {number}")
            )
    if gap_free and final_numbers:
        first, last = min(final_numbers), max(final_numbers)
        missing = [n for n in range(first, last + 1) if n not in final_numbers]
        if missing:
            shown = missing[:10]
            found.append(
                Anomaly(
                    "sequence_gap",
                    f"final sequence numbers {first}..{last} miss {len(missing)}: {shown}",
                )
            )
    unexplained = sorted(name for name in final if name not in acked_names)
    if len(unexplained) > unknown_count:
        found.append(
            Anomaly(
                "unexplained_child",
                f"{len(unexplained)} final children were not acknowledged but only "
                f"{unknown_count} creates ended unknown: {unexplained[:10]}",
            )
        )
    return found


class Access(NamedTuple):
    """One access a guarded resource accepted, fenced by ``token``."""

    time_ns: int
    token: int
    holder: Process
    op_id: int | None = None


def check_fencing(accesses: Sequence[Access]) -> list[Anomaly]:
    """A fenced resource's accepted accesses, in the order it accepted them.

    Tokens never decrease; a token belongs to one holder; and a holder's tenure (its
    token) never resumes once another holder's access was accepted: at most one holder
    at a time.
    """
    found: list[Anomaly] = []
    owner: dict[int, Access] = {}
    ended: set[tuple[Process, int]] = set()
    previous: Access | None = None
    for access in accesses:
        first = owner.setdefault(access.token, access)
        if first.holder != access.holder:
            found.append(
                _access_anomaly(
                    "shared_token",
                    f"token {access.token} used by {first.holder!r} and {access.holder!r}",
                    first,
                    access,
                )
            )
        if previous is not None:
            if access.token < previous.token:
                found.append(
                    _access_anomaly(
                        "token_decreased",
                        f"token {access.token} of {access.holder!r} accepted after "
                        f"token {previous.token} of {previous.holder!r}",
                        previous,
                        access,
                    )
                )
            tenure = (previous.holder, previous.token)
            if tenure != (access.holder, access.token):
                ended.add(tenure)
                if (access.holder, access.token) in ended:
                    found.append(
                        _access_anomaly(
                            "interleaved_holders",
                            f"{access.holder!r} (token {access.token}) accessed again "
                            f"after {previous.holder!r} (token {previous.token}) had",
                            previous,
                            access,
                        )
                    )
        previous = access
    return found


def _access_anomaly(kind: str, message: str, a: Access, b: Access) -> Anomaly:
    ids = tuple(x.op_id for x in (a, b) if x.op_id is not None)
    return Anomaly(kind, message, ids, (min(a.time_ns, b.time_ns), max(a.time_ns, b.time_ns)))


class WatchEvent(NamedTuple):
    zxid: int
    type: str
    path: str


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it (by whole segments)."""
    if prefix in ("", "/"):
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def check_watch_stream(
    committed_events: Sequence[WatchEvent],
    received: Sequence[WatchEvent],
    paths_prefix: str,
) -> list[Anomaly]:
    """A watcher's stream, across its reconnects, against the committed events.

    ``received`` in the order delivered: zxids never go back (the events of one multi
    share a zxid, so equal zxids may follow each other), no event arrives more often
    than it was committed (one txn may make equal events: a session's close deleting
    three ephemerals of one parent makes three ``children_changed`` of it), and from
    the first received zxid to the last they are exactly the committed events under
    ``paths_prefix``: none missing, none invented.
    """
    found: list[Anomaly] = []
    received = [WatchEvent(*e) for e in received]  # plain (zxid, type, path) tuples too
    allowed = Counter(WatchEvent(*e) for e in committed_events)
    seen: Counter[WatchEvent] = Counter()
    previous: WatchEvent | None = None
    for event in received:
        seen[event] += 1
        if seen[event] > max(1, allowed[event]):
            found.append(Anomaly("duplicate_event", f"{event} delivered twice"))
        elif previous is not None and event.zxid < previous.zxid:
            found.append(Anomaly("zxid_went_back", f"{event} delivered after {previous}"))
        previous = event
        if not under(event.path, paths_prefix):
            found.append(Anomaly("outside_prefix", f"{event} is not under {paths_prefix!r}"))
    if not received:
        return found
    low = min(e.zxid for e in received)
    high = max(e.zxid for e in received)
    expected = Counter(
        WatchEvent(*e)
        for e in committed_events
        if low <= e[0] <= high and under(e[2], paths_prefix)
    )
    got = Counter(received)
    missing = sorted((expected - got).elements())
    invented = sorted((got - expected).elements())
    if missing:
        found.append(
            Anomaly(
                "missing_events",
                f"{len(missing)} committed events between zxid {low} and {high} not "
                f"delivered, first {missing[:5]}",
            )
        )
    # A duplicate is reported above; here only events that were never committed.
    never = [e for e in invented if e not in expected]
    if never:
        found.append(
            Anomaly(
                "invented_events",
                f"{len(never)} delivered events were never committed, first {never[:5]}",
            )
        )
    return found


class Observation(NamedTuple):
    """A zxid a client saw (X-Coord-Zxid or a stat), in the order it saw them."""

    time_ns: int
    zxid: int
    op_id: int | None = None


def check_monotonic_zxids(
    per_client_observations: Mapping[P, Sequence[Observation]],
) -> list[Anomaly]:
    """No client ever sees the zxid go backwards, whichever node answers it."""
    found: list[Anomaly] = []
    for client, observations in per_client_observations.items():
        high: Observation | None = None
        for seen in observations:
            if high is not None and seen.zxid < high.zxid:
                ids = tuple(o.op_id for o in (high, seen) if o.op_id is not None)
                found.append(
                    Anomaly(
                        "zxid_went_back",
                        f"client {client!r} saw zxid {seen.zxid} after {high.zxid}",
                        ids,
                        (high.time_ns, seen.time_ns),
                    )
                )
            if high is None or seen.zxid > high.zxid:
                high = seen
    return found


EphemeralKind = Literal["create", "delete", "maybe_delete", "close", "expire", "removed"]


class EphemeralEvent(NamedTuple):
    """A step in the life of ephemerals and their sessions, placed by zxid.

    ``create``: ``path`` created as an ephemeral owned by ``session``; ``delete``: an
    acknowledged client delete of ``path`` (its zxid); ``maybe_delete``: a delete of
    ``path`` that ended unknown (zxid: a lower bound, the client's last seen zxid);
    ``close`` / ``expire``: ``session`` ended; ``removed``: ``path`` was seen to go (a
    NodeDeleted event, or its absence read at that zxid).
    """

    zxid: int
    kind: EphemeralKind
    path: str | None = None
    session: Process | None = None
    op_id: int | None = None


def check_ephemerals(events: Sequence[EphemeralEvent]) -> list[Anomaly]:
    """An ephemeral goes only by a client's delete or at/after its owner session's end.

    A removal is explained by a delete of that path at the same zxid, by an unknown
    delete sent at or before it, or by the owner's close or expiry at or before it (and
    after the create). Events are taken in zxid order; at one zxid, creates and session
    ends come before removals.
    """
    order = {"create": 0, "close": 1, "expire": 1, "delete": 2, "maybe_delete": 2, "removed": 3}
    found: list[Anomaly] = []
    owner: dict[str, EphemeralEvent] = {}
    session_end: dict[Process, EphemeralEvent] = {}
    deletes: dict[str, list[EphemeralEvent]] = {}
    for event in sorted(events, key=lambda e: (e.zxid, order[e.kind])):
        if event.kind == "create":
            assert event.path is not None and event.session is not None
            owner[event.path] = event
        elif event.kind in ("close", "expire"):
            assert event.session is not None
            session_end.setdefault(event.session, event)
        elif event.kind in ("delete", "maybe_delete"):
            assert event.path is not None
            deletes.setdefault(event.path, []).append(event)
        else:
            assert event.path is not None
            created = owner.pop(event.path, None)
            if created is None:
                continue
            ids = tuple(e.op_id for e in (created, event) if e.op_id is not None)
            assert created.session is not None
            end = session_end.get(created.session)
            explained = end is not None and created.zxid <= end.zxid <= event.zxid
            pending = deletes.get(event.path, [])
            if not explained:
                # A delete explains one removal: it is used up, others wait for the next.
                for d in pending:
                    if d.zxid == event.zxid or (d.kind == "maybe_delete" and d.zxid <= event.zxid):
                        pending.remove(d)
                        explained = True
                        break
            if not explained:
                ending = "still open" if end is None else f"ended at zxid {end.zxid}"
                found.append(
                    Anomaly(
                        "ephemeral_removed_early",
                        f"{event.path} (zxid {created.zxid}, session {created.session!r}) "
                        f"removed at zxid {event.zxid} with no delete; its session {ending}",
                        ids,
                    )
                )
    return found


class SessionLease(NamedTuple):
    """One session as its client saw it: when it sent the latest heartbeat (or open)
    the server acknowledged before the end, and when it first learned the session was
    gone (None: it never did); times in monotonic ns. ``op_id``: that heartbeat's
    history op, if it has one."""

    session: Process
    ttl_ms: int
    last_ack_sent_ns: int
    ended_seen_ns: int | None
    op_id: int | None = None


def check_session_leases(leases: Sequence[SessionLease], slack_ms: int) -> list[Anomaly]:
    """A session its client keeps heartbeating stays open: it may expire only once a
    whole ttl has passed since the latest heartbeat the server acknowledged was sent,
    less ``slack_ms`` for a follower's ping to the leader and the detection of a lost
    leader. A leader change renews nothing the client must redo."""
    found: list[Anomaly] = []
    for lease in leases:
        if lease.ended_seen_ns is None:
            continue
        earliest_ns = lease.last_ack_sent_ns + (lease.ttl_ms - slack_ms) * 1_000_000
        if lease.ended_seen_ns < earliest_ns:
            early_ms = (earliest_ns - lease.ended_seen_ns) // 1_000_000 + slack_ms
            found.append(
                Anomaly(
                    "session_expired_early",
                    f"session {lease.session!r} (ttl {lease.ttl_ms} ms) was gone "
                    f"{early_ms} ms before a ttl had passed since its last acknowledged "
                    "heartbeat was sent",
                    () if lease.op_id is None else (lease.op_id,),
                    (lease.last_ack_sent_ns, lease.ended_seen_ns),
                )
            )
    return found
