"""A browser's own ``EventSource`` on ``GET /v1/watch``: it receives the
events of another client's writes, and resumes with ``?since=`` after exactly
the last event it saw (issue 5)."""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import wait_until
from tests.integration.conftest import ServerProcess

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.browser

EVENT_TYPES = ("created", "deleted", "data_changed", "children_changed")

# Opens an EventSource (same origin as the page) and records what it gets.
OPEN_EVENT_SOURCE = """
const [url, types] = arguments;
if (window.__es) { window.__es.close(); }
window.__events = [];
window.__open = false;
const es = new EventSource(url);
for (const type of types) {
    es.addEventListener(type, (e) => {
        window.__events.push({type: e.type, id: e.lastEventId, body: JSON.parse(e.data)});
    });
}
es.onopen = () => { window.__open = true; };
window.__es = es;
"""


def write(server: ServerProcess, method: str, path: str, data: bytes) -> int:
    """A write by another client (not the browser); returns its X-Coord-Zxid."""
    request = urllib.request.Request(
        server.url + "/v1/nodes" + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)
        zxid = int(response.headers["X-Coord-Zxid"])
        assert json.loads(response.read())["zxid"] == zxid
        return zxid


def open_event_source(browser: WebDriver, server: ServerProcess, query: str) -> None:
    browser.execute_script(OPEN_EVENT_SOURCE, f"/v1/watch/app?{query}", list(EVENT_TYPES))
    # Open means the server answered: the watch is registered from here on.
    wait_until(browser, "return window.__open;", bool, "open EventSource")


def events(browser: WebDriver) -> list[dict[str, Any]]:
    return list(browser.execute_script("return window.__events;"))


def wait_for_zxid(browser: WebDriver, zxid: int) -> list[dict[str, Any]]:
    return list(
        wait_until(
            browser,
            "return window.__events;",
            lambda evs: any(e["body"]["zxid"] == zxid for e in evs),
            f"event with zxid {zxid}",
        )
    )


def find(evs: list[dict[str, Any]], type_: str, path: str) -> dict[str, Any]:
    found = [e for e in evs if e["type"] == type_ and e["body"]["path"] == path]
    assert len(found) == 1, evs
    return found[0]


@pytest.fixture(scope="module")
def page(browser: WebDriver, server: ServerProcess) -> WebDriver:
    """The browser on a page of the server's own origin, and ``/app`` created."""
    write(server, "POST", "/app", b"")
    browser.get(server.url + "/health")
    return browser


def test_event_source_receives_another_clients_writes(
    page: WebDriver, server: ServerProcess
) -> None:
    open_event_source(page, server, "recursive=true&data=true")

    created_zxid = write(server, "POST", "/app/greeting", b"hello")
    created = find(wait_for_zxid(page, created_zxid), "created", "/app/greeting")
    assert created["body"]["zxid"] == created_zxid
    assert created["body"]["stat"]["czxid"] == created_zxid
    assert (created["body"]["data"], created["body"]["encoding"]) == ("hello", "utf-8")

    set_zxid = write(server, "PUT", "/app/greeting", "héllo again".encode())
    changed = find(wait_for_zxid(page, set_zxid), "data_changed", "/app/greeting")
    assert changed["body"]["zxid"] == set_zxid
    assert changed["body"]["stat"]["mzxid"] == set_zxid
    assert changed["body"]["stat"]["version"] == 1
    assert (changed["body"]["data"], changed["body"]["encoding"]) == ("héllo again", "utf-8")
    assert changed["id"] == str(set_zxid)  # a one-event txn: its id: line is its zxid
    page.execute_script("window.__es.close();")


def summary(evs: list[dict[str, Any]]) -> list[tuple[str, str, int, str, str]]:
    return [
        (e["type"], e["body"]["path"], e["body"]["zxid"], e["body"]["data"], e["id"]) for e in evs
    ]


def test_event_source_resumes_with_since_after_the_last_event_seen(
    page: WebDriver, server: ServerProcess
) -> None:
    open_event_source(page, server, "recursive=true&data=true")
    write(server, "POST", "/app/resume", b"v0")
    seen_zxid = write(server, "PUT", "/app/resume", b"v1")
    seen = wait_for_zxid(page, seen_zxid)
    last_id = seen[-1]["id"]
    assert last_id == str(seen_zxid)
    page.execute_script("window.__es.close();")

    # Written while no EventSource is open.
    missed = [
        write(server, "PUT", "/app/resume", b"m1"),
        write(server, "PUT", "/app/resume", b"m2"),
    ]
    assert last_id == str(seen_zxid) and missed[0] > seen_zxid

    open_event_source(page, server, f"recursive=true&data=true&since={last_id}")
    wait_until(page, "return window.__events.length;", lambda n: n >= 2, "replayed events")
    # A marker written after the replay: once it arrives, anything the replay
    # repeated or added would be in the list before it.
    marker = write(server, "PUT", "/app/resume", b"end")
    got = wait_for_zxid(page, marker)
    page.execute_script("window.__es.close();")

    assert summary(got) == [
        ("data_changed", "/app/resume", missed[0], "m1", str(missed[0])),
        ("data_changed", "/app/resume", missed[1], "m2", str(missed[1])),
        ("data_changed", "/app/resume", marker, "end", str(marker)),
    ]
