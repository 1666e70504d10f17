"""MQTT through the whole gateway: devices publish over mutual TLS -> the MQTT source ->
normalize -> a model -> the UNS output (predictions and tag values) or the Sparkplug B edge node,
on a real Mosquitto, from a mapping file as `bridge run` loads it (and `bridge run` itself,
killed with SIGKILL, for the Sparkplug will)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from insight_models import linear_regressor
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from sparkplug_host import Host, bdseq, check_births_precede_data

from bridge.connectors.mqtt.sparkplug.codec import MessageType
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

ASSETS = ("pump-a", "pump-b")

# The plant side both outputs share: devices -> MQTT source -> an echo model (value = temperature).
PLANT = """
version: 1
gateway: {{id: {gid}, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  devices:
    kind: mqtt
    host: 127.0.0.1
    port: {port}
    tls: {{ca_file: "{pki}/ca.pem", client_certificate: "{pki}/gateway.pem",
          client_key: "{pki}/gateway.key"}}
    client_id: bridge-{gid}
    subscribe: ["plant/+/+/telemetry"]
templates:
  pump:
    tags:
      temperature:
        source: devices
        address: {{topic: "plant/line-4/{{asset}}/telemetry", pointer: /temp, time_pointer: /ts}}
        unit: degC
assets:
  pump-a: {{template: pump}}
  pump-b: {{template: pump}}
models:
  echo:
    file: {model}
    version: "1"
    template: pump
    trigger: change
    min_interval_ms: 10
    window_s: 5
    min_window_s: 0
    outputs: {{value: value, unit: degC}}
    features: [{{tag: temperature, stat: last}}]
"""

MAPPING = (
    PLANT
    + """outputs:
  uns:
    kind: uns
    host: 127.0.0.1
    port: {port}
    tls: {{ca_file: "{pki}/ca.pem", client_certificate: "{pki}/gateway.pem",
          client_key: "{pki}/gateway.key"}}
    client_id: bridge-{gid}-uns
    enterprise: acme
    site: dallas
    area: packaging
    line: line-4
    tags: {{interval_s: 0.2, deadband: 0.5}}
"""
)


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki", devices=ASSETS)


@pytest.fixture
async def broker(pki: MqttPki, tmp_path: Path) -> AsyncIterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def gateway(pki: MqttPki, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway of MAPPING (echo model: value = temperature), running until the test ends."""
    model = linear_regressor(tmp_path / "echo.onnx", [1.0], [0.0], [1.0])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        MAPPING.format(
            gid="mqtt-gw",
            store=tmp_path / "g.db",
            port=broker.tls_port,
            pki=pki.directory,
            model=model,
        )
    )
    running = await build_gateway(prepare(mapping))
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        await asyncio.wait_for(running.started.wait(), 30)
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_device_values_become_predictions_in_the_uns(
    pki: MqttPki, broker: Mosquitto, gateway: Gateway
) -> None:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(60), pki.client(broker.tls_port, "uns-reader") as reader:
        await reader.subscribe("acme/+/+/+/+/bridge/#", qos=1)
        for n, asset in enumerate(ASSETS):
            async with pki.client(broker.tls_port, f"dev-{asset}", asset) as device:
                body = {"temp": 40.0 + n, "ts": 1_733_308_800_000 + n}
                await device.publish(f"plant/line-4/{asset}/telemetry", json.dumps(body), qos=1)
        async for message in reader.messages:
            assert message.topic.matches("acme/dallas/packaging/line-4/+/bridge/echo/prediction")
            seen.append(json.loads(message.payload))  # type: ignore[arg-type]
            if {b["asset"] for b in seen if b["quality"] == "Good"} == set(ASSETS):
                break
    good = {b["asset"]: b["value"] for b in seen if b["quality"] == "Good"}
    assert good == pytest.approx({"pump-a": 40.0, "pump-b": 41.0})
    (supervisor,) = gateway.supervisors
    health = supervisor.health()
    assert health.state == "ok"
    assert health.counters["messages"] == 2 and health.counters["malformed"] == 0


async def test_tag_values_reach_the_uns_rate_limited_past_their_deadband(
    pki: MqttPki, broker: Mosquitto, gateway: Gateway
) -> None:
    seen: list[dict[str, Any]] = []
    topic = "acme/dallas/packaging/line-4/pump-a/tags/temperature"
    async with (
        asyncio.timeout(60),
        pki.client(broker.tls_port, "uns-tags-reader") as reader,
        pki.client(broker.tls_port, "dev-pump-a", "pump-a") as device,
    ):
        await reader.subscribe(topic, qos=1)
        # 40.2 is within the 0.5 deadband of 40.0: never published; 41.0 is.
        for temp in (40.0, 40.2, 41.0):
            body = {"temp": temp, "ts": 1_733_308_800_000}
            await device.publish("plant/line-4/pump-a/telemetry", json.dumps(body), qos=1)
            await asyncio.sleep(0.5)  # longer than interval_s: each its own round
        async for message in reader.messages:
            seen.append(json.loads(message.payload))  # type: ignore[arg-type]
            if seen[-1]["value"] == 41.0:
                break
    values = [b["value"] for b in seen if b["quality"] == "Good"]
    assert values == [40.0, 41.0]
    assert all(b["unit"] == "degC" and b["tag"] == "pump-a.temperature" for b in seen)


SPARKPLUG_MAPPING = (
    PLANT
    + """outputs:
  sparkplug:
    kind: sparkplug
    host: 127.0.0.1
    port: {port}
    tls: {{ca_file: "{pki}/ca.pem", client_certificate: "{pki}/gateway.pem",
          client_key: "{pki}/gateway.key"}}
    client_id: bridge-{gid}-node
    keepalive_s: 5
    group_id: plant
    edge_node_id: line-4
    bdseq_path: "{state}/bdseq"
"""
)


async def test_bridge_run_is_a_sparkplug_edge_node_whose_will_matches_its_birth(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    model = linear_regressor(tmp_path / "echo.onnx", [1.0], [0.0], [1.0])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        SPARKPLUG_MAPPING.format(
            gid="spb-gw",
            store=tmp_path / "g.db",
            port=broker.tls_port,
            pki=pki.directory,
            model=model,
            state=tmp_path / "state",
        )
    )
    log = (tmp_path / "bridge.log").open("wb")
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", str(mapping), stdout=log, stderr=log
    )
    try:
        async with Host(pki, broker.tls_port) as host:
            (birth,) = await host.wait_for(MessageType.NBIRTH, timeout=30)
            births = await host.wait_for(MessageType.DBIRTH, 2)
            assert {b.device for b in births} == set(ASSETS)
            async with (
                asyncio.timeout(10),
                pki.client(broker.tls_port, "dev-pump-a", "pump-a") as device,
            ):
                body = {"temp": 42.5, "ts": 1_733_308_800_000}
                await device.publish("plant/line-4/pump-a/telemetry", json.dumps(body), qos=1)
            data = await host.wait_for(MessageType.DDATA, timeout=15)
            values = [m.metric("Prediction/echo/Value") for m in data if m.device == "pump-a"]
            assert values and values[-1] == pytest.approx(42.5)
            assert all(metric.name is None for metric in data[-1].bare.metrics)  # aliases only

            gateway.kill()  # SIGKILL: no NDEATH of its own, the broker sends the will
            await gateway.wait()
            (will,) = await host.wait_for(MessageType.NDEATH, timeout=15)
            assert bdseq(will) == bdseq(birth)
            check_births_precede_data(host.seen)
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        log.close()
