"""The secured REST API through httpx's ASGI transport on a real store (SQLite and PostgreSQL):
keys and scopes on every operation, alerts with acknowledgement and time to acknowledge,
paginated history, key management (HTTP and CLI), and clear 4xx answers to bad requests."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from emptyview import EmptyView
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from stores import BACKENDS, temp_store

from bridge.api import ApiServices, create_app
from bridge.api.auth import SCOPE_EXTENSION
from bridge.api.keycache import KeyCache
from bridge.auth import Scope
from bridge.cli import main
from bridge.connectors import ngsild
from bridge.runtime.alertsink import AlertSink
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault", "cavitation")


def pred(asset: str, seq: int, ts: float, value: str | float | None) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=value,
        score=0.75,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.1,
    )


# Open to anyone: health (details with a key) and the documents brokers fetch anonymously.
PUBLIC_OPERATIONS = ("/api/v1/health", "/contexts/{name}")


def _operations() -> list[tuple[str, str, str]]:
    """(method, path, required scope) of every secured operation, read from the OpenAPI."""
    engine = create_engine("sqlite://")  # never queried: the OpenAPI needs no database
    spec = create_app(
        ApiServices.from_store(EmptyView("gw-auth"), Store(engine, sessionmaker(engine)))
    ).openapi()
    engine.dispose()
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path not in PUBLIC_OPERATIONS:
                assert SCOPE_EXTENSION in op, f"{method} {path} declares no scope"
                ops.append((method.upper(), path, op[SCOPE_EXTENSION]))
    return sorted(ops)


OPERATIONS = _operations()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "api.db", prefix="bridge_auth") as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield s
    finally:
        s.dispose()


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    keys: dict[str, str]  # scope label (or "revoked") -> key

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


async def _api(store: Store) -> AsyncIterator[Api]:
    repo = ApiKeyRepository(store)
    keys = {s.label: repo.create(f"{s.label}-key", s)[1] for s in Scope}
    revoked, keys["revoked"] = repo.create("old", Scope.ADMIN)
    repo.revoke(revoked.key_id)
    transport = httpx.ASGITransport(
        app=create_app(ApiServices.from_store(EmptyView("gw-auth"), store))
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
        yield Api(http, store, keys)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    async for a in _api(store):
        yield a


@pytest.fixture
async def sqlite_api(sqlite_store: Store) -> AsyncIterator[Api]:
    async for a in _api(sqlite_store):
        yield a


def _request(method: str, path: str) -> tuple[str, dict[str, Any] | None]:
    url = re.sub(r"\{alert_id\}", "1", path)
    url = re.sub(r"\{key_id\}", "0123456789ab", url)
    url = re.sub(r"\{dead_letter_id\}", "1", url)
    body = None
    if method == "POST":
        body = {"by": "op", "name": "k"}
    return url, body


@pytest.mark.parametrize(("method", "path", "scope"), OPERATIONS)
async def test_every_operation_needs_a_key_of_enough_scope(
    sqlite_api: Api, method: str, path: str, scope: str
) -> None:
    url, body = _request(method, path)
    needed = Scope.parse(scope)

    async def call(headers: dict[str, str]) -> httpx.Response:
        return await sqlite_api.http.request(method, url, json=body, headers=headers)

    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "brk_not-a-key"},
        {"Authorization": f"Bearer {sqlite_api.keys['admin']}x"},
        sqlite_api.auth("revoked"),
    ):
        r = await call(headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert isinstance(r.json()["detail"], str)
    # Ordered scopes, and `insights` apart (it allows its one operation only): ask `allows`.
    for lower in (s for s in Scope if not s.allows(needed)):
        r = await call(sqlite_api.auth(lower.label))
        assert r.status_code == 403, (lower, r.text)
        assert f"needs scope '{needed.label}'" in r.json()["detail"]
    for enough in (s for s in Scope if s.allows(needed)):
        for headers in (
            sqlite_api.auth(enough.label),
            {"X-API-Key": sqlite_api.keys[enough.label]},
        ):
            r = await call(headers)
            assert r.status_code not in (401, 403, 500), (enough, r.text)


async def test_published_documents_need_no_key(sqlite_api: Api) -> None:
    ngsild.register()  # as the entry point does in an installed gateway
    r = await sqlite_api.http.get("/contexts/bridge-ngsild.jsonld")
    assert r.status_code == 200 and r.headers["content-type"] == "application/ld+json"
    spec = (await sqlite_api.http.get("/openapi.json")).json()
    op = spec["paths"]["/contexts/{name}"]["get"]
    assert SCOPE_EXTENSION not in op and "security" not in op
    # Only that prefix is open: a path beside it still needs a key.
    assert (await sqlite_api.http.get("/contextsx")).status_code == 401


async def test_health_needs_no_key_and_the_openapi_declares_the_schemes(sqlite_api: Api) -> None:
    assert (await sqlite_api.http.get("/api/v1/health")).status_code == 200
    spec = (await sqlite_api.http.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API key>`",
    }
    assert schemes["apiKeyHeader"]["in"] == "header"
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    # Anyone may ask (the empty requirement); a key gets the details.
    assert {} in spec["paths"]["/api/v1/health"]["get"]["security"]
    for method, path, _ in OPERATIONS:
        op = spec["paths"][path][method.lower()]
        assert {"bearerKey": []} in op["security"] and {"apiKeyHeader": []} in op["security"]
        # Exactly one documented success: 201 where a POST creates something, 200 for reads
        # and for actions on an existing resource (ack, activate, rollback, ...).
        success = [code for code in op["responses"] if code.startswith("2")]
        assert len(success) == 1 and success[0] in ("200", "201"), (method, path, success)
        assert method == "POST" or success == ["200"], (method, path, success)
        for code in ("401", "403"):
            assert code in op["responses"], (method, path, code)
        for code in ("401", "403", "404", "413", "422", "429"):
            content = op["responses"][code]["content"]
            assert list(content) == ["application/problem+json"], (method, path, code)
            ref = content["application/problem+json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorOut"), (method, path, code)


async def test_alerts_are_raised_listed_filtered_and_paginated(api: Api) -> None:
    slots = [PredictionSlot(f"p{i}", "health", "1.0.0", "ab" * 32, LABELS) for i in range(1, 4)]
    sink = AlertSink(AlertRepository(api.store), slots)
    await sink.start()
    t0 = time.time() - 300
    # p1: healthy -> bearing_fault -> healthy -> cavitation; p2: bearing_fault; p3: stays healthy
    script = {
        "p1": ["healthy", "bearing_fault", "bearing_fault", "healthy", "cavitation"],
        "p2": ["healthy", "healthy", "bearing_fault", "bearing_fault", "bearing_fault"],
        "p3": ["healthy"] * 5,
    }
    for step in range(5):
        batch = [pred(a, step, t0 + 10 * step, v[step]) for a, v in script.items()]
        await sink.write(batch)
        await sink.write(batch)  # written twice (a replayed batch): still one alert each
    await sink.close()
    assert sink.health().counters["raised"] == 3

    r = await api.http.get("/api/v1/alerts", headers=api.auth("read"))
    assert r.status_code == 200
    page = r.json()
    got = [(a["asset"], a["previous"], a["label"]) for a in page["items"]]
    assert sorted(got) == [
        ("p1", "healthy", "bearing_fault"),
        ("p1", "healthy", "cavitation"),
        ("p2", "healthy", "bearing_fault"),
    ]
    assert page["next_cursor"] is None
    assert [a["id"] for a in page["items"]] == sorted(
        (a["id"] for a in page["items"]), reverse=True
    )
    first = next(a for a in page["items"] if a["label"] == "cavitation")
    assert datetime.fromisoformat(first["raised_at"]).timestamp() == pytest.approx(t0 + 40)
    assert first["prediction_id"] == pred("p1", 4, 0, None).id
    assert first["acknowledged"] is False and first["time_to_ack_s"] is None

    async def ids(**params: Any) -> list[tuple[str, str]]:
        r = await api.http.get("/api/v1/alerts", params=params, headers=api.auth("read"))
        assert r.status_code == 200, r.text
        return [(a["asset"], a["label"]) for a in r.json()["items"]]

    assert sorted(await ids(asset="p1")) == [("p1", "bearing_fault"), ("p1", "cavitation")]
    assert await ids(label="cavitation") == [("p1", "cavitation")]
    assert sorted(await ids(since=str(t0 + 15))) == [("p1", "cavitation"), ("p2", "bearing_fault")]
    assert await ids(until=str(t0 + 15)) == [("p1", "bearing_fault")]
    assert await ids(asset="p3") == []

    # Pages of one: every alert once, newest first, then no cursor.
    seen, cursor = [], None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        body = (
            await api.http.get("/api/v1/alerts", params=params, headers=api.auth("read"))
        ).json()
        seen += [a["id"] for a in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [a["id"] for a in page["items"]]


async def _raise(store: Store, raised: Sequence[float]) -> list[int]:
    slots = [PredictionSlot(f"a{i}", "health", "1.0.0", "ab" * 32, LABELS) for i in range(9)]
    sink = AlertSink(AlertRepository(store), slots)
    await sink.start()
    await sink.write([pred(f"a{i}", 1, ts, "bearing_fault") for i, ts in enumerate(raised)])
    await sink.close()
    alerts = AlertRepository(store).page(AlertFilter(), 100)
    return [a.id for a in sorted(alerts, key=lambda a: a.raised_at)]


async def test_acknowledge_records_who_when_comment_and_mean_time_to_ack(api: Api) -> None:
    now = time.time()
    raised = [now - 120, now - 60, now - 30]
    first, second, third = await _raise(api.store, raised)

    r = await api.http.post(
        f"/api/v1/alerts/{first}/ack",
        json={"by": "Dana (shift B)", "comment": "bearing ordered"},
        headers=api.auth("read"),
    )
    assert r.status_code == 403
    before = time.time()
    r = await api.http.post(
        f"/api/v1/alerts/{first}/ack",
        json={"by": "Dana (shift B)", "comment": "bearing ordered"},
        headers=api.auth("operate"),
    )
    after = time.time()
    assert r.status_code == 200, r.text
    acked = r.json()
    operate_id = ApiKeyRepository(api.store).authenticate(api.keys["operate"])
    assert operate_id is not None
    assert (acked["acknowledged"], acked["acked_by"], acked["ack_comment"]) == (
        True,
        "Dana (shift B)",
        "bearing ordered",
    )
    assert acked["acked_key"] == operate_id.key_id
    acked_at = datetime.fromisoformat(acked["acked_at"]).timestamp()
    assert before - 1e-3 <= acked_at <= after + 1e-3
    assert acked["time_to_ack_s"] == pytest.approx(acked_at - raised[0], abs=1e-3)

    again = await api.http.post(
        f"/api/v1/alerts/{first}/ack", json={"by": "someone else"}, headers=api.auth("admin")
    )
    assert again.status_code == 409
    assert "Dana (shift B)" in again.json()["detail"]
    missing = await api.http.post(
        "/api/v1/alerts/999999/ack", json={"by": "x"}, headers=api.auth("operate")
    )
    assert (missing.status_code, missing.json()["detail"]) == (404, "no alert 999999")

    r = await api.http.post(
        f"/api/v1/alerts/{second}/ack", json={"by": "Lee"}, headers=api.auth("admin")
    )
    second_ack = datetime.fromisoformat(r.json()["acked_at"]).timestamp()

    m = (await api.http.get("/api/v1/alerts/metrics", headers=api.auth("read"))).json()
    assert (m["total"], m["acknowledged"], m["open"]) == (3, 2, 1)
    expected = ((acked_at - raised[0]) + (second_ack - raised[1])) / 2
    assert m["mean_time_to_ack_s"] == pytest.approx(expected, abs=1e-3)
    assert m["max_time_to_ack_s"] == pytest.approx(acked_at - raised[0], abs=1e-3)
    assert m["oldest_open_age_s"] >= time.time() - raised[2] - 1
    only_third = (
        await api.http.get(
            "/api/v1/alerts/metrics", params={"since": str(raised[2])}, headers=api.auth("read")
        )
    ).json()
    assert (only_third["total"], only_third["open"], only_third["mean_time_to_ack_s"]) == (
        1,
        1,
        None,
    )
    r = await api.http.get(
        "/api/v1/alerts", params={"acknowledged": "false"}, headers=api.auth("read")
    )
    assert [a["id"] for a in r.json()["items"]] == [third]


async def test_concurrent_acknowledgements_have_exactly_one_winner(api: Api) -> None:
    [alert] = await _raise(api.store, [time.time() - 5])
    results = await asyncio.gather(
        *(
            api.http.post(
                f"/api/v1/alerts/{alert}/ack", json={"by": f"op{i}"}, headers=api.auth("operate")
            )
            for i in range(6)
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * 5, [r.text for r in results]


async def test_history_pages_by_cursor_without_gaps_or_repeats(api: Api) -> None:
    t0 = 1714564800.0
    # Three predictions share each timestamp: the cursor must break ties, not skip them.
    rows = [pred(f"p{i % 3}", i, t0 + i // 3, "healthy") for i in range(47)]
    PredictionRepository(api.store).add_many(rows)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10}
    for _ in range(10):
        r = await api.http.get("/api/v1/predictions", params=params, headers=api.auth("read"))
        assert r.status_code == 200, r.text
        seen += [p["id"] for p in r.json()]
        cursor = r.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in r.headers
            break
        assert r.headers["Link"].endswith('>; rel="next"')
        assert f"cursor={cursor}" in r.headers["Link"]
        params = {"limit": 10, "cursor": cursor}
    assert len(seen) == len(set(seen)) == 47
    newest_first = sorted(rows, key=lambda p: (p.timestamp, p.seq), reverse=True)
    assert seen == [p.id for p in newest_first]

    # Filters still apply on later pages; the old parameters behave as before.
    r = await api.http.get(
        "/api/v1/predictions", params={"asset": "p1", "limit": 5}, headers=api.auth("read")
    )
    nxt = await api.http.get(
        "/api/v1/predictions",
        params={"asset": "p1", "limit": 5, "cursor": r.headers["X-Next-Cursor"]},
        headers=api.auth("read"),
    )
    assert {p["asset"] for p in r.json() + nxt.json()} == {"p1"}
    assert len(r.json()) == len(nxt.json()) == 5
    assert r.json()[-1]["seq"] > nxt.json()[0]["seq"]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "fragment"),
    [
        ("GET", "/api/v1/predictions", {"params": {"cursor": "abc"}}, "cursor"),
        ("GET", "/api/v1/predictions", {"params": {"limit": "-1"}}, "limit"),
        ("GET", "/api/v1/alerts", {"params": {"cursor": "-4"}}, "cursor"),
        ("GET", "/api/v1/alerts", {"params": {"cursor": "99999999999999999999"}}, "cursor"),
        ("GET", "/api/v1/alerts", {"params": {"acknowledged": "maybe"}}, "acknowledged"),
        ("GET", "/api/v1/predictions", {"params": [("asset", "p1"), ("asset", "p2")]}, "asset"),
        ("GET", "/api/v1/alerts", {"params": {"since": "soon"}}, "since"),
        ("GET", "/api/v1/alerts/metrics", {"params": {"until": "2024-02-30"}}, "until"),
        ("POST", "/api/v1/alerts/1/ack", {"content": b"{not json"}, "body"),
        (
            "POST",
            "/api/v1/alerts/1/ack",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            "JSON decode error",
        ),
        ("POST", "/api/v1/alerts/1/ack", {"json": {"comment": "no by"}}, "by"),
        ("POST", "/api/v1/alerts/1/ack", {"json": {"by": ""}}, "by"),
        ("POST", "/api/v1/alerts/1/ack", {"json": ["by"]}, "body"),
        ("POST", "/api/v1/alerts/0/ack", {"json": {"by": "x"}}, "alert_id"),
        ("POST", "/api/v1/alerts/99999999999999999999/ack", {"json": {"by": "x"}}, "alert_id"),
        ("POST", "/api/v1/alerts/one/ack", {"json": {"by": "x"}}, "alert_id"),
        ("POST", "/api/v1/apikeys", {"json": {"name": "x", "scope": "root"}}, "scope"),
        ("POST", "/api/v1/apikeys", {"json": {"name": "   "}}, "name"),
        ("DELETE", "/api/v1/apikeys/ZZZ", {}, "key_id"),
    ],
)
async def test_malformed_requests_are_4xx_with_a_message(
    sqlite_api: Api, method: str, url: str, kwargs: dict[str, Any], fragment: str
) -> None:
    headers = sqlite_api.auth("admin") | kwargs.pop("headers", {})
    r = await sqlite_api.http.request(method, url, headers=headers, **kwargs)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and fragment in detail, detail


async def test_admin_manages_keys_over_http(api: Api) -> None:
    r = await api.http.post(
        "/api/v1/apikeys", json={"name": "mes", "scope": "operate"}, headers=api.auth("admin")
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["scope"] == "operate" and created["key"].startswith("brk_")
    mes = {"X-API-Key": created["key"]}
    assert (await api.http.get("/api/v1/alerts", headers=mes)).status_code == 200
    listed = (await api.http.get("/api/v1/apikeys", headers=api.auth("admin"))).json()
    assert created["key_id"] in {k["key_id"] for k in listed}
    assert all("key" not in k for k in listed)
    assert (await api.http.get("/api/v1/apikeys", headers=mes)).status_code == 403

    r = await api.http.delete(f"/api/v1/apikeys/{created['key_id']}", headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert (await api.http.get("/api/v1/alerts", headers=mes)).status_code == 401
    listed = (await api.http.get("/api/v1/apikeys", headers=api.auth("admin"))).json()
    assert created["key_id"] not in {k["key_id"] for k in listed}
    everything = (
        await api.http.get(
            "/api/v1/apikeys", params={"include_revoked": "true"}, headers=api.auth("admin")
        )
    ).json()
    assert created["key_id"] in {k["key_id"] for k in everything}
    r = await api.http.delete("/api/v1/apikeys/0123456789ab", headers=api.auth("admin"))
    assert r.status_code == 404


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    r = runner.invoke(main, ["apikeys", "create", "scada", "--scope", "operate", "--store", url])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    store = open_store(url)
    try:
        repo = ApiKeyRepository(store)
        record = repo.authenticate(key)
        assert record is not None and record.scope is Scope.OPERATE and record.name == "scada"

        r = runner.invoke(main, ["apikeys", "list", "--store", url])
        assert r.exit_code == 0
        assert record.key_id in r.stdout and "operate" in r.stdout and key not in r.stdout

        r = runner.invoke(main, ["apikeys", "revoke", record.key_id, "--store", url])
        assert (r.exit_code, r.stdout.strip()) == (0, f"revoked {record.key_id} 'scada'")
        assert repo.authenticate(key) is None
        r = runner.invoke(main, ["apikeys", "list", "--store", url])
        assert record.key_id not in r.stdout
        r = runner.invoke(main, ["apikeys", "list", "--all", "--store", url])
        assert record.key_id in r.stdout
    finally:
        store.dispose()
    r = runner.invoke(main, ["apikeys", "revoke", "0123456789ab", "--store", url])
    assert r.exit_code == 4
    r = runner.invoke(main, ["apikeys", "create", "x", "--scope", "root", "--store", url])
    assert r.exit_code == 2 and "root" in r.output
    r = runner.invoke(main, ["apikeys", "list"])
    assert r.exit_code == 2 and "--mapping" in r.output


async def test_key_cache_serves_verified_keys_until_forgotten_or_expired(
    sqlite_store: Store,
) -> None:
    repo = ApiKeyRepository(sqlite_store)
    record, key = repo.create("hmi", Scope.READ)
    long = KeyCache(repo, ttl_s=3600)
    none = KeyCache(repo, ttl_s=0)
    assert await long.authenticate(key) == record == await none.authenticate(key)
    assert await long.authenticate(key + "x") is None
    repo.revoke(record.key_id)  # as `bridge apikeys revoke` does, from another process
    assert await none.authenticate(key) is None  # expired entries are checked again
    assert await long.authenticate(key) == record  # within its TTL the cache still says yes
    long.forget()
    assert await long.authenticate(key) is None
