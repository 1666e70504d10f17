"""Ditto through the whole gateway, from a mapping file as `bridge run` loads it: devices publish
on the Mosquitto at 127.0.0.1:1883 -> the MQTT source -> the tag table -> a model -> the store
and its outbox -> the relay -> the ``ditto`` output (HTTP) -> a real HTTP server with Ditto's
things endpoints over a twin store. The telemetry feature comes from the gateway's real tag
table (``DestinationContext.tags``)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from dittotwin import DittoHttpServer, TwinStore
from insight_models import linear_regressor
from support import LOOPBACK, free_port, wait_until

from bridge import plugins
from bridge.connectors.ditto import register
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway

BROKER_PORT = 1883


def _broker_up() -> bool:
    try:
        with socket.create_connection((LOOPBACK, BROKER_PORT), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _broker_up(), reason="no Mosquitto on 127.0.0.1:1883")

MAPPING = """
version: 1
gateway: {{id: ditto-gw, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  devices:
    kind: mqtt
    host: 127.0.0.1
    port: 1883
    plaintext: true
    client_id: bridge-{prefix}
    session_expiry_s: 0
    subscribe: ["{prefix}/+/telemetry"]
templates:
  pump:
    tags:
      temperature:
        source: devices
        address: {{topic: "{prefix}/{{asset}}/telemetry", pointer: /temp}}
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
outputs:
  twins:
    kind: ditto
    namespace: com.acme.dallas
    enterprise: acme
    site: dallas
    area: packaging
    line: line-4
    http: {{url: "{url}", bearer_token: "${{DITTO_TOKEN}}"}}
    things:
      pump-a: {{template: pump, description: Feed pump A}}
    telemetry: {{tags: [temperature], interval_s: 0.05}}
    initial_backoff_s: 0.05
    max_backoff_s: 0.5
"""


@pytest.fixture
async def ditto() -> AsyncIterator[DittoHttpServer]:
    # Ditto with OpenID Connect: the gateway's JWT is expected as a bearer token.
    server = DittoHttpServer(TwinStore(), free_port(), authorization="Bearer jwt-of-the-gateway")
    async with server:
        yield server


@pytest.fixture
async def gateway(
    ditto: DittoHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Gateway, str]]:
    # As the entry point does in an installed gateway; the registry is global: for this test.
    monkeypatch.setattr(plugins, "_destinations", dict(plugins.destination_kinds()))
    register()
    monkeypatch.setenv("DITTO_TOKEN", "jwt-of-the-gateway")
    prefix = f"test-ditto-gw-{uuid.uuid4().hex[:10]}"
    model = linear_regressor(tmp_path / "echo.onnx", [1.0], [0.0], [1.0])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        MAPPING.format(store=tmp_path / "g.db", prefix=prefix, model=model, url=ditto.url)
    )
    running = await build_gateway(prepare(mapping))
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        await asyncio.wait_for(running.started.wait(), 30)
        yield running, prefix
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _feature(store: TwinStore, asset: str, feature: str) -> dict[str, Any]:
    thing = store.things.get(f"com.acme.dallas:{asset}", {})
    props: dict[str, Any] = thing.get("features", {}).get(feature, {}).get("properties", {})
    return props


async def test_device_values_become_twins(
    ditto: DittoHttpServer, gateway: tuple[Gateway, str]
) -> None:
    _, prefix = gateway
    store = ditto.store
    async with aiomqtt.Client(
        LOOPBACK, BROKER_PORT, identifier=f"dev-{prefix}", protocol=aiomqtt.ProtocolVersion.V5
    ) as device:
        sent = 0.0

        async def predicted() -> bool:
            nonlocal sent
            if all(
                _feature(store, a, "prediction").get("value") == v
                and _feature(store, a, "prediction").get("quality") == "Good"
                for a, v in (("pump-a", 40.0), ("pump-b", 41.0))
            ):
                return True
            # Sent again every second: a message that came before the gateway's subscription
            # was in place is gone (not retained), as from a device that just woke up.
            if time.monotonic() - sent >= 1.0:
                for n, asset in enumerate(("pump-a", "pump-b")):
                    body = json.dumps({"temp": 40.0 + n})
                    await device.publish(f"{prefix}/{asset}/telemetry", body, qos=1)
                sent = time.monotonic()
            return False

        await wait_until(predicted, timeout=30, what="both twins' predictions")
        # A later value: the twin follows, the telemetry with it.
        await device.publish(f"{prefix}/pump-a/telemetry", json.dumps({"temp": 45.5}), qos=1)
        await wait_until(
            lambda: _feature(store, "pump-a", "prediction").get("value") == 45.5,
            timeout=30,
            what="the later prediction",
        )
    await wait_until(
        lambda: _feature(store, "pump-a", "telemetry").get("temperature", {}).get("value") == 45.5,
        timeout=10,
        what="the telemetry of the later value",
    )
    thing = store.thing("com.acme.dallas:pump-a")
    assert thing["attributes"]["template"] == "pump"
    assert thing["attributes"]["description"] == "Feed pump A"
    assert thing["attributes"]["tags"] == {"temperature": {"unit": "degC"}}
    assert thing["features"]["model"]["properties"]["name"] == "echo"
    assert _feature(store, "pump-a", "telemetry")["temperature"]["unit"] == "degC"
    assert _feature(store, "pump-b", "telemetry")["temperature"]["value"] == 41.0
    # Each thing created once; every request carried the bearer token (else 401).
    assert [r.path for r in ditto.requests].count("/") == 2
    assert all(r.status in (201, 204) for r in ditto.requests)
