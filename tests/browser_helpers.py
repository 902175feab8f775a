"""A real headless Chromium for the page tests: Debian's `chromium` and `chromium-driver`
(which `.ci/run` installs), driven by Selenium with its driver download disabled, since
nothing may be downloaded at test time. Import it after `pytest.importorskip("selenium")`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HEADLESS_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-extensions",
    "--disable-sync",
)


def require_chromium() -> None:
    """Skip the calling test module where Debian's Chromium or its driver is missing."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium "
            "chromium-driver; .ci/run installs them)",
            allow_module_level=True,
        )


@contextmanager
def headless_chromium(
    args: Sequence[str] = (), capabilities: dict[str, Any] | None = None
) -> Iterator[webdriver.Chrome]:
    """A Chromium driven headless, with `args` beside `HEADLESS_ARGS`; quit on leaving."""
    from selenium.webdriver.common import selenium_manager

    def no_downloads(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("Selenium Manager must not run: it downloads drivers")

    manager = selenium_manager.SeleniumManager.binary_paths
    selenium_manager.SeleniumManager.binary_paths = no_downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*HEADLESS_ARGS, *args):
        options.add_argument(arg)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    finally:
        selenium_manager.SeleniumManager.binary_paths = manager
    try:
        yield driver
    finally:
        driver.quit()
