"""Units through the whole gateway on real sockets: a plant OPC UA server publishes a
temperature in degF (in tenths, scaled by the mapping) -> bridge converts it to degC before the
window and the model -> an HMI client reads the prediction and its EngineeringUnits from the
gateway's OPC UA server, and the MES receiver gets the value and inputs with their units.

The model is an identity regressor (value = the last input), so the prediction is the value
the model was fed: the converted one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from insight_models import linear_regressor
from support import free_port, wait_until

from bridge import units
from bridge.connectors.opcua.convert import make_node_id
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes import MesReceiver
from bridge.types import Quality

RAW_TENTHS_F = 2120.0  # 212.0 degF = 100 degC
PREDICTIONS = "urn:bridge:predictions"

MAPPING = """
version: 1
gateway: {{id: units, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 20}}
assets:
  oven:
    tags:
      temperature: {{source: plant, address: "nsu=urn:test:plant;s=T", scale: 0.1,
                    unit: degF, convert_to: degC}}
models:
  heat:
    file: {model}
    version: "1"
    assets: [oven]
    trigger: change
    min_interval_ms: 0
    window_s: 5
    min_window_s: 0
    outputs: {{value: value, unit: degC}}
    features: [{{tag: temperature, stat: last, unit: "°C"}}]
outputs:
  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{hmi}", allow_anonymous: true,
        security_policies: ["None"]}}
  mes: {{kind: mes-rest, url: "http://127.0.0.1:{mes}/api/v1/predictions"}}
"""


@dataclass
class Rig:
    gateway: Gateway
    hmi_endpoint: str
    mes: MesReceiver


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    plant_port, hmi_port, mes_port = free_port(), free_port(), free_port()
    plant = Server()
    await plant.init()
    plant.set_endpoint(f"opc.tcp://127.0.0.1:{plant_port}")
    ns = await plant.register_namespace("urn:test:plant")
    await plant.nodes.objects.add_variable(make_node_id("T", ns), "T", RAW_TENTHS_F)
    model = linear_regressor(tmp_path / "identity.onnx", [1.0], [0.0], [1.0])
    (tmp_path / "mapping.yaml").write_text(
        MAPPING.format(
            store=tmp_path / "b.db", plant=plant_port, model=model, hmi=hmi_port, mes=mes_port
        )
    )
    prepared = prepare(tmp_path / "mapping.yaml")
    stop = asyncio.Event()
    mes = MesReceiver(port=mes_port)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(plant)
        await mes.start()
        stack.push_async_callback(mes.stop)
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 30)
            yield Rig(gateway, f"opc.tcp://127.0.0.1:{hmi_port}", mes)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def _good_values(rig: Rig) -> list[object]:
    return [p.value for p in rig.gateway.fanout.latest.values() if p.quality is Quality.GOOD]


async def test_converted_value_and_units_reach_the_hmi_and_the_mes(rig: Rig) -> None:
    await wait_until(lambda: _good_values(rig) != [], 15, what="a Good prediction")
    [value] = _good_values(rig)
    assert value == pytest.approx(100.0, abs=1e-4)  # float32 model: 212 degF -> 100 degC

    async with Client(rig.hmi_endpoint, timeout=5) as client:
        pns = await client.get_namespace_index(PREDICTIONS)
        model = client.get_node(make_node_id("Predictions.oven.heat", pns))
        value_node = await model.get_child(f"{pns}:Value")
        assert await value_node.read_value() == pytest.approx(100.0, abs=1e-4)
        eu = await (await value_node.get_child("0:EngineeringUnits")).read_value()
        assert isinstance(eu, ua.EUInformation)
        code = units.unece("degC")
        assert code is not None
        assert (eu.NamespaceUri, eu.UnitId) == (units.UNECE_NAMESPACE, code[1])
        assert eu.DisplayName.Text == "degC"
        age = await (await model.get_child(f"{pns}:InputAge")).get_child("0:EngineeringUnits")
        age_eu = await age.read_value()
        assert (age_eu.DisplayName.Text, age_eu.UnitId) == ("s", units.unece("s")[1])  # type: ignore[index]
        # A label has no unit: only the variables with one carry the property.
        score = await model.get_child(f"{pns}:Score")
        names = {(await n.read_browse_name()).Name for n in await score.get_properties()}
        assert "EngineeringUnits" not in names

    await wait_until(lambda: rig.mes.calls != [], 15, what="an MES event")
    body = rig.mes.calls[-1].body
    assert body["value"] == pytest.approx(100.0, abs=1e-4)
    assert body["unit"] == "degC"
    [temperature] = body["inputs"]
    assert temperature["tag"] == "oven.temperature"
    assert temperature["unit"] == "degC"
    assert temperature["value"] == pytest.approx(100.0, abs=1e-9)  # converted in normalize
