"""The read-only window the REST API has on the running gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bridge.api.view import ModelInfo, TagState
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.tagtable import TagTable
from bridge.types import ComponentHealth, Prediction

__all__ = ["RuntimeView"]


@dataclass
class RuntimeView:
    gateway_id: str
    table: TagTable
    fanout: PredictionFanout
    model_infos: Sequence[ModelInfo]
    health_sources: Sequence[Callable[[], ComponentHealth]]
    boot_time: float
    # Probes of parts a mapping reload adds and removes (sources, models), asked first.
    health_groups: Sequence[Callable[[], Iterable[ComponentHealth]]] = ()

    def tag_states(self) -> Sequence[TagState]:
        return self.table.snapshot()

    def latest_predictions(self) -> Sequence[Prediction]:
        return list(self.fanout.latest.values())

    def models(self) -> Sequence[ModelInfo]:
        return self.model_infos

    def health(self) -> Sequence[ComponentHealth]:
        found = [h for group in self.health_groups for h in group()]
        return found + [probe() for probe in self.health_sources]

    def started_at(self) -> float:
        return self.boot_time
