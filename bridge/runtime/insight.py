"""Feeds one model's ticks to its drift tracker and explainer, before predictions are published.

``ModelInsight.enrich`` runs once per tick with the runner's ``TickOutcome``: it tells the
reference book which versions serve (``bridge.drift.references``), hands the Good feature rows
to the drift tracker (``bridge.drift.tracker``) and the rows ``explain.mode`` chooses to the
explainer (``bridge.explain.explainer``), with the score function and baseline of the version
that made each prediction. The numpy and onnxruntime work runs in a worker thread. Crossings go
to ``on_crossing`` (the drift alert writer). What drift and explanations decide lives in their
packages; this module only knows the runner's tick and deployment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.config.resolved import ResolvedModel
from bridge.drift.monitor import DriftCrossing, DriftMonitor
from bridge.drift.references import ReferenceBook, ReferenceLookup, RegisteredReference
from bridge.drift.tracker import DriftTracker
from bridge.explain.explainer import Explainer, baseline_of
from bridge.inference.model import LoadedModel
from bridge.inference.score import score_function
from bridge.lifecycle.deployment import Deployment, Served
from bridge.runtime.runner import TickOutcome
from bridge.store.registry import VersionRecord
from bridge.types import Explanation, Prediction, Quality

__all__ = ["ModelInsight", "RecordLookup"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# (version, sha256) -> its registry record, or None if not registered; raises BridgeError.
RecordLookup = Callable[[str, str], VersionRecord | None]


def _registered(lookup: RecordLookup | None) -> ReferenceLookup | None:
    """The registry's records as the reference book's domain type (the store boundary)."""
    if lookup is None:
        return None

    def find(version: str, sha256: str) -> RegisteredReference | None:
        record = lookup(version, sha256)
        if record is None:
            return None
        return RegisteredReference(record.sha256, record.reference, record.registered_by)

    return find


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
        self.references = ReferenceBook(model, reference, _registered(lookup))
        self.drift = DriftTracker(model, reference)
        self.explainer = Explainer(model, units)
        self._on_crossing = on_crossing
        # The active version's baseline, and each served version's once its reference is known.
        self._baseline = baseline_of(reference, self._features)
        self._baselines: dict[tuple[str, str], F64] = {}
        self.runs = 0

    @property
    def reference(self) -> Mapping[str, Any]:
        return self.drift.reference

    @property
    def monitor(self) -> DriftMonitor | None:
        return self.drift.monitor

    @property
    def explained(self) -> int:
        return self.explainer.explained

    def explain_kept(self, prediction_id: str) -> Explanation | None:
        return self.explainer.explain_kept(prediction_id)

    def feature_drift(self, asset: str) -> dict[str, float]:
        return self.drift.feature_scores(asset)

    async def _follow(self, deployment: Deployment) -> None:
        """Learn the reference of each newly served version; switch drift to the active's."""
        served = [deployment.active]
        if deployment.candidate is not None:
            served.append(deployment.candidate)
        await self.references.learn([(s.version, s.sha256) for s in served])
        key = (deployment.active.version, deployment.active.sha256)
        active = self.references.get(key)
        if active is not None and self.drift.use(active, deployment.active.version):
            self._baseline = self._baseline_for(key)

    def _baseline_for(self, key: tuple[str, str]) -> F64:
        found = self._baselines.get(key)
        if found is None:
            ref = self.references.get(key)
            if ref is None:
                return self._baseline
            found = self._baselines[key] = baseline_of(ref, self._features)
        return found

    def baseline(self, loaded: LoadedModel, outcome: TickOutcome) -> F64:
        """The explanation baseline of the version ``loaded`` belongs to."""
        d = outcome.deployment
        served = (
            d.candidate if d.candidate is not None and loaded is d.candidate.loaded else d.active
        )
        return self._baseline_for((served.version, served.sha256))

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
        explain_rows = self.explainer.choose(predictions, rows)
        crossings, explanations = await asyncio.to_thread(
            self._compute, outcome, rows, explain_rows
        )
        scores = self.drift.scores
        for k, p in enumerate(predictions):
            new_score = scores.get(p.asset)
            explanation = explanations.get(k)
            if new_score is not None or explanation is not None:
                predictions[k] = replace(
                    p,
                    drift_score=new_score if new_score is not None else p.drift_score,
                    explanation=explanation if explanation is not None else p.explanation,
                )
        self.explainer.remember(predictions)
        if self._on_crossing is not None:
            for c in crossings:
                at = index.get(c.asset)
                self._on_crossing(c, predictions[at] if at is not None else None)
        return predictions

    def _compute(
        self,
        outcome: TickOutcome,
        rows: Sequence[tuple[int, int]],
        explain_rows: Sequence[tuple[int, int]],
    ) -> tuple[list[DriftCrossing], dict[int, Explanation]]:
        batch = outcome.batch
        good = [i for i, _ in rows if batch.runnable[i].quality is Quality.GOOD]
        crossings = self.drift.observe(
            [batch.runnable[i].asset for i in good], batch.x[good], self.runs, time.time()
        )
        if self.explainer.mode == "on_request":
            self._keep(outcome, rows)
        explanations = self._explain(outcome, explain_rows) if explain_rows else {}
        return crossings, explanations

    @staticmethod
    def _served(outcome: TickOutcome, p: Prediction) -> Served:
        cand = outcome.deployment.candidate
        if cand is not None and p.sha256 == cand.sha256 and p.version == cand.version:
            return cand
        return outcome.deployment.active

    @staticmethod
    def _class_of(p: Prediction, labels: Sequence[str]) -> int | None:
        if isinstance(p.value, str) and p.value in labels:
            return labels.index(p.value)
        return None

    def _explain(
        self, outcome: TickOutcome, rows: Sequence[tuple[int, int]]
    ) -> dict[int, Explanation]:
        """One occlusion pass per served version (almost always one)."""
        by_version: dict[int, list[tuple[int, int]]] = {}
        versions: dict[int, Served] = {}
        for i, k in rows:
            served = self._served(outcome, outcome.predictions[k])
            by_version.setdefault(id(served.loaded), []).append((i, k))
            versions[id(served.loaded)] = served
        out: dict[int, Explanation] = {}
        for key, group in by_version.items():
            served = versions[key]
            x = outcome.batch.x[[i for i, _ in group]]
            classes = None
            if served.loaded.roles.value is None:
                found = [self._class_of(outcome.predictions[k], served.labels) for _, k in group]
                if any(c is None for c in found):
                    continue
                classes = np.asarray(found, dtype=np.int64)
            baseline = self.baseline(served.loaded, outcome)
            explained = self.explainer.explain(x, baseline, score_function(served.loaded, classes))
            for (_, k), explanation in zip(group, explained, strict=True):
                out[k] = explanation
        return out

    def _keep(self, outcome: TickOutcome, rows: Sequence[tuple[int, int]]) -> None:
        for i, k in rows:
            p = outcome.predictions[k]
            served = self._served(outcome, p)
            cls = self._class_of(p, served.labels)
            explainable = served.loaded.roles.value is not None or cls is not None
            classes = None if cls is None else np.asarray([cls], dtype=np.int64)
            self.explainer.keep(
                p.id,
                outcome.batch.x[i : i + 1].copy(),
                self.baseline(served.loaded, outcome),
                score_function(served.loaded, classes) if explainable else None,
            )
