"""The webhook destination: POSTs each event it is given, once, and says what came of it.

Drift events reach its outbox rows from the drift alert writer (with the core's drift body),
so a webhook that is down loses nothing. ``deliver`` sends once: connection errors, timeouts,
408/425/429 and 5xx come back as ``Retry`` (with the ``Retry-After`` hint) and the relay owns
the retries, their backoff (``capabilities.backoff``) and the cap after which the event is
dead-lettered; another 4xx is a rejection, which the relay counts and dead-letters.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

import httpx
import structlog

from bridge.client_tls import ClientTlsError, describe_tls_failure
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.redact import redact_text, redact_url
from bridge.retry import is_retryable_status, parse_retry_after
from bridge.types import ComponentHealth, Trigger

from .config import WebhookSettings

__all__ = ["WebhookDestination"]

log = structlog.get_logger(__name__)

_BODY_EXCERPT_CHARS = 200


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebhookDestination:
    """``bridge.destination.Destination`` for one URL; one event per request, one at a time."""

    def __init__(self, name: str, settings: WebhookSettings, context: DestinationContext) -> None:
        self.name = name
        self._settings = settings
        self._tls_key = context.key_of(name, "tls")
        self._headers = {"Content-Type": "application/json", **settings.headers}
        # No rules: predictions are offered to ``encode``, which declines them; the drift
        # alerts come with the core's drift body.
        self.capabilities = Capabilities(
            backoff=(settings.initial_backoff_s, settings.max_backoff_s)
        )
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._last_error = ""
        self._counters = {"sent": 0, "retries": 0, "rejected": 0}

    @property
    def url(self) -> str:
        return self._settings.url

    async def start(self) -> None:
        if self._client is not None or self._closed:
            return
        s = self._settings
        try:
            # The CA to trust and the client certificate, when the mapping gives them.
            verify = True if s.tls is None else s.tls.ssl_context()
        except ClientTlsError as exc:
            raise ConnectorError(f"{self.name}: {exc}") from exc
        # trust_env=False: where events go is decided by the mapping, not by proxy variables.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            follow_redirects=False,
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                verify=verify,
            ),
        )
        log.info("webhook_started", destination=self.name, url=redact_url(s.url))

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def health(self) -> ComponentHealth:
        counters = dict(self._counters)
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    def encode(self, event: Trigger) -> str | None:
        return None  # drift events only, and those come already encoded

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        return [await self._deliver_one(key, body) for key, body in batch]

    async def _deliver_one(self, key: str, body: str) -> Outcome:
        """Send once: None accepted, the reason of a rejection, or ``Retry``."""
        # The same key on every attempt lets the receiver discard a repeat whose reply was lost.
        headers = {**self._headers, "Idempotency-Key": key}
        try:
            status, text = await self._post(body, headers)
        except _RetryableError as exc:
            # Shown by health and kept in the dead letters: no credentials from the URL.
            error = redact_text(str(exc))
            self._counters["retries"] += 1
            if not self._last_error:
                log.warning("webhook_failing", destination=self.name, error=error)
            self._last_error = error
            return Retry(error, exc.retry_after)
        if status >= 400:
            self._counters["rejected"] += 1
            log.warning("webhook_rejected", destination=self.name, key=key, status=status)
            return f"HTTP {status}: {text}"
        self._counters["sent"] += 1
        if self._last_error:
            log.info("webhook_recovered", destination=self.name, after_error=self._last_error)
            self._last_error = ""
        return None

    async def _post(self, body: str, headers: dict[str, str]) -> tuple[int, str]:
        client = self._client
        if client is None:
            raise ConnectorError(f"{self.name} is not started")
        s = self._settings
        try:
            response = await client.post(s.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            tls = describe_tls_failure(
                exc,
                self._tls_key,
                https=s.url.lower().startswith("https://"),
                client_certificate=bool(s.tls and s.tls.client_certificate),
            )
            raise _RetryableError(
                tls if tls is not None else f"{type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if not response.is_success and is_retryable_status(status):
            wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise _RetryableError(f"HTTP {status}", wait)
        return status, response.text[:_BODY_EXCERPT_CHARS]
