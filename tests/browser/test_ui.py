"""The web UI at ``/ui`` in headless Chromium against a real three-node
cluster (issue 15): browse to a node, edit it, meet a version conflict when
another client changed it meanwhile, see another member's write appear
without a reload, and be told when the member the page talks to dies.

Screenshots of each step go to ``$HTTPCOORD_ARTIFACTS_DIR`` when set, else
to the test's tmp_path (the path is printed).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.cluster import Cluster, Member, http, start_cluster, wait_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

pytestmark = pytest.mark.browser

WAIT_S = 15.0
CHILDREN_PAGE = 5  # small, so that /app/items needs the "more" button


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(
        tmp_path_factory.mktemp("ui-cluster"), 3, "--children-page", str(CHILDREN_PAGE)
    ) as c:
        yield c


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("HTTPCOORD_ARTIFACTS_DIR") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    print(f"UI screenshots in {where}")
    return where


def write(member: Member, method: str, path: str, data: bytes, query: str = "") -> dict[str, Any]:
    """A write by another client, over HTTP to ``member``."""
    url = member.url + "/v1/nodes" + urllib.parse.quote(path) + (f"?{query}" if query else "")
    status, _, body = http(method, url, data)
    assert status in (200, 201), (status, body)
    answer: dict[str, Any] = json.loads(body)
    return answer


def read(member: Member, path: str, min_zxid: int = 0) -> dict[str, Any]:
    headers = {"X-Coord-Min-Zxid": str(min_zxid)}
    status, _, body = http("GET", member.url + "/v1/nodes" + path, headers=headers)
    assert status == 200, (status, body)
    answer: dict[str, Any] = json.loads(body)
    return answer


def until(browser: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT_S).until(check)
    except TimeoutException:
        status = browser.find_element("id", "status").text
        pytest.fail(f"UI: no {what} within {WAIT_S}s (status line: {status!r})")


def text_of(browser: WebDriver, element_id: str) -> str:
    text: str = browser.find_element("id", element_id).text
    return text


def shows(element_id: str, *fragments: str) -> Callable[[WebDriver], bool]:
    def check(browser: WebDriver) -> bool:
        element = browser.find_element("id", element_id)
        return element.is_displayed() and all(f in element.text for f in fragments)

    return check


def tree_item(browser: WebDriver, path: str) -> WebElement | None:
    found = browser.find_elements("css selector", f'[role="treeitem"][data-path="{path}"]')
    return found[0] if found else None


def expanded(browser: WebDriver, path: str) -> str | None:
    item = tree_item(browser, path)
    return None if item is None else item.get_attribute("aria-expanded")


def click_item(browser: WebDriver, path: str) -> None:
    """Click a tree item's own name (an open item's box holds its children too)."""
    item = tree_item(browser, path)
    assert item is not None, f"{path} not in the tree"
    item.find_element("css selector", ":scope > .row > .label").click()


def shoot(browser: WebDriver, where: Path, name: str) -> None:
    browser.save_screenshot(str(where / f"ui-{name}.png"))


def test_ui_files_are_served_with_their_types_and_a_strict_policy(cluster: Cluster) -> None:
    url = cluster[1].url
    status, headers, _ = http("GET", url + "/ui")  # redirected to /ui/
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    status, headers, _ = http("GET", url + "/ui/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    for name, content_type in (
        ("main.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ):
        status, headers, _ = http("GET", f"{url}/ui/{name}")
        assert (status, headers["Content-Type"].split(";")[0]) == (200, content_type)
    for name in ("nope.js", "..%2Fui.py", "%2E%2E%2Fopenapi.yaml"):
        status, _, body = http("GET", f"{url}/ui/{name}")
        assert status == 404 and json.loads(body)["code"] == "NotFound", name


def test_browse_edit_conflict_live_and_lost_node(
    browser: WebDriver, cluster: Cluster, artifacts: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    leader_id = cluster.leader()
    # The page talks to a follower; the other client writes through the leader.
    page_member = next(m for m in cluster if m.node_id != leader_id)
    other = cluster[leader_id]
    write(other, "POST", "/app", b"")
    write(other, "POST", "/app/config", b'{"db": {"port": 5432}, "debug": false}')
    for i in range(CHILDREN_PAGE + 2):
        write(other, "POST", f"/app/items/item-{i}", b"", "parents=true")
    last = write(other, "POST", "/app/blob", b"\x00\xffbinary")

    # Browse: a shared URL opens the node, with its ancestors expanded.
    wait_for("page member caught up", lambda: read(page_member, "/app/blob", last["zxid"]), 5.0)
    browser.set_window_size(1280, 1000)
    browser.get(page_member.url + "/ui/#/tree/app/config")
    until(browser, shows("node-data", '"port": 5432', '"debug": false'), "JSON data of /app/config")
    until(browser, shows("who", f"node {page_member.node_id}", f"leader: node {leader_id}"), "who")
    assert "Version\n0" in text_of(browser, "node-stat")
    config_item = tree_item(browser, "/app/config")
    assert config_item is not None and config_item.get_attribute("aria-selected") == "true"
    browser.execute_script("window.__sameDocument = true;")
    shoot(browser, artifacts, "1-open-node")

    # The keyboard: Home goes to the root, Right-Right enters /app, Enter opens it.
    config_item.send_keys(Keys.HOME)
    root = tree_item(browser, "/")
    assert root is not None and browser.switch_to.active_element == root
    root.send_keys(Keys.ARROW_DOWN)
    app_item = tree_item(browser, "/app")
    assert app_item is not None and browser.switch_to.active_element == app_item
    app_item.send_keys(Keys.ENTER)
    until(browser, shows("node-title", "/app"), "/app opened with Enter")
    assert browser.current_url.endswith("#/tree/app")
    # Left collapses, Right expands again; the focus stays on the item.
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    until(browser, lambda b: expanded(b, "/app") == "false", "/app collapsed by Left")
    assert tree_item(browser, "/app/config") is None
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    until(browser, lambda b: expanded(b, "/app") == "true", "/app expanded by Right")
    assert browser.switch_to.active_element.get_attribute("data-path") == "/app"

    # Children come a page at a time: "more" reads the rest.
    items = until(browser, lambda b: tree_item(b, "/app/items"), "/app/items in the tree")
    items.find_element("css selector", ".twisty").click()
    until(browser, lambda b: tree_item(b, "/app/items/item-4"), "first page of /app/items")
    assert tree_item(browser, "/app/items/item-5") is None
    browser.find_element("css selector", 'button[data-more="/app/items"]').click()
    until(browser, lambda b: tree_item(b, "/app/items/item-6"), "second page of /app/items")

    # Binary data shows as hex, or base64 with the toggle.
    click_item(browser, "/app/blob")
    until(browser, shows("node-data", "00 ff 62 69 6e 61 72 79"), "hex dump of /app/blob")
    browser.find_element("css selector", 'label[for="binary-base64"]').click()
    until(browser, shows("node-data", "AP9iaW5hcnk="), "base64 of /app/blob")

    # Edit with the version shown (0): saved as version 1.
    click_item(browser, "/app/config")
    until(browser, shows("node-title", "/app/config"), "/app/config opened by a click")
    browser.find_element("id", "btn-edit").click()
    editor = browser.find_element("id", "edit-data")
    editor.clear()
    editor.send_keys('{"db": {"port": 6543}}')
    browser.find_element("id", "btn-save").click()
    until(browser, shows("status", "Saved /app/config: version 1"), "save acknowledged")
    until(browser, shows("node-data", '"port": 6543'), "saved data shown")
    assert read(other, "/app/config")["data"] == '{"db": {"port": 6543}}'

    # Another client changes the node while the user edits: the save is
    # refused (BadVersion), the current data is shown, nothing is overwritten.
    browser.find_element("id", "btn-edit").click()
    editor = browser.find_element("id", "edit-data")
    editor.clear()
    editor.send_keys('{"db": {"port": 1}}')
    theirs = write(other, "PUT", "/app/config", b'{"db": {"port": 7000}}')
    until(browser, shows("node-changed", "now at version 2"), "changed-while-editing notice")
    browser.find_element("id", "btn-save").click()
    until(browser, shows("conflict", "now at version 2", '"port": 7000'), "version conflict")
    assert read(other, "/app/config", theirs["zxid"])["data"] == '{"db": {"port": 7000}}'
    shoot(browser, artifacts, "2-version-conflict")
    browser.find_element("id", "btn-conflict-overwrite").click()
    until(browser, shows("status", "Saved /app/config: version 3"), "explicit overwrite")
    assert browser.find_element("id", "conflict").is_displayed() is False

    # Live: writes through ANOTHER member appear without a reload.
    write(other, "PUT", "/app/config", b'{"live": "from another member"}')
    until(browser, shows("node-data", '"live": "from another member"'), "live data change")
    until(browser, shows("node-stat", "Version\n4"), "live stat change")
    write(other, "POST", "/app/added-elsewhere", b"x")
    until(browser, lambda b: tree_item(b, "/app/added-elsewhere"), "live child in the tree")
    assert browser.execute_script("return window.__sameDocument === true;")
    shoot(browser, artifacts, "3-live-change")

    # Create a sequential child of /app from the form.
    click_item(browser, "/app")
    until(browser, shows("node-title", "/app"), "/app opened")
    browser.find_element("id", "btn-create").click()
    browser.find_element("id", "create-name").send_keys("job-")
    browser.find_element("id", "create-data").send_keys("made in the UI")
    browser.find_element("id", "create-sequential").click()
    browser.find_element("css selector", "#create-form button[type=submit]").click()
    until(browser, shows("status", "Created /app/job-0000000"), "create acknowledged")
    created = browser.find_element("id", "status").text.split()[1]
    status, _, body = http("GET", f"{other.url}/v1/nodes{created}?consistency=linearizable")
    assert (status, json.loads(body)["data"]) == (200, "made in the UI")
    until(browser, lambda b: tree_item(b, created), "created node in the tree")

    # Delete a node with children: only after a confirmation that names the count.
    click_item(browser, "/app/items")
    until(browser, shows("node-stat", "Number of children\n7"), "/app/items opened")
    browser.find_element("id", "btn-delete").click()
    until(browser, shows("confirm-text", "Delete /app/items and its 7 children"), "confirmation")
    browser.find_element("id", "confirm-ok").click()
    until(browser, shows("status", "Deleted /app/items"), "delete acknowledged")
    until(browser, lambda b: tree_item(b, "/app/items") is None, "deleted node gone from the tree")
    until(browser, shows("node-title", "/app"), "the parent opened after the delete")
    assert http("GET", other.url + "/v1/nodes/app/items?consistency=linearizable")[0] == 404
    click_item(browser, "/app/config")
    until(browser, shows("node-title", "/app/config"), "/app/config opened again")

    # The sessions page lists a session opened elsewhere, with its ephemeral.
    status, _, body = http("POST", other.url + "/v1/sessions", b'{"ttl_ms": 60000}')
    assert status == 201, body
    session = json.loads(body)["id"]
    status, _, body = http(
        "POST",
        other.url + "/v1/nodes/app/owned?ephemeral=true",
        b"",
        headers={"X-Coord-Session": session},
    )
    assert status == 201, body
    read(page_member, "/app/owned", json.loads(body)["zxid"])  # the page's member has it
    browser.find_element("css selector", 'a[data-page="sessions"]').click()
    until(browser, shows("sessions-table", session), "the session on the sessions page")
    browser.back()
    until(browser, shows("node-title", "/app/config"), "back to /app/config")

    # The cluster page, reached by its hash; the back button returns.
    browser.find_element("css selector", 'a[data-page="cluster"]').click()
    until(browser, shows("cluster-table", "leader", "voter"), "cluster page")
    rows = browser.find_elements("css selector", "#cluster-table tbody tr")
    assert len(rows) == 3
    assert f"leader {leader_id}" in text_of(browser, "cluster-summary")
    browser.back()
    until(browser, shows("node-title", "/app/config"), "back to /app/config")

    # The member the page talks to dies: the page says so and names the others.
    cluster.kill(page_member.node_id)
    until(
        browser,
        shows("lost", f"Lost node {page_member.node_id} at {page_member.url}"),
        "lost-node banner",
    )
    banner = browser.find_element("id", "lost")
    assert banner.get_attribute("role") == "alert"
    links = [
        a.get_attribute("href") or "" for a in banner.find_elements("css selector", "a.member")
    ]
    others = {m.url for m in cluster if m.node_id != page_member.node_id}
    assert links and all(any(h.startswith(f"{u}/ui/") for u in others) for h in links), links
    shoot(browser, artifacts, "4-lost-node")

    # It comes back: the banner goes, and the page follows changes again.
    cluster.start(page_member.node_id)
    until(browser, lambda b: not b.find_element("id", "lost").is_displayed(), "recovery")
    write(other, "PUT", "/app/config", b'{"after": "restart"}')
    until(browser, shows("node-data", '"after": "restart"'), "live change after recovery")
    assert browser.execute_script("return window.__sameDocument === true;")
