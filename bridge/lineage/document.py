"""One decision as a JSON document: the same models serve the CLI's file and the REST answer
(whose OpenAPI schema they are), and the OpenLineage events are made from them, so the two
formats carry the same facts.

Numbers are finite in every document (JSON has no NaN): a tag or prediction value that is not
finite is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (values may be
strings anyway), any other such number as null.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bridge.redact import redact_text
from bridge.store.decisions import DeadEvent, QueuedEvent, StoredDecision
from bridge.types import InputSnapshot, Prediction

from .context import LineageContext, OutputRef

__all__ = [
    "DELIVERY_STATUSES",
    "NOT_RECORDED",
    "Decision",
    "DecisionAudit",
    "DecisionContribution",
    "DecisionDelivery",
    "DecisionExplanation",
    "DecisionFeedback",
    "DecisionInput",
    "DecisionModel",
    "DecisionOperatorActions",
    "DecisionOutput",
    "build_decision",
]

Value = str | float | int | bool | None

DeliveryStatus = Literal["pending", "dead_letter", "no_outbox_row", "not_recorded"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = (
    "pending",
    "dead_letter",
    "no_outbox_row",
    "not_recorded",
)

# What the store cannot tell, said once per export (the file's header, the API's description).
NOT_RECORDED = (
    "Outputs written live (kind opcua-server, the gateway's OPC UA server) leave no record per "
    "prediction in the store: whether and when a prediction reached them is not known.",
    "A durable output's event (MES REST, webhook, MQTT UNS or Sparkplug) is removed from the "
    "outbox as soon as its destination accepts it: the acceptance and the answer to it are not "
    "recorded. A pending event or a dead letter keeps its attempts and its last answer.",
    "Which outputs a mapping revision had is known only from that mapping file: a prediction "
    "made under another revision than the one given lists only the outbox's facts.",
)

_PENDING_NOTE = "queued in the outbox: not accepted yet"
_DEAD_NOTE = "rejected for good: a dead letter (bridge outbox replay sends it again)"
_NO_ROW_NOTE = (
    "no outbox row: accepted (accepted events are removed at once, with no record of the "
    "answer) or never queued (not selected by the output's event rules, or refused or dropped "
    "while the outbox was full); the store does not tell which"
)
_LIVE_NOTE = (
    "written live when the prediction was made (the output was configured in this revision); "
    "the store keeps no record of the write"
)


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _value(v: Value) -> Value:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return v


def _time(ts: float | None) -> datetime | None:
    if ts is None or not math.isfinite(ts) or ts <= 0:
        return None
    return datetime.fromtimestamp(ts, tz=UTC)


class DecisionInput(BaseModel):
    tag: str = Field(description="The tag id, `<asset>.<tag>`.")
    value: Value = Field(description="Its value when the prediction was made.")
    quality: str = Field(description="`Good`, `Uncertain` or `Bad`.")
    source_time: datetime | None = Field(description="When the device measured it, if known.")
    source: str | None = Field(description="The source (`sources:` name) it is read from.")
    namespace: str = Field(
        description="Its OpenLineage dataset namespace: the source's address when the mapping "
        "is known, `bridge://<gateway>/sources/<source>` with the source name only, "
        "`bridge://<gateway>/tags` without either."
    )


class DecisionModel(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="sha256 of the ONNX file that made the prediction.")


class DecisionContribution(BaseModel):
    feature: str
    value: float | None
    baseline: float | None
    effect: float | None


class DecisionExplanation(BaseModel):
    reason: str
    top: list[DecisionContribution]


class DecisionOutput(BaseModel):
    value: Value
    score: float | None
    quality: str
    reason: str = Field(description="Why the quality is not Good, if it is not.")
    input_age_s: float | None = Field(description="Age of the oldest input when predicted.")
    drift_score: float | None = Field(description="The asset's drift score at this time.")
    historical: bool = Field(
        False,
        description="Made after the fact for that past time (backfill predictions over an "
        "outage gap), not live.",
    )


class DecisionDelivery(BaseModel):
    output: str = Field(description="The output (`outputs:` name, the outbox's destination).")
    kind: str | None = Field(description="Its kind, when the mapping revision is known.")
    channel: str | None = Field(description="`opcua`, `mes`, `mqtt`, `webhook`, or null.")
    durable: bool | None = Field(description="Fed through the outbox (null: unknown).")
    endpoint: str | None = Field(description="scheme://host:port of its peer, if known.")
    status: DeliveryStatus = Field(
        description="`pending`: in the outbox, not accepted yet; `dead_letter`: rejected for "
        "good; `no_outbox_row`: accepted or never queued (the store does not tell which); "
        "`not_recorded`: a live output, nothing recorded per prediction."
    )
    idempotency_key: str | None = Field(description="The event's Idempotency-Key.")
    attempts: int | None = Field(description="Rejections (non-retryable answers) so far.")
    retries: int | None = Field(description="Retryable failures so far.")
    last_answer: str | None = Field(
        description="The destination's last answer or failure (URLs redacted), if any."
    )
    queued_at: datetime | None
    failed_at: datetime | None = Field(description="First failure (pending) or dead-lettering.")
    next_attempt_at: datetime | None
    note: str


class DecisionFeedback(BaseModel):
    id: int
    action: str = Field(description="`acknowledge`, `confirm` or `reject`.")
    value: str | None = Field(description="The prediction's value the operator answered.")
    by: str
    channel: str
    key_id: str | None
    comment: str
    at: datetime | None


class DecisionAudit(BaseModel):
    seq: int = Field(description="Position in the hash-chained audit ledger.")
    at: str
    gateway: str
    actor: str
    channel: str
    action: str = Field(description="e.g. `operator.confirmed`.")
    subject: str
    before: Any = None
    after: Any = None
    reason: str
    hash: str = Field(description="The entry's hash (bridge audit verify checks the chain).")


class DecisionOperatorActions(BaseModel):
    feedback: list[DecisionFeedback] = Field(description="Operator feedback, oldest first.")
    audit: list[DecisionAudit] = Field(
        description="Audit ledger entries whose subject is this prediction, in ledger order."
    )


class Decision(BaseModel):
    id: str = Field(description="The prediction id (a UUID; the MES Idempotency-Key).")
    gateway: str
    asset: str
    seq: int
    time: datetime | None = Field(description="When the prediction was made.")
    fence: int | None = Field(description="Fleet lease generation it was made under.")
    mapping_revision: str | None = Field(
        description="sha256 of the mapping file (null: stored before lineage was recorded)."
    )
    model: DecisionModel
    inputs: list[DecisionInput]
    output: DecisionOutput
    explanation: DecisionExplanation | None
    deliveries: list[DecisionDelivery] = Field(
        description="Each output: what the store knows of this prediction's delivery."
    )
    outputs_known: bool = Field(
        description="The outputs of the prediction's mapping revision are known (the export "
        "was given that mapping): outputs without an outbox fact are listed too."
    )
    operator_actions: DecisionOperatorActions


def _input(i: InputSnapshot, ctx: LineageContext) -> DecisionInput:
    source = ctx.source_of(i.tag)
    return DecisionInput(
        tag=i.tag,
        value=_value(i.value),
        quality=i.quality.label,
        source_time=_time(i.source_time),
        source=None if source is None else source.name,
        namespace=ctx.unknown_source_namespace() if source is None else source.namespace,
    )


def _answer(text: str) -> str | None:
    return redact_text(text) if text else None


def _pending(e: QueuedEvent, out: OutputRef | None) -> DecisionDelivery:
    return DecisionDelivery(
        **_output(e.destination, out),
        status="pending",
        idempotency_key=e.event_id,
        attempts=e.attempts,
        retries=e.retries,
        last_answer=_answer(e.last_error),
        queued_at=_time(e.created_at),
        failed_at=_time(e.first_failed_at),
        next_attempt_at=_time(e.next_attempt_at),
        note=_PENDING_NOTE,
    )


def _dead(d: DeadEvent, out: OutputRef | None) -> DecisionDelivery:
    return DecisionDelivery(
        **_output(d.destination, out),
        status="dead_letter",
        idempotency_key=d.event_id,
        attempts=d.attempts,
        retries=None,
        last_answer=_answer(d.last_error),
        queued_at=_time(d.created_at),
        failed_at=_time(d.failed_at),
        next_attempt_at=None,
        note=_DEAD_NOTE,
    )


def _unrecorded(p: Prediction, out: OutputRef) -> DecisionDelivery:
    return DecisionDelivery(
        **_output(out.name, out),
        status="no_outbox_row" if out.durable else "not_recorded",
        # A durable output's event would carry the prediction id as its Idempotency-Key.
        idempotency_key=p.id if out.durable else None,
        attempts=None,
        retries=None,
        last_answer=None,
        queued_at=None,
        failed_at=None,
        next_attempt_at=None,
        note=_NO_ROW_NOTE if out.durable else _LIVE_NOTE,
    )


def _output(name: str, out: OutputRef | None) -> dict[str, Any]:
    if out is None:
        # An outbox row names its destination only; without the revision's mapping its kind
        # is not known (nor for a destination removed since).
        return {"output": name, "kind": None, "channel": None, "durable": True, "endpoint": None}
    return {
        "output": name,
        "kind": out.kind,
        "channel": out.channel,
        "durable": out.durable,
        "endpoint": out.endpoint,
    }


def _deliveries(stored: StoredDecision, ctx: LineageContext) -> tuple[list[DecisionDelivery], bool]:
    known = ctx.outputs_of(stored.mapping_revision)
    by_name = {o.name: o for o in known or ()}
    found = [_pending(e, by_name.get(e.destination)) for e in stored.queued]
    found += [_dead(d, by_name.get(d.destination)) for d in stored.dead]
    seen = {d.output for d in found}
    if known is not None:
        found += [_unrecorded(stored.prediction, o) for o in known if o.name not in seen]
    return sorted(found, key=lambda d: (d.output, d.status)), known is not None


def build_decision(stored: StoredDecision, ctx: LineageContext) -> Decision:
    p = stored.prediction
    deliveries, outputs_known = _deliveries(stored, ctx)
    e = p.explanation
    return Decision(
        id=p.id,
        gateway=ctx.gateway_id,
        asset=p.asset,
        seq=p.seq,
        time=_time(p.timestamp),
        fence=p.fence,
        mapping_revision=stored.mapping_revision,
        model=DecisionModel(name=p.model, version=p.version, sha256=p.sha256),
        inputs=[_input(i, ctx) for i in p.inputs],
        output=DecisionOutput(
            value=_value(p.value),
            score=_finite(p.score),
            quality=p.quality.label,
            reason=p.reason,
            input_age_s=_finite(p.input_age_s),
            drift_score=_finite(p.drift_score),
            historical=p.historical,
        ),
        explanation=None
        if e is None
        else DecisionExplanation(
            reason=e.reason,
            top=[
                DecisionContribution(
                    feature=c.feature,
                    value=_finite(c.value),
                    baseline=_finite(c.baseline),
                    effect=_finite(c.effect),
                )
                for c in e.top
            ],
        ),
        deliveries=deliveries,
        outputs_known=outputs_known,
        operator_actions=DecisionOperatorActions(
            feedback=[
                DecisionFeedback(
                    id=r.id,
                    action=r.action,
                    value=r.value,
                    by=r.by,
                    channel=r.channel,
                    key_id=r.key_id,
                    comment=r.comment,
                    at=_time(r.at),
                )
                for r in stored.labels
            ],
            audit=[
                DecisionAudit(
                    seq=a.seq,
                    at=a.at,
                    gateway=a.gateway,
                    actor=a.actor,
                    channel=a.channel,
                    action=a.action,
                    subject=a.subject,
                    before=a.before,
                    after=a.after,
                    reason=a.reason,
                    hash=a.hash,
                )
                for a in stored.audit
            ],
        ),
    )
