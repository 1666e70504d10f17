"""Model versions switched while the gateway runs against the plant simulator: through the REST
API, with no gap in any asset's prediction sequence; a tampered file is refused and the old
version keeps serving; the HMI server's Models folder shows the active version."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asyncua import Client, ua
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, run_gateway
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.registry import RegistryRepository
from bridge.types import Quality
from simulators.plant.model_variants import write_variants
from simulators.plant.server import PlantSimulator

PUMPS = 3
MAPPING = """
version: 1
gateway:
  id: switch
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  models: {{poll_s: 0.3}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
templates:
  pump:
    tags:
      vibration: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"}}
      bearing_temperature:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
      speed: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"}}
assets:
{assets}
models:
  pump-health:
    file: {model}
    version: "1"
    template: pump
    period_s: 0.2
    window_s: 5
    features:
      - {{tag: vibration, stat: mean}}
      - {{tag: vibration, stat: std}}
      - {{tag: vibration, stat: max}}
      - {{tag: bearing_temperature, stat: mean}}
      - {{tag: bearing_temperature, stat: slope}}
      - {{tag: discharge_pressure, stat: mean}}
      - {{tag: speed, stat: mean}}
outputs:
  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{hmi}", allow_anonymous: true,
        security_policies: ["None"]}}
"""


@dataclass
class Running:
    gateway: Gateway
    api: str
    hmi: str
    db: Path
    models: dict[str, Path]
    key: str


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    models = write_variants(tmp_path / "models")
    ports = {k: free_port() for k in ("api", "plant", "hmi")}
    assets = "\n".join(
        f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, PUMPS + 1)
    )
    db = tmp_path / "bridge.db"
    text = MAPPING.format(store=db, assets=assets, model=models["pump_health_v1"], **ports)
    (tmp_path / "mapping.yaml").write_text(text)
    prepared = prepare(tmp_path / "mapping.yaml")
    store = open_store(f"sqlite:///{db}")
    key = ApiKeyRepository(store).create("lifecycle", Scope.ADMIN)[1]
    store.dispose()
    plant = PlantSimulator(port=ports["plant"], pumps=PUMPS, update_interval_s=0.1)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await plant.start()
        stack.push_async_callback(plant.stop)
        started: asyncio.Queue[Gateway] = asyncio.Queue(1)
        task = asyncio.create_task(run_gateway(prepared, stop, started))
        try:
            gateway = await asyncio.wait_for(started.get(), 20)
            yield Running(
                gateway,
                f"http://127.0.0.1:{ports['api']}",
                f"opc.tcp://127.0.0.1:{ports['hmi']}",
                db,
                models,
                key,
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def _versions(g: Gateway) -> set[str]:
    return {p.version for p in g.fanout.latest.values() if p.quality is Quality.GOOD}


async def _active_on_hmi(url: str) -> str:
    async with Client(url, timeout=5) as client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        value = await client.get_node(
            ua.NodeId("Models.pump-health.ActiveVersion", ns)
        ).read_value()
        return str(value)


async def test_activate_rollback_and_tampered_file_without_gap(
    running: Running, tmp_path: Path
) -> None:
    g = running.gateway
    await wait_until(lambda: _versions(g) == {"1"}, 30, what="v1 predictions")
    headers = {"X-API-Key": running.key}
    async with httpx.AsyncClient(base_url=running.api, headers=headers, timeout=10) as http:
        # The mapping's model was seeded into the registry as the active version "1".
        r = await http.get("/api/v1/models/pump-health/versions")
        assert r.status_code == 200, r.text
        assert [(v["version"], v["state"]) for v in r.json()] == [("1", "active")]

        r = await http.post(
            "/api/v1/models/pump-health/versions",
            json={"version": "2", "path": str(running.models["pump_health_v2"])},
        )
        assert r.status_code == 201, r.text
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "2"})
        assert r.status_code == 200, r.text
        await wait_until(lambda: _versions(g) == {"2"}, 15, what="v2 serving")

        async def hmi_shows_v2() -> bool:
            return await _active_on_hmi(running.hmi) == "2"

        await wait_until(hmi_shows_v2, 10, what="HMI Models folder shows v2")

        # Registration reads only files in the models directory (the mapping's `models`).
        r = await http.post(
            "/api/v1/models/pump-health/versions", json={"version": "9", "path": "/etc/passwd"}
        )
        assert r.status_code == 422 and "gateway.models.directory" in r.text, r.text

        # A version whose file is changed after registration is refused at activation ...
        tampered = tmp_path / "models" / "v3.onnx"
        shutil.copy(running.models["always_fault"], tampered)
        r = await http.post(
            "/api/v1/models/pump-health/versions", json={"version": "3", "path": str(tampered)}
        )
        assert r.status_code == 201, r.text
        data = bytearray(tampered.read_bytes())
        data[-5] ^= 0xFF
        tampered.write_bytes(bytes(data))
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "3"})
        assert r.status_code == 422 and "sha256" in r.json()["detail"], r.text

        # ... and by the runtime when another process activates it anyway.
        store = open_store(f"sqlite:///{running.db}")
        repo = RegistryRepository(store)
        try:
            await asyncio.to_thread(
                repo.set_state, "pump-health", "3", "active", "other-process", "activate"
            )
            await wait_until(
                lambda: any(e.action == "load-refused" for e in repo.events("pump-health")),
                10,
                what="refusal recorded",
            )
        finally:
            store.dispose()
        runner = g.runners[0]
        served = len(g.fanout.latest)
        await asyncio.sleep(1.0)  # several ticks after the refusal
        assert _versions(g) == {"2"} and len(g.fanout.latest) == served
        assert runner.deployment.active.version == "2"

        # Activating "1" switches back while predictions keep flowing. Rollback is one call:
        # it goes to the version active before, here the tampered "3", so it is refused too.
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "1"})
        assert r.status_code == 200, r.text
        await wait_until(lambda: _versions(g) == {"1"}, 15, what="v1 serving again")
        r = await http.post("/api/v1/models/pump-health/rollback")
        assert r.status_code == 422 and "sha256" in r.json()["detail"], r.text
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "2"})
        assert r.status_code == 200, r.text
        await wait_until(lambda: _versions(g) == {"2"}, 15, what="v2 serving again")
        await asyncio.sleep(0.6)

    # No gap: every asset's sequence is 1..n without a hole, across all the switches.
    store = open_store(f"sqlite:///{running.db}")
    try:
        from sqlalchemy import select

        from bridge.store.models import PredictionRow

        with store.sessions() as s:
            rows = s.execute(
                select(PredictionRow.asset, PredictionRow.seq, PredictionRow.version).order_by(
                    PredictionRow.asset, PredictionRow.seq
                )
            ).all()
    finally:
        store.dispose()
    for i in range(1, PUMPS + 1):
        asset = f"pump-{i:02d}"
        seqs = [seq for a, seq, _ in rows if a == asset]
        assert seqs == list(range(1, len(seqs) + 1)), f"{asset} has a gap"
        versions = [v for a, _, v in rows if a == asset]
        changes = [v for k, v in enumerate(versions) if k == 0 or versions[k - 1] != v]
        assert changes == ["1", "2", "1", "2"], changes
