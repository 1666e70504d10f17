"""Cost of API-key authentication per request, in process (httpx ASGI transport, SQLite store):
the same cheap read endpoint (`/api/v1/models`) with a valid key vs `/api/v1/health` (no key),
and the alert list (one page of 100 from 10,000 alerts).

    python -m bench.api_auth [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.common import write_result
from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.config.spec import ApiSettings
from bridge.logging import configure_logging
from bridge.store import open_store
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import ComponentHealth, Prediction


class View:
    gateway_id = "bench"

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


async def _rate(http: httpx.AsyncClient, path: str, n: int, headers: dict[str, str]) -> float:
    """Requests/s over ``n`` sequential requests (median of 3 runs)."""
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            r = await http.get(path, headers=headers)
            assert r.status_code == 200, r.text
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            _, key = ApiKeyRepository(store).create("bench", Scope.READ)
            now = time.time()
            AlertRepository(store).add_many(
                [
                    NewAlert(str(uuid.uuid4()), f"p{i % 2000}", "m", "fault", "ok", 0.9, now - i)
                    for i in range(10000)
                ]
            )
            # What a key costs, not what the per-key budget allows: the budget is lifted.
            unlimited = ApiSettings(rate_limit_per_s=1e9, rate_burst=10**9)
            app = create_app(ApiServices.from_store(View(), store, unlimited))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                auth = {"Authorization": f"Bearer {key}"}
                health = await _rate(http, "/api/v1/health", n, {})
                models = await _rate(http, "/api/v1/models", n, auth)
                alerts = await _rate(http, "/api/v1/alerts?limit=100", max(1, n // 10), auth)
        finally:
            store.dispose()
    figures = {
        "requests": n,
        "health_no_key_req_s": round(health, 1),
        "models_with_key_req_s": round(models, 1),
        "auth_overhead_ms": round(1000 * (1 / models - 1 / health), 3),
        "alerts_page_100_of_10000_req_s": round(alerts, 1),
    }
    for name, value in figures.items():
        print(f"{name:>32}: {value}")
    print(f"written to {write_result('api_auth', figures)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    configure_logging("warning", False)
    asyncio.run(main(args.requests))
