"""A page of another origin calls the API in a real browser: with
``--cors-origin`` its fetches (preflighted ones included) and its
EventSource work and see the ``X-Coord-*`` headers; without, the browser
keeps the answers from the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import wait_until
from tests.integration.conftest import ServerProcess, start_server

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.browser


# A PUT with a body type a form cannot send: the browser preflights it.
FETCH_PUT = """
const [url, done] = [arguments[0], arguments[arguments.length - 1]];
fetch(url, {method: "PUT", body: "from-a-page",
            headers: {"Content-Type": "application/octet-stream", "X-Request-Id": "page-1"}})
  .then(r => done({status: r.status, zxid: r.headers.get("X-Coord-Zxid"),
                   node: r.headers.get("X-Coord-Node"), rid: r.headers.get("X-Request-Id")}))
  .catch(e => done({error: String(e)}));
"""

OPEN_EVENT_SOURCE = """
window.__events = []; window.__open = false; window.__failed = false;
const es = new EventSource(arguments[0]);
es.addEventListener("data_changed", e => window.__events.push(JSON.parse(e.data)));
es.onopen = () => { window.__open = true; };
es.onerror = () => { if (es.readyState === EventSource.CLOSED) window.__failed = true; };
window.__es = es;
"""


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose origin the page comes from (any page of it will do)."""
    with start_server(tmp_path_factory.mktemp("page") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def api(
    page_origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Another origin's API, which allows the page's origin."""
    data = tmp_path_factory.mktemp("api") / "data"
    with start_server(data, "--cors-origin", page_origin.url) as srv:
        yield srv


def test_an_allowed_origin_writes_and_watches(
    browser: WebDriver, page_origin: ServerProcess, api: ServerProcess
) -> None:
    browser.get(page_origin.url + "/health")
    browser.execute_script(OPEN_EVENT_SOURCE, api.url + "/v1/watch/cors-page")
    wait_until(browser, "return window.__open || window.__failed;", bool, "EventSource answer")
    assert browser.execute_script("return window.__open;"), "the cross-origin stream was refused"
    answer = browser.execute_async_script(FETCH_PUT, api.url + "/v1/nodes/cors-page")
    assert answer.get("status") == 201, answer
    # Exposed to the page: what it needs to read its own writes elsewhere.
    assert int(answer["zxid"]) > 0 and answer["node"] == "1" and answer["rid"] == "page-1"
    answer = browser.execute_async_script(FETCH_PUT, api.url + "/v1/nodes/cors-page")
    events = wait_until(browser, "return window.__events;", bool, "a data_changed event")
    assert events[0]["path"] == "/cors-page" and events[0]["zxid"] == int(answer["zxid"])


def test_another_origin_is_kept_out(browser: WebDriver, api: ServerProcess, tmp_path: Path) -> None:
    with start_server(tmp_path / "data") as stranger:
        browser.get(stranger.url + "/health")  # not an allowed origin of `api`
        answer = browser.execute_async_script(FETCH_PUT, api.url + "/v1/nodes/cors-stranger")
        assert "error" in answer, answer  # the preflight was refused: nothing sent
        browser.execute_script(OPEN_EVENT_SOURCE, api.url + "/v1/watch/cors-stranger")
        wait_until(browser, "return window.__failed;", bool, "the stream refused")
