"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, a real cluster.

The browser is the system's ``/usr/bin/chromium`` (installed by ``scripts/system-deps``
from ``scripts/debian-packages.d/browser.txt``); Playwright never downloads one.  When
a test fails, every page it opened is saved as a PNG under ``var/test-artifacts/browser/``
(or ``$XLMATE_ARTIFACTS``) and the path is printed with the cluster's logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.integration.cluster import Cluster

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("XLMATE_ARTIFACTS", "var/test-artifacts")) / "browser"
WAIT_MS = 10_000  # the longest any page condition is waited for (a loaded 2-core machine)
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (contexts keep the tests apart)."""
    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/system-deps (as root)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def web_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Discovery, a broker and two edges, registered; shared by a module's tests."""
    c = Cluster(tmp_path_factory.mktemp("browser-cluster"))
    try:
        c.start_discovery()
        c.start_broker()
        c.start_edge("eu-west")
        c.start_edge("eu-west")
        c.wait_registered(*c.edges)
        yield c
    finally:
        c.stop()


class Pages:
    """Browser contexts opened by one test; screenshots of each on failure."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.pages: dict[str, Page] = {}

    def open(self, name: str, url: str) -> Page:
        """A fresh context (its own storage, like another person) showing ``url``."""
        context = self.browser.new_context(viewport={"width": 1000, "height": 720})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        self.pages[name] = page
        page.goto(url)
        return page

    def screenshots(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, page in self.pages.items():
            path = folder / f"{name}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                saved.append(path)
            except Exception as exc:  # a crashed page must not hide the test's own failure
                print(f"no screenshot of {name}: {exc}")
        return saved

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(
    browser: Browser, web_cluster: Cluster, request: pytest.FixtureRequest
) -> Iterator[Pages]:
    """Open pages with ``pages.open(name, url)``; on failure: screenshots and cluster logs."""
    opened = Pages(browser)
    try:
        yield opened
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
            for path in opened.screenshots(folder):
                print(f"screenshot: {path.resolve()}")
            print(web_cluster.logs())
        opened.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember each phase's report on the test item (for artifacts on failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
