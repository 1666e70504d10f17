"""A `trigger: change` model in the whole gateway on real sockets: a plant OPC UA server whose
values the test writes -> bridge -> an HMI client subscribed to the gateway's prediction nodes.

A prediction follows an input change with no period to wait for (the model has none); a burst
of changes of one asset within the minimum interval is one prediction of that asset; assets
whose inputs did not change are not predicted again."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from insight_models import linear_regressor
from support import free_port, wait_until

from bridge.connectors.opcua.convert import make_node_id
from bridge.prepare import prepare
from bridge.runtime.memory import glibc_trim
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.runtime.runner import ModelRunner
from bridge.runtime.trigger import ChangeTrigger
from bridge.types import Quality

ASSETS = ("a1", "a2", "a3")
MIN_INTERVAL_MS = 1000  # long, so that a burst surely falls within one interval
SOURCE_PUBLISH_MS = 20
BURST = 5

MAPPING = """
version: 1
gateway: {{id: change, store: "sqlite:///{store}", api: {{enabled: false}},
          collector: {{trim_every_s: 0.2}}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}",
          publishing_interval_ms: {pub}}}
templates:
  machine:
    tags:
      x: {{source: plant, address: "nsu=urn:test:plant;s={{n}}.X"}}
assets:
{assets}
models:
  echo:
    file: {model}
    version: "1"
    template: machine
    trigger: change
    min_interval_ms: {interval}
    window_s: 5
    min_window_s: 0
    outputs: {{value: value}}
    features: [{{tag: x, stat: last}}]
outputs:
  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{hmi}", allow_anonymous: true,
        security_policies: ["None"]}}
"""


@dataclass
class Hmi:
    """What an HMI client subscribed to each asset's prediction value saw, in order."""

    seen: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ASSETS})
    names: dict[Any, str] = field(default_factory=dict)

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        if isinstance(val, float):
            self.seen[self.names[node.nodeid]].append(val)


@dataclass
class Rig:
    gateway: Gateway
    plant: Server
    nodes: dict[str, ua.NodeId]
    hmi: Hmi

    @property
    def runner(self) -> ModelRunner:
        [runner] = self.gateway.runners
        return runner

    @property
    def trigger(self) -> ChangeTrigger:
        trigger = self.runner.trigger
        assert trigger is not None
        return trigger

    def seqs(self) -> dict[str, int]:
        return {p.asset: p.seq for p in self.gateway.fanout.latest.values()}

    def values(self) -> dict[str, object]:
        return {
            p.asset: p.value
            for p in self.gateway.fanout.latest.values()
            if p.quality is Quality.GOOD
        }

    async def write(self, asset: str, value: float) -> None:
        await self.plant.write_attribute_value(self.nodes[asset], ua.DataValue(ua.Variant(value)))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    plant_port, hmi_port = free_port(), free_port()
    plant = Server()
    await plant.init()
    plant.set_endpoint(f"opc.tcp://127.0.0.1:{plant_port}")
    ns = await plant.register_namespace("urn:test:plant")
    nodes = {}
    for asset in ASSETS:
        var = await plant.nodes.objects.add_variable(
            make_node_id(f"{asset}.X", ns), f"{asset}.X", 0.0
        )
        nodes[asset] = var.nodeid
    model = linear_regressor(tmp_path / "echo.onnx", [1.0], [0.0], [1.0])  # value = x
    assets = "\n".join(f'  {a}: {{template: machine, vars: {{n: "{a}"}}}}' for a in ASSETS)
    (tmp_path / "mapping.yaml").write_text(
        MAPPING.format(
            store=tmp_path / "b.db",
            plant=plant_port,
            pub=SOURCE_PUBLISH_MS,
            assets=assets,
            model=model,
            interval=MIN_INTERVAL_MS,
            hmi=hmi_port,
        )
    )
    prepared = prepare(tmp_path / "mapping.yaml")
    stop = asyncio.Event()
    hmi = Hmi()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(plant)
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 30)
            client = Client(f"opc.tcp://127.0.0.1:{hmi_port}", timeout=5)
            await stack.enter_async_context(client)
            pns = await client.get_namespace_index("urn:bridge:predictions")
            sub = await client.create_subscription(20, hmi)
            for asset in ASSETS:
                node = client.get_node(make_node_id(f"Predictions.{asset}.echo.Value", pns))
                hmi.names[node.nodeid] = asset
                await sub.subscribe_data_change(node)
            yield Rig(gateway, plant, nodes, hmi)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.mark.serial
async def test_predictions_follow_changes_coalesced_and_only_for_changed_assets(
    rig: Rig,
) -> None:
    # The initial values (0.0) are a change of every asset: each is predicted once.
    await wait_until(
        lambda: rig.values() == dict.fromkeys(ASSETS, 0.0), 15, what="first predictions"
    )
    # Quiet inputs, no period: nothing runs again, however long we wait.
    runs, seqs = rig.runner.runs, rig.seqs()
    await asyncio.sleep(MIN_INTERVAL_MS / 1000 + 0.5)
    assert (rig.runner.runs, rig.seqs()) == (runs, seqs)

    # A change of a1 is predicted (and reaches the HMI); a2 and a3 are not predicted again.
    await rig.write("a1", 1.0)
    await wait_until(lambda: 1.0 in rig.hmi.seen["a1"], 5, what="a1's prediction at the HMI")
    assert rig.runner.runs == runs + 1
    after_a1 = rig.seqs()
    assert after_a1["a1"] == seqs["a1"] + 1
    assert (after_a1["a2"], after_a1["a3"]) == (seqs["a2"], seqs["a3"])

    # A burst of a2 within the minimum interval that began with a1's run: each change reaches
    # the gateway (marks), and all of them make one prediction of a2 carrying the last value.
    marks, heard = rig.trigger.marks, len(rig.hmi.seen["a2"])
    for k in range(1, BURST + 1):
        await rig.write("a2", 10.0 + k)
        await asyncio.sleep(3 * SOURCE_PUBLISH_MS / 1000)  # each its own notification
    await wait_until(lambda: rig.values().get("a2") == 10.0 + BURST, 5, what="a2 predicted")
    assert rig.trigger.marks - marks >= 2, "the burst reached the gateway as one sample"
    assert rig.runner.runs == runs + 2
    assert rig.seqs() == {**after_a1, "a2": after_a1["a2"] + 1}
    await wait_until(lambda: len(rig.hmi.seen["a2"]) > heard, 5, what="a2 at the HMI")
    await asyncio.sleep(0.2)
    assert rig.hmi.seen["a2"][heard:] == [10.0 + BURST]

    # And nothing more once the inputs are quiet again.
    await asyncio.sleep(MIN_INTERVAL_MS / 1000 + 0.3)
    assert rig.runner.runs == runs + 2


async def test_the_gateway_collects_garbage_between_events(rig: Rig) -> None:
    """While the gateway runs, Python's automatic collector is off (its pauses landed in the
    middle of a prediction's path) and the gateway's own collects the young generations on its
    clock (gateway.collector, every 20 ms by default); what start-up built is frozen."""
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    young: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 1:
            young.append(1)

    gc.callbacks.append(note)
    try:
        await wait_until(lambda: len(young) >= 10, 10, what="ten young collections")
    finally:
        gc.callbacks.remove(note)


@pytest.mark.skipif(glibc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
async def test_the_gateway_hands_freed_native_memory_back(rig: Rig) -> None:
    """gateway.collector.trim_every_s: the running gateway calls malloc_trim on its clock."""
    await wait_until(lambda: rig.gateway.trims.runs >= 3, 10, what="three trims")
