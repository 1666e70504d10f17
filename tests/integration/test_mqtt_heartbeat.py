"""A tag's ``heartbeat_s`` through the whole gateway: a device publishes over mutual TLS -> the
MQTT source -> normalize -> the UNS output's tag topics, on a real Mosquitto, from a mapping file
as `bridge run` loads it. A value that holds still is republished with ``"heartbeat": true`` and
its original source time; once the device falls silent for longer than ``max_age_s`` the
messages say Bad (stale), so a consumer tells unchanged from dead."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from support import wait_until

from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

ASSET = "pump-a"
TOPIC = "acme/dallas/packaging/line-4/pump-a/tags/temperature"
FIRST_TS_MS = 1_733_308_800_000

MAPPING = """
version: 1
gateway: {{id: hb-gw, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  devices:
    kind: mqtt
    host: 127.0.0.1
    port: {port}
    tls: {{ca_file: "{pki}/ca.pem", client_certificate: "{pki}/gateway.pem",
          client_key: "{pki}/gateway.key"}}
    client_id: bridge-hb
    subscribe: ["plant/+/+/telemetry"]
assets:
  pump-a:
    tags:
      temperature:
        source: devices
        address: {{topic: "plant/line-4/pump-a/telemetry", pointer: /temp, time_pointer: /ts}}
        unit: degC
        heartbeat_s: 1
        max_age_s: 2.5
outputs:
  uns:
    kind: uns
    host: 127.0.0.1
    port: {port}
    tls: {{ca_file: "{pki}/ca.pem", client_certificate: "{pki}/gateway.pem",
          client_key: "{pki}/gateway.key"}}
    client_id: bridge-hb-uns
    enterprise: acme
    site: dallas
    area: packaging
    line: line-4
    tags: {{interval_s: 0.2}}
"""


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki", devices=(ASSET,))


@pytest.fixture
async def broker(pki: MqttPki, tmp_path: Path) -> AsyncIterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def gateway(pki: MqttPki, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Gateway]:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        MAPPING.format(store=tmp_path / "g.db", port=broker.tls_port, pki=pki.directory)
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


async def test_an_unchanged_tag_beats_with_its_source_time_and_a_dead_one_beats_bad(
    pki: MqttPki, broker: Mosquitto, gateway: Gateway
) -> None:
    seen: list[dict[str, Any]] = []

    async def read(reader: Any, until: Any) -> None:
        async for message in reader.messages:
            seen.append(json.loads(message.payload))
            if until(seen):
                return

    def good_beats(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [b for b in bodies if b.get("heartbeat") and b["quality"] == "Good"]

    async with (
        asyncio.timeout(90),
        pki.client(broker.tls_port, "uns-hb-reader") as reader,
        pki.client(broker.tls_port, f"dev-{ASSET}", ASSET) as device,
    ):
        await reader.subscribe(TOPIC, qos=1)
        # The device keeps answering with the same value (each message with its own, newer
        # time) for longer than max_age_s (14 x 0.25 s): unchanged, not dead.
        reading = asyncio.create_task(read(reader, lambda s: len(good_beats(s)) >= 3))
        n = 0
        while n < 14 or not reading.done():
            body = {"temp": 40.0, "ts": FIRST_TS_MS + n * 250}
            await device.publish("plant/line-4/pump-a/telemetry", json.dumps(body), qos=1)
            n += 1
            await asyncio.sleep(0.25)
        await reading
        alive = len(seen)
        # Silence: the device says nothing more; the tag must turn Bad and beat as Bad.
        await read(
            reader,
            lambda s: any(b.get("heartbeat") and b["quality"] == "Bad" for b in s[alive:]),
        )

    first = seen[0]
    assert first["value"] == 40.0 and first["quality"] == "Good" and "heartbeat" not in first
    assert first["source_time"] == FIRST_TS_MS / 1000
    beats = [b for b in seen if b.get("heartbeat")]
    assert len(good_beats(seen)) >= 3
    # Every repeat carries the value and the time it was first measured, never a new one.
    assert all(b["value"] == 40.0 and b["source_time"] == FIRST_TS_MS / 1000 for b in beats)
    assert all(b["tag"] == "pump-a.temperature" and b["unit"] == "degC" for b in beats)
    # While the device answered, nothing was Bad; in the silence the tag turned Bad (stale)
    # and stayed Bad: a consumer sees dead, not an unchanged Good value.
    assert all(b["quality"] == "Good" for b in seen[:alive])
    silent = seen[alive:]
    first_bad = next(i for i, b in enumerate(silent) if b["quality"] == "Bad")
    assert all(b["quality"] == "Bad" for b in silent[first_bad:])
    assert all(b["reason"].startswith("stale: nothing heard") for b in silent[first_bad:])
    assert gateway.outputs is not None

    def sent() -> int:
        assert gateway.outputs is not None
        (uns,) = (h for h in gateway.outputs.health() if "tag_messages" in h.counters)
        return int(uns.counters["tag_messages"])

    # The output counts a message once its publish returns, which can be after the reader
    # already got it: give the count a moment to catch up.
    await wait_until(lambda: sent() >= len(seen), 5, what="the output's message count")
