"""The Actions page of the web console, over HTTP.

On a whole gateway serving its API and console on a real socket (a PLC simulator read by a
Modbus source, a classifier that says `fault` above 50 degrees, one `confirm` action writing
the setpoint back): the page lists the action with what it does now, who armed it, its last
write and the request waiting; a reader sees no form and the API refuses what a reader posts;
an operator's forms, posted as the console's script posts them (their fields as JSON, the
session's CSRF token), arm the action and confirm the request, and the PLC's register holds the
value; a replaced request id and a missing CSRF token are refused with their reason and write
nothing; a faulted action offers Reset. An API started apart from the gateway says the page
needs the running gateway."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import httpx
from actions_rig import FROZEN, SETPOINT, first_readings, holding, plc_signals, running_gateway
from emptyview import EmptyView
from insight_models import logistic_classifier
from support import LOOPBACK, free_port, wait_until

from bridge.api import ApiServices
from bridge.api.app import close_app
from bridge.api.sessions import SESSION_COOKIE
from bridge.auth import Scope
from bridge.connectors.modbus import ModbusSourceSettings
from bridge.connectors.modbus.write import ModbusWriter
from bridge.console.app import close_console, create_gateway_app
from bridge.simulators.plc import PlcSimulator
from bridge.store import open_store
from bridge.store.actions import ActionEventFilter, ActionRepository
from bridge.store.apikeys import ApiKeyRepository

PAGE = "/console/actions"
ACTION = "/api/v1/actions/slow-down"


MAPPING = """
version: 1
gateway: {{id: act-console, store: "sqlite:///{store}", api: {{host: 127.0.0.1, port: {api}}}}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 50, timeout_s: 0.5}}
assets:
  pump:
    tags:
      temp: {{source: plc, address: {{table: holding, address: 0, type: uint16}}, deadband: 0.5}}
      running: {{source: plc, address: {{table: coil, address: 0}}}}
      setpoint:
        source: plc
        address: {{table: holding, address: 1, type: float32}}
        writable: true
models:
  health:
    file: {model}
    version: "1"
    assets: [pump]
    trigger: change
    min_interval_ms: 50
    window_s: 5
    min_window_s: 0
    features: [{{tag: temp, stat: last}}]
actions:
  slow-down:
    asset: pump
    description: Lower the setpoint while the pump runs hot
    target: {{modbus: {{source: plc, table: holding, address: {address}, type: float32}}}}
    trigger: {{model: health, label: fault, min_score: 0.9}}
    value: {{expression: "tags.setpoint - 50"}}
    interlocks: ["running == true"]
    limits: {{min: 800, max: 1500}}
    mode: {mode}
{more}"""


@dataclass
class Form:
    """A ``<form data-api=...>``: console.js posts its named fields as JSON to that path."""

    api: str
    fields: dict[str, str] = field(default_factory=dict)
    button: str = ""


class Page(HTMLParser):
    """The CSRF token, the buttons and the API forms of a page, and the text of each action's
    row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.csrf = ""
        self.buttons: list[str] = []
        self.forms: list[Form] = []
        self.rows: dict[str, str] = {}
        self._form: Form | None = None
        self._row: str | None = None
        self._button: str | None = None

    @classmethod
    def parse(cls, text: str) -> Page:
        parser = cls()
        parser.feed(text)
        parser.close()
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "meta" and a.get("name") == "csrf-token":
            self.csrf = a.get("content", "")
        if tag == "tr" and "data-action" in a:
            self._row = a["data-action"]
            self.rows[self._row] = ""
        if tag == "form" and "data-api" in a:
            self._form = Form(a["data-api"])
            self.forms.append(self._form)
        if tag == "input" and self._form is not None and a.get("name"):
            self._form.fields[a["name"]] = a.get("value", "")
        if tag == "button":
            self._button = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "form":
            self._form = None
        if tag == "button" and self._button is not None:
            label = " ".join(self._button.split())
            self.buttons.append(label)
            if self._form is not None:
                self._form.button = label
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._form is None:  # what the row says, not its forms
            self.rows[self._row] += data
        if self._button is not None:
            self._button += data

    def row(self, name: str) -> str:
        return " ".join(self.rows[name].split())

    def form(self, button: str) -> Form:
        (found,) = [f for f in self.forms if f.button == button]
        return found


@dataclass(frozen=True)
class Session:
    cookie: str
    csrf: str

    def headers(self, csrf: bool = True) -> dict[str, str]:
        headers = {"Cookie": f"{SESSION_COOKIE}={self.cookie}"}
        return {**headers, "X-CSRF-Token": self.csrf} if csrf else headers


async def login(http: httpx.AsyncClient, key: str) -> Session:
    r = await http.post("/console/login", data={"api_key": key, "next": PAGE})
    assert r.status_code == 303, r.text
    match = re.search(rf"{SESSION_COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert match is not None
    http.cookies.clear()  # each request says which session it rides on
    session = Session(match.group(1), "")
    page = await http.get(PAGE, headers=session.headers(csrf=False))
    assert page.status_code == 200, page.text
    return Session(session.cookie, Page.parse(page.text).csrf)


async def show(http: httpx.AsyncClient, who: Session) -> Page:
    r = await http.get(PAGE, headers=who.headers(csrf=False))
    assert r.status_code == 200, r.text
    assert "<script>" not in r.text  # the console's one script file only, no inline code
    return Page.parse(r.text)


async def submit(
    http: httpx.AsyncClient, who: Session, form: Form, csrf: bool = True, **change: str
) -> httpx.Response:
    """As console.js sends it: the form's named fields as JSON, with the session's token."""
    return await http.post(form.api, json={**form.fields, **change}, headers=who.headers(csrf))


@dataclass
class Rig:
    plc: PlcSimulator
    panel: ModbusWriter
    http: httpx.AsyncClient
    repo: ActionRepository
    reader: Session
    operator: Session
    operator_id: str

    async def setpoint(self) -> float:
        back = await self.panel.read(holding(1, "float32"))
        assert isinstance(back, float)
        return back

    async def set_temp(self, value: int) -> None:
        await self.panel.write(holding(0, "uint16"), value)

    def count(self, outcome: str) -> int:
        return len(self.repo.events(ActionEventFilter(outcome=outcome), limit=1000))

    async def outcome(self, outcome: str, count: int = 1) -> None:
        await wait_until(lambda: self.count(outcome) >= count, 10, what=f"{count} {outcome}")

    def writes_seen(self) -> int:
        return sum(1 for r in self.plc.requests if r.function_code == 16)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, mode: str = "confirm", address: int = 1) -> AsyncIterator[Rig]:
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN, signals=plc_signals())
    model = logistic_classifier(tmp_path / "health.onnx", [1.0], -50.0)  # fault above 50
    port = free_port()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            store=tmp_path / "b.db",
            api=port,
            plc=plc.port,
            model=model,
            mode=mode,
            address=address,
            more="    confirm_timeout_s: 60\n" if mode == "confirm" else "",
        )
    )
    settings = ModbusSourceSettings.model_validate(
        {"host": LOOPBACK, "port": plc.port, "unit": 1, "timeout_s": 1.0}
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(plc)
        panel = ModbusWriter("panel", settings)
        stack.push_async_callback(panel.aclose)
        gateway = await stack.enter_async_context(running_gateway(path))
        keys = ApiKeyRepository(gateway.store)
        _, read = keys.create("viewer", Scope.READ)
        operator, operate = keys.create("operator", Scope.OPERATE)
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=10)
        )
        await first_readings(gateway, ("temp", "running", "setpoint"))
        yield Rig(
            plc,
            panel,
            http,
            ActionRepository(gateway.store),
            await login(http, read),
            await login(http, operate),
            operator.key_id,
        )


async def test_an_operator_arms_and_confirms_from_the_page_and_the_plc_holds_the_value(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        page = await show(r.http, r.operator)
        row = page.row("slow-down")
        assert "Lower the setpoint" in row and "pump" in row and "modbus plc" in row
        assert "confirm shadow" in row and "not armed" in row and "none" in row
        assert set(page.buttons) - {"Log out"} == {"Arm"}
        arm = page.form("Arm")
        assert arm.api == f"{ACTION}/arm"

        # A reader sees the same table and no form; what a reader posts anyway is refused.
        seen = await show(r.http, r.reader)
        assert seen.row("slow-down") == row
        assert seen.buttons == ["Log out"] and not seen.forms
        denied = await submit(r.http, r.reader, arm)
        assert denied.status_code == 403 and "needs scope 'operate'" in denied.json()["detail"]
        # The operator's form without the session's CSRF token is refused too.
        forged = await submit(r.http, r.operator, arm, csrf=False)
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"], forged.text
        assert "not armed" in (await show(r.http, r.operator)).row("slow-down")

        armed = await submit(r.http, r.operator, arm, comment="checked the pump")
        assert armed.status_code == 200, armed.text
        page = await show(r.http, r.operator)
        row = page.row("slow-down")
        assert "confirm confirm" in row and f"by key:{r.operator_id}" in row, row
        assert "(model version 1)" in row and "nothing" in row
        assert set(page.buttons) - {"Log out"} == {"Arm again"}

        # A request waits: the page shows its value, deadline and id, with Confirm and Refuse.
        await r.set_temp(60)
        await r.outcome("await_confirm")
        page = await show(r.http, r.operator)
        row = page.row("slow-down")
        confirm, refuse = page.form("Confirm"), page.form("Refuse")
        pending = confirm.fields["pending_id"]
        assert refuse.fields["pending_id"] == pending and refuse.api == f"{ACTION}/refuse"
        assert f"write {SETPOINT - 50:g}, until" in row and f"request {pending}" in row, row
        assert "left" in row and "await_confirm" in row
        assert set(page.buttons) - {"Log out"} == {"Confirm", "Refuse", "Arm again"}
        reader_sees = await show(r.http, r.reader)
        assert reader_sees.buttons == ["Log out"] and f"request {pending}" in reader_sees.row(
            "slow-down"
        )
        denied = await submit(r.http, r.reader, confirm)
        assert denied.status_code == 403, denied.text

        # A request id that is not the one waiting (replaced, or ended) writes nothing.
        stale_id = str(uuid.uuid4())
        stale = await submit(r.http, r.operator, confirm, pending_id=stale_id)
        assert stale.status_code == 409, stale.text
        detail = stale.json()["detail"]
        assert stale_id in detail and pending in detail and "look again" in detail
        forged = await submit(r.http, r.operator, confirm, csrf=False)
        assert forged.status_code == 403, forged.text
        assert await r.setpoint() == SETPOINT and r.writes_seen() == 0

        done = await submit(r.http, r.operator, confirm, comment="seen on site")
        assert done.status_code == 200, done.text
        assert done.json()["outcome"] == "written"
        assert await r.setpoint() == SETPOINT - 50 and r.writes_seen() == 1

        page = await show(r.http, r.operator)
        row = page.row("slow-down")
        written = f"{SETPOINT - 50:g}, read back {SETPOINT - 50:g}"
        assert written in row and f"by key:{r.operator_id}" in row, row
        assert "written" in row and row.endswith("nothing"), row
        assert "Confirm" not in page.buttons and "Refuse" not in page.buttons
        # The form the operator still had open is answered, not written twice.
        again = await submit(r.http, r.operator, confirm)
        assert again.status_code == 409 and "nothing waiting" in again.json()["detail"]
        assert r.writes_seen() == 1
        [confirmed] = r.repo.events(ActionEventFilter(outcome="confirmed"))
        assert confirmed.actor == f"key:{r.operator_id}" and "seen on site" in confirmed.reason


async def test_an_operator_refuses_from_the_page_and_nothing_is_written(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        arm = (await show(r.http, r.operator)).form("Arm")
        assert (await submit(r.http, r.operator, arm)).status_code == 200
        await r.set_temp(60)
        await r.outcome("await_confirm")
        refuse = (await show(r.http, r.operator)).form("Refuse")
        done = await submit(r.http, r.operator, refuse, comment="maintenance today")
        assert done.status_code == 200, done.text
        await r.outcome("declined")
        row = (await show(r.http, r.operator)).row("slow-down")
        assert "declined, " in row and f"by key:{r.operator_id}" in row, row
        assert "maintenance today" in row
        assert await r.setpoint() == SETPOINT and r.writes_seen() == 0


async def test_a_faulted_action_shows_its_reason_and_offers_reset_only(tmp_path: Path) -> None:
    async with rig(tmp_path, mode="auto", address=500) as r:  # outside the PLC's register map
        arm = (await show(r.http, r.operator)).form("Arm")
        assert (await submit(r.http, r.operator, arm)).status_code == 200
        await r.set_temp(60)
        await r.outcome("fault")
        page = await show(r.http, r.operator)
        row = page.row("slow-down")
        assert "fault" in row and "IllegalDataAddress" in row, row
        assert set(page.buttons) - {"Log out"} == {"Reset"}
        # Arming a faulted action (a page left open) is refused with what to do.
        again = await submit(r.http, r.operator, arm)
        assert again.status_code == 409 and "reset it" in again.json()["detail"], again.text
        reset = await submit(r.http, r.operator, page.form("Reset"), comment="map fixed")
        assert reset.status_code == 200, reset.text
        page = await show(r.http, r.operator)
        assert "not armed" in page.row("slow-down")
        assert set(page.buttons) - {"Log out"} == {"Arm"}


async def test_a_console_apart_from_the_gateway_says_actions_need_it(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'apart.db'}")
    app = create_gateway_app(ApiServices.from_store(EmptyView(), store))
    try:
        _, key = ApiKeyRepository(store).create("operator", Scope.OPERATE)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            operator = await login(http, key)
            r = await http.get(PAGE, headers=operator.headers(csrf=False))
            assert r.status_code == 200, r.text
            text = " ".join(unescape(re.sub(r"<[^>]+>", " ", r.text)).split())
            assert "Actions need the running gateway" in text
            assert Page.parse(r.text).buttons == ["Log out"]
            # Its API says the same of a form posted anyway.
            posted = await http.post(f"{ACTION}/arm", json={}, headers=operator.headers())
            assert posted.status_code == 409 and "apart" in posted.json()["detail"]
    finally:
        close_console(app)
        close_app(app)
        store.dispose()
