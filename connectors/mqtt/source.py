"""MQTT source: devices publish their values, the gateway subscribes (device onboarding).

A device's identity is its certificate: the broker (``use_identity_as_username`` and an ACL)
lets a device publish only under its own topic, so a tag bound to ``plant/line4/pump-a/...``
can only be fed by pump-a's certificate. The gateway holds a persistent session
(``clean_start`` false, a session expiry), so QoS 1 messages published while it restarts wait
on the broker.

A malformed payload never stops the source: it is counted, logged once per topic per minute,
and the tags of that topic become Bad.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from bridge.cancel import CancelWatch
from bridge.connectors.mqtt.config import MqttAddress, MqttSourceSettings
from bridge.connectors.mqtt.decode import (
    Binding,
    PayloadError,
    decode,
    parse_sparkplug,
    sparkplug_aliases,
    sparkplug_samples,
    sparkplug_topics,
)
from bridge.connectors.mqtt.link import Link, open_link
from bridge.errors import ConnectorError, NotConnected
from bridge.retry import ReconnectSettings
from bridge.types import Quality, SourceTag, TagSample

if TYPE_CHECKING:
    from bridge.connectors.mqtt.sparkplug.codec import AliasTable

__all__ = ["MqttSource"]

log = structlog.get_logger(__name__)

LOG_EVERY_S = 60.0
# Messages taken from the socket queue into one batch: large enough that a burst is one trip
# through normalize, small enough that one batch never holds the loop for long.
MAX_BATCH = 2000
# A wildcard subscription can bring topics of devices not in the mapping; remember that many
# for the once-per-minute log, not every topic ever seen.
MAX_REMEMBERED_TOPICS = 10_000


class _Throttle:
    """Says yes once per key per ``every_s`` (bounded memory)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def ready(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if last is None and len(self._last) >= MAX_REMEMBERED_TOPICS:
            self._last.clear()
        self._last[key] = now
        return True


def _counting_queue(source: MqttSource) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt drops a message that finds its queue full with only a log line: count it."""

    class CountingQueue(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize)
            source._inbox = self  # drained in bulk by samples()

        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                super().put_nowait(item)
            except asyncio.QueueFull:
                source.dropped += 1
                if source._throttle.ready("\x00dropped", time.time()):
                    log.warning(
                        "mqtt_queue_full",
                        source=source.name,
                        detail=f"more than {source.settings.max_queued} messages waiting: "
                        "new ones are dropped (raise max_queued or lower the device rates)",
                        dropped_total=source.dropped,
                    )
                raise

    return CountingQueue


def _bindings(tags: Iterable[SourceTag]) -> dict[str, list[list[Binding]]]:
    """Tags by topic, and by payload format within a topic."""
    by_topic: dict[str, dict[str, list[Binding]]] = defaultdict(dict)
    for tag in tags:
        address = tag.address
        if not isinstance(address, MqttAddress):
            address = MqttAddress.model_validate(address)
        by_topic[address.topic].setdefault(address.format, []).append(Binding(tag.tag, address))
    return {topic: list(groups.values()) for topic, groups in by_topic.items()}


class MqttSource:
    def __init__(self, name: str, settings: MqttSourceSettings, tags: Sequence[SourceTag]):
        self.name = name
        self.settings = settings
        self._topics = _bindings(tags)
        # Sparkplug: a DATA topic's metrics are named by its birth and end with a death.
        self._companions: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for topic, groups in self._topics.items():
            if any(g[0].address.format == "sparkplug" for g in groups):
                birth, deaths = sparkplug_topics(topic)
                self._companions[birth].append(("birth", topic))
                for death in deaths:
                    self._companions[death].append(("death", topic))
        self._aliases: dict[str, AliasTable] = {}
        self._filters = list(settings.subscribe) or sorted({*self._topics, *self._companions})
        self._link: Link | None = None
        self._throttle = _Throttle(LOG_EVERY_S)
        self.received = 0
        self.malformed = 0
        self.unbound = 0
        self.dropped = 0
        self.unnamed = 0  # Sparkplug DATA that came before its birth
        self._inbox: asyncio.Queue[aiomqtt.Message] | None = None

    # -- what the runtime reads (bridge.runtime.sources: Reconnectable, Probeable, PartlyUp) --

    @property
    def reconnect(self) -> ReconnectSettings:
        return self.settings.reconnect

    @property
    def probe_address(self) -> tuple[str, int] | None:
        return (self.settings.host, self.settings.port)

    @property
    def degraded(self) -> str:
        return ""  # one connection: up or down, never partly

    @property
    def counters(self) -> Mapping[str, int]:
        return {
            "messages": self.received,
            "malformed": self.malformed,
            "unbound": self.unbound,
            "dropped": self.dropped,
            "unnamed": self.unnamed,
            "queued": self._inbox.qsize() if self._inbox is not None else 0,
        }

    @property
    def filters(self) -> Sequence[str]:
        return tuple(self._filters)

    # -- Source --

    async def connect(self) -> None:
        where = f"sources.{self.name}"
        link = await open_link(
            self.settings,
            self.name,
            where,
            max_queued_incoming=self.settings.max_queued,
            queue_type=_counting_queue(self),
        )
        try:
            await self._subscribe(link)
        except BaseException:
            await link.close()
            raise
        self._link = link
        log.info(
            "mqtt_source_subscribed",
            source=self.name,
            broker=f"{self.settings.host}:{self.settings.port}",
            filters=len(self._filters),
            topics=len(self._topics),
        )

    async def _subscribe(self, link: Link) -> None:
        subscriptions: list[tuple[str, int]] = [(f, self.settings.qos) for f in self._filters]
        refused: list[str] = []
        # SUBSCRIBE carries several filters; a large mapping is sent in chunks the broker takes.
        for start in range(0, len(subscriptions), 500):
            chunk = subscriptions[start : start + 500]
            try:
                codes = await link.client.subscribe(chunk, timeout=self.settings.connect_timeout_s)
            except aiomqtt.MqttError as exc:
                raise ConnectorError(f"subscribe to {len(chunk)} filters failed: {exc}") from exc
            for (topic_filter, _), code in zip(chunk, list(codes), strict=False):
                value = code.value if isinstance(code, ReasonCode) else code
                if isinstance(value, int) and value >= 0x80:
                    refused.append(f"{topic_filter} ({code})")
        if refused:
            raise ConnectorError(
                f"the broker refused the subscription to {', '.join(refused[:5])}"
                f"{' ...' if len(refused) > 5 else ''}: its ACL must let the gateway's identity "
                f"read these topics (sources.{self.name}.subscribe or the tags' topics)"
            )

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        link = self._link
        if link is None:
            raise NotConnected(f"MQTT source {self.name} is not connected")
        messages = link.client.messages
        watch = CancelWatch()
        try:
            while True:
                # The iterator notices a lost connection; the rest of a burst is taken straight
                # from the queue (the iterator makes a task per message: most of the CPU).
                first = await anext(messages)
                watch.check()
                batch: list[TagSample] = []
                self._take(first, batch)
                inbox = self._inbox
                if inbox is not None:
                    for _ in range(MAX_BATCH):
                        try:
                            message = inbox.get_nowait()
                        except asyncio.QueueEmpty:
                            break
                        self._take(message, batch)
                if batch:
                    yield batch
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"MQTT broker connection lost: {exc}") from exc

    def _take(self, message: aiomqtt.Message, batch: list[TagSample]) -> None:
        self.received += 1
        topic = message.topic.value
        groups = self._topics.get(topic)
        now = time.time()
        payload = message.payload
        raw = bytes(payload if isinstance(payload, bytes | bytearray) else str(payload).encode())
        companions = self._companions.get(topic)
        if companions is not None:
            self._sparkplug_state(topic, companions, raw, now, batch)
            return
        if groups is None:
            self.unbound += 1
            if self._throttle.ready(topic, now):
                log.info(
                    "mqtt_topic_unbound",
                    source=self.name,
                    topic=topic,
                    detail="no tag names this topic (a device not in the mapping?)",
                    unbound_total=self.unbound,
                )
            return
        for bindings in groups:
            aliases = None
            if bindings[0].address.format == "sparkplug":
                aliases = self._aliases.get(topic)
                if aliases is None:
                    self._waiting_for_birth(topic, now)
                    continue
            try:
                batch.extend(decode(raw, bindings, now, aliases))
            except PayloadError as exc:
                self._malformed(topic, bindings, exc, now, batch)

    def _malformed(
        self,
        topic: str,
        bindings: Sequence[Binding],
        exc: PayloadError,
        now: float,
        batch: list[TagSample],
    ) -> None:
        self.malformed += 1
        if self._throttle.ready(topic, now):
            log.warning(
                "mqtt_payload_malformed",
                source=self.name,
                topic=topic,
                error=str(exc),
                malformed_total=self.malformed,
            )
        reason = f"malformed payload: {exc}"
        batch.extend(TagSample(b.tag, None, Quality.BAD, now, reason=reason) for b in bindings)

    def _waiting_for_birth(self, topic: str, now: float) -> None:
        # Alias-only DATA cannot be read before its birth has named the aliases; the edge node
        # sends one when it (re)connects or when a host application asks for a rebirth.
        self.unnamed += 1
        if self._throttle.ready(f"\x00birth {topic}", now):
            log.info(
                "mqtt_sparkplug_waiting_for_birth",
                source=self.name,
                topic=topic,
                detail="DATA before any birth: its metrics stay unread until the edge node "
                "publishes a birth (ask it for a rebirth: Node Control/Rebirth)",
            )

    def _sparkplug_state(
        self,
        topic: str,
        companions: Sequence[tuple[str, str]],
        raw: bytes,
        now: float,
        batch: list[TagSample],
    ) -> None:
        """A birth names the aliases of its DATA topics and carries every metric's value; a
        death makes the tags of its DATA topics Bad until the next birth."""
        parsed = None
        for role, data_topic in companions:
            groups = [g for g in self._topics[data_topic] if g[0].address.format == "sparkplug"]
            if role == "death":
                self._aliases.pop(data_topic, None)
                reason = f"Sparkplug edge node or device offline ({topic.split('/')[2]})"
                for bindings in groups:
                    batch.extend(
                        TagSample(b.tag, None, Quality.BAD, now, reason=reason) for b in bindings
                    )
                continue
            try:
                parsed = parsed or parse_sparkplug(raw)
            except PayloadError as exc:
                for bindings in groups:
                    self._malformed(topic, bindings, exc, now, batch)
                return
            self._aliases[data_topic] = sparkplug_aliases(parsed)
            for bindings in groups:
                batch.extend(sparkplug_samples(parsed, bindings, now))

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    def __repr__(self) -> str:
        return f"MqttSource({self.name!r}, {self.settings.host}:{self.settings.port})"
