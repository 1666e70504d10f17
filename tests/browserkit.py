"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python, with
axe-core accessibility checks. Playwright's own browser download is never used.

A test is short::

    @requires_browser
    async def test_console(server_url: str) -> None:
        async with open_page(server_url) as page:
            await page.goto("/console")
            await page.get_by_role("button", name="Refresh").click()
            assert await axe_violations(page) == []  # also mark it @requires_axe
            assert page_errors(page) == []

Without chromium or the playwright package (``skip_without_browser``), or without axe-core
(``skip_without_axe``; scripts/setup installs it with npm ci in tests/browser), the tests that
need them are skipped, never failed. Every wait is bounded: launching by ``LAUNCH_TIMEOUT_MS``,
each page action and navigation by ``TIMEOUT_MS`` (``open_page(timeout_ms=...)`` to change it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Error, Page

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without the background-networking flags Chromium keeps trying
# Google's services (updates, sync, field trials) and logs every refused connection.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000  # a loaded machine running the suite on several workers starts it slowly
TIMEOUT_MS = 5_000  # each action, wait and navigation of a page from open_page
CLOSE_TIMEOUT_S = 10.0

TESTS = Path(__file__).resolve().parent
AXE_JS = TESTS / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = TESTS / "browser" / "screenshots"  # gitignored; BRIDGE_SCREENSHOTS overrides it


def skip_without_browser() -> str | None:
    """Why browser tests cannot run here (a pytest skip reason), or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian's chromium package; scripts/setup installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (the dev extra: scripts/setup)"
    return None


def skip_without_axe() -> str | None:
    """Why accessibility checks cannot run here (a pytest skip reason), or None when they can."""
    if not AXE_JS.is_file():
        return f"axe-core is missing ({AXE_JS}): scripts/setup runs npm ci in tests/browser"
    return None


requires_browser = pytest.mark.skipif(
    skip_without_browser() is not None, reason=skip_without_browser() or ""
)
requires_axe = pytest.mark.skipif(skip_without_axe() is not None, reason=skip_without_axe() or "")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium, closed on exit together with Playwright's driver process, always.

    For several pages or contexts in one test (``await b.new_context(...)``); ``open_page`` is
    shorter for one page."""
    reason = skip_without_browser()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    # Leaving this block stops the driver, which kills a browser that did not close in time.
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield launched
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launched.close(), CLOSE_TIMEOUT_S)


_errors: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


async def new_page(
    b: Browser, base_url: str | None = None, *, timeout_ms: float = TIMEOUT_MS, **options: Any
) -> Page:
    """A page in a new context (its own cookies) of browser ``b``: ``page.goto("/path")`` is
    relative to ``base_url``; every action and navigation times out after ``timeout_ms``.
    Console errors and uncaught exceptions of the page (a Content-Security-Policy refusal is
    one) are kept for ``page_errors``. ``options`` go to ``Browser.new_context`` (viewport,
    locale, ...). The context closes with the browser."""
    if base_url is not None:
        options["base_url"] = base_url
    context = await b.new_context(**options)
    context.set_default_timeout(timeout_ms)
    context.set_default_navigation_timeout(timeout_ms)
    page = await context.new_page()
    errors: list[str] = []
    _errors[page] = errors

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            url = message.location.get("url")
            errors.append(f"{message.text} ({url})" if url else message.text)

    def on_pageerror(error: Error) -> None:
        errors.append(f"uncaught: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    return page


@contextlib.asynccontextmanager
async def open_page(
    base_url: str | None = None, *, timeout_ms: float = TIMEOUT_MS, **context_options: Any
) -> AsyncIterator[Page]:
    """A page of its own browser (``new_page`` of a fresh ``browser()``)."""
    async with browser() as b:
        yield await new_page(b, base_url, timeout_ms=timeout_ms, **context_options)


def page_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of a page from ``open_page``, oldest first."""
    return list(_errors.get(page, []))


def take_page_errors(page: Page) -> list[str]:
    """``page_errors``, then forget them: for a test that caused some on purpose."""
    found = page_errors(page)
    _errors.get(page, []).clear()
    return found


class Violation(TypedDict):
    id: str  # the axe rule: "image-alt", "label", "color-contrast", ...
    impact: str  # "minor", "moderate", "serious" or "critical"
    help: str
    nodes: list[str]  # the CSS selector of each offending element (frames joined by " >>> ")


@functools.cache
def _axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


_RUN_AXE = """async () => {
  const results = await window.axe.run(document, {resultTypes: ["violations"]});
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact || "",
    help: v.help,
    nodes: v.nodes.map((n) => n.target.map((t) => [t].flat(Infinity).join(" ")).join(" >>> ")),
  }));
}"""


async def axe_violations(
    page: Page, impacts: Sequence[str] = ("serious", "critical")
) -> list[Violation]:
    """The axe-core violations of the page as it is now, of the given impacts only.

    The console's pages forbid inline scripts (``Content-Security-Policy: script-src 'self'``),
    so ``page.add_script_tag(path=AXE_JS)`` is refused: it inserts the file's text as an inline
    <script>. ``page.evaluate(source)`` runs it through the DevTools protocol, which the page's
    CSP does not govern, so axe is injected that way and the page keeps its real CSP (a
    ``bypass_csp=True`` context would also work, but would hide the CSP errors the console
    tests want to see). Skips the test when axe-core is not installed."""
    reason = skip_without_axe()
    if reason is not None:
        pytest.skip(reason)
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(_axe_source())
    found: list[Violation] = await page.evaluate(_RUN_AXE)
    return [v for v in found if v["impact"] in impacts]


def screenshot_path(name: str) -> Path:
    """Where ``screenshot`` saves ``name``: ``<name>.png`` (other characters than letters, digits,
    ".", "_" and "-" made "_") under $BRIDGE_SCREENSHOTS, or else tests/browser/screenshots/
    (gitignored); the folder is created."""
    folder = Path(os.environ.get("BRIDGE_SCREENSHOTS") or SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.removesuffix(".png")).strip("._") or "page"
    return folder / f"{stem}.png"


async def screenshot(page: Page, name: str) -> Path:
    """Save a PNG of the whole page at ``screenshot_path(name)`` and return that path."""
    path = screenshot_path(name)
    await page.screenshot(path=str(path), full_page=True)
    return path
