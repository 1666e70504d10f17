"""The anonymised insights (``GET /api/v1/insights``) over a real uvicorn server on 127.0.0.1,
on a real store (a SQLite file and a PostgreSQL schema): the aggregates of a known data set,
k-anonymity and the rare-event rule, salted asset keys, nothing identifying in any answer, the
`insights` scope (its one route, nothing else; the console refuses it), the CLI, and clear
problems for bad parameters."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from emptyview import EmptyView
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import update
from stores import BACKENDS, temp_store
from support import LOOPBACK, free_port

from bridge.api import ApiServices
from bridge.api import insights as insights_api
from bridge.auth import Scope
from bridge.cli import main
from bridge.config.spec import ApiSettings, InsightsSettings
from bridge.console.app import create_gateway_app
from bridge.drift.events import DRIFT_LABEL
from bridge.runtime.apiserver import ApiServer
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.alerts import AlertFilter, AlertRepository, AlertRow, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import Explanation, InputSnapshot, Prediction, Quality

# Monday 2026-11-02 00:00 UTC: the start of a day and of an ISO week.
T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
DAY = 86400.0
PUMPS = [f"Pump Alpha-{i} Hall7" for i in range(1, 7)]
PRESSES = ["Press Beta-1 Hall9", "Press Beta-2 Hall9"]
GATEWAY = "gw-GATEWAYSECRET"
SHA = "5e" * 32
VERSION = "9.9.9-VERSIONSECRET"
TAG = "bearing_temp_TAGSECRET"
REASON = "REASONSECRET bearing hot"
COMMENT = "COMMENTSECRET replaced the seal"
BY = "Operator Dana BYSECRET"
SALT_1 = "first-salt-0123456789abcdef"
SALT_2 = "second-salt-0123456789abcdef"
# What no answer may contain, in any form.
SECRETS = [
    *PUMPS,
    *PRESSES,
    *(a.split()[1] for a in PUMPS + PRESSES),  # "Alpha-1": a part of a name is a name too
    GATEWAY,
    SHA,
    VERSION,
    TAG,
    "TAGSECRET",
    "REASONSECRET",
    "COMMENTSECRET",
    "BYSECRET",
    SALT_1,
    SALT_2,
]


def _pred(
    asset: str,
    model: str,
    ts: float,
    value: str | float,
    quality: Quality = Quality.GOOD,
    drift: float | None = None,
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{asset}/{model}/{ts}")),
        seq=int(ts),
        asset=asset,
        model=model,
        version=VERSION,
        sha256=SHA,
        value=value,
        score=0.9,
        quality=quality,
        timestamp=ts,
        input_age_s=0.5,
        inputs=(InputSnapshot(f"{asset}.{TAG}", 71.5, quality, ts - 1),),
        reason=REASON,
        explanation=Explanation(REASON, ()),
        drift_score=drift,
    )


def load_data_set(store: Store) -> None:
    """Day 0 (T0): six pumps predict four times an hour apart (three `healthy`, then five
    `cavitation` and one Uncertain `seal_leak`), the first three with a drift score; a flow
    regressor predicts once per pump; two presses predict twice. Day 1: three pumps only."""
    preds = []
    for i, asset in enumerate(PUMPS):
        for h in range(1, 5):
            ts = T0 + h * 3600 + i
            drift = 0.1 if i < 3 else None
            if h < 4:
                preds.append(_pred(asset, "pump-health", ts, "healthy", drift=drift))
            elif i < 5:
                preds.append(_pred(asset, "pump-health", ts, "cavitation", drift=drift))
            else:
                preds.append(_pred(asset, "pump-health", ts, "seal_leak", Quality.UNCERTAIN, drift))
        preds.append(_pred(asset, "pump-flow", T0 + 7200 + i, 1.5))
        if i < 3:
            preds += [_pred(asset, "pump-health", T0 + DAY + h * 3600, "healthy") for h in (1, 2)]
    for asset in PRESSES:
        preds += [_pred(asset, "press-quality", T0 + h * 600, "ok") for h in (1, 2)]
    PredictionRepository(store).add_many(preds)

    alerts = AlertRepository(store)
    cavitation = [
        NewAlert(str(uuid.uuid4()), a, "pump-health", "cavitation", "healthy", 0.9, T0 + 4 * 3600)
        for a in PUMPS[:5]
    ]
    alerts.add_many(
        [
            *cavitation,
            NewAlert(str(uuid.uuid4()), PUMPS[5], "pump-health", "seal_leak", "healthy", 0.8, T0),
            *(
                NewAlert(str(uuid.uuid4()), a, "pump-health", DRIFT_LABEL, "", 0.4, T0 + 5 * 3600)
                for a in PUMPS[:2]
            ),
            # The gateway's own alert: never an insight.
            NewAlert(str(uuid.uuid4()), GATEWAY, "store", "disk_low", "", 10.0, T0 + 600),
        ]
    )
    # Four of the five cavitation alerts acknowledged 60, 120, 180 and 240 s after: MTTA 150 s.
    by_prediction = {a.prediction_id: a for a in alerts.page(AlertFilter(), 100)}
    for n, new in enumerate(cavitation[:4], start=1):
        alert = by_prediction[new.prediction_id]
        alerts.acknowledge(alert.id, BY, None, COMMENT, actor="test")
        with store.sessions.begin() as session:
            session.execute(
                update(AlertRow)
                .where(AlertRow.id == alert.id)
                .values(acked_at=alert.raised_at + 60 * n)
            )


@dataclass
class Served:
    url: str
    app: FastAPI
    store: Store
    keys: dict[str, str]  # scope label -> key

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def get(self, params: dict[str, Any], scope: str = "insights") -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            return await http.get("/api/v1/insights", params=params, headers=self.auth(scope))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "insights.db", prefix="bridge_insights") as s:
        load_data_set(s)
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'insights.db'}")
    try:
        load_data_set(s)
        yield s
    finally:
        s.dispose()


async def _serve(store: Store, insights: InsightsSettings) -> AsyncIterator[Served]:
    repo = ApiKeyRepository(store)
    keys = {s.label: repo.create(f"{s.label}-key", s)[1] for s in Scope}
    settings = ApiSettings(
        host=LOOPBACK, port=free_port(), rate_limit_per_s=1000, rate_burst=1000, insights=insights
    )
    app = create_gateway_app(ApiServices.from_store(EmptyView(GATEWAY, T0), store, settings))
    server = ApiServer(app, settings.host, settings.port)
    await server.start()
    try:
        yield Served(server.url, app, store, keys)
    finally:
        await server.stop()


@pytest.fixture
async def served(store: Store) -> AsyncIterator[Served]:
    async for s in _serve(store, InsightsSettings(salt=SALT_1)):
        yield s


@pytest.fixture
async def sqlite_served(sqlite_store: Store) -> AsyncIterator[Served]:
    async for s in _serve(sqlite_store, InsightsSettings(salt=SALT_1)):
        yield s


def _day(n: int) -> str:
    return datetime.fromtimestamp(T0 + n * DAY, tz=UTC).isoformat().replace("+00:00", "Z")


def _asset_key(salt: str, asset: str) -> str:
    return hmac.new(salt.encode(), asset.encode(), hashlib.sha256).hexdigest()[:16]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


TWO_DAYS = {"from": _day(0), "to": _day(2), "period": "day"}


async def test_aggregates_of_a_known_data_set_are_right_and_small_groups_suppressed(
    served: Served,
) -> None:
    r = await served.get(TWO_DAYS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["period"], body["k"], body["by_asset"]) == ("day", 5, False)
    assert (_stamp(body["from"]), _stamp(body["to"])) == (T0, T0 + 2 * DAY)

    models = [{k: v for k, v in m.items() if k != "period_start"} for m in body["models"]["rows"]]
    assert [_stamp(m["period_start"]) for m in body["models"]["rows"]] == [T0, T0]
    assert models == [
        {
            "model": "pump-flow",
            "asset_key": None,
            "assets": 6,
            "predictions": 6,
            "good_predictions": 6,
            "availability": 1.0,
            "drift_checks": 0,
            "drift_events": 0,
            "drifted_asset_share": 0.0,
        },
        {
            "model": "pump-health",
            "asset_key": None,
            "assets": 6,
            "predictions": 24,
            "good_predictions": 23,
            "availability": pytest.approx(23 / 24),
            "drift_checks": 12,
            "drift_events": 2,
            "drifted_asset_share": pytest.approx(2 / 6),
        },
    ]
    # Day 1's pumps (3 assets) and the presses (2): below k = 5.
    assert body["models"]["suppressed"] == 2

    labels = [
        (x["model"], x["label"], x["assets"], x["predictions"]) for x in body["labels"]["rows"]
    ]
    assert labels == [("pump-health", "cavitation", 5, 5), ("pump-health", "healthy", 6, 18)]
    # seal_leak (one pump), day 1's healthy (three), the presses' ok (two); no regressor rows.
    assert body["labels"]["suppressed"] == 3

    (alerts,) = body["alerts"]["rows"]
    assert _stamp(alerts["period_start"]) == T0
    assert {k: v for k, v in alerts.items() if k != "period_start"} == {
        "model": "pump-health",
        "label": "cavitation",
        "asset_key": None,
        "assets": 5,
        "raised": 5,
        "acknowledged": 4,
        "mean_time_to_ack_s": pytest.approx(150.0),
    }
    # seal_leak: one pump. Drift alerts are drift events; the gateway's disk_low is no insight.
    assert body["alerts"]["suppressed"] == 1
    assert body["suppressed"] == 2 + 3 + 1

    # ISO weeks start on Monday: the two days are one week.
    week = (await served.get({**TWO_DAYS, "period": "week"})).json()
    health = next(m for m in week["models"]["rows"] if m["model"] == "pump-health")
    assert _stamp(health["period_start"]) == T0
    assert (health["predictions"], health["good_predictions"], health["assets"]) == (30, 29, 6)
    assert [(x["label"], x["predictions"]) for x in week["labels"]["rows"]] == [
        ("cavitation", 5),
        ("healthy", 24),
    ]
    # Hours: the fourth hour holds the cavitation alerts, and the range widens to whole hours.
    hours = (
        await served.get({"from": T0 + 3 * 3600 + 5, "to": T0 + 4 * 3600 + 30, "period": "hour"})
    ).json()
    assert (_stamp(hours["from"]), _stamp(hours["to"])) == (T0 + 3 * 3600, T0 + 5 * 3600)
    assert [(_stamp(x["period_start"]) - T0, x["label"]) for x in hours["labels"]["rows"]] == [
        (3 * 3600, "healthy"),
        (4 * 3600, "cavitation"),
    ]
    assert [a["raised"] for a in hours["alerts"]["rows"]] == [5]
    # One model only.
    only = (await served.get({**TWO_DAYS, "model": "pump-flow"})).json()
    assert [m["model"] for m in only["models"]["rows"]] == ["pump-flow"]
    assert only["labels"]["rows"] == [] and only["alerts"]["rows"] == []


async def test_k_comes_from_the_settings(sqlite_store: Store) -> None:
    async for served in _serve(sqlite_store, InsightsSettings(k=2)):
        body = (await served.get(TWO_DAYS)).json()
        assert body["k"] == 2
        models = {(m["model"], _stamp(m["period_start"])) for m in body["models"]["rows"]}
        assert models == {
            ("pump-flow", T0),
            ("pump-health", T0),
            ("pump-health", T0 + DAY),
            ("press-quality", T0),
        }
        assert body["models"]["suppressed"] == 0
        # seal_leak: still one pump (rows of one asset are never published in aggregate)
        assert body["labels"]["suppressed"] == 1 and body["alerts"]["suppressed"] == 1


async def test_per_asset_keys_are_salted_hashes_stable_per_salt(served: Served) -> None:
    params = {**TWO_DAYS, "by_asset": "true"}
    first = (await served.get(params)).json()
    again = (await served.get(params)).json()
    assert first == again
    rows = first["models"]["rows"]
    expected = (
        {("pump-flow", _asset_key(SALT_1, a)) for a in PUMPS}
        | {  # pumps 1 and 2 drifted once each: a rare event, their rows are suppressed
            ("pump-health", _asset_key(SALT_1, a)) for a in PUMPS[2:]
        }
    )
    assert {(m["model"], m["asset_key"]) for m in rows} == expected
    assert all(m["assets"] == 1 and re.fullmatch(r"[0-9a-f]{16}", m["asset_key"]) for m in rows)
    sixth = next(
        m
        for m in rows
        if m["asset_key"] == _asset_key(SALT_1, PUMPS[5]) and m["model"] == "pump-health"
    )
    assert (sixth["predictions"], sixth["good_predictions"], sixth["availability"]) == (4, 3, 0.75)
    # Suppressed: pumps 1-2 (rare drift), day 1 (3 pumps, group below k), the presses (2).
    assert first["models"]["suppressed"] == 2 + 3 + 2
    # Every label row of one pump counts 1 to 4 predictions (< k): all rare, all suppressed.
    assert first["labels"]["rows"] == [] and first["labels"]["suppressed"] == 6 + 5 + 1 + 3 + 2
    assert first["alerts"]["rows"] == [] and first["alerts"]["suppressed"] == 6

    # Another salt: other keys for the same assets, none shared.
    async for other in _serve(served.store, InsightsSettings(salt=SALT_2)):
        second = (await other.get(params)).json()
        keys_1 = {m["asset_key"] for m in rows}
        keys_2 = {m["asset_key"] for m in second["models"]["rows"]}
        assert keys_2 == {_asset_key(SALT_2, a) for a in PUMPS}
        assert not keys_1 & keys_2
        for body in (first, second):
            text = str(body)
            assert SALT_1 not in text and SALT_2 not in text


async def test_no_asset_tag_version_or_free_text_in_any_answer(served: Served) -> None:
    variants: list[dict[str, Any]] = [
        TWO_DAYS,
        {**TWO_DAYS, "by_asset": "true"},
        {**TWO_DAYS, "period": "hour"},
        {**TWO_DAYS, "period": "week", "by_asset": "true"},
        {**TWO_DAYS, "model": "pump-health", "by_asset": "true"},
    ]
    for params in variants:
        for scope in ("insights", "admin"):
            r = await served.get(params, scope)
            assert r.status_code == 200, r.text
            raw = r.text
            for secret in SECRETS:
                assert secret not in raw, (params, secret)
                assert secret.lower() not in raw.lower(), (params, secret)
            assert "sha256" not in raw and "version" not in raw
            # Only these keys, anywhere in the answer.
            assert set(re.findall(r'"([a-z_]+)":', raw)) <= {
                *("period", "from", "to", "k", "by_asset", "models", "labels", "alerts"),
                *("suppressed", "rows", "period_start", "model", "label", "asset_key", "assets"),
                *("predictions", "good_predictions", "availability", "drift_checks"),
                *("drift_events", "drifted_asset_share", "raised", "acknowledged"),
                "mean_time_to_ack_s",
            }, raw


async def test_per_asset_breakdown_without_a_salt_is_refused(sqlite_store: Store) -> None:
    async for served in _serve(sqlite_store, InsightsSettings()):
        r = await served.get({**TWO_DAYS, "by_asset": "true"})
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "gateway.api.insights.salt" in r.json()["detail"]
        assert (await served.get(TWO_DAYS)).status_code == 200


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_an_insights_key_may_call_insights_and_nothing_else(sqlite_served: Served) -> None:
    served = sqlite_served
    # Every route of the app, included routers flattened (as FastAPI's own OpenAPI walks
    # them), those outside the schema too.
    routes = sorted(
        (method, route.path)
        for route in iter_route_contexts(served.app.routes)
        if route.path is not None and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    )
    assert ("GET", "/api/v1/insights") in routes and len(routes) > 30
    refused = 0
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        for method, path in routes:
            body = {"by": "x", "name": "x"} if method in ("POST", "PUT", "PATCH") else None
            for headers in (served.auth("insights"), {"X-API-Key": served.keys["insights"]}):
                r = await http.request(method, _url(path), json=body, headers=headers)
                if path == "/api/v1/insights":
                    assert r.status_code == 200, r.text
                elif path == "/api/v1/health":
                    # Open to anyone: the key gets what the anonymous get, the status alone.
                    assert (r.status_code, list(r.json())) == (200, ["status"]), r.text
                else:
                    assert r.status_code == 403, (method, path, r.text)
                    assert "needs scope" in r.json()["detail"]
                    refused += 1
        # The other way round: read and operate keys may not read the insights; admin may.
        for scope, status in (("read", 403), ("operate", 403), ("admin", 200)):
            r = await http.get("/api/v1/insights", headers=served.auth(scope))
            assert r.status_code == status, (scope, r.text)
            if status == 403:
                assert "needs scope 'insights'" in r.json()["detail"]
    assert refused == 2 * (len(routes) - 2)


async def test_the_console_refuses_an_insights_key(sqlite_served: Served) -> None:
    served = sqlite_served
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        r = await http.post(
            "/console/login", data={"api_key": served.keys["insights"], "next": "/console/"}
        )
        assert r.status_code == 403 and "scope insights" in r.text
        assert "set-cookie" not in r.headers and served.keys["insights"] not in r.text
        r = await http.post("/console/login", data={"api_key": served.keys["read"]})
        assert r.status_code == 303 and "set-cookie" in r.headers


async def test_bad_parameters_are_clear_problems(sqlite_served: Served) -> None:
    served = sqlite_served
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"period": "month"}, 422, "period"),
        ({"from": "yesterday"}, 422, "from"),
        ({"to": "-5"}, 422, "to"),
        ({"from": _day(0), "to": _day(400)}, 400, "max_range_days"),
        ({"model": ""}, 422, "model"),
        ({"by_asset": "maybe"}, 422, "by_asset"),
    ]
    for params, status, names in cases:
        r = await served.get(params)
        assert r.status_code == status, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert names in r.text, (params, r.text)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        r = await http.get(
            "/api/v1/insights?period=day&period=week", headers=served.auth("insights")
        )
        assert r.status_code == 422 and "period: given more than once" in r.text
    # `from` after `to`: nothing matches, as everywhere in this API.
    r = await served.get({"from": _day(2), "to": _day(0)})
    assert r.status_code == 200 and r.json()["models"] == {"rows": [], "suppressed": 0}


async def test_the_openapi_documents_the_operation_and_its_scope(sqlite_served: Served) -> None:
    async with httpx.AsyncClient(base_url=sqlite_served.url, timeout=30) as http:
        spec = (await http.get("/openapi.json")).json()
    op = spec["paths"]["/api/v1/insights"]["get"]
    assert op["x-required-scope"] == "insights"
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"period", "from", "to", "model", "by_asset"}
    assert params["period"]["schema"]["enum"] == ["hour", "day", "week"]
    for code in ("200", "400", "401", "403", "422"):
        assert code in op["responses"], code
    schema = spec["components"]["schemas"]["InsightsOut"]
    assert {"from", "to", "k", "models", "labels", "alerts", "suppressed"} <= set(
        schema["properties"]
    )


def test_the_cli_creates_an_insights_key_that_reads_only_insights(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    r = runner.invoke(main, ["apikeys", "create", "buyer", "--scope", "insights", "--store", url])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    r = runner.invoke(main, ["apikeys", "list", "--store", url])
    assert r.exit_code == 0 and "insights" in r.stdout and key not in r.stdout
    store = open_store(url)
    try:
        record = ApiKeyRepository(store).authenticate(key)
        assert record is not None and record.scope is Scope.INSIGHTS and record.name == "buyer"
        # Stored as its label, read back by any version that knows it.
        assert [k.scope.label for k in ApiKeyRepository(store).list()] == ["insights"]
    finally:
        store.dispose()


async def test_an_answer_too_large_is_refused_not_truncated(
    sqlite_served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is 100,000 rows a series; lowered here rather than storing that many.
    monkeypatch.setattr(insights_api, "MAX_ROWS", 4)
    r = await sqlite_served.get({**TWO_DAYS, "period": "hour"})
    assert r.status_code == 400, r.text
    assert "more than 4 rows" in r.json()["detail"] and "shorter range" in r.json()["detail"]
    assert (await sqlite_served.get({**TWO_DAYS, "period": "week"})).status_code == 200
