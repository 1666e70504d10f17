"""NGSI-LD destination: one entity per asset on a FIWARE context broker, through the outbox.

Registration and the settings import no httpx: ``bridge validate`` needs only the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.destination import Destination, DestinationContext
from bridge.plugins import DestinationKind, register_destination

from .config import NgsiLdSettings
from .context import publish_context

if TYPE_CHECKING:
    from .destination import NgsiLdDestination

__all__ = ["KIND", "NgsiLdDestination", "NgsiLdSettings", "register"]

KIND = "ngsi-ld"


def __getattr__(name: str) -> Any:
    if name == "NgsiLdDestination":
        from .destination import NgsiLdDestination

        return NgsiLdDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _destination(name: str, settings: Any, context: DestinationContext) -> Destination:
    from .destination import NgsiLdDestination

    return NgsiLdDestination(name, settings, context)


def register() -> None:
    publish_context()
    register_destination(
        DestinationKind(
            kind=KIND,
            settings_model=NgsiLdSettings,
            factory=_destination,
            description="One NGSI-LD entity per asset (predictions, tag values, ISA-95 "
            "isPartOf) upserted in batches on a FIWARE context broker, durably through the "
            "outbox.",
        )
    )
