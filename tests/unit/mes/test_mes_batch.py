"""The batch contract: the request body and the reading of the MES's per-event results."""

from __future__ import annotations

import json

import pytest

from bridge.connectors.mes.batch import BatchReplyError, batch_body, parse_batch_reply


def test_body_is_an_array_of_keyed_events_in_order() -> None:
    body = batch_body([("k1", '{"a":1}'), ('k"2', '{"b":[2]}')])
    assert json.loads(body) == [
        {"idempotency_key": "k1", "event": {"a": 1}},
        {"idempotency_key": 'k"2', "event": {"b": [2]}},
    ]


def test_results_are_matched_by_key_in_any_order() -> None:
    raw = json.dumps(
        {
            "results": [
                {"idempotency_key": "k2", "status": 422, "error": "bad"},
                {"idempotency_key": "k1", "status": 201},
                {"idempotency_key": "other", "status": 201},
            ]
        }
    ).encode()
    assert parse_batch_reply(raw, ["k1", "k2"]) == {"k1": (201, ""), "k2": (422, "bad")}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"results": {}}',
        b'{"results": [1]}',
        b'{"results": [{"idempotency_key": "k1", "status": "201"}]}',
        b'{"results": [{"idempotency_key": "k1", "status": true}]}',
        b'{"results": [{"idempotency_key": "k1", "status": 201}]}',  # no result for k2
    ],
)
def test_a_reply_that_does_not_settle_every_event_is_an_error(raw: bytes) -> None:
    with pytest.raises(BatchReplyError):
        parse_batch_reply(raw, ["k1", "k2"])
