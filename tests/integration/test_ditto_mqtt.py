"""The Ditto destination over MQTT, against the real Mosquitto on 127.0.0.1:1883: a subscriber
in Ditto's place receives the Ditto Protocol messages, a twin store applies them, and the things
come out as the mapping and the events say; a broker that cannot be reached costs retries and
loses nothing (the real store, outbox and relay in between).

Each test publishes under a topic prefix of its own, so tests sharing the broker never see each
other's messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from dittotwin import TwinStore
from durable_path import durable_path
from faultproxy import FaultProxy
from mqttbroker import find_mosquitto
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.ditto.config import DittoSettings
from bridge.connectors.ditto.destination import DittoDestination
from bridge.connectors.ditto.mqtt import DITTO_CONTENT_TYPE
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, PredictionSlot, Quality, TagReading, Trigger

BROKER_PORT = 1883
GATEWAY = "gw-ditto-mqtt"
NAMESPACE = "com.acme.dallas"
SLOTS = (
    PredictionSlot("pump-01", "pump-health", "1.2.0", "ab" * 32, input_units=(("flow", "m3/h"),)),
    PredictionSlot("pump-02", "pump-health", "1.2.0", "ab" * 32),
)


def _broker_up() -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, BROKER_PORT), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    find_mosquitto() is None or not _broker_up(), reason="no Mosquitto on 127.0.0.1:1883"
)


def settings(prefix: str, port: int = BROKER_PORT, **extra: Any) -> DittoSettings:
    fields: dict[str, Any] = {
        "namespace": NAMESPACE,
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "mqtt": {
            "host": LOOPBACK,
            "port": port,
            "plaintext": True,
            "client_id": f"bridge-{prefix}",
            "topic": f"{prefix}/{{namespace}}/{{asset}}",
            "connect_timeout_s": 3,
            "publish_timeout_s": 3,
        },
        "things": {"pump-01": {"template": "pump", "description": "Feed pump 1"}},
        "telemetry": {"tags": ["flow"], "interval_s": 0.05},
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.3,
    }
    fields.update(extra)
    return DittoSettings.model_validate(fields)


def prediction(asset: str, seq: int, label: str = "healthy") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/pump-health/{seq}")),
        seq=seq,
        asset=asset,
        model="pump-health",
        version="1.2.0",
        sha256="ab" * 32,
        value=label,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.1,
    )


class Tags:
    """A tag table as a destination sees it (``bridge.types.TagReader``): readings changed
    at or after a monotonic time."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, TagReading]] = {}

    def set(self, asset: str, name: str, value: float, unit: str = "m3/h") -> None:
        now = time.time()
        reading = TagReading(f"{asset}.{name}", asset, name, value, unit, Quality.GOOD, now, now)
        self._state[reading.tag] = (time.monotonic(), reading)

    def __call__(self, since: float) -> list[TagReading]:
        return [r for changed, r in self._state.values() if changed >= since]


class DittoInbox:
    """Ditto's side of the broker: subscribes to the prefix, applies what comes to a twin
    store (which checks every message against the envelope schema)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.store = TwinStore()
        self.messages: list[aiomqtt.Message] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client(
            LOOPBACK,
            BROKER_PORT,
            identifier=f"ditto-{self.prefix}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(f"{self.prefix}/#", qos=1)
            self.ready.set()
            async for message in client.messages:
                self.messages.append(message)
                self.store.apply(json.loads(message.payload))  # type: ignore[arg-type]

    async def __aenter__(self) -> DittoInbox:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            await self._task  # a message the store refused fails the test here
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
def prefix() -> str:
    return f"test-ditto-{uuid.uuid4().hex[:12]}"


def envelopes(destination: DittoDestination, events: list[Trigger]) -> list[Envelope]:
    return [Envelope(e.prediction.id, destination.encode(e)) for e in events]


async def test_things_and_features_reach_ditto_as_protocol_messages(prefix: str) -> None:
    tags = Tags()
    tags.set("pump-01", "flow", 12.5)
    context = DestinationContext(GATEWAY, SLOTS, tags=tags)
    destination = DittoDestination("twins", settings(prefix), context)
    await destination.start()
    try:
        async with DittoInbox(prefix) as ditto:
            first = [
                Trigger(prediction("pump-01", 1)),
                Trigger(prediction("pump-02", 1, "cavitation"), "alert", previous="healthy"),
            ]
            async with asyncio.timeout(10):
                assert await destination.deliver(envelopes(destination, first)) == [None, None]
            # pump-01: create, telemetry, model, prediction; pump-02 (no tags): create, 2.
            await wait_until(lambda: len(ditto.messages) >= 7, what="the first messages")
            tags.set("pump-01", "flow", 14.0)
            second = [
                Trigger(prediction("pump-01", 2, "cavitation"), "label_change", previous="healthy")
            ]
            # The destination reads the tag table every interval_s (50 ms): once it has.
            await wait_until(
                lambda: '"value":14.0' in destination.encode(second[0]), what="the new value"
            )
            async with asyncio.timeout(10):
                assert await destination.deliver(envelopes(destination, second)) == [None]
            await wait_until(lambda: len(ditto.messages) >= 10, what="the second event")
            await asyncio.sleep(0.3)
        assert len(ditto.messages) == 10  # the things were created once each
        for message in ditto.messages:
            assert message.topic.value.startswith(f"{prefix}/{NAMESPACE}/pump-0")
            assert message.properties.ContentType == DITTO_CONTENT_TYPE  # type: ignore[union-attr]
            assert message.qos == 1
        pump1 = ditto.store.thing(f"{NAMESPACE}:pump-01")
        assert pump1["policyId"] == f"{NAMESPACE}:pump-01"  # none given: the thing's own
        assert pump1["attributes"]["template"] == "pump"
        assert pump1["attributes"]["line"] == "line-4"
        assert pump1["attributes"]["tags"] == {"flow": {"unit": "m3/h"}}
        features = pump1["features"]
        assert features["prediction"]["properties"]["label"] == "cavitation"
        assert features["prediction"]["properties"]["previous"] == "healthy"
        assert features["prediction"]["properties"]["prediction_id"] == second[0].prediction.id
        assert features["model"]["properties"]["version"] == "1.2.0"
        assert features["telemetry"]["properties"]["flow"]["value"] == 14.0
        pump2 = ditto.store.thing(f"{NAMESPACE}:pump-02")
        assert pump2["features"]["prediction"]["properties"]["event"] == "alert"
        assert "template" not in pump2["attributes"]
        # correlation-id: the event's Idempotency-Key, on each of its messages
        keys = {e.prediction.id for e in first + second}
        assert set(ditto.store.correlation_ids()) == keys
        assert destination.health().state == "ok"
        assert destination.health().counters["things"] == 2
    finally:
        await destination.close()


async def test_a_closed_port_gives_retry_not_a_crash(prefix: str) -> None:
    closed = free_port()
    destination = DittoDestination(
        "twins", settings(prefix, closed), DestinationContext(GATEWAY, SLOTS)
    )
    await destination.start()
    try:
        event = Trigger(prediction("pump-01", 1))
        async with asyncio.timeout(10):
            (outcome,) = await destination.deliver(envelopes(destination, [event]))
        assert isinstance(outcome, Retry) and "nothing listens" in outcome.reason
        assert destination.health().state == "degraded"
    finally:
        await destination.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    # Not started: its port is closed until the test starts it.
    fault = FaultProxy(LOOPBACK, BROKER_PORT)
    try:
        yield fault
    finally:
        await fault.stop()


async def test_an_unreachable_broker_loses_and_reorders_nothing(
    prefix: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    destination = DittoDestination(
        "twins", settings(prefix, proxy.port), DestinationContext(GATEWAY, SLOTS)
    )
    assets = ("pump-01", "pump-02", "pump-03")
    sent: dict[str, list[str]] = {a: [] for a in assets}
    async with (
        DittoInbox(prefix) as ditto,
        durable_path(destination, f"sqlite:///{tmp_path / 'ditto.db'}", GATEWAY) as path,
    ):
        for seq in range(1, 21):
            batch = [prediction(a, seq, "healthy" if seq % 3 else "cavitation") for a in assets]
            for p in batch:
                sent[p.asset].append(p.id)
            await path.writer.write(batch)
            await asyncio.sleep(0.02)
        await wait_until(lambda: path.backlog() == 60, what="every event in the outbox")
        retries = destination.health().counters["retries"]
        await wait_until(
            lambda: destination.health().counters["retries"] >= retries + 3,
            what="retries while down",
        )
        assert path.backlog() == 60  # kept in the outbox, nothing dropped
        assert destination.health().state == "degraded"
        assert ditto.messages == []
        await proxy.start()  # the broker is reachable again
        await wait_until(lambda: path.backlog() == 0, timeout=30, what="the backlog sent")
        await wait_until(lambda: len(ditto.messages) >= 60 * 2 + len(assets), what="every message")
        await asyncio.sleep(0.3)
    received: dict[str, list[str]] = {a: [] for a in assets}
    for applied in ditto.store.applied:
        if applied.path == "/features/prediction/properties":
            received[applied.thing_id.split(":")[1]].append(applied.correlation_id)
    for asset in assets:
        assert received[asset] == sent[asset], asset  # each once, in order
        thing = ditto.store.thing(f"{NAMESPACE}:{asset}")
        assert thing["features"]["prediction"]["properties"]["prediction_id"] == sent[asset][-1]
    assert destination.health().counters["sent"] == 60
