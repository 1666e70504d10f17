"""MES REST destination: sends events as JSON (one per POST, or batches), for the outbox relay.

The gateway keeps every event in its store's outbox until the MES accepted it; this class only
knows how to encode an event (default body or the mapping's template) and how to send one
event or a batch (see ``batch.py`` for the contract), once per call. It tells the relay what
came of it: accepted, rejected (any 4xx but 408/425/429: the relay counts it and dead-letters
the event after ``dead_letter_after``) or ``Retry`` (connection errors, timeouts, 408/425/429,
5xx, with the ``Retry-After`` hint): the relay retries it with this destination's backoff
while the other assets go on, and dead-letters it after ``max_retries``/``max_retry_age_s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import structlog

from bridge.client_tls import ClientTlsError, describe_tls_failure
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.redact import redact_text, redact_url
from bridge.retry import is_retryable_status, parse_retry_after
from bridge.types import ComponentHealth, PredictionSlot, Trigger

from .batch import BatchReplyError, batch_body, parse_batch_reply
from .config import MesSettings
from .http import LeanClient, TransportError
from .payload import NO_UNITS, event_fields, event_to_json, units_of
from .template import compile_template

__all__ = ["MesDestination"]

log = structlog.get_logger(__name__)

_BODY_EXCERPT_CHARS = 200
_JSON = [(b"Content-Type", b"application/json")]
_PER_REQUEST = {"content-type", "idempotency-key", "content-length"}
# One "the MES is failing" warning (and its "recovered") per this many seconds: a flaky MES
# (one request in three answered 500) fails hundreds of times a second at full speed.
_LOG_EVERY_S = 10.0


class _RetryableError(Exception):
    """A failure that may pass on its own; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _RejectedError(Exception):
    """The MES refused the event itself: sending it again would fail the same way."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class MesDestination:
    """``bridge.destination.Destination`` that POSTs each event (or a batch of events of
    different assets) with ``Idempotency-Key: <prediction id>``."""

    def __init__(self, name: str, settings: MesSettings, context: DestinationContext) -> None:
        self.name = name
        self._settings = settings
        self._gateway_id = context.gateway_id
        self._units = units_of(context.slots)
        self._tls_key = context.key_of(name, "tls")
        self.capabilities = Capabilities(
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            backoff=(settings.initial_backoff_s, settings.max_backoff_s),
            rules=tuple(settings.events),
        )
        self._template = None if settings.template is None else compile_template(settings.template)
        self._client: LeanClient | None = None
        self._closed = False
        self._in_flight = 0
        self._last_error = ""
        self._warned = False  # "mes_send_failing" logged, its "mes_recovered" not yet
        self._warned_at = -_LOG_EVERY_S  # monotonic
        self._unlogged = 0  # failures since the last warning
        self._counters: dict[str, int] = {"sent": 0, "retries": 0, "rejected": 0}

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"mes destination {self.name!r} is closed")
        if self._client is not None:
            return
        s = self._settings
        try:
            # The plant CA and the client certificate, when the mapping gives them.
            verify = None if s.tls is None else s.tls.ssl_context()
        except ClientTlsError as exc:
            raise ConnectorError(f"mes destination {self.name!r}: {exc}") from exc
        # Where events go is decided by the mapping, never by proxy variables; redirects are
        # not followed; TCP_NODELAY on (see ``http.py``).
        self._client = LeanClient(
            s.url,
            # The request's own headers win, as they did with httpx.
            headers={k: v for k, v in s.headers.items() if k.lower() not in _PER_REQUEST},
            timeout_s=s.timeout_s,
            tls=verify,
            max_connections=s.concurrency,
        )
        log.info(
            "mes_destination_started",
            destination=self.name,
            url=redact_url(s.url),
            concurrency=s.concurrency,
        )

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        """``bridge.types.FollowsSlots``: bodies encoded from now on carry the units of the
        slots a mapping reload made (an added asset's included)."""
        self._units = units_of(slots)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        log.info("mes_destination_closed", destination=self.name, **self._counters)

    def health(self) -> ComponentHealth:
        counters = {**self._counters, "in_flight": self._in_flight}
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._client is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    # -- one event -------------------------------------------------------------------------

    def encode(self, event: Trigger) -> str:
        body: Any
        p = event.prediction
        units = self._units.get((p.asset, p.model), NO_UNITS)
        if self._template is None:
            body = event_to_json(event, self._gateway_id, units)
        else:
            body = self._template.render(event_fields(event, self._gateway_id, units))
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        """Send once: one POST per event, or one POST for the batch when ``batch_size`` > 1
        (then even a single event goes as a one-item array: the MES expects one shape)."""
        if self._settings.batch_size > 1:
            return await self._deliver_batch(batch)
        return [await self._deliver_one(key, body) for key, body in batch]

    async def _deliver_one(self, key: str, body: str) -> Outcome:
        """None accepted, the reason of a rejection, or ``Retry``."""
        # The same key on every attempt lets the MES discard a repeat whose first reply was lost.
        headers = [*_JSON, (b"Idempotency-Key", key.encode())]
        self._in_flight += 1
        try:
            await self._post(body, headers)
        except _RetryableError as exc:
            # Transport errors may quote the URL: no credentials in logs or the dead letters.
            reason = redact_text(str(exc))
            self._failed(reason)
            return Retry(reason, exc.retry_after)
        except _RejectedError as exc:
            self._counters["rejected"] += 1
            log.warning(
                "mes_rejected", destination=self.name, key=key, status=exc.status, body=exc.body
            )
            return f"HTTP {exc.status}: {exc.body}"
        finally:
            self._in_flight -= 1
        self._counters["sent"] += 1
        self._recovered()
        return None

    async def _deliver_batch(self, events: Sequence[Envelope]) -> list[Outcome]:
        """Send the events in one POST; one outcome per event, in order.

        Events the MES answered with a retryable status (or all of them, when the whole
        request failed retryably) come back as ``Retry``: the relay sends them again later,
        with the same keys.
        """
        outcomes: dict[str, Outcome] = {}
        self._in_flight += len(events)
        try:
            await self._post_batch(list(events), outcomes)
        except _RetryableError as exc:
            reason = redact_text(str(exc))
            self._failed(reason)
            retry = Retry(reason, exc.retry_after)
            for key, _ in events:
                outcomes.setdefault(key, retry)
        finally:
            self._in_flight -= len(events)
        rejected = sum(1 for o in outcomes.values() if isinstance(o, str))
        sent = sum(1 for o in outcomes.values() if o is None)
        self._counters["rejected"] += rejected
        self._counters["sent"] += sent
        if sent:
            self._recovered()
        return [outcomes[k] for k, _ in events]

    def _transport_error(self, exc: TransportError) -> str:
        # A refused certificate is retried like any connection error (the MES may renew it),
        # but its message says which setting to fix.
        s = self._settings
        tls = describe_tls_failure(
            exc,
            self._tls_key,
            https=s.url.lower().startswith("https://"),
            client_certificate=bool(s.tls and s.tls.client_certificate),
        )
        return tls if tls is not None else f"{type(exc).__name__}: {exc}"

    def _failed(self, error: str) -> None:
        self._counters["retries"] += 1
        now = time.monotonic()
        if not self._warned and now - self._warned_at >= _LOG_EVERY_S:
            # One warning when the MES starts failing, then at most one per _LOG_EVERY_S
            # while it keeps failing now and then, with the count of failures in between.
            log.warning(
                "mes_send_failing",
                destination=self.name,
                error=error,
                failures_since_last_warning=self._unlogged + 1,
            )
            self._warned, self._warned_at, self._unlogged = True, now, 0
        else:
            self._unlogged += 1
            log.debug("mes_send_retry", destination=self.name, error=error)
        self._last_error = error

    def _recovered(self) -> None:
        if self._last_error:
            if self._warned:  # the recovery of a logged warning is logged too
                log.info("mes_recovered", destination=self.name, after_error=self._last_error)
                self._warned = False
            self._last_error = ""

    async def _post_batch(self, events: list[Envelope], outcomes: dict[str, Outcome]) -> None:
        """Add every event's outcome to ``outcomes``; raise ``_RetryableError`` if the request
        as a whole failed retryably."""
        client = self._client
        if client is None:
            raise ConnectorError(f"mes destination {self.name!r} is not started")
        try:
            response = await client.post(batch_body(events).encode(), _JSON)
        except TransportError as exc:
            raise _RetryableError(self._transport_error(exc)) from exc
        status = response.status_code
        if not response.is_success:
            if is_retryable_status(status):
                retry_after = parse_retry_after(response.header("Retry-After"), time.time())
                raise _RetryableError(f"HTTP {status}", retry_after)
            # The MES refused the request as a whole: every event in it is a rejection.
            excerpt = response.text[:_BODY_EXCERPT_CHARS]
            log.warning("mes_batch_rejected", destination=self.name, status=status, body=excerpt)
            outcomes.update((key, f"HTTP {status}: {excerpt}") for key, _ in events)
            return
        try:
            results = parse_batch_reply(response.content, [k for k, _ in events])
        except BatchReplyError as exc:
            # Which events did it keep? Unknown: send them all again (same keys, no duplicate).
            raise _RetryableError(f"batch reply not understood: {exc}") from exc
        retry: list[str] = []
        for key, (item_status, error) in results.items():
            if 200 <= item_status < 300:
                outcomes[key] = None
            elif is_retryable_status(item_status):
                retry.append(f"HTTP {item_status}")
                outcomes[key] = Retry(f"HTTP {item_status}: {error[:_BODY_EXCERPT_CHARS]}")
            else:
                log.warning(
                    "mes_rejected", destination=self.name, key=key, status=item_status, body=error
                )
                outcomes[key] = f"HTTP {item_status}: {error[:_BODY_EXCERPT_CHARS]}"
        if retry:
            # The settled ones are kept; the relay sends only the rest again.
            self._failed(f"{len(retry)} of {len(events)} events: {retry[0]}")

    async def _post(self, body: str, headers: list[tuple[bytes, bytes]]) -> None:
        client = self._client
        if client is None:
            raise ConnectorError(f"mes destination {self.name!r} is not started")
        try:
            response = await client.post(body.encode(), headers)
        except TransportError as exc:
            raise _RetryableError(self._transport_error(exc)) from exc
        if response.is_success:
            return
        status = response.status_code
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.header("Retry-After"), time.time())
            raise _RetryableError(f"HTTP {status}", retry_after)
        raise _RejectedError(status, response.text[:_BODY_EXCERPT_CHARS])
