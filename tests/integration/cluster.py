"""Real clusters for integration tests: N ``httpcoord serve`` processes on
127.0.0.1, each with its own free client and peer ports and data dir.

``start_cluster(tmp_path, 3)`` returns a ``Cluster`` once every node answers
``/ready``; ``cluster.leader()`` polls ``/v1/cluster`` until the members
agree on one; ``cluster.kill(i)`` SIGKILLs node i by its PID and
``cluster.restart(i)`` starts it again on the same ports and data dir.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from tests.integration.conftest import REPO_ROOT, free_port

START_TIMEOUT_S = 20.0
NODE_PORT_LOW = 20000  # nodes' ports are drawn from here to the ephemeral range
NODE_PORT_TRIES = 100
# Fast elections for tests: a follower campaigns after 250-500 ms of silence.
FAST_ELECTIONS = ("--tick-ms", "25", "--election-ticks", "10")
ELECTION_TIMEOUT_MAX_S = 0.5
_POLL_S = 0.05


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body) for every status, errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout_s: float, poll_s: float = _POLL_S
) -> T:
    """Poll ``check()`` until it returns something truthy, and return that;
    an OSError (a node not answering yet) counts as not yet."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
        except OSError as exc:
            last = exc
        else:
            if got:
                return got
            last = got
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not reached in {timeout_s:g}s (last answer: {last!r})")


def get_json(url: str, timeout: float = 5.0) -> Any:
    status, _, body = http("GET", url, timeout=timeout)
    assert status == 200, (status, body)
    return json.loads(body)


@dataclass
class Member:
    node_id: int
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    # Where the node listens, and what its command runs under (the fault
    # suite puts each node in a network namespace of its own).
    host: str = "127.0.0.1"
    argv_prefix: tuple[str, ...] = ()
    # The --peers this node is given, when it must not be the members' own
    # addresses (a fault-suite proxy between peers).
    peers: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# What a member runs: the server as installed. The fault suite's planted
# bugs run it through a launcher that swaps in a wrong subclass first.
SERVER = (sys.executable, "-m", "httpcoord")


class Cluster:
    def __init__(
        self,
        members: list[Member],
        extra_args: tuple[str, ...],
        program: tuple[str, ...] = SERVER,
    ) -> None:
        self.members = {m.node_id: m for m in members}
        self.extra_args = extra_args
        self.program = program

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members.values())

    def __getitem__(self, node_id: int) -> Member:
        return self.members[node_id]

    @property
    def peers_arg(self) -> str:
        return ",".join(f"{m.node_id}={m.host}:{m.peer_port}" for m in self)

    def start(self, node_id: int) -> None:
        m = self.members[node_id]
        m.log_path = m.data_dir.with_name(m.data_dir.name + ".log")
        with open(m.log_path, "ab") as log_file:
            m.proc = subprocess.Popen(
                [
                    *m.argv_prefix,
                    *self.program, "serve",
                    "--id", str(node_id),
                    "--listen", f"{m.host}:{m.client_port}",
                    "--peers", m.peers or self.peers_arg,
                    "--data-dir", str(m.data_dir),
                    *self.extra_args,
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        m = self.members[node_id]
        if m.alive:
            os.kill(m.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                assert m.proc is not None
                m.proc.wait(10)

    def restart(self, node_id: int) -> None:
        self.kill(node_id)
        self.start(node_id)

    def stop_all(self) -> None:
        for m in self:
            if m.alive:
                assert m.proc is not None
                m.proc.send_signal(signal.SIGTERM)
        for m in self:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(m.pid, signal.SIGKILL)
                    m.proc.wait(10)

    def heal(self) -> None:
        """Start every member that is down, and wait until all answer."""
        for m in self:
            if not m.alive:
                self.start(m.node_id)
        self.wait_ready()

    def urls(self, first: int | None = None) -> list[str]:
        """Every member's client URL, ``first``'s first (a client made with
        ``shuffle=False`` starts there)."""
        urls = [m.url for m in self]
        if first is not None:
            urls.remove(self[first].url)
            urls.insert(0, self[first].url)
        return urls

    def wait_ready(self, ids: list[int] | None = None, timeout: float = START_TIMEOUT_S) -> None:
        ids = ids or list(self.members)
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                m = self.members[i]
                if not m.alive:
                    raise RuntimeError(f"node {i} exited:\n{m.log()}")
                try:
                    if http("GET", m.url + "/ready", timeout=1.0)[0] == 200:
                        pending.discard(i)
                except OSError:
                    pass
            time.sleep(_POLL_S)
        if pending:
            logs = "\n".join(f"--- node {i}\n{self.members[i].log()[-3000:]}" for i in pending)
            raise RuntimeError(f"nodes {sorted(pending)} not ready in {timeout}s:\n{logs}")

    def leader(self, among: list[int] | None = None, timeout: float = 10.0, not_: int = 0) -> int:
        """The leader that every live node in ``among`` names (polled), other
        than ``not_`` (a leader just killed, which followers still name until
        their election timeout)."""
        among = among or [m.node_id for m in self if m.alive]
        deadline = time.monotonic() + timeout
        seen: list[int] = []
        while time.monotonic() < deadline:
            seen = [self.leader_named_by(i) for i in among]
            if seen[0] and seen[0] != not_ and all(s == seen[0] for s in seen):
                return int(seen[0])
            time.sleep(_POLL_S)
        raise AssertionError(f"no agreed leader among {among} in {timeout}s: {seen}")

    def leader_named_by(self, node_id: int) -> int:
        """The leader a ready node names in /ready; 0 when it is not ready
        or does not answer."""
        try:
            return int(get_json(self.members[node_id].url + "/ready", 1.0)["leader"])
        except (AssertionError, OSError):
            return 0

    def states(self) -> dict[int, tuple[int, str]]:
        """(zxid, digest) of every node, from its own row of /v1/cluster."""
        states = {}
        for m in self:
            view = get_json(m.url + "/v1/cluster", timeout=3.0)
            me = next(x for x in view["members"] if x["id"] == m.node_id)
            states[m.node_id] = (int(me["zxid"]), str(me["digest"]))
        return states

    def converged(self) -> bool:
        """Every node at one zxid with one digest."""
        return len(set(self.states().values())) == 1

    def statuses(self) -> dict[int, Any]:
        return {m.node_id: get_json(m.url + "/v1/cluster") for m in self if m.alive}


def node_port() -> int:
    """A free port of the loopback below the kernel's ephemeral range, for a
    node started (or restarted) later: the tests' own connections, and the
    fault suite's proxies dialling nodes not up yet, come from ephemeral
    ports, and one of those could take a port drawn from that range before
    its node binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.SystemRandom()
    for _ in range(NODE_PORT_TRIES):
        port = rng.randrange(NODE_PORT_LOW, max(NODE_PORT_LOW + 1, ephemeral_low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()  # a crowded range: the ephemeral one, as before


def start_cluster(tmp_path: Path, n: int = 3, *extra_args: str, fast: bool = True) -> Cluster:
    ports: list[int] = []
    while len(ports) < 2 * n:
        if (port := node_port()) not in ports:
            ports.append(port)
    members = []
    for i in range(1, n + 1):
        members.append(Member(i, ports[2 * i - 2], ports[2 * i - 1], tmp_path / f"node{i}"))
    cluster = Cluster(members, (*FAST_ELECTIONS, *extra_args) if fast else extra_args)
    try:
        for m in members:
            cluster.start(m.node_id)
        cluster.wait_ready()
    except BaseException:
        cluster.stop_all()
        raise
    return cluster
