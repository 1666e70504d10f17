"""What a broker's answer to a batch upsert says of each entity. Pure: status and bytes in.

ETSI GS CIM 009 clause 5.6.8 (Batch Entity Upsert) and 6.15 (its HTTP binding):

- 201 Created (a JSON array of the ids created) or 204 No Content: every entity was created or
  updated;
- 207 Multi-Status: a BatchOperationResult (clause 5.2.16), ``{"success": [ids], "errors":
  [{"entityId": id, "error": ProblemDetails}]}``: each entity's own fate;
- any other status: the request as a whole failed (400 BadRequestData, 5xx, ...).

Each entity's error is a ProblemDetails (RFC 7807) whose ``status`` (or, without one, its
NGSI-LD error ``type``, clause 5.5.2) says whether sending it again may help.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.destination import Outcome, Retry
from bridge.retry import is_retryable_status

__all__ = [
    "BatchReply",
    "ReplyError",
    "describe",
    "error_outcome",
    "outcomes_of",
    "parse_batch_reply",
    "whole_request_reason",
]

_EXCERPT = 200

# The HTTP status of each NGSI-LD error type (clause 5.5.2).
_ERROR_STATUS = {
    "InvalidRequest": 400,
    "BadRequestData": 400,
    "AlreadyExists": 409,
    "OperationNotSupported": 422,
    "ResourceNotFound": 404,
    "InternalError": 500,
    "TooComplexQuery": 403,
    "TooManyResults": 403,
    "LdContextNotAvailable": 503,
    "NoMultiTenantSupport": 501,
    "NonexistentTenant": 404,
}


class ReplyError(ValueError):
    """A 207 whose body is not a BatchOperationResult."""


@dataclass(frozen=True, slots=True)
class BatchReply:
    """Ids the broker took, and the error of each id it did not take (by id)."""

    success: frozenset[str]
    errors: dict[str, Any]


def parse_batch_reply(raw: bytes) -> BatchReply:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ReplyError("not JSON") from exc
    if not isinstance(doc, dict):
        raise ReplyError("not a JSON object")
    success, errors = doc.get("success", []), doc.get("errors", [])
    if not isinstance(success, list) or not isinstance(errors, list):
        raise ReplyError("success and errors must be arrays")
    found: dict[str, Any] = {}
    for item in errors:
        if not isinstance(item, dict) or not isinstance(item.get("entityId"), str):
            raise ReplyError("an item of errors has no entityId")
        found[item["entityId"]] = item.get("error")
    return BatchReply(frozenset(s for s in success if isinstance(s, str)), found)


def _status_of(error: Any) -> int | None:
    status = error.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    kind = error.get("type")
    if isinstance(kind, str):
        return _ERROR_STATUS.get(kind.rsplit("/", 1)[-1])
    return None


def describe(status: int | None, error: Any) -> str:
    """``HTTP 400 BadRequestData: <detail>`` from a ProblemDetails (or whatever came)."""
    if not isinstance(error, dict):
        text = error if isinstance(error, str) else "" if error is None else json.dumps(error)
        head = f"HTTP {status}" if status is not None else ""
        return ": ".join(x for x in (head, text[:_EXCERPT]) if x) or "no error details"
    kind = error.get("type")
    name = kind.rsplit("/", 1)[-1] if isinstance(kind, str) else ""
    detail = error.get("detail") or error.get("title") or ""
    head = " ".join(x for x in (f"HTTP {status}" if status else "", name) if x)
    return f"{head}: {str(detail)[:_EXCERPT]}" if detail else head or "no error details"


def error_outcome(error: Any) -> Outcome:
    """A rejection (the reason) or ``Retry`` for one entity's error in a 207."""
    status = _status_of(error) if isinstance(error, dict) else None
    reason = describe(status, error)
    if status is None or is_retryable_status(status):
        # Without a status nothing says the entity is at fault: try again later.
        return Retry(f"broker: {reason}")
    return f"broker refused the entity: {reason}"


def whole_request_reason(status: int, body: bytes, what: str = "the batch") -> str:
    """The reason of a request refused as a whole (any 4xx but 408/425/429, a 3xx)."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = body.decode("utf-8", errors="replace")[:_EXCERPT]
    return f"broker refused {what}: {describe(status, doc)}"


def outcomes_of(reply: BatchReply, ids: Sequence[str]) -> list[Outcome]:
    """One outcome per id sent, in order; an id the 207 does not mention is retried."""
    out: list[Outcome] = []
    for entity_id in ids:
        if entity_id in reply.errors:
            out.append(error_outcome(reply.errors[entity_id]))
        elif entity_id in reply.success:
            out.append(None)
        else:
            out.append(Retry("the broker's 207 reply does not mention the entity"))
    return out
