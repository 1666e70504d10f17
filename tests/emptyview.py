"""A gateway view with nothing live in it (no tags, predictions or models; a healthy store):
for tests of API routes that answer from the store alone."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.api.view import ModelInfo, TagState
from bridge.types import ComponentHealth, Prediction

__all__ = ["EmptyView"]


@dataclass
class EmptyView:
    gateway_id: str = "gw-test"
    start: float = field(default_factory=time.time)

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("store", "ok")]

    def started_at(self) -> float:
        return self.start
