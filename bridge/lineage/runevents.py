"""A decision as an OpenLineage run event (openlineage-python's ``event_v2`` classes), for a
data catalogue to ingest. Made from the JSON document (``bridge.lineage.document``), so both
formats carry the same facts; serialised with openlineage's own ``Serde``; never sent.

- job: namespace ``bridge://<gateway>``, name = the model's name (``jobType`` facet: a
  streaming model of this gateway);
- run: id = the prediction id (a UUID), ``COMPLETE`` at the prediction's time; facets: the
  processing engine (this gateway's version), ``bridge_decision`` (asset, sequence, fence,
  mapping revision) and ``bridge_operatorActions`` (feedback and ledger entries);
- inputs: one dataset per input tag, namespace = its source (address when known), name = the
  tag id; the ``datasource`` facet names the source, the ``bridge_tagReading`` input facet holds
  the value, quality and source time;
- output: the prediction dataset ``predictions/<asset>/<model>`` in ``bridge://<gateway>``, with
  ``bridge_model`` (name, version, sha256, mapping revision), ``bridge_prediction`` (value,
  score, quality, explanation) and ``bridge_delivery`` (what the store knows of each output).

The custom facets' JSON Schema is ``FACETS_SCHEMA``; each facet's ``_schemaURL`` points into it.
Importing this module loads openlineage-python (about half a second): callers import it only
when they make events.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import attr
from openlineage.client.constants import __version__ as OPENLINEAGE_VERSION
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    datasource_dataset,
    job_type_job,
    processing_engine_run,
)
from openlineage.client.serde import Serde

from .document import Decision

__all__ = [
    "FACETS_SCHEMA",
    "FACETS_SCHEMA_ID",
    "PRODUCER",
    "DecisionRunFacet",
    "DeliveryOutputFacet",
    "ModelOutputFacet",
    "OperatorActionsRunFacet",
    "PredictionOutputFacet",
    "TagReadingInputFacet",
    "event_dict",
    "run_event",
    "to_json_line",
]


def _bridge_version() -> str:
    try:
        return version("bridge-gateway")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


BRIDGE_VERSION = _bridge_version()
# A URI naming this software and its version, as OpenLineage asks of a producer.
PRODUCER = f"urn:bridge-gateway:{BRIDGE_VERSION}"
FACETS_SCHEMA_ID = "urn:bridge-gateway:openlineage-facets:1"


def _schema_url(name: str) -> str:
    return f"{FACETS_SCHEMA_ID}#/$defs/{name}"


# Field names in OpenLineage's camelCase, as its own facets have them.
@attr.define
class TagReadingInputFacet(InputDatasetFacet):
    """The input tag's state when the prediction was made."""

    quality: str
    value: Any = attr.field(default=None)
    sourceTime: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("TagReadingInputFacet")


@attr.define
class ModelOutputFacet(OutputDatasetFacet):
    """The model and mapping revision that made the prediction."""

    name: str
    version: str
    sha256: str
    mappingRevision: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("ModelOutputFacet")


@attr.define
class PredictionOutputFacet(OutputDatasetFacet):
    """What the model answered."""

    quality: str
    value: Any = attr.field(default=None)
    score: float | None = attr.field(default=None)
    reason: str | None = attr.field(default=None)
    inputAgeS: float | None = attr.field(default=None)
    driftScore: float | None = attr.field(default=None)
    explanation: dict[str, Any] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("PredictionOutputFacet")


@attr.define
class DeliveryOutputFacet(OutputDatasetFacet):
    """Where the prediction went, as far as the store knows (see ``notes``)."""

    deliveries: list[dict[str, Any]]
    outputsKnown: bool
    notes: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("DeliveryOutputFacet")


@attr.define
class DecisionRunFacet(RunFacet):
    """The decision's place in the gateway: asset, sequence, fleet fence, mapping revision."""

    gateway: str
    asset: str
    seq: int
    fence: int | None = attr.field(default=None)
    mappingRevision: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("DecisionRunFacet")


@attr.define
class OperatorActionsRunFacet(RunFacet):
    """Operator feedback on the prediction and the audit ledger's entries about it."""

    feedback: list[dict[str, Any]]
    audit: list[dict[str, Any]]

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("OperatorActionsRunFacet")


_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
_VALUE = {"type": ["string", "number", "boolean", "null"]}
_BASE = {"_producer": {"type": "string"}, "_schemaURL": {"type": "string"}}


def _facet(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**_BASE, **props},
        "required": ["_producer", "_schemaURL", *required],
        "additionalProperties": False,
    }


# The JSON Schema of the custom facets (draft 2020-12), for a catalogue that checks what it
# ingests. Serde leaves null fields out, so optional fields may be absent.
FACETS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FACETS_SCHEMA_ID,
    "$defs": {
        "TagReadingInputFacet": _facet(
            {
                "quality": {"enum": ["Good", "Uncertain", "Bad"]},
                "value": _VALUE,
                "sourceTime": {"type": "string", "format": "date-time"},
            },
            ["quality"],
        ),
        "ModelOutputFacet": _facet(
            {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "mappingRevision": {"type": "string"},
            },
            ["name", "version", "sha256"],
        ),
        "PredictionOutputFacet": _facet(
            {
                "quality": {"enum": ["Good", "Uncertain", "Bad"]},
                "value": _VALUE,
                "score": _NULLABLE_NUM,
                "reason": {"type": "string"},
                "inputAgeS": _NULLABLE_NUM,
                "driftScore": _NULLABLE_NUM,
                "explanation": {
                    "type": "object",
                    "properties": {
                        "reason": {"type": "string"},
                        "top": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "feature": {"type": "string"},
                                    "value": _NULLABLE_NUM,
                                    "baseline": _NULLABLE_NUM,
                                    "effect": _NULLABLE_NUM,
                                },
                                "required": ["feature"],
                            },
                        },
                    },
                    "required": ["reason", "top"],
                },
            },
            ["quality"],
        ),
        "DeliveryOutputFacet": _facet(
            {
                "outputsKnown": {"type": "boolean"},
                "notes": {"type": "array", "items": {"type": "string"}},
                "deliveries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "output": {"type": "string"},
                            "kind": _NULLABLE_STR,
                            "channel": _NULLABLE_STR,
                            "durable": {"type": ["boolean", "null"]},
                            "endpoint": _NULLABLE_STR,
                            "status": {
                                "enum": ["pending", "dead_letter", "no_outbox_row", "not_recorded"]
                            },
                            "idempotencyKey": _NULLABLE_STR,
                            "attempts": {"type": "integer"},
                            "retries": {"type": "integer"},
                            "lastAnswer": _NULLABLE_STR,
                            "queuedAt": _NULLABLE_STR,
                            "failedAt": _NULLABLE_STR,
                            "nextAttemptAt": _NULLABLE_STR,
                            "note": {"type": "string"},
                        },
                        "required": ["output", "status", "note"],
                    },
                },
            },
            ["deliveries", "outputsKnown"],
        ),
        "DecisionRunFacet": _facet(
            {
                "gateway": {"type": "string"},
                "asset": {"type": "string"},
                "seq": {"type": "integer"},
                "fence": {"type": "integer"},
                "mappingRevision": {"type": "string"},
            },
            ["gateway", "asset", "seq"],
        ),
        "OperatorActionsRunFacet": _facet(
            {
                "feedback": {"type": "array", "items": {"type": "object"}},
                "audit": {
                    "type": "array",
                    "items": {"type": "object", "required": ["seq", "action", "actor", "hash"]},
                },
            },
            ["feedback", "audit"],
        ),
    },
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel_keys(item: dict[str, Any]) -> dict[str, Any]:
    """One level of keys in OpenLineage's camelCase (``idempotency_key`` -> ``idempotencyKey``);
    values are left as they are (the ledger's own ``before``/``after`` documents)."""
    return {_camel(k): v for k, v in item.items()}


def run_event(decision: Decision) -> RunEvent:
    d = decision.model_dump(mode="json")
    producer = PRODUCER
    namespace = f"bridge://{decision.gateway}"
    inputs = []
    for item in d["inputs"]:
        facets: dict[str, Any] = {}
        if item["source"] is not None:
            facets["datasource"] = datasource_dataset.DatasourceDatasetFacet(
                name=item["source"], uri=item["namespace"], producer=producer
            )
        inputs.append(
            InputDataset(
                namespace=item["namespace"],
                name=item["tag"],
                facets=facets,
                inputFacets={
                    "bridge_tagReading": TagReadingInputFacet(
                        quality=item["quality"],
                        value=item["value"],
                        sourceTime=item["source_time"],
                        producer=producer,
                    )
                },
            )
        )
    out = d["output"]
    output = OutputDataset(
        namespace=namespace,
        name=f"predictions/{decision.asset}/{decision.model.name}",
        outputFacets={
            "bridge_model": ModelOutputFacet(
                name=decision.model.name,
                version=decision.model.version,
                sha256=decision.model.sha256,
                mappingRevision=decision.mapping_revision,
                producer=producer,
            ),
            "bridge_prediction": PredictionOutputFacet(
                quality=out["quality"],
                value=out["value"],
                score=out["score"],
                reason=out["reason"],
                inputAgeS=out["input_age_s"],
                driftScore=out["drift_score"],
                explanation=d["explanation"],
                producer=producer,
            ),
            "bridge_delivery": DeliveryOutputFacet(
                deliveries=[_camel_keys(x) for x in d["deliveries"]],
                outputsKnown=decision.outputs_known,
                notes=[] if decision.outputs_known else [_UNKNOWN_OUTPUTS],
                producer=producer,
            ),
        },
    )
    actions = d["operator_actions"]
    return RunEvent(
        eventType=RunState.COMPLETE,
        # A stored prediction always has a time; a corrupt row without one gets the epoch (an
        # obviously wrong time) rather than stopping a whole export.
        eventTime=d["time"] or "1970-01-01T00:00:00Z",
        producer=producer,
        run=Run(
            runId=decision.id,
            facets={
                "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                    version=BRIDGE_VERSION,
                    name="bridge",
                    openlineageAdapterVersion=OPENLINEAGE_VERSION,
                    producer=producer,
                ),
                "bridge_decision": DecisionRunFacet(
                    gateway=decision.gateway,
                    asset=decision.asset,
                    seq=decision.seq,
                    fence=decision.fence,
                    mappingRevision=decision.mapping_revision,
                    producer=producer,
                ),
                "bridge_operatorActions": OperatorActionsRunFacet(
                    feedback=[_camel_keys(x) for x in actions["feedback"]],
                    audit=[_camel_keys(x) for x in actions["audit"]],
                    producer=producer,
                ),
            },
        ),
        job=Job(
            namespace=namespace,
            name=decision.model.name,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="STREAMING",
                    integration="BRIDGE",
                    jobType="MODEL",
                    producer=producer,
                )
            },
        ),
        inputs=inputs,
        outputs=[output],
    )


_UNKNOWN_OUTPUTS = (
    "the outputs of this mapping revision are not known to this export: only the outbox's "
    "facts (pending events, dead letters) are listed"
)


def event_dict(event: RunEvent) -> dict[str, Any]:
    """The event as OpenLineage's serializer makes it (nulls left out, enums as values)."""
    return Serde.to_dict(event)


def to_json_line(event: RunEvent) -> str:
    """One event as one line of JSON, by openlineage's serializer; strict JSON (a NaN would be
    refused: the document already made every number finite)."""
    return Serde.to_json(event, allow_nan=False, separators=(",", ":"))
