"""Driving the dashboard in headless Chromium: sign in, wait for the live feed, forge requests.

The browser is Debian's Chromium (dispatchd.devtools.browser); `forge` sends a POST outside the
browser with a session's cookies, as another site or a tampered page would.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TypeVar, cast

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")
WAIT = 20.0


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], T], timeout: float = WAIT) -> T:
    """Until `condition(browser)` is truthy (each look is cheap: the page is already loaded).

    A look that meets an element a live page has just replaced (stale) is simply not yet true.
    """
    wait = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(condition)  # type: ignore[no-any-return]


def text_of(browser: WebDriver, css: str) -> str | None:
    """An element's text read in one step: a page re-reading itself cannot make it stale midway."""
    text = browser.execute_script("const e = document.querySelector(arguments[0]); return e && e.textContent", css)
    return text.strip() if isinstance(text, str) else None


# What Chromium answers when a look lands on a document being replaced (a navigation finishing,
# a live page re-reading itself): the next look sees the new one.
REPLACED = "does not belong to the document"


def element(browser: WebDriver, css: str) -> WebElement:
    """The element `css` names, once the page shows it (looks that race a replacement are retried)."""

    def look(b: WebDriver) -> WebElement | bool:
        try:
            return b.find_element(By.CSS_SELECTOR, css)
        except StaleElementReferenceException:
            return False
        except WebDriverException as error:
            if REPLACED in str(error.msg):
                return False
            raise

    return cast(WebElement, wait_for(browser, look))  # never False: wait_for returns a truthy look


def sign_in(browser: WebDriver, base: str, token: str) -> None:
    """The development login page, as a person would use it (any earlier session signed out)."""
    browser.get(base + "login")
    for button in browser.find_elements(By.CSS_SELECTOR, "form[action='/logout'] button"):
        button.click()
        # The old page (with its own #token field) stays until the logout's answer replaces it:
        # wait for that, or the field found next belongs to a page about to go away.
        wait_for(browser, staleness_of(button))
    element(browser, "#token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, lambda b: b.current_url.endswith("/jobs"))


def cookies(browser: WebDriver) -> dict[str, str]:
    return {c["name"]: c["value"] for c in browser.get_cookies()}


def csrf_token(browser: WebDriver) -> str:
    value = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    assert value
    return value


def forge(url: str, jar: dict[str, str], form: dict[str, str]) -> tuple[int, str]:
    """POST `form` to `url` with the cookies of `jar`; the status and body of the answer."""
    cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
    return fetch(url, cookie, data=urllib.parse.urlencode(form).encode())


def fetch(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, str]:
    """GET (or POST `data` to) `url` outside the browser; the status and body, errors included."""
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
