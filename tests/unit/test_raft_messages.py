"""Wire encoding of consensus messages: round trips, and decoders that
reject anything malformed instead of building it."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpcoord.cluster.raft.messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    MessageDecodeError,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode_message,
    encode_message,
)

ids = st.integers(1, 2**63 - 1)
nat = st.integers(0, 2**63 - 1)


@st.composite
def entries(draw: st.DrawFn) -> tuple[Entry, ...]:
    first = draw(st.integers(1, 10**9))
    n = draw(st.integers(0, 5))
    return tuple(
        Entry(
            first + k,
            draw(st.integers(1, 100)),
            draw(st.sampled_from(list(EntryKind))),
            draw(st.binary(max_size=40)),
        )
        for k in range(n)
    )


@st.composite
def appends(draw: st.DrawFn) -> AppendEntries:
    """Well formed: entries follow prev_index, none of a term above the sender's."""
    es = draw(entries())
    prev_index = es[0].index - 1 if es else draw(nat)
    term = draw(st.integers(max((e.term for e in es), default=0), 2**63 - 1))
    return AppendEntries(draw(ids), draw(ids), term, prev_index, draw(nat), es, draw(nat))


messages = st.one_of(
    st.builds(VoteRequest, ids, ids, nat, nat, nat, st.booleans(), st.booleans()),
    st.builds(VoteResponse, ids, ids, nat, st.booleans(), st.booleans()),
    appends(),
    st.builds(AppendResponse, ids, ids, nat, st.booleans(), nat, nat, nat),
    st.builds(Heartbeat, ids, ids, nat, nat, nat),
    st.builds(HeartbeatResponse, ids, ids, nat, nat),
    st.builds(TimeoutNow, ids, ids, nat),
    st.builds(ReadIndexRequest, ids, ids, nat, nat),
    st.builds(ReadIndexResponse, ids, ids, nat, nat, nat),
)


@given(messages)
def test_every_message_round_trips(m: object) -> None:
    assert decode_message(encode_message(m)) == m  # type: ignore[arg-type]


def test_snapshot_round_trips() -> None:
    snap = Snapshot(SnapshotMeta(9, 3, ConfState(frozenset({1, 2}), frozenset({4}))), b"\x00\xff")
    m = InstallSnapshot(1, 2, 3, snap)
    assert decode_message(encode_message(m)) == m


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"t": "pickle"}',
        b'{"t": "timeout_now", "src": 1, "dst": 2}',  # a field missing
        b'{"t": "timeout_now", "src": 1, "dst": 2, "term": 1, "x": 0}',  # an extra field
        b'{"t": "timeout_now", "src": 0, "dst": 2, "term": 1}',  # node id 0
        b'{"t": "timeout_now", "src": 1, "dst": 2, "term": -1}',
        b'{"t": "timeout_now", "src": 1, "dst": 2, "term": true}',
        b'{"t": "timeout_now", "src": 1, "dst": 2, "term": 1.5}',
        b'{"t": "hb_resp", "src": 1, "dst": 2, "term": 99999999999999999999, "read_seq": 0}',
        b'{"t": "vote_resp", "src": 1, "dst": 2, "term": 1, "granted": 1, "pre_vote": false}',
    ],
)
def test_malformed_messages_are_rejected(raw: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        decode_message(raw)


def _append(entries: object) -> bytes:
    return orjson.dumps(
        {
            "t": "app",
            "src": 1,
            "dst": 2,
            "term": 1,
            "prev_index": 0,
            "prev_term": 0,
            "entries": entries,
            "commit": 0,
        }
    )


@pytest.mark.parametrize(
    "bad_entries",
    [
        "x",
        [[1, 1, 0]],
        [[1, 1, 7, ""]],  # unknown kind
        [[0, 1, 0, ""]],  # index 0
        [[1, 0, 0, ""]],  # term 0
        [[1, 1, 0, "not base64!"]],
        [[1, 1, 0, ""], [3, 1, 0, ""]],  # a gap
        [[2, 1, 0, ""]],  # does not follow prev_index 0 (the core would crash on the gap)
        [[1, 2, 0, ""]],  # a term above the sender's term 1
    ],
)
def test_malformed_entries_are_rejected(bad_entries: object) -> None:
    with pytest.raises(MessageDecodeError):
        decode_message(_append(bad_entries))


def test_conf_state_rejects_a_node_in_both_sets() -> None:
    with pytest.raises(MessageDecodeError):
        ConfState.decode(b'{"voters": [1], "learners": [1]}')


def test_a_message_type_that_is_not_a_string_is_refused() -> None:
    for raw in (b'{"t": []}', b'{"t": {}}', b'{"t": 1}', b'{"t": null}'):
        with pytest.raises(MessageDecodeError):
            decode_message(raw)
