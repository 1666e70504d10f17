"""One prediction with its lineage; operator feedback on it; explanations on request; the
feedback metrics (mean time to acknowledge, autonomous decision coverage)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.store.actions import ActionCoverage
from bridge.store.apikeys import ApiKeyRecord
from bridge.store.labels import FeedbackMetrics, LabelRecord
from bridge.types import Feedback

from .auth import audit_actor, require, secured
from .deps import Explainers, Labels, Lineage, Queries, Services, Settings
from .params import WIDE_RANGE, Since, Until, bounded_range
from .schemas import ExplanationOut, PredictionOut
from .timeparse import epoch_to_datetime

__all__ = [
    "FeedbackIn",
    "FeedbackMetricsOut",
    "LabelOut",
    "PredictionDetailOut",
    "build_lineage_router",
]

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
PredictionId = Annotated[
    str, Path(pattern=UUID_PATTERN, description="The prediction's id (a UUID).")
]


class LabelOut(BaseModel):
    id: int
    prediction_id: str
    action: Literal["acknowledge", "confirm", "reject"]
    value: str | None = Field(description="The prediction's value the operator answered.")
    by: str = Field(description="Who (OPC UA user, or `by` of the REST request).")
    channel: str = Field(description="`opcua` or `rest`.")
    key_id: str | None = Field(description="API key that sent it (REST).")
    comment: str
    at: datetime | None

    @classmethod
    def of(cls, r: LabelRecord) -> LabelOut:
        action: Literal["acknowledge", "confirm", "reject"] = (
            "confirm"
            if r.action == "confirm"
            else "reject"
            if r.action == "reject"
            else "acknowledge"
        )
        return cls(
            id=r.id,
            prediction_id=r.prediction_id,
            action=action,
            value=r.value,
            by=r.by,
            channel=r.channel,
            key_id=r.key_id,
            comment=r.comment,
            at=epoch_to_datetime(r.at),
        )


class LineageOut(BaseModel):
    mapping_revision: str | None = Field(
        description="sha256 of the mapping file the prediction was made under "
        "(null for predictions stored before lineage was recorded)."
    )
    model_sha256: str = Field(description="sha256 of the ONNX file that made it.")
    model_version: str


class PredictionDetailOut(PredictionOut):
    lineage: LineageOut
    labels: list[LabelOut] = Field(
        description="Operator feedback on this prediction, oldest first."
    )


class FeedbackIn(BaseModel):
    action: Literal["acknowledge", "confirm", "reject"] = Field(
        description="`acknowledge`: seen; `confirm`: the prediction is right; `reject`: it is "
        "wrong (an override, counted against autonomous decision coverage)."
    )
    by: str = Field(min_length=1, max_length=200, description="Who answers (a person).")
    comment: str = Field(default="", max_length=2000)


class ActionCoverageOut(BaseModel):
    """The write-back actions' decisions in the period (by the time each was recorded)."""

    auto: int = Field(description="Writes the gateway made alone (mode `auto`).")
    confirmed: int = Field(description="Requests a person confirmed (mode `confirm`).")
    refused_by_person: int = Field(description="Requests a person refused.")
    refused_by_rules: int = Field(
        description="Decisions the limits or interlocks refused (also at confirmation)."
    )
    expired: int = Field(description="Requests not answered in time, or replaced by a newer.")
    overridden: int = Field(
        description="Automatic writes whose prediction an operator rejected (feedback "
        "`reject`, at any time)."
    )
    shadow: int = Field(description="What would have been written (shadow, or not armed).")
    faults: int = Field(description="Writes that failed or read back another value.")
    await_confirm: int = Field(description="Requests for confirmation made.")
    answered: int = Field(description="Requests a person answered (confirmed or refused).")
    mean_time_to_acknowledge_s: float | None = Field(
        description="Mean seconds from a request for confirmation to a person's answer."
    )

    @classmethod
    def of(cls, c: ActionCoverage) -> ActionCoverageOut:
        return cls(
            auto=c.auto,
            confirmed=c.confirmed,
            refused_by_person=c.refused_by_person,
            refused_by_rules=c.refused_by_rules,
            expired=c.expired,
            overridden=c.overridden,
            shadow=c.shadow,
            faults=c.faults,
            await_confirm=c.await_confirm,
            answered=c.answered,
            mean_time_to_acknowledge_s=c.mean_time_to_acknowledge_s,
        )


class FeedbackMetricsOut(BaseModel):
    predictions: int = Field(description="Good predictions with a value in the period.")
    with_feedback: int = Field(description="Of those, predictions with any operator feedback.")
    acknowledged: int
    confirmed: int
    rejected: int
    mean_time_to_acknowledge_s: float | None = Field(
        description="Mean seconds from a prediction to its first operator feedback."
    )
    autonomous_decision_coverage: float | None = Field(
        description="Share of the predictions no operator overrode (rejected); null without "
        "predictions."
    )
    actions: ActionCoverageOut | None = Field(
        None, description="The write-back actions' decisions in the same period."
    )

    @classmethod
    def of(cls, m: FeedbackMetrics, actions: ActionCoverage | None = None) -> FeedbackMetricsOut:
        return cls(
            predictions=m.predictions,
            with_feedback=m.with_feedback,
            acknowledged=m.acknowledged,
            confirmed=m.confirmed,
            rejected=m.rejected,
            mean_time_to_acknowledge_s=m.mean_time_to_acknowledge_s,
            autonomous_decision_coverage=m.autonomous_decision_coverage,
            actions=None if actions is None else ActionCoverageOut.of(actions),
        )


def build_lineage_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["predictions"])

    @router.get(
        "/predictions/{prediction_id}",
        response_model=PredictionDetailOut,
        summary="One stored prediction with its lineage and operator feedback",
        **secured(Scope.READ),
    )
    async def prediction(
        queries: Queries, repo: Lineage, prediction_id: PredictionId
    ) -> PredictionDetailOut:
        found = await queries.run(repo.get, prediction_id)
        if found is None:
            raise HTTPException(404, f"no stored prediction {prediction_id}")
        p = found.prediction
        base = PredictionOut.of(p)
        return PredictionDetailOut(
            **base.model_dump(),
            lineage=LineageOut(
                mapping_revision=found.mapping_revision,
                model_sha256=p.sha256,
                model_version=p.version,
            ),
            labels=[LabelOut.of(r) for r in found.labels],
        )

    @router.post(
        "/predictions/{prediction_id}/feedback",
        response_model=LabelOut,
        status_code=201,
        summary="Acknowledge, confirm or reject a prediction",
        **secured(Scope.OPERATE, (400, "The body is not readable")),
    )
    async def feedback(
        request: Request,
        queries: Queries,
        repo: Lineage,
        labels: Labels,
        key: Annotated[ApiKeyRecord, Depends(require(Scope.OPERATE))],
        prediction_id: PredictionId,
        body: FeedbackIn,
    ) -> LabelOut:
        found = await queries.run(repo.get, prediction_id)
        if found is None:
            raise HTTPException(404, f"no stored prediction {prediction_id}")
        p = found.prediction
        # The ledger names the key, and the console when the call rode on its session.
        actor, channel = audit_actor(request, key)
        answer = Feedback(
            prediction_id=p.id,
            asset=p.asset,
            model=p.model,
            action=body.action,
            by=body.by.strip() or key.name,
            channel="rest",
            prediction_time=p.timestamp,
            value=p.value,
            comment=body.comment,
            key_id=key.key_id,
        )
        record = await queries.run(lambda: labels.add(answer, actor=actor, channel=channel))
        return LabelOut.of(record)

    @router.get(
        "/predictions/{prediction_id}/explanation",
        response_model=ExplanationOut,
        summary="Explain a recent prediction now (models with `explain: {mode: on_request}`)",
        **secured(Scope.READ),
    )
    async def explain(
        queries: Queries, explainers: Explainers, prediction_id: PredictionId
    ) -> ExplanationOut:
        for explainer in explainers.values():
            found = await queries.run(explainer.explain_kept, prediction_id)
            if found is not None:
                return ExplanationOut.of(found)
        raise HTTPException(
            404,
            f"prediction {prediction_id} is not among the recent predictions kept for "
            "explanation (only models with explain mode on_request keep them)",
        )

    @router.get(
        "/feedback/metrics",
        response_model=FeedbackMetricsOut,
        summary="Mean time to acknowledge and autonomous decision coverage, of predictions "
        "and of write-back actions",
        **secured(Scope.READ, WIDE_RANGE),
    )
    async def feedback_metrics(
        services: Services,
        settings: Settings,
        queries: Queries,
        labels: Labels,
        since: Since = None,
        until: Until = None,
    ) -> FeedbackMetricsOut:
        since_ts, until_ts = bounded_range(settings.max_history_days, since, until)
        metrics = await queries.run(labels.metrics, since_ts, until_ts)
        coverage = await queries.run(services.action_log.coverage, since_ts, until_ts)
        return FeedbackMetricsOut.of(metrics, coverage)

    return router
