"""The API serves from the one ApiServices it is built with: every field is typed, and each is
reached by a route (httpx's ASGI transport, a real SQLite store). The registry's 404 and 409
are chosen by the error's type."""

from __future__ import annotations

import dataclasses
import time
import typing
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.api import ApiServices, ModelInfo, TagState, create_app
from bridge.api.keycache import KeyCache
from bridge.api.models_admin import registry_status
from bridge.api.queries import QueryRunner
from bridge.auth import Scope
from bridge.config.actions import ResolvedAction
from bridge.config.spec import ApiSettings
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.version_stats import VersionStats
from bridge.pki.trustlists import TrustDir
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.actions import ActionRepository, NewActionEvent
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditRepository
from bridge.store.decisions import DecisionRepository
from bridge.store.history import PredictionHistory
from bridge.store.insights import InsightRepository
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import (
    RegistryConflict,
    RegistryNotFound,
    RegistryRepository,
    VersionRecord,
    VersionState,
)
from bridge.types import ActionView, ComponentHealth, Explanation, Feedback, Prediction, Quality

NOW = time.time()


def _prediction(seq: int) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/p1/health/{seq}")),
        seq=seq,
        asset="p1",
        model="health",
        version="1",
        sha256="12" * 32,
        value="fault",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=NOW - 60 + seq,
        input_age_s=0.1,
    )


@dataclass
class View:
    components: list[ComponentHealth] = field(default_factory=list)

    gateway_id: str = "gw-services"

    def tag_states(self) -> Sequence[TagState]:
        return [
            TagState(
                "p1.temp", "p1", "temp", "plc1", 40.5, "degC", Quality.GOOD, NOW, None, NOW, ""
            )
        ]

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return [ModelInfo("health", "1", "12" * 32, "health.onnx", NOW, ("p1",), ("temp",))]

    def health(self) -> Sequence[ComponentHealth]:
        return self.components

    def started_at(self) -> float:
        return NOW - 60


@dataclass
class LiveModels:
    """What a running gateway's registry side offers the API (bridge.runtime.live_models has the
    real one, over a watcher and model runners)."""

    stats: dict[str, list[VersionStats]]
    woken: int = 0

    def wake(self) -> None:
        self.woken += 1

    def version_stats(self, name: str) -> Sequence[VersionStats]:
        return self.stats.get(name, [])


@dataclass
class Explainer:
    kept: dict[str, Explanation]

    def explain_kept(self, prediction_id: str) -> Explanation | None:
        return self.kept.get(prediction_id)

    def feature_drift(self, asset: str) -> dict[str, float]:
        return {}


@dataclass
class Actions:
    """What a running gateway's write-back actions offer the API (bridge.runtime.actions has
    the real one, tested in test_actions_api); here a gateway whose mapping has none."""

    actions: dict[str, ResolvedAction] = field(default_factory=dict)

    def statuses(self) -> list[ActionView]:
        return []

    def serves(self, name: str) -> bool:
        return True

    async def arm(self, name: str, actor: str, comment: str = "") -> object:
        raise NotImplementedError

    async def reset(self, name: str, actor: str, comment: str = "") -> object:
        raise NotImplementedError

    async def confirm(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> str:
        raise NotImplementedError

    async def refuse(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> None:
        raise NotImplementedError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'services.db'}")
    try:
        yield s
    finally:
        s.dispose()


@dataclass
class Served:
    http: httpx.AsyncClient
    services: ApiServices
    live: LiveModels
    predictions: list[Prediction]


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


@pytest.fixture
async def served(store: Store, tmp_path: Path) -> AsyncIterator[Served]:
    predictions = [_prediction(i) for i in range(3)]
    PredictionRepository(store).add_many(predictions)
    AlertRepository(store).add_many(
        [NewAlert(predictions[0].id, "p1", "health", "fault", "ok", 0.9, NOW - 30)]
    )
    LabelRepository(store).add(
        Feedback(predictions[1].id, "p1", "health", "confirm", "op", "rest", NOW - 59, "fault")
    )
    RegistryRepository(store).add(_version("1", "active"), "test")
    ActionRepository(store).save(
        None,
        [NewActionEvent(str(uuid.uuid4()), NOW - 10, "cool", "p1", "shadow", "shadow", "system")],
    )
    _, key = ApiKeyRepository(store).create("admin", Scope.ADMIN)
    # Every field built here, by hand: a new service the app needs must appear in this list.
    settings = ApiSettings(max_history_days=1)
    queries = QueryRunner(2, 4)
    live = LiveModels({"health": [VersionStats("1", predictions=7)]})
    services = ApiServices(
        settings=settings,
        view=View([ComponentHealth("outbox:mes", "ok", counters={"delivered": 5})]),
        queries=queries,
        keys=KeyCache(ApiKeyRepository(store), queries=queries),
        history=PredictionHistory(store),
        alerts=AlertRepository(store),
        registry=RegistryService(RegistryRepository(store)),
        lineage=LineageRepository(store),
        labels=LabelRepository(store),
        outbox=OutboxRepository(store),
        audit=AuditRepository(store, "test"),
        decisions=DecisionRepository(store),
        insights=InsightRepository(store),
        action_log=ActionRepository(store),
        actions=Actions(),
        live_models=live,
        explainers={"health": Explainer({predictions[2].id: Explanation("temp high", ())})},
        trust_lists=lambda: [TrustDir(tmp_path / "pki", "clients", ("outputs.hmi",))],
    )
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bridge.test", headers={"X-API-Key": key}
        ) as http:
            yield Served(http, services, live, predictions)
    finally:
        queries.close()


async def test_every_service_is_a_typed_field_of_a_frozen_set(served: Served) -> None:
    hints = typing.get_type_hints(ApiServices)
    assert set(hints) == {f.name for f in dataclasses.fields(ApiServices)}
    assert all(h is not Any for h in hints.values()), hints
    with pytest.raises(dataclasses.FrozenInstanceError):
        served.services.view = View()  # type: ignore[misc]


async def test_one_route_per_service(served: Served) -> None:
    http, p = served.http, served.predictions
    # keys: the key cache admits the stored key, refuses an unknown one
    assert (await http.get("/api/v1/models", headers={"X-API-Key": "nope"})).status_code == 401
    # view
    r = await http.get("/api/v1/models")
    assert [m["name"] for m in r.json()] == ["health"], r.text
    # queries (the tags are encoded on the API's query threads)
    r = await http.get("/api/v1/tags")
    assert [t["tag"] for t in r.json()] == ["p1.temp"], r.text
    # settings: max_history_days=1 refuses a two-day range
    r = await http.get("/api/v1/predictions", params={"since": NOW - 2 * 86400})
    assert r.status_code == 400 and "max_history_days" in r.text, r.text
    # history
    r = await http.get("/api/v1/predictions")
    assert sorted(x["id"] for x in r.json()) == sorted(x.id for x in p), r.text
    # alerts
    r = await http.get("/api/v1/alerts")
    assert [a["prediction_id"] for a in r.json()["items"]] == [p[0].id], r.text
    # lineage
    r = await http.get(f"/api/v1/predictions/{p[1].id}")
    assert r.json()["lineage"]["model_version"] == "1", r.text
    # labels
    r = await http.get("/api/v1/feedback/metrics")
    assert r.json()["confirmed"] == 1, r.text
    # outbox: the store's counts joined with the relay's health from the view
    r = await http.get("/api/v1/outbox")
    assert r.json()["destinations"][0]["delivered"] == 5, r.text
    # registry, and the live model state: this gateway's counters in the version's metrics
    r = await http.get("/api/v1/models/health/versions/1/metrics")
    assert r.status_code == 200 and r.json()["live"]["predictions"] == 7, r.text
    # explainers
    r = await http.get(f"/api/v1/predictions/{p[2].id}/explanation")
    assert r.json()["reason"] == "temp high", r.text
    # audit: the ledger, newest first, ends with the admin key the fixture made last
    r = await http.get("/api/v1/audit")
    actions = [e["action"] for e in r.json()["entries"]]
    assert actions[0] == "apikey.created" and "alert.raised" in actions, r.text
    # decisions: one prediction's lineage
    r = await http.get("/api/v1/lineage", params={"prediction_id": p[1].id})
    assert r.status_code == 200 and p[1].id in r.text, r.text
    # trust lists: the mapping's, asked for on each request
    r = await http.get("/api/v1/certificates")
    (listed,) = r.json()["trust_lists"]
    assert listed["side"] == "clients" and listed["used_by"] == ["outputs.hmi"], r.text
    # insights: the predictions of p1, one asset, below k: counted, suppressed (one row, or
    # two when the last minute straddled midnight)
    r = await http.get("/api/v1/insights", params={"from": NOW - 3600, "to": NOW})
    models = r.json()["models"]
    assert models["rows"] == [] and models["suppressed"] in (1, 2), r.text
    # action log: the stored events of an action, and the coverage in the feedback metrics
    r = await http.get("/api/v1/actions/cool/events")
    assert [e["outcome"] for e in r.json()["items"]] == ["shadow"], r.text
    r = await http.get("/api/v1/feedback/metrics")
    assert r.json()["actions"]["shadow"] == 1, r.text
    # actions: the running gateway's (none here: an empty list, not 503)
    r = await http.get("/api/v1/actions")
    assert r.status_code == 200 and r.json() == [], r.text


async def test_the_app_uses_the_query_runner_it_is_given(served: Served) -> None:
    # A runner that admits no query (limit 0): the same route now answers 503.
    full = QueryRunner(1, -1)
    app = create_app(dataclasses.replace(served.services, queries=full))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bridge.test",
            headers=served.http.headers,
        ) as http:
            assert (await http.get("/api/v1/tags")).status_code == 503
    finally:
        full.close()


async def test_registry_not_found_is_404_conflict_is_409(served: Served) -> None:
    http = served.http
    r = await http.get("/api/v1/models/health/versions/9")
    assert r.status_code == 404 and "has no version 9" in r.text, r.text
    r = await http.post("/api/v1/models/health/activate", json={"version": "1"})
    assert r.status_code == 409 and "already active" in r.text, r.text
    r = await http.post("/api/v1/models/health/promote")
    assert r.status_code == 409, r.text
    assert served.live.woken == 0  # refused changes do not wake the watcher


async def test_a_registry_change_wakes_the_live_watcher(served: Served, store: Store) -> None:
    RegistryRepository(store).add(_version("2", "shadow"), "test")
    r = await served.http.post("/api/v1/models/health/rollback")  # ends the shadow
    assert r.status_code == 200 and r.json()["state"] == "retired", r.text
    assert served.live.woken == 1


def test_registry_status_follows_the_type_not_the_text() -> None:
    assert registry_status(RegistryNotFound("model m version 1 is already active")) == 404
    assert registry_status(RegistryConflict("model m has no version 9")) == 409
    assert registry_status(RegistryConflict("model m has no active version")) == 409
