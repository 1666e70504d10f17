"""The Ditto destination through Ditto's HTTP API, against a real HTTP server on 127.0.0.1 that
implements the things endpoints over a twin store (tests/dittotwin.py): things created once and
their features written with the command each needs, an outage that costs retries and then
delivers each event once (the real store, outbox and relay in between), a 400 that is a
rejection, a deleted thing that is created again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dittotwin import DittoHttpServer, TwinStore, basic
from durable_path import durable_path
from support import free_port, wait_until

from bridge.connectors.ditto.config import DittoSettings
from bridge.connectors.ditto.destination import DittoDestination
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import AssetInfo, Prediction, PredictionSlot, Quality, Trigger

GATEWAY = "gw-ditto-http"
NAMESPACE = "com.acme.dallas"
POLICY = "com.acme.dallas:bridge"
SLOTS = (
    PredictionSlot("pump-01", "pump-health", "1.2.0", "ab" * 32, input_units=(("flow", "m3/h"),)),
)


def settings(url: str, **extra: Any) -> DittoSettings:
    fields: dict[str, Any] = {
        "namespace": NAMESPACE,
        "policy_id": POLICY,
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "http": {"url": url, "username": "bridge", "password": "s3cret", "timeout_s": 3},
        "things": {"pump-01": {"template": "pump"}},
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


@pytest.fixture
async def ditto() -> AsyncIterator[DittoHttpServer]:
    server = DittoHttpServer(
        TwinStore(policies={POLICY}), free_port(), authorization=basic("bridge", "s3cret")
    )
    async with server:
        yield server


async def started(url: str, **extra: Any) -> DittoDestination:
    destination = DittoDestination(
        "twins", settings(url, **extra), DestinationContext(GATEWAY, SLOTS)
    )
    await destination.start()
    return destination


def envelopes(destination: DittoDestination, events: list[Trigger]) -> list[Envelope]:
    return [Envelope(e.prediction.id, destination.encode(e)) for e in events]


async def test_the_thing_is_created_once_and_its_features_written(ditto: DittoHttpServer) -> None:
    destination = await started(ditto.url)
    try:
        events = [
            Trigger(prediction("pump-01", 1)),
            Trigger(prediction("pump-02", 1, "cavitation"), "alert", previous="healthy"),
        ]
        async with asyncio.timeout(10):
            assert await destination.deliver(envelopes(destination, events)) == [None, None]
        later = Trigger(prediction("pump-01", 2, "cavitation"), "label_change", previous="healthy")
        async with asyncio.timeout(10):
            assert await destination.deliver(envelopes(destination, [later])) == [None]
    finally:
        await destination.close()
    served = [(r.method, r.path, r.status) for r in ditto.requests]
    assert served == [
        ("PUT", "/", 201),
        ("PUT", "/features/model/properties", 204),
        ("PUT", "/features/prediction/properties", 204),
        ("PUT", "/", 201),
        ("PUT", "/features/model/properties", 204),
        ("PUT", "/features/prediction/properties", 204),
        ("PUT", "/features/model/properties", 204),
        ("PUT", "/features/prediction/properties", 204),
    ]
    keys = [e.prediction.id for e in events for _ in range(3)] + [later.prediction.id] * 2
    assert [r.correlation_id for r in ditto.requests] == keys
    assert all(r.content_type == "application/json" for r in ditto.requests)
    thing = ditto.store.thing(f"{NAMESPACE}:pump-01")
    assert thing["policyId"] == POLICY
    assert thing["attributes"]["template"] == "pump"
    assert thing["attributes"]["tags"] == {"flow": {"unit": "m3/h"}}
    assert thing["features"]["prediction"]["properties"]["label"] == "cavitation"
    assert thing["features"]["model"]["properties"]["sha256"] == "ab" * 32
    assert destination.health().counters["things"] == 2


async def test_the_things_attributes_come_from_the_mapping_and_follow_a_reload(
    ditto: DittoHttpServer,
) -> None:
    assets = (AssetInfo("pump-01", "pump", "Feed pump 1"), AssetInfo("pump-02", "pump"))
    destination = DittoDestination(
        "twins",
        settings(ditto.url, things={"pump-02": {"description": "Spare pump"}}),
        DestinationContext(GATEWAY, SLOTS, assets=assets),
    )
    await destination.start()
    try:
        events = [Trigger(prediction("pump-01", 1)), Trigger(prediction("pump-02", 1))]
        async with asyncio.timeout(10):
            assert await destination.deliver(envelopes(destination, events)) == [None, None]

        def described(asset: str) -> tuple[str, str]:
            attributes = ditto.store.thing(f"{NAMESPACE}:{asset}")["attributes"]
            return attributes.get("template"), attributes.get("description")

        assert described("pump-01") == ("pump", "Feed pump 1")
        assert described("pump-02") == ("pump", "Spare pump")  # `things:` over the mapping
        # A reload describes pump-01 anew: its thing is written again before its next event.
        reloaded = (AssetInfo("pump-01", "dosing-pump", "Dosing pump 1"), assets[1])
        await destination.follow_context(DestinationContext(GATEWAY, SLOTS, assets=reloaded))
        async with asyncio.timeout(10):
            later = [Trigger(prediction("pump-01", 2))]
            assert await destination.deliver(envelopes(destination, later)) == [None]
        assert described("pump-01") == ("dosing-pump", "Dosing pump 1")
    finally:
        await destination.close()


async def test_telemetry_is_merged_with_patch(ditto: DittoHttpServer) -> None:
    from bridge.types import TagReading

    now = time.time()
    reading = TagReading("pump-01.flow", "pump-01", "flow", 12.5, "m3/h", Quality.GOOD, now, now)
    context = DestinationContext(GATEWAY, SLOTS, tags=lambda since: [reading])
    destination = DittoDestination(
        "twins", settings(ditto.url, telemetry={"interval_s": 0.05}), context
    )
    await destination.start()
    try:
        # What another source wrote into the feature before: kept by the merge.
        ditto.store.things[f"{NAMESPACE}:pump-01"] = {"thingId": f"{NAMESPACE}:pump-01"}
        event = Trigger(prediction("pump-01", 1))
        async with asyncio.timeout(10):
            assert await destination.deliver(envelopes(destination, [event])) == [None]
    finally:
        await destination.close()
    patch = [r for r in ditto.requests if r.method == "PATCH"]
    assert [(r.path, r.content_type, r.status) for r in patch] == [
        ("/features/telemetry/properties", "application/merge-patch+json", 204)
    ]
    flow = ditto.store.thing(f"{NAMESPACE}:pump-01")["features"]["telemetry"]["properties"]["flow"]
    assert flow["value"] == 12.5 and flow["unit"] == "m3/h"


async def test_a_400_is_a_rejection_quoting_dittos_error(ditto: DittoHttpServer) -> None:
    destination = await started(ditto.url, policy_id="com.acme.dallas:missing")
    try:
        event = Trigger(prediction("pump-01", 1))
        async with asyncio.timeout(10):
            (outcome,) = await destination.deliver(envelopes(destination, [event]))
    finally:
        await destination.close()
    assert isinstance(outcome, str), outcome
    assert "HTTP 400 things:policy.notallowed" in outcome
    assert "com.acme.dallas:missing" in outcome  # Ditto's message, quoted
    assert destination.health().counters["rejected"] == 1
    assert [r.status for r in ditto.requests] == [400]  # nothing after the refused create


async def test_wrong_credentials_are_a_rejection(ditto: DittoHttpServer) -> None:
    destination = await started(
        ditto.url, http={"url": ditto.url, "username": "bridge", "password": "wrong"}
    )
    try:
        event = Trigger(prediction("pump-01", 1))
        async with asyncio.timeout(10):
            (outcome,) = await destination.deliver(envelopes(destination, [event]))
    finally:
        await destination.close()
    assert isinstance(outcome, str) and "HTTP 401 gateway:authentication.failed" in outcome


async def test_a_deleted_thing_is_created_again(ditto: DittoHttpServer) -> None:
    destination = await started(ditto.url)
    try:
        async with asyncio.timeout(10):
            first = Trigger(prediction("pump-01", 1))
            assert await destination.deliver(envelopes(destination, [first])) == [None]
            ditto.store.things.clear()  # someone deleted the thing in Ditto
            second = Trigger(prediction("pump-01", 2))
            (outcome,) = await destination.deliver(envelopes(destination, [second]))
            assert isinstance(outcome, Retry) and "things:thing.notfound" in outcome.reason
            # The relay sends it again: the thing is created before its features.
            assert await destination.deliver(envelopes(destination, [second])) == [None]
    finally:
        await destination.close()
    thing = ditto.store.thing(f"{NAMESPACE}:pump-01")
    assert thing["features"]["prediction"]["properties"]["prediction_id"] == second.prediction.id
    assert [(r.method, r.path) for r in ditto.requests][-3:] == [
        ("PUT", "/"),
        ("PUT", "/features/model/properties"),
        ("PUT", "/features/prediction/properties"),
    ]


async def test_an_outage_costs_retries_then_each_event_is_delivered_once(
    tmp_path: Path,
) -> None:
    store = TwinStore(policies={POLICY})
    server = DittoHttpServer(store, free_port(), authorization=basic("bridge", "s3cret"))
    destination = DittoDestination(
        "twins", settings(server.url), DestinationContext(GATEWAY, SLOTS)
    )
    assets = ("pump-01", "pump-02")
    sent: dict[str, list[str]] = {a: [] for a in assets}

    async def write(path: Any, seq: int) -> None:
        batch = [prediction(a, seq) for a in assets]
        for p in batch:
            sent[p.asset].append(p.id)
        await path.writer.write(batch)

    try:
        await server.start()
        async with durable_path(destination, f"sqlite:///{tmp_path / 'ditto.db'}", GATEWAY) as path:
            for seq in range(1, 6):
                await write(path, seq)
            await wait_until(
                lambda: destination.health().counters["sent"] == 10, what="the first events"
            )
            await server.stop()  # Ditto is down: connections refused
            for seq in range(6, 16):
                await write(path, seq)
                await asyncio.sleep(0.02)
            await wait_until(lambda: path.backlog() == 20, what="the events in the outbox")
            retries = destination.health().counters["retries"]
            await wait_until(
                lambda: destination.health().counters["retries"] >= retries + 3, what="retries"
            )
            assert path.backlog() == 20  # kept in the outbox
            health = destination.health()
            assert health.state == "degraded" and "ConnectError" in health.detail
            await server.start()  # the same port again
            await wait_until(lambda: path.backlog() == 0, timeout=30, what="the backlog sent")
    finally:
        await server.stop()
    received: dict[str, list[str]] = {a: [] for a in assets}
    for applied in store.applied:
        if applied.path == "/features/prediction/properties":
            received[applied.thing_id.split(":")[1]].append(applied.correlation_id)
    for asset in assets:
        assert received[asset] == sent[asset], asset  # each once, in order
        props = store.thing(f"{NAMESPACE}:{asset}")["features"]["prediction"]["properties"]
        assert props["prediction_id"] == sent[asset][-1]
    assert destination.health().counters["sent"] == 30
