"""tests/browserkit.py works: Debian's Chromium, driven by Playwright, loads pages of a real HTTP
server that forbids inline scripts, runs their same-origin script, finds what axe-core finds
under that CSP and takes screenshots. The console's browser tests build on this."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browserkit import (
    axe_violations,
    browser,
    open_page,
    page_errors,
    requires_axe,
    requires_browser,
    screenshot,
)
from support import LOOPBACK

pytestmark = requires_browser

CSP = "default-src 'self'; script-src 'self'"
GOOD = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Good page</title><script src="/app.js" defer></script></head>
<body><main>
<h1>Pump 1</h1>
<img src="/pump.svg" alt="Pump 1 schematic" width="40" height="40">
<p id="state">stopped</p>
<button type="button" id="start">Start</button>
</main></body>
</html>"""
BAD = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Bad page</title></head>
<body><main>
<h1>Pump 2</h1>
<img src="/pump.svg" width="40" height="40">
</main></body>
</html>"""
APP = b"""document.getElementById("start").addEventListener("click", () => {
  document.getElementById("state").textContent = "running";
});"""
SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><circle cx="20" cy="20"
r="18" fill="#246"/></svg>"""
FILES = {
    "/good.html": ("text/html; charset=utf-8", GOOD),
    "/bad.html": ("text/html; charset=utf-8", BAD),
    "/app.js": ("text/javascript", APP),
    "/pump.svg": ("image/svg+xml", SVG),
    "/favicon.ico": ("image/svg+xml", SVG),  # Chromium asks for it: a 404 is a console error
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = FILES.get(self.path)
        if found is None:
            self.send_error(404)
            return
        kind, body = found
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """The pages above on a free loopback port (bound by the server itself: no race)."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="browserkit-site", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_page_loads_and_its_same_origin_script_runs_under_the_csp(site: str) -> None:
    async with open_page(site) as page:
        response = await page.goto("/good.html")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == CSP
        assert await page.title() == "Good page"
        assert await page.text_content("#state") == "stopped"
        await page.get_by_role("button", name="Start").click()
        await page.wait_for_function(
            "document.getElementById('state').textContent === 'running'", timeout=3_000
        )
        assert page_errors(page) == []
        # The CSP is in force: an inline script is refused, and the refusal is reported.
        await page.evaluate(
            """() => { const s = document.createElement("script");
                      s.textContent = "window.inlineRan = true"; document.head.append(s); }"""
        )
        assert await page.evaluate("window.inlineRan === undefined")
        assert any("Content Security Policy" in e for e in page_errors(page))


@requires_axe
async def test_axe_runs_under_the_csp_and_finds_a_serious_violation(site: str) -> None:
    async with open_page(site) as page:
        await page.goto("/good.html")
        assert await axe_violations(page) == []
        assert await axe_violations(page) == []  # axe injected once, run again

        await page.goto("/bad.html")
        found = await axe_violations(page)
        assert [v["id"] for v in found] == ["image-alt"], found
        assert found[0]["impact"] in ("serious", "critical")
        assert found[0]["nodes"] == ["img"]
        assert found[0]["help"]
        assert await axe_violations(page, impacts=("minor",)) == []
        # Injecting axe did not need the CSP lifted: nothing was refused.
        assert page_errors(page) == []


async def test_screenshot_is_a_png(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_SCREENSHOTS", str(tmp_path / "shots"))
    async with open_page(site, viewport={"width": 320, "height": 240}) as page:
        await page.goto("/good.html")
        path = await screenshot(page, "browserkit good page")
    assert path == tmp_path / "shots" / "browserkit_good_page.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_browser_is_closed_on_exit_even_after_a_failure(site: str) -> None:
    with pytest.raises(RuntimeError, match="inside"):
        async with browser() as b:
            page = await b.new_page()
            await page.goto(f"{site}/good.html", timeout=5_000)
            raise RuntimeError("inside")
    assert not b.is_connected()
