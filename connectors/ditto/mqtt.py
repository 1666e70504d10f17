"""Ditto Protocol messages published to the MQTT broker Ditto's connectivity service reads.

The MQTT connector's link (``bridge.connectors.mqtt.link``: TLS, the broker's refusals in plain
words, PUBACK reason codes) carries them, QoS 1: an event counts as delivered when the broker
acknowledged each of its messages. Ditto reads them from the broker through its own MQTT
connection (source address matching ``mqtt.topic``); a lost PUBACK means the event is published
again with the same ``correlation-id``, and applying a twin command twice leaves the twin as
applying it once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.connectors.mqtt.link import Link, open_link
from bridge.destination import Outcome, Retry
from bridge.errors import ConnectorError

from .config import DittoMqtt, DittoSettings

__all__ = ["DITTO_CONTENT_TYPE", "MqttTransport"]

log = structlog.get_logger(__name__)

# The IANA content type of a Ditto Protocol message; an MQTT 5 connection of Ditto maps the
# publish's content type to the message's and picks its payload mapping by it.
DITTO_CONTENT_TYPE = "application/vnd.eclipse.ditto+json"


def _publish_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = DITTO_CONTENT_TYPE
    return props


class MqttTransport:
    """One broker connection, opened by the first send and again after a failed one."""

    def __init__(self, name: str, settings: DittoSettings, where: str) -> None:
        assert settings.mqtt is not None
        self.name = name
        self._settings = settings
        self._mqtt: DittoMqtt = settings.mqtt
        self._where = where
        self._link: Link | None = None
        self._properties = _publish_properties()
        self.counters = {"connects": 0, "messages": 0, "refused": 0}

    def topic_of(self, asset: str) -> str:
        s = self._settings
        return self._mqtt.topic.format(
            **s.levels_of(asset), namespace=s.namespace, asset=asset, thing=s.thing_name(asset)
        )

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def send(
        self, events: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[tuple[Outcome, bool]]:
        """Publish each event's messages (``(asset, messages)``); per event its outcome and
        False (MQTT never tells that a thing is missing)."""
        try:
            link = await self._connected()
        except ConnectorError as exc:
            return [(Retry(str(exc)), False) for _ in events]
        # Each publish is queued by the client before its coroutine first waits, and gather
        # starts them in order: the messages of one event reach the broker in their order.
        outcomes = await asyncio.gather(*(self._publish_all(link, a, m) for a, m in events))
        if any(isinstance(o, Retry) for o in outcomes):
            await self._drop(link)
        return [(o, False) for o in outcomes]

    async def _connected(self) -> Link:
        if self._link is None:
            self._link = await open_link(self._mqtt, self.name, self._where, clean_start=True)
            self.counters["connects"] += 1
            log.info(
                "ditto_mqtt_connected",
                destination=self.name,
                broker=f"{self._mqtt.host}:{self._mqtt.port}",
            )
        return self._link

    async def _drop(self, link: Link) -> None:
        if self._link is link:
            self._link = None
            await link.close(timeout_s=1.0)

    async def _publish_all(
        self, link: Link, asset: str, messages: Sequence[Mapping[str, Any]]
    ) -> Outcome:
        topic = self.topic_of(asset)
        results = await asyncio.gather(*(self._publish(link, topic, m) for m in messages))
        retry = next((r for r in results if isinstance(r, Retry)), None)
        if retry is not None:
            return retry
        return next((r for r in results if isinstance(r, str)), None)

    async def _publish(self, link: Link, topic: str, message: Mapping[str, Any]) -> Outcome:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            refused = await link.client.publish_checked(
                topic,
                payload,
                qos=1,
                properties=self._properties,
                ack_timeout_s=self._mqtt.publish_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            return Retry(f"publish to {topic} failed: {exc}")
        if refused:
            self.counters["refused"] += 1
            log.warning("ditto_publish_refused", destination=self.name, topic=topic, reason=refused)
            return (
                f"the broker refused the publish to {topic}: {refused} (its ACL must let the "
                f"gateway's identity write {self._where}.topic)"
            )
        self.counters["messages"] += 1
        return None
