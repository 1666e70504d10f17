"""A Sparkplug B host application for tests: an MQTT 5 client with the gateway's certificate
(the test ACL lets it read everything) that subscribes to ``spBv1.0/#`` and decodes every
payload with the codec's ``parse`` (built from the official Tahu proto), resolving DDATA
aliases through the births it saw, as a SCADA host does."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt
from mqttbroker import MqttPki
from support import LOOPBACK, wait_until

from bridge.connectors.mqtt.sparkplug.codec import (
    BDSEQ_METRIC,
    MessageType,
    ParsedPayload,
    aliases_of,
    parse,
    parse_topic,
    state_payload,
    state_topic,
)

__all__ = ["Host", "Seen", "bdseq", "check_births_precede_data", "seqs"]


def _now_ms() -> int:
    return round(time.time() * 1000)


@dataclass(frozen=True)
class Seen:
    """One edge node message as the host read it: ``payload`` with aliases resolved through
    the births, ``bare`` decoded without them (what is on the wire)."""

    kind: MessageType
    device: str | None
    payload: ParsedPayload
    bare: ParsedPayload
    at: float

    def metric(self, name: str) -> Any:
        return self.payload.by_name()[name].value


class Host:
    """A Sparkplug host application: reads the whole namespace, can command the node and
    publish its own STATE."""

    def __init__(
        self, pki: MqttPki, port: int, identifier: str = "scada-host", host_id: str = "scada"
    ) -> None:
        self.host_id = host_id
        self.client = aiomqtt.Client(
            LOOPBACK,
            port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=pki.client_context(pki.gateway_cert, pki.gateway_key),
            clean_start=True,
        )
        self.seen: list[Seen] = []
        self._aliases: dict[str | None, dict[int, tuple[str, int]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Host:
        async with asyncio.timeout(10):
            await self.client.__aenter__()
            await self.client.subscribe("spBv1.0/#", qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(5):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            if message.topic.value.startswith("spBv1.0/STATE/") or "/NCMD/" in message.topic.value:
                continue  # the host's own messages
            parts = parse_topic(message.topic.value)
            raw = message.payload
            assert isinstance(raw, bytes)
            bare = parse(raw)
            if parts.message_type is MessageType.NBIRTH:
                self._aliases = {None: aliases_of(bare)}
            elif parts.message_type is MessageType.DBIRTH:
                self._aliases[parts.device_id] = aliases_of(bare)
            payload = parse(raw, self._aliases.get(parts.device_id, {}))
            self.seen.append(
                Seen(parts.message_type, parts.device_id, payload, bare, time.monotonic())
            )

    async def publish(self, name: str, payload: bytes, *, retain: bool = False) -> None:
        async with asyncio.timeout(5):
            await self.client.publish(name, payload, qos=1, retain=retain)

    async def state(self, online: bool) -> None:
        await self.publish(state_topic(self.host_id), state_payload(online, _now_ms()), retain=True)

    def of(self, kind: MessageType, device: str | None = None) -> list[Seen]:
        if self._task is not None and self._task.done():
            self._task.result()  # a reader that failed fails the test with its error
        return [s for s in self.seen if s.kind is kind and (device is None or s.device == device)]

    async def wait_for(
        self,
        kind: MessageType,
        count: int = 1,
        timeout: float = 10,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    ) -> list[Seen]:
        await wait_until(lambda: len(self.of(kind)) >= count, timeout=timeout, what=f"{kind}")
        return self.of(kind)


def bdseq(seen: Seen) -> int:
    return int(seen.metric(BDSEQ_METRIC))


def seqs(seen: list[Seen]) -> list[int]:
    """Payload seq of every message that has one (all but NDEATH)."""
    return [s.payload.seq for s in seen if s.payload.seq is not None]


def check_births_precede_data(seen: list[Seen]) -> None:
    """NBIRTH first; every device's DBIRTH after it and before that device's first DDATA."""
    assert seen[0].kind is MessageType.NBIRTH
    born: set[str | None] = set()
    for message in seen:
        if message.kind is MessageType.NBIRTH:
            born = set()
        elif message.kind is MessageType.DBIRTH:
            born.add(message.device)
        elif message.kind is MessageType.DDATA:
            assert message.device in born, f"DDATA of {message.device} before its DBIRTH"
