"""Event rules, payload templates and batch mode, end to end: mapping -> store writer (rules run
in the prediction transaction) -> outbox -> relays -> real MES receivers over HTTP, on SQLite
and on the PostgreSQL of this machine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from outbox_harness import Durable, prediction, received_in_order
from stores import BACKENDS, temp_store
from support import free_port, wait_until

from bridge.config.loader import load_mapping
from bridge.config.spec import OutboxSettings
from bridge.destination import DestinationContext
from bridge.drift.events import drift_event_id
from bridge.drift.monitor import DriftCrossing, FeatureWindowStats
from bridge.drift.writer import DriftAlertWriter
from bridge.outbox.wiring import durable_outputs
from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store
from bridge.store.drift import DriftAlertRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import Prediction, PredictionSlot, Quality

pytestmark = pytest.mark.timeout(90)

LABELS = ("healthy", "bearing_fault", "cavitation")
GATEWAY = "gw-rules"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    with temp_store(backend, tmp_path, "outbox.db", prefix="bridge_outbox") as s:
        yield s


@pytest.fixture
async def receivers() -> AsyncIterator[list[MesReceiver]]:
    made = [MesReceiver(port=free_port()) for _ in range(2)]
    try:
        yield made
    finally:
        for r in made:
            await r.stop()


def pred(asset: str, seq: int, label: str, score: float) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=label,
        score=score,
        quality=Quality.GOOD,
        timestamp=1714564800.0 + seq,
        input_age_s=0.1,
    )


MAPPING = """\
version: 1
gateway: {{id: {gateway}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets: {{}}
outputs:
  changes:
    kind: mes-rest
    url: {changes_url}
    headers: {{Authorization: "Bearer ${{MES_TOKEN}}"}}
    initial_backoff_s: 0.02
    max_backoff_s: 0.2
    events: [label_change]
    template:
      machine: "{{asset}}"
      state: "{{value}}"
      was: "{{previous}}"
      confidence: "{{score}}"
      text: "{{asset}} went from {{previous}} to {{value}}"
      meta: {{source: bridge, kind: "{{event}}"}}
  limits:
    kind: mes-rest
    url: {limits_url}
    initial_backoff_s: 0.02
    max_backoff_s: 0.2
    batch_size: 4
    events:
      - threshold: {{field: score, above: 0.8, hysteresis: 0.1, notify_clear: true}}
"""


async def test_two_destinations_each_with_its_rules_template_auth_and_backlog(
    store: Store, receivers: list[MesReceiver], tmp_path: Path
) -> None:
    changes, limits = receivers
    await changes.start()
    limits.port = free_port()  # the second MES is down for the first half: connection refused
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            gateway=GATEWAY, changes_url=changes.events_url, limits_url=limits.events_url
        )
    )
    mapping = load_mapping(path, env={"MES_TOKEN": "s3cret"})
    slots = tuple(PredictionSlot(a, "health", "1.0.0", "ab" * 32, LABELS) for a in ("p1", "p2"))
    settings = OutboxSettings(reject_retry_s=0.05)
    context = DestinationContext(GATEWAY, slots)
    durable = durable_outputs(mapping.outputs.values(), context, OutboxRepository(store), settings)
    writer = StoreSink(store, outbox=durable.feeds, batch_size=3)
    await writer.start()
    await durable.start()
    try:
        labels = ["healthy", "bearing_fault", "bearing_fault", "healthy", "healthy", "cavitation"]
        scores = [0.5, 0.85, 0.9, 0.75, 0.6, 0.95]
        batch = [
            pred(a, i, label, score)
            for i, (label, score) in enumerate(zip(labels, scores, strict=True))
            for a in ("p1", "p2")
        ]
        for i in range(0, len(batch), 4):  # several transactions: rule state carries over
            await writer.write(batch[i : i + 4])
        await wait_until(lambda: len(changes.calls) == 6, 15, what="6 label changes")
        by_relay = {r.destination.name: r for r in durable.relays}
        await wait_until(
            lambda: by_relay["limits"].health().counters["backlog"] == 6, 5, what="limits backlog"
        )
        # The down MES holds back only its own destination.
        assert by_relay["changes"].health().counters["backlog"] == 0
        assert by_relay["limits"].health().state == "degraded"

        bodies = [c.body for c in changes.calls if c.body["machine"] == "p1"]
        assert bodies == [
            {
                "machine": "p1",
                "state": state,
                "was": was,
                "confidence": score,  # a leaf that is one placeholder keeps its type
                "text": f"p1 went from {was} to {state}",
                "meta": {"source": "bridge", "kind": "label_change"},
            }
            for state, was, score in [
                ("bearing_fault", "healthy", 0.85),
                ("healthy", "bearing_fault", 0.75),
                ("cavitation", "healthy", 0.95),
            ]
        ]
        assert {c.authorization for c in changes.calls} == {"Bearer s3cret"}
        assert {c.idempotency_key for c in changes.calls} == {
            pred(a, i, "", 0).id for a in ("p1", "p2") for i in (1, 3, 5)
        }

        await limits.start()  # back: the backlog drains in batches of up to 4
        await wait_until(lambda: len(limits.calls) == 6, 15, what="6 threshold events")
        crossings = [
            (c.body["asset"], c.body["seq"], c.body["threshold"]["crossing"]) for c in limits.calls
        ]
        # 0.85 enters, 0.9 stays, 0.75 is inside the hysteresis band, 0.6 clears, 0.95 enters.
        for asset in ("p1", "p2"):
            assert [(s, c) for a, s, c in crossings if a == asset] == [
                (1, "enter"),
                (4, "clear"),
                (5, "enter"),
            ]
        assert all(c.body["event"] == "threshold" for c in limits.calls)
        assert limits.duplicate_count == 0 and changes.duplicate_count == 0
    finally:
        await durable.close()
        await writer.close()


async def test_rules_resume_from_the_stored_predictions_after_a_restart(
    store: Store, receivers: list[MesReceiver], tmp_path: Path
) -> None:
    changes, limits = receivers
    await changes.start()
    await limits.start()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            gateway=GATEWAY, changes_url=changes.events_url, limits_url=limits.events_url
        )
    )
    mapping = load_mapping(path, env={"MES_TOKEN": "t"})
    slots = (PredictionSlot("p1", "health", "1.0.0", "ab" * 32, LABELS),)

    async def run_gateway(batch: list[Prediction], until: int, limits_until: int) -> None:
        context = DestinationContext(GATEWAY, slots)
        durable = durable_outputs(
            mapping.outputs.values(), context, OutboxRepository(store), OutboxSettings()
        )
        writer = StoreSink(store, outbox=durable.feeds)
        await writer.start()
        await durable.start()
        try:
            await writer.write(batch)
            await wait_until(lambda: len(changes.calls) == until, 15, what=f"{until} changes")
            # Both relays run only inside this block: wait for each destination here.
            await wait_until(
                lambda: len(limits.calls) == limits_until,
                15,
                what=f"{limits_until} threshold events",
            )
            await wait_until(lambda: writer.health().counters["written"] == len(batch), 5)
        finally:
            await durable.close()
            await writer.close()

    await run_gateway([pred("p1", 0, "healthy", 0.1), pred("p1", 1, "cavitation", 0.9)], 1, 1)
    # A new gateway process: the same label again is no change, the next one is.
    await run_gateway([pred("p1", 2, "cavitation", 0.95), pred("p1", 3, "healthy", 0.1)], 2, 2)
    assert [c.body["state"] for c in changes.calls] == ["cavitation", "healthy"]
    assert [c.body["was"] for c in changes.calls] == ["healthy", "cavitation"]
    # Threshold: entered once (seq 1), stayed above across the restart, cleared at seq 3.
    assert [(c.body["seq"], c.body["threshold"]["crossing"]) for c in limits.calls] == [
        (1, "enter"),
        (3, "clear"),
    ]


# -- batch mode --------------------------------------------------------------------------------


async def test_batch_mode_through_an_outage_delivers_each_event_once_in_order(
    store: Store, receivers: list[MesReceiver]
) -> None:
    mes = receivers[0]
    g = Durable(store, mes.events_url, mes_batch_size=4, batch_size=50)
    try:
        await g.start()
        assets = [f"p{i}" for i in range(7)]
        written = dict.fromkeys(assets, 0)

        async def flow(rounds: int) -> None:
            for _ in range(rounds):  # a steady rate: one prediction per asset every 20 ms
                await g.write([prediction(a, written[a]) for a in assets])
                for a in assets:
                    written[a] += 1
                await asyncio.sleep(0.02)

        await flow(10)  # connection refused
        await wait_until(lambda: g.relay.health().state == "degraded", 5, what="degraded")
        mes.fail(500)
        await mes.start()
        await flow(10)  # 500s for whole batches
        await wait_until(lambda: g.relay.health().counters["backlog"] > 0, 5, what="backlog")
        assert mes.calls == []
        mes.recover()
        await flow(10)
        total = sum(written.values())
        await wait_until(lambda: len(mes.unique_keys) >= total, 30, what="all delivered")
        await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
        keys = [c.idempotency_key for c in mes.calls]
        assert len(keys) == len(set(keys)) == total
        assert set(keys) == {prediction(a, s).id for a in assets for s in range(30)}
        assert received_in_order(mes.calls) == {a: list(range(30)) for a in assets}
        assert g.mes.health().counters["retries"] > 0
    finally:
        await g.close()


async def test_batch_mode_lost_replies_and_a_poison_event_dead_lettered_alone(
    store: Store, receivers: list[MesReceiver]
) -> None:
    mes = receivers[0]
    await mes.start()
    poison = prediction("p1", 1)
    mes.reject_keys([poison.id], 422)
    g = Durable(store, mes.events_url, mes_batch_size=3, timeout_s=0.3, dead_letter_after=2)
    try:
        mes.set_delay(0.6)  # the MES records each batch, but every reply is lost at first
        await g.start()
        await g.write([prediction(a, s) for s in range(4) for a in ("p1", "p2", "p3")])
        await wait_until(lambda: len(mes.calls) >= 1, 10, what="first batch recorded")
        mes.set_delay(0)
        await wait_until(lambda: len(mes.calls) == 11, 20, what="the 11 good events")
        await wait_until(lambda: g.backlog() == 0, 10, what="outbox empty")
        assert mes.duplicate_count >= 1  # resent after the lost reply, ignored per event
        assert received_in_order(mes.calls) == {
            "p1": [0, 2, 3],
            "p2": [0, 1, 2, 3],
            "p3": [0, 1, 2, 3],
        }
        dead = g.repo.dead_letters("mes")
        assert [(d.event_id, d.attempts) for d in dead] == [(poison.id, 2)]
        assert "422" in dead[0].last_error
        mes.accept_keys()
        assert g.repo.replay("mes") == 1
        await wait_until(lambda: len(mes.calls) == 12, 10, what="replayed event")
        assert mes.calls[-1].idempotency_key == poison.id
        assert len({c.idempotency_key for c in mes.calls}) == 12
    finally:
        await g.close()


async def test_a_batch_reply_that_is_not_understood_is_retried_not_taken_as_accepted(
    store: Store, receivers: list[MesReceiver]
) -> None:
    mes = receivers[0]
    await mes.start()
    mes.answer_garbage(True)  # 200, but a body that is not the batch contract
    g = Durable(store, mes.events_url, mes_batch_size=5)
    try:
        await g.start()
        await g.write([prediction("p1", s) for s in range(3)])
        await wait_until(lambda: g.mes.health().counters["retries"] >= 2, 10, what="retries")
        assert "batch reply not understood" in g.mes.health().detail
        assert g.backlog() == 3  # nothing was taken as delivered
        mes.answer_garbage(False)
        await wait_until(lambda: g.backlog() == 0, 10, what="delivered once understood")
        assert received_in_order(mes.calls) == {"p1": [0, 1, 2]}
    finally:
        await g.close()


DRIFT_MAPPING = """\
version: 1
gateway: {{id: {gateway}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets: {{}}
outputs:
  alarms:
    kind: mes-rest
    url: {alarms_url}
    initial_backoff_s: 0.02
    events: [alerts]
    template:
      machine: "{{asset}}"
      kind: "{{event}}"
      key: "{{id}}"
      psi: "{{drift_score}}"
      limit: "{{drift_threshold}}"
      inputs: "{{drifting_features}}"
      window: "{{drift_window}}"
      text: "{{asset}} drifts in {{drifting_features}} since {{raised_at}}"
      last: "{{value}}"
  changes:
    kind: mes-rest
    url: {changes_url}
    initial_backoff_s: 0.02
    events: [label_change]
"""


async def test_drift_events_follow_each_destinations_rules_and_template(
    store: Store, receivers: list[MesReceiver], tmp_path: Path
) -> None:
    alarms, changes = receivers
    for r in receivers:
        await r.start()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        DRIFT_MAPPING.format(
            gateway=GATEWAY, alarms_url=alarms.events_url, changes_url=changes.events_url
        )
    )
    mapping = load_mapping(path)
    slots = (PredictionSlot("p1", "health", "1.0.0", "ab" * 32, LABELS),)
    context = DestinationContext(GATEWAY, slots)
    durable = durable_outputs(
        mapping.outputs.values(), context, OutboxRepository(store), OutboxSettings()
    )
    writer = DriftAlertWriter(DriftAlertRepository(store), GATEWAY, durable.alert_feeds)
    stats = FeatureWindowStats("vib.mean", 1.7, 6.0, 0.5, 5.0, 7.0, 2.0, 0.3)
    crossing = DriftCrossing("p1", 1.7, 0.25, 60, ("vib.mean",), (stats,), 1714564800.0)
    await durable.start()
    await writer.start()
    try:
        latest = pred("p1", 7, "healthy", 0.9)
        writer.raise_crossing("health", "1.0.0", "ab" * 32, crossing, None, latest)
        await wait_until(lambda: len(alarms.calls) == 1, 15, what="the drift event")
        await wait_until(lambda: writer.counters["stored"] == 1, 5, what="the drift alert")
        [call] = alarms.calls
        event_id = drift_event_id(GATEWAY, "health", "p1", crossing.at)
        assert call.idempotency_key == event_id
        assert call.body == {
            "machine": "p1",
            "kind": "drift",
            "key": event_id,
            "psi": 1.7,
            "limit": 0.25,
            "inputs": ["vib.mean"],
            "window": {
                "rows": 60,
                "features": {
                    "vib.mean": {
                        "psi": 1.7,
                        "mean": 6.0,
                        "std": 0.5,
                        "min": 5.0,
                        "max": 7.0,
                        "reference_mean": 2.0,
                        "reference_std": 0.3,
                    }
                },
            },
            "text": 'p1 drifts in ["vib.mean"] since 2024-05-01T12:00:00.000Z',
            "last": "healthy",
        }
        # `label_change` only: no event was queued for it (a queued one would be pending or,
        # given the relay's time to send it, at the receiver).
        assert [f.destination for f in durable.alert_feeds] == ["alarms"]
        assert OutboxRepository(store).pending_count("changes") == 0
        await asyncio.sleep(0.3)
        assert changes.calls == []
    finally:
        await writer.close()
        await durable.close()
