"""MES REST destination: sends events as JSON (one per POST, or batches), for the outbox relay.

The gateway keeps every event in its store's outbox until the MES accepted it; this class only
knows how to encode an event (default body or the mapping's template) and how to send one
event or a batch (see ``batch.py`` for the contract), once per call. It tells the relay what
came of it: accepted, rejected (any 4xx but 408/425/429: the relay counts it and dead-letters
the event after ``dead_letter_after``) or ``Retry`` (connection errors, timeouts, 408/425/429,
5xx, with the ``Retry-After`` hint): the relay retries it with this sink's backoff while the
other assets go on, and dead-letters it after ``max_retries``/``max_retry_age_s``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from bridge.client_tls import ClientTlsError, describe_tls_failure
from bridge.errors import ConnectorError
from bridge.outbox.protocol import Outcome, Retry
from bridge.outbox.rules import EventRule, Trigger
from bridge.redact import redact_text, redact_url
from bridge.retry import is_retryable_status, parse_retry_after
from bridge.types import ComponentHealth, Prediction, SinkContext

from .batch import BatchReplyError, batch_body, parse_batch_reply
from .config import MesSinkSettings
from .payload import event_fields, event_to_json
from .template import compile_template

__all__ = ["MesSink"]

log = structlog.get_logger(__name__)

_BODY_EXCERPT_CHARS = 200
_JSON = {"Content-Type": "application/json"}


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


class MesSink:
    """An outbox destination that POSTs each event with ``Idempotency-Key: <prediction id>``."""

    def __init__(self, name: str, settings: MesSinkSettings, context: SinkContext) -> None:
        self.name = name
        self._settings = settings
        self._gateway_id = context.gateway_id
        self._template = None if settings.template is None else compile_template(settings.template)
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._in_flight = 0
        self._last_error = ""
        self._counters: dict[str, int] = {"sent": 0, "retries": 0, "rejected": 0}

    @property
    def concurrency(self) -> int:
        return self._settings.concurrency

    @property
    def rules(self) -> Sequence[EventRule]:
        return self._settings.events

    @property
    def batch_size(self) -> int:
        return self._settings.batch_size

    @property
    def backoff(self) -> tuple[float, float]:
        """How the relay spaces the retries of one event: first delay, cap."""
        return self._settings.initial_backoff_s, self._settings.max_backoff_s

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"mes sink {self.name!r} is closed")
        if self._client is not None:
            return
        s = self._settings
        try:
            # The plant CA and the client certificate, when the mapping gives them.
            verify = True if s.tls is None else s.tls.ssl_context()
        except ClientTlsError as exc:
            raise ConnectorError(f"mes sink {self.name!r}: {exc}") from exc
        # trust_env=False: where events go is decided by the mapping, not by proxy variables.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            headers=s.headers,
            follow_redirects=False,
            trust_env=False,
            # Small requests on kept-alive connections: never hold a segment back (Nagle).
            transport=httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=s.concurrency, max_keepalive_connections=s.concurrency
                ),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                verify=verify,
            ),
        )
        log.info(
            "mes_sink_started", sink=self.name, url=redact_url(s.url), concurrency=s.concurrency
        )

    async def write(self, batch: Sequence[Prediction]) -> None:
        # Events reach the MES only through the outbox, so that none is lost on a crash.
        raise ConnectorError(f"mes sink {self.name!r} is fed by the outbox relay, not by write()")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        log.info("mes_sink_closed", sink=self.name, **self._counters)

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

    def encode(self, prediction: Prediction) -> str | None:
        return self.encode_event(Trigger(prediction))

    def encode_event(self, trigger: Trigger) -> str:
        body: Any
        if self._template is None:
            body = event_to_json(trigger, self._gateway_id)
        else:
            body = self._template.render(event_fields(trigger, self._gateway_id))
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    async def deliver(self, key: str, body: str) -> Outcome:
        """Send once: None accepted, the reason of a rejection, or ``Retry``."""
        # The same key on every attempt lets the MES discard a repeat whose first reply was lost.
        headers = {**_JSON, "Idempotency-Key": key}
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
            log.warning("mes_rejected", sink=self.name, key=key, status=exc.status, body=exc.body)
            return f"HTTP {exc.status}: {exc.body}"
        finally:
            self._in_flight -= 1
        self._counters["sent"] += 1
        self._recovered()
        return None

    async def deliver_batch(self, events: Sequence[tuple[str, str]]) -> list[Outcome]:
        """Send ``(key, body)`` pairs in one POST; one outcome per pair, in order.

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

    def _transport_error(self, exc: httpx.TransportError) -> str:
        # A refused certificate is retried like any connection error (the MES may renew it),
        # but its message says which setting to fix.
        s = self._settings
        tls = describe_tls_failure(
            exc,
            f"outputs.{self.name}.tls",
            https=s.url.lower().startswith("https://"),
            client_certificate=bool(s.tls and s.tls.client_certificate),
        )
        return tls if tls is not None else f"{type(exc).__name__}: {exc}"

    def _failed(self, error: str) -> None:
        self._counters["retries"] += 1
        if not self._last_error:
            # One warning when the MES starts failing; the recovery is logged once too.
            log.warning("mes_send_failing", sink=self.name, error=error)
        else:
            log.debug("mes_send_retry", sink=self.name, error=error)
        self._last_error = error

    def _recovered(self) -> None:
        if self._last_error:
            log.info("mes_recovered", sink=self.name, after_error=self._last_error)
            self._last_error = ""

    async def _post_batch(
        self, events: list[tuple[str, str]], outcomes: dict[str, Outcome]
    ) -> None:
        """Add every event's outcome to ``outcomes``; raise ``_RetryableError`` if the request
        as a whole failed retryably."""
        client = self._client
        if client is None:
            raise ConnectorError(f"mes sink {self.name!r} is not started")
        try:
            response = await client.post(
                self._settings.url, content=batch_body(events), headers=_JSON
            )
        except httpx.TransportError as exc:
            raise _RetryableError(self._transport_error(exc)) from exc
        status = response.status_code
        if not response.is_success:
            if is_retryable_status(status):
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                raise _RetryableError(f"HTTP {status}", retry_after)
            # The MES refused the request as a whole: every event in it is a rejection.
            excerpt = response.text[:_BODY_EXCERPT_CHARS]
            log.warning("mes_batch_rejected", sink=self.name, status=status, body=excerpt)
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
                log.warning("mes_rejected", sink=self.name, key=key, status=item_status, body=error)
                outcomes[key] = f"HTTP {item_status}: {error[:_BODY_EXCERPT_CHARS]}"
        if retry:
            # The settled ones are kept; the relay sends only the rest again.
            self._failed(f"{len(retry)} of {len(events)} events: {retry[0]}")

    async def _post(self, body: str, headers: dict[str, str]) -> None:
        client = self._client
        if client is None:
            raise ConnectorError(f"mes sink {self.name!r} is not started")
        try:
            response = await client.post(self._settings.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise _RetryableError(self._transport_error(exc)) from exc
        if response.is_success:
            return
        status = response.status_code
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise _RetryableError(f"HTTP {status}", retry_after)
        raise _RejectedError(status, response.text[:_BODY_EXCERPT_CHARS])
