"""Fuzz the peer listener, as the client API is fuzzed: random identity
headers on random routes, random frames on a member's stream, random snapshot
streams and raw bytes on the socket. After every example: no exception
escaped (no 500, nothing logged at ERROR by aiohttp, asyncio or the
transport), nothing malformed was delivered, and a valid message from a
real peer still arrives.

Hypothesis drives a plain function, so the listeners live on an event loop
of this module's own, and each example runs on it to completion."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httpcoord.cluster.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    VoteRequest,
    decode_message,
    encode_message,
)
from httpcoord.cluster.transport import (
    RECORD_CHUNK,
    RECORD_END,
    RECORD_HEADER,
    RECORD_PART,
    SNAPSHOT_PATH,
    STREAM_PATH,
    encode_record,
)
from tests.unit.test_transport import (
    CLUSTER,
    Member,
    identity,
    snapshot_stream,
    start_members,
    stop_members,
)

T = TypeVar("T")
EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Errors(logging.Handler):
    """Records logged at ERROR, except aiohttp's parser refusing bytes that
    are not HTTP (answered 400 and logged by aiohttp itself, before any
    route or middleware runs)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
            return
        self.records.append(record)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    a: Member  # node 1: a real peer sending valid traffic to b
    b: Member  # node 2: the listener under fuzz
    errors: _Errors
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    next_commit: int = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def check(self) -> None:
        """The invariants every example must leave behind."""
        assert self.errors.records == [], [r.getMessage() for r in self.errors.records]
        assert self.loop_errors == []
        for m in self.b.inbox:
            assert m.dst == 2 and m.src in (1, 3)
            if isinstance(m, InstallSnapshot):
                assert m.snapshot.data in self.b.snapshots.staged
        commit = self.next_commit
        self.next_commit += 1
        self.a.transport.send([Heartbeat(1, 2, 1, commit, 0)])

        async def arrived() -> None:
            while not any(
                isinstance(m, Heartbeat) and m.src == 1 and m.commit == commit
                for m in self.b.inbox[-50:]
            ):
                await asyncio.sleep(0.005)

        self.run(arrived())


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    errors = _Errors()
    watched = [logging.getLogger(n) for n in ("aiohttp", "asyncio", "httpcoord.cluster.transport")]
    for logger in watched:
        logger.addHandler(errors)
    members = loop.run_until_complete(start_members((1, 2, 3)))
    h = Harness(loop, members[0], members[1], errors)
    loop.set_exception_handler(lambda _loop, ctx: h.loop_errors.append(ctx))
    try:
        yield h
    finally:
        loop.run_until_complete(stop_members(members))
        loop.close()
        for logger in watched:
            logger.removeHandler(errors)


# ---- strategies ------------------------------------------------------------------------

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
_header_value = st.one_of(
    _printable,
    st.integers(-3, 2**70).map(str),
    st.sampled_from(["1", "2", "3", "7", "0", "01", " 2", "2 ", "1e1", CLUSTER, CLUSTER + "x"]),
)


@st.composite
def _headers(draw: st.DrawFn) -> dict[str, str]:
    """A valid identity (as node 1 or 3) with none, some or all of its four
    headers dropped or replaced."""
    headers = identity(draw(st.sampled_from([1, 3])), 2)
    for name in draw(st.lists(st.sampled_from(sorted(headers)), unique=True)):
        if draw(st.booleans()):
            del headers[name]
        else:
            headers[name] = draw(_header_value)
    return headers


_paths = st.one_of(
    st.sampled_from([STREAM_PATH, SNAPSHOT_PATH, "/peer/v1/echo", "/peer/v1/fail", "/", "/x"]),
    _printable.map(lambda p: "/" + p.replace(" ", "").replace("#", "").replace("?", "")),
)

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # all orjson writes; past INT_MAX included
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

_VALID_FROM_3: list[Message] = [
    Heartbeat(3, 2, 4, 10, 1),
    AppendResponse(3, 2, 4, False, 12),
    VoteRequest(3, 2, 5, 12, 4, pre_vote=True),
    ReadIndexRequest(3, 2, 4, 77),
    AppendEntries(3, 2, 4, 1, 1, (Entry(2, 4, EntryKind.NORMAL, b"data"),), 1),
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid message from node 3 with one field replaced, added or removed."""
    obj = orjson.loads(encode_message(draw(st.sampled_from(_VALID_FROM_3))))
    key = draw(st.sampled_from([*sorted(obj), "extra"]))
    if draw(st.booleans()):
        obj.pop(key, None)
    else:
        obj[key] = draw(_json)
    return orjson.dumps(obj)


_frame = st.one_of(
    st.binary(max_size=300),
    _json.map(orjson.dumps),
    _mutated(),
    st.sampled_from(_VALID_FROM_3).map(encode_message),
    st.sampled_from(
        [
            b'{"t":"hb","src":3,"dst":2,"term":1,"commit":123456789012345678901234,"read_seq":0}',
            b'{"t":"hb","src":3,"dst":2,"term":1e400,"commit":1,"read_seq":0}',
            b"[" * 2000 + b"]" * 2000,
            (
                b'{"t":"app","src":3,"dst":2,"term":1,"prev_index":0,"prev_term":0,'
                b'"entries":[[1,1,0,"!!"]],"commit":0}'
            ),
        ]
    ),
    st.lists(
        st.one_of(_mutated(), st.sampled_from(_VALID_FROM_3).map(encode_message)), max_size=4
    ).map(lambda parts: b"\n".join(parts)),
)


@st.composite
def _snapshot_body(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A snapshot stream body and whether it is well formed."""
    data = draw(st.binary(min_size=1, max_size=3000))
    header, rest = snapshot_stream(1, 2, data, chunk=draw(st.integers(200, 1024)))
    records = header + rest
    choice = draw(st.sampled_from(["valid", "flip", "cut", "records", "bytes"]))
    if choice == "valid":
        return b"".join(records), True
    if choice == "flip":
        flipped = bytearray(b"".join(records))
        at = draw(st.integers(0, len(flipped) - 1))
        flipped[at] ^= draw(st.integers(1, 255))
        return bytes(flipped), False
    if choice == "cut":
        whole = b"".join(records)
        return whole[: draw(st.integers(0, len(whole) - 1))], False
    if choice == "records":
        kinds = st.sampled_from([RECORD_HEADER, RECORD_PART, RECORD_CHUNK, RECORD_END, b"Z"])
        made = draw(st.lists(st.tuples(kinds, st.binary(max_size=200)), max_size=5))
        return b"".join(encode_record(k, p) for k, p in made), False
    return draw(st.binary(max_size=600)), False


# ---- the fuzz tests --------------------------------------------------------------------


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    path=_paths,
    headers=_headers(),
    body=st.binary(max_size=300),
)
def test_random_requests_with_random_identities(
    harness: Harness, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    # HTTP drops the spaces around a header value before anyone sees it.
    seen = {k: v.strip(" ") for k, v in headers.items()}
    valid = seen in (identity(1, 2), identity(3, 2))

    async def go() -> int:
        async with aiohttp.ClientSession() as http:
            url = f"http://{harness.b.address}{path}"
            async with http.request(method, url, headers=headers, data=body) as resp:
                await resp.read()
                return resp.status

    status = harness.run(go())
    assert status < 500
    if not valid:
        assert status in (400, 403, 421)
    harness.check()


@FUZZ
@given(frames=st.lists(st.one_of(_frame, _printable), min_size=1, max_size=5))
def test_random_frames_on_a_members_stream(harness: Harness, frames: list[bytes | str]) -> None:
    before = len(harness.b.inbox)

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            url = f"http://{harness.b.address}{STREAM_PATH}"
            async with http.ws_connect(url, headers=identity(3, 2)) as ws:
                for frame in frames:
                    if ws.closed:
                        break
                    try:
                        if isinstance(frame, str):
                            await ws.send_str(frame)
                        else:
                            await ws.send_bytes(frame)
                    except (ConnectionError, aiohttp.ClientError):
                        break  # refused: the listener closed the socket

    harness.run(go())
    sent = _well_formed_lines([f for f in frames if isinstance(f, bytes)])
    for m in harness.b.inbox[before:]:
        # Anything delivered from node 3 is exactly a well-formed message it
        # sent (a mutated field can make another valid message).
        assert m.src != 3 or m in sent
    harness.check()


def _well_formed_lines(frames: list[bytes]) -> list[Message]:
    out = []
    for frame in frames:
        for line in frame.split(b"\n"):
            try:
                out.append(decode_message(line))
            except (ValueError, TypeError):
                pass
    return out


@FUZZ
@given(stream=_snapshot_body())
def test_random_snapshot_streams(harness: Harness, stream: tuple[bytes, bool]) -> None:
    body, well_formed = stream
    delivered = len([m for m in harness.b.inbox if isinstance(m, InstallSnapshot)])

    async def go() -> int:
        async with aiohttp.ClientSession() as http:
            url = f"http://{harness.b.address}{SNAPSHOT_PATH}"
            async with http.post(url, data=body, headers=identity(1, 2)) as resp:
                await resp.read()
                return resp.status

    status = harness.run(go())
    now = len([m for m in harness.b.inbox if isinstance(m, InstallSnapshot)])
    if well_formed:
        assert status == 204 and now == delivered + 1
    else:
        assert status in (400, 422) and now == delivered
    harness.check()


@FUZZ
@given(
    prefix=st.sampled_from(
        [b"", b"GET /peer/v1/stream HTTP/1.1\r\n", b"POST /peer/v1/snapshot HTTP/1.1\r\n"]
    ),
    raw=st.binary(max_size=400),
)
def test_raw_bytes_on_the_socket(harness: Harness, prefix: bytes, raw: bytes) -> None:
    async def go() -> None:
        host, port = harness.b.address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(prefix + raw + b"\r\n\r\n")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                answer = b""  # the server may wait for more: closing our end is the test
            assert not answer.startswith(b"HTTP/1.1 5")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    harness.run(go())
    harness.check()
