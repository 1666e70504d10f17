"""One HTTP server for the REST load test, run as its own process so wrk measures it alone:
``bridge`` serves the gateway's real FastAPI app over a view holding N latest predictions;
``bare`` serves a one-route FastAPI app returning the same JSON from a list of dicts. Both go
through the same uvicorn setup (``ApiServer``), so only the application code differs.

    python -m bench.api_server {bridge,bare} PORT [--assets 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from bridge.api import ApiServices, create_app
from bridge.api.schemas import PredictionOut
from bridge.api.view import ModelInfo, TagState
from bridge.auth.scopes import Scope
from bridge.config.spec import ApiSettings
from bridge.runtime.apiserver import ApiServer
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import open_store
from bridge.types import ComponentHealth, InputSnapshot, Prediction, Quality

INPUTS = ("vibration", "bearing_temperature", "discharge_pressure", "speed")


def predictions(assets: int) -> list[Prediction]:
    now = 1_764_000_000.0  # fixed, so both servers answer byte-identical JSON
    out = []
    for i in range(1, assets + 1):
        asset = f"pump-{i:05d}"
        inputs = tuple(
            InputSnapshot(f"{asset}.{t}", 10.0 + i % 7 + k, Quality.GOOD, now - 0.2)
            for k, t in enumerate(INPUTS)
        )
        out.append(
            Prediction(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, asset)),
                seq=i,
                asset=asset,
                model="pump-health",
                version="1.0.0",
                sha256="f" * 64,
                value="healthy" if i % 10 else "bearing_fault",
                score=0.5 + (i % 50) / 100,
                quality=Quality.GOOD,
                timestamp=now,
                input_age_s=0.2,
                inputs=inputs,
            )
        )
    return out


@dataclass
class StaticView:
    gateway_id: str
    latest: list[Prediction]

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return self.latest

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return 0.0


def bare_app(data: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/predictions/latest")
    async def latest() -> list[dict[str, Any]]:
        return data

    return app


async def serve(mode: str, port: int, assets: int) -> None:
    latest = predictions(assets)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/api.db")
        key = ""
        if mode == "bridge":
            # One key under load: its budget is lifted, so wrk measures answers, not 429s.
            unlimited = ApiSettings(
                rate_limit_per_s=1e9, rate_burst=10**9, max_concurrent_per_key=10**6
            )
            app = create_app(ApiServices.from_store(StaticView("bench", latest), store, unlimited))
            _, key = ApiKeyRepository(store).create("bench", Scope.READ)
        else:
            ordered = sorted(latest, key=lambda p: (p.asset, p.model))
            app = bare_app([PredictionOut.of(p).model_dump(mode="json") for p in ordered])
        server = ApiServer(app, "127.0.0.1", port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        print(f"ready {key}".strip(), flush=True)
        await stop.wait()
        await server.stop()
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("bridge", "bare"))
    parser.add_argument("port", type=int)
    parser.add_argument("--assets", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(serve(args.mode, args.port, args.assets))


if __name__ == "__main__":
    main()
