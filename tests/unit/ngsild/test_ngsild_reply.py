"""What a broker's answer to a batch upsert means for each event (clause 5.6.8, 5.2.16,
ProblemDetails of 5.5.2): accepted, rejected with the broker's reason, or retried."""

from __future__ import annotations

import json

import pytest

from bridge.connectors.ngsild.reply import (
    ReplyError,
    error_outcome,
    outcomes_of,
    parse_batch_reply,
    whole_request_reason,
)
from bridge.destination import Retry

ERR = "https://uri.etsi.org/ngsi-ld/errors/"


def problem(status: int | None, kind: str, detail: str = "why") -> dict[str, object]:
    body: dict[str, object] = {"type": ERR + kind, "title": kind, "detail": detail}
    if status is not None:
        body["status"] = status
    return body


def test_a_207_maps_each_entity_to_its_outcome() -> None:
    raw = json.dumps(
        {
            "success": ["urn:a", "urn:lvl"],
            "errors": [
                {"entityId": "urn:b", "error": problem(400, "BadRequestData", "bad unitCode")},
                {"entityId": "urn:c", "error": problem(503, "LdContextNotAvailable")},
            ],
        }
    ).encode()
    reply = parse_batch_reply(raw)
    a, b, c, d = outcomes_of(reply, ["urn:a", "urn:b", "urn:c", "urn:d"])
    assert a is None
    assert b == "broker refused the entity: HTTP 400 BadRequestData: bad unitCode"
    assert isinstance(c, Retry) and "503 LdContextNotAvailable" in c.reason
    assert isinstance(d, Retry) and "does not mention" in d.reason  # neither list names it


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (problem(None, "BadRequestData"), False),  # the type says 400
        (problem(None, "InternalError"), True),  # the type says 500
        (problem(None, "NonexistentTenant"), False),
        (problem(429, "TooManyRequests"), True),
        (problem(409, "AlreadyExists"), False),
        ({"detail": "no status, no type"}, True),  # nothing says the entity is at fault
        ("a string", True),
        (None, True),
    ],
)
def test_an_entity_error_is_retried_only_when_it_may_pass(error: object, retry: bool) -> None:
    assert isinstance(error_outcome(error), Retry) is retry


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"success": "x"}', b'{"errors": [{"error": {}}]}']
)
def test_a_207_that_is_no_batch_operation_result_is_an_error(raw: bytes) -> None:
    with pytest.raises(ReplyError):
        parse_batch_reply(raw)


def test_a_refused_request_says_why() -> None:
    body = json.dumps(problem(400, "InvalidRequest", "options must be update")).encode()
    assert whole_request_reason(400, body) == (
        "broker refused the batch: HTTP 400 InvalidRequest: options must be update"
    )
    assert whole_request_reason(401, b"") == "broker refused the batch: HTTP 401"
    assert "HTTP 403: <html>" in whole_request_reason(403, b"<html>")
