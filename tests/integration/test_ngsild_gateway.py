"""The whole gateway with an ``ngsi-ld`` output: the simulated plant (OPC UA) -> the demo's
pumps and pump-health model -> entities on an NGSI-LD broker (tests/ngsild_broker.py), from a
mapping file as `bridge run` loads it, the broker's token taken from the environment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ngsild_broker import NgsiLdBroker
from ngsild_checks import check_request
from support import free_port, wait_until

from bridge.connectors import ngsild
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.plant.server import PlantSimulator

pytestmark = pytest.mark.timeout(120)

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
PUMPS = ("pump-01", "pump-02", "pump-03")

MAPPING = """
version: 1
gateway:
  id: twin-gw
  store: sqlite:///{store}
  api: {{enabled: false}}
  default_max_age_s: 3
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
templates:
  pump:
    tags:
      vibration:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"
        unit: mm/s
      bearing_temperature:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
        unit: degC
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
        unit: bar
      speed:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"
        unit: rpm
assets:
  pump-01: {{template: pump, vars: {{n: "01"}}}}
  pump-02: {{template: pump, vars: {{n: "02"}}}}
  pump-03: {{template: pump, vars: {{n: "03"}}}}
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
  twin:
    kind: ngsi-ld
    url: {broker}
    tenant: plant1
    headers: {{Authorization: "Bearer ${{TWIN_BROKER_TOKEN}}"}}
    enterprise: acme
    site: dallas
    area: pumping
    line: line-1
    # The type from each asset's template (the gateway tells the destination), one asset's
    # own over it.
    template_types: {{pump: CentrifugalPump}}
    asset_types: {{pump-03: BoosterPump}}
    batch_size: 8
    tag_refresh_s: 0.2
"""


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Gateway, NgsiLdBroker]]:
    # The entry point names the connector once the package is installed; a test run from the
    # source tree registers it here as well (registering twice changes nothing).
    ngsild.register()
    monkeypatch.setenv("TWIN_BROKER_TOKEN", "t0ken")
    plant_port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(NgsiLdBroker())
        text = MAPPING.format(
            store=tmp_path / "bridge.db", plant=plant_port, model=MODEL, broker=broker.url
        )
        (tmp_path / "mapping.yaml").write_text(text)
        plant = PlantSimulator(port=plant_port, pumps=len(PUMPS), update_interval_s=0.1)
        await plant.start()
        stack.push_async_callback(plant.stop)
        gateway = await build_gateway(prepare(tmp_path / "mapping.yaml"))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 30)
            yield gateway, broker
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def _ids() -> dict[str, str]:
    return {
        "pump-01": "urn:ngsi-ld:CentrifugalPump:pump-01",
        "pump-02": "urn:ngsi-ld:CentrifugalPump:pump-02",
        "pump-03": "urn:ngsi-ld:BoosterPump:pump-03",
    }


async def test_the_gateway_keeps_an_entity_per_pump_on_the_broker(
    running: tuple[Gateway, NgsiLdBroker],
) -> None:
    _, broker = running
    state = broker.tenant("plant1")
    ids = _ids()

    def complete() -> bool:
        return all(
            "pumpHealthPrediction" in state.get(i, {}) and "vibration" in state.get(i, {})
            for i in ids.values()
        )

    await wait_until(complete, 60, what="an entity with a prediction and tags for every pump")
    first = {i: state[i]["pumpHealthPrediction"]["observedAt"] for i in ids.values()}
    await wait_until(
        lambda: all(state[i]["pumpHealthPrediction"]["observedAt"] > t for i, t in first.items()),
        30,
        what="the entities updated by later predictions",
    )

    for asset, entity_id in ids.items():
        entity: dict[str, Any] = state[entity_id]
        assert entity["type"] == entity_id.split(":")[2]
        assert entity["isPartOf"]["object"] == "urn:ngsi-ld:Line:acme:dallas:pumping:line-1"
        pred = entity["pumpHealthPrediction"]
        assert pred["value"] in ("healthy", "bearing_fault", "cavitation", "imbalance")
        assert pred["modelVersion"]["value"] == "1.0.0" and pred["quality"]["value"] == "Good"
        units = {t: entity[t]["unitCode"] for t in ("vibration", "bearing_temperature",
                                                     "discharge_pressure", "speed")}  # fmt: skip
        assert units == {
            "vibration": "C16",
            "bearing_temperature": "CEL",
            "discharge_pressure": "BAR",
            "speed": "RPM",
        }, asset
    assert state["urn:ngsi-ld:Line:acme:dallas:pumping:line-1"]["levelName"]["value"] == "line-1"
    assert {e["type"] for e in state.values()} >= {"Enterprise", "Site", "Area", "Line"}

    for request in broker.requests:
        assert request.headers["authorization"] == "Bearer t0ken"
        assert request.headers["ngsild-tenant"] == "plant1"
        assert request.duplicate_keys == ()
        check_request(request.body)
    # Batches: the pumps' predictions of one period go in one request (levels not counted).
    per_request = [sum("pumpHealthPrediction" in e for e in r.body) for r in broker.requests]
    assert max(per_request) > 1, per_request
