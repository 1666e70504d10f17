"""MES REST destination: the gateway's outbox relay POSTs each prediction through it as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.registry import SinkKind, register_sink
from bridge.types import Sink, SinkContext

from .config import MesSinkSettings
from .payload import prediction_to_json

if TYPE_CHECKING:
    from .sink import MesSink

__all__ = ["MesSink", "MesSinkSettings", "prediction_to_json", "register"]


def __getattr__(name: str) -> Any:
    # The sink (and httpx) loads on first use: validating a mapping needs only the settings.
    if name == "MesSink":
        from .sink import MesSink

        return MesSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sink(name: str, settings: Any, context: SinkContext) -> Sink:
    from .sink import MesSink

    return MesSink(name, settings, context)


def register() -> None:
    register_sink(
        SinkKind(
            kind="mes-rest",
            settings_model=MesSinkSettings,
            factory=_sink,
            description="POST every prediction as JSON to an MES REST endpoint, durably through "
            "the store's outbox (Idempotency-Key = prediction id, retries with backoff, "
            "dead letters).",
        )
    )
