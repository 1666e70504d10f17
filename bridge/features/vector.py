"""Feature matrices for one model: one row per asset, columns in the model's input order.

Only Good samples are in the windows; an input whose latest state is Bad or stale blocks its
asset (no inference, a Bad prediction saying why); Uncertain inputs make an Uncertain prediction.

All times here are on the monotonic clock (window sample times, ``updated_mono``, ``now``), so
a step of the wall clock moves no sample in or out of a window and makes no input stale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bridge.config.resolved import ResolvedModel
from bridge.features import stats
from bridge.features.window import Ring
from bridge.types import InputSnapshot, Quality, TagValue

__all__ = ["AssetRow", "FeatureBatch", "WindowedTag", "build_batch"]

F64 = npt.NDArray[np.float64]
Window = tuple[Ring, int]  # a tag's ring and how many of its newest samples are in the window


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
    def updated_mono(self) -> float | None: ...  # monotonic time of the last update
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
    model: ResolvedModel,
    lookup: Callable[[str], WindowedTag],
    now: float,
    assets: Sequence[str] | None = None,
) -> FeatureBatch:
    """The feature rows of ``model``'s assets at ``now`` (monotonic clock); of ``assets`` only
    when given (a change-triggered run: the assets whose inputs changed)."""
    start = now - model.window_s
    tag_names = list(dict.fromkeys(f.tag for f in model.features))
    # First every asset's inputs and windows, then the statistics of all assets at once: one
    # numpy call per feature instead of one per feature per asset (the cost of a call on a
    # window of ~100 samples is almost all overhead).
    slots: list[tuple[AssetRow, int]] = []  # in asset order; index into `windows`, -1 blocked
    windows: list[dict[str, Window]] = []
    for asset in model.assets if assets is None else assets:
        states = {name: lookup(f"{asset}.{name}") for name in tag_names}
        inputs, quality, reason, age = _inputs(asset, states, now)
        if quality is Quality.BAD:
            slots.append((AssetRow(asset, quality, reason, inputs, age), -1))
            continue
        found, missing = _windows(model, states, start, now)
        if missing:
            slots.append((AssetRow(asset, Quality.BAD, missing, inputs, age), -1))
            continue
        slots.append((AssetRow(asset, quality, reason, inputs, age), len(windows)))
        windows.append(found)
    values = _feature_matrix(model, tag_names, windows)
    finite = [bool(ok) for ok in np.logical_and.reduce(np.isfinite(values), axis=1)]
    runnable: list[AssetRow] = []
    blocked: list[AssetRow] = []
    keep: list[int] = []
    for row, k in slots:
        if k < 0:
            blocked.append(row)
        elif not finite[k]:
            name = next(
                f.name
                for f, v in zip(model.features, values[k], strict=True)
                if not math.isfinite(v)
            )
            reason = f"{name} is not a finite number"
            blocked.append(AssetRow(row.asset, Quality.BAD, reason, row.inputs, row.input_age_s))
        else:
            runnable.append(row)
            keep.append(k)
    x = values[keep].astype(np.float32).reshape(len(keep), len(model.features))
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
        if s.updated_mono is None:
            quality, why = Quality.BAD, why or "no value yet"
        else:
            age = now - s.updated_mono
            ages.append(age)
            if age > s.max_age_s and quality is not Quality.BAD:
                quality, why = Quality.BAD, f"stale: not updated for {age:.1f} s"
        if quality > Quality.GOOD:
            reasons.append(f"{name}: {why or quality.label}")
        worst = max(worst, quality)
        snaps.append(InputSnapshot(f"{asset}.{name}", s.value, quality, s.source_time))
    return tuple(snaps), worst, "; ".join(reasons), max(ages) if ages else None


def _windows(
    model: ResolvedModel, states: dict[str, WindowedTag], start: float, now: float
) -> tuple[dict[str, Window], str]:
    """Each input tag's window, or why the asset cannot run."""
    found: dict[str, Window] = {}
    for feature in model.features:
        if feature.tag in found:
            continue
        ring = states[feature.tag].ring
        if ring is None:
            return {}, f"{feature.tag}: no window kept"
        oldest = ring.oldest()
        if oldest is None:
            return {}, f"{feature.tag}: no Good samples yet"
        history = now - oldest
        if history < model.min_window_s:
            return {}, (
                f"warming up: {feature.tag} has {history:.1f} s of history, "
                f"the model needs {model.min_window_s:g} s"
            )
        count = ring.count_since(start)
        if count == 0:
            return {}, f"{feature.tag}: no Good samples in the last {model.window_s:g} s"
        found[feature.tag] = (ring, count)
    return found, ""


def _feature_matrix(
    model: ResolvedModel, tag_names: list[str], windows: list[dict[str, Window]]
) -> F64:
    """[assets, features] float64. Windows of a tag are stacked by length (rings of tags on the
    same update rate all have the same length, so usually one stack per tag), copied from the
    rings straight into the stack, one tag at a time: the transient memory of a tick is one
    tag's stack, not every window of every tag (at 80,000 windows that was ~200 MB)."""
    out = np.empty((len(windows), len(model.features)))
    if not windows:
        return out
    slope_tags = {f.tag for f in model.features if f.stat == "slope"}
    for tag in tag_names:
        by_length: dict[int, list[int]] = {}
        for i, found in enumerate(windows):
            by_length.setdefault(found[tag][1], []).append(i)
        columns = [(j, f.stat) for j, f in enumerate(model.features) if f.tag == tag]
        timed = tag in slope_tags  # times are only read by slope
        for length, rows in by_length.items():
            t = np.empty((len(rows), length if timed else 0))
            v = np.empty((len(rows), length))
            for r, i in enumerate(rows):
                windows[i][tag][0].copy_newest(length, t[r] if timed else None, v[r])
            for j, stat in columns:
                out[rows, j] = stats.compute_rows(stat, t, v)
    return out
