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
from click.testing import CliRunner, Result
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.cli import main
from bridge.lifecycle.states import move
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.plant.model_variants import write_variants
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.registry import RegistryRepository
from bridge.types import Quality

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
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
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
                repo.transition,
                "pump-health",
                "3",
                move("3", "active", "activate"),
                "other-process",
            )
            # The registry is made to say what serves: "3" refused, "2" active again.
            await wait_until(
                lambda: (
                    {r.version: r.state for r in repo.list("pump-health")}
                    == {"1": "retired", "2": "active", "3": "refused"}
                ),
                10,
                what="refusal recorded",
            )
            refuse = next(e for e in repo.events("pump-health") if e.action == "refuse")
            assert "sha256" in refuse.detail["reason"] and refuse.detail["restored"] == "2"
        finally:
            store.dispose()
        runner = g.runners[0]
        served = len(g.fanout.latest)
        await asyncio.sleep(1.0)  # several ticks after the refusal
        assert _versions(g) == {"2"} and len(g.fanout.latest) == served
        assert runner.deployment.active.version == "2"

        # Activating "1" switches back while predictions keep flowing. Rollback is one call:
        # it goes to the version active before "1", i.e. "2" (the refused "3" never served).
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "1"})
        assert r.status_code == 200, r.text
        await wait_until(lambda: _versions(g) == {"1"}, 15, what="v1 serving again")
        r = await http.post("/api/v1/models/pump-health/rollback")
        assert r.status_code == 200 and r.json()["version"] == "2", r.text
        await wait_until(lambda: _versions(g) == {"2"}, 15, what="v2 serving again")
        await asyncio.sleep(0.6)

    # No gap: every asset's sequence is 1..n without a hole, across all the switches.
    store = open_store(f"sqlite:///{running.db}")
    try:
        from sqlalchemy import select

        from bridge.store.tables import PredictionRow

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


def _cli(*args: str) -> Result:
    """``bridge models ...`` as another process would run it (here in a worker thread)."""
    return CliRunner().invoke(main, ["models", *args])


async def test_registry_refuses_unfitting_versions_and_says_what_serves(
    running: Running,
) -> None:
    g = running.gateway
    await wait_until(lambda: _versions(g) == {"1"}, 30, what="v1 predictions")
    url = f"sqlite:///{running.db}"
    models_dir = str(running.models["five_features"].parent)
    why = "expects 5 values per row, the mapping builds 7 features"
    headers = {"X-API-Key": running.key}
    async with httpx.AsyncClient(base_url=running.api, headers=headers, timeout=10) as http:
        # The gateway's REST API knows the mapping: a model with 5 inputs is refused at once.
        r = await http.post(
            "/api/v1/models/pump-health/versions",
            json={"version": "3", "path": str(running.models["five_features"])},
        )
        assert r.status_code == 422 and why in r.json()["detail"], r.text

        # `--store` knows no mapping: registration passes; starting it over REST does not.
        out = await asyncio.to_thread(
            _cli, "register", str(running.models["five_features"]), "--name", "pump-health",
            "--version", "3", "--store", url, "--models-dir", models_dir,
        )  # fmt: skip
        assert out.exit_code == 0, out.stderr
        for verb, body in (
            ("activate", {"version": "3"}),
            ("shadow", {"version": "3"}),
            ("canary", {"version": "3", "share": 50}),
        ):
            r = await http.post(f"/api/v1/models/pump-health/{verb}", json=body)
            assert r.status_code == 422 and why in r.json()["detail"], (verb, r.text)

        # Activated where nothing can check it: the gateway refuses to load it, keeps "1" and
        # makes the registry say so.
        out = await asyncio.to_thread(_cli, "activate", "pump-health", "3", "--store", url)
        assert out.exit_code == 0, out.stderr

        async def registry_says_v1() -> bool:
            r = await http.get("/api/v1/models/pump-health/versions")
            return {v["version"]: v["state"] for v in r.json()} == {
                "1": "active",
                "3": "refused",
            }

        await wait_until(registry_says_v1, 10, what="v3 refused and v1 active in the registry")
        r = await http.get("/api/v1/models/pump-health/versions/3")
        assert r.json()["state"] == "refused" and why in r.json()["refusal"], r.text
        out = await asyncio.to_thread(_cli, "list", "--store", url)
        assert [line.split("\t")[1:3] for line in out.stdout.splitlines()] == [
            ["1", "active"],
            ["3", "refused"],
        ]
        r = await http.get("/api/v1/health")
        model = next(c for c in r.json()["components"] if c["name"] == "model:pump-health")
        assert model["state"] == "degraded" and model["counters"]["refused_versions"] == 1
        assert "registry version 3 (active) refused, 1 serves" in model["detail"], model
        assert why in model["detail"]
        assert _versions(g) == {"1"}

        # A model that fits but answers NaN for calm pumps: those predictions are Bad with the
        # reason, never a Good null, and the gateway goes on.
        r = await http.post(
            "/api/v1/models/pump-health/versions",
            json={"version": "4", "path": str(running.models["nan_when_calm"])},
        )
        assert r.status_code == 201, r.text
        r = await http.post("/api/v1/models/pump-health/activate", json={"version": "4"})
        assert r.status_code == 200, r.text

        def calm_pumps_bad() -> bool:
            latest = [g.fanout.latest.get((f"pump-{i:02d}", "pump-health")) for i in (1, 2)]
            return all(p is not None and p.version == "4" for p in latest)

        await wait_until(calm_pumps_bad, 15, what="v4 predictions")
        before = {k: p.seq for k, p in g.fanout.latest.items()}
        await wait_until(
            lambda: all(p.seq > before[k] + 2 for k, p in g.fanout.latest.items()),
            10,
            what="ticks go on",
        )
        for i in (1, 2):
            p = g.fanout.latest[(f"pump-{i:02d}", "pump-health")]
            assert (p.quality, p.value, p.score) == (Quality.BAD, None, None), p
            assert "not a finite number" in p.reason
