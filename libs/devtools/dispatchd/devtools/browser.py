"""Headless Chromium for the dashboard's browser tests and `make screenshots`: Debian's own browser.

Invariant: the system `chromium` and its `chromedriver` (scripts/bootstrap.sh installs both with
apt) are used as they are: Selenium is told where both are, so it never looks for or downloads a
browser or driver of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSER_CANDIDATES = ("chromium", "chromium-browser")


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed (run `make venv`, which installs them as root)."""


def _which(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"none of {', '.join(names)} is on PATH; `apt-get install chromium chromium-driver`")


def chromium(width: int = 1280, height: int = 860, download_dir: Path | None = None) -> webdriver.Chrome:
    """A headless Chromium window of `width` x `height` CSS pixels, driven through chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = _which(BROWSER_CANDIDATES)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers; the pages are our own
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # nothing fetched from the internet, not even by the browser
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    if download_dir is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
    service = Service(executable_path=_which(("chromedriver",)))
    return webdriver.Chrome(options=options, service=service)
