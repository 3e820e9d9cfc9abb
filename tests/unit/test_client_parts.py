"""The client's pure parts: endpoints, backoff, problem documents as
exceptions, and the SSE frame parser."""

from __future__ import annotations

import random

import orjson
import pytest

from httpcoord.client.aio import RetryPolicy, parse_endpoints
from httpcoord.client.errors import error_from_problem
from httpcoord.client.models import CreateOp, Stat, decode_data, encode_data
from httpcoord.client.watch import frames, lines
from httpcoord.errors import ALL_ERRORS, BadVersion, CoordError, MultiFailed, NoNode


def test_endpoints_take_commas_lists_and_optional_schemes() -> None:
    assert parse_endpoints("127.0.0.1:1, http://h:2/ ,") == ["http://127.0.0.1:1", "http://h:2"]
    assert parse_endpoints(["https://a:3"]) == ["https://a:3"]
    with pytest.raises(ValueError):
        parse_endpoints(" , ")


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy, rng = RetryPolicy(backoff_ms_min=10, backoff_ms_max=100), random.Random(1)
    for round_no, cap_ms in [(0, 10), (1, 20), (3, 80), (4, 100), (40, 100)]:
        pauses = [policy.pause_s(round_no, rng) for _ in range(200)]
        assert all(0 <= p <= cap_ms / 1000 for p in pauses)
        assert max(pauses) > cap_ms / 1000 * 0.8  # spread over the whole range


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_every_problem_code_becomes_the_servers_class(cls: type[CoordError]) -> None:
    error = cls("what happened", path="/x")
    got = error_from_problem(cls.status, orjson.dumps(error.problem()))
    assert type(got) is cls
    assert got.detail == "what happened" and got.extra["path"] == "/x"


def test_a_failed_multi_names_its_failing_op_and_its_error() -> None:
    sent = MultiFailed(1, BadVersion("expected 3"), 3)
    got = error_from_problem(409, orjson.dumps(sent.problem()), op_count=3)
    assert isinstance(got, MultiFailed) and got.failed_op == 1
    assert isinstance(got.error, BadVersion) and got.results == sent.results


def test_an_answer_that_is_no_problem_document_is_still_an_error() -> None:
    got = error_from_problem(502, b"<html>bad gateway</html>")
    assert type(got) is CoordError and got.extra["status"] == 502 and "bad gateway" in got.detail
    assert type(error_from_problem(404, orjson.dumps({"code": "NoNode"}))) is NoNode


def test_data_travels_as_text_or_base64_and_comes_back_as_bytes() -> None:
    for raw in (b"plain", b"\xff\x00binary", b""):
        data, encoding = encode_data(raw)
        assert decode_data({"data": data, "encoding": encoding}) == raw
    op = CreateOp("/a", b"\xfe").to_json()
    assert op["encoding"] == "base64" and op["op"] == "create"


def test_a_stat_reads_every_field() -> None:
    fields = {name: i for i, name in enumerate(Stat.__slots__)}
    fields["ephemeral_owner"] = "s1"
    assert Stat.from_json(fields).ephemeral


class Chunks:
    def __init__(self, raw: bytes, size: int) -> None:
        self.chunks = [raw[i : i + size] for i in range(0, len(raw), size)]

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


SSE = (
    b'retry: 1000\nid: 41\n\n: keepalive\n\nevent: created\ndata: {"a":1}\n\n'
    b'event: children_changed\nid: 42\ndata: {"b":2}\r\n\r\nevent: cut off\n'
)


@pytest.mark.parametrize("chunk_bytes", [1, 7, len(SSE)])
async def test_sse_frames_are_parsed_as_the_spec_reads_them(chunk_bytes: int) -> None:
    got = [(f.event, f.data, f.id) async for f in frames(lines(Chunks(SSE, chunk_bytes)))]
    assert got == [
        ("message", [], "41"),
        ("created", ['{"a":1}'], None),
        ("children_changed", ['{"b":2}'], "42"),
    ]  # a frame the stream ended in the middle of is not handed out


async def test_sse_lines_may_be_longer_than_aiohttps_readline_takes() -> None:
    big = b"data: " + b"x" * (3 << 20) + b"\n\n"
    got = [line async for line in lines(Chunks(big, 1 << 16))]
    assert got == [big[:-2], b""]
    with pytest.raises(ValueError):
        [line async for line in lines(Chunks(big, 1 << 16), line_bytes_max=1 << 20)]
