"""The NGSI-LD destination against a broker on a real socket (tests/ngsild_broker.py: entity
state, batch upsert with options=update): entities created then updated in place, the ISA-95
levels sent once, 207 partial failures per entity, whole-request refusals and outages as
``Retry``; then through the real store, outbox and relay: a refused entity dead-lettered alone
and a broker outage that loses and repeats nothing. Every request is checked against the
NGSI-LD upsert schema and expanded as JSON-LD (tests/ngsild_checks.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from durable_path import durable_path
from ngsild_broker import UPSERT, NgsiLdBroker
from ngsild_checks import check_request
from support import wait_until

from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, Quality, TagReading, Trigger

pytestmark = pytest.mark.timeout(90)

GATEWAY = "gw-ngsild"
ASSETS = ("pump-01", "pump-02", "pump-03")
T0 = 1714564800.0
LEVEL_IDS = {
    "urn:ngsi-ld:Enterprise:acme",
    "urn:ngsi-ld:Site:acme:dallas",
    "urn:ngsi-ld:Area:acme:dallas:packaging",
    "urn:ngsi-ld:Line:acme:dallas:packaging:line-4",
}


def entity_id(asset: str) -> str:
    return f"urn:ngsi-ld:Asset:{asset}"


class Plant:
    """A tag table: the destination reads it as it reads the gateway's."""

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(ASSETS, 1.0)
        self.at = T0

    def readings(self, since: float) -> list[TagReading]:
        return [
            TagReading(f"{a}.vibration", a, "vibration", v, "mm/s", Quality.GOOD, self.at, None)
            for a, v in self.values.items()
        ]


def prediction(asset: str, seq: int, label: str = "healthy") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=label,
        score=0.5 + seq / 100,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
    )


def settings(url: str, **extra: Any) -> NgsiLdSettings:
    fields: dict[str, Any] = {
        "url": url,
        "enterprise": "acme",
        "site": "dallas",
        "area": "packaging",
        "line": "line-4",
        "tenant": "plant1",
        "headers": {"Authorization": "Bearer s3cret"},
        "timeout_s": 2,
        "initial_backoff_s": 0.02,
        "max_backoff_s": 0.2,
        "tag_refresh_s": 0.05,
        "batch_size": 10,
    }
    fields.update(extra)
    return NgsiLdSettings.model_validate(fields)


@pytest.fixture
async def broker() -> AsyncIterator[NgsiLdBroker]:
    async with NgsiLdBroker() as running:
        yield running


def check_all(broker: NgsiLdBroker) -> None:
    """Every request the gateway sent is a valid NGSI-LD upsert, as JSON-LD too."""
    for request in broker.requests:
        assert request.path == UPSERT and request.query == "options=update"
        assert request.headers["content-type"] == "application/ld+json"
        assert request.headers["ngsild-tenant"] == "plant1"
        assert request.headers["authorization"] == "Bearer s3cret"
        assert request.duplicate_keys == ()
        check_request(request.body)


async def test_entities_are_created_then_updated_in_place(broker: NgsiLdBroker) -> None:
    plant = Plant()
    dest = NgsiLdDestination(
        "twin", settings(broker.url), DestinationContext(GATEWAY, tags=plant.readings)
    )
    await dest.start()
    try:
        first = [prediction(a, 1) for a in ASSETS]
        batch = [Envelope(p.id, dest.encode(Trigger(p))) for p in first]
        assert await dest.deliver(batch) == [None, None, None]
        store = broker.tenant("plant1")
        assert set(store) == {*map(entity_id, ASSETS), *LEVEL_IDS}
        before = {k: dict(v) for k, v in store.items()}

        # New tag values (read by the destination's own refresh) and new predictions.
        plant.values = dict.fromkeys(ASSETS, 7.5)
        plant.at = T0 + 2
        await wait_until(
            lambda: dest.encode(Trigger(prediction("pump-01", 2))).count('"value":7.5') == 1,
            5,
            what="the new tag values",
        )
        second = [prediction(a, 2, label="bearing_fault") for a in ASSETS]
        batch = [Envelope(p.id, dest.encode(Trigger(p))) for p in second]
        assert await dest.deliver(batch) == [None, None, None]
    finally:
        await dest.close()

    assert len(broker.requests) == 2
    check_all(broker)
    # The levels went once: the second request carries the three assets only.
    assert [len(r.body) for r in broker.requests] == [7, 3]
    for asset in ASSETS:
        old, new = before[entity_id(asset)], store[entity_id(asset)]
        # Updated in place: the same attributes, each one object (no second instance).
        assert set(new) == set(old) == {"id", "type", "isPartOf", "vibration", "healthPrediction"}
        assert all(isinstance(v, dict) for k, v in new.items() if k not in ("id", "type"))
        pred_old, pred_new = old["healthPrediction"], new["healthPrediction"]
        assert (pred_old["value"], pred_new["value"]) == ("healthy", "bearing_fault")
        assert pred_new["observedAt"] > pred_old["observedAt"]  # ISO 8601 UTC sorts as time
        assert pred_new["score"]["value"] == pytest.approx(0.52)
        assert (old["vibration"]["value"], new["vibration"]["value"]) == (1.0, 7.5)
        assert new["vibration"]["observedAt"] > old["vibration"]["observedAt"]
    assert store["urn:ngsi-ld:Site:acme:dallas"]["isPartOf"]["object"] == (
        "urn:ngsi-ld:Enterprise:acme"
    )
    health = dest.health()
    assert health.counters["sent"] == 6 and health.counters["levels"] == 4


async def test_a_partial_failure_settles_each_entity_on_its_own(broker: NgsiLdBroker) -> None:
    dest = NgsiLdDestination("twin", settings(broker.url), DestinationContext(GATEWAY))
    await dest.start()
    try:
        broker.refuse[entity_id("pump-02")] = (400, "BadRequestData", "unitCode unknown")
        broker.refuse[entity_id("pump-03")] = (503, "LdContextNotAvailable", "try later")
        batch = [Envelope(p.id, dest.encode(Trigger(p))) for p in map(prediction, ASSETS, [1] * 3)]
        ok, refused, later = await dest.deliver(batch)
        assert ok is None
        assert refused == "broker refused the entity: HTTP 400 BadRequestData: unitCode unknown"
        assert isinstance(later, Retry) and "LdContextNotAvailable" in later.reason
        assert set(broker.tenant("plant1")) == {entity_id("pump-01"), *LEVEL_IDS}
        assert dest.health().state == "degraded"

        # The broker takes them now: only the two left are sent (the levels were taken).
        broker.refuse.clear()
        assert await dest.deliver(batch[1:]) == [None, None]
        assert len(broker.requests[-1].body) == 2
        assert dest.health().state == "ok"
    finally:
        await dest.close()
    check_all(broker)


async def test_whole_request_failures(broker: NgsiLdBroker) -> None:
    dest = NgsiLdDestination("twin", settings(broker.url), DestinationContext(GATEWAY))
    await dest.start()
    try:
        batch = [Envelope(p.id, dest.encode(Trigger(p))) for p in map(prediction, ASSETS, [1] * 3)]
        broker.fail_with, broker.retry_after = [503], "7"
        outcomes = await dest.deliver(batch)
        assert outcomes == [Retry("HTTP 503", 7.0)] * 3
        broker.fail_with, broker.retry_after = [400], None
        outcomes = await dest.deliver(batch)
        assert outcomes == ["broker refused the batch: HTTP 400 BadRequestData: told to fail"] * 3
        await broker.stop()
        outcomes = await dest.deliver(batch)
        assert all(isinstance(o, Retry) and "ConnectError" in o.reason for o in outcomes)
        assert dest.health().state == "degraded"
        await broker.start()
        assert await dest.deliver(batch) == [None] * 3
        assert dest.health().state == "ok"
    finally:
        await dest.close()
    check_all(broker)


async def test_through_the_outbox_a_refused_entity_is_dead_lettered_and_an_outage_loses_nothing(
    broker: NgsiLdBroker, tmp_path: Path
) -> None:
    assets = (*ASSETS, "pump-04")
    plant = Plant()
    dest = NgsiLdDestination(
        "twin", settings(broker.url), DestinationContext(GATEWAY, tags=plant.readings)
    )
    poison = entity_id("pump-04")
    broker.refuse[poison] = (400, "BadRequestData", "refused by policy")
    async with durable_path(dest, f"sqlite:///{tmp_path / 'o.db'}", GATEWAY) as path:
        await path.writer.write([prediction(a, s) for s in (1, 2) for a in assets])
        await wait_until(
            lambda: len(path.repo.dead_letters("twin")) == 2 and path.backlog() == 0,
            20,
            what="the first events settled",
        )
        dead = path.repo.dead_letters("twin")
        # Both of pump-04's events, each refused dead_letter_after (3) times; the others taken.
        assert [(d.asset, d.attempts) for d in dead] == [("pump-04", 3), ("pump-04", 3)]
        assert "refused by policy" in dead[0].last_error

        # The broker goes away; predictions keep coming and wait in the outbox.
        broker.refuse.clear()
        await broker.stop()
        await path.writer.write([prediction(a, s) for s in (3, 4, 5) for a in ASSETS])
        await wait_until(
            lambda: dest.health().state == "degraded" and path.backlog() == 9,
            20,
            what="the relay retrying against a broker that is down",
        )
        await broker.start()
        await wait_until(lambda: path.backlog() == 0, 30, what="the backlog delivered")

    check_all(broker)
    # Each prediction reached the broker in exactly one request, in order per asset.
    sent: Counter[tuple[str, str]] = Counter()
    order: dict[str, list[str]] = {}
    for request in broker.requests:
        for entity in request.body:
            if "healthPrediction" in entity and entity["id"] != poison:
                stamp = entity["healthPrediction"]["observedAt"]
                sent[(entity["id"], stamp)] += 1
                order.setdefault(entity["id"], []).append(stamp)
    assert len(sent) == 15 and set(sent.values()) == {1}
    assert all(stamps == sorted(stamps) for stamps in order.values())
    state = broker.tenant("plant1")
    assert poison not in state
    assert {state[entity_id(a)]["healthPrediction"]["observedAt"] for a in ASSETS} == {
        "2024-05-01T12:00:05.000Z"
    }
