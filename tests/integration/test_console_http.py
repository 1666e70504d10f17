"""The web console over HTTP, on a real SQLite store: login into a session cookie (never the key
itself), redirects that stay inside /console, a login rate limit, security headers and pages
without inline script or style, CSRF and Origin checks on the REST API when it rides on the
cookie, scopes seen through the pages, logout and revocation, and the live stream (Server-Sent
Events over a real uvicorn server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI
from support import LOOPBACK, free_port, wait_until

from bridge.api import ApiServices, close_app
from bridge.api.keycache import KeyCache
from bridge.api.sessions import SESSION_COOKIE
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.config.spec import ApiSettings, ConsoleSettings
from bridge.console.app import close_console, create_gateway_app
from bridge.console.live import LiveHub
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.runtime.apiserver import ApiServer
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.alerts import Alert, AlertFilter, AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import RegistryRepository, VersionRecord, VersionState
from bridge.types import ComponentHealth, Contribution, Explanation, Prediction, Quality

# Shown on pages through the view and the store: it must come out as text, never as markup.
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)" style="color:red">'
ASSETS = ("pump-0", "pump-1", "fan-2")
NOW = time.time()
PAGES = (
    "/console/",
    "/console/assets",
    "/console/assets?q=pump",
    "/console/assets/pump-0",
    "/console/models",
    "/console/alerts",
    "/console/alerts?show=all",
    "/console/outbox",
)


def _prediction(asset: str, seq: int, value: str = "healthy", score: float = 0.5) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw-console/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1",
        sha256="12" * 32,
        value=value,
        score=score,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.2,
    )


def _tag(asset: str, name: str, value: float | str) -> TagState:
    return TagState(
        tag=f"{asset}.{name}",
        asset=asset,
        name=name,
        source="plc",
        value=value,
        unit="mm/s",
        quality=Quality.GOOD,
        source_time=time.time(),
        server_time=None,
        received_time=time.time(),
        reason="",
    )


@dataclass
class View:
    """The running gateway as the console sees it; tests change it while pages are open."""

    gateway_id: str = "gw-console"
    predictions: dict[str, Prediction] = field(default_factory=dict)  # by asset
    tags: list[TagState] = field(default_factory=list)
    start: float = NOW - 3600

    def tag_states(self) -> Sequence[TagState]:
        return list(self.tags)

    def latest_predictions(self) -> Sequence[Prediction]:
        return list(self.predictions.values())

    def models(self) -> Sequence[ModelInfo]:
        return [ModelInfo("health", "1", "12" * 32, "health.onnx", NOW - 60, ASSETS, ("vib.mean",))]

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("store", "ok"), ComponentHealth("source:plc", "ok", HOSTILE)]

    def started_at(self) -> float:
        return self.start


def _version(version: str, state: VersionState) -> VersionRecord:
    return VersionRecord(
        name="health",
        version=version,
        sha256="12" * 32,
        path="health.onnx",
        size_bytes=1,
        signature=None,
        spec={},
        reference=None,
        metrics={},
        registered_by="test",
        registered_at=NOW,
        state=state,
        canary_share=None,
        canary_assets=None,
        guard=None,
        state_changed_at=NOW,
    )


@dataclass
class Console:
    app: FastAPI
    services: ApiServices
    store: Store
    view: View
    keys: dict[str, str]  # scope label -> key
    key_ids: dict[str, str]  # scope label -> key id

    @property
    def hub(self) -> LiveHub:
        hub = self.app.state.console_hub
        assert isinstance(hub, LiveHub)
        return hub

    def alerts(self) -> list[Alert]:
        return AlertRepository(self.store).page(AlertFilter(), 100)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    store = open_store(f"sqlite:///{tmp_path / 'console.db'}")
    app = None
    try:
        repo = ApiKeyRepository(store)
        keys, key_ids = {}, {}
        for scope in Scope:
            record, key = repo.create(f"{scope.label}-person", scope)
            assert record.scope is scope and key.startswith("brk_")
            keys[scope.label], key_ids[scope.label] = key, record.key_id
        registry = RegistryRepository(store)
        registry.add(_version("1", "active"), "test")
        registry.add(_version("2", "shadow"), "test")
        registry.add(_version("3", "registered"), "test")
        AlertRepository(store).add_many(
            [NewAlert(_prediction("pump-0", 1).id, "pump-0", "health", HOSTILE, "ok", 0.9, NOW)]
        )
        view = View(
            predictions={a: _prediction(a, 1, HOSTILE if a == "pump-0" else "ok") for a in ASSETS},
            tags=[
                _tag(a, n, HOSTILE if n == "mode" else 1.5) for a in ASSETS for n in ("vib", "mode")
            ],
        )
        settings = ApiSettings(console=ConsoleSettings(live_period_s=0.25))
        services = ApiServices.from_store(view, store, settings)
        # A key revoked by another process (the CLI) is refused once its cache entry ages out:
        # 1 s here rather than 5, so a test can wait for it.
        services = dataclasses.replace(
            services, keys=KeyCache(ApiKeyRepository(store), ttl_s=1.0, queries=services.queries)
        )
        app = create_gateway_app(services)
        yield Console(app, services, store, view, keys, key_ids)
    finally:
        if app is not None:
            close_console(app)
            close_app(app)
        store.dispose()


@pytest.fixture
async def http(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=console.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@dataclass(frozen=True)
class Session:
    cookie: str  # the session id the browser holds
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}"}


def _cookie_of(response: httpx.Response) -> str:
    (header,) = response.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    assert name == SESSION_COOKIE, header
    return rest.split(";", 1)[0]


async def login(client: httpx.AsyncClient, key: str, next_path: str = "/console/") -> Session:
    r = await client.post("/console/login", data={"api_key": key, "next": next_path})
    assert r.status_code == 303, r.text
    cookie = _cookie_of(r)
    client.cookies.clear()  # every request below says which session it rides on
    page = await client.get("/console/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert page.status_code == 200, page.text
    csrf = Html.parse(page.text).meta["csrf-token"]
    assert len(csrf) >= 32
    return Session(cookie, csrf)


@dataclass
class ApiForm:
    """A ``<form data-api=...>``: console.js posts its fields as JSON to that REST API path."""

    api: str
    fields: dict[str, object] = field(default_factory=dict)
    numbers: set[str] = field(default_factory=set)
    submitters: dict[str, str] = field(default_factory=dict)  # button value -> its name
    closed: bool = False

    def body(self, submitter: str | None = None, **typed: str) -> dict[str, object]:
        """What console.js sends: every named field (numbers as numbers), typed values, and the
        name and value of the button that submitted it."""
        body = {**self.fields, **typed}
        for name in self.numbers:
            body[name] = float(str(body[name]))
        if submitter is not None:
            body[self.submitters[submitter]] = submitter
        return body


class Html(HTMLParser):
    """What a page holds that the tests look at, and what the CSP would refuse to run."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.buttons: list[str] = []
        self.inputs: dict[str, str] = {}  # hidden inputs of forms, by name
        self.actions: list[ApiForm] = []  # forms the page's script sends to the REST API
        self.refused: list[str] = []  # what the CSP would block
        self.scripts: list[str] = []  # src of <script> elements
        self._in_script = self._in_button = False
        self._button = ""

    @classmethod
    def parse(cls, text: str) -> Html:
        parser = cls()
        parser.feed(text)
        parser.close()
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        for name, value in values.items():
            if name.startswith("on"):
                self.refused.append(f"<{tag} {name}=...> (inline event handler)")
            if name == "style":
                self.refused.append(f"<{tag} style=...> (inline style)")
            if value.strip().lower().startswith("javascript:"):
                self.refused.append(f"<{tag} {name}=javascript:...>")
        if tag == "style":
            self.refused.append("<style> element (inline style)")
        if tag == "script":
            self._in_script = True
            self.scripts.append(values.get("src", ""))
        if tag == "meta" and "name" in values:
            self.meta[values["name"]] = values.get("content", "")
        if tag == "input" and values.get("type") == "hidden":
            self.inputs[values.get("name", "")] = values.get("value", "")
        if tag == "form" and "data-api" in values:
            self.actions.append(ApiForm(values["data-api"]))
        inside = self.actions[-1] if self.actions and not self.actions[-1].closed else None
        if tag == "input" and inside is not None and values.get("name"):
            inside.fields[values["name"]] = values.get("value", "")
            if "data-number" in values:
                inside.numbers.add(values["name"])
        if tag == "button":
            self._in_button, self._button = True, ""
            if inside is not None and values.get("name"):
                inside.submitters[values.get("value", "")] = values["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "form" and self.actions:
            self.actions[-1].closed = True
        if tag == "button" and self._in_button:
            self._in_button = False
            self.buttons.append(" ".join(self._button.split()))

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.refused.append(f"inline <script> content {data.strip()[:40]!r}")
        if self._in_button:
            self._button += data


# --- redirects -----------------------------------------------------------------------------


async def test_pages_without_a_session_redirect_to_the_login_with_their_own_path(
    http: httpx.AsyncClient, console: Console
) -> None:
    for target in (*PAGES, "/console/live?view=overview"):
        for headers in ({}, {"Cookie": f"{SESSION_COOKIE}=not-a-session"}):
            r = await http.get(target, headers=headers)
            assert r.status_code == 303, (target, r.text)
            location = urlsplit(r.headers["location"])
            assert (location.scheme, location.netloc, location.path) == ("", "", "/console/login")
            assert parse_qs(location.query)["next"] == [target]
            assert "set-cookie" not in r.headers
    assert console.hub.streams == 0  # the refused live request opened no stream


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/console/",
        "/\\evil.example",
        "/console\\..\\//evil.example",
        "/consoleevil",
        "/api/v1/keys",
        "javascript:alert(1)",
        "/console/\r\nSet-Cookie: x=1",
        "",
    ],
)
async def test_next_never_leaves_the_console(
    http: httpx.AsyncClient, console: Console, target: str
) -> None:
    form = await http.get("/console/login", params={"next": target})
    assert form.status_code == 200
    assert Html.parse(form.text).inputs["next"] == "/console/"
    r = await http.post("/console/login", data={"api_key": console.keys["read"], "next": target})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/"
    # A page's own path with its query survives the trip.
    r = await http.post(
        "/console/login",
        data={"api_key": console.keys["read"], "next": "/console/alerts?show=all"},
    )
    assert r.headers["location"] == "/console/alerts?show=all"


# --- login ---------------------------------------------------------------------------------


async def test_a_wrong_key_gets_a_401_page_and_no_cookie(
    http: httpx.AsyncClient, console: Console
) -> None:
    for wrong in ("brk_nope", console.keys["admin"] + "x", " ", ""):
        r = await http.post("/console/login", data={"api_key": wrong, "next": "/console/"})
        assert r.status_code == 401, wrong
        assert r.headers["content-type"].startswith("text/html")
        assert "Unknown or revoked API key." in r.text
        assert "set-cookie" not in r.headers
        assert wrong.strip() == "" or wrong not in r.text
    assert len(console.services.sessions) == 0


async def test_a_login_posted_from_another_origin_is_refused(
    http: httpx.AsyncClient, console: Console
) -> None:
    for origin in ("http://evil.example", "null", "https://testserver"):
        r = await http.post(
            "/console/login",
            data={"api_key": console.keys["admin"], "next": "/console/"},
            headers={"Origin": origin},
        )
        assert r.status_code == 403, origin
        assert "set-cookie" not in r.headers
    assert len(console.services.sessions) == 0
    r = await http.post(
        "/console/login",
        data={"api_key": console.keys["admin"]},
        headers={"Origin": "http://testserver"},
    )
    assert r.status_code == 303 and len(console.services.sessions) == 1


async def test_the_right_key_sets_an_httponly_strict_cookie_secure_only_over_https(
    console: Console,
) -> None:
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        transport = httpx.ASGITransport(app=console.app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            r = await client.post(
                "/console/login", data={"api_key": console.keys["read"], "next": "/console/"}
            )
            assert r.status_code == 303
            assert r.headers["location"] == "/console/"
            (header,) = r.headers.get_list("set-cookie")
            parts = [p.strip().lower() for p in header.split(";")]
            assert parts[0].startswith(f"{SESSION_COOKIE}=")
            assert "httponly" in parts, header
            assert "samesite=strict" in parts, header
            assert "path=/" in parts, header
            assert ("secure" in parts) is secure, header
            assert console.keys["read"] not in header
            # The cookie opens the pages over the same scheme.
            page = await client.get("/console/")
            assert page.status_code == 200, base


async def test_the_key_appears_in_no_page_header_or_url(
    http: httpx.AsyncClient, console: Console
) -> None:
    for scope, key in console.keys.items():
        if scope == Scope.INSIGHTS.label:
            continue  # opens no console (tests/integration/test_insights_api.py)
        r = await http.post("/console/login", data={"api_key": key, "next": "/console/models"})
        assert r.status_code == 303
        assert key not in r.text and all(key not in v for v in r.headers.values()), scope
        session = Session(_cookie_of(r), "")
        http.cookies.clear()
        assert key not in session.cookie
        for target in (*PAGES, "/console/login", "/console/login?next=/console/models"):
            page = await http.get(target, headers=session.headers)
            assert page.status_code == 200, (scope, target, page.text)
            assert key not in page.text, (scope, target)
            assert all(key not in v for v in page.headers.values()), (scope, target)
            assert key not in str(page.url)
        # Nor in the page of a failed login that echoes the form.
        r = await http.post("/console/login", data={"api_key": key + "-", "next": "/console/"})
        assert r.status_code == 401 and key not in r.text


async def test_eleven_wrong_keys_in_a_minute_are_refused_even_the_right_one(
    console: Console,
) -> None:
    def client(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=console.app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async with client("10.0.0.7") as guesser, client("10.0.0.8") as other:
        for i in range(10):
            r = await guesser.post("/console/login", data={"api_key": f"brk_guess{i}"})
            assert r.status_code == 401, i
        for key in (console.keys["admin"], "brk_guess-again"):
            r = await guesser.post("/console/login", data={"api_key": key, "next": "/console/"})
            assert r.status_code == 429, r.text
            assert "Too many wrong keys" in r.text
            assert "set-cookie" not in r.headers
        assert len(console.services.sessions) == 0
        # Another address is not held back by this one's guesses.
        r = await other.post("/console/login", data={"api_key": console.keys["admin"]})
        assert r.status_code == 303
        assert len(console.services.sessions) == 1


# --- headers and markup --------------------------------------------------------------------


def _check_headers(r: httpx.Response, page: bool) -> None:
    csp = r.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == "script-src 'self'", (str(r.url), csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "'unsafe-inline'" not in directives.get("style-src", "")
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'"
    assert r.headers.get("x-content-type-options") == "nosniff"
    if page:
        assert r.headers.get("cache-control") == "no-store", str(r.url)


def _check_markup(text: str, where: str) -> Html:
    html = Html.parse(text)
    assert html.refused == [], (where, html.refused)
    assert all(src.startswith("/console/static/") for src in html.scripts), html.scripts
    return html


async def test_every_console_response_has_the_csp_and_pages_have_no_inline_code(
    http: httpx.AsyncClient, console: Console
) -> None:
    session = await login(http, console.keys["admin"])
    responses: list[tuple[httpx.Response, bool]] = []
    for target in PAGES:
        r = await http.get(target, headers=session.headers)
        assert r.status_code == 200, (target, r.text)
        html = _check_markup(r.text, target)
        assert html.meta["csrf-token"] == session.csrf
        # The hostile label, tag value and health detail came out as text.
        assert "<script>alert(1)" not in r.text
        responses.append((r, True))
    for target in ("/console/login", "/console/login?next=/console/alerts"):
        r = await http.get(target)
        _check_markup(r.text, target)
        assert Html.parse(r.text).meta["csrf-token"] == ""  # no session, no token
        responses.append((r, True))
    wrong = await http.post("/console/login", data={"api_key": "brk_wrong"})
    _check_markup(wrong.text, "failed login")
    responses.append((wrong, True))
    responses.append((await http.get("/console/alerts"), True))  # the 303 to the login
    responses.append(
        (await http.get("/console/assets/no-such-asset", headers=session.headers), True)
    )
    assert responses[-1][0].status_code == 404
    for static in ("/console/static/console.js", "/console/static/console.css"):
        r = await http.get(static)
        assert r.status_code == 200, static
        responses.append((r, False))
    for r, page in responses:
        _check_headers(r, page)


# --- CSRF ----------------------------------------------------------------------------------


async def test_a_state_change_on_the_cookie_needs_the_csrf_token_and_the_same_origin(
    http: httpx.AsyncClient, console: Console
) -> None:
    operator = await login(http, console.keys["operate"])
    reader = await login(http, console.keys["read"])
    (alert,) = console.alerts()
    url = f"/api/v1/alerts/{alert.id}/ack"
    body = {"by": "night shift", "comment": "seen"}
    refused = [
        operator.headers,
        {**operator.headers, "X-CSRF-Token": ""},
        {**operator.headers, "X-CSRF-Token": operator.csrf + "x"},
        {**operator.headers, "X-CSRF-Token": reader.csrf},  # another session's token
        {**operator.headers, "X-CSRF-Token": operator.csrf, "Origin": "http://evil.example"},
        {**operator.headers, "X-CSRF-Token": operator.csrf, "Origin": "null"},
        {**operator.headers, "X-CSRF-Token": operator.csrf, "Origin": "https://testserver"},
    ]
    for headers in refused:
        r = await http.post(url, json=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        (still,) = console.alerts()
        assert still.acked_at is None, headers
    # Safe methods need no token.
    r = await http.get("/api/v1/tags", headers=operator.headers)
    assert r.status_code == 200, r.text
    assert {t["tag"] for t in r.json()} >= {"pump-0.vib", "fan-2.mode"}
    r = await http.get("/api/v1/alerts", headers=reader.headers)
    assert r.status_code == 200, r.text
    # The page's token, from this very origin: acknowledged, by this session's key.
    r = await http.post(
        url,
        json=body,
        headers={
            **operator.headers,
            "X-CSRF-Token": operator.csrf,
            "Origin": "http://testserver",
        },
    )
    assert r.status_code == 200, r.text
    (acked,) = console.alerts()
    assert acked.acked_at is not None
    assert acked.acked_by == "night shift"
    assert acked.acked_key == console.key_ids["operate"]


# --- scopes --------------------------------------------------------------------------------


async def _buttons(http: httpx.AsyncClient, session: Session, target: str) -> list[str]:
    r = await http.get(target, headers=session.headers)
    assert r.status_code == 200, r.text
    return Html.parse(r.text).buttons


async def test_scopes_hold_through_the_console(http: httpx.AsyncClient, console: Console) -> None:
    read = await login(http, console.keys["read"])
    operate = await login(http, console.keys["operate"])
    admin = await login(http, console.keys["admin"])

    def state(version: str) -> str:
        record = RegistryRepository(console.store).get("health", version)
        assert record is not None
        return record.state

    # The API decides, whatever a page shows: a read session may not promote.
    for who in (read, operate):
        for action in ("promote", "rollback"):
            r = await http.post(
                f"/api/v1/models/health/{action}",
                headers={**who.headers, "X-CSRF-Token": who.csrf},
            )
            assert r.status_code == 403, r.text
            assert "needs scope 'admin'" in r.json()["detail"]
    (alert,) = console.alerts()
    r = await http.post(
        f"/api/v1/alerts/{alert.id}/ack",
        json={"by": "reader"},
        headers={**read.headers, "X-CSRF-Token": read.csrf},
    )
    assert r.status_code == 403 and "needs scope 'operate'" in r.json()["detail"]
    assert console.alerts()[0].acked_at is None
    assert state("2") == "shadow"

    # What each session is offered.
    admin_actions = {"Promote 2", "Roll back", "Set canary"}
    for who, alerts_page, models_page in (
        (read, set(), set()),
        (operate, {"Acknowledge"}, set()),
        (admin, {"Acknowledge"}, admin_actions),
    ):
        shown = set(await _buttons(http, who, "/console/alerts")) - {"Show", "Log out"}
        assert shown == alerts_page, (who, shown)
        shown = set(await _buttons(http, who, "/console/models")) - {"Log out"}
        assert shown == models_page, (who, shown)
        detail = set(await _buttons(http, who, "/console/assets/pump-0")) - {"Log out"}
        assert ("Confirm" in detail) is (who is not read), detail

    # An admin session acts through the API with its token (roll the shadow version back).
    r = await http.post(
        "/api/v1/models/health/rollback",
        headers={**admin.headers, "X-CSRF-Token": admin.csrf},
    )
    assert r.status_code == 200, r.text
    assert state("2") == "retired"
    shown = set(await _buttons(http, admin, "/console/models"))
    assert "Promote 2" not in shown and "Roll back" in shown


@pytest.mark.parametrize("action", ["acknowledge alert", "confirm prediction"])
async def test_the_operators_forms_send_what_the_api_accepts(
    http: httpx.AsyncClient, console: Console, action: str
) -> None:
    """Each action form posted exactly as console.js posts it (its named fields as JSON, the
    submitting button's name and value, the session's CSRF token) is accepted by the API."""
    operator = await login(http, console.keys["operate"])
    prediction = console.view.predictions["pump-0"]
    PredictionRepository(console.store).add_many([prediction])
    (alert,) = console.alerts()
    page = "/console/alerts" if action == "acknowledge alert" else "/console/assets/pump-0"
    r = await http.get(page, headers=operator.headers)
    forms = {f.api: f for f in Html.parse(r.text).actions}
    if action == "acknowledge alert":
        form = forms[f"/api/v1/alerts/{alert.id}/ack"]
        body = form.body(comment="seen on the floor")
    else:
        form = forms[f"/api/v1/predictions/{prediction.id}/feedback"]
        body = form.body("confirm", comment="right call")
    r = await http.post(
        form.api, json=body, headers={**operator.headers, "X-CSRF-Token": operator.csrf}
    )
    assert r.status_code in (200, 201), r.text
    if action == "acknowledge alert":
        (acked,) = console.alerts()
        assert acked.acked_key == console.key_ids["operate"]
        assert (acked.acked_by, acked.ack_comment) == ("operate-person", "seen on the floor")
    else:
        label = r.json()
        assert (label["action"], label["by"], label["comment"]) == (
            "confirm",
            "operate-person",
            "right call",
        )
        assert label["key_id"] == console.key_ids["operate"]


# --- logout and revocation -----------------------------------------------------------------


async def test_logout_needs_the_csrf_field_and_ends_the_session(
    http: httpx.AsyncClient, console: Console
) -> None:
    session = await login(http, console.keys["operate"])
    for form in ({}, {"csrf": ""}, {"csrf": session.csrf[:-1]}):
        r = await http.post("/console/logout", data=form, headers=session.headers)
        assert r.status_code == 403, form
        assert (await http.get("/console/", headers=session.headers)).status_code == 200
    r = await http.post(
        "/console/logout",
        data={"csrf": session.csrf},
        headers={**session.headers, "Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert (await http.get("/console/", headers=session.headers)).status_code == 200

    r = await http.post("/console/logout", data={"csrf": session.csrf}, headers=session.headers)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login"
    (cleared,) = r.headers.get_list("set-cookie")
    assert cleared.startswith(f'{SESSION_COOKIE}="";') or cleared.startswith(f"{SESSION_COOKIE}=;")
    assert "max-age=0" in cleared.lower()
    # The old cookie, replayed, opens nothing any more.
    r = await http.get("/console/alerts", headers=session.headers)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?")
    r = await http.get("/api/v1/tags", headers=session.headers)
    assert r.status_code == 401
    (alert,) = console.alerts()
    r = await http.post(
        f"/api/v1/alerts/{alert.id}/ack",
        json={"by": "x"},
        headers={**session.headers, "X-CSRF-Token": session.csrf},
    )
    assert r.status_code == 401
    assert console.alerts()[0].acked_at is None


async def test_revoking_a_key_ends_its_sessions_at_once(
    http: httpx.AsyncClient, console: Console
) -> None:
    operate = await login(http, console.keys["operate"])
    read = await login(http, console.keys["read"])
    # Warm the key cache: revocation must not wait for its entries to age out.
    assert (await http.get("/api/v1/tags", headers=operate.headers)).status_code == 200
    r = await http.delete(
        f"/api/v1/apikeys/{console.key_ids['operate']}",
        headers={"Authorization": f"Bearer {console.keys['admin']}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"] is not None
    assert len(console.services.sessions) == 1  # ended by the revocation itself, not later
    r = await http.get("/console/", headers=operate.headers)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?")
    assert (await http.get("/api/v1/tags", headers=operate.headers)).status_code == 401
    (alert,) = console.alerts()
    r = await http.post(
        f"/api/v1/alerts/{alert.id}/ack",
        json={"by": "x"},
        headers={**operate.headers, "X-CSRF-Token": operate.csrf},
    )
    assert r.status_code == 401
    # Other keys' sessions go on; the revoked key cannot log in again.
    assert (await http.get("/console/", headers=read.headers)).status_code == 200
    assert (await http.get("/api/v1/tags", headers=read.headers)).status_code == 200
    r = await http.post("/console/login", data={"api_key": console.keys["operate"]})
    assert r.status_code == 401 and "set-cookie" not in r.headers


# --- live stream over a real server --------------------------------------------------------


@dataclass(frozen=True)
class Event:
    name: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Reads a Server-Sent Events response in a task of its own, so waiting for the next event
    can time out without breaking the stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read(response))

    async def _read(self, response: httpx.Response) -> None:
        name, data = "message", list[str]()
        try:
            async for line in response.aiter_lines():
                if line == "":
                    if data:
                        self.events.put_nowait(Event(name, "\n".join(data)))
                    name, data = "message", list[str]()
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
        except httpx.HTTPError:
            pass  # the connection went away: the stream ended
        finally:
            self.ended.set()
            self.events.put_nowait(None)

    async def next(self, timeout: float = 5.0) -> Event:  # noqa: ASYNC109 - a bounded wait
        event = await asyncio.wait_for(self.events.get(), timeout)
        assert event is not None, "the stream ended"
        return event

    async def quiet(self, seconds: float) -> list[Event]:
        """Every event that arrives within ``seconds``."""
        got: list[Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                break
            if event is None:
                break
            got.append(event)
        return got

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class Served:
    console: Console
    server: ApiServer
    http: httpx.AsyncClient
    session: Session

    async def login(self, scope: str) -> Session:
        return await login(self.http, self.console.keys[scope])

    @contextlib.asynccontextmanager
    async def live(self, query: str, session: Session | None = None) -> AsyncIterator[SseReader]:
        session = session or self.session
        request = self.http.build_request("GET", f"/console/live?{query}", headers=session.headers)
        response = await asyncio.wait_for(self.http.send(request, stream=True), 10)
        reader = None
        try:
            assert response.status_code == 200, response.status_code
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            reader = SseReader(response)
            yield reader
        finally:
            if reader is not None:
                await reader.close()
            await asyncio.wait_for(response.aclose(), 10)


@pytest.fixture
async def served(console: Console) -> AsyncIterator[Served]:
    server = ApiServer(console.app, LOOPBACK, free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.post("/console/login", data={"api_key": console.keys["read"]})
            assert r.status_code == 303, r.text
            cookie = _cookie_of(r)
            client.cookies.clear()
            page = await client.get("/console/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
            session = Session(cookie, Html.parse(page.text).meta["csrf-token"])
            yield Served(console, server, client, session)
    finally:
        await server.stop()


def _keys(event: Event) -> list[str]:
    rows = event.json()
    assert isinstance(rows, list)
    return [r["k"] for r in rows]


async def test_live_assets_sends_the_filtered_rows_then_only_changes(served: Served) -> None:
    view = served.console.view
    async with served.live("view=assets&q=pump-0") as stream:
        assert (await stream.next()).name == "hello"
        first = await stream.next()
        assert first.name == "rows"
        assert _keys(first) == ["pump-0/health"]
        (row,) = first.json()
        assert row["label"] == HOSTILE and row["quality"] == "good"
        assert served.console.hub.streams == 1
        # Nothing new: nothing sent again, over several periods.
        assert await stream.quiet(1.0) == []
        # A row the page does not show changes: still nothing.
        view.predictions["pump-1"] = _prediction("pump-1", 2, "fault", 0.9)
        assert await stream.quiet(1.0) == []
        # The shown row gets a new prediction: sent within a few periods, once.
        started = time.monotonic()
        view.predictions["pump-0"] = _prediction("pump-0", 2, "bearing_fault", 0.875)
        changed = await stream.next(timeout=5)
        assert time.monotonic() - started < 3
        assert changed.name == "rows"
        (row,) = changed.json()
        assert row["k"] == "pump-0/health"
        assert (row["label"], row["score"]) == ("bearing_fault", 0.875)
        # The trend goes on: the next page draws both scores (the stream sends only the new).
        page = await served.http.get("/console/assets?q=pump-0", headers=served.session.headers)
        assert 'data-values="0.5 0.875"' in page.text
        assert await stream.quiet(1.0) == []


async def test_live_asset_sends_its_own_rows_and_tags(served: Served) -> None:
    view = served.console.view
    async with served.live("view=asset&asset=pump-1") as stream:
        assert (await stream.next()).name == "hello"
        got = {e.name: e for e in [await stream.next(), *await stream.quiet(0.75)]}
        assert set(got) == {"rows", "tags"}, got
        assert _keys(got["rows"]) == ["pump-1/health"]
        tags = got["tags"].json()
        assert isinstance(tags, list)
        assert sorted(t["k"] for t in tags) == ["pump-1.mode", "pump-1.vib"]
        assert {t["k"]: t["value"] for t in tags}["pump-1.vib"] == "1.5"
        # Another asset's tag changes: nothing; this asset's tag changes: that tag only.
        view.tags = [
            replace(t, value=99.0) if t.tag in ("pump-0.vib", "fan-2.vib") else t for t in view.tags
        ]
        assert await stream.quiet(1.0) == []
        view.tags = [
            replace(t, value=7.25, source_time=NOW + 5) if t.tag == "pump-1.vib" else t
            for t in view.tags
        ]
        changed = await stream.next(timeout=5)
        assert changed.name == "tags"
        assert changed.json() == [
            {"k": "pump-1.vib", "value": "7.25", "quality": "good", "ts": NOW + 5}
        ]


async def test_live_overview_sends_the_counters(served: Served) -> None:
    async with served.live("view=overview") as stream:
        assert (await stream.next()).name == "hello"
        overview = await stream.next()
        assert overview.name == "overview"
        assert overview.json() == {
            "quality": {"good": 6, "uncertain": 0, "bad": 0},
            "sources": {"plc": "ok"},
            "rows": 3,
        }
        assert await stream.quiet(0.75) == []


async def test_closing_the_console_ends_its_streams_at_once(served: Served) -> None:
    hub = served.console.hub
    async with served.live("view=assets") as one, served.live("view=overview") as two:
        assert (await one.next()).name == "hello"
        assert (await two.next()).name == "hello"
        await wait_until(lambda: hub.streams == 2, timeout=5, what="two open streams")
        started = time.monotonic()
        close_console(served.console.app)
        async with asyncio.timeout(2):
            await one.ended.wait()
            await two.ended.wait()
        assert time.monotonic() - started < 2
        await wait_until(lambda: hub.streams == 0, timeout=2, what="streams closed")
    started = time.monotonic()
    await served.server.stop()  # nothing left to wait for
    assert time.monotonic() - started < 2


async def test_a_client_that_goes_away_releases_its_stream(served: Served) -> None:
    hub = served.console.hub
    for _ in range(2):
        async with served.live("view=asset&asset=pump-0") as stream:
            assert (await stream.next()).name == "hello"
            await wait_until(lambda: hub.streams == 1, timeout=5, what="the open stream")
        await wait_until(lambda: hub.streams == 0, timeout=5, what="the stream released")
    # The server is still serving pages and streams afterwards.
    r = await served.http.get("/console/assets", headers=served.session.headers)
    assert r.status_code == 200


async def test_a_stream_ends_when_its_session_does(served: Served) -> None:
    """Logged out, or its key revoked: the open page's stream ends (its reconnect then meets
    the login form); another key's stream goes on."""
    hub = served.console.hub
    operator = await served.login("operate")
    async with (
        served.live("view=overview") as mine,
        served.live("view=overview", operator) as theirs,
    ):
        for stream in (mine, theirs):
            assert (await stream.next()).name == "hello"
        await wait_until(lambda: hub.streams == 2, timeout=5, what="two open streams")
        r = await served.http.post(
            "/console/logout", data={"csrf": served.session.csrf}, headers=served.session.headers
        )
        assert r.status_code == 303
        async with asyncio.timeout(3):
            await mine.ended.wait()
        assert not theirs.ended.is_set()
        r = await served.http.delete(
            f"/api/v1/apikeys/{served.console.key_ids['operate']}",
            headers={"Authorization": f"Bearer {served.console.keys['admin']}"},
        )
        assert r.status_code == 200, r.text
        async with asyncio.timeout(3):
            await theirs.ended.wait()
        await wait_until(lambda: hub.streams == 0, timeout=3, what="streams released")
    # Reconnecting with either cookie meets the login form, not a stream.
    for session in (served.session, operator):
        r = await served.http.get("/console/live?view=overview", headers=session.headers)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/login?")


async def test_a_stream_ends_when_its_key_is_revoked_by_another_process(served: Served) -> None:
    """The CLI revokes in the store only; the gateway learns it when its key cache entry ages
    out (1 s in these tests): requests are then refused, and open streams should end too."""
    operator = await served.login("operate")
    async with served.live("view=overview", operator) as stream:
        assert (await stream.next()).name == "hello"
        assert ApiKeyRepository(served.console.store).revoke(served.console.key_ids["operate"])

        async def refused() -> bool:
            r = await served.http.get("/api/v1/tags", headers=operator.headers)
            return r.status_code == 401

        await wait_until(refused, timeout=5, what="the API to refuse the revoked key")
        async with asyncio.timeout(3):
            await stream.ended.wait()


# --- asset insight and dead letters --------------------------------------------------------


@dataclass
class Insight:
    """A running model's insight as the API sees it: a kept explanation, drift per input."""

    explanation: Explanation
    drift: dict[str, dict[str, float]]  # asset -> feature -> PSI

    def explain_kept(self, prediction_id: str) -> Explanation | None:
        return self.explanation

    def feature_drift(self, asset: str) -> dict[str, float]:
        return self.drift.get(asset, {})


async def test_the_asset_page_shows_the_explanation_and_drift_per_input(
    console: Console,
) -> None:
    explanation = Explanation(
        reason="vibration +3.1 mm/s above normal",
        top=(
            Contribution("vib.mean", 7.9, 4.8, 0.41),
            Contribution("temp.slope", 0.0, 0.1, -0.07),
        ),
    )
    insight = Insight(explanation, {"pump-1": {"vib.mean": 0.62, "temp.slope": 0.04}})
    app = create_gateway_app(replace(console.services, explainers={"health": insight}))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            reader = await login(client, console.keys["read"])
            page = (await client.get("/console/assets/pump-1", headers=reader.headers)).text
            other = (await client.get("/console/assets/fan-2", headers=reader.headers)).text
    finally:
        close_console(app)
    assert "vibration +3.1 mm/s above normal" in page
    explained, drifted = _bar_charts(page)
    # Largest effect first, signed: the bars say which way each input pushed the score.
    assert explained == [("vib.mean", "bar-pos", "+0.41"), ("temp.slope", "bar-neg", "-0.07")]
    assert drifted == [("vib.mean", "bar-pos", "+0.62"), ("temp.slope", "bar-pos", "+0.04")]
    # No drift score for fan-2 yet: the page says so rather than drawing empty bars.
    assert len(_bar_charts(other)) == 1 and "No drift score yet" in other


def _bar_charts(page: str) -> list[list[tuple[str, str, str]]]:
    """(label, bar class, value) of each bar of each bar chart of a page, in order."""
    charts: list[list[tuple[str, str, str]]] = []
    for svg in page.split('<svg xmlns="http://www.w3.org/2000/svg" class="bar-chart"')[1:]:
        root = ElementTree.fromstring('<svg class="bar-chart"' + svg.split("</svg>")[0] + "</svg>")
        rows = []
        for row in root.iter("g"):
            texts = {t.get("class"): (t.text or "") for t in row.iter("text")}
            (rect,) = list(row.iter("rect"))
            rows.append((texts["bar-label"], str(rect.get("class")), texts["bar-value"]))
        charts.append(rows)
    return charts


async def test_an_operator_replays_a_dead_letter_from_the_outbox_page(
    http: httpx.AsyncClient, console: Console
) -> None:
    mes = OutboxFeed("mes", lambda p: f'{{"id": "{p.id}"}}', Budget(100))
    PredictionRepository(console.store).add_many([_prediction("pump-1", 7)], [mes])
    outbox = OutboxRepository(console.store)
    claim = outbox.claim("mes", 10, None, 10)
    try:
        claim.finish([], {e.id: "HTTP 422: unknown asset" for e in claim.events}, 1, 0.0)
    finally:
        claim.close()
    (dead,) = outbox.dead_letters("mes")

    reader = await login(http, console.keys["read"])
    seen = (await http.get("/console/outbox", headers=reader.headers)).text
    assert "HTTP 422: unknown asset" in seen and f"Replay {dead.id}" not in seen
    operator = await login(http, console.keys["operate"])
    page = (await http.get("/console/outbox", headers=operator.headers)).text
    assert f"Replay {dead.id}" in page
    forms = {f.api: f for f in Html.parse(page).actions}
    form = forms[f"/api/v1/outbox/dead-letters/{dead.id}/replay"]
    r = await http.post(
        form.api, json=form.body(), headers={**operator.headers, "X-CSRF-Token": operator.csrf}
    )
    assert r.status_code == 201, r.text
    assert outbox.dead_letters("mes") == []
    assert [e.asset for e in outbox.pending("mes")] == ["pump-1"]
