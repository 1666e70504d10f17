"""The retraining webhook: an outbox destination that POSTs drift events to one URL.

It takes no predictions (``encode`` is None for all of them); drift events are put into its
outbox rows by the drift alert writer, so a webhook that is down loses nothing. ``deliver``
sends once, like the MES sink: connection errors, timeouts, 408/425/429 and 5xx come back as
``Retry`` (with the ``Retry-After`` hint), and the relay owns the retries, their backoff (this
destination's ``backoff``) and the cap after which the event is dead-lettered; another 4xx is
a rejection, which the relay counts and dead-letters.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

import httpx
import structlog

from bridge.client_tls import ClientTls, ClientTlsError, describe_tls_failure
from bridge.errors import BridgeError
from bridge.outbox.protocol import Outcome, Retry
from bridge.redact import redact_text
from bridge.types import ComponentHealth, Prediction

__all__ = ["WebhookDestination", "is_retryable", "retry_after_s"]

log = structlog.get_logger(__name__)

_RETRYABLE_4XX = frozenset({408, 425, 429})


def is_retryable(status: int) -> bool:
    return status >= 500 or status in _RETRYABLE_4XX


def retry_after_s(value: str | None, now: float) -> float | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return None if when.tzinfo is None else max(0.0, when.timestamp() - now)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebhookDestination:
    """``bridge.outbox.protocol.OutboxDestination`` for one model's retraining webhook."""

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        timeout_s: float = 10.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        tls: ClientTls | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._timeout_s = timeout_s
        self._initial = initial_backoff_s
        self._cap = max_backoff_s
        self._tls = tls
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._last_error = ""
        self._counters = {"sent": 0, "retries": 0, "rejected": 0}

    @property
    def concurrency(self) -> int:
        return 1

    @property
    def backoff(self) -> tuple[float, float]:
        """How the relay spaces this webhook's retries: first delay and cap, in seconds."""
        return self._initial, self._cap

    async def start(self) -> None:
        if self._client is None and not self._closed:
            try:
                # The CA to trust and the client certificate, when the mapping gives them.
                verify = True if self._tls is None else self._tls.ssl_context()
            except ClientTlsError as exc:
                raise BridgeError(f"{self.name}: {exc}") from exc
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s),
                follow_redirects=False,
                trust_env=False,
                transport=httpx.AsyncHTTPTransport(
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                    verify=verify,
                ),
            )

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def write(self, batch: Sequence[Prediction]) -> None:
        raise BridgeError(f"{self.name} is fed by the outbox relay, not by write()")

    def health(self) -> ComponentHealth:
        counters = dict(self._counters)
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    def encode(self, prediction: Prediction) -> str | None:
        return None  # drift events only

    async def deliver(self, key: str, body: str) -> Outcome:
        """Send once: None accepted, the reason of a rejection, or ``Retry``."""
        # The same key on every attempt lets the receiver discard a repeat whose reply was lost.
        headers = {**self._headers, "Idempotency-Key": key}
        try:
            status, text = await self._post(body, headers)
        except _Retryable as exc:
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
            raise BridgeError(f"{self.name} is not started")
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            tls = describe_tls_failure(
                exc,
                "drift.webhook_tls",
                https=self.url.lower().startswith("https://"),
                client_certificate=bool(self._tls and self._tls.client_certificate),
            )
            raise _Retryable(tls if tls is not None else f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if not response.is_success and is_retryable(status):
            wait = retry_after_s(response.headers.get("Retry-After"), time.time())
            raise _Retryable(f"HTTP {status}", wait)
        return status, response.text[:200]
