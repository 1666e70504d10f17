"""The whole gateway on real sockets: plant (OPC UA) + PLC (Modbus) -> bridge -> its OPC UA
server, the MES receiver and the REST API; then the plant server restarts and values flow again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asyncua import Client, ua
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes.server import MesReceiver
from bridge.simulators.plant.physics import FaultPlan
from bridge.simulators.plant.server import PlantSimulator
from bridge.simulators.plc.register_map import expected_values
from bridge.simulators.plc.server import PlcSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import Quality

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
PUMPS = 4
FAULTY = 3

MAPPING = """
version: 1
gateway:
  id: e2e
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  default_max_age_s: 3
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 200}}
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
  line:
    tags:
      header_pressure:
        source: plc
        address: {{table: holding, address: 0, type: float32, word_order: CDAB}}
      flow_rate: {{source: plc, address: {{table: holding, address: 4, type: uint16}}, scale: 0.1}}
      pump_starts: {{source: plc, address: {{table: holding, address: 6, type: uint32}}}}
      energy:
        source: plc
        address: {{table: holding, address: 8, type: int32, word_order: CDAB}}
      line_permissive: {{source: plc, address: {{table: coil, address: 0}}}}
models:
  pump-health:
    file: {model}
    version: 1.0.0
    template: pump
    period_s: 0.5
    window_s: 10
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
  mes: {{kind: mes-rest, url: "http://127.0.0.1:{mes}/api/v1/predictions"}}
"""


@dataclass
class Plant:
    port: int
    sim: PlantSimulator

    def make(self) -> PlantSimulator:
        return PlantSimulator(
            port=self.port,
            pumps=PUMPS,
            faulty=(FAULTY,),
            update_interval_s=0.1,
            fault=FaultPlan(start_s=1.0, ramp_s=4.0),
        )


@dataclass
class Running:
    gateway: Gateway
    plant: Plant
    mes: MesReceiver
    api: str
    hmi: str


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    ports = {k: free_port() for k in ("api", "plant", "plc", "hmi", "mes")}
    assets = "\n".join(
        f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, PUMPS + 1)
    )
    text = MAPPING.format(store=tmp_path / "bridge.db", assets=assets, model=MODEL, **ports)
    (tmp_path / "mapping.yaml").write_text(text)
    prepared = prepare(tmp_path / "mapping.yaml")

    plant = Plant(ports["plant"], None)  # type: ignore[arg-type]
    plant.sim = plant.make()
    plc = PlcSimulator(port=ports["plc"], update_interval_s=3600)  # frozen values
    mes = MesReceiver(port=ports["mes"])
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        for sim in (mes, plc, plant.sim):
            await sim.start()
        await plc.apply(0.0)  # freeze the PLC at t=0 so values can be compared exactly
        stack.push_async_callback(mes.stop)
        stack.push_async_callback(plc.stop)
        stack.push_async_callback(lambda: plant.sim.stop())
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
            yield Running(
                gateway,
                plant,
                mes,
                f"http://127.0.0.1:{ports['api']}",
                f"opc.tcp://127.0.0.1:{ports['hmi']}",
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def _latest(g: Gateway) -> dict[str, object]:
    return {p.asset: p.value for p in g.fanout.latest.values() if p.quality is Quality.GOOD}


async def _read_hmi(url: str, asset: str) -> tuple[ua.DataValue, str, str]:
    async with Client(url, timeout=5) as client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        base = f"Predictions.{asset}.pump-health"
        value = await client.get_node(ua.NodeId(f"{base}.Value", ns)).read_data_value(
            raise_on_bad_status=False
        )
        version = await client.get_node(ua.NodeId(f"{base}.ModelVersion", ns)).read_value()
        quality = await client.get_node(ua.NodeId(f"{base}.Quality", ns)).read_value()
        return value, version, quality


def _new_key(db: Path) -> str:
    store = open_store(f"sqlite:///{db}")
    try:
        return ApiKeyRepository(store).create("e2e", Scope.READ)[1]
    finally:
        store.dispose()


@pytest.mark.serial
async def test_plant_to_hmi_mes_and_api_then_plant_restart(
    running: Running, tmp_path: Path
) -> None:
    g = running.gateway
    faulty = f"pump-{FAULTY:02d}"
    healthy = [f"pump-{i:02d}" for i in range(1, PUMPS + 1) if i != FAULTY]

    # The faulty pump is recognised, the others stay healthy.
    await wait_until(
        lambda: _latest(g).get(faulty) == "bearing_fault", 30, what="pump-03 labelled bearing_fault"
    )
    latest = _latest(g)
    assert all(latest.get(a) == "healthy" for a in healthy), latest

    # An HMI client reads the same on the gateway's OPC UA server.
    value, version, quality = await _read_hmi(running.hmi, faulty)
    assert value.Value.Value == "bearing_fault"
    assert value.StatusCode.is_good()
    assert (version, quality) == ("1.0.0", "Good")
    value, _, _ = await _read_hmi(running.hmi, healthy[0])
    assert value.Value.Value == "healthy"

    # Modbus tags carry the PLC's values, decoded in their word orders and scaled.
    want = expected_values(0.0)
    tags = {t.tag: t for t in g.table.snapshot("line")}
    await wait_until(
        lambda: all(t.quality is Quality.GOOD for t in g.table.snapshot("line")),
        10,
        what="PLC tags Good",
    )
    tags = {t.tag: t for t in g.table.snapshot("line")}
    assert tags["line.header_pressure"].value == pytest.approx(want["HeaderPressure"])
    assert tags["line.flow_rate"].value == pytest.approx(0.1 * float(want["FlowRate"]))
    assert tags["line.pump_starts"].value == want["PumpStarts"]
    assert tags["line.energy"].value == want["Energy"]
    assert tags["line.line_permissive"].value is True

    # The MES receiver got the predictions, each keyed by its prediction id, none twice.
    await wait_until(
        lambda: any(
            c.body.get("asset") == faulty and c.body.get("value") == "bearing_fault"
            for c in running.mes.calls
        ),
        10,
        what="MES call for pump-03",
    )
    assert running.mes.duplicate_count == 0
    for call in running.mes.calls[:20]:
        assert call.idempotency_key == call.body["id"]

    # The REST API serves the latest predictions, history and tags.
    key = await asyncio.to_thread(_new_key, tmp_path / "bridge.db")  # the gateway's store
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=running.api, timeout=5, headers=headers) as http:
        latest_api = (await http.get("/api/v1/predictions/latest")).json()
        by_asset = {p["asset"]: p for p in latest_api}
        assert set(by_asset) == {*healthy, faulty}
        assert by_asset[faulty]["value"] == "bearing_fault"
        history = (await http.get("/api/v1/predictions", params={"asset": faulty})).json()
        assert history and all(p["asset"] == faulty for p in history)
        tags_api = (await http.get("/api/v1/tags", params={"asset": "line"})).json()
        assert {t["tag"] for t in tags_api} == set(tags)
        health = await http.get("/api/v1/health")
        assert health.status_code == 200
        parts = {c["name"]: c for c in health.json()["components"]}
        # Backpressure and supervision are visible: nothing lost, nothing restarted.
        assert parts["store"]["counters"]["dropped"] == 0
        assert parts["store"]["counters"]["restarts"] == 0
        assert "backpressure_ms" in parts["model:pump-health"]["counters"]
        assert parts["loss-alerts"]["state"] == "ok"

    # The plant server goes away: its tags and the pump predictions go Bad.
    await running.plant.sim.stop()
    await wait_until(
        lambda: all(t.quality is Quality.BAD for t in g.table.snapshot(faulty)),
        10,
        what="plant tags Bad after the server stopped",
    )
    await wait_until(
        lambda: g.fanout.latest[(faulty, "pump-health")].quality is Quality.BAD,
        10,
        what="prediction Bad after the server stopped",
    )
    value, _, quality = await _read_hmi(running.hmi, faulty)
    assert value.StatusCode.is_bad() and quality == "Bad"

    # ... and comes back: the gateway reconnects and resubscribes by itself.
    running.plant.sim = running.plant.make()
    await running.plant.sim.start()
    await wait_until(
        lambda: all(t.quality is Quality.GOOD for t in g.table.snapshot(faulty)),
        20,
        what="plant tags Good again after restart",
    )
    await wait_until(
        lambda: g.fanout.latest[(healthy[0], "pump-health")].quality is Quality.GOOD,
        20,
        what="predictions Good again after restart",
    )
