"""The plant simulator as any OPC UA client sees it: layout, namespace index, values, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asyncua import Client, ua
from support import free_port, wait_until

from bridge.simulators.plant import PLANT_NAMESPACE, PlantSimulator
from bridge.simulators.plant.physics import SIGNALS, FaultPlan


@pytest.fixture
async def plant() -> AsyncIterator[PlantSimulator]:
    # Pump 2 is faulty from the start and at full severity after half a second.
    sim = PlantSimulator(
        port=free_port(), pumps=2, faulty=(2,), fault=FaultPlan(start_s=0.0, ramp_s=0.5)
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_layout_units_namespace_and_fault(plant: PlantSimulator) -> None:
    async with Client(plant.endpoint, timeout=4) as client:
        namespaces = await client.get_namespace_array()
        ns = namespaces.index(PLANT_NAMESPACE)
        assert ns > 1, "the plant namespace must not sit at the first free index"
        plant_node = await client.nodes.objects.get_child(f"{ns}:Plant")
        pumps = sorted([(await n.read_browse_name()).Name for n in await plant_node.get_children()])
        assert pumps == ["Pump01", "Pump02"]
        pump1 = await plant_node.get_child(f"{ns}:Pump01")
        signals = {(await n.read_browse_name()).Name for n in await pump1.get_children()}
        assert signals == set(SIGNALS)
        eu = await (await pump1.get_child([f"{ns}:Vibration", "0:EngineeringUnits"])).read_value()
        assert eu.DisplayName.Text == "mm/s"

        vib1 = client.get_node(ua.NodeId("Pump01.Vibration", ns))
        vib2 = client.get_node(ua.NodeId("Pump02.Vibration", ns))
        running = await client.get_node(ua.NodeId("Pump01.Running", ns)).read_value()
        assert running is True
        first = await vib1.read_data_value()
        assert first.SourceTimestamp is not None

        async def changed() -> bool:
            dv = await vib1.read_data_value()
            return dv.SourceTimestamp != first.SourceTimestamp

        await wait_until(changed, timeout=3, what="a new Pump01 value")
        await asyncio.sleep(0.7)
        assert await vib2.read_value() > await vib1.read_value() + 3.0


async def test_stop_is_idempotent_and_restart_on_same_port(plant: PlantSimulator) -> None:
    await plant.stop()
    await plant.stop()
    assert not plant.running
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(plant.endpoint, timeout=1) as client:
            await client.get_namespace_array()
    await plant.start()
    async with Client(plant.endpoint, timeout=4) as client:
        ns = await client.get_namespace_index(PLANT_NAMESPACE)
        value = await client.get_node(ua.NodeId("Pump01.Speed", ns)).read_value()
        assert 1300 < value < 1600
    assert plant.updates > 0
