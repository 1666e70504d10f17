"""Drift scores and explanations of one model's predictions, added before they are published.

``ModelInsight.enrich`` runs once per tick with the runner's ``TickOutcome``: Good feature rows
enter the drift windows; every ``drift.every`` runs the windows are scored and crossings go to
the drift alert writer; the predictions chosen by ``explain.mode`` get their top contributing
inputs from one batched occlusion pass. The numpy and onnxruntime work runs in a worker thread.

Reference statistics are those of the version that serves: the registry's (``reference_json``,
given at ``bridge models register --reference``) when the version has them, else the mapping's
``reference:`` file. When the active version changes, drift switches to its reference and that
model's drift windows start empty (scores against a new reference are not comparable with the
old ones); a switch that keeps the same reference keeps the windows. A version registered
without reference statistics keeps the mapping's, with a warning (the mapping's own file,
seeded into the registry at start, has none by design: no warning for it). Explanations use the
reference (its means are the baseline) of the version that made each prediction.
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

from bridge.config.reference import ReferenceFileError, validate_reference
from bridge.config.resolved import ResolvedModel
from bridge.drift.monitor import DriftCrossing, DriftMonitor
from bridge.errors import BridgeError
from bridge.explain.occlusion import occlusion_effects
from bridge.explain.reason import describe
from bridge.inference.model import LoadedModel
from bridge.lifecycle.deployment import Deployment, Served
from bridge.runtime.models import TickOutcome
from bridge.store.registry import VersionRecord
from bridge.types import Contribution, Explanation, Prediction, Quality

__all__ = ["ModelInsight", "score_function"]

log = structlog.get_logger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
# Rows kept for explanations on request: the latest per asset, bounded overall.
_ON_REQUEST_KEEP = 20_000
# After the registry could not be read, the reference is looked up again this much later.
_LOOKUP_RETRY_S = 30.0

# (version, sha256) -> its registry record, or None if not registered; raises BridgeError.
RecordLookup = Callable[[str, str], VersionRecord | None]
_Key = tuple[str, str]


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
    baseline: F64
    cls: int | None
    value: str | float | None


class ModelInsight:
    def __init__(
        self,
        model: ResolvedModel,
        reference: Mapping[str, Any],
        units: Mapping[str, str],
        on_crossing: Callable[[DriftCrossing, Prediction | None], None] | None = None,
        lookup: RecordLookup | None = None,
    ) -> None:
        self.model = model
        self._features = [f.name for f in model.features]
        self._mapping_reference = reference
        self._lookup = lookup
        self._units = units  # tag name -> unit
        self._on_crossing = on_crossing
        # Per served version (version, sha256): its reference and explanation baseline.
        self._references: dict[_Key, Mapping[str, Any]] = {}
        self._baselines: dict[_Key, F64] = {}
        self._retry_at = 0.0
        self.reference: Mapping[str, Any] = reference  # what drift compares with now
        self._baseline = self._baseline_of(reference)
        self.monitor = self._monitor(reference)
        self._mode = model.explain.mode if model.explain is not None else None
        self._top = model.explain.top if model.explain is not None else 0
        self._last_value: dict[str, str | float | None] = {}
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.runs = 0
        self.explained = 0

    def _baseline_of(self, reference: Mapping[str, Any]) -> F64:
        ref = reference["features"]
        return np.asarray([float(ref[f]["mean"]) for f in self._features])

    def _monitor(self, reference: Mapping[str, Any]) -> DriftMonitor | None:
        drift = self.model.drift
        if drift is None:
            return None
        return DriftMonitor(
            self.model.assets,
            self._features,
            reference,
            drift.window,
            drift.threshold,
            drift.clear_below,
        )

    async def _follow(self, deployment: Deployment) -> None:
        """Look up the reference of each newly served version; switch drift to the active's."""
        served: list[Served] = [deployment.active]
        if deployment.candidate is not None:
            served.append(deployment.candidate)
        new = [s for s in served if (s.version, s.sha256) not in self._references]
        if new and time.monotonic() >= self._retry_at:
            try:
                for s in new:
                    ref = await asyncio.to_thread(self._registry_reference, s)
                    self._references[(s.version, s.sha256)] = ref
                    self._baselines[(s.version, s.sha256)] = self._baseline_of(ref)
            except BridgeError as exc:  # the store is down: keep what we have, try later
                self._retry_at = time.monotonic() + _LOOKUP_RETRY_S
                log.warning("reference_lookup_failed", model=self.model.name, error=str(exc))
        active = self._references.get((deployment.active.version, deployment.active.sha256))
        if active is None or active is self.reference:
            return
        if active == self.reference:  # another version, same statistics: keep the windows
            self.reference = active
            return
        self.reference = active
        self._baseline = self._baselines[(deployment.active.version, deployment.active.sha256)]
        # The windows are scored against the new reference from their first row on.
        self.monitor = self._monitor(active)
        log.info(
            "drift_reference_switched",
            model=self.model.name,
            version=deployment.active.version,
            windows_reset=self.monitor is not None,
        )

    def _registry_reference(self, served: Served) -> Mapping[str, Any]:
        """The registry's reference of ``served`` if usable, else the mapping's (see module)."""
        if self._lookup is None:
            return self._mapping_reference
        record = self._lookup(served.version, served.sha256)
        where = {"model": self.model.name, "version": served.version}
        if record is None or record.sha256 != served.sha256:
            return self._mapping_reference  # served from the mapping, not the registry
        if record.reference is None:
            if record.registered_by != "mapping":
                log.warning("registry_reference_missing_using_mapping_reference", **where)
            return self._mapping_reference
        try:
            ref = validate_reference(record.reference, self._features)
            if self.model.drift is not None:
                missing = [f for f in self._features if "bins" not in ref["features"][f]]
                if missing:
                    raise ReferenceFileError(f"no bins/fractions for {', '.join(missing)} (drift)")
        except ReferenceFileError as exc:
            log.warning(
                "registry_reference_unusable_using_mapping_reference", error=str(exc), **where
            )
            return self._mapping_reference
        return ref

    def baseline(self, loaded: LoadedModel, outcome: TickOutcome) -> F64:
        """The explanation baseline of the version ``loaded`` belongs to."""
        d = outcome.deployment
        served = (
            d.candidate if d.candidate is not None and loaded is d.candidate.loaded else d.active
        )
        return self._baselines.get((served.version, served.sha256), self._baseline)

    async def enrich(self, outcome: TickOutcome) -> list[Prediction]:
        predictions = list(outcome.predictions)
        batch = outcome.batch
        await self._follow(outcome.deployment)
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
            baseline = self.baseline(loaded, outcome)
            effects = occlusion_effects(x, baseline, score_function(loaded, classes))
            for r, (_, k) in enumerate(group):
                out[k] = self._explanation(x[r], effects[r], baseline)
        return out

    def _explanation(self, x: F32, effects: F64, baseline: F64) -> Explanation:
        order = np.argsort(-np.abs(effects), kind="stable")[: self._top]
        top = tuple(
            Contribution(self._features[j], float(x[j]), float(baseline[j]), float(effects[j]))
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

    def _keep(self, outcome: TickOutcome, rows: Sequence[tuple[int, int]]) -> None:
        for i, k in rows:
            p = outcome.predictions[k]
            loaded = self._served(outcome, p)
            cls = self._class_of(p, self._labels(outcome, loaded))
            self._kept[p.id] = _Kept(
                outcome.batch.x[i : i + 1].copy(),
                loaded,
                self.baseline(loaded, outcome),
                cls,
                p.value,
            )
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
        effects = occlusion_effects(kept.x, kept.baseline, score_function(kept.loaded, classes))
        return self._explanation(kept.x[0], effects[0], kept.baseline)
