"""A prediction sent after a newer one of the same attribute was upserted (a backfilled,
``historical`` one) never replaces the entity's current value on the broker: it goes to the
broker's temporal API (the entity's history), or is left out with ``temporal: false``. Against
the in-test broker on a real socket; every request schema-checked and expanded as JSON-LD."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ngsild_broker import TEMPORAL, UPSERT, NgsiLdBroker
from ngsild_checks import check_request, check_temporal_request

from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, Quality, Trigger

pytestmark = pytest.mark.timeout(60)

T0 = 1714564800.0
ENTITY = "urn:ngsi-ld:Asset:pump-01"
ATTR = "healthPrediction"


def prediction(seq: int, label: str, *, historical: bool = False) -> Prediction:
    return Prediction(
        id=f"p-{seq}-{historical}",
        seq=seq,
        asset="pump-01",
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=label,
        score=0.5,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
        historical=historical,
    )


def settings(url: str, **extra: object) -> NgsiLdSettings:
    return NgsiLdSettings.model_validate(
        {"url": url, "enterprise": "acme", "site": "dallas", "area": "a", "line": "l", **extra}
    )


@pytest.fixture
async def broker() -> AsyncIterator[NgsiLdBroker]:
    async with NgsiLdBroker() as running:
        yield running


async def _send(dest: NgsiLdDestination, *predictions: Prediction) -> list[object]:
    out: list[object] = []
    for p in predictions:  # one at a time, as the relay sends an asset's events
        out += await dest.deliver([Envelope(p.id, dest.encode(Trigger(p)))])
    return out


def _check(broker: NgsiLdBroker) -> None:
    for request in broker.requests:
        assert request.headers["content-type"] == "application/ld+json"
        if request.path == UPSERT:
            check_request(request.body)
        else:
            assert request.path == TEMPORAL.format(entity_id=ENTITY)
            check_temporal_request(request.body)


async def test_a_late_prediction_goes_to_the_history_not_the_current_value(
    broker: NgsiLdBroker,
) -> None:
    dest = NgsiLdDestination("twin", settings(broker.url), DestinationContext("gw"))
    await dest.start()
    try:
        live = prediction(10, "bearing_fault")
        backfilled = [prediction(s, "healthy", historical=True) for s in (3, 4)]
        assert await _send(dest, live, *backfilled) == [None, None, None]
        current = broker.tenant()[ENTITY][ATTR]
        assert current["value"] == "bearing_fault"  # not overwritten by the backfill
        assert current["observedAt"] == "2024-05-01T12:00:10.000Z"
        history = broker.history[""][ENTITY][ATTR]
        assert [(i["value"], i["observedAt"]) for i in history] == [
            ("healthy", "2024-05-01T12:00:03.000Z"),
            ("healthy", "2024-05-01T12:00:04.000Z"),
        ]
        assert all(i["historical"]["value"] is True for i in history)
        # The late event's upsert still went (the entity's other attributes), without it.
        late_upserts = [r.body for r in broker.requests if r.path == UPSERT][1:]
        assert late_upserts and all(ATTR not in e for b in late_upserts for e in b)

        # A newer one (live or backfilled) is the current value again.
        newer = prediction(11, "cavitation", historical=True)
        assert await _send(dest, newer) == [None]
        assert broker.tenant()[ENTITY][ATTR]["value"] == "cavitation"
        assert len(broker.history[""][ENTITY][ATTR]) == 2
        assert dest.health().counters["late"] == 2
    finally:
        await dest.close()
    _check(broker)


async def test_a_failing_temporal_api_retries_the_event_and_a_refusal_rejects_it(
    broker: NgsiLdBroker,
) -> None:
    dest = NgsiLdDestination("twin", settings(broker.url), DestinationContext("gw"))
    await dest.start()
    try:
        assert await _send(dest, prediction(10, "bearing_fault")) == [None]
        late = prediction(3, "healthy", historical=True)
        envelope = Envelope(late.id, dest.encode(Trigger(late)))
        # The upsert is taken, the temporal API fails: the whole event is tried again.
        broker.temporal_fail_with = [503]
        (outcome,) = await dest.deliver([envelope])
        assert isinstance(outcome, Retry) and "temporal" in outcome.reason
        assert dest.health().state == "degraded"
        assert ATTR not in broker.history.get("", {}).get(ENTITY, {})
        assert await dest.deliver([envelope]) == [None]  # the relay's retry, same body
        assert len(broker.history[""][ENTITY][ATTR]) == 1
        # A refusal (4xx) rejects the event, with the broker's reason.
        broker.temporal_fail_with = [400]
        other = prediction(4, "healthy", historical=True)
        (refused,) = await _send(dest, other)
        assert isinstance(refused, str) and "temporal API" in refused
        assert broker.tenant()[ENTITY][ATTR]["value"] == "bearing_fault"
    finally:
        await dest.close()
    _check(broker)


async def test_without_the_temporal_api_late_predictions_are_left_out(
    broker: NgsiLdBroker,
) -> None:
    dest = NgsiLdDestination("twin", settings(broker.url, temporal=False), DestinationContext("gw"))
    await dest.start()
    try:
        late = prediction(3, "healthy", historical=True)
        assert await _send(dest, prediction(10, "bearing_fault"), late) == [None, None]
    finally:
        await dest.close()
    assert broker.tenant()[ENTITY][ATTR]["value"] == "bearing_fault"
    assert broker.history == {}
    assert all(r.path == UPSERT for r in broker.requests)
    _check(broker)
