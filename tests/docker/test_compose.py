"""The Dockerfile and docker-compose.yml, run for real (marker ``docker``).

    bash tests/docker/prepare.sh && python3 -m pytest -m docker -s tests/docker

``prepare.sh`` installs and starts docker and makes the offline build inputs
(a base image, a wheelhouse). The tests skip only when no docker engine or
no compose CLI can run on this machine; anything else that stops them is a
failure. They speak to the containers on 127.0.0.1 only, and remove every
container, volume and image they made, pass or fail.

Settings (environment): ``HTTPCOORD_DOCKER_BASE`` the base image (default
``httpcoord-base:bookworm``, made by prepare.sh), ``HTTPCOORD_WHEELHOUSE``
the wheelhouse inside the repository (default ``build/docker/wheelhouse``;
when absent the image installs from the package index), ``HTTPCOORD_COMPOSE``
the compose command (default ``docker compose`` if present, else
``docker-compose``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import wait_for

# Until the owner of pyproject.toml registers the marker, pytest warns here.
pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE_IMAGE = "httpcoord-base:bookworm"
BASE_IMAGE = os.environ.get("HTTPCOORD_DOCKER_BASE", DEFAULT_BASE_IMAGE)
WHEELHOUSE = os.environ.get("HTTPCOORD_WHEELHOUSE", "build/docker/wheelhouse")

DOCKER_PROBE_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 900.0
UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 120.0
COMMAND_TIMEOUT_S = 60.0
# From `up` to healthy: the image's health check has a 5 s interval and a
# 30 s start period; a cluster also needs its first election.
HEALTHY_TIMEOUT_S = 120.0
# From the leader's death to a leader among the other two, both agreeing:
# an election timeout plus the time to notice a dead peer, with margin for a
# loaded machine.
ELECTION_TIMEOUT_S = 30.0
# A read or write that may first need replication or a new leader.
CONVERGE_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.2

# docker-compose.yml: service nodeN has id N and its client port on 8180 + N.
NODE_IDS = (1, 2, 3)


def client_port(node_id: int) -> int:
    return 8180 + node_id


class Timings:
    """Named durations of one test, printed at its end (pytest -s shows them)."""

    def __init__(self, test: str) -> None:
        self._test = test
        self._started = time.monotonic()
        self._steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self._steps.append((step, now - self._started))
        self._started = now

    def print(self) -> None:
        steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self._steps)
        print(f"\n[{self._test}] timings: {steps}")


def run(
    args: list[str], timeout_s: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def docker_skip_reason() -> str | None:
    """Why docker cannot run here at all, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (tests/docker/prepare.sh installs it)"
    try:
        probe = run(["docker", "info"], DOCKER_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"docker info did not answer within {DOCKER_PROBE_TIMEOUT_S:.0f}s"
    if probe.returncode != 0:
        return f"no docker engine answers (tests/docker/prepare.sh starts one): {probe.stderr.strip()[-300:]}"
    return None


def find_compose() -> list[str] | None:
    configured = os.environ.get("HTTPCOORD_COMPOSE")
    if configured:
        return shlex.split(configured)
    plugin = run(["docker", "compose", "version"], DOCKER_PROBE_TIMEOUT_S, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    return None


def http(
    method: str, port: int, path: str, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); status 0 when nothing answered."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def read_data(port: int, path: str) -> str | None:
    status, _, body = http("GET", port, f"/v1/nodes{path}")
    if status != 200:
        return None
    data: str = json.loads(body)["data"]
    return data


def reads(port: int, path: str, expected: str) -> Callable[[], bool]:
    """A probe for wait_for: the node on port has expected at path."""
    return lambda: read_data(port, path) == expected


def create(port: int, path: str, data: str) -> int:
    status, _, _ = http("POST", port, f"/v1/nodes{path}", data.encode())
    return status


def cluster_view(port: int) -> dict[str, Any] | None:
    status, _, body = http("GET", port, "/v1/cluster")
    if status != 200:
        return None
    view: dict[str, Any] = json.loads(body)
    return view


def health(container: str) -> str:
    """The container's health status, or its state when it is not running."""
    proc = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{if .State.Running}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
            container,
        ],
        COMMAND_TIMEOUT_S,
    )
    return proc.stdout.strip()


def wait_healthy(containers: list[str]) -> None:
    states: list[str] = []

    def all_healthy() -> bool:
        states[:] = [health(c) for c in containers]
        for container, state in zip(containers, states, strict=True):
            if state in ("exited", "dead"):
                logs = run(["docker", "logs", "--tail", "30", container], COMMAND_TIMEOUT_S)
                raise AssertionError(
                    f"container {container[:12]} stopped before it was healthy; its log:\n"
                    f"{logs.stdout}{logs.stderr}"
                )
        return all(s == "healthy" for s in states)

    try:
        wait_for("every container healthy", all_healthy, HEALTHY_TIMEOUT_S, POLL_INTERVAL_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; health: {states}") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(kind: str) -> str:
    # Compose project names: lowercase letters and digits are safe in v1 and v2.
    return f"hc{kind}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def compose() -> list[str]:
    reason = docker_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    command = find_compose()
    if command is None:
        pytest.skip("no compose CLI (docker compose or docker-compose) on this machine")
    return command


@pytest.fixture(scope="module")
def image(compose: list[str]) -> Iterator[str]:
    """The image as docker-compose.yml builds it, from the configured base image."""
    found = run(["docker", "image", "inspect", BASE_IMAGE], COMMAND_TIMEOUT_S, check=False)
    if found.returncode != 0 and BASE_IMAGE == DEFAULT_BASE_IMAGE:
        pytest.fail(f"base image {BASE_IMAGE} is missing: run tests/docker/prepare.sh first")
    tag = f"httpcoord:{unique_name('test')}"
    build_args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    if (REPO_ROOT / WHEELHOUSE).is_dir():
        build_args += ["--build-arg", f"WHEELHOUSE={WHEELHOUSE}"]
    timings = Timings("image")
    run(
        [*compose, "-p", unique_name("build"), "build", *build_args, "node1"],
        BUILD_TIMEOUT_S,
        env={"HTTPCOORD_IMAGE": tag},
    )
    timings.mark("build")
    timings.print()
    try:
        yield tag
    finally:
        run(["docker", "image", "rm", "-f", tag], COMMAND_TIMEOUT_S, check=False)
        # The build stage's images (the Dockerfile labels them) would pile up, one per build.
        prune = ["docker", "image", "prune", "-f", "--filter", "label=org.httpcoord.stage=build"]
        run(prune, COMMAND_TIMEOUT_S, check=False)


def test_one_container_is_healthy_runs_as_non_root_and_keeps_a_write_across_restart(
    image: str,
) -> None:
    # Without HTTPCOORD_PEERS a container is a cluster of one.
    name = unique_name("single")
    port = free_port()
    timings = Timings("single node")
    try:
        run(
            [
                "docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8181",
                "-v", f"{name}:/data", image,
            ],
            COMMAND_TIMEOUT_S,
        )  # fmt: skip
        wait_healthy([name])
        timings.mark("healthy")
        uid = run(["docker", "exec", name, "id", "-u"], COMMAND_TIMEOUT_S).stdout.strip()
        assert uid != "0", "the node runs as root"

        assert create(port, "/docker-single", "kept") == 201
        run(["docker", "restart", "-t", "10", name], COMMAND_TIMEOUT_S)
        wait_healthy([name])
        timings.mark("restart")
        assert read_data(port, "/docker-single") == "kept"
    finally:
        run(["docker", "rm", "-f", "-v", name], COMMAND_TIMEOUT_S, check=False)
        run(["docker", "volume", "rm", "-f", name], COMMAND_TIMEOUT_S, check=False)
        timings.print()


def cluster_cli_present(image: str) -> bool:
    usage = run(["docker", "run", "--rm", image, "httpcoord", "serve", "--help"], COMMAND_TIMEOUT_S)
    return "--peers" in usage.stdout


def test_three_nodes_replicate_and_elect_a_new_leader_when_the_leader_is_killed(
    compose: list[str], image: str
) -> None:
    if not cluster_cli_present(image):
        pytest.skip("httpcoord serve has no --peers yet: the replicated cluster has not landed")
    project = unique_name("cluster")
    cmd = [*compose, "-p", project]
    env = {"HTTPCOORD_IMAGE": image}
    timings = Timings("three nodes")
    passed = False
    try:
        run([*cmd, "up", "-d", "--no-build"], UP_TIMEOUT_S, env=env)
        timings.mark("up")
        containers = {
            node_id: run(
                [*cmd, "ps", "-q", f"node{node_id}"], COMMAND_TIMEOUT_S, env=env
            ).stdout.strip()
            for node_id in NODE_IDS
        }
        assert all(containers.values()), containers
        wait_healthy(list(containers.values()))
        timings.mark("healthy")

        # Each published port reaches the node the compose file says it does.
        for node_id in NODE_IDS:
            status, headers, _ = http("GET", client_port(node_id), "/v1/cluster")
            assert status == 200
            assert headers.get("X-Coord-Node") == str(node_id)

        assert create(client_port(1), "/docker-before", "written on node 1") == 201
        wait_for(
            "the write on node 3",
            reads(client_port(3), "/docker-before", "written on node 1"),
            CONVERGE_TIMEOUT_S,
            POLL_INTERVAL_S,
        )
        timings.mark("replicated")

        view = wait_for(
            "a leader", lambda: cluster_view(client_port(1)), CONVERGE_TIMEOUT_S, POLL_INTERVAL_S
        )
        old_leader = view["leader"]
        assert old_leader in NODE_IDS, view
        assert sorted(member["id"] for member in view["members"]) == list(NODE_IDS)

        run(["docker", "kill", containers[old_leader]], COMMAND_TIMEOUT_S)
        timings.mark("leader killed")
        survivors = [node_id for node_id in NODE_IDS if node_id != old_leader]

        def new_leader() -> int | None:
            views = [cluster_view(client_port(node_id)) for node_id in survivors]
            leaders = {v["leader"] if v else None for v in views}
            if len(leaders) == 1:
                (leader,) = leaders
                if leader in survivors:
                    return int(leader)
            return None

        leader = wait_for(
            "a new leader among the survivors", new_leader, ELECTION_TIMEOUT_S, POLL_INTERVAL_S
        )
        timings.mark(f"node {leader} elected")

        for node_id in survivors:
            wait_for(
                f"the first write on node {node_id}",
                reads(client_port(node_id), "/docker-before", "written on node 1"),
                CONVERGE_TIMEOUT_S,
                POLL_INTERVAL_S,
            )
        writer, reader = survivors
        wait_for(
            f"a new write through node {writer}",
            lambda: create(client_port(writer), "/docker-after", "after the kill") == 201,
            CONVERGE_TIMEOUT_S,
            POLL_INTERVAL_S,
        )
        wait_for(
            f"the new write on node {reader}",
            reads(client_port(reader), "/docker-after", "after the kill"),
            CONVERGE_TIMEOUT_S,
            POLL_INTERVAL_S,
        )
        timings.mark("new write replicated")
        passed = True
    finally:
        if not passed:
            logs = run([*cmd, "logs", "--no-color", "--tail=40"], COMMAND_TIMEOUT_S, env, False)
            print(f"\n[three nodes] container logs:\n{logs.stdout[-8000:]}")
        run([*cmd, "down", "-v", "--remove-orphans", "-t", "5"], DOWN_TIMEOUT_S, env=env)
        left = run(
            [
                "docker", "volume", "ls", "-q",
                "--filter", f"label=com.docker.compose.project={project}",
            ],
            COMMAND_TIMEOUT_S,
        ).stdout.split()  # fmt: skip
        timings.mark("down")
        timings.print()
    assert not left, f"volumes left behind: {left}"
