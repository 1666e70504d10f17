"""Webhook destination: POSTs the gateway's drift alerts as JSON to one URL, through the outbox.

The gateway builds one per model with ``drift: webhook:`` (the retraining webhook); an
``outputs:`` block with ``kind: webhook`` gets the drift alerts of every model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.destination import Destination, DestinationContext
from bridge.plugins import DestinationKind, register_destination

from .config import WebhookSettings

if TYPE_CHECKING:
    from .destination import WebhookDestination

__all__ = ["KIND", "WebhookDestination", "WebhookSettings", "register"]

KIND = "webhook"


def __getattr__(name: str) -> Any:
    # The destination (and httpx) loads on first use: validating a mapping needs the settings.
    if name == "WebhookDestination":
        from .destination import WebhookDestination

        return WebhookDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _destination(name: str, settings: Any, context: DestinationContext) -> Destination:
    from .destination import WebhookDestination

    return WebhookDestination(name, settings, context)


def register() -> None:
    register_destination(
        DestinationKind(
            kind=KIND,
            settings_model=WebhookSettings,
            factory=_destination,
            description="POST each drift alert as JSON to a URL, durably through the store's "
            "outbox (Idempotency-Key = drift event id, retries with backoff, dead letters).",
        )
    )
