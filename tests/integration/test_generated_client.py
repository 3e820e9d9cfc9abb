"""A client generated from openapi.yaml works against a real node.

openapi-python-client turns the spec into a Python package in a temporary
directory; the tests import it and drive a real ``httpcoord serve`` through
it: create, read, upsert, compare-and-set, multi, sessions and ephemerals,
delete. What they pin about the spec:

- no parameter default changes what a request means when the caller leaves
  the parameter out (a PUT without ``version`` stays an upsert: the
  generated call must not send ``?version=-1``);
- every error answer parses into the one shared ``Problem`` model, with its
  ``code``;
- the generator understands every request body (no ``*/*``) and warns about
  nothing but the spec's own YAML answer.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ServerProcess

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
PACKAGE = "httpcoord_generated_client"
GENERATE_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0

# The generator's own formatting hooks (ruff) are skipped: the package is
# imported, never read, and the hooks would pick up this repository's config.
GENERATOR_CONFIG = "post_hooks: []\n"

# GET /openapi.yaml answers `application/yaml`, a type the generator does not
# parse: it keeps the operation and leaves its body unparsed (Response.content
# has it). Any other warning means part of the API is missing from clients.
EXPECTED_WARNINGS = ["WARNING parsing GET /openapi.yaml within operations."]
EXPECTED_UNSUPPORTED = "Unsupported content_type application/yaml"


@dataclass(frozen=True, slots=True)
class Generated:
    package: ModuleType
    output: str  # what the generator printed

    def module(self, name: str) -> Any:
        """A module of the generated package, e.g. ``api.nodes.set_node``."""
        return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    root = tmp_path_factory.mktemp("generated")
    config = root / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(SPEC_PATH),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(root))
    try:
        yield Generated(importlib.import_module(PACKAGE), output)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@dataclass(slots=True)
class Api:
    """The generated client bound to the module's server, and the URL of
    every request it sent (to see which query parameters went out)."""

    gen: Generated
    client: Any
    sent: list[httpx.URL]

    def call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """``sync_detailed`` of ``api.<operation>``: the generated Response."""
        return self.gen.module(f"api.{operation}").sync_detailed(
            *args, client=self.client, **kwargs
        )

    def model(self, name: str) -> Any:
        return getattr(self.gen.module("models"), name)

    def data(self, payload: bytes) -> Any:
        return self.gen.module("types").File(payload=io.BytesIO(payload))


@pytest.fixture
def api(generated: Generated, server: ServerProcess) -> Iterator[Api]:
    sent: list[httpx.URL] = []

    def record(request: httpx.Request) -> None:
        sent.append(request.url)

    client = generated.package.Client(
        base_url=server.url,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
        # An answer whose status the spec does not list raises.
        raise_on_unexpected_status=True,
        httpx_args={"event_hooks": {"request": [record]}},
    )
    with client:
        yield Api(generated, client, sent)


def _problem(api: Api, response: Any, status: int, code: str) -> Any:
    """The answer is the shared Problem model with this status and code."""
    assert response.status_code == status, response.content
    problem = response.parsed
    assert type(problem) is api.model("Problem"), type(problem)
    assert problem.code == api.model("ErrorCode")(code)
    assert problem.status == status
    assert problem.type_ == f"urn:httpcoord:problem:{code}"
    return problem


def test_generator_understands_the_whole_spec(generated: Generated) -> None:
    lines = generated.output.splitlines()
    warnings = [line for line in lines if line.startswith(("WARNING", "ERROR"))]
    assert warnings == EXPECTED_WARNINGS, generated.output
    unsupported = [line for line in lines if "Unsupported" in line]
    assert len(unsupported) == 1 and EXPECTED_UNSUPPORTED in unsupported[0], generated.output
    # One Problem model for every error answer, not one per operation and status.
    models = Path(generated.package.__file__).parent / "models"
    problem_models = sorted(p.stem for p in models.glob("*.py") if "response_" in p.stem)
    assert problem_models == []
    assert (models / "problem.py").exists()


def test_create_then_get(api: Api) -> None:
    created = api.call("nodes.create_node", "gc/app", body=api.data(b"v1"), parents=True)
    assert created.status_code == 201, created.content
    result = created.parsed
    assert type(result) is api.model("WriteResult")
    assert result.path == "/gc/app"
    assert result.zxid == int(created.headers["X-Coord-Zxid"])
    assert (result.stat.version, result.stat.data_length) == (0, 2)
    assert created.headers["Location"] == "/v1/nodes/gc/app"

    read = api.call("nodes.get_node", "gc/app")
    assert read.status_code == 200, read.content
    node = read.parsed
    assert (node.path, node.data, node.encoding) == ("/gc/app", "v1", api.model("Encoding").UTF_8)
    assert node.stat.czxid == node.stat.mzxid == result.zxid
    assert node.stat.ctime == node.stat.mtime > 0
    assert node.stat.ephemeral_owner == ""

    # Bytes that are not UTF-8 come back as base64.
    api.call("nodes.create_node", "gc/bin", body=api.data(b"\xff\x00"))
    binary = api.call("nodes.get_node", "gc/bin").parsed
    assert (binary.data, binary.encoding) == ("/wA=", api.model("Encoding").BASE64)

    missing = api.call("nodes.get_node", "gc/none")
    assert _problem(api, missing, 404, "NoNode").path == "/gc/none"


def test_put_without_version_upserts_and_with_one_compares_and_sets(api: Api) -> None:
    created = api.call("nodes.set_node", "gc/cfg", body=api.data(b"a"))
    assert created.status_code == 201, created.content  # upserted: it did not exist
    assert created.parsed.stat.version == 0
    again = api.call("nodes.set_node", "gc/cfg", body=api.data(b"b"))
    assert again.status_code == 200, again.content
    assert again.parsed.stat.version == 1
    # The generated call left the version out: with any version the server
    # would have refused the first PUT (404) instead of creating the node.
    assert [url.params.get("version") for url in api.sent] == [None, None]

    swapped = api.call("nodes.set_node", "gc/cfg", body=api.data(b"c"), version=1)
    assert swapped.status_code == 200, swapped.content
    assert swapped.parsed.stat.version == 2
    assert api.sent[-1].params["version"] == "1"

    stale = api.call("nodes.set_node", "gc/cfg", body=api.data(b"d"), version=1)
    problem = _problem(api, stale, 409, "BadVersion")
    assert problem.version == 2  # the node's current version
    assert api.call("nodes.get_node", "gc/cfg").parsed.data == "c"

    # With a version, no upsert: a missing node is 404 NoNode.
    absent = api.call("nodes.set_node", "gc/cfg-missing", body=api.data(b"x"), version=-1)
    _problem(api, absent, 404, "NoNode")


def test_multi_applies_all_or_nothing(api: Api) -> None:
    api.call("nodes.set_node", "gc/multi", body=api.data(b""))
    ops = [
        api.model("CreateOp")(op="create", path="/gc/multi/a", data="one"),
        api.model("SetOp")(
            op="set", path="/gc/multi/a", data="dHdv", encoding=api.model("Encoding").BASE64
        ),
        api.model("CheckOp")(op="check", path="/gc/multi/a", version=1),
        api.model("CreateOp")(op="create", path="/gc/multi/q-", sequential=True),
    ]
    done = api.call("multi.multi", body=api.model("MultiRequest")(ops=ops))
    assert done.status_code == 200, done.content
    result = done.parsed
    assert type(result) is api.model("MultiResult")
    assert result.zxid == int(done.headers["X-Coord-Zxid"])
    assert [(r.op.value, r.path) for r in result.results] == [
        ("create", "/gc/multi/a"),
        ("set", "/gc/multi/a"),
        ("check", "/gc/multi/a"),
        ("create", "/gc/multi/q-0000000001"),
    ]
    assert result.results[1].stat.version == 1
    assert api.call("nodes.get_node", "gc/multi/a").parsed.data == "two"

    # The second op fails: nothing applies, and the Problem says which and why.
    refused = api.call(
        "multi.multi",
        body=api.model("MultiRequest")(
            ops=[
                api.model("CreateOp")(op="create", path="/gc/multi/b"),
                api.model("CreateOp")(op="create", path="/gc/multi/a"),
                api.model("DeleteOp")(op="delete", path="/gc/multi/q-0000000001"),
            ]
        ),
    )
    problem = _problem(api, refused, 409, "NodeExists")
    assert problem.failed_op == 1
    assert [r.status.value for r in problem.results] == ["rolled_back", "error", "not_run"]
    assert problem.results[1].code == api.model("ErrorCode").NODEEXISTS
    assert api.call("nodes.get_node", "gc/multi/b").status_code == 404


def test_session_owns_its_ephemeral_until_closed(api: Api) -> None:
    opened = api.call("sessions.open_session", body=api.model("SessionRequest")(ttl_ms=30_000))
    assert opened.status_code == 201, opened.content
    session = opened.parsed
    assert type(session) is api.model("SessionOpened")
    assert len(session.id) == 32 and session.ttl_ms == 30_000
    sid = session.id

    api.call("nodes.set_node", "gc/members", body=api.data(b""))
    created = api.call(
        "nodes.create_node",
        "gc/members/m-",
        body=api.data(b"me"),
        ephemeral=True,
        sequential=True,
        x_coord_session=sid,
    )
    assert created.status_code == 201, created.content
    member = created.parsed
    assert member.path == "/gc/members/m-0000000000"
    assert member.stat.ephemeral_owner == sid
    detail = api.call("sessions.get_session", sid).parsed
    assert detail.ephemerals == [member.path]

    beat = api.call("sessions.heartbeat_session", sid)
    assert (beat.status_code, beat.parsed.ttl_ms) == (200, 30_000)

    # An ephemeral cannot have children: the shared Problem again.
    child = api.call("nodes.create_node", "gc/members/m-0000000000/x")
    _problem(api, child, 400, "NoChildrenForEphemerals")

    closed = api.call("sessions.close_session", sid)
    assert closed.status_code == 200, closed.content
    assert closed.parsed.deleted == [member.path]
    _problem(api, api.call("nodes.get_node", "gc/members/m-0000000000"), 404, "NoNode")
    gone = api.call("sessions.heartbeat_session", sid)
    assert _problem(api, gone, 404, "SessionExpired").session == sid


def test_delete(api: Api) -> None:
    api.call("nodes.set_node", "gc/old", body=api.data(b"x"))
    api.call("nodes.set_node", "gc/old/child", body=api.data(b"y"))

    _problem(api, api.call("nodes.delete_node", "gc/old"), 409, "NotEmpty")
    stale = api.call("nodes.delete_node", "gc/old/child", version=5)
    assert _problem(api, stale, 409, "BadVersion").version == 0

    deleted = api.call("nodes.delete_node", "gc/old", recursive=True)
    assert deleted.status_code == 200, deleted.content
    assert type(deleted.parsed) is api.model("DeleteResult")
    assert deleted.parsed.path == "/gc/old"
    assert deleted.parsed.zxid == int(deleted.headers["X-Coord-Zxid"])
    _problem(api, api.call("nodes.get_node", "gc/old"), 404, "NoNode")
    _problem(api, api.call("nodes.delete_node", "gc/old"), 404, "NoNode")
