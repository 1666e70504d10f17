"""The UNS destination against a real Mosquitto with mutual TLS: the ISA-95 topic tree, retained
state, MQTT 5 expiry, and a broker outage of a minute that loses, repeats and reorders nothing
(the real store, outbox and relay in between)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from durable_path import durable_path
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import LOOPBACK, wait_until

from bridge.connectors.mqtt.config import UnsSettings
from bridge.connectors.mqtt.uns import UnsDestination
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, Quality, Trigger

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

GATEWAY = "gw-uns"
OUTAGE_S = 60.0


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


def uns_settings(pki: MqttPki, port: int, **extra: Any) -> UnsSettings:
    fields: dict[str, Any] = {
        "host": LOOPBACK,
        "port": port,
        "tls": pki.gateway_tls(),
        "client_id": "bridge-uns",
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "asset_levels": {"pump-b": {"line": "line-5"}},
        "connect_timeout_s": 3,
        "publish_timeout_s": 3,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.5,
    }
    fields.update(extra)
    return UnsSettings.model_validate(fields)


def prediction(asset: str, seq: int, *, label: str = "healthy", age_s: float = 0.0) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=label,
        score=0.875,
        quality=Quality.GOOD,
        timestamp=time.time() - age_s,
        input_age_s=0.1,
    )


class Subscriber:
    """A UNS client: the gateway's identity (the ACL lets it read everything), QoS 1, a
    persistent session so messages published while it reconnects wait for it."""

    def __init__(self, pki: MqttPki, port: int, topic_filter: str = "acme/#") -> None:
        self.pki = pki
        self.port = port
        self.filter = topic_filter
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        return aiomqtt.Client(
            LOOPBACK,
            self.port,
            identifier="uns-reader",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.pki.client_context(self.pki.gateway_cert, self.pki.gateway_key),
            clean_start=False,
            properties=props,
        )

    async def _run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # reconnects through a broker restart
            try:
                async with self._client() as client:
                    await client.subscribe(self.filter, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        """Messages as published: a retained state replayed by a (re)subscription is not one."""
        return [
            json.loads(m.payload)  # type: ignore[arg-type]
            for m in self.messages
            if m.topic.value.endswith(suffix) and not m.retain
        ]


async def test_predictions_and_events_land_in_the_isa95_tree(
    pki: MqttPki, broker: Mosquitto
) -> None:
    destination = UnsDestination(
        "uns", uns_settings(pki, broker.tls_port), DestinationContext(GATEWAY)
    )
    await destination.start()
    try:
        async with Subscriber(pki, broker.tls_port) as reader:
            events = [
                Trigger(prediction("pump-a", 1)),
                Trigger(prediction("pump-b", 1, label="cavitation"), "alert", previous="healthy"),
            ]
            batch = [Envelope(t.prediction.id, destination.encode(t) or "") for t in events]
            async with asyncio.timeout(10):
                outcomes = await destination.deliver(batch)
            assert outcomes == [None, None]
            await wait_until(lambda: len(reader.messages) >= 2, what="both messages")
        by_topic = {m.topic.value: m for m in reader.messages}
        state = by_topic["acme/dallas/packaging/line-4/pump-a/bridge/health/prediction"]
        alert = by_topic["acme/dallas/packaging/line-5/pump-b/bridge/health/event"]
        body = json.loads(state.payload)  # type: ignore[arg-type]
        assert body["value"] == "healthy" and body["score"] == 0.875 and body["quality"] == "Good"
        assert body["id"] == events[0].prediction.id and body["version"] == "1.0.0"
        assert body["seq"] == 1 and body["event"] == "prediction"
        assert json.loads(alert.payload)["event"] == "alert"  # type: ignore[arg-type]
        assert json.loads(alert.payload)["previous"] == "healthy"  # type: ignore[arg-type]

        # A client that comes later reads each asset's latest state first (retained); events
        # are not retained.
        async with Subscriber(pki, broker.tls_port, "acme/dallas/+/+/+/bridge/#") as late:
            await wait_until(lambda: len(late.messages) >= 1, what="the retained state")
            await asyncio.sleep(0.3)
        assert [m.topic.value for m in late.messages] == [state.topic.value]
        assert late.messages[0].retain
        assert destination.health().counters["published"] == 2
    finally:
        await destination.close()


async def test_an_expired_event_is_not_sent_and_a_fresh_one_carries_its_expiry(
    pki: MqttPki, broker: Mosquitto
) -> None:
    settings = uns_settings(pki, broker.tls_port, message_expiry_s=30)
    destination = UnsDestination("uns", settings, DestinationContext(GATEWAY))
    await destination.start()
    try:
        async with Subscriber(pki, broker.tls_port) as reader:
            stale = Trigger(prediction("pump-a", 1, age_s=45))
            fresh = Trigger(prediction("pump-c", 1, age_s=5))
            batch = [Envelope(t.prediction.id, destination.encode(t) or "") for t in (stale, fresh)]
            async with asyncio.timeout(10):
                assert await destination.deliver(batch) == [None, None]
            await wait_until(lambda: len(reader.messages) >= 1, what="the fresh event")
            await asyncio.sleep(0.3)
        (message,) = reader.messages
        assert "/pump-c/" in message.topic.value
        expiry = message.properties.MessageExpiryInterval  # type: ignore[union-attr]
        assert 20 <= expiry <= 25  # 30 s less its ~5 s of age, and less the broker's hold
        assert destination.health().counters["expired"] == 1
    finally:
        await destination.close()


async def test_a_broker_that_is_down_gives_retry_not_a_crash(pki: MqttPki, tmp_path: Path) -> None:
    with Mosquitto(pki, tmp_path / "broker") as broker:
        port = broker.tls_port
    destination = UnsDestination("uns", uns_settings(pki, port), DestinationContext(GATEWAY))
    await destination.start()
    try:
        event = Trigger(prediction("pump-a", 1))
        async with asyncio.timeout(10):
            (outcome,) = await destination.deliver([Envelope("k", destination.encode(event) or "")])
        assert isinstance(outcome, Retry) and "nothing listens" in outcome.reason
        assert destination.health().state == "degraded"
    finally:
        await destination.close()


@pytest.fixture
async def durable(pki: MqttPki, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Any]:
    """The gateway's durable path: store writer -> outbox -> relay -> UNS destination."""
    destination = UnsDestination(
        "uns", uns_settings(pki, broker.tls_port), DestinationContext(GATEWAY)
    )
    async with durable_path(destination, f"sqlite:///{tmp_path / 'uns.db'}", GATEWAY) as path:
        yield path


async def test_a_minute_long_broker_outage_loses_repeats_and_reorders_nothing(
    pki: MqttPki, broker: Mosquitto, durable: Any
) -> None:
    path = durable
    writer, destination = path.writer, path.destination
    assets = ("pump-a", "pump-b", "pump-c", "pump-d")
    seq = 0

    async def tick() -> None:
        nonlocal seq
        seq += 1
        await writer.write([prediction(asset, seq) for asset in assets])

    def backlog() -> int:
        return int(path.backlog())

    async with Subscriber(pki, broker.tls_port) as reader:
        for _ in range(5):
            await tick()
            await asyncio.sleep(0.1)
        await wait_until(lambda: backlog() == 0, what="the first predictions sent")
        broker.stop()  # nothing in flight: every event so far has its PUBACK
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:
            await tick()
            await asyncio.sleep(0.5)
        assert backlog() >= len(assets) * 100  # kept in the outbox, not dropped
        assert destination.health().state == "degraded"
        broker.start()
        for _ in range(5):
            await tick()
            await asyncio.sleep(0.1)
        await wait_until(lambda: backlog() == 0, timeout=60, what="the backlog sent")
        expected = seq * len(assets)
        await wait_until(
            lambda: len(reader.bodies("/prediction")) >= expected,
            timeout=30,
            what="every prediction",
        )
        await asyncio.sleep(0.5)

    seen: dict[str, list[int]] = defaultdict(list)
    ids = [body["id"] for body in reader.bodies("/prediction")]
    for body in reader.bodies("/prediction"):
        seen[body["asset"]].append(body["seq"])
    assert len(ids) == len(set(ids)) == expected  # once each
    for asset in assets:
        assert seen[asset] == list(range(1, seq + 1)), asset  # all, in order


async def test_a_publish_the_broker_refuses_is_a_rejection_not_a_delivery(
    pki: MqttPki, tmp_path: Path
) -> None:
    # The gateway may read everything but write nothing: mosquitto answers PUBACK 135.
    acl = ["user gateway", "topic read #"]
    with Mosquitto(pki, tmp_path / "broker", acl_lines=acl) as broker:
        destination = UnsDestination(
            "uns", uns_settings(pki, broker.tls_port), DestinationContext(GATEWAY)
        )
        await destination.start()
        try:
            event = Trigger(prediction("pump-a", 1))
            async with asyncio.timeout(10):
                (outcome,) = await destination.deliver(
                    [Envelope("k", destination.encode(event) or "")]
                )
        finally:
            await destination.close()
    assert isinstance(outcome, str), outcome
    assert "refused the publish" in outcome and "Not authorized" in outcome
    assert destination.health().counters["refused"] == 1
