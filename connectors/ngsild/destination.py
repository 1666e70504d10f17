"""NGSI-LD destination: upserts one entity per asset on a context broker, in batches, for the
outbox relay.

``encode`` makes an event's entity once (prediction, tag values of that moment, ``@context``);
the outbox keeps it until the broker took it. ``deliver`` sends a batch (events of different
assets) in one ``POST /ngsi-ld/v1/entityOperations/upsert?options=update`` as
``application/ld+json``, with the entities of the assets' ISA-95 levels the broker has not
taken yet, and says what came of each event: accepted (201/204, or listed in a 207's
``success``), rejected (the whole request refused with a 4xx, or the entity's own 4xx error in a
207: the relay dead-letters it) or ``Retry`` (connection errors, timeouts, 408/425/429, 5xx,
and a 207 error with such a status). The relay owns the retries, their backoff and the order of
each asset's events.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import structlog

from bridge.client_tls import ClientTlsError, describe_tls_failure
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.redact import redact_text, redact_url
from bridge.retry import is_retryable_status, parse_retry_after
from bridge.types import ComponentHealth, PredictionSlot, Trigger

from .config import NgsiLdSettings
from .context import entity_context, our_context_url
from .entity import EntityShaper, asset_of
from .late import LateAttributes, Split, temporal_body
from .reply import ReplyError, outcomes_of, parse_batch_reply, whole_request_reason
from .tagsnapshot import TagSnapshot
from .units import UnitCodes

__all__ = ["NgsiLdDestination"]

log = structlog.get_logger(__name__)

# The level entities (enterprise ... line) are sent again this long after the broker took
# them, so a broker that lost its state gets them back without a gateway restart.
LEVEL_REFRESH_S = 3600.0
# One "the broker is failing" warning (and its "recovered") per this many seconds.
_LOG_EVERY_S = 10.0
_ID_PREFIX = '{"id":"'


def _entity_id(body: str) -> str:
    """The ``id`` of an encoded entity: ``encode`` writes it first (ids need no escaping)."""
    if body.startswith(_ID_PREFIX):
        end = body.find('"', len(_ID_PREFIX))
        if end > 0:
            return body[len(_ID_PREFIX) : end]
    found = json.loads(body).get("id")
    if not isinstance(found, str):
        raise ValueError("an outbox body without an entity id")
    return found


def _templates_of(context: DestinationContext) -> Mapping[str, str] | None:
    """The template of each asset made from one; None when the gateway told no assets (a tool,
    a test): the types then come from ``asset_types`` and ``default_type`` alone."""
    if not context.assets:
        return None
    return {a.asset: a.template for a in context.assets if a.template}


class NgsiLdDestination:
    """``bridge.destination.Destination`` for one NGSI-LD context broker."""

    def __init__(self, name: str, settings: NgsiLdSettings, context: DestinationContext) -> None:
        self.name = name
        self._settings = settings
        self._tls_key = context.key_of(name, "tls")
        self.capabilities = Capabilities(
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            backoff=(settings.initial_backoff_s, settings.max_backoff_s),
            rules=tuple(settings.events),
        )
        templates = _templates_of(context)
        if templates is None and settings.template_types:
            log.warning(
                "ngsild_template_types_unused",
                destination=self.name,
                hint="the assets' templates are not known here: give the types per asset "
                f"({context.key_of(name, 'asset_types')})",
            )
        self._shaper = EntityShaper(
            settings,
            entity_context(
                our_context_url(settings.context_url, context.public_url),
                settings.core_context_url,
            ),
            UnitCodes(name),
            templates,
        )
        self._shaper.follow_slots(context.slots)
        self._tags = TagSnapshot(context.tags if settings.tags != [] else None)
        self._headers = {
            **settings.headers,
            "Content-Type": "application/ld+json",
            "Accept": "application/json",
        }
        if settings.tenant is not None:
            self._headers["NGSILD-Tenant"] = settings.tenant
        self._levels_sent: dict[str, float] = {}  # level entity id -> monotonic time taken
        self._client: httpx.AsyncClient | None = None
        self._tag_task: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight = 0
        self._last_error = ""
        self._warned = False
        self._warned_at = -_LOG_EVERY_S
        self._unlogged = 0
        self._late = LateAttributes()
        self._warned_late = False
        self._counters = {
            "sent": 0,
            "rejected": 0,
            "retries": 0,
            "requests": 0,
            "levels": 0,
            "late": 0,
        }

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"ngsi-ld destination {self.name!r} is closed")
        if self._client is not None:
            return
        s = self._settings
        try:
            verify: Any = True if s.tls is None else s.tls.ssl_context()
        except ClientTlsError as exc:
            raise ConnectorError(f"ngsi-ld destination {self.name!r}: {exc}") from exc
        # Where entities go is decided by the mapping, never by proxy variables; redirects
        # are not followed (a 3xx is the answer).
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            follow_redirects=False,
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                verify=verify,
                limits=httpx.Limits(max_connections=s.concurrency),
            ),
        )
        if self._tags.live:
            since = time.monotonic()
            self._tags.refresh(0.0)
            self._tag_task = asyncio.create_task(self._follow_tags(since), name=f"{self.name}-tags")
        log.info("ngsild_destination_started", destination=self.name, url=redact_url(s.url))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._tag_task = self._tag_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        log.info("ngsild_destination_closed", destination=self.name, **self._counters)

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        """``bridge.types.FollowsSlots``: regressors' units after a mapping reload."""
        self._shaper.follow_slots(slots)

    async def follow_context(self, context: DestinationContext) -> None:
        """``bridge.destination.FollowsContext``: the assets' templates after a mapping reload
        (an asset whose type changes is a new entity id from its next event on)."""
        templates = _templates_of(context)
        if templates is not None:
            self._shaper.follow_templates(templates)
        # gateway.api.public_url may have changed: events encoded from now on name the new URL.
        s = self._settings
        self._shaper.follow_context(
            entity_context(our_context_url(s.context_url, context.public_url), s.core_context_url)
        )

    def health(self) -> ComponentHealth:
        counters = {**self._counters, "in_flight": self._in_flight}
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._client is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    async def _follow_tags(self, since: float) -> None:
        # The tag table changes only on this event loop: between taking ``now`` and reading
        # the table nothing runs, so no change falls between two reads.
        while True:
            await asyncio.sleep(self._settings.tag_refresh_s)
            now = time.monotonic()
            self._tags.refresh(since)
            since = now

    # -- encode ----------------------------------------------------------------------------

    def encode(self, event: Trigger) -> str:
        entity = self._shaper.asset_entity(event, self._tags.of(event.prediction.asset))
        return json.dumps(entity, separators=(",", ":"), allow_nan=False, ensure_ascii=False)

    # -- deliver ---------------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        """Send the batch once, in one request; one outcome per envelope, in order."""
        ids = [_entity_id(body) for _, body in batch]
        splits = [self._late.split(i, body) for i, (_, body) in zip(ids, batch, strict=True)]
        levels = self._levels_due(ids)
        body = "[" + ",".join([*(s.current for s in splits), *levels.values()]) + "]"
        self._in_flight += len(batch)
        try:
            outcomes, taken_levels = await self._upsert(body.encode(), ids, list(levels))
            for i, (entity_id, split) in enumerate(zip(ids, splits, strict=True)):
                if outcomes[i] is not None:
                    continue
                self._late.taken(entity_id, split)
                if split.late:
                    outcomes[i] = await self._history(entity_id, split)
        finally:
            self._in_flight -= len(batch)
        now = time.monotonic()
        for level in taken_levels:
            self._levels_sent[level] = now
        self._counters["levels"] += len(taken_levels)
        sent = sum(1 for o in outcomes if o is None)
        rejected = [
            (key, o) for (key, _), o in zip(batch, outcomes, strict=True) if isinstance(o, str)
        ]
        self._counters["sent"] += sent
        self._counters["rejected"] += len(rejected)
        for key, reason in rejected:
            log.warning("ngsild_rejected", destination=self.name, key=key, reason=reason)
        retries = [o for o in outcomes if isinstance(o, Retry)]
        if retries:
            self._failed(retries[0].reason, len(retries), len(batch))
        elif sent:
            self._recovered()
        return outcomes

    def _levels_due(self, ids: Sequence[str]) -> dict[str, str]:
        """The level entities of the batch's assets to send along: id -> encoded entity."""
        due: dict[str, str] = {}
        now = time.monotonic()
        for entity_id in ids:
            asset = asset_of(entity_id)
            if all(
                now - self._levels_sent.get(level_id, -LEVEL_REFRESH_S) < LEVEL_REFRESH_S
                for _, level_id, _ in self._shaper.level_ids(asset)
            ):
                continue  # the usual case: every level of the asset taken lately
            for level in self._shaper.level_entities(asset):
                level_id = level["id"]
                taken = self._levels_sent.get(level_id)
                if level_id not in due and (taken is None or now - taken >= LEVEL_REFRESH_S):
                    due[level_id] = json.dumps(level, separators=(",", ":"), ensure_ascii=False)
        return due

    async def _history(self, entity_id: str, split: Split) -> Outcome:
        """Late attributes of an event whose current part the broker took: into the entity's
        temporal history, or left out (``temporal: false``)."""
        self._counters["late"] += 1
        if not self._settings.temporal:
            if not self._warned_late:
                self._warned_late = True
                log.info(
                    "ngsild_late_attributes_left_out",
                    destination=self.name,
                    entity=entity_id,
                    attributes=sorted(split.late),
                    hint="older than the values the broker holds; set temporal: true to add "
                    "them to the entity's history",
                )
            return None
        client = self._client
        if client is None:
            raise ConnectorError(f"ngsi-ld destination {self.name!r} is not started")
        self._counters["requests"] += 1
        try:
            response = await client.post(
                self._settings.temporal_url(entity_id),
                content=temporal_body(split),
                headers=self._headers,
            )
        except httpx.TransportError as exc:
            return Retry(redact_text(self._transport_error(exc)))
        status = response.status_code
        if 200 <= status < 300:
            return None
        if is_retryable_status(status):
            after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            return Retry(f"HTTP {status} (temporal API)", after)
        return whole_request_reason(
            status,
            response.content,
            "the late attributes (temporal API; temporal: false leaves them out)",
        )

    async def _upsert(
        self, body: bytes, ids: Sequence[str], levels: Sequence[str]
    ) -> tuple[list[Outcome], list[str]]:
        """Outcomes of ``ids`` and the level ids the broker took."""
        client = self._client
        if client is None:
            raise ConnectorError(f"ngsi-ld destination {self.name!r} is not started")
        self._counters["requests"] += 1
        try:
            response = await client.post(
                self._settings.upsert_url, content=body, headers=self._headers
            )
        except httpx.TransportError as exc:
            retry = Retry(redact_text(self._transport_error(exc)))
            return [retry] * len(ids), []
        status = response.status_code
        if status == 207:
            try:
                reply = parse_batch_reply(response.content)
            except ReplyError as exc:
                # Which entities did it keep? Unknown: send them all again (an upsert repeats
                # harmlessly).
                retry = Retry(f"HTTP 207 not understood: {exc}")
                return [retry] * len(ids), []
            for level in levels:
                if level in reply.errors:
                    log.warning(
                        "ngsild_level_refused",
                        destination=self.name,
                        entity=level,
                        error=reply.errors[level],
                    )
            return outcomes_of(reply, ids), [lv for lv in levels if lv in reply.success]
        if 200 <= status < 300:
            return [None] * len(ids), list(levels)
        if is_retryable_status(status):
            after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            retry = Retry(f"HTTP {status}", after)
            return [retry] * len(ids), []
        reason = whole_request_reason(status, response.content)
        log.warning("ngsild_batch_rejected", destination=self.name, status=status, reason=reason)
        return [reason] * len(ids), []

    def _transport_error(self, exc: httpx.TransportError) -> str:
        # A refused certificate is retried like any connection error (the broker may renew
        # it), but its message names the setting to fix.
        s = self._settings
        tls = describe_tls_failure(
            exc,
            self._tls_key,
            https=s.url.lower().startswith("https://"),
            client_certificate=bool(s.tls and s.tls.client_certificate),
        )
        return tls if tls is not None else f"{type(exc).__name__}: {exc}"

    def _failed(self, error: str, failed: int, of: int) -> None:
        self._counters["retries"] += failed
        now = time.monotonic()
        if not self._warned and now - self._warned_at >= _LOG_EVERY_S:
            log.warning(
                "ngsild_send_failing",
                destination=self.name,
                error=error,
                failed=failed,
                of=of,
                failures_since_last_warning=self._unlogged + 1,
            )
            self._warned, self._warned_at, self._unlogged = True, now, 0
        else:
            self._unlogged += 1
        self._last_error = error

    def _recovered(self) -> None:
        if self._last_error:
            if self._warned:
                log.info("ngsild_recovered", destination=self.name, after_error=self._last_error)
                self._warned = False
            self._last_error = ""
