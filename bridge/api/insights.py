"""``GET /api/v1/insights``: anonymised operational insights for third parties (scope
``insights``; ``admin`` keys may read them too, to check what is published).

Aggregates only, per model, label and calendar period (UTC hours, days or ISO weeks): how many
predictions and of which label, how available the models' inputs were, how often drift was
detected, how many alerts were raised and how fast they were acknowledged. Assets are dropped,
or with ``by_asset=true`` named only by a salted hash; small groups are suppressed
(bridge.api.anonymity has the rules). No model version or sha256, no tag name, no free text
(explanations, comments, who acknowledged) is ever part of the answer.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Generic, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from bridge.auth import Scope
from bridge.config.spec import InsightsSettings
from bridge.store.insights import (
    PERIODS,
    AlertPeriod,
    InsightRepository,
    InsightWindow,
    LabelPeriod,
    ModelPeriod,
)

from .anonymity import AssetKeys, has_rare_count, k_anonymous
from .auth import secured
from .deps import Insights, Queries, Settings
from .params import time_param
from .timeparse import MAX_EPOCH_S

__all__ = [
    "AlertPeriodOut",
    "InsightsOut",
    "LabelPeriodOut",
    "ModelPeriodOut",
    "build_insights_router",
    "compute_insights",
]

Period = Literal["hour", "day", "week"]
DEFAULT_DAYS = 7  # the range when `from` is not given
# Rows one series may hold; a request that would give more is refused (400), not truncated.
MAX_ROWS = 100_000
TOO_MANY = (
    400,
    "The range is wider than gateway.api.insights.max_range_days, the answer would hold "
    "too many rows, or a per-asset breakdown was asked for without a salt",
)
_TIME_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_S},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
    ]
}

_ASSET_KEY = Field(
    description="With `by_asset=true`: the asset as HMAC-SHA256(gateway secret, asset name), "
    "first 16 hex digits; the same asset has the same key while the secret stays. Null in "
    "aggregate rows."
)
_ASSETS = Field(description="Distinct assets behind the row's figures (at least `k`).")
_PERIOD_START = Field(description="Start of the period (UTC).")


class ModelPeriodOut(BaseModel):
    period_start: datetime = _PERIOD_START
    model: str
    asset_key: str | None = _ASSET_KEY
    assets: int = _ASSETS
    predictions: int = Field(description="Predictions made in the period.")
    good_predictions: int = Field(description="Of those, made from Good inputs only.")
    availability: float = Field(
        description="good_predictions / predictions: the share of the model's runs whose "
        "inputs were all Good (fresh, in range, from a healthy source)."
    )
    drift_checks: int = Field(
        description="Predictions that carried the drift monitor's score (the model has drift "
        "monitoring and the asset's window was full)."
    )
    drift_events: int = Field(
        description="Drift detections (one per excursion of an asset above the threshold)."
    )
    drifted_asset_share: float = Field(
        description="Share of the row's assets with at least one drift detection."
    )


class LabelPeriodOut(BaseModel):
    period_start: datetime = _PERIOD_START
    model: str
    label: str = Field(description="A class the classifier predicted, e.g. `cavitation`.")
    asset_key: str | None = _ASSET_KEY
    assets: int = _ASSETS
    predictions: int = Field(description="Predictions of this label in the period.")


class AlertPeriodOut(BaseModel):
    period_start: datetime = _PERIOD_START
    model: str
    label: str = Field(description="The label the alerts were raised for.")
    asset_key: str | None = _ASSET_KEY
    assets: int = _ASSETS
    raised: int = Field(description="Alerts raised in the period (drift alerts excluded).")
    acknowledged: int = Field(description="Of those, acknowledged by now.")
    mean_time_to_ack_s: float | None = Field(
        description="Mean seconds from raising to acknowledgement over the acknowledged ones "
        "(MTTA); null when none is."
    )


class ModelSeriesOut(BaseModel):
    rows: list[ModelPeriodOut]
    suppressed: int = Field(description="Rows left out by the anonymity rules.")


class LabelSeriesOut(BaseModel):
    rows: list[LabelPeriodOut]
    suppressed: int = Field(description="Rows left out by the anonymity rules.")


class AlertSeriesOut(BaseModel):
    rows: list[AlertPeriodOut]
    suppressed: int = Field(description="Rows left out by the anonymity rules.")


class InsightsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    period: Period
    from_: datetime = Field(
        alias="from", description="Start of the first period (the range, widened to periods)."
    )
    to: datetime = Field(description="End of the last period (exclusive).")
    k: int = Field(description="The k of the anonymity rules (gateway.api.insights.k).")
    by_asset: bool
    models: ModelSeriesOut = Field(description="Per model and period.")
    labels: LabelSeriesOut = Field(description="Per model, predicted label and period.")
    alerts: AlertSeriesOut = Field(description="Per model, alert label and period.")
    suppressed: int = Field(description="Rows left out by the anonymity rules, all series.")


R = TypeVar("R", ModelPeriod, LabelPeriod, AlertPeriod)


@dataclass(frozen=True, slots=True)
class _Published(Generic[R]):
    rows: list[R]
    suppressed: int


def _group(row: ModelPeriod | LabelPeriod | AlertPeriod) -> tuple[int, str, str]:
    return (row.bucket, row.model, getattr(row, "label", ""))


def _rare_counts(row: ModelPeriod | LabelPeriod | AlertPeriod) -> tuple[int, ...]:
    if isinstance(row, ModelPeriod):
        return (row.drift_events,)
    if isinstance(row, LabelPeriod):
        return (row.predictions,)
    return (row.raised, row.acknowledged)


def _publish(fetch: Callable[[bool, int], Sequence[R]], k: int, by_asset: bool) -> _Published[R]:
    """The rows of one series that pass the rules; ``fetch(by_asset, limit)`` reads them."""
    rows = fetch(by_asset, MAX_ROWS + 1)
    _refuse_if_full(rows)
    if not by_asset:
        kept = [g for g in rows if k_anonymous(g.assets, k)]
        return _Published(kept, len(rows) - len(kept))
    # One row per asset of a group: its size is its number of rows (all of them are here).
    sizes = Counter(_group(r) for r in rows)
    kept = [
        r
        for r in rows
        if k_anonymous(sizes.get(_group(r), 0), k) and not has_rare_count(_rare_counts(r), k)
    ]
    return _Published(kept, len(rows) - len(kept))


def _refuse_if_full(rows: Sequence[object]) -> None:
    if len(rows) > MAX_ROWS:
        raise HTTPException(
            400,
            f"the answer would hold more than {MAX_ROWS} rows of a series: ask for a shorter "
            "range, a longer period, one model (`model`) or no per-asset breakdown",
        )


def compute_insights(
    repo: InsightRepository,
    window: InsightWindow,
    period: Period,
    k: int,
    keys: AssetKeys | None,
) -> InsightsOut:
    """The published answer; ``keys`` None: aggregates only. Blocking (database reads)."""
    by_asset = keys is not None
    models = _publish(lambda a, n: repo.model_periods(window, a, n), k, by_asset)
    labels = _publish(lambda a, n: repo.label_periods(window, a, n), k, by_asset)
    alerts = _publish(lambda a, n: repo.alert_periods(window, a, n), k, by_asset)

    def start(bucket: int) -> datetime:
        return datetime.fromtimestamp(window.start_of(bucket), tz=UTC)

    def key(asset: str | None) -> str | None:
        return None if asset is None or keys is None else keys.key(asset)

    model_rows = [
        ModelPeriodOut(
            period_start=start(m.bucket),
            model=m.model,
            asset_key=key(m.asset),
            assets=m.assets,
            predictions=m.predictions,
            good_predictions=m.good,
            availability=m.good / m.predictions if m.predictions else 0.0,
            drift_checks=m.drift_checks,
            drift_events=m.drift_events,
            drifted_asset_share=min(1.0, m.drifted_assets / m.assets) if m.assets else 0.0,
        )
        for m in models.rows
    ]
    label_rows = [
        LabelPeriodOut(
            period_start=start(r.bucket),
            model=r.model,
            label=r.label,
            asset_key=key(r.asset),
            assets=r.assets,
            predictions=r.predictions,
        )
        for r in labels.rows
    ]
    alert_rows = [
        AlertPeriodOut(
            period_start=start(a.bucket),
            model=a.model,
            label=a.label,
            asset_key=key(a.asset),
            assets=a.assets,
            raised=a.raised,
            acknowledged=a.acknowledged,
            mean_time_to_ack_s=a.mean_time_to_ack_s,
        )
        for a in alerts.rows
    ]
    # Sorted by what is published, never by the asset's name (its order would leak it).
    model_rows.sort(key=lambda r: (r.period_start, r.model, r.asset_key or ""))
    label_rows.sort(key=lambda r: (r.period_start, r.model, r.label, r.asset_key or ""))
    alert_rows.sort(key=lambda r: (r.period_start, r.model, r.label, r.asset_key or ""))
    return InsightsOut(
        period=period,
        from_=datetime.fromtimestamp(window.since, tz=UTC),
        to=datetime.fromtimestamp(window.until, tz=UTC),
        k=k,
        by_asset=by_asset,
        models=ModelSeriesOut(rows=model_rows, suppressed=models.suppressed),
        labels=LabelSeriesOut(rows=label_rows, suppressed=labels.suppressed),
        alerts=AlertSeriesOut(rows=alert_rows, suppressed=alerts.suppressed),
        suppressed=models.suppressed + labels.suppressed + alerts.suppressed,
    )


def insight_window(
    period: Period,
    since_text: str | None,
    until_text: str | None,
    model: str | None,
    conf: InsightsSettings,
    now: float,
) -> InsightWindow:
    """The periods a request covers: ``from`` widened down and ``to`` up to whole periods
    (``to`` defaults to now, ``from`` to 7 days before it). ``from`` after ``to`` is an empty
    range, not an error, as everywhere in this API; a range wider than
    ``insights.max_range_days`` is refused (400)."""
    until = time_param("to", until_text)
    until = now if until is None else until
    since = time_param("from", since_text)
    since = until - DEFAULT_DAYS * 86400 if since is None else since
    if until - since > conf.max_range_days * 86400:
        raise HTTPException(
            400,
            f"from..to spans {(until - since) / 86400:.1f} days; at most "
            f"{conf.max_range_days:g} days are allowed (gateway.api.insights.max_range_days): "
            "ask for narrower ranges in turn",
        )
    width, origin = PERIODS[period]
    # Nothing is stored before the first period start (1970): the start never goes below it.
    start = max(origin, origin + math.floor((since - origin) / width) * width)
    end = max(start, origin + math.ceil((until - origin) / width) * width)
    if since > until:
        end = start
    return InsightWindow(float(start), float(end), width, origin, model)


def build_insights_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["insights"])

    @router.get(
        "/insights",
        response_model=InsightsOut,
        summary="Anonymised insights: aggregates per model, label and period",
        description="For third parties (keys of scope `insights`, which may call nothing "
        "else; `admin` keys may read it too). Counts of predictions per label, availability "
        "(share of predictions made from Good inputs), drift detections and alerts with their "
        "mean time to acknowledge, per UTC hour, day or ISO week. Assets are dropped, or named "
        "by a salted hash with `by_asset=true`. A row computed from fewer than `k` distinct "
        "assets (gateway.api.insights.k) is left out and counted in `suppressed`; so is a "
        "per-asset row showing an event count between 1 and k-1.",
        **secured(Scope.INSIGHTS, TOO_MANY),
    )
    async def insights(
        settings: Settings,
        queries: Queries,
        repo: Insights,
        period: Annotated[
            Period, Query(description="Length of each period: UTC hours, days or ISO weeks.")
        ] = "day",
        since: Annotated[
            str | None,
            Query(
                alias="from",
                description="From this time (widened down to its period's start): ISO 8601 "
                "or epoch seconds. Default: 7 days before `to`.",
                json_schema_extra=_TIME_SCHEMA,
            ),
        ] = None,
        until: Annotated[
            str | None,
            Query(
                alias="to",
                description="Up to this time (widened up to its period's end): ISO 8601 or "
                "epoch seconds. Default: now.",
                json_schema_extra=_TIME_SCHEMA,
            ),
        ] = None,
        model: Annotated[
            str | None, Query(min_length=1, max_length=200, description="Only this model.")
        ] = None,
        by_asset: Annotated[
            bool,
            Query(
                description="One row per asset too, each named by its salted key "
                "(needs gateway.api.insights.salt)."
            ),
        ] = False,
    ) -> InsightsOut:
        conf = settings.insights
        window = insight_window(period, since, until, model, conf, time.time())
        keys = None
        if by_asset:
            if conf.salt is None:
                raise HTTPException(
                    400,
                    "by_asset: this gateway publishes no per-asset breakdown (set "
                    "gateway.api.insights.salt to a secret ${ENV} to allow it)",
                )
            keys = AssetKeys(conf.salt.get_secret_value())
        return await queries.run(compute_insights, repo, window, period, conf.k, keys)

    return router
