"""Drift scores and explanations of one model's predictions, added before they are published.

``ModelInsight.enrich`` runs once per tick with the runner's ``TickOutcome``: Good feature rows
enter the drift windows; every ``drift.every`` runs the windows are scored and crossings go to
the drift alert writer; the predictions chosen by ``explain.mode`` get their top contributing
inputs from one batched occlusion pass. The numpy and onnxruntime work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from bridge.config.resolved import ResolvedModel
from bridge.drift.monitor import DriftCrossing, DriftMonitor
from bridge.explain.occlusion import occlusion_effects
from bridge.explain.reason import describe
from bridge.inference.model import LoadedModel
from bridge.runtime.models import TickOutcome
from bridge.types import Contribution, Explanation, Prediction, Quality

__all__ = ["ModelInsight", "score_function"]

log = structlog.get_logger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
# Rows kept for explanations on request: the latest per asset, bounded overall.
_ON_REQUEST_KEEP = 20_000


def score_function(
    loaded: LoadedModel, classes: npt.NDArray[np.int64] | None
) -> Callable[[F32], F64]:
    """The number an explanation explains, for rows of ``x``: a classifier's probability of the
    class it chose for the row's original (``classes``, repeated per perturbed row), a
    regressor's value. Without a scores output a classifier gives 1/0 (same class or not)."""
    roles = loaded.roles
    input_name = loaded.io.inputs[0].name

    def score(x: F32) -> F64:
        if roles.value is not None:
            (values,) = loaded.session.run([roles.value], {input_name: x})
            return np.asarray(values, dtype=np.float64).reshape(x.shape[0])
        assert classes is not None
        reps = x.shape[0] // classes.size
        want = np.repeat(classes, reps) if reps > 1 else classes
        if roles.scores is not None:
            (probs,) = loaded.session.run([roles.scores], {input_name: x})
            p = np.asarray(probs, dtype=np.float64)
            chosen: F64 = p[np.arange(x.shape[0]), want]
            return chosen
        assert roles.label is not None
        (labels,) = loaded.session.run([roles.label], {input_name: x})
        same: F64 = (np.asarray(labels).reshape(-1) == want).astype(np.float64)
        return same

    return score


@dataclass(frozen=True, slots=True)
class _Kept:
    x: F32  # [1, features]
    loaded: LoadedModel
    cls: int | None
    value: str | float | None


class ModelInsight:
    def __init__(
        self,
        model: ResolvedModel,
        reference: Mapping[str, Any],
        units: Mapping[str, str],
        on_crossing: Callable[[DriftCrossing, Prediction | None], None] | None = None,
    ) -> None:
        self.model = model
        self._features = [f.name for f in model.features]
        ref = reference["features"]
        self._baseline = np.asarray([float(ref[f]["mean"]) for f in self._features])
        self._units = units  # tag name -> unit
        self._on_crossing = on_crossing
        drift = model.drift
        self.monitor = (
            DriftMonitor(
                model.assets,
                self._features,
                reference,
                drift.window,
                drift.threshold,
                drift.clear_below,
            )
            if drift is not None
            else None
        )
        self._mode = model.explain.mode if model.explain is not None else None
        self._top = model.explain.top if model.explain is not None else 0
        self._last_value: dict[str, str | float | None] = {}
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.runs = 0
        self.explained = 0

    async def enrich(self, outcome: TickOutcome) -> list[Prediction]:
        predictions = list(outcome.predictions)
        batch = outcome.batch
        if not batch.runnable:
            return predictions
        index = {p.asset: k for k, p in enumerate(predictions)}
        rows = [
            (i, index[r.asset])
            for i, r in enumerate(batch.runnable)
            if r.asset in index and predictions[index[r.asset]].value is not None
        ]
        self.runs += 1
        explain_rows = self._to_explain(predictions, rows)
        crossings, explanations = await asyncio.to_thread(
            self._compute, outcome, rows, explain_rows
        )
        scores = self.monitor.scores if self.monitor is not None else {}
        for k, p in enumerate(predictions):
            new_score = scores.get(p.asset)
            explanation = explanations.get(k)
            if new_score is not None or explanation is not None:
                predictions[k] = replace(
                    p,
                    drift_score=new_score if new_score is not None else p.drift_score,
                    explanation=explanation if explanation is not None else p.explanation,
                )
        for p in predictions:
            self._last_value[p.asset] = (
                p.value if p.value is not None else self._last_value.get(p.asset)
            )
        if self._on_crossing is not None:
            for c in crossings:
                at = index.get(c.asset)
                self._on_crossing(c, predictions[at] if at is not None else None)
        return predictions

    def _to_explain(
        self, predictions: Sequence[Prediction], rows: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        if self._mode == "every":
            return list(rows)
        if self._mode == "label_change":
            return [
                (i, k)
                for i, k in rows
                if isinstance(predictions[k].value, str)
                and predictions[k].value != self._last_value.get(predictions[k].asset)
            ]
        return []

    def _compute(
        self,
        outcome: TickOutcome,
        rows: Sequence[tuple[int, int]],
        explain_rows: Sequence[tuple[int, int]],
    ) -> tuple[list[DriftCrossing], dict[int, Explanation]]:
        batch = outcome.batch
        crossings: list[DriftCrossing] = []
        if self.monitor is not None:
            good = [i for i, _ in rows if batch.runnable[i].quality is Quality.GOOD]
            self.monitor.observe([batch.runnable[i].asset for i in good], batch.x[good])
            drift = self.model.drift
            if drift is not None and self.runs % drift.every == 0:
                crossings = self.monitor.evaluate(time.time())
        if self._mode == "on_request":
            self._keep(outcome, rows)
        explanations: dict[int, Explanation] = {}
        if explain_rows:
            explanations = self._explain(outcome, explain_rows)
            self.explained += len(explanations)
        return crossings, explanations

    def _served(self, outcome: TickOutcome, p: Prediction) -> LoadedModel:
        cand = outcome.deployment.candidate
        if cand is not None and p.sha256 == cand.sha256 and p.version == cand.version:
            return cand.loaded
        return outcome.deployment.active.loaded

    @staticmethod
    def _class_of(p: Prediction, labels: Sequence[str]) -> int | None:
        if isinstance(p.value, str) and p.value in labels:
            return labels.index(p.value)
        return None

    def _labels(self, outcome: TickOutcome, loaded: LoadedModel) -> tuple[str, ...]:
        cand = outcome.deployment.candidate
        if cand is not None and loaded is cand.loaded:
            return cand.labels
        return outcome.deployment.active.labels

    def _explain(
        self, outcome: TickOutcome, rows: Sequence[tuple[int, int]]
    ) -> dict[int, Explanation]:
        """One occlusion pass per served version (almost always one)."""
        by_model: dict[int, list[tuple[int, int]]] = {}
        models: dict[int, LoadedModel] = {}
        for i, k in rows:
            loaded = self._served(outcome, outcome.predictions[k])
            by_model.setdefault(id(loaded), []).append((i, k))
            models[id(loaded)] = loaded
        out: dict[int, Explanation] = {}
        for key, group in by_model.items():
            loaded = models[key]
            labels = self._labels(outcome, loaded)
            x = outcome.batch.x[[i for i, _ in group]]
            classes = None
            if loaded.roles.value is None:
                found = [self._class_of(outcome.predictions[k], labels) for _, k in group]
                if any(c is None for c in found):
                    continue
                classes = np.asarray(found, dtype=np.int64)
            effects = occlusion_effects(x, self._baseline, score_function(loaded, classes))
            for r, (_, k) in enumerate(group):
                out[k] = self._explanation(x[r], effects[r])
        return out

    def _explanation(self, x: F32, effects: F64) -> Explanation:
        order = np.argsort(-np.abs(effects), kind="stable")[: self._top]
        top = tuple(
            Contribution(
                self._features[j], float(x[j]), float(self._baseline[j]), float(effects[j])
            )
            for j in order
        )
        first = self.model.features[int(order[0])]
        reason = describe(
            first.tag,
            first.stat,
            self._units.get(first.tag, ""),
            float(x[order[0]]),
            float(self._baseline[order[0]]),
        )
        return Explanation(reason, top)

    def _keep(self, outcome: TickOutcome, rows: Sequence[tuple[int, int]]) -> None:
        for i, k in rows:
            p = outcome.predictions[k]
            loaded = self._served(outcome, p)
            cls = self._class_of(p, self._labels(outcome, loaded))
            self._kept[p.id] = _Kept(outcome.batch.x[i : i + 1].copy(), loaded, cls, p.value)
        while len(self._kept) > _ON_REQUEST_KEEP:
            self._kept.popitem(last=False)

    def explain_kept(self, prediction_id: str) -> Explanation | None:
        """Explain a recent prediction on request (mode ``on_request``); None if not kept."""
        kept = self._kept.get(prediction_id)
        if kept is None:
            return None
        classes = None if kept.cls is None else np.asarray([kept.cls], dtype=np.int64)
        if kept.loaded.roles.value is None and classes is None:
            return None
        effects = occlusion_effects(kept.x, self._baseline, score_function(kept.loaded, classes))
        return self._explanation(kept.x[0], effects[0])
