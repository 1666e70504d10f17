"""Response models of the REST API. Times are ISO 8601 UTC; quality is "Good"/"Uncertain"/"Bad"."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from bridge.types import ComponentHealth, Explanation, InputSnapshot, Prediction, Quality

from .timeparse import epoch_to_datetime
from .view import ModelInfo, TagState

__all__ = [
    "ComponentOut",
    "ContributionOut",
    "ErrorOut",
    "ExplanationOut",
    "HealthOut",
    "HealthSummaryOut",
    "InputOut",
    "ModelOut",
    "PredictionOut",
    "TagOut",
    "overall_status",
]

QualityLabel = Literal["Good", "Uncertain", "Bad"]
Value = bool | int | float | str | None


def _label(q: Quality) -> QualityLabel:
    if q is Quality.GOOD:
        return "Good"
    if q is Quality.UNCERTAIN:
        return "Uncertain"
    return "Bad"


class ErrorOut(BaseModel):
    """An RFC 9457 problem detail, sent as ``application/problem+json``."""

    type: str = Field(description="`about:blank`: the status says what kind of problem it is.")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What was wrong with the request, in words.")
    instance: str = Field(description="The path of the request.")


class TagOut(BaseModel):
    tag: str = Field(description="Tag id, `asset.name`.")
    asset: str
    name: str
    source: str = Field(description="Name of the source (connection) the tag comes from.")
    value: Value
    unit: str
    quality: QualityLabel
    reason: str = Field(description="Why quality is not Good; empty when it is.")
    source_time: datetime | None
    server_time: datetime | None
    received_time: datetime | None
    age_s: float | None = Field(
        description="Seconds since the tag's timestamp "
        "(source time, else server time, else received time)."
    )

    @classmethod
    def of(cls, s: TagState, now: float) -> TagOut:
        newest = next(
            (t for t in (s.source_time, s.server_time, s.received_time) if t is not None), None
        )
        return cls(
            tag=s.tag,
            asset=s.asset,
            name=s.name,
            source=s.source,
            value=s.value,
            unit=s.unit,
            quality=_label(s.quality),
            reason=s.reason,
            source_time=epoch_to_datetime(s.source_time),
            server_time=epoch_to_datetime(s.server_time),
            received_time=epoch_to_datetime(s.received_time),
            age_s=None if newest is None else max(0.0, now - newest),
        )


class InputOut(BaseModel):
    tag: str
    value: Value
    quality: QualityLabel
    source_time: datetime | None

    @classmethod
    def of(cls, i: InputSnapshot) -> InputOut:
        return cls(
            tag=i.tag,
            value=i.value,
            quality=_label(i.quality),
            source_time=epoch_to_datetime(i.source_time),
        )


class ContributionOut(BaseModel):
    feature: str = Field(description="Model input, `<tag>.<stat>`.")
    value: float = Field(description="The input's value in this prediction.")
    baseline: float = Field(description="Its normal value (reference mean of the training data).")
    effect: float = Field(
        description="Output with the input as measured minus output with it at its baseline "
        "(a classifier's probability of the chosen class, a regressor's value)."
    )


class ExplanationOut(BaseModel):
    reason: str = Field(
        description="One line for operators, e.g. `bearing temperature +18 °C above normal`."
    )
    top: list[ContributionOut] = Field(description="Top contributing inputs, largest first.")

    @classmethod
    def of(cls, e: Explanation) -> ExplanationOut:
        return cls(
            reason=e.reason,
            top=[
                ContributionOut(
                    feature=c.feature, value=c.value, baseline=c.baseline, effect=c.effect
                )
                for c in e.top
            ],
        )


class PredictionOut(BaseModel):
    id: str = Field(description="Deterministic UUID; also the MES Idempotency-Key.")
    seq: int
    asset: str
    model: str
    version: str
    sha256: str
    value: str | float | None
    score: float | None
    quality: QualityLabel
    reason: str
    timestamp: datetime | None
    input_age_s: float | None = Field(description="Age of the oldest input when predicted.")
    inputs: list[InputOut]
    explanation: ExplanationOut | None = Field(
        None, description="Top contributing inputs, when the model's `explain:` chose this one."
    )
    drift_score: float | None = Field(
        None, description="The asset's drift score (largest PSI over the inputs) at this time."
    )
    historical: bool = Field(
        False,
        description="Made after the fact for `timestamp`, a past time (the model's "
        "`backfill: {predictions: true}` over an outage gap filled from the server's "
        "history); false for a live prediction. Never one of the latest predictions.",
    )

    @classmethod
    def of(cls, p: Prediction) -> PredictionOut:
        return cls(
            id=p.id,
            seq=p.seq,
            asset=p.asset,
            model=p.model,
            version=p.version,
            sha256=p.sha256,
            value=p.value,
            score=p.score,
            quality=_label(p.quality),
            reason=p.reason,
            timestamp=epoch_to_datetime(p.timestamp),
            input_age_s=p.input_age_s,
            inputs=[InputOut.of(i) for i in p.inputs],
            explanation=None if p.explanation is None else ExplanationOut.of(p.explanation),
            drift_score=p.drift_score,
            historical=p.historical,
        )


class ModelOut(BaseModel):
    name: str
    version: str
    sha256: str
    path: str
    loaded_at: datetime | None
    assets: list[str]
    inputs: list[str] = Field(description="Feature names in input order, e.g. `vibration.mean`.")

    @classmethod
    def of(cls, m: ModelInfo) -> ModelOut:
        return cls(
            name=m.name,
            version=m.version,
            sha256=m.sha256,
            path=m.path,
            loaded_at=epoch_to_datetime(m.loaded_at),
            assets=list(m.assets),
            inputs=list(m.inputs),
        )


class ComponentOut(BaseModel):
    name: str
    state: Literal["ok", "degraded", "down", "starting", "stopped"]
    detail: str
    counters: dict[str, int]

    @classmethod
    def of(cls, c: ComponentHealth) -> ComponentOut:
        return cls(name=c.name, state=c.state, detail=c.detail, counters=dict(c.counters))


OverallStatus = Literal["ok", "degraded", "down"]


def overall_status(components: Sequence[ComponentHealth]) -> OverallStatus:
    """ "down" only when nothing works, "degraded" when anything is not "ok".

    One unreachable PLC or MES must not make an orchestrator restart the whole gateway, which
    would also stop every other asset; the components list says what is wrong.
    """
    if not components:
        return "ok"
    if all(c.state in ("down", "stopped") for c in components):
        return "down"
    if any(c.state != "ok" for c in components):
        return "degraded"
    return "ok"


class HealthSummaryOut(BaseModel):
    """What anyone may know: whether the gateway is up (degraded counts as up; which part is
    degraded, and why, needs a key)."""

    status: Literal["up", "down"]


class HealthOut(BaseModel):
    status: OverallStatus
    gateway_id: str
    started_at: datetime | None
    uptime_s: float
    components: list[ComponentOut]

    @classmethod
    def of(
        cls, gateway_id: str, started_at: float, components: Sequence[ComponentHealth]
    ) -> HealthOut:
        return cls(
            status=overall_status(components),
            gateway_id=gateway_id,
            started_at=epoch_to_datetime(started_at),
            uptime_s=max(0.0, time.time() - started_at),
            components=[ComponentOut.of(c) for c in components],
        )
