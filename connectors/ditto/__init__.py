"""Eclipse Ditto destination: one digital twin (thing) per asset, its attributes the asset's
static context and its features the latest prediction, the model and chosen tag values, written
as Ditto Protocol messages over MQTT or through Ditto's HTTP API, durably through the outbox.

Registration and the settings import no aiomqtt and no httpx: the destination and its transport
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.destination import Destination, DestinationContext

from .config import DittoSettings

if TYPE_CHECKING:
    from .destination import DittoDestination

__all__ = ["DittoDestination", "DittoSettings", "register"]


def __getattr__(name: str) -> Any:
    if name == "DittoDestination":
        from .destination import DittoDestination

        return DittoDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _destination(name: str, settings: Any, context: DestinationContext) -> Destination:
    from .destination import DittoDestination

    return DittoDestination(name, settings, context)


def register() -> None:
    """Make ``kind: ditto`` known to the registry (called through the entry point)."""
    from bridge.plugins import DestinationKind, register_destination

    register_destination(
        DestinationKind(
            kind="ditto",
            settings_model=DittoSettings,
            factory=_destination,
            description="One Eclipse Ditto thing per asset (ISA-95 levels and context as "
            "attributes; latest prediction, model and tag values as features), as Ditto "
            "Protocol messages over MQTT or through Ditto's HTTP API, durably through the "
            "outbox.",
        )
    )
