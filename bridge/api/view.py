"""The read-only window the API has on the running gateway; the runtime implements it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.types import ComponentHealth, Prediction, Quality, TagValue

__all__ = ["GatewayView", "ModelInfo", "TagState"]


@dataclass(slots=True)
class TagState:
    """Current value of one tag after normalization. Immutable by convention: not frozen,
    because a frozen dataclass costs ~5x to build and ``/tags`` builds one per tag on the
    event loop (100,000 tags: 0.24 s frozen)."""

    tag: str
    asset: str
    name: str
    source: str
    value: TagValue
    unit: str
    quality: Quality
    source_time: float | None
    server_time: float | None
    received_time: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    path: str
    loaded_at: float
    assets: tuple[str, ...]
    inputs: tuple[str, ...]  # feature names in input order, e.g. "vibration.mean"


class GatewayView(Protocol):
    gateway_id: str

    def tag_states(self) -> Sequence[TagState]: ...

    def latest_predictions(self) -> Sequence[Prediction]: ...

    def models(self) -> Sequence[ModelInfo]: ...

    def health(self) -> Sequence[ComponentHealth]: ...

    def started_at(self) -> float: ...
