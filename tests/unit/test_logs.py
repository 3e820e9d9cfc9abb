"""Log lines: the three formats, and request ids."""

from __future__ import annotations

import logging

import orjson
import pytest

from httpcoord import logs


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def emit(fmt: str, message: str, rid: str = "", worker: int = 0) -> str:
        logs.configure("info", fmt, node_id=2, worker_id=worker)
        token = logs.REQUEST_ID.set(rid)
        try:
            logging.getLogger("httpcoord.test").info(message)
        finally:
            logs.REQUEST_ID.reset(token)
        return capsys.readouterr().err.strip()

    yield emit
    logging.getLogger().handlers.clear()


def test_json_lines_carry_node_worker_and_request(lines) -> None:  # type: ignore[no-untyped-def]
    record = orjson.loads(lines("json", 'said "hi"\nthen left', rid="abc-1", worker=3))
    assert record["msg"] == 'said "hi"\nthen left'
    assert (record["level"], record["logger"], record["node"], record["worker"]) == (
        "info",
        "httpcoord.test",
        2,
        3,
    )
    assert record["request_id"] == "abc-1"
    assert record["ts"].endswith("+00:00")
    # Outside a request, and in the node's own process: neither key.
    bare = orjson.loads(lines("json", "idle"))
    assert "request_id" not in bare and "worker" not in bare


def test_logfmt_quotes_what_needs_it(lines) -> None:  # type: ignore[no-untyped-def]
    line = lines("logfmt", 'a "b" c', rid="r1")
    assert 'msg="a \\"b\\" c"' in line
    assert " level=info " in line and " request_id=r1" in line and " node=2" in line
    assert "\n" not in lines("logfmt", "two\nlines")


def test_text_names_the_request(lines) -> None:  # type: ignore[no-untyped-def]
    assert lines("text", "hello", rid="r2").endswith("httpcoord.test: hello (request r2)")
    assert lines("text", "hello", worker=1).endswith("httpcoord.test[worker 1]: hello")


@pytest.mark.parametrize("given", ["abc", "A.b_c:d-1", "x" * 128])
def test_a_sane_request_id_is_kept(given: str) -> None:
    assert logs.request_id(given) == given


@pytest.mark.parametrize("given", [None, "", "x" * 129, "a b", "a,b", "é", "a\nb"])
def test_any_other_gets_a_fresh_one(given: str | None) -> None:
    fresh = logs.request_id(given)
    assert fresh != given and len(fresh) == 16 and logs.request_id(fresh) == fresh
    assert logs.request_id(given) != fresh  # never the same twice
