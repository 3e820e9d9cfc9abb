"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver`` packages)
driven by Selenium, and a real server for it to talk to.

Run with ``python3 -m pytest -m browser``; the default run leaves these out.
The browser and its driver come from the system only: Selenium is handed
both paths, so its driver manager never runs and nothing is downloaded. A
missing browser, driver or Selenium fails the tests with the command that
installs it (no silent skip).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.conftest import ServerProcess, start_server

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APT_INSTALL = "apt-get install -y chromium chromium-driver"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # No outside connections: updates, sync, field trials, first-run pages,
    # extension update checks (Debian's wrapper enables remote extensions),
    # and no name lookups at all (the server is an IP literal).
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"browser tests need Debian's Chromium and its driver ({', '.join(missing)} "
            f"not found); install them with: {APT_INSTALL}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server for this test module, with a fresh data dir."""
    srv = start_server(tmp_path_factory.mktemp("server") / "data")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, quit (browser and driver) at the end."""
    _require_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.selenium_manager import SeleniumManager
    except ImportError:
        pytest.fail(
            "browser tests need Selenium: python3 -m pip install -e '.[test,browser]'",
            pytrace=False,
        )

    def no_manager(self: Any, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager must not run (it may download): {args}")

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        with pytest.MonkeyPatch.context() as mp:
            # Belt and braces: with the driver's path given, Selenium skips its
            # manager; should that ever change, fail rather than fetch a build.
            mp.setattr(SeleniumManager, "binary_paths", no_manager)
            driver = webdriver.Chrome(
                service=Service(executable_path=CHROMEDRIVER), options=options
            )
        try:
            driver.set_script_timeout(10)
            yield driver
        finally:
            driver.quit()


WAIT_S = 15.0  # bound on any one wait for the page


def wait_until(browser: WebDriver, script: str, done: Any, what: str) -> Any:
    """Run ``script`` in the page until ``done(value)``; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = browser.execute_script(script)
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"browser: no {what} within {WAIT_S}s; last saw {value!r}")
        time.sleep(0.02)
