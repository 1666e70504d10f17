"""Twin commands sent through Ditto's HTTP API (version 2), one request per command.

A command at ``path`` of thing ``<namespace>:<name>`` becomes a request to
``<url>/api/2/things/<namespace>:<name><path>``: ``modify`` a PUT of ``value`` (JSON),
``merge`` a PATCH (``application/merge-patch+json``), as the HTTP API documents them
(https://eclipse.dev/ditto/httpapi-concepts.html; PATCH takes only
application/merge-patch+json: https://eclipse.dev/ditto/httpapi-overview.html).

Answers: 2xx accepted; 408/425/429 and 5xx, timeouts and refused connections ``Retry`` (with
``Retry-After``); any other 4xx a rejection, quoting Ditto's error (``error``, ``message``,
``description``). A 404 of a feature means the thing (or the feature) is gone: the thing is
created again before the event is retried.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from bridge.client_tls import ClientTlsError, describe_tls_failure
from bridge.destination import Outcome, Retry
from bridge.errors import ConnectorError
from bridge.redact import redact_text
from bridge.retry import is_retryable_status, parse_retry_after

from .config import DittoHttp
from .protocol import JSON, MERGE_PATCH

__all__ = ["HttpTransport", "request_of"]

log = structlog.get_logger(__name__)

_EXCERPT = 300
# Characters of a path segment that need no escaping (RFC 3986 pchar), ":" of a thing id too.
_SAFE = "-._~!$&'()*+,;=:@"


def request_of(message: Mapping[str, Any]) -> tuple[str, str, str, bytes]:
    """(method, path below the base URL, content type, body) of one twin command."""
    namespace, name, group, channel, criterion, action = str(message["topic"]).split("/")
    if (group, channel, criterion) != ("things", "twin", "commands"):
        raise ValueError(f"not a twin command: {message['topic']}")
    path = str(message["path"])
    segments = [quote(s, safe=_SAFE) for s in path.split("/") if s]
    target = "/api/2/things/" + quote(f"{namespace}:{name}", safe=_SAFE)
    if segments:
        target += "/" + "/".join(segments)
    body = json.dumps(message["value"], separators=(",", ":"), ensure_ascii=False).encode()
    if action == "modify":
        return "PUT", target, JSON, body
    if action == "merge":
        return "PATCH", target, MERGE_PATCH, body
    raise ValueError(f"unsupported action {action!r}")


def _ditto_error(response: httpx.Response) -> str:
    """Ditto's error JSON in one line (``error``: ``message`` -- ``description``)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:_EXCERPT]
    if not isinstance(data, dict):
        return response.text[:_EXCERPT]
    text = f"{data.get('error', '?')}: {data.get('message', '')}"
    if data.get("description"):
        text += f" ({data['description']})"
    return text[:_EXCERPT]


class _Missing(Exception):
    """A 404 of a feature path: the thing or its feature is not there (any more)."""


class HttpTransport:
    def __init__(self, name: str, settings: DittoHttp, tls_key: str) -> None:
        self.name = name
        self._settings = settings
        self._tls_key = tls_key
        self._client: httpx.AsyncClient | None = None
        self.counters = {"requests": 0}

    def _headers(self) -> dict[str, str]:
        s = self._settings
        headers = dict(s.headers)
        if s.bearer_token is not None:
            headers["Authorization"] = f"Bearer {s.bearer_token}"
        elif s.username is not None:
            pair = f"{s.username}:{s.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self._settings
        try:
            verify = True if s.tls is None else s.tls.ssl_context()
        except ClientTlsError as exc:
            raise ConnectorError(f"{self.name}: {exc}") from exc
        # Where twins are written is the mapping's decision, never proxy variables';
        # redirects are not followed.
        self._client = httpx.AsyncClient(
            base_url=s.url,
            headers=self._headers(),
            timeout=httpx.Timeout(s.timeout_s),
            follow_redirects=False,
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], verify=verify
            ),
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(
        self, events: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[tuple[Outcome, bool]]:
        """Each event's commands in order (a failed one ends its event); per event its outcome
        and whether the thing turned out missing."""
        return [await self._send_event(messages) for _, messages in events]

    async def _send_event(self, messages: Sequence[Mapping[str, Any]]) -> tuple[Outcome, bool]:
        for message in messages:
            try:
                outcome = await self._request(message)
            except _Missing as exc:
                return Retry(str(exc)), True
            if outcome is not None:
                return outcome, False
        return None, False

    async def _request(self, message: Mapping[str, Any]) -> Outcome:
        client = self._client
        if client is None:
            raise ConnectorError(f"{self.name} is not started")
        method, target, content_type, body = request_of(message)
        headers = {
            "Content-Type": content_type,
            "correlation-id": str(message["headers"]["correlation-id"]),
        }
        self.counters["requests"] += 1
        try:
            response = await client.request(method, target, content=body, headers=headers)
        except httpx.TransportError as exc:
            s = self._settings
            tls = describe_tls_failure(
                exc,
                self._tls_key,
                https=s.url.lower().startswith("https://"),
                client_certificate=bool(s.tls and s.tls.client_certificate),
            )
            return Retry(redact_text(tls or f"{method} {target}: {type(exc).__name__}: {exc}"))
        status = response.status_code
        if response.is_success:
            return None
        if is_retryable_status(status):
            wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
            return Retry(f"{method} {target}: HTTP {status} {_ditto_error(response)}", wait)
        error = _ditto_error(response)
        if status == 404 and "/features/" in target:
            raise _Missing(f"{method} {target}: HTTP 404 {error}")
        log.warning(
            "ditto_rejected", destination=self.name, method=method, target=target, status=status
        )
        return f"{method} {target}: HTTP {status} {error}"
