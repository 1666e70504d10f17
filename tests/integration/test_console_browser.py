"""The console as people use it, in Debian's Chromium, on the running demo (simulated plant,
PLC and MES, the gateway and its bundled model, on free ports).

An operator logs in with the keyboard and watches pump-03 turn to ``bearing_fault`` on the
Assets page without reloading it, opens it and reads an explanation that names vibration,
acknowledges its alert and sees the mean time to acknowledge appear; an admin promotes a canary
after a confirmation step; a reader sees no buttons and the API refuses the reader's promote.
Every page is saved as a screenshot and passes axe-core's serious and critical checks; no page
logs an error (a Content-Security-Policy refusal would be one).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from browserkit import (
    axe_violations,
    browser,
    new_page,
    page_errors,
    requires_axe,
    requires_browser,
    screenshot,
    take_page_errors,
)
from faultproxy import FaultProxy, Mode
from playwright.async_api import Browser, Page, expect
from support import free_port

from bridge.auth import Scope
from bridge.runtime.pipeline import Gateway
from bridge.simulators.demo import DEFAULT_MAPPING, FAULTY_PUMP, DemoPorts, run_demo
from bridge.simulators.mes.server import MesReceiver
from bridge.store.apikeys import ApiKeyRepository

pytestmark = [requires_browser, requires_axe, pytest.mark.serial]

MODEL = "pump-health"
FAULTY = f"pump-{FAULTY_PUMP:02d}"
ROW = f'tr[data-key="{FAULTY}/{MODEL}"]'
VIEWPORT = {"width": 1280, "height": 900}


@dataclass
class Demo:
    url: str
    gateway: Gateway
    mes: MesReceiver
    reader: str
    operator: str
    admin: str


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    # Started before the demo: the Assets page must be on screen before the fault shows.
    async with browser() as b:
        yield b


@pytest.fixture
async def demo(tmp_path: Path, chromium: Browser) -> AsyncIterator[Demo]:
    # A copy of the demo's mapping and model folder: the test registers a second version,
    # which must lie in the mapping's models directory.
    data = tmp_path / "demo_data"
    shutil.copytree(DEFAULT_MAPPING.parent, data)
    shutil.copy(data / "models" / "pump_health.onnx", data / "models" / "pump_health_v2.onnx")
    ports = DemoPorts(
        plant=free_port(), plc=free_port(), mes=free_port(), api=free_port(), hmi=free_port()
    )
    stop = asyncio.Event()
    started: asyncio.Queue[tuple[Gateway, MesReceiver]] = asyncio.Queue(1)
    task = asyncio.create_task(
        run_demo(data / DEFAULT_MAPPING.name, None, ports, tmp_path / "work", stop, started)
    )
    try:
        gateway, mes = await asyncio.wait_for(started.get(), 60)
        keys = ApiKeyRepository(gateway.store)
        _, operator = await asyncio.to_thread(keys.create, "operator", Scope.OPERATE)
        _, admin = await asyncio.to_thread(keys.create, "admin", Scope.ADMIN)
        reader = (tmp_path / "work" / "api-key").read_text().strip()
        yield Demo(f"http://127.0.0.1:{ports.api}", gateway, mes, reader, operator, admin)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def log_in(b: Browser, url: str, key: str, path: str = "/console/") -> Page:
    """Open ``path``, get sent to the login form, and log in with the keyboard only."""
    page = await new_page(b, url, viewport=VIEWPORT, timeout_ms=10_000)
    await page.goto(path)
    assert "/console/login" in page.url
    await expect(page.locator("#api_key")).to_be_focused()  # autofocus: type at once
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await page.wait_for_url(lambda u: urlsplit(u).path == path)
    assert key not in page.url and key not in await page.content()
    return page


async def check_page(page: Page, name: str) -> None:
    await screenshot(page, f"console-{name}")
    violations = await axe_violations(page)
    assert violations == [], f"{name}: {violations}"
    assert page_errors(page) == [], f"{name}: {page_errors(page)}"


async def test_operator_admin_and_reader_in_chromium(chromium: Browser, demo: Demo) -> None:
    # The operator's browser reaches the gateway through a proxy that can cut the link.
    api_port = int(demo.url.rsplit(":", 1)[1])
    async with FaultProxy("127.0.0.1", api_port) as proxy:
        await operator_story(chromium, f"http://127.0.0.1:{proxy.port}", demo.operator, proxy)
    await admin_story(chromium, demo)
    await reader_story(chromium, demo)


async def operator_story(b: Browser, url: str, key: str, proxy: FaultProxy) -> None:
    operator = await log_in(b, url, key, "/console/assets")
    label = operator.locator(f'{ROW} [data-f="label"]')
    before = await label.text_content()
    assert before != "bearing_fault", "the Assets page must be drawn before the fault shows"
    # A marker that a reload would wipe: the label must change in place, from the live stream.
    await operator.evaluate("window.__drawn = true")
    await expect(label).to_have_text("bearing_fault", timeout=45_000)
    assert await operator.evaluate("window.__drawn === true"), "the page reloaded"
    await expect(label).to_have_class("label changed")
    # The score sparkline follows the stream too.
    points = await operator.locator(f"{ROW} polyline.spark-line").get_attribute("points")
    assert points and len(points.split()) >= 2
    await check_page(operator, "assets")

    # A lost stream shows the banner; it goes once the stream is back.
    banner = operator.locator("#live-banner")
    await expect(banner).to_be_hidden()
    proxy.set_mode(Mode.RST)  # cuts the stream and refuses the reconnects
    await expect(banner).to_be_visible(timeout=15_000)
    proxy.set_mode(Mode.PASS)
    await expect(banner).to_be_hidden(timeout=15_000)  # EventSource retries every 3 s
    cut = take_page_errors(operator)
    assert cut and all("/console/live" in e for e in cut), cut

    # Asset detail: the explanation names vibration (the label change was explained).
    await operator.locator(f"{ROW} th a").click()
    await operator.wait_for_url(lambda u: urlsplit(u).path == f"/console/assets/{FAULTY}")
    reason = operator.locator(".reason")
    deadline = time.monotonic() + 15
    while await reason.count() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(1)  # the store writer commits the explained prediction
        await operator.reload()
    await expect(reason.first).to_contain_text("vibration")
    bars = operator.locator("svg.bar-chart .bar-label")
    assert any("vibration" in t for t in await bars.all_text_contents())
    await expect(
        operator.locator('tr[data-tag="pump-03.vibration"] [data-f="quality"]')
    ).to_have_text("good")
    await check_page(operator, "asset")
    # Feedback on the latest prediction: a confirmation, through the REST API.
    feedback = operator.locator("form[data-api$='/feedback']").first
    await feedback.get_by_label("Comment").fill("vibration confirmed on site")
    await feedback.get_by_role("button", name="Confirm").click()
    await expect(operator.locator("#status")).to_have_text("Done.")

    # Alerts: acknowledge pump-03's alert with a comment; the mean time to acknowledge appears.
    await operator.goto("/console/alerts")
    mtta = operator.locator("#m-mtta")
    await expect(mtta).to_have_text("–")
    assert (await operator.locator("#m-feedback").text_content() or "").startswith("1 of ")
    alert_row = operator.locator("tr[data-alert]", has_text=FAULTY).first
    await alert_row.get_by_label("Your name").fill("Dana Novak")
    await alert_row.get_by_placeholder("comment").fill("bearing checked, work order 4711")
    await alert_row.get_by_role("button", name="Acknowledge").click()
    await expect(mtta).not_to_have_text("–", timeout=10_000)
    assert (await mtta.text_content() or "").endswith(("s", "min"))
    await operator.goto("/console/alerts?show=acknowledged")
    await expect(operator.locator("table.alerts")).to_contain_text("Dana Novak, after")
    await expect(operator.locator("table.alerts")).to_contain_text("work order 4711")
    await check_page(operator, "alerts")
    await operator.goto("/console/outbox")
    await check_page(operator, "outbox")


async def admin_story(b: Browser, demo: Demo) -> None:
    # Admin: a canary of version 2 on half the pumps, promoted after a confirmation step.
    async with httpx.AsyncClient(
        base_url=demo.url, headers={"Authorization": f"Bearer {demo.admin}"}
    ) as api:
        r = await api.post(
            f"/api/v1/models/{MODEL}/versions",
            json={"version": "2", "path": "pump_health_v2.onnx"},
        )
        assert r.status_code == 201, r.text
        r = await api.post(f"/api/v1/models/{MODEL}/canary", json={"version": "2", "share": 50})
        assert r.status_code == 200, r.text
    admin = await log_in(b, demo.url, demo.admin, "/console/models")
    v2 = admin.locator('tr[data-version="2"] .state')
    await expect(v2).to_have_text("canary")
    await admin.get_by_role("button", name="Promote 2").click()
    dialog = admin.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("Promote version 2 of pump-health")
    await expect(v2).to_have_text("canary")  # nothing happens before the confirmation
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(v2).to_have_text("active", timeout=10_000)
    await check_page(admin, "models")


async def reader_story(b: Browser, demo: Demo) -> None:
    # A reader: no buttons, and the API refuses the action even with the page's CSRF token.
    reader = await log_in(b, demo.url, demo.reader, "/console/models")
    assert await reader.get_by_role("button", name="Roll back").count() == 0
    refused = await reader.evaluate(
        """async () => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch('/api/v1/models/pump-health/rollback', {
                method: 'POST', headers: {'X-CSRF-Token': csrf}});
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert refused[0] == 403 and "needs scope 'admin'" in refused[1], refused
    assert [e for e in take_page_errors(reader) if "403" not in e] == []
    await reader.goto("/console/alerts?show=all")
    assert await reader.get_by_role("button", name="Acknowledge").count() == 0
    await reader.goto("/console/")
    await expect(reader.locator('[data-count="quality.good"]')).not_to_have_text("0")
    await check_page(reader, "overview")

    # Keyboard: the first Tab reaches the skip link, then the navigation.
    await reader.keyboard.press("Tab")
    await expect(reader.locator("a.skip")).to_be_focused()
    await reader.keyboard.press("Enter")
    await expect(reader.locator("#main")).to_be_focused()
    await reader.locator("nav a", has_text="Assets").focus()
    await reader.keyboard.press("Enter")
    await reader.wait_for_url(lambda u: urlsplit(u).path == "/console/assets")

    # Logged out: the cookie opens nothing any more.
    await reader.get_by_role("button", name="Log out").click()
    await reader.wait_for_url(lambda u: urlsplit(u).path == "/console/login")
    await check_page(reader, "login")
    await reader.goto("/console/models")
    assert "/console/login" in reader.url
