"""Outbox status and dead letters over the secured API, on a real store (SQLite, PostgreSQL):
status per destination (store counts + live relay counters), paginated dead letters, replay
(scope operate) and purge (scope admin), and clear 4xx answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from stores import BACKENDS, temp_store

from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store import PredictionRepository, Store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.outbox import OutboxRepository
from bridge.types import ComponentHealth, Prediction, Quality


@dataclass
class View:
    gateway_id: str = "gw-outbox-api"
    start: float = field(default_factory=time.time)
    components: list[ComponentHealth] = field(default_factory=list)

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return self.components

    def started_at(self) -> float:
        return self.start


def pred(asset: str, seq: int) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy",
        score=0.5,
        quality=Quality.GOOD,
        timestamp=1714564800.0 + seq,
        input_age_s=0.1,
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "api.db", prefix="bridge_outbox") as s:
        yield s


@dataclass
class Api:
    http: httpx.AsyncClient
    view: View
    keys: dict[str, str]

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    repo = ApiKeyRepository(store)
    keys = {s.label: repo.create(f"{s.label}-key", s)[1] for s in Scope}
    view = View()
    transport = httpx.ASGITransport(app=create_app(ApiServices.from_store(view, store)))
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
        yield Api(http, view, keys)


def fill(store: Store) -> list[int]:
    """mes: 3 pending (p1), 5 dead letters (p2, p3); erp: 2 pending. Returns dead letter ids."""
    mes = OutboxFeed("mes", lambda p: f'{{"id": "{p.id}", "seq": {p.seq}}}', Budget(100))
    erp = OutboxFeed("erp", lambda p: None if p.asset != "p1" else "{}", Budget(100))
    batch = [pred(a, s) for s in range(3) for a in ("p1", "p2")] + [pred("p3", 0), pred("p3", 1)]
    PredictionRepository(store).add_many(batch, [mes, erp])
    repo = OutboxRepository(store)
    claim = repo.claim("mes", 10, None, 10)
    try:
        dead = [e for e in claim.events if e.asset != "p1"]
        claim.finish([], {e.id: "HTTP 422: unprocessable" for e in dead}, 1, 0.0)
    finally:
        claim.close()
    return [d.id for d in repo.dead_letters("mes")]


async def test_status_merges_store_counts_with_the_live_relay(api: Api, store: Store) -> None:
    fill(store)
    api.view.components = [
        ComponentHealth(
            "outbox:mes",
            "degraded",
            "retrying: HTTP 503",
            {
                "backlog": 3,
                "delivered": 7,
                "rejected": 5,
                "dead_lettered": 5,
                "refused": 2,
                "dropped": 0,
                "max_pending": 100,
                "drop_oldest": 0,
            },
        ),
        ComponentHealth("outbox:idle", "ok", "", {"max_pending": 10, "drop_oldest": 1}),
        ComponentHealth("store", "ok"),
    ]
    r = await api.http.get("/api/v1/outbox", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    by_name = {d["destination"]: d for d in r.json()["destinations"]}
    assert list(by_name) == ["erp", "idle", "mes"]
    mes = by_name["mes"]
    assert (mes["state"], mes["backlog"], mes["dead_letters"]) == ("degraded", 3, 5)
    assert mes["last_error"] == "retrying: HTTP 503"
    assert (mes["when_full"], mes["refused"], mes["max_pending"]) == ("refuse-new", 2, 100)
    assert mes["oldest_pending_age_s"] is not None and mes["oldest_pending_age_s"] >= 0
    # A destination with rows but no relay here (another gateway, an old mapping).
    erp = by_name["erp"]
    assert (erp["state"], erp["backlog"], erp["dead_letters"], erp["delivered"]) == (
        None,
        3,
        0,
        None,
    )
    idle = by_name["idle"]
    assert (idle["backlog"], idle["oldest_pending_age_s"], idle["when_full"]) == (
        0,
        None,
        "drop-oldest",
    )


async def test_dead_letters_are_paginated_replayed_and_purged(api: Api, store: Store) -> None:
    ids = fill(store)
    assert len(ids) == 5
    seen: list[int] = []
    cursor = None
    for _ in range(5):  # bounded: 5 dead letters, pages of 2
        params: dict[str, str | int] = {"limit": 2, "destination": "mes"}
        if cursor is not None:
            params["cursor"] = cursor
        r = await api.http.get(
            "/api/v1/outbox/dead-letters", params=params, headers=api.auth("read")
        )
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    first = (
        await api.http.get("/api/v1/outbox/dead-letters?limit=1", headers=api.auth("read"))
    ).json()["items"][0]
    assert first["destination"] == "mes" and first["attempts"] == 1
    assert first["body"]["seq"] in (0, 1, 2)  # the JSON body, parsed
    assert "422" in first["last_error"]
    other = await api.http.get(
        "/api/v1/outbox/dead-letters?destination=erp", headers=api.auth("read")
    )
    assert other.json() == {"items": [], "next_cursor": None}

    # Replay: scope operate; the event is back in the outbox with the same key.
    url = f"/api/v1/outbox/dead-letters/{ids[0]}/replay"
    assert (await api.http.post(url, headers=api.auth("read"))).status_code == 403
    r = await api.http.post(url, headers=api.auth("operate"))
    assert r.status_code == 201, r.text
    assert r.json() == {"id": ids[0], "action": "replayed"}
    repo = OutboxRepository(store)
    assert first["event_id"] in {e.event_id for e in repo.pending("mes")}
    r = await api.http.post(url, headers=api.auth("operate"))
    assert r.status_code == 404 and "no dead letter" in r.json()["detail"]

    # Purge: scope admin; gone for good.
    url = f"/api/v1/outbox/dead-letters/{ids[1]}"
    assert (await api.http.delete(url, headers=api.auth("operate"))).status_code == 403
    r = await api.http.delete(url, headers=api.auth("admin"))
    assert r.status_code == 200 and r.json() == {"id": ids[1], "action": "purged"}
    assert (await api.http.delete(url, headers=api.auth("admin"))).status_code == 404
    assert [d.id for d in repo.dead_letters()] == ids[2:]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/outbox/dead-letters?limit=0",
        "/api/v1/outbox/dead-letters?limit=100000",
        "/api/v1/outbox/dead-letters?cursor=abc",
        "/api/v1/outbox/dead-letters?destination=",
    ],
)
async def test_bad_requests_get_a_clear_422(api: Api, url: str) -> None:
    r = await api.http.get(url, headers=api.auth("read"))
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


async def test_bad_ids_get_a_clear_4xx(api: Api) -> None:
    for url in ("/api/v1/outbox/dead-letters/0/replay", "/api/v1/outbox/dead-letters/x/replay"):
        r = await api.http.post(url, headers=api.auth("admin"))
        assert r.status_code == 422, r.text
    r = await api.http.delete("/api/v1/outbox/dead-letters/99999999", headers=api.auth("admin"))
    assert r.status_code == 404
