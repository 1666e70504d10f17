"""MES REST destination: the gateway's outbox relay POSTs each prediction through it as JSON."""

from __future__ import annotations

from bridge.registry import SinkKind, register_sink

from .config import MesSinkSettings
from .payload import prediction_to_json
from .sink import MesSink

__all__ = ["MesSink", "MesSinkSettings", "prediction_to_json", "register"]


def register() -> None:
    register_sink(
        SinkKind(
            kind="mes-rest",
            settings_model=MesSinkSettings,
            factory=MesSink,
            description="POST every prediction as JSON to an MES REST endpoint, durably through "
            "the store's outbox (Idempotency-Key = prediction id, retries with backoff, "
            "dead letters).",
        )
    )
