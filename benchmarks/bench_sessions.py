#!/usr/bin/env python3
"""Sessions at scale: N open sessions heartbeating every ttl/3 against one node.

Starts one httpcoord node on a free 127.0.0.1 port in a temporary data dir,
then a load client in its own process that opens N sessions (default 10,000,
ttl 10 s; concurrently, a bounded number in flight) and runs a paced load:
every session heartbeats (POST /v1/sessions/{id}/heartbeat) every ttl/3, the
phases spread evenly, so the server sees a steady N / (ttl/3) heartbeats/s
(3,000/s by default). After a warm-up it measures a fixed window and reports:

  - heartbeats/s achieved (must be within --rate-tolerance of the target),
  - latency p50/p99/max, per request, client side (write to last byte),
  - the server's CPU share (% of one core; utime+stime from /proc/<pid>/stat
    over the window) and RSS,
  - the load client's own CPU, the machine's total busy CPU, and what
    neither accounts for,
  - answers other than 200 (a 404 means a session expired: the run fails),
  - that all N sessions are still open at the end (GET /v1/sessions).

Three ways to connect:

  --connections K            K keep-alive connections shared by all sessions
  --connection-per-session   one keep-alive connection per session (N sockets,
                             like N real clients)
  --websocket                one keepalive WebSocket per session
                             (GET /v1/sessions/{id}/keepalive): a heartbeat is
                             one small masked text frame, with no reply

    python benchmarks/bench_sessions.py
    python benchmarks/bench_sessions.py --connection-per-session
    python benchmarks/bench_sessions.py --websocket

With --websocket there is no answer per heartbeat, so it reports frames/s
written, the server's CPU per frame, every socket the server closed (a close
frame or EOF means a session died: the run fails) and, as a liveness proxy,
the latency of one plain POST heartbeat every --probe-every seconds on a
separate connection.

The load client writes pre-built HTTP/1.1 requests on raw asyncio transports
(uvloop when installed) and parses only the status line and Content-Length,
so it costs a fraction of the server it measures. Exits 1 on any failed
heartbeat, closed WebSocket, missing session or a rate off target, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    HOST,
    RESULTS_DIR,
    Server,
    filesystem_type,
    http_request,
    httpcoord_server,
    machine_ticks,
    percentile,
    process_cpu_ticks,
    raise_nofile,
    save_results,
    stop_process,
    take_response,
)

# ---- /proc and limits ------------------------------------------------------------------


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


# ---- the load client: raw HTTP/1.1 over asyncio transports --------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight (no pipelining).

    ``send`` writes pre-built request bytes; when the whole response is in
    (status line, headers, Content-Length bytes of body) ``on_done(conn,
    status, body, tag, t_sent)`` runs. Only what a heartbeat needs is parsed.
    """

    __slots__ = ("buf", "busy", "lost", "on_done", "pending", "t_sent", "tag", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.tag: Any = None
        self.t_sent = 0.0
        self.on_done: Callable[[Conn, int, bytes, Any, float], None] | None = None
        self.lost: BaseException | None = None
        self.pending: collections.deque[Any] = collections.deque()  # per-connection queue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self.busy and self.on_done is not None:
            self.busy = False
            self.on_done(self, -1, b"", self.tag, self.t_sent)

    def send(self, data: bytes, tag: Any, on_done: Callable[..., None]) -> None:
        assert not self.busy and self.transport is not None
        self.busy, self.tag, self.on_done = True, tag, on_done
        self.t_sent = time.perf_counter()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        got = take_response(buf)
        if got is None:
            self.buf = buf
            return
        status, body, self.buf = got
        self.busy = False
        on_done = self.on_done
        assert on_done is not None
        on_done(self, status, body, self.tag, self.t_sent)


async def connect_all(
    loop: asyncio.AbstractEventLoop,
    port: int,
    count: int,
    concurrency: int,
    deadline: float,
    factory: Callable[[], Conn] = Conn,
) -> list[Conn]:
    conns: list[Conn | None] = [None] * count
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError(f"opening {count} connections took too long")
            _, proto = await asyncio.wait_for(loop.create_connection(factory, HOST, port), timeout)
            conns[i] = proto

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return [c for c in conns if c is not None]


def request_once(conn: Conn, data: bytes, timeout: float) -> asyncio.Future[tuple[int, bytes]]:
    """Send one request on an idle connection; a future of (status, body)."""
    fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    def done(_c: Conn, status: int, body: bytes, _tag: Any, _t: float) -> None:
        if not fut.done():
            fut.set_result((status, body))

    conn.send(data, None, done)
    return asyncio.ensure_future(asyncio.wait_for(fut, timeout))


def build_request(method: str, path: str, port: int, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


async def open_sessions(
    conns: list[Conn],
    per_session: bool,
    n: int,
    ttl_ms: int,
    port: int,
    concurrency: int,
    deadline: float,
) -> list[str]:
    """Open n sessions, at most ``concurrency`` in flight; ids in index order."""
    ids: list[str | None] = [None] * n
    req = build_request("POST", "/v1/sessions", port, json.dumps({"ttl_ms": ttl_ms}).encode())
    workers = min(concurrency, n, n if per_session else len(conns))

    async def worker(w: int) -> None:
        for i in range(w, n, workers):
            conn = conns[i] if per_session else conns[w]
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError(f"opening {n} sessions took too long")
            status, body = await request_once(conn, req, timeout)
            if status != 201:
                raise RuntimeError(f"POST /v1/sessions answered {status}: {body[:300]!r}")
            answer = json.loads(body)
            if answer["ttl_ms"] != ttl_ms:
                raise RuntimeError(
                    f"asked for ttl {ttl_ms} ms, granted {answer['ttl_ms']} ms "
                    "(see --session-ttl-min-ms/--session-ttl-max-ms)"
                )
            ids[i] = answer["id"]

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return [i for i in ids if i is not None]


# ---- --websocket: one keepalive WebSocket per session ----------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
# RFC 6455 wants a fresh unpredictable mask per client frame (it keeps a
# hostile page from steering what a proxy's cache sees). On loopback, for a
# benchmark, a fixed mask is acceptable: every heartbeat is the same pre-built
# bytes, so the client spends nothing per frame but the write.
WS_MASK = b"\x5a\x3c\x96\xe1"
WS_PAYLOAD = b"hb"


def ws_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame (opcode 1: text) of a short payload."""
    assert len(payload) < 126
    masked = bytes(b ^ WS_MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + WS_MASK + masked


WS_HEARTBEAT_FRAME = ws_client_frame(WS_PAYLOAD)


def ws_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class WsConn(Conn):
    """A connection that answers HTTP until it is upgraded, then carries a
    WebSocket. The server sends nothing on a live keepalive socket: every
    frame it sends (a close above all) and EOF go to ``on_event(conn, what)``.
    """

    __slots__ = ("close_info", "on_event", "upgraded", "upgrading", "ws_key")

    def __init__(self) -> None:
        super().__init__()
        self.upgrading = False
        self.upgraded = False
        self.ws_key = b""
        self.close_info: str | None = None  # set once the server closed it, how
        self.on_event: Callable[[WsConn, str], None] | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.upgraded and self.close_info is None:
            self.close_info = f"EOF ({self.lost!r})"
            if self.on_event is not None:
                self.on_event(self, self.close_info)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self._frames(data)
            return
        if not self.upgrading:
            super().data_received(data)
            return
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        head = buf[:end]
        if int(head[9:12]) != 101:
            self.buf = b""
            self.upgrading = False
            super().data_received(buf)  # an HTTP error answer, with its body
            return
        want = b"\r\nsec-websocket-accept: " + ws_accept(self.ws_key).lower()
        if want not in head.lower():
            self.upgrading, self.busy, self.buf = False, False, b""
            assert self.on_done is not None
            self.on_done(self, 101, b"without the right Sec-WebSocket-Accept: " + head, None, 0)
            return
        self.upgrading, self.upgraded, self.busy = False, True, False
        self.buf = b""
        assert self.on_done is not None
        self.on_done(self, 101, b"", self.tag, self.t_sent)
        if len(buf) > end + 4:
            self._frames(buf[end + 4 :])

    def _frames(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while len(buf) >= 2:
            opcode, length, hdr = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, hdr = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, hdr = int.from_bytes(buf[2:10], "big"), 10
            if buf[1] & 0x80:
                hdr += 4  # a masked server frame is a protocol error, still parse it
            if len(buf) < hdr + length:
                break
            payload, buf = buf[hdr : hdr + length], buf[hdr + length :]
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                what = f"close frame {code} {payload[2:].decode(errors='replace')!r}"
            else:
                what = f"unexpected frame, opcode {opcode:#x}, {payload[:60]!r}"
            if self.close_info is None:
                self.close_info = what
            if self.on_event is not None:
                self.on_event(self, what)
        self.buf = buf


def build_upgrade(path: str, port: int, key: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def upgrade_all(
    conns: list[WsConn], ids: list[str], port: int, concurrency: int, deadline: float
) -> None:
    """On connection i (which opened session i), GET /v1/sessions/{id}/keepalive
    as a WebSocket upgrade; anything but a 101 with the right accept fails."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(ids):
            i = next_index
            next_index += 1
            conn = conns[i]
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError(f"upgrading {len(ids)} connections took too long")
            conn.ws_key = base64.b64encode(os.urandom(16))
            conn.upgrading = True
            req = build_upgrade(f"/v1/sessions/{ids[i]}/keepalive", port, conn.ws_key)
            status, body = await request_once(conn, req, timeout)
            if status != 101 or not conn.upgraded:
                raise RuntimeError(f"keepalive upgrade of session {i} answered {status}: {body!r}")

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(ids)))))


class Load:
    """The paced heartbeat load and its measurements."""

    def __init__(
        self, conns: list[Conn], per_session: bool, requests: list[bytes], rate: float
    ) -> None:
        self.conns = conns
        self.per_session = per_session
        self.requests = requests
        self.rate = rate  # heartbeats per second, all sessions together
        self.idle: list[Conn] = [] if per_session else list(conns)
        self.shared_pending: collections.deque[tuple[int, float]] = collections.deque()
        self.measuring = False
        self.latencies: list[float] = []  # seconds, write -> response, in the window
        self.sched_latencies: list[float] = []  # seconds, scheduled time -> response
        self.lags: list[float] = []  # seconds, scheduled time -> write
        self.sent_in_window = 0
        self.done_in_window = 0
        self.done_total = 0
        self.statuses: collections.Counter[int] = collections.Counter()  # whole run
        self.bad_samples: list[str] = []
        self.in_flight_max = 0
        self.in_flight = 0
        self.queued_max = 0
        self.sent = 0  # heartbeats dispatched since the load started
        # One entry per second of the window: answers, worst latency, and the
        # server's and the machine's CPU over that second (to tell a server
        # stall from a starved machine).
        self.timeline: list[dict[str, float]] = []
        self.second_done = 0
        self.second_max = 0.0

    # A heartbeat "tag" is (session index, scheduled perf_counter time, measured?).

    def _fail(self, msg: str) -> None:
        if len(self.bad_samples) < 20:
            self.bad_samples.append(msg)
            print(f"!! {msg}", file=sys.stderr, flush=True)

    def dispatch(self, session: int, scheduled: float) -> None:
        if self.per_session:
            conn = self.conns[session]
            if conn.lost is not None:
                self.statuses[-1] += 1
                self._fail(f"session {session}: connection lost ({conn.lost!r})")
                return
            if conn.busy:
                conn.pending.append((session, scheduled))
                self.queued_max = max(self.queued_max, len(conn.pending))
                return
            self._send(conn, session, scheduled)
        else:
            if not self.idle:
                self.shared_pending.append((session, scheduled))
                self.queued_max = max(self.queued_max, len(self.shared_pending))
                return
            self._send(self.idle.pop(), session, scheduled)

    def _send(self, conn: Conn, session: int, scheduled: float) -> None:
        measured = self.measuring
        conn.send(self.requests[session], (session, scheduled, measured), self._done)
        if measured:
            self.sent_in_window += 1
            self.lags.append(conn.t_sent - scheduled)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)

    def _done(self, conn: Conn, status: int, body: bytes, tag: Any, t_sent: float) -> None:
        now = time.perf_counter()
        session, scheduled, measured = tag
        self.in_flight -= 1
        self.done_total += 1
        self.statuses[status] += 1
        if status != 200:
            what = "connection lost" if status < 0 else f"{status} {body[:200]!r}"
            hint = " (404: the session expired)" if status == 404 else ""
            self._fail(f"heartbeat of session {session}: {what}{hint}")
        if measured and self.measuring:
            self.done_in_window += 1
            self.latencies.append(now - t_sent)
            self.sched_latencies.append(now - scheduled)
            self.second_done += 1
            self.second_max = max(self.second_max, now - t_sent)
        if conn.lost is not None:
            if not self.per_session:
                self.conns = [c for c in self.conns if c is not conn]
            return
        if self.per_session:
            if conn.pending:
                self._send(conn, *conn.pending.popleft())
        elif self.shared_pending:
            self._send(conn, *self.shared_pending.popleft())
        else:
            self.idle.append(conn)

    async def run(
        self,
        start: float,
        warmup: float,
        duration: float,
        n: int,
        on_window: Callable[[str], None],
        tick: float,
        server_pid: int,
    ) -> tuple[float, float]:
        """Heartbeat number j goes to session j % n at start + j / rate.
        Returns the (perf_counter) start and end of the measured window."""
        w0, w1 = start + warmup, start + warmup + duration
        window_started = False
        next_second = w0
        sample = (0, (0, 0))
        while True:
            now = time.perf_counter()
            if not window_started and now >= w0:
                window_started = True
                self.measuring = True
                on_window("start")
                w0 = time.perf_counter()
                w1 = w0 + duration
                next_second = w0 + 1
                sample = (process_cpu_ticks(server_pid), machine_ticks())
            if window_started and now >= next_second:
                self._second(sample, now - w0, server_pid)
                sample = (process_cpu_ticks(server_pid), machine_ticks())
                next_second += 1
            if window_started and now >= w1:
                self.measuring = False
                on_window("end")
                return w0, time.perf_counter()
            self.dispatch_due(start, n, now)
            await asyncio.sleep(tick)

    def _second(self, sample: tuple[int, tuple[int, int]], t: float, server_pid: int) -> None:
        server, (busy, total) = process_cpu_ticks(server_pid), machine_ticks()
        wall = (total - sample[1][1]) / (os.cpu_count() or 1)
        self.timeline.append(
            {
                "t_s": round(t, 2),
                "done": self.second_done,
                "max_ms": round(self.second_max * 1000, 2),
                "server_cpu_pct": round((server - sample[0]) / wall * 100, 1) if wall else 0.0,
                "machine_busy_cores": round((busy - sample[1][0]) / wall, 2) if wall else 0.0,
            }
        )
        self.second_done, self.second_max = 0, 0.0

    def dispatch_due(self, start: float, n: int, now: float) -> None:
        due = int((now - start) * self.rate) + 1
        while self.sent < due:
            self.dispatch(self.sent % n, start + self.sent / self.rate)
            self.sent += 1


class WsLoad(Load):
    """The paced load over keepalive WebSockets: heartbeat j writes the
    pre-built frame on session j % n's socket. No answer comes back, so what
    is measured is what was written (and how late), and every event the
    server sends: on a live session it sends none."""

    def __init__(self, conns: list[WsConn], frame: bytes, rate: float) -> None:
        super().__init__(list(conns), True, [], rate)
        self.ws_conns = conns
        self.frame = frame
        self.frames_total = 0
        self.write_backlog_max = 0  # bytes left in a transport's buffer after a write
        self.closed: dict[int, str] = {}  # connection index -> how the server closed it
        index = {id(c): i for i, c in enumerate(conns)}
        for conn in conns:
            conn.on_event = lambda c, what: self._event(index[id(c)], what)

    def _event(self, session: int, what: str) -> None:
        if session not in self.closed:
            self.closed[session] = what
        self._fail(f"session {session}: the server sent {what}: the session died")

    def dispatch(self, session: int, scheduled: float) -> None:
        conn = self.ws_conns[session]
        if conn.close_info is not None or conn.lost is not None or conn.transport is None:
            self.statuses[-1] += 1
            return  # already reported when it closed
        conn.transport.write(self.frame)
        self.frames_total += 1
        backlog = conn.transport.get_write_buffer_size()
        self.write_backlog_max = max(self.write_backlog_max, backlog)
        if self.measuring:
            lag = time.perf_counter() - scheduled
            self.sent_in_window += 1
            self.lags.append(lag)
            self.second_done += 1
            self.second_max = max(self.second_max, lag)


class Probe:
    """One plain POST /v1/sessions/{id}/heartbeat every ``every`` seconds on
    its own keep-alive connection: the server's answer time under the load."""

    def __init__(self, conn: Conn, requests: list[bytes], every: float, load: Load) -> None:
        self.conn, self.requests, self.every, self.load = conn, requests, every, load
        self.latencies: list[float] = []  # in the window
        self.statuses: collections.Counter[int] = collections.Counter()
        self.sent = 0
        self.unanswered = 0

    def _done(self, _c: Conn, status: int, body: bytes, measured: bool, t_sent: float) -> None:
        latency = time.perf_counter() - t_sent
        self.statuses[status] += 1
        if status != 200:
            self.load._fail(f"probe heartbeat answered {status}: {body[:200]!r}")
        elif measured and self.load.measuring:
            self.latencies.append(latency)

    async def run(self) -> None:
        next_at = time.perf_counter()
        while True:
            if self.conn.lost is not None:
                self.load._fail(f"probe connection lost ({self.conn.lost!r})")
                return
            if self.conn.busy:
                self.unanswered += 1  # the previous probe is still waiting
            else:
                req = self.requests[self.sent % len(self.requests)]
                self.conn.send(req, self.load.measuring, self._done)
                self.sent += 1
            next_at += self.every
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def sample_idle(
    cfg: dict[str, Any], result: dict[str, Any], log: Callable[[str], None]
) -> None:
    """The server's CPU with the connections open but nothing asked of it."""
    if cfg["idle_sample"] <= 0:
        return
    server_pid = cfg["server_pid"]
    c0, m0, t0 = process_cpu_ticks(server_pid), machine_ticks(), time.perf_counter()
    await asyncio.sleep(cfg["idle_sample"])
    c1, m1, t1 = process_cpu_ticks(server_pid), machine_ticks(), time.perf_counter()
    result["idle_server_cpu_pct"] = (c1 - c0) / CLK_TCK / (t1 - t0) * 100
    wall = (m1[1] - m0[1]) / (os.cpu_count() or 1)
    result["idle_machine_busy_cores"] = (m1[0] - m0[0]) / wall if wall else 0.0
    log(
        f"idle: server {result['idle_server_cpu_pct']:.1f}% of a core, machine busy "
        f"{result['idle_machine_busy_cores']:.2f} cores"
    )


async def client_main(cfg: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    port, n, ttl_ms = cfg["port"], cfg["sessions"], cfg["ttl_ms"]
    per_session = cfg["per_session"]
    server_pid = cfg["server_pid"]
    result: dict[str, Any] = {"ok": False}

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    deadline = time.monotonic() + cfg["setup_timeout"]
    conn_count = n if per_session else cfg["connections"]
    t, c = time.monotonic(), process_cpu_ticks(server_pid)
    conns = await connect_all(loop, port, conn_count, cfg["connect_concurrency"], deadline)
    result["connect_s"] = time.monotonic() - t
    result["connect_server_cpu_s"] = (process_cpu_ticks(server_pid) - c) / CLK_TCK
    log(
        f"{len(conns)} keep-alive connections open in {result['connect_s']:.1f}s "
        f"(server CPU {result['connect_server_cpu_s']:.1f}s)"
    )
    await sample_idle(cfg, result, log)

    t, c = time.monotonic(), process_cpu_ticks(server_pid)
    ids = await open_sessions(
        conns, per_session, n, ttl_ms, port, cfg["open_concurrency"], deadline
    )
    t_opened = time.monotonic()
    result["open_s"] = t_opened - t
    result["open_per_s"] = n / result["open_s"] if result["open_s"] else None
    result["open_server_cpu_s"] = (process_cpu_ticks(server_pid) - c) / CLK_TCK
    log(
        f"{len(ids)} sessions opened in {result['open_s']:.1f}s "
        f"({result['open_per_s']:.0f}/s, ttl {ttl_ms} ms, "
        f"server CPU {result['open_server_cpu_s']:.1f}s)"
    )
    if result["open_s"] > ttl_ms / 1000 * 0.6:
        log(
            "warning: opening took over 60% of the ttl; the first sessions may expire "
            "before their first heartbeat"
        )

    requests = [build_request("POST", f"/v1/sessions/{sid}/heartbeat", port) for sid in ids]
    interval = ttl_ms / 1000 / cfg["beats_per_ttl"]
    rate = n / interval
    load = Load(conns, per_session, requests, rate)
    samples: dict[str, Any] = {}

    def on_window(edge: str) -> None:
        samples[edge] = {
            "server_ticks": process_cpu_ticks(server_pid),
            "client_cpu_s": time.process_time(),
            "machine": machine_ticks(),
            "wall": time.perf_counter(),
        }
        if edge == "start":
            log(f"warm-up done; measuring {cfg['duration']:g}s")

    log(
        f"pacing {n} sessions, one heartbeat each every {interval * 1000:.0f} ms: "
        f"{rate:.0f}/s target, warm-up {cfg['warmup']:g}s"
    )
    # The first heartbeats go to the sessions opened first, so no session waits
    # longer than the opening time plus one interval for its first one.
    start = time.perf_counter()
    _w0, _w1 = await load.run(
        start, cfg["warmup"], cfg["duration"], n, on_window, cfg["tick"], server_pid
    )

    # Keep heartbeating while the session list is read (outside the window).
    checker = (await connect_all(loop, port, 1, 1, time.monotonic() + 10))[0]
    listing = asyncio.ensure_future(
        request_once(checker, build_request("GET", "/v1/sessions", port), 30.0)
    )
    keep_going = time.perf_counter()
    while not listing.done() and time.perf_counter() - keep_going < 30:
        load.dispatch_due(start, n, time.perf_counter())
        await asyncio.sleep(cfg["tick"])
    status, body = await listing
    if status != 200:
        raise RuntimeError(f"GET /v1/sessions answered {status}: {body[:300]!r}")
    listed = {s["id"] for s in json.loads(body)["sessions"]}
    missing = [sid for sid in ids if sid not in listed]
    # Let what is in flight land (bounded), then close.
    drain_until = time.monotonic() + 5
    while load.in_flight and time.monotonic() < drain_until:
        await asyncio.sleep(0.01)
    for conn in [*conns, checker]:
        if conn.transport is not None:
            conn.transport.close()

    s0, s1 = samples["start"], samples["end"]
    window = s1["wall"] - s0["wall"]
    lat = sorted(load.latencies)
    sched = sorted(load.sched_latencies)
    lags = sorted(load.lags)
    server_cpu_s = (s1["server_ticks"] - s0["server_ticks"]) / CLK_TCK
    client_cpu_s = s1["client_cpu_s"] - s0["client_cpu_s"]
    busy = s1["machine"][0] - s0["machine"][0]
    total = s1["machine"][1] - s0["machine"][1]
    cpus = os.cpu_count() or 1
    wall_ticks = total / cpus
    result.update(
        {
            "ok": True,
            "connections": len(conns),
            "target_per_s": rate,
            "interval_ms": interval * 1000,
            "window_s": window,
            "sent_in_window": load.sent_in_window,
            "done_in_window": load.done_in_window,
            "achieved_per_s": load.done_in_window / window if window else 0.0,
            "p50_ms": percentile(lat, 50) * 1000,
            "p90_ms": percentile(lat, 90) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "p999_ms": percentile(lat, 99.9) * 1000,
            "max_ms": (lat[-1] if lat else 0.0) * 1000,
            "mean_ms": (sum(lat) / len(lat) if lat else 0.0) * 1000,
            "from_schedule_p99_ms": percentile(sched, 99) * 1000,
            "from_schedule_max_ms": (sched[-1] if sched else 0.0) * 1000,
            "send_lag_p99_ms": percentile(lags, 99) * 1000,
            "send_lag_max_ms": (lags[-1] if lags else 0.0) * 1000,
            "in_flight_max": load.in_flight_max,
            "queued_max": load.queued_max,
            "server_cpu_s": server_cpu_s,
            "server_cpu_pct": server_cpu_s / window * 100 if window else 0.0,
            "client_cpu_s": client_cpu_s,
            "client_cpu_pct": client_cpu_s / window * 100 if window else 0.0,
            "machine_busy_cores": busy / wall_ticks if wall_ticks else 0.0,
            "other_cores": (
                max(0.0, busy - (server_cpu_s + client_cpu_s) * CLK_TCK) / wall_ticks
                if wall_ticks
                else 0.0
            ),
            "server_rss_kib": rss_kib(server_pid),
            "client_rss_kib": rss_kib(os.getpid()),
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "non_200": sum(v for k, v in load.statuses.items() if k != 200),
            "heartbeats_total": load.done_total,
            "unanswered_at_end": load.in_flight,
            "timeline": load.timeline,
            "bad_samples": load.bad_samples,
            "sessions_listed": len(listed),
            "sessions_missing": len(missing),
            "missing_sample": missing[:5],
        }
    )
    return result


async def client_main_ws(cfg: dict[str, Any]) -> dict[str, Any]:
    """--websocket: N connections, each opens its session (POST) and upgrades
    to that session's keepalive WebSocket; then one frame per session every
    ttl/3, and a plain POST heartbeat every --probe-every s on the side."""
    loop = asyncio.get_running_loop()
    port, n, ttl_ms = cfg["port"], cfg["sessions"], cfg["ttl_ms"]
    server_pid = cfg["server_pid"]
    result: dict[str, Any] = {"ok": False}

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    deadline = time.monotonic() + cfg["setup_timeout"]
    t, c = time.monotonic(), process_cpu_ticks(server_pid)
    raw = await connect_all(loop, port, n, cfg["connect_concurrency"], deadline, WsConn)
    conns = [conn for conn in raw if isinstance(conn, WsConn)]
    result["connect_s"] = time.monotonic() - t
    result["connect_server_cpu_s"] = (process_cpu_ticks(server_pid) - c) / CLK_TCK
    log(
        f"{len(conns)} connections open in {result['connect_s']:.1f}s "
        f"(server CPU {result['connect_server_cpu_s']:.1f}s)"
    )
    await sample_idle(cfg, result, log)

    t, c = time.monotonic(), process_cpu_ticks(server_pid)
    ids = await open_sessions(list(conns), True, n, ttl_ms, port, cfg["open_concurrency"], deadline)
    t_opened = time.monotonic()
    result["open_s"] = t_opened - t
    result["open_per_s"] = n / result["open_s"] if result["open_s"] else None
    result["open_server_cpu_s"] = (process_cpu_ticks(server_pid) - c) / CLK_TCK
    # The upgrade is itself a heartbeat; session i's first frame follows
    # within one interval of the pacing start.
    await upgrade_all(conns, ids, port, cfg["open_concurrency"], deadline)
    result["upgrade_s"] = time.monotonic() - t_opened
    result["upgrade_server_cpu_s"] = (process_cpu_ticks(server_pid) - c) / CLK_TCK - result[
        "open_server_cpu_s"
    ]
    log(
        f"{len(ids)} sessions opened in {result['open_s']:.1f}s, upgraded to keepalive "
        f"WebSockets in {result['upgrade_s']:.1f}s (ttl {ttl_ms} ms, server CPU "
        f"{result['open_server_cpu_s']:.1f}s + {result['upgrade_server_cpu_s']:.1f}s)"
    )
    if result["open_s"] + result["upgrade_s"] > ttl_ms / 1000 * 0.6:
        log(
            "warning: opening and upgrading took over 60% of the ttl; the first sessions "
            "may expire before their first frame"
        )

    interval = ttl_ms / 1000 / cfg["beats_per_ttl"]
    rate = n / interval
    load = WsLoad(conns, WS_HEARTBEAT_FRAME, rate)
    probe_conn = (await connect_all(loop, port, 1, 1, time.monotonic() + 10))[0]
    step = max(1, n // 97)
    probe = Probe(
        probe_conn,
        [build_request("POST", f"/v1/sessions/{sid}/heartbeat", port) for sid in ids[::step]],
        cfg["probe_every"],
        load,
    )
    samples: dict[str, Any] = {}

    def on_window(edge: str) -> None:
        samples[edge] = {
            "server_ticks": process_cpu_ticks(server_pid),
            "client_cpu_s": time.process_time(),
            "machine": machine_ticks(),
            "wall": time.perf_counter(),
            "frames": load.frames_total,
        }
        if edge == "start":
            log(f"warm-up done; measuring {cfg['duration']:g}s")

    log(
        f"pacing {n} WebSockets, one frame each every {interval * 1000:.0f} ms: "
        f"{rate:.0f}/s target, warm-up {cfg['warmup']:g}s; a POST heartbeat every "
        f"{cfg['probe_every']:g}s on the side"
    )
    start = time.perf_counter()
    probe_task = asyncio.ensure_future(probe.run())
    await load.run(start, cfg["warmup"], cfg["duration"], n, on_window, cfg["tick"], server_pid)

    # Keep the frames going while the session list is read (outside the window).
    checker = (await connect_all(loop, port, 1, 1, time.monotonic() + 10))[0]
    listing = asyncio.ensure_future(
        request_once(checker, build_request("GET", "/v1/sessions", port), 30.0)
    )
    keep_going = time.perf_counter()
    while not listing.done() and time.perf_counter() - keep_going < 30:
        load.dispatch_due(start, n, time.perf_counter())
        await asyncio.sleep(cfg["tick"])
    status, body = await listing
    if status != 200:
        raise RuntimeError(f"GET /v1/sessions answered {status}: {body[:300]!r}")
    listed = {s["id"] for s in json.loads(body)["sessions"]}
    missing = [sid for sid in ids if sid not in listed]
    probe_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe_task
    probe_unanswered = probe.unanswered + (1 if probe_conn.busy else 0)
    closed = dict(load.closed)  # before we close anything ourselves
    for conn in conns:
        conn.on_event = None
    for any_conn in [*conns, probe_conn, checker]:
        if any_conn.transport is not None:
            any_conn.transport.close()

    s0, s1 = samples["start"], samples["end"]
    window = s1["wall"] - s0["wall"]
    frames = s1["frames"] - s0["frames"]
    lags = sorted(load.lags)
    probes = sorted(probe.latencies)
    server_cpu_s = (s1["server_ticks"] - s0["server_ticks"]) / CLK_TCK
    client_cpu_s = s1["client_cpu_s"] - s0["client_cpu_s"]
    busy = s1["machine"][0] - s0["machine"][0]
    total = s1["machine"][1] - s0["machine"][1]
    wall_ticks = total / (os.cpu_count() or 1)
    result.update(
        {
            "ok": True,
            "connections": len(conns),
            "target_per_s": rate,
            "interval_ms": interval * 1000,
            "window_s": window,
            "frames_in_window": frames,
            "achieved_per_s": frames / window if window else 0.0,
            "frames_total": load.frames_total,
            "frame_bytes": len(WS_HEARTBEAT_FRAME),
            "send_lag_p99_ms": percentile(lags, 99) * 1000,
            "send_lag_max_ms": (lags[-1] if lags else 0.0) * 1000,
            "write_backlog_max_bytes": load.write_backlog_max,
            "server_closed": len(closed),
            "server_closed_sample": [f"session {i}: {w}" for i, w in list(closed.items())[:5]],
            "frames_on_dead_sockets": load.statuses.get(-1, 0),
            "probe_every_s": cfg["probe_every"],
            "probes_in_window": len(probes),
            "probe_p50_ms": percentile(probes, 50) * 1000,
            "probe_p99_ms": percentile(probes, 99) * 1000,
            "probe_max_ms": (probes[-1] if probes else 0.0) * 1000,
            "probe_statuses": {str(k): v for k, v in sorted(probe.statuses.items())},
            "probe_non_200": sum(v for k, v in probe.statuses.items() if k != 200),
            "probe_unanswered": probe_unanswered,
            "server_cpu_s": server_cpu_s,
            "server_cpu_pct": server_cpu_s / window * 100 if window else 0.0,
            "server_cpu_us_per_frame": server_cpu_s / frames * 1e6 if frames else 0.0,
            "client_cpu_s": client_cpu_s,
            "client_cpu_pct": client_cpu_s / window * 100 if window else 0.0,
            "machine_busy_cores": busy / wall_ticks if wall_ticks else 0.0,
            "other_cores": (
                max(0.0, busy - (server_cpu_s + client_cpu_s) * CLK_TCK) / wall_ticks
                if wall_ticks
                else 0.0
            ),
            "server_rss_kib": rss_kib(server_pid),
            "client_rss_kib": rss_kib(os.getpid()),
            "timeline": load.timeline,
            "bad_samples": load.bad_samples,
            "sessions_listed": len(listed),
            "sessions_missing": len(missing),
            "missing_sample": missing[:5],
        }
    )
    return result


def client_entry(cfg_path: str) -> int:
    """The load client process: run, write its result JSON next to the config."""
    cfg = json.loads(Path(cfg_path).read_text())
    raise_nofile(cfg["sessions"] + 100)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run((client_main_ws if cfg.get("websocket") else client_main)(cfg))
    Path(cfg["result_path"]).write_text(json.dumps(result) + "\n")
    return 0


# ---- the orchestrating process ----------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=10_000, help="sessions opened and kept alive")
    p.add_argument("--ttl-ms", type=int, default=10_000, help="session ttl asked for")
    p.add_argument(
        "--beats-per-ttl",
        type=float,
        default=3.0,
        help="heartbeats per session per ttl (3: every ttl/3)",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of paced load before the window (>= ttl/3 so every session "
        "has heartbeated once)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--connections", type=int, default=64, help="keep-alive connections shared by all sessions"
    )
    mode.add_argument(
        "--connection-per-session",
        action="store_true",
        help="one keep-alive connection per session",
    )
    mode.add_argument(
        "--websocket",
        action="store_true",
        help="one keepalive WebSocket per session; a heartbeat is one masked text frame",
    )
    p.add_argument(
        "--probe-every",
        type=float,
        default=2.0,
        help="--websocket: seconds between the plain POST heartbeats timed on the side",
    )
    p.add_argument(
        "--open-concurrency", type=int, default=128, help="session opens in flight at once"
    )
    p.add_argument(
        "--connect-concurrency", type=int, default=64, help="TCP connects in flight at once"
    )
    p.add_argument(
        "--idle-sample",
        type=float,
        default=3.0,
        help="seconds the server's idle CPU is sampled before the sessions are opened (0: no)",
    )
    p.add_argument(
        "--tick", type=float, default=0.001, help="pacing granularity of the load client, s"
    )
    p.add_argument(
        "--rate-tolerance",
        type=float,
        default=0.03,
        help="fail if heartbeats/s is off the target by more than this fraction",
    )
    p.add_argument(
        "--setup-timeout",
        type=float,
        default=120.0,
        help="bound on connecting and opening the sessions, s",
    )
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary data dir")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-data", action="store_true", help="leave the temp dir (log, data)")
    args = p.parse_args(argv)
    if not (
        1 <= args.sessions <= 100_000
        and 0 < args.duration <= 3600
        and args.warmup >= 0
        and args.connections >= 1
        and args.ttl_ms >= 1
        and args.beats_per_ttl > 0
        and 0 < args.tick <= 0.1
        and args.probe_every > 0
    ):
        p.error(
            "need 1 <= --sessions <= 100000, 0 < --duration <= 3600, --warmup >= 0, "
            "--connections >= 1, 0 < --tick <= 0.1, --probe-every > 0"
        )
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the processes


def worst_second(r: dict[str, Any]) -> str:
    if not r["timeline"]:
        return "-"
    w = max(r["timeline"], key=lambda e: e["max_ms"])
    return (
        f"at {w['t_s']:.0f}s: max {w['max_ms']:.1f} ms, {w['done']} answers, server "
        f"{w['server_cpu_pct']:.0f}% of a core, machine {w['machine_busy_cores']:.2f} busy"
    )


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    mode = (
        f"{r['connections']} connections (one per session)"
        if args.connection_per_session
        else f"{r['connections']} shared connections"
    )
    rss = r["server_rss_kib"]
    rows = [
        (
            "sessions / ttl / interval",
            f"{args.sessions} / {args.ttl_ms} ms / {r['interval_ms']:.0f} ms",
        ),
        ("connections", mode),
        (
            "heartbeats/s (target)",
            (
                f"{r['achieved_per_s']:.0f} ({r['target_per_s']:.0f}, "
                f"{(r['achieved_per_s'] / r['target_per_s'] - 1) * 100:+.1f}%) over {r['window_s']:.1f}s"
            ),
        ),
        (
            "latency p50 / p99 / max",
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.2f} ms",
        ),
        (
            "  from schedule p99 / max",
            f"{r['from_schedule_p99_ms']:.2f} / {r['from_schedule_max_ms']:.2f} ms",
        ),
        (
            "server CPU",
            (
                f"{r['server_cpu_pct']:.1f}% of one core "
                f"({r['server_cpu_s'] / max(1, r['done_in_window']) * 1e6:.0f} us/heartbeat)"
            ),
        ),
        (
            "server RSS (peak)",
            (f"{rss.get('VmRSS', 0) / 1024:.0f} MiB ({rss.get('VmHWM', 0) / 1024:.0f} MiB)"),
        ),
        ("load client CPU", f"{r['client_cpu_pct']:.1f}% of one core"),
        (
            "machine busy / other",
            (f"{r['machine_busy_cores']:.2f} / {r['other_cores']:.2f} cores (of {os.cpu_count()})"),
        ),
        ("non-200 answers", (f"{r['non_200']} of {r['heartbeats_total']} {r['statuses']}")),
        (
            "sessions open at end",
            (f"{r['sessions_listed']} listed, {r['sessions_missing']} of ours missing"),
        ),
        ("worst second", worst_second(r)),
        (
            "server CPU idle (before)",
            (f"{r['idle_server_cpu_pct']:.1f}% of one core" if "idle_server_cpu_pct" in r else "-"),
        ),
        ("session opening", f"{r['open_s']:.1f}s ({r['open_per_s']:.0f}/s)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def busiest_second(r: dict[str, Any]) -> str:
    if not r["timeline"]:
        return "-"
    w = max(r["timeline"], key=lambda e: e["server_cpu_pct"])
    return (
        f"at {w['t_s']:.0f}s: server {w['server_cpu_pct']:.0f}% of a core, {w['done']} frames, "
        f"send lag max {w['max_ms']:.1f} ms, machine {w['machine_busy_cores']:.2f} busy"
    )


def render_ws(r: dict[str, Any], args: argparse.Namespace) -> str:
    rss = r["server_rss_kib"]
    closed = f"{r['server_closed']} of {r['connections']}"
    if r["server_closed_sample"]:
        closed += f" (e.g. {r['server_closed_sample'][0]})"
    rows = [
        (
            "sessions / ttl / interval",
            f"{args.sessions} / {args.ttl_ms} ms / {r['interval_ms']:.0f} ms",
        ),
        ("connections", f"{r['connections']} keepalive WebSockets (one per session)"),
        (
            "frames/s (target)",
            (
                f"{r['achieved_per_s']:.0f} ({r['target_per_s']:.0f}, "
                f"{(r['achieved_per_s'] / r['target_per_s'] - 1) * 100:+.1f}%) over "
                f"{r['window_s']:.1f}s, {r['frame_bytes']} bytes each"
            ),
        ),
        (
            "  send lag p99 / max",
            (
                f"{r['send_lag_p99_ms']:.2f} / {r['send_lag_max_ms']:.2f} ms "
                f"(write backlog max {r['write_backlog_max_bytes']} bytes)"
            ),
        ),
        (
            "server CPU",
            f"{r['server_cpu_pct']:.1f}% of one core ({r['server_cpu_us_per_frame']:.1f} us/frame)",
        ),
        (
            "server RSS (peak)",
            (f"{rss.get('VmRSS', 0) / 1024:.0f} MiB ({rss.get('VmHWM', 0) / 1024:.0f} MiB)"),
        ),
        ("load client CPU", f"{r['client_cpu_pct']:.1f}% of one core"),
        (
            "machine busy / other",
            (f"{r['machine_busy_cores']:.2f} / {r['other_cores']:.2f} cores (of {os.cpu_count()})"),
        ),
        ("closed by the server", closed),
        (
            f"POST heartbeat every {r['probe_every_s']:g}s",
            (
                f"p50 / p99 / max {r['probe_p50_ms']:.2f} / {r['probe_p99_ms']:.2f} / "
                f"{r['probe_max_ms']:.2f} ms ({r['probes_in_window']} in the window; "
                f"{r['probe_non_200']} non-200, {r['probe_unanswered']} unanswered)"
            ),
        ),
        (
            "sessions open at end",
            (f"{r['sessions_listed']} listed, {r['sessions_missing']} of ours missing"),
        ),
        ("busiest second", busiest_second(r)),
        (
            "server CPU idle (before)",
            (f"{r['idle_server_cpu_pct']:.1f}% of one core" if "idle_server_cpu_pct" in r else "-"),
        ),
        (
            "opening / upgrading",
            f"{r['open_s']:.1f}s ({r['open_per_s']:.0f}/s) / {r['upgrade_s']:.1f}s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_client" and argv is None:
        return client_entry(sys.argv[2])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    per_session = args.connection_per_session or args.websocket
    fds_needed = (args.sessions if per_session else args.connections) + 200
    soft, hard = raise_nofile(fds_needed)  # the server inherits it
    if soft < fds_needed:
        print(
            f"open-files limit {soft} (hard {hard}) is below the {fds_needed} needed",
            file=sys.stderr,
        )
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="httpcoord-sessions-", dir=args.tmp_dir))
    fstype = filesystem_type(workdir)
    server: Server = httpcoord_server(workdir)
    server.argv += [
        "--session-ttl-min-ms",
        str(min(args.ttl_ms, 2000)),
        "--session-ttl-max-ms",
        str(max(args.ttl_ms, 60_000)),
    ]
    client: subprocess.Popen[bytes] | None = None
    started = dt.datetime.now(dt.UTC)
    cfg = {
        "sessions": args.sessions,
        "ttl_ms": args.ttl_ms,
        "beats_per_ttl": args.beats_per_ttl,
        "duration": args.duration,
        "warmup": args.warmup,
        "per_session": args.connection_per_session,
        "websocket": args.websocket,
        "probe_every": args.probe_every,
        "connections": args.connections,
        "open_concurrency": args.open_concurrency,
        "connect_concurrency": args.connect_concurrency,
        "tick": args.tick,
        "idle_sample": args.idle_sample,
        "setup_timeout": args.setup_timeout,
        "result_path": str(workdir / "client-result.json"),
    }
    try:
        server.start()
        server.wait_ready(timeout=30)
        print(
            f"# httpcoord pid {server.pid}, port {server.port}, data on {fstype}, "
            f"open files limit {soft}, {os.cpu_count()} CPUs",
            flush=True,
        )
        cfg.update(port=server.port, server_pid=server.pid)
        cfg_path = workdir / "client-config.json"
        cfg_path.write_text(json.dumps(cfg))
        client = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_client", str(cfg_path)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        print(f"# load client pid {client.pid}", flush=True)
        bound = args.setup_timeout + args.warmup + args.duration + 60
        try:
            rc = client.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"load client did not finish within {bound:.0f}s") from None
        if rc != 0 or not Path(cfg["result_path"]).is_file():
            raise RuntimeError(f"load client exited {rc}:\n{server.log_tail()}")
        result = json.loads(Path(cfg["result_path"]).read_text())
        # An independent look from this process: every session still there?
        status, body = http_request(server.port, "GET", "/v1/sessions", timeout=30)
        result["sessions_listed_after"] = (
            len(json.loads(body)["sessions"]) if status == 200 else None
        )
    finally:
        if client is not None:
            stop_process(client, timeout=5)
        server.stop()
        if args.keep_data:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(render_ws(result, args) if args.websocket else render(result, args))
    mode = "per_session" if args.connection_per_session else f"pool{args.connections}"
    if args.websocket:
        mode = "websocket"
    save_results(
        args.results_dir,
        f"sessions-{mode}",
        started,
        fstype,
        {},
        {
            k: getattr(args, k)
            for k in (
                "sessions",
                "ttl_ms",
                "beats_per_ttl",
                "duration",
                "warmup",
                "connections",
                "connection_per_session",
                "open_concurrency",
                "tick",
            )
        },
        **({"websocket": {"probe_every": args.probe_every}} if args.websocket else {}),
        result=result,
    )

    problems = ws_problems(result, args) if args.websocket else http_problems(result, args)
    for msg in problems:
        print(f"FAILED: {msg}", file=sys.stderr)
    return 1 if problems else 0


def ws_problems(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    problems = []
    if result["server_closed"]:
        problems.append(
            f"the server closed {result['server_closed']} keepalive WebSockets (a session "
            f"died): {result['server_closed_sample'][:3]}"
        )
    if result["probe_non_200"] or result["probe_unanswered"] or not result["probes_in_window"]:
        problems.append(
            f"POST heartbeat probes: {result['probes_in_window']} timed, "
            f"{result['probe_statuses']}, {result['probe_unanswered']} unanswered"
        )
    problems += missing_problems(result, args)
    problems += rate_problems(result, args)
    return problems


def http_problems(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    problems = []
    if result["non_200"]:
        problems.append(
            f"{result['non_200']} heartbeats not answered 200 "
            f"{result['statuses']} (404 = session expired): {result['bad_samples'][:3]}"
        )
    problems += missing_problems(result, args)
    if result["unanswered_at_end"]:
        problems.append(f"{result['unanswered_at_end']} heartbeats never answered")
    problems += rate_problems(result, args)
    return problems


def missing_problems(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    if result["sessions_missing"] or result["sessions_listed_after"] != args.sessions:
        return [
            (
                f"{result['sessions_missing']} sessions missing at the end "
                f"(listed {result['sessions_listed']}, then "
                f"{result['sessions_listed_after']})"
            )
        ]
    return []


def rate_problems(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    problems = []
    off = abs(result["achieved_per_s"] / result["target_per_s"] - 1)
    if off > args.rate_tolerance:
        problems.append(
            f"achieved {result['achieved_per_s']:.0f}/s is {off * 100:.1f}% off the "
            f"target {result['target_per_s']:.0f}/s: the load client kept no pace"
        )
    return problems


if __name__ == "__main__":
    sys.exit(main())
