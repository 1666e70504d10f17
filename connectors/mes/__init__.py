"""MES REST destination: the gateway's outbox relay POSTs each event through it as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.destination import Destination, DestinationContext
from bridge.plugins import DestinationKind, register_destination

from .config import MesSettings
from .payload import prediction_to_json

if TYPE_CHECKING:
    from .destination import MesDestination

__all__ = ["MesDestination", "MesSettings", "prediction_to_json", "register"]


def __getattr__(name: str) -> Any:
    # The destination (and httpx) loads on first use: validating a mapping needs the settings.
    if name == "MesDestination":
        from .destination import MesDestination

        return MesDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _destination(name: str, settings: Any, context: DestinationContext) -> Destination:
    from .destination import MesDestination

    return MesDestination(name, settings, context)


def register() -> None:
    register_destination(
        DestinationKind(
            kind="mes-rest",
            settings_model=MesSettings,
            factory=_destination,
            description="POST every prediction as JSON to an MES REST endpoint, durably through "
            "the store's outbox (Idempotency-Key = prediction id, retries with backoff, "
            "dead letters).",
        )
    )
