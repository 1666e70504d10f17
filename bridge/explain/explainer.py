"""Which of a model's predictions get an explanation, and what it says.

``explain.mode`` chooses the rows: ``every`` prediction with a value, on a ``label_change`` of
the asset, or ``on_request`` (rows are kept, bounded, and explained when asked for). An
explanation is the top inputs of one batched occlusion pass against a baseline (the reference
means of the version that made the prediction) and one line in plain words about the first.
Pure numpy: the model is only a score function from rows to numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.config.resolved import ResolvedModel
from bridge.types import Contribution, Explanation, Prediction

from .occlusion import occlusion_effects
from .reason import describe

__all__ = ["ON_REQUEST_KEEP", "Explainer", "Score", "baseline_of"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Score = Callable[[F32], F64]
# Rows kept for explanations on request: the latest per prediction, bounded overall.
ON_REQUEST_KEEP = 20_000


def baseline_of(reference: Mapping[str, Any], features: Sequence[str]) -> F64:
    """The explanation baseline of a reference: each feature's mean."""
    ref = reference["features"]
    return np.asarray([float(ref[f]["mean"]) for f in features])


@dataclass(frozen=True, slots=True)
class _Kept:
    x: F32  # [1, features]
    baseline: F64
    score: Score | None  # None: not explainable (a label the model's classes do not name)


class Explainer:
    def __init__(self, model: ResolvedModel, units: Mapping[str, str]) -> None:
        self.model = model
        self.features = [f.name for f in model.features]
        self.mode = model.explain.mode if model.explain is not None else None
        self._top = model.explain.top if model.explain is not None else 0
        self._units = units  # tag name -> unit
        self._last_value: dict[str, str | float | None] = {}
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.explained = 0

    def choose(
        self, predictions: Sequence[Prediction], rows: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """The (feature row, prediction) pairs of ``rows`` that ``explain.mode`` explains now."""
        if self.mode == "every":
            return list(rows)
        if self.mode == "label_change":
            return [
                (i, k)
                for i, k in rows
                if isinstance(predictions[k].value, str)
                and predictions[k].value != self._last_value.get(predictions[k].asset)
            ]
        return []

    def remember(self, predictions: Sequence[Prediction]) -> None:
        """Note each asset's latest value (what a label change is measured against)."""
        for p in predictions:
            self._last_value[p.asset] = (
                p.value if p.value is not None else self._last_value.get(p.asset)
            )

    def explain(self, x: F32, baseline: F64, score: Score) -> list[Explanation]:
        """One explanation per row of ``x``, from one occlusion pass."""
        effects = occlusion_effects(x, baseline, score)
        self.explained += len(x)
        return [self._explanation(x[r], effects[r], baseline) for r in range(len(x))]

    def keep(self, prediction_id: str, x: F32, baseline: F64, score: Score | None) -> None:
        """Keep one row (``x``: [1, features]) for ``explain_kept``; the oldest go first."""
        self._kept[prediction_id] = _Kept(x, baseline, score)
        while len(self._kept) > ON_REQUEST_KEEP:
            self._kept.popitem(last=False)

    def explain_kept(self, prediction_id: str) -> Explanation | None:
        """Explain a recent prediction on request (mode ``on_request``); None if not kept."""
        kept = self._kept.get(prediction_id)
        if kept is None or kept.score is None:
            return None
        effects = occlusion_effects(kept.x, kept.baseline, kept.score)
        return self._explanation(kept.x[0], effects[0], kept.baseline)

    def _explanation(self, x: F32, effects: F64, baseline: F64) -> Explanation:
        order = np.argsort(-np.abs(effects), kind="stable")[: self._top]
        top = tuple(
            Contribution(self.features[j], float(x[j]), float(baseline[j]), float(effects[j]))
            for j in order
        )
        first = self.model.features[int(order[0])]
        reason = describe(
            first.tag,
            first.stat,
            self._units.get(first.tag, ""),
            float(x[order[0]]),
            float(baseline[order[0]]),
        )
        return Explanation(reason, top)
