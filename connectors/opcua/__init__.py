"""OPC UA connector: a client source (``kind: opcua``) and the prediction server sink
(``kind: opcua-server``). Only this package (and the plant simulator) imports asyncua."""

from __future__ import annotations

from bridge.registry import SinkKind, SourceKind, register_sink, register_source
from connectors.opcua.config import OpcUaAddress, OpcUaSourceSettings, SecuritySettings
from connectors.opcua.server import PredictionServer
from connectors.opcua.server_config import OpcUaServerSettings, OpcUaServerUser
from connectors.opcua.source import OpcUaSource

__all__ = [
    "OpcUaAddress",
    "OpcUaServerSettings",
    "OpcUaServerUser",
    "OpcUaSource",
    "OpcUaSourceSettings",
    "PredictionServer",
    "SecuritySettings",
    "register",
]


def register() -> None:
    register_source(
        SourceKind(
            kind="opcua",
            settings_model=OpcUaSourceSettings,
            address_model=OpcUaAddress,
            factory=OpcUaSource,
            description="OPC UA client: one subscription per server, nodes addressed by nsu= URI.",
        )
    )
    register_sink(
        SinkKind(
            kind="opcua-server",
            settings_model=OpcUaServerSettings,
            factory=PredictionServer,
            description="The gateway's own OPC UA server exposing predictions read-only to HMIs.",
        )
    )
