"""Every send of a model's retraining webhook becomes a ``webhook.fired`` audit ledger entry.

The webhook destination is a connector and must not reach the store, so the core wraps it:
``AuditedWebhook`` delivers through it and records what came of each send. A send happens
outside any transaction (the relay settles its outbox rows afterwards, on its own), so each
entry is appended on its own, off the event loop and in the background: a slow or failing
ledger never holds the relay up or costs an event. A failure is logged and counted (the
destination's health shows ``audit_failures``).

What an entry says: the model (subject ``model:<name>``), the receiver's host and port only
(the URL's path, query and userinfo may hold tokens), the event id (the Idempotency-Key, the
same as the drift alert's ``prediction_id``), the asset, the drift score, and the answer:
``accepted``, ``rejected`` or ``retry``, with the HTTP status when there was one (never the
receiver's body: it may echo anything).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import structlog

from bridge.destination import Capabilities, Destination, Envelope, Outcome, Retry
from bridge.store.audit import AuditRepository
from bridge.store.auditchain import NewAuditEntry
from bridge.types import ComponentHealth, Trigger

__all__ = ["AuditedWebhook", "url_host"]

log = structlog.get_logger(__name__)

_HTTP_STATUS = re.compile(r"^HTTP (\d{3})\b")
# Of an answer that is not an HTTP status (a refused connection, a TLS failure): the error's
# kind, the text before its first colon, so no address or detail of the receiver is copied.
_MAX_ERROR_CHARS = 100


def url_host(url: str) -> str:
    """``host[:port]`` of ``url``: what an entry may say about where the webhook went."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return netloc.rpartition("@")[2]


def _answer(outcome: Outcome) -> dict[str, Any]:
    if outcome is None:
        return {"status": "accepted"}
    reason = outcome.reason if isinstance(outcome, Retry) else outcome
    found = _HTTP_STATUS.match(reason)
    answer: dict[str, Any] = {"status": "retry" if isinstance(outcome, Retry) else "rejected"}
    if found is not None:
        answer["http_status"] = int(found.group(1))
    else:
        answer["error"] = reason.partition(":")[0][:_MAX_ERROR_CHARS]
    return answer


def _score(body: dict[str, Any]) -> float | None:
    score = body.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    return None


class AuditedWebhook:
    """``bridge.destination.Destination``: ``inner`` (the model's webhook) whose sends are
    recorded in ``ledger``. Give it to the relay and the feed in place of ``inner``."""

    def __init__(
        self,
        inner: Destination,
        model: str,
        url: str,
        ledger: AuditRepository,
        *,
        close_wait_s: float = 5.0,
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self._model = model
        self._host = url_host(url)
        self._ledger = ledger
        self._close_wait_s = close_wait_s
        self._pending: set[asyncio.Task[None]] = set()
        self.recorded = 0
        self.failures = 0

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()
        pending = set(self._pending)
        if not pending:
            return
        # The entries of the last sends: waited for a moment, so a stopping gateway still
        # records them, but never for long (a store that hangs must not hold the stop up).
        _, late = await asyncio.wait(pending, timeout=self._close_wait_s)
        for task in late:
            task.cancel()
        if late:
            log.error("webhook_audit_not_recorded", destination=self.name, entries=len(late))

    def health(self) -> ComponentHealth:
        health = self.inner.health()
        if not self.failures:
            return health
        return replace(health, counters={**health.counters, "audit_failures": self.failures})

    def encode(self, event: Trigger) -> str | None:
        return self.inner.encode(event)

    async def deliver(self, batch: Sequence[Envelope]) -> Sequence[Outcome]:
        outcomes = await self.inner.deliver(batch)
        for envelope, outcome in zip(batch, outcomes, strict=False):
            task = asyncio.create_task(
                self._record(self._entry(envelope, outcome)), name=f"audit:{self.name}"
            )
            # Held until done: the loop keeps only a weak reference to a task.
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return outcomes

    def _entry(self, envelope: Envelope, outcome: Outcome) -> NewAuditEntry:
        try:
            body = json.loads(envelope.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        asset = body.get("asset")
        after = {
            "host": self._host,
            "event_id": envelope.key,
            "asset": asset if isinstance(asset, str) else None,
            "drift_score": _score(body),
            **_answer(outcome),
        }
        return NewAuditEntry(
            "system", "system", "webhook.fired", f"model:{self._model}", None, after
        )

    async def _record(self, entry: NewAuditEntry) -> None:
        try:
            await asyncio.to_thread(self._ledger.append, entry)
        except Exception as exc:
            # Whatever went wrong (the store, a bug): the webhook went, or failed, regardless,
            # and neither it nor the gateway stops for the ledger. Logged and counted.
            self.failures += 1
            log.error(
                "webhook_audit_failed",
                destination=self.name,
                event_id=entry.after["event_id"],
                error=str(exc),
            )
        else:
            self.recorded += 1
