"""UNS destination: each asset's predictions and model events as JSON in an ISA-95 topic tree.

``<topic>/prediction`` holds the asset's latest prediction (retained: a client that subscribes
later reads the current state first); ``<topic>/event`` carries label changes, alerts, threshold
crossings and drift (not retained). Fed by the outbox relay like every durable destination: a
broker outage keeps the events in the store and the relay sends them, in order per asset, once
the broker is back. A publish counts as delivered when its PUBACK (QoS 1) or PUBCOMP (QoS 2)
arrives; a lost acknowledgement means the event is published again, so receivers dedupe on
the body's ``id``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.connectors.mqtt.config import UnsSettings
from bridge.connectors.mqtt.link import Link, open_link
from bridge.destination import DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.normalize import passes_deadband
from bridge.types import ComponentHealth, Prediction, Quality, TagReading, TagValue, Trigger

__all__ = ["UnsDestination", "event_body"]

log = structlog.get_logger(__name__)

BATCH_SIZE = 64


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _prediction_fields(p: Prediction) -> dict[str, Any]:
    value = p.value
    if isinstance(value, float):
        value = _finite(value)
    fields: dict[str, Any] = {
        "id": p.id,
        "seq": p.seq,
        "asset": p.asset,
        "model": p.model,
        "version": p.version,
        "sha256": p.sha256,
        "value": value,
        "score": _finite(p.score),
        "quality": p.quality.label,
        "timestamp": round(p.timestamp, 3),
        "input_age_s": _finite(p.input_age_s),
        "drift_score": _finite(p.drift_score),
        "historical": p.historical,
    }
    if p.reason:
        fields["reason"] = p.reason
    if p.explanation is not None:
        fields["explanation"] = {
            "reason": p.explanation.reason,
            "top": [{"feature": c.feature, "effect": _finite(c.effect)} for c in p.explanation.top],
        }
    return fields


def event_body(event: Trigger) -> str:
    """The JSON of one event: the prediction's fields, and for events other than a plain
    prediction what made it one (``event``, ``previous``, ``crossing``, ...)."""
    body = _prediction_fields(event.prediction)
    body["event"] = event.event
    for key in ("previous", "crossing", "limit", "field"):
        value = getattr(event, key)
        if value is not None:
            body[key] = value
    if event.drift is not None:
        body["drift"] = dict(event.drift)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


class UnsDestination:
    """``bridge.destination.Destination`` publishing to one broker."""

    def __init__(self, name: str, settings: UnsSettings, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self._where = f"outputs.{name}"
        self.capabilities = settings.capabilities(BATCH_SIZE)
        self._link: Link | None = None
        self._connecting = asyncio.Lock()
        self._tags = context.tags if settings.tags is not None else None
        self._tag_task: asyncio.Task[None] | None = None
        # tag id -> (value, quality) last published, for the deadband and quality changes
        self._published_tags: dict[str, tuple[TagValue, str]] = {}
        self._closed = False
        self._last_error = ""
        self._in_flight = 0
        self._counters = {
            "published": 0,
            "retries": 0,
            "expired": 0,
            "refused": 0,
            "connects": 0,
            "tag_messages": 0,
        }

    async def start(self) -> None:
        # The first delivery connects: a broker that is down at start costs a Retry, not the
        # gateway's start.
        self._closed = False
        if self._tags is not None and self._tag_task is None:
            self._tag_task = asyncio.create_task(self._publish_tags(), name=f"{self.name}-tags")

    async def close(self) -> None:
        self._closed = True
        task, self._tag_task = self._tag_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    def health(self) -> ComponentHealth:
        counters = {**self._counters, "in_flight": self._in_flight}
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", self._last_error, counters)
        if self._link is None:
            return ComponentHealth(self.name, "starting", "not connected yet", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    def encode(self, event: Trigger) -> str | None:
        return event_body(event)

    async def _connected(self) -> Link:
        async with self._connecting:  # the relay and the tag publisher share one link
            if self._link is not None:
                return self._link
            self._link = await open_link(self.settings, self.name, self._where, clean_start=True)
            self._counters["connects"] += 1
            log.info(
                "uns_connected",
                destination=self.name,
                broker=f"{self.settings.host}:{self.settings.port}",
            )
            return self._link

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        try:
            link = await self._connected()
        except ConnectorError as exc:
            return [self._failed(str(exc)) for _ in batch]
        outcomes = await asyncio.gather(*(self._publish(link, key, body) for key, body in batch))
        if any(isinstance(o, Retry) for o in outcomes):
            await self._drop(link)
        elif self._last_error:
            log.info("uns_recovered", destination=self.name, after_error=self._last_error)
            self._last_error = ""
        return list(outcomes)

    async def _drop(self, link: Link) -> None:
        """A publish that failed on ``link`` fails the others too: the next one connects."""
        if self._link is link:
            self._link = None
            await link.close(timeout_s=1.0)

    def _failed(self, reason: str) -> Retry:
        self._counters["retries"] += 1
        if reason != self._last_error:
            log.warning("uns_failing", destination=self.name, error=reason)
        self._last_error = reason
        return Retry(reason)

    async def _publish(self, link: Link, key: str, body: str) -> Outcome:
        event = json.loads(body)
        kind = "prediction" if event.get("event", "prediction") == "prediction" else "event"
        # No content type or user properties: paho encodes them in Python, which cost 40 % of
        # the publish rate (bench.mqtt); the body's ``id`` is the idempotency key.
        properties = None
        expiry = self.settings.message_expiry_s
        # Made for a past time (backfill): never the retained current state, and its age is
        # no reason to expire it (it was old when it was made).
        historical = bool(event.get("historical", False))
        if expiry is not None:
            stamp = float(event.get("timestamp", time.time()))
            left = expiry - (0.0 if historical else max(0.0, time.time() - stamp))
            if left < 1:
                self._counters["expired"] += 1
                log.info("uns_event_expired", destination=self.name, key=key, expiry_s=expiry)
                return None  # its expiry has passed: a UNS client must not see it as current
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = int(left)
        topic = f"{self.settings.topic_of(event['asset'], event['model'])}/{kind}"
        self._in_flight += 1
        try:
            refused = await link.client.publish_checked(
                topic,
                body.encode(),
                qos=self.settings.qos,
                retain=self.settings.retain and kind == "prediction" and not historical,
                properties=properties,
                ack_timeout_s=self.settings.publish_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            return self._failed(f"publish to {topic} failed: {exc}")
        finally:
            self._in_flight -= 1
        if refused:
            self._counters["refused"] += 1
            log.warning("uns_publish_refused", destination=self.name, topic=topic, reason=refused)
            return (
                f"the broker refused the publish to {topic}: {refused} (its ACL must let the "
                "gateway's identity write this topic tree)"
            )
        self._counters["published"] += 1
        return None

    # -- tag values: live, rate-limited, latest state retained --

    async def _publish_tags(self) -> None:
        """Every ``tags.interval_s``, publish the tags that changed past the deadband. A tag
        whose publish failed keeps its last published state, so its newest value goes out
        once the broker is back (only the latest: tag values are state, not events)."""
        assert self._tags is not None and self.settings.tags is not None
        interval = self.settings.tags.interval_s
        since = 0.0
        pending: dict[str, TagReading] = {}
        while True:
            started = time.monotonic()
            for reading in self._tags(since):
                if self._wanted(reading):
                    waiting = pending.get(reading.tag)
                    if reading.heartbeat and waiting is not None and not waiting.heartbeat:
                        # Not a repeat: the change it repeats has not gone out yet.
                        reading = replace(reading, heartbeat=False)
                    pending[reading.tag] = reading
            since = started
            if pending:
                try:
                    link = await self._connected()
                    await self._send_tags(link, pending)
                except ConnectorError as exc:
                    self._failed(str(exc))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def _wanted(self, reading: TagReading) -> bool:
        tags = self.settings.tags
        assert tags is not None
        if tags.assets and reading.asset not in tags.assets:
            return False
        if reading.heartbeat:
            return True  # the tag's heartbeat_s asks for the repeat: no deadband applies
        last = self._published_tags.get(reading.tag)
        if last is None or last[1] != reading.quality.label:
            return True
        old = last[0]
        # The tag table's own deadband rule, so a UNS deadband means what a tag's does.
        return reading.value != old and passes_deadband(old, reading.value, tags.deadband)

    async def _send_tags(self, link: Link, pending: dict[str, TagReading]) -> None:
        for tag_id, reading in list(pending.items()):
            topic = self.settings.tag_topic(reading.asset, reading.name)
            value = reading.value
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            body = {
                "tag": reading.tag,
                "asset": reading.asset,
                "value": value,
                "unit": reading.unit,
                "quality": reading.quality.label,
                "source_time": reading.source_time,
                "timestamp": reading.received_time,
            }
            if reading.reason and reading.quality is not Quality.GOOD:
                body["reason"] = reading.reason
            if reading.heartbeat:
                body["heartbeat"] = True
            try:
                refused = await link.client.publish_checked(
                    topic,
                    json.dumps(body, separators=(",", ":")).encode(),
                    qos=self.settings.qos,
                    retain=True,
                    ack_timeout_s=self.settings.publish_timeout_s,
                )
            except aiomqtt.MqttError as exc:
                await self._drop(link)
                raise ConnectorError(f"publish to {topic} failed: {exc}") from exc
            del pending[tag_id]
            if refused:
                self._counters["refused"] += 1
                log.warning(
                    "uns_publish_refused", destination=self.name, topic=topic, reason=refused
                )
                continue
            self._published_tags[tag_id] = (reading.value, reading.quality.label)
            self._counters["tag_messages"] += 1
