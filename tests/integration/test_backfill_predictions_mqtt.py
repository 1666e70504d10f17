"""Predictions made for the past (``backfill: {predictions: true}``) on MQTT, against a real
Mosquitto with mutual TLS: the UNS output sends them flagged and never as the retained state,
the Sparkplug edge node sends their metrics with ``is_historical`` and their own timestamps,
and a rebirth carries the live values, not theirs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from sparkplug_host import Host
from support import LOOPBACK, wait_until

from bridge.connectors.mqtt.config import UnsSettings
from bridge.connectors.mqtt.sparkplug.codec import MessageType, rebirth_command, topic
from bridge.connectors.mqtt.sparkplug.config import SparkplugSettings
from bridge.connectors.mqtt.sparkplug.edge import SparkplugEdgeNode
from bridge.connectors.mqtt.uns import UnsDestination
from bridge.destination import DestinationContext, Envelope
from bridge.types import Prediction, PredictionSlot, Quality, Trigger

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

GATEWAY = "gw-hist"
SLOT = PredictionSlot("pump-a", "health", "1.0.0", "ab" * 32, labels=("healthy", "cavitation"))
HOUR_S = 3600.0


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


def _prediction(
    seq: int, label: str, *, age_s: float = 0.0, historical: bool = False
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/pump-a/health/{seq}")),
        seq=seq,
        asset="pump-a",
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=label,
        score=0.875,
        quality=Quality.GOOD,
        # Whole milliseconds: the Sparkplug timestamps are compared exactly.
        timestamp=round(time.time() - age_s, 3),
        input_age_s=0.1,
        historical=historical,
    )


def _envelope(destination: UnsDestination | SparkplugEdgeNode, p: Prediction) -> Envelope:
    return Envelope(p.id, destination.encode(Trigger(p)) or "")


class _Reader:
    """An MQTT 5 client with the gateway's identity (the ACL lets it read everything)."""

    def __init__(self, pki: MqttPki, port: int, identifier: str) -> None:
        self.client = aiomqtt.Client(
            LOOPBACK,
            port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=pki.client_context(pki.gateway_cert, pki.gateway_key),
        )
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages]


@contextlib.asynccontextmanager
async def _reading(pki: MqttPki, port: int, identifier: str) -> AsyncIterator[_Reader]:
    reader = _Reader(pki, port, identifier)
    async with asyncio.timeout(10):
        await reader.client.__aenter__()
        await reader.client.subscribe("acme/#", qos=1)
    reader._task = asyncio.create_task(reader._read())
    try:
        yield reader
    finally:
        reader._task.cancel()
        await asyncio.gather(reader._task, return_exceptions=True)
        async with asyncio.timeout(5):
            await reader.client.__aexit__(None, None, None)


async def test_uns_sends_the_past_flagged_and_keeps_the_live_state_retained(
    pki: MqttPki, broker: Mosquitto
) -> None:
    settings = UnsSettings.model_validate(
        {
            "host": LOOPBACK,
            "port": broker.tls_port,
            "tls": pki.gateway_tls(),
            "client_id": "bridge-uns",
            "enterprise": "acme",
            "site": "dallas",
            "area": "packaging",
            "line": "line-4",
            "connect_timeout_s": 3,
            "publish_timeout_s": 3,
            "message_expiry_s": 30,
        }
    )
    destination = UnsDestination("uns", settings, DestinationContext(GATEWAY))
    await destination.start()
    try:
        live = _prediction(1, "healthy")
        # An hour old and past the expiry: made for the past, sent all the same.
        past = _prediction(2, "cavitation", age_s=HOUR_S, historical=True)
        async with _reading(pki, broker.tls_port, "uns-reader") as reader:
            async with asyncio.timeout(10):
                assert await destination.deliver([_envelope(destination, live)]) == [None]
                assert await destination.deliver([_envelope(destination, past)]) == [None]
            await wait_until(lambda: len(reader.messages) >= 2, what="both predictions")
            got = {b["id"]: b for b in reader.bodies()}
            assert got[live.id]["historical"] is False
            assert got[past.id]["historical"] is True
            assert got[past.id]["timestamp"] == pytest.approx(past.timestamp)
            sent_past = next(m for m in reader.messages if json.loads(m.payload)["id"] == past.id)
            assert 25 <= sent_past.properties.MessageExpiryInterval <= 30  # type: ignore[union-attr]
        assert destination.health().counters["expired"] == 0
        # A client that comes later reads the live prediction as the retained state.
        async with _reading(pki, broker.tls_port, "uns-late") as late:
            await wait_until(lambda: len(late.messages) >= 1, what="the retained state")
            await asyncio.sleep(0.3)
            assert [b["id"] for b in late.bodies()] == [live.id]
            assert late.messages[0].retain
    finally:
        await destination.close()


async def test_sparkplug_metrics_of_the_past_are_historical_and_a_rebirth_is_live(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = SparkplugSettings.model_validate(
        {
            "host": LOOPBACK,
            "port": broker.tls_port,
            "tls": pki.gateway_tls(),
            "client_id": "bridge-sparkplug",
            "group_id": "plant",
            "edge_node_id": "gw1",
            "bdseq_path": str(tmp_path / "state" / "bdseq"),
            "connect_timeout_s": 3,
            "publish_timeout_s": 3,
        }
    )
    node = SparkplugEdgeNode("sparkplug", settings, DestinationContext(GATEWAY, slots=(SLOT,)))
    live = _prediction(1, "healthy")
    past = _prediction(2, "cavitation", age_s=HOUR_S, historical=True)
    async with Host(pki, broker.tls_port) as host:
        await node.start()
        try:
            async with asyncio.timeout(10):
                assert await node.deliver([_envelope(node, live)]) == [None]
                assert await node.deliver([_envelope(node, past)]) == [None]
            live_data, past_data = await host.wait_for(MessageType.DDATA, 2)
            await host.publish(
                topic("plant", MessageType.NCMD, "gw1"), rebirth_command(round(time.time() * 1000))
            )
            await host.wait_for(MessageType.DBIRTH, 2)
        finally:
            await node.close()
    label = "Prediction/health/Label"
    assert live_data.metric(label) == "healthy"
    assert not any(m.is_historical for m in live_data.payload.metrics)
    assert past_data.metric(label) == "cavitation"
    assert all(m.is_historical for m in past_data.payload.metrics)
    stamp = round(past.timestamp * 1000)
    assert {m.timestamp for m in past_data.payload.metrics} == {stamp}
    # The rebirth carries the current state: the live label, not the one of the past.
    rebirth = host.of(MessageType.DBIRTH)[-1]
    assert rebirth.metric(label) == "healthy"
    assert rebirth.metric("Prediction/health/Id") == live.id
