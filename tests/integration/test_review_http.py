"""Review findings at the HTTP edge, against a real server process."""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import ServerProcess


def first_response_head(server: ServerProcess, request: bytes) -> bytes:
    """Send raw bytes; return the head of the first response (interim or final)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5.0) as sock:
        sock.sendall(request)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


@pytest.mark.parametrize(
    "target",
    [
        "POST /v1/nodes/expect-big",
        "PUT /v1/nodes/expect-big",
        "POST /v1/multi",
        "POST /v1/sessions",
    ],
)
def test_expect_continue_with_an_oversized_body_is_refused_before_100(
    server: ServerProcess, target: str
) -> None:
    # A client that asks first must not be told to send 100 MiB that the
    # server will refuse anyway.
    declared = 100 * 1024 * 1024
    head = (
        f"{target} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    answer = first_response_head(server, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer
    assert b"X-Coord-Zxid" in answer


def test_expect_continue_within_the_limit_still_gets_100(server: ServerProcess) -> None:
    head = (
        b"POST /v1/nodes/expect-small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 Continue"), first
        sock.sendall(b"hi")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 201"), answer
