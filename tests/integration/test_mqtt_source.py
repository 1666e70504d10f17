"""The MQTT source against a real Mosquitto with mutual TLS: device values in, identities
enforced by the broker, malformed payloads made Bad, queued messages kept across a restart,
and every refused connection a clear error and a Bad source."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import aiomqtt
import pytest
import structlog
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from support import LOOPBACK, wait_until

from bridge.connectors.mqtt.config import MqttAddress, MqttSourceSettings
from bridge.connectors.mqtt.source import MqttSource
from bridge.errors import ConnectorError
from bridge.runtime.sources import ReconnectPolicy, SourceSupervisor
from bridge.types import Quality, SourceTag, TagSample

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

DEVICES = ("pump-a", "pump-b")


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki", devices=DEVICES)


@pytest.fixture
def broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


def settings(pki: MqttPki, port: int, **extra: object) -> MqttSourceSettings:
    fields: dict[str, object] = {
        "host": LOOPBACK,
        "port": port,
        "tls": pki.gateway_tls(),
        "client_id": "bridge-test-gateway",
        "connect_timeout_s": 5,
        "subscribe": ["plant/+/+/telemetry"],
    }
    fields.update(extra)
    return MqttSourceSettings.model_validate(fields)


def tags(*assets: str) -> list[SourceTag]:
    out: list[SourceTag] = []
    for asset in assets:
        topic = f"plant/line4/{asset}/telemetry"
        out.append(
            SourceTag(
                f"{asset}.temperature",
                MqttAddress(topic=topic, pointer="/temp", time_pointer="/ts", quality_pointer="/q"),
            )
        )
        out.append(SourceTag(f"{asset}.speed", MqttAddress(topic=topic, pointer="/motor/speed")))
    return out


async def device_publish(
    pki: MqttPki, port: int, device: str, topic: str, payloads: Sequence[bytes]
) -> None:
    cert, key = pki.device(device)
    async with (
        asyncio.timeout(10),
        aiomqtt.Client(
            LOOPBACK,
            port,
            identifier=f"dev-{device}",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=pki.client_context(cert, key),
        ) as client,
    ):
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


class Collector:
    """Runs ``source.samples()`` in a task and keeps what it yields."""

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.samples: list[TagSample] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for batch in self.source.samples():
            self.samples.extend(batch)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of(self, tag: str) -> list[TagSample]:
        return [s for s in self.samples if s.tag == tag]


@pytest.fixture
async def connected(pki: MqttPki, broker: Mosquitto) -> AsyncIterator[tuple[MqttSource, Collector]]:
    source = MqttSource("devices", settings(pki, broker.tls_port), tags(*DEVICES))
    async with asyncio.timeout(10):
        await source.connect()
    collector = Collector(source)
    collector.start()
    try:
        yield source, collector
    finally:
        await collector.stop()
        await source.close()


async def test_device_values_arrive_with_their_time_and_quality(
    pki: MqttPki, broker: Mosquitto, connected: tuple[MqttSource, Collector]
) -> None:
    _, got = connected
    body = {"temp": 41.5, "ts": 1_700_000_000_123, "q": "Uncertain", "motor": {"speed": 1480}}
    await device_publish(
        pki, broker.tls_port, "pump-a", "plant/line4/pump-a/telemetry", [json.dumps(body).encode()]
    )
    await wait_until(lambda: len(got.samples) >= 2, what="pump-a's two tags")
    (temp,) = got.of("pump-a.temperature")
    (speed,) = got.of("pump-a.speed")
    assert temp.value == 41.5 and temp.quality is Quality.UNCERTAIN
    assert temp.source_time == pytest.approx(1_700_000_000.123)
    assert "Uncertain" in temp.reason
    assert speed.value == 1480 and speed.quality is Quality.GOOD
    assert speed.source_time is None and abs(speed.received_time - time.time()) < 10


async def test_a_device_cannot_publish_for_another(
    pki: MqttPki, broker: Mosquitto, connected: tuple[MqttSource, Collector]
) -> None:
    source, got = connected
    forged = json.dumps({"temp": 999.0, "ts": 1, "q": 0, "motor": {"speed": 1}}).encode()
    own = json.dumps({"temp": 20.0, "ts": 2, "q": 0, "motor": {"speed": 2}}).encode()
    # pump-a's certificate tries pump-b's topic; then pump-b publishes its own value.
    await device_publish(pki, broker.tls_port, "pump-a", "plant/line4/pump-b/telemetry", [forged])
    await device_publish(pki, broker.tls_port, "pump-b", "plant/line4/pump-b/telemetry", [own])
    await wait_until(lambda: len(got.of("pump-b.temperature")) >= 1, what="pump-b's own value")
    await asyncio.sleep(0.3)  # anything the broker let through would have arrived by now
    assert [s.value for s in got.of("pump-b.temperature")] == [20.0]
    assert source.received == 1
    assert "denied publish" in broker.log_text().lower()


async def test_a_malformed_payload_makes_its_tags_bad_and_the_source_goes_on(
    pki: MqttPki, broker: Mosquitto, connected: tuple[MqttSource, Collector]
) -> None:
    source, got = connected
    topic = "plant/line4/pump-a/telemetry"
    good = json.dumps({"temp": 30.0, "ts": 1_700_000_000, "q": True, "motor": {"speed": 5}})
    with structlog.testing.capture_logs() as logs:
        await device_publish(
            pki,
            broker.tls_port,
            "pump-a",
            topic,
            [b"{not json", b"\xff\xfe", b'{"temp": "x", "motor": {}}', good.encode()],
        )
        await wait_until(lambda: len(got.of("pump-a.temperature")) >= 4, what="four messages")
    broken, garbage, partial, fine = got.of("pump-a.temperature")
    assert broken.quality is Quality.BAD and "malformed payload: not JSON" in broken.reason
    assert garbage.quality is Quality.BAD and "malformed payload" in garbage.reason
    # Readable JSON: each tag judged on its own (no /ts, no /q for temperature; no /motor/speed).
    assert partial.quality is Quality.BAD and "/ts" in partial.reason
    assert got.of("pump-a.speed")[2].quality is Quality.BAD
    assert "/motor/speed" in got.of("pump-a.speed")[2].reason
    assert fine.value == 30.0 and fine.quality is Quality.GOOD
    assert source.malformed == 2 and source.counters["malformed"] == 2
    # Counted each time, logged once per topic per minute.
    warned = [e for e in logs if e["event"] == "mqtt_payload_malformed"]
    assert len(warned) == 1 and warned[0]["topic"] == topic


async def test_messages_published_while_the_gateway_is_away_wait_on_the_broker(
    pki: MqttPki, broker: Mosquitto
) -> None:
    topic = "plant/line4/pump-a/telemetry"
    first = MqttSource("devices", settings(pki, broker.tls_port), tags("pump-a"))
    async with asyncio.timeout(10):
        await first.connect()  # makes the persistent session and its subscription
    await first.close()
    payloads = [json.dumps({"temp": float(i), "motor": {"speed": i}}).encode() for i in range(5)]
    await device_publish(pki, broker.tls_port, "pump-a", topic, payloads)
    broker.restart()  # the session and the queued messages are persisted
    again = MqttSource("devices", settings(pki, broker.tls_port), tags("pump-a"))
    async with asyncio.timeout(15):
        await again.connect()
    got = Collector(again)
    got.start()
    try:
        await wait_until(lambda: len(got.of("pump-a.speed")) >= 5, what="the 5 queued messages")
    finally:
        await got.stop()
        await again.close()
    assert [s.value for s in got.of("pump-a.speed")] == [0, 1, 2, 3, 4]


def _refused(pki: MqttPki, broker: Mosquitto, case: str) -> MqttSourceSettings:
    tls = pki.gateway_tls()
    if case == "plaintext to the TLS port":
        return settings(pki, broker.tls_port, tls=None, plaintext=True)
    if case == "TLS to the plain port":
        return settings(pki, broker.plain_port)
    if case == "unknown server CA":
        return settings(pki, broker.tls_port, tls={**tls, "ca_file": str(pki.other_ca)})
    if case == "expired client certificate":
        expired = {"client_certificate": str(pki.expired_cert), "client_key": str(pki.expired_key)}
        return settings(pki, broker.tls_port, tls={**tls, **expired})
    if case == "no client certificate":
        return settings(pki, broker.tls_port, tls={"ca_file": str(pki.ca)})
    if case == "client certificate of another CA":
        other = {"client_certificate": str(pki.stranger_cert), "client_key": str(pki.stranger_key)}
        return settings(pki, broker.tls_port, tls={**tls, **other})
    assert case == "wrong hostname"
    return settings(pki, broker.tls_port, host="localhost")


REFUSALS = {
    "plaintext to the TLS port": "expects TLS",
    "TLS to the plain port": "may not speak TLS",
    "unknown server CA": "set sources.devices.tls.ca_file",
    "expired client certificate": "expired on",
    "no client certificate": "client certificate",
    "client certificate of another CA": "client certificate",
    "wrong hostname": "not issued for",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_connection_is_a_clear_error_and_a_bad_source(
    pki: MqttPki, tmp_path: Path, case: str
) -> None:
    server_cert = "wrong" if case == "wrong hostname" else "default"
    with Mosquitto(pki, tmp_path / "broker", server_cert=server_cert) as broker:
        config = _refused(pki, broker, case)
        if case == "wrong hostname":
            # The broker's certificate names only wrong.example; we dial 127.0.0.1.
            config = settings(pki, broker.tls_port)
        if case == "plaintext to the TLS port":
            config = config.model_copy(update={"connect_timeout_s": 1.0})
        source = MqttSource("devices", config, tags("pump-a"))
        with pytest.raises(ConnectorError) as refused:
            async with asyncio.timeout(15):
                await source.connect()
        message = str(refused.value)
        assert REFUSALS[case] in message, message
        assert f"{LOOPBACK}:" in message

        # Through the runtime: the tags go Bad with that reason, the supervisor keeps trying.
        marked: list[tuple[Sequence[str], str]] = []

        async def deliver(batch: Sequence[TagSample]) -> None:
            raise AssertionError(f"a refused source delivered {batch}")

        supervisor = SourceSupervisor(
            MqttSource("devices", config, tags("pump-a")),
            "mqtt",
            ["pump-a.temperature", "pump-a.speed"],
            deliver,
            lambda tag_ids, reason: marked.append((tag_ids, reason)),
            policy=ReconnectPolicy(0.05, 0.2, 0),
        )
        task = asyncio.create_task(supervisor.run())
        try:
            await wait_until(lambda: supervisor.failures >= 2, timeout=20, what="two failures")
            health = supervisor.health()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert marked and set(marked[0][0]) == {"pump-a.temperature", "pump-a.speed"}
        assert REFUSALS[case] in marked[0][1]
        assert health.state == "down" and REFUSALS[case] in health.detail


async def test_skipping_verification_is_said_at_every_connect(pki: MqttPki, tmp_path: Path) -> None:
    with Mosquitto(pki, tmp_path / "broker", server_cert="wrong") as broker:
        tls = {
            "ca_file": str(pki.other_ca),
            "client_certificate": str(pki.gateway_cert),
            "client_key": str(pki.gateway_key),
            "insecure_skip_verify": True,
        }
        source = MqttSource("devices", settings(pki, broker.tls_port, tls=tls), tags("pump-a"))
        with structlog.testing.capture_logs() as logs:
            for _ in range(2):
                async with asyncio.timeout(10):
                    await source.connect()
                await source.close()
        warnings = [e for e in logs if e["event"] == "mqtt_tls_verification_off"]
        assert len(warnings) == 2 and all(e["log_level"] == "warning" for e in warnings)


SPARKPLUG_ACL = [
    "user gateway",
    "topic readwrite #",
    "",
    # An edge node writes only its own Sparkplug topics (its certificate's CN is its id).
    "pattern write spBv1.0/+/+/%u",
    "pattern write spBv1.0/+/+/%u/#",
]


async def test_sparkplug_metrics_are_read_by_name_through_the_birth(tmp_path: Path) -> None:
    from bridge.connectors.mqtt.sparkplug import codec

    pki = make_pki(tmp_path / "pki", devices=["edge-1"])
    data_topic = "spBv1.0/plant/DDATA/edge-1/pump-a"
    spark_tags = [
        SourceTag("pump-a.temp", MqttAddress(topic=data_topic, format="sparkplug", metric="Temp")),
        SourceTag("pump-a.run", MqttAddress(topic=data_topic, format="sparkplug", metric="Run")),
    ]
    temp = codec.MetricSpec("Temp", 7, codec.DataType.DOUBLE, {"engUnit": "degC"})
    run = codec.MetricSpec("Run", 9, codec.DataType.BOOLEAN)
    seq = codec.SeqCounter()
    now_ms = int(time.time() * 1000)
    node = "spBv1.0/plant/{}/edge-1"
    messages = [
        # DATA before any birth: unreadable (aliases only), skipped and counted.
        (data_topic, codec.data_payload(5, now_ms, [codec.DataValue(7, temp.datatype, 1.0)])),
        (node.format("NBIRTH"), codec.node_birth(seq.birth(), now_ms, [], bdseq=0)),
        (
            data_topic.replace("DDATA", "DBIRTH"),
            codec.device_birth(seq.next(), now_ms, [(temp, 20.5), (run, True)]),
        ),
        (
            data_topic,
            codec.data_payload(
                seq.next(), now_ms, [codec.DataValue(7, temp.datatype, 21.25, now_ms + 500)]
            ),
        ),
        (data_topic, b"\xff\x00 not protobuf"),
        (data_topic.replace("DDATA", "DDEATH"), codec.data_payload(seq.next(), now_ms, [])),
    ]
    with Mosquitto(pki, tmp_path / "broker", acl_lines=SPARKPLUG_ACL) as broker:
        config = settings(pki, broker.tls_port, subscribe=[])
        source = MqttSource("edge", config, spark_tags)
        assert "spBv1.0/plant/DBIRTH/edge-1/pump-a" in source.filters
        assert "spBv1.0/plant/NDEATH/edge-1" in source.filters
        async with asyncio.timeout(10):
            await source.connect()
        got = Collector(source)
        got.start()
        try:
            cert, key = pki.device("edge-1")
            async with (
                asyncio.timeout(10),
                aiomqtt.Client(
                    LOOPBACK,
                    broker.tls_port,
                    identifier="edge-1",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    tls_context=pki.client_context(cert, key),
                ) as edge,
            ):
                for topic, payload in messages:
                    await edge.publish(topic, payload, qos=1)
            await wait_until(lambda: len(got.of("pump-a.temp")) >= 4, what="four temp samples")
        finally:
            await got.stop()
            await source.close()
    birth, data, broken, dead = got.of("pump-a.temp")
    assert birth.value == 20.5 and birth.quality is Quality.GOOD
    assert birth.source_time == pytest.approx(now_ms / 1000)
    assert data.value == 21.25 and data.source_time == pytest.approx(now_ms / 1000 + 0.5)
    assert broken.quality is Quality.BAD and "malformed payload" in broken.reason
    assert dead.quality is Quality.BAD and "DDEATH" in dead.reason
    assert [s.value for s in got.of("pump-a.run")][:1] == [True]
    assert source.unnamed == 1 and source.malformed == 1
