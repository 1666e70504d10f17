"""Feature matrices for one model: one row per asset, columns in the model's input order.

Only Good samples are in the windows; an input whose latest state is Bad or stale blocks its
asset (no inference, a Bad prediction saying why); Uncertain inputs make an Uncertain prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bridge.config.resolved import ResolvedModel
from bridge.features import stats
from bridge.features.window import Ring
from bridge.types import InputSnapshot, Quality, TagValue

__all__ = ["AssetRow", "FeatureBatch", "WindowedTag", "build_batch"]


class WindowedTag(Protocol):
    """What feature building reads of a tag's live state."""

    @property
    def value(self) -> TagValue: ...
    @property
    def quality(self) -> Quality: ...
    @property
    def reason(self) -> str: ...
    @property
    def source_time(self) -> float | None: ...
    @property
    def updated(self) -> float | None: ...
    @property
    def max_age_s(self) -> float: ...
    @property
    def ring(self) -> Ring | None: ...


@dataclass(frozen=True, slots=True)
class AssetRow:
    asset: str
    quality: Quality
    reason: str
    inputs: tuple[InputSnapshot, ...]
    input_age_s: float | None


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    x: npt.NDArray[np.float32]  # rows of `runnable`, in order
    runnable: list[AssetRow]
    blocked: list[AssetRow]


def build_batch(
    model: ResolvedModel, lookup: Callable[[str], WindowedTag], now: float
) -> FeatureBatch:
    start = now - model.window_s
    tag_names = list(dict.fromkeys(f.tag for f in model.features))
    rows: list[list[float]] = []
    runnable: list[AssetRow] = []
    blocked: list[AssetRow] = []
    for asset in model.assets:
        states = {name: lookup(f"{asset}.{name}") for name in tag_names}
        inputs, quality, reason, age = _inputs(asset, states, now)
        if quality is Quality.BAD:
            blocked.append(AssetRow(asset, quality, reason, inputs, age))
            continue
        row, missing = _row(model, states, start, now)
        if missing:
            blocked.append(AssetRow(asset, Quality.BAD, missing, inputs, age))
            continue
        rows.append(row)
        runnable.append(AssetRow(asset, quality, reason, inputs, age))
    x = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(model.features))
    return FeatureBatch(x, runnable, blocked)


def _inputs(
    asset: str, states: dict[str, WindowedTag], now: float
) -> tuple[tuple[InputSnapshot, ...], Quality, str, float | None]:
    snaps: list[InputSnapshot] = []
    worst = Quality.GOOD
    reasons: list[str] = []
    ages: list[float] = []
    for name, s in states.items():
        quality, why = s.quality, s.reason
        if s.updated is None:
            quality, why = Quality.BAD, why or "no value yet"
        else:
            age = now - s.updated
            ages.append(age)
            if age > s.max_age_s and quality is not Quality.BAD:
                quality, why = Quality.BAD, f"stale: not updated for {age:.1f} s"
        if quality > Quality.GOOD:
            reasons.append(f"{name}: {why or quality.label}")
        worst = max(worst, quality)
        snaps.append(InputSnapshot(f"{asset}.{name}", s.value, quality, s.source_time))
    return tuple(snaps), worst, "; ".join(reasons), max(ages) if ages else None


def _row(
    model: ResolvedModel, states: dict[str, WindowedTag], start: float, now: float
) -> tuple[list[float], str]:
    row: list[float] = []
    for feature in model.features:
        ring = states[feature.tag].ring
        if ring is None:
            return [], f"{feature.tag}: no window kept"
        oldest = ring.oldest()
        if oldest is None:
            return [], f"{feature.tag}: no Good samples yet"
        history = now - oldest
        if history < model.min_window_s:
            return [], (
                f"warming up: {feature.tag} has {history:.1f} s of history, "
                f"the model needs {model.min_window_s:g} s"
            )
        t, v = ring.since(start)
        if len(v) == 0:
            return [], f"{feature.tag}: no Good samples in the last {model.window_s:g} s"
        value = stats.compute(feature.stat, t, v)
        if not math.isfinite(value):
            return [], f"{feature.name} is not a finite number"
        row.append(value)
    return row, ""
