"""What the Asset detail page shows of each model serving the asset (the explanation, drift
per input, the score over time) and of its inputs over time, from the live state and the
store's history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from bridge.api.services import ApiServices
from bridge.api.view import TagState
from bridge.types import Explanation, Prediction

from .charts import Series, bar_chart, line_chart
from .live import AssetRow

__all__ = ["ModelInsight", "inputs_over_time", "model_insight"]


@dataclass(frozen=True, slots=True)
class ModelInsight:
    row: AssetRow
    prediction: Prediction | None  # the latest, which the feedback buttons answer
    explanation: Explanation | None
    explained: Prediction | None  # the prediction the explanation belongs to
    explain_chart: Markup | None
    drift_chart: Markup | None
    trend: Markup


def _explained(
    latest: Prediction | None, items: Sequence[Prediction], model: str
) -> Prediction | None:
    """The latest prediction if it carries an explanation, else the newest stored one that
    does (by default a model explains only when its label changes)."""
    if latest is not None and latest.explanation is not None:
        return latest
    return next(
        (h for h in reversed(items) if h.model == model and h.explanation is not None), None
    )


async def model_insight(
    services: ApiServices,
    row: AssetRow,
    latest: Sequence[Prediction],
    items: Sequence[Prediction],
    range_name: str,
    since: float,
    until: float,
) -> ModelInsight:
    """``items``: the asset's stored predictions in the range, oldest first."""
    p = next((q for q in latest if q.model == row.model), None)
    explainer = services.explainers.get(row.model)
    explained = _explained(p, items, row.model)
    explanation = explained.explanation if explained is not None else None
    if explanation is None and p is not None and explainer is not None:
        # A model that explains on request keeps its recent predictions for it.
        explanation = await services.queries.run(explainer.explain_kept, p.id)
        explained = p if explanation is not None else None
    drift = sorted(
        (explainer.feature_drift(row.asset) if explainer is not None else {}).items(),
        key=lambda kv: -kv[1],
    )
    points = [(q.timestamp, q.score) for q in items if q.model == row.model]
    return ModelInsight(
        row=row,
        prediction=p,
        explanation=explanation,
        explained=explained,
        explain_chart=bar_chart(
            [(c.feature, c.effect) for c in explanation.top],
            title=f"What moved the {row.model} score",
        )
        if explanation is not None
        else None,
        drift_chart=bar_chart(
            drift, title=f"Drift of each input against the reference (PSI), {row.model}"
        )
        if drift
        else None,
        trend=line_chart(
            [Series(f"{row.model} score", points)] if points else [],
            title=f"{row.model} score, last {range_name}",
            since=since,
            until=until,
        ),
    )


def inputs_over_time(
    items: Sequence[Prediction],
    tags: Sequence[TagState],
    range_name: str,
    since: float,
    until: float,
) -> list[tuple[str, str, Markup]]:
    """(tag, unit, chart) of each numeric model input, from the inputs stored with each
    prediction (the lineage): what the model saw, when it ran."""
    by_tag: dict[str, list[tuple[float, float | None]]] = {}
    for p in items:
        for i in p.inputs:
            value = i.value
            number = float(value) if isinstance(value, int | float) else None
            if number is not None and not math.isfinite(number):
                number = None
            by_tag.setdefault(i.tag, []).append((p.timestamp, number))
    units = {t.tag: t.unit for t in tags}
    return [
        (
            tag,
            units.get(tag, ""),
            line_chart(
                [Series(tag, points)],
                title=f"{tag}, last {range_name}",
                unit=units.get(tag, ""),
                since=since,
                until=until,
            ),
        )
        for tag, points in sorted(by_tag.items())
    ]
