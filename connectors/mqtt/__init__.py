"""MQTT 5 over TLS: a source (devices publish, the gateway subscribes) and destinations (UNS JSON,
Sparkplug B edge node).

Only this package imports aiomqtt and paho; the core finds it through ``register()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.connectors.mqtt.config import MqttAddress, MqttSourceSettings, UnsSettings
from bridge.connectors.mqtt.sparkplug.config import SparkplugSettings
from bridge.destination import Destination, DestinationContext
from bridge.types import Source, SourceTag

if TYPE_CHECKING:
    from bridge.connectors.mqtt.source import MqttSource

__all__ = ["MqttAddress", "MqttSource", "MqttSourceSettings", "UnsSettings", "register"]


def __getattr__(name: str) -> Any:
    # Registration and the config models import no aiomqtt (``bridge validate`` needs only the
    # models): the source module loads on first use.
    if name == "MqttSource":
        from bridge.connectors.mqtt.source import MqttSource

        return MqttSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _source(name: str, settings: Any, tags: Sequence[SourceTag]) -> Source:
    from bridge.connectors.mqtt.source import MqttSource

    return MqttSource(name, settings, tags)


def _uns(name: str, settings: Any, context: DestinationContext) -> Destination:
    from bridge.connectors.mqtt.uns import UnsDestination

    return UnsDestination(name, settings, context)


def _sparkplug(name: str, settings: Any, context: DestinationContext) -> Destination:
    from bridge.connectors.mqtt.sparkplug.edge import SparkplugEdgeNode

    return SparkplugEdgeNode(name, settings, context)


def register() -> None:
    """Make ``kind: mqtt`` (source) and ``kind: uns`` (output) known to the registry (called
    through the entry point)."""
    from bridge.plugins import DestinationKind, SourceKind, register_destination, register_source

    register_source(
        SourceKind(
            kind="mqtt",
            settings_model=MqttSourceSettings,
            address_model=MqttAddress,
            factory=_source,
            description="MQTT 5 over mutual TLS: devices publish JSON, plain numbers or "
            "Sparkplug B; topics bound to assets by the tags' topics, QoS 1 with a persistent "
            "session.",
        )
    )
    register_destination(
        DestinationKind(
            kind="uns",
            settings_model=UnsSettings,
            factory=_uns,
            description="Predictions and model events as JSON in an ISA-95 Unified Namespace "
            "on an MQTT 5 broker (mutual TLS), retained latest state, durably through the "
            "outbox.",
        )
    )
    register_destination(
        DestinationKind(
            kind="sparkplug",
            settings_model=SparkplugSettings,
            factory=_sparkplug,
            description="Predictions as a Sparkplug B 3.0 edge node (one device per asset, "
            "births with aliases, bdSeq kept across restarts, primary host STATE) on an MQTT 5 "
            "broker (mutual TLS), durably through the outbox.",
        )
    )
