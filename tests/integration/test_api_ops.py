"""/metrics, /livez and /readyz of the API itself (an API over a store, no gateway): no key
needed, requests counted by route template and status, and the store probe /readyz uses."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stores import pg_schema

from bridge.api import ApiServices, GatewayView, ModelInfo, TagState, create_app
from bridge.auth import Scope
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.probe import store_writable
from bridge.types import ComponentHealth, Prediction


class EmptyGateway:
    gateway_id = "ops"

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return time.time()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    view: GatewayView = EmptyGateway()
    app = create_app(ApiServices.from_store(view, store))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as c:
        yield c


def requests(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bridge_api_requests_total"
    }


async def test_scrape_counts_requests_by_route_template_and_status(
    client: httpx.AsyncClient, store: Store
) -> None:
    _, key = ApiKeyRepository(store).create("ops", Scope.READ)
    for _ in range(3):
        assert (await client.get("/api/v1/models", headers={"X-API-Key": key})).is_success
    assert (await client.get("/api/v1/models")).status_code == 401
    for n in (11, 12):
        assert (await client.get(f"/api/v1/predictions/{n}")).status_code == 401
    assert (await client.get("/no/such/path/1")).status_code in (401, 404)
    assert (await client.delete("/livez")).status_code == 405

    scrape = await client.get("/metrics")  # no key needed
    assert scrape.status_code == 200
    counted = requests(scrape.text)
    assert counted[("/api/v1/models", "GET", "200")] == 3
    assert counted[("/api/v1/models", "GET", "401")] == 1
    # One series for every prediction id: the template, never the raw path.
    assert counted[("/api/v1/predictions/{prediction_id}", "GET", "401")] == 2
    assert not any("11" in route or "/no/such" in route for route, _, _ in counted)
    assert sum(n for (route, _, _), n in counted.items() if route == "unmatched") == 1
    assert counted[("/livez", "DELETE", "405")] == 1
    assert "_created" not in scrape.text


async def test_probes_answer_without_a_key(client: httpx.AsyncClient) -> None:
    live = await client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    # Not operations of the documented API: kept out of the OpenAPI document.
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/metrics", "/livez", "/readyz"} & set(paths)


def test_sqlite_store_locked_by_another_writer_takes_no_write(store: Store, tmp_path: Path) -> None:
    assert store_writable(store, 0.2) == ""
    with contextlib.closing(sqlite3.connect(tmp_path / "api.db", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        problem = store_writable(store, 0.2)
        waited = time.monotonic() - started
        other.execute("ROLLBACK")
    assert "takes no write" in problem and "locked" in problem
    assert waited < 5  # the probe's own timeout, not SQLite's busy timeout of the store
    assert store_writable(store, 0.2) == ""


def test_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'gone.db'}")
    try:
        (tmp_path / "gone.db").unlink()
        problem = store_writable(s, 0.2)
    finally:
        s.dispose()
    assert "gone.db" in problem and "missing" in problem
    assert not (tmp_path / "gone.db").exists()


def test_postgresql_store_takes_writes() -> None:
    with pg_schema("bridge_probe") as schema:
        s = open_store("postgresql+psycopg://root@127.0.0.1:5432/test", schema=schema)
        try:
            assert store_writable(s, 1.0) == ""
        finally:
            s.dispose()
