"""Every Python example in docs/client.md runs, unchanged but for the
endpoints, against a real three-node cluster."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, start_cluster
from tests.integration.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "client.md"
DOC_ENDPOINTS = "127.0.0.1:8181,127.0.0.1:8281,127.0.0.1:8381"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("docs"), 3) as c:
        yield c


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6
    assert all(DOC_ENDPOINTS in example for example in EXAMPLES)


@pytest.mark.parametrize("n", range(len(EXAMPLES)))
def test_the_example_runs(cluster: Cluster, tmp_path: Path, n: int) -> None:
    urls = ",".join(m.url.removeprefix("http://") for m in cluster)
    script = tmp_path / f"example{n}.py"
    script.write_text(EXAMPLES[n].replace(DOC_ENDPOINTS, urls))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"example {n}:\n{EXAMPLES[n]}\n{done.stdout}\n{done.stderr}"
