"""The batch contract with the MES, both directions. Pure: bytes in, values out.

Request: a JSON array, one item per event (each of a different asset)::

    [{"idempotency_key": "<uuid>", "event": {...the body a single POST would carry...}}, ...]

Reply (any 2xx): one result per event, matched by key, in any order::

    {"results": [{"idempotency_key": "<uuid>", "status": 201, "error": ""}, ...]}

A result's ``status`` means what the HTTP status of a single POST would: 2xx accepted (a
duplicate key is a success too), 408/425/429/5xx retry later, any other 4xx rejected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["BatchReplyError", "batch_body", "parse_batch_reply"]


class BatchReplyError(ValueError):
    """The MES's 2xx reply does not say what became of every event."""


def batch_body(events: Sequence[tuple[str, str]]) -> str:
    """The request body; event bodies are already JSON text, so they are spliced, not re-parsed."""
    return (
        "["
        + ",".join(f'{{"idempotency_key":{json.dumps(k)},"event":{body}}}' for k, body in events)
        + "]"
    )


def parse_batch_reply(raw: bytes, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    """``key -> (status, error)`` for every key sent; raise ``BatchReplyError`` otherwise."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BatchReplyError("not JSON") from exc
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise BatchReplyError('expected {"results": [...]}')
    wanted = set(keys)
    out: dict[str, tuple[int, str]] = {}
    for item in results:
        if not isinstance(item, dict):
            raise BatchReplyError("a result is not an object")
        key, status = item.get("idempotency_key"), item.get("status")
        if not isinstance(key, str) or isinstance(status, bool) or not isinstance(status, int):
            raise BatchReplyError("a result lacks idempotency_key (string) or status (integer)")
        if key in wanted:
            error = item.get("error")
            out[key] = (status, error if isinstance(error, str) else "")
    missing = wanted - out.keys()
    if missing:
        raise BatchReplyError(f"no result for {len(missing)} of {len(wanted)} events")
    return out
