"""The plant simulator's tags as an OPC UA source's ``SourceTag`` list (source tests)."""

from __future__ import annotations

from bridge.types import SourceTag
from connectors.opcua import OpcUaAddress
from simulators.plant import PLANT_NAMESPACE
from simulators.plant.physics import SIGNALS


def plant_tags(pumps: int) -> list[SourceTag]:
    """Every signal of pumps 1..``pumps``, named ``P<n>.<signal>``."""
    return [
        SourceTag(
            f"P{p}.{signal}",
            OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s=Pump{p:02d}.{signal}"),
        )
        for p in range(1, pumps + 1)
        for signal in SIGNALS
    ]
