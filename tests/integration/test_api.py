"""The REST API through httpx's ASGI transport, on a real view and a real SQLite repository."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.api import ApiServices, GatewayView, ModelInfo, TagState, create_app
from bridge.auth import Scope
from bridge.store import PredictionRepository, Store, open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import ComponentHealth, InputSnapshot, Prediction, Quality

T0 = 1714564800.0  # 2024-05-01T12:00:00Z


def pred(asset: str, seq: int, ts: float, value: str | float | None = "ok") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="12" * 32,
        value=value,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.2,
        inputs=(InputSnapshot(f"{asset}.temp", 40.5, Quality.UNCERTAIN, ts - 1),),
    )


@dataclass
class FakeGateway:
    """A real GatewayView filled with plain values (the runtime's one reads live state)."""

    gateway_id: str = "gw-test"
    tags: list[TagState] = field(default_factory=list)
    latest: list[Prediction] = field(default_factory=list)
    model_infos: list[ModelInfo] = field(default_factory=list)
    components: list[ComponentHealth] = field(default_factory=list)
    start: float = field(default_factory=lambda: time.time() - 60)

    def tag_states(self) -> Sequence[TagState]:
        return self.tags

    def latest_predictions(self) -> Sequence[Prediction]:
        return self.latest

    def models(self) -> Sequence[ModelInfo]:
        return self.model_infos

    def health(self) -> Sequence[ComponentHealth]:
        return self.components

    def started_at(self) -> float:
        return self.start


def tag(asset: str, name: str, value: Any, quality: Quality, source_time: float | None) -> TagState:
    return TagState(
        tag=f"{asset}.{name}",
        asset=asset,
        name=name,
        source="plc1",
        value=value,
        unit="degC" if name == "temp" else "",
        quality=quality,
        source_time=source_time,
        server_time=None,
        received_time=source_time,
        reason="" if quality is Quality.GOOD else "comm lost",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def gateway() -> FakeGateway:
    now = time.time()
    return FakeGateway(
        tags=[
            tag("p1", "temp", 40.5, Quality.GOOD, now - 2),
            tag("p1", "running", True, Quality.GOOD, now - 1),
            tag("p2", "temp", None, Quality.BAD, None),
        ],
        latest=[pred("p2", 9, T0 + 9, value=3.25), pred("p1", 8, T0 + 8)],
        model_infos=[
            ModelInfo(
                "health", "1.0.0", "12" * 32, "models/health.onnx", T0, ("p1", "p2"), ("temp.mean",)
            )
        ],
        components=[
            ComponentHealth("plc1", "ok", counters={"polls": 10}),
            ComponentHealth("mes", "ok", counters={"sent": 3}),
        ],
    )


@pytest.fixture
async def client(gateway: FakeGateway, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    repo = PredictionRepository(store)
    repo.add_many([pred(a, i, T0 + i) for i in range(20) for a in ("p1", "p2")])
    view: GatewayView = gateway
    app = create_app(ApiServices.from_store(view, store))
    _, key = ApiKeyRepository(store).create("test", Scope.READ)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bridge.test", headers=headers
    ) as c:
        yield c


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def test_health_ok_degraded_down(client: httpx.AsyncClient, gateway: FakeGateway) -> None:
    r = await client.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["gateway_id"] == "gw-test"
    assert 59 <= body["uptime_s"] < 120
    assert iso(body["started_at"]) == pytest.approx(gateway.start, abs=1e-3)
    assert body["components"][0] == {
        "name": "plc1",
        "state": "ok",
        "detail": "",
        "counters": {"polls": 10},
    }

    gateway.components[1] = ComponentHealth("mes", "degraded", "retrying: HTTP 503")
    r = await client.get("/api/v1/health")
    assert (r.status_code, r.json()["status"]) == (200, "degraded")
    assert r.json()["components"][1]["detail"] == "retrying: HTTP 503"

    gateway.components = [ComponentHealth("plc1", "down"), ComponentHealth("mes", "down")]
    r = await client.get("/api/v1/health")
    assert (r.status_code, r.json()["status"]) == (503, "down")


async def test_tags_with_quality_age_and_asset_filter(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/tags")
    assert r.status_code == 200
    tags = {t["tag"]: t for t in r.json()}
    assert set(tags) == {"p1.temp", "p1.running", "p2.temp"}
    assert tags["p1.temp"]["value"] == 40.5
    assert tags["p1.temp"]["unit"] == "degC"
    assert tags["p1.temp"]["quality"] == "Good"
    assert 1.5 <= tags["p1.temp"]["age_s"] < 30
    assert tags["p1.running"]["value"] is True
    assert tags["p2.temp"]["quality"] == "Bad"
    assert tags["p2.temp"]["reason"] == "comm lost"
    assert tags["p2.temp"]["age_s"] is None

    r = await client.get("/api/v1/tags", params={"asset": "p2"})
    assert [t["tag"] for t in r.json()] == ["p2.temp"]


async def test_latest_predictions_from_view(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/predictions/latest")
    assert r.status_code == 200
    body = r.json()
    assert [(p["asset"], p["seq"]) for p in body] == [("p1", 8), ("p2", 9)]
    assert body[0]["timestamp"].startswith("2024-05-01T12:00:08")
    assert iso(body[0]["timestamp"]) == T0 + 8
    assert body[1]["value"] == 3.25
    assert body[0]["inputs"][0] == {
        "tag": "p1.temp",
        "value": 40.5,
        "quality": "Uncertain",
        "source_time": body[0]["inputs"][0]["source_time"],
    }
    assert iso(body[0]["inputs"][0]["source_time"]) == T0 + 7
    only = await client.get("/api/v1/predictions/latest", params={"asset": "p2"})
    assert [p["asset"] for p in only.json()] == ["p2"]


async def test_latest_predictions_follow_every_change_of_the_view(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    # The body is encoded once per change (bridge/api/latest.py): each kind of change must show.
    first = await client.get("/api/v1/predictions/latest")
    again = await client.get("/api/v1/predictions/latest")
    assert first.content == again.content
    assert first.headers["content-type"] == "application/json"
    gateway.latest[1] = pred("p1", 10, T0 + 10, value="worn")  # replaced in place
    replaced = (await client.get("/api/v1/predictions/latest")).json()
    assert [(p["asset"], p["seq"], p["value"]) for p in replaced] == [
        ("p1", 10, "worn"),
        ("p2", 9, 3.25),
    ]
    gateway.latest.append(pred("p0", 1, T0 + 1))  # one more asset
    grown = (await client.get("/api/v1/predictions/latest")).json()
    assert [p["asset"] for p in grown] == ["p0", "p1", "p2"]
    gateway.latest = []
    assert (await client.get("/api/v1/predictions/latest")).json() == []


async def test_prediction_history_filters(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/predictions")
    assert r.status_code == 200
    assert len(r.json()) == 40

    r = await client.get(
        "/api/v1/predictions",
        params={"asset": "p1", "since": "2024-05-01T12:00:05Z", "until": str(T0 + 7)},
    )
    assert [p["seq"] for p in r.json()] == [7, 6, 5]
    assert {p["asset"] for p in r.json()} == {"p1"}

    r = await client.get("/api/v1/predictions", params={"limit": 3, "asset": "p2"})
    assert [p["seq"] for p in r.json()] == [19, 18, 17]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-99-01"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
async def test_bad_query_is_422_with_a_message(
    client: httpx.AsyncClient, params: dict[str, str], fragment: str
) -> None:
    r = await client.get("/api/v1/predictions", params=params)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert fragment in detail


async def test_since_after_until_is_an_empty_range(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/predictions", params={"since": str(T0 + 10), "until": str(T0)})
    assert (r.status_code, r.json()) == (200, [])


async def test_models(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/models")
    assert r.status_code == 200
    [model] = r.json()
    assert model["name"] == "health"
    assert model["assets"] == ["p1", "p2"]
    assert model["inputs"] == ["temp.mean"]
    assert iso(model["loaded_at"]) == T0


async def test_store_failure_is_503_not_500(client: httpx.AsyncClient, store: Store) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE predictions")
    r = await client.get("/api/v1/predictions")
    assert r.status_code == 503
    assert "store" in r.json()["detail"]


async def test_openapi_lists_every_endpoint_with_response_schemas(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    expected = {
        "/api/v1/health": "HealthOut",
        "/api/v1/tags": "TagOut",
        "/api/v1/predictions/latest": "PredictionOut",
        "/api/v1/predictions": "PredictionOut",
        "/api/v1/models": "ModelOut",
    }
    assert set(expected) <= set(spec["paths"])
    for path, schema_name in expected.items():
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert schema_name in str(ok["schema"]), path
        assert schema_name in spec["components"]["schemas"]
    history = spec["paths"]["/api/v1/predictions"]["get"]
    assert "ErrorOut" in str(history["responses"]["422"])
    assert {p["name"] for p in history["parameters"]} == {
        "asset",
        "since",
        "until",
        "limit",
        "cursor",
    }
    docs = await client.get("/docs")
    assert docs.status_code == 200
