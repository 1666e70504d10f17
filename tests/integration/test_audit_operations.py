"""Operations become audit ledger entries in the transaction of the change, on a real store
(SQLite, PostgreSQL): alerts raised by the gateway's writers (label changes, lost predictions,
drift), acknowledged over a real REST server (an API key, or a console session), dead letters
replayed and purged over REST and from the CLI, and every send of a retraining webhook (real
relay, real HTTP receiver). Each test checks the entries (action, subject, actor, channel,
gateway, after) and that the chain verifies; a refused change (acknowledged twice, no such
alert or dead letter) leaves no entry, and a ledger that fails never stops a webhook."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from emptyview import EmptyView
from stores import BACKENDS, temp_store
from support import LOOPBACK, free_port, wait_until

from bridge import plugins
from bridge.api import ApiServices
from bridge.api.sessions import SESSION_COOKIE
from bridge.audit.verify import verify_chain
from bridge.auth import Scope
from bridge.cli import main
from bridge.cli.actor import cli_actor
from bridge.config.spec import ApiSettings
from bridge.console.app import create_gateway_app
from bridge.destination import DestinationContext
from bridge.drift.events import drift_event_id
from bridge.drift.monitor import DriftCrossing, FeatureWindowStats
from bridge.drift.webhookaudit import AuditedWebhook
from bridge.drift.writer import DriftAlertWriter
from bridge.errors import StoreError
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget
from bridge.outbox.wiring import feed_for
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.apiserver import ApiServer
from bridge.runtime.lossalerts import LOSS_LABEL, LossAlerts
from bridge.simulators.mes import MesReceiver
from bridge.store import Store, open_store
from bridge.store.alerts import Alert, AlertFilter, AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository, default_writer
from bridge.store.auditchain import AuditEntry, NewAuditEntry
from bridge.store.drift import DriftAlertRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.tables import DeadLetterRow
from bridge.types import Prediction, PredictionSlot, Quality

pytestmark = pytest.mark.timeout(60)

GATEWAY = "gw-audit"
LABELS = ("healthy", "bearing_fault", "cavitation")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "audit.db", prefix="bridge_auditops") as s:
        yield s


def entries(store: Store, action: str | None = None) -> list[AuditEntry]:
    return AuditRepository(store, GATEWAY).page(AuditFilter(action=action), 1000)


def assert_chain_verifies(store: Store) -> None:
    repo = AuditRepository(store, GATEWAY)
    result = verify_chain(repo.iter_entries(), repo.checkpoints())
    assert result.ok, result.problems
    assert result.entries == repo.count() > 0


def pred(asset: str, seq: int, value: str, ts: float) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value=value,
        score=0.75,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.1,
    )


async def raise_alerts(store: Store, assets: Sequence[str]) -> list[Alert]:
    """One label-change alert per asset, through the gateway's alert sink (one batch)."""
    slots = [PredictionSlot(a, "health", "1.0.0", "ab" * 32, LABELS) for a in assets]
    sink = AlertSink(AlertRepository(store, gateway=GATEWAY), slots)
    await sink.start()
    now = time.time()
    await sink.write([pred(a, 1, "bearing_fault", now - 60 + i) for i, a in enumerate(assets)])
    await sink.close()
    return sorted(AlertRepository(store).page(AlertFilter(), 100), key=lambda a: a.id)


# -- alerts raised ------------------------------------------------------------------------------


async def test_each_alert_raised_is_an_entry_of_its_batch_and_a_rewrite_adds_none(
    store: Store,
) -> None:
    alerts = await raise_alerts(store, ["p1", "p2", "p3"])
    assert len(alerts) == 3
    raised = entries(store, "alert.raised")
    assert [e.subject for e in raised] == [f"alert:{a.id}" for a in alerts]
    for entry, alert in zip(raised, alerts, strict=True):
        assert (entry.actor, entry.channel, entry.gateway) == ("system", "system", GATEWAY)
        assert entry.before is None
        assert entry.after == {
            "prediction_id": alert.prediction_id,
            "asset": alert.asset,
            "model": "health",
            "label": "bearing_fault",
            "previous": "healthy",
            "score": pytest.approx(alert.score),
            "raised_at": pytest.approx(alert.raised_at),
        }
    # A batch written again (its first commit's reply was lost) adds no alert and no entry.
    AlertRepository(store, gateway=GATEWAY).add_many(
        [
            NewAlert(a.prediction_id, a.asset, a.model, a.label, a.previous, a.score, a.raised_at)
            for a in alerts
        ]
    )
    assert len(AlertRepository(store).page(AlertFilter(), 100)) == 3
    assert len(entries(store, "alert.raised")) == 3
    assert_chain_verifies(store)


async def test_lost_predictions_raise_alerts_recorded_as_the_gateways(store: Store) -> None:
    loss = LossAlerts(AlertRepository(store, gateway=GATEWAY))
    await loss.start()
    loss.raise_for([pred(f"p{i}", 7, "healthy", time.time()) for i in range(4)], "queue full")
    await loss.close()
    raised = entries(store, "alert.raised")
    assert sorted(e.after["asset"] for e in raised) == ["p0", "p1", "p2", "p3"]
    assert {(e.actor, e.channel, e.gateway, e.after["label"]) for e in raised} == {
        ("system", "system", GATEWAY, LOSS_LABEL)
    }
    # A repository built by a command (no gateway given) names the host it runs on.
    assert AlertRepository(store).gateway == default_writer()
    assert_chain_verifies(store)


# -- acknowledgements over a real REST server ------------------------------------------------


@dataclass
class Served:
    url: str
    keys: dict[str, str]  # scope label -> key
    key_ids: dict[str, str]  # scope label -> key id

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture
async def served(store: Store) -> AsyncIterator[Served]:
    """The gateway's app (REST API and console) on a real uvicorn server over ``store``."""
    repo = ApiKeyRepository(store)
    keys, key_ids = {}, {}
    for scope in Scope:
        record, key = repo.create(f"{scope.label}-person", scope)
        keys[scope.label], key_ids[scope.label] = key, record.key_id
    settings = ApiSettings(host=LOOPBACK, port=free_port())
    app = create_gateway_app(ApiServices.from_store(EmptyView(GATEWAY), store, settings))
    server = ApiServer(app, settings.host, settings.port)
    await server.start()
    try:
        yield Served(server.url, keys, key_ids)
    finally:
        await server.stop()


async def test_an_acknowledgement_over_rest_is_an_entry_and_a_refused_one_is_not(
    store: Store, served: Served
) -> None:
    first, second = await raise_alerts(store, ["p1", "p2"])
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        r = await http.post(
            f"/api/v1/alerts/{first.id}/ack",
            json={"by": "Dana (shift B)", "comment": "bearing ordered"},
            headers=served.auth("operate"),
        )
        assert r.status_code == 200, r.text
        acked_at = AlertRepository(store).page(AlertFilter(acknowledged=True), 10)[0].acked_at
        count = len(entries(store))
        # Refused: acknowledged before (409), no such alert (404), too small a scope (403).
        again = await http.post(
            f"/api/v1/alerts/{first.id}/ack", json={"by": "Lee"}, headers=served.auth("admin")
        )
        assert again.status_code == 409, again.text
        missing = await http.post(
            "/api/v1/alerts/999999/ack", json={"by": "Lee"}, headers=served.auth("operate")
        )
        assert missing.status_code == 404, missing.text
        reader = await http.post(
            f"/api/v1/alerts/{second.id}/ack", json={"by": "Lee"}, headers=served.auth("read")
        )
        assert reader.status_code == 403, reader.text
    assert len(entries(store)) == count
    (entry,) = entries(store, "alert.acknowledged")
    assert entry.subject == f"alert:{first.id}"
    assert (entry.actor, entry.channel, entry.gateway) == (
        f"key:{served.key_ids['operate']}",
        "rest",
        GATEWAY,
    )
    assert entry.reason == "bearing ordered"
    assert entry.before == {"acknowledged": False}
    assert entry.after == {
        "acknowledged": True,
        "acked_by": "Dana (shift B)",
        "acked_at": pytest.approx(acked_at),
    }
    assert_chain_verifies(store)


async def test_an_acknowledgement_from_the_console_is_recorded_through_the_console(
    store: Store, served: Served
) -> None:
    (alert,) = await raise_alerts(store, ["p1"])
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        login = await http.post(
            "/console/login", data={"api_key": served.keys["operate"], "next": "/console/"}
        )
        assert login.status_code == 303, login.text
        cookie = {"Cookie": f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"}
        http.cookies.clear()  # each request below says which session it rides on
        page = await http.get("/console/alerts", headers=cookie)
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert found is not None, page.text[:500]
        r = await http.post(
            f"/api/v1/alerts/{alert.id}/ack",
            json={"by": "Dana", "comment": "seen on the console"},
            headers={**cookie, "X-CSRF-Token": found.group(1)},
        )
        assert r.status_code == 200, r.text
    (entry,) = entries(store, "alert.acknowledged")
    # The key the session logged in with acted; the channel says it was a console session.
    assert (entry.actor, entry.channel) == (f"key:{served.key_ids['operate']}", "console")
    assert (entry.subject, entry.reason) == (f"alert:{alert.id}", "seen on the console")
    assert_chain_verifies(store)


# -- dead letters ----------------------------------------------------------------------------


def bury(store: Store, destination: str, n: int) -> list[DeadLetterRow]:
    """``n`` dead letters of ``destination``, oldest first."""
    now = time.time()
    rows = [
        DeadLetterRow(
            destination=destination,
            asset=f"p{i % 3}",
            event_id=str(uuid.uuid4()),
            body="{}",
            created_at=now - 60,
            failed_at=now - 1,
            attempts=5,
            last_error="HTTP 422: unprocessable",
        )
        for i in range(n)
    ]
    with store.sessions.begin() as s:
        s.add_all(rows)
        s.flush()
        s.expunge_all()
    return rows


async def test_a_replay_and_a_purge_over_rest_are_entries_a_missing_id_is_not(
    store: Store, served: Served
) -> None:
    replayed, purged = bury(store, "mes", 2)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        r = await http.post(
            f"/api/v1/outbox/dead-letters/{replayed.id}/replay", headers=served.auth("operate")
        )
        assert r.status_code == 201, r.text
        r = await http.delete(
            f"/api/v1/outbox/dead-letters/{purged.id}", headers=served.auth("admin")
        )
        assert r.status_code == 200, r.text
        count = len(entries(store))
        for method, path in (
            ("POST", f"/api/v1/outbox/dead-letters/{replayed.id}/replay"),  # gone: replayed
            ("DELETE", f"/api/v1/outbox/dead-letters/{purged.id}"),  # gone: purged
        ):
            gone = await http.request(method, path, headers=served.auth("admin"))
            assert gone.status_code == 404, gone.text
    assert len(entries(store)) == count
    (replay,) = entries(store, "deadletter.replayed")
    assert (replay.subject, replay.actor, replay.channel, replay.gateway) == (
        "outbox:mes",
        f"key:{served.key_ids['operate']}",
        "rest",
        GATEWAY,
    )
    assert replay.after == {
        "count": 1,
        "ids": [replayed.id],
        "event_ids": [replayed.event_id],
        "requeued": 1,
    }
    (purge,) = entries(store, "deadletter.purged")
    assert (purge.subject, purge.actor, purge.channel) == (
        "outbox:mes",
        f"key:{served.key_ids['admin']}",
        "rest",
    )
    assert purge.after == {"count": 1, "ids": [purged.id], "event_ids": [purged.event_id]}
    assert [e.event_id for e in OutboxRepository(store).pending("mes")] == [replayed.event_id]
    assert_chain_verifies(store)


def test_the_cli_records_one_entry_per_destination_with_a_bounded_list_of_ids(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    open_store(url).dispose()
    store = open_store(url)
    try:
        mes = bury(store, "mes", 150)
        erp = bury(store, "erp", 2)
        runner = CliRunner()
        r = runner.invoke(main, ["outbox", "replay", "--store", url, "--destination", "erp"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(main, ["outbox", "purge", "--store", url, "--yes"])
        assert r.exit_code == 0, r.output
        assert "150 dead letter(s) purged" in r.output
        r = runner.invoke(main, ["outbox", "purge", "--store", url, "--yes"])  # none left
        assert r.exit_code == 0, r.output
        user = cli_actor()
        (replay,) = entries(store, "deadletter.replayed")
        assert (replay.subject, replay.actor, replay.channel, replay.gateway) == (
            "outbox:erp",
            user,
            "cli",
            default_writer(),
        )
        assert replay.after == {
            "count": 2,
            "ids": [d.id for d in erp],
            "event_ids": [d.event_id for d in erp],
            "requeued": 2,
        }
        (purge,) = entries(store, "deadletter.purged")  # the empty purge added nothing
        assert (purge.subject, purge.actor, purge.channel) == ("outbox:mes", user, "cli")
        # 150 purged, the first 100 named: an entry stays small whatever the purge's size.
        assert purge.after["count"] == 150
        assert purge.after["ids"] == [d.id for d in mes[:100]]
        assert purge.after["event_ids"] == [d.event_id for d in mes[:100]]
        assert_chain_verifies(store)
    finally:
        store.dispose()


# -- the retraining webhook -------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[MesReceiver]:
    mes = MesReceiver(port=free_port())
    await mes.start()
    try:
        yield mes
    finally:
        await mes.stop()


def crossing(asset: str, score: float) -> DriftCrossing:
    stats = FeatureWindowStats("vibration.last", score, 9.0, 1.0, 7.0, 11.0, 2.0, 0.5)
    return DriftCrossing(asset, score, 0.2, 50, ("vibration.last",), (stats,), time.time())


def relay_settings() -> RelaySettings:
    return RelaySettings(
        dead_letter_after=1,  # a rejected event is buried at once: one send, one entry
        reject_retry_s=0.05,
        max_retries=5,
        max_retry_age_s=60.0,
        idle_poll_s=0.01,
        rescan_s=0.05,
        stats_every_s=0.05,
        max_backoff_s=0.1,
        retry_initial_s=0.02,
    )


def webhook(url: str, ledger: AuditRepository) -> AuditedWebhook:
    """The model's retraining webhook as the gateway builds it: the ``webhook`` connector
    (through the registry) wrapped so its sends are recorded."""
    kind = plugins.destination_kinds()["webhook"]
    settings = kind.settings_model.model_validate(
        {"url": url, "initial_backoff_s": 0.02, "max_backoff_s": 0.1}
    )
    inner = kind.factory("webhook-pump-health", settings, DestinationContext(GATEWAY))
    return AuditedWebhook(inner, "pump-health", url, ledger)


async def test_each_send_of_the_retraining_webhook_is_an_entry_with_its_answer(
    store: Store, receiver: MesReceiver
) -> None:
    drifted, refused = crossing("pump-03", 0.61), crossing("pump-07", 0.45)
    receiver.reject_keys([drift_event_id(GATEWAY, "pump-health", "pump-07", refused.at)])
    receiver.fail(503, count=2)  # two answers to retry, then accepted
    # Credentials in the URL (userinfo, a token in the query) never reach the ledger.
    url = receiver.events_url.replace("http://", "http://robot:s3cret@") + "?token=t0ken"
    hook = webhook(url, AuditRepository(store, GATEWAY))
    feed = feed_for(hook, Budget(100))
    relay = Relay(hook, OutboxRepository(store, holder=GATEWAY), feed, relay_settings())
    writer = DriftAlertWriter(DriftAlertRepository(store, gateway=GATEWAY), GATEWAY)
    await writer.start()
    await hook.start()
    await relay.start()
    try:
        writer.raise_crossing("pump-health", "2.0.0", "cd" * 32, drifted, feed)
        await wait_until(lambda: relay.delivered == 1, 20, what="the webhook delivered")
        # After it, so the two 503 answers went to the first one.
        writer.raise_crossing("pump-health", "2.0.0", "cd" * 32, refused, feed)
        await wait_until(lambda: relay.dead_lettered == 1, 20, what="the refused one buried")
        await wait_until(lambda: hook.recorded == 4, 10, what="four sends recorded")
    finally:
        await relay.close()
        await hook.close()
        await writer.close()
    accepted = [c for c in receiver.calls if c.body["asset"] == "pump-03"]
    assert len(accepted) == 1
    key = accepted[0].idempotency_key
    raised = {e.after["asset"]: e for e in entries(store, "alert.raised")}
    assert {(e.actor, e.gateway, e.after["label"]) for e in raised.values()} == {
        ("system", GATEWAY, "drift")
    }
    assert raised["pump-03"].after["prediction_id"] == key
    fired = entries(store, "webhook.fired")
    host = f"127.0.0.1:{receiver.port}"
    sent = {
        "host": host,
        "event_id": key,
        "asset": "pump-03",
        "drift_score": pytest.approx(0.61),
    }
    assert [e.after for e in fired if e.after["asset"] == "pump-03"] == [
        {**sent, "status": "retry", "http_status": 503},
        {**sent, "status": "retry", "http_status": 503},
        {**sent, "status": "accepted"},
    ]
    assert [e.after for e in fired if e.after["asset"] == "pump-07"] == [
        {
            "host": host,
            "event_id": raised["pump-07"].after["prediction_id"],
            "asset": "pump-07",
            "drift_score": pytest.approx(0.45),
            "status": "rejected",
            "http_status": 422,
        }
    ]
    for e in fired:
        assert (e.subject, e.actor, e.channel, e.gateway) == (
            "model:pump-health",
            "system",
            "system",
            GATEWAY,
        )
        assert "s3cret" not in str(e.after) and "t0ken" not in str(e.after)
    assert_chain_verifies(store)


class FailingLedger(AuditRepository):
    """A ledger whose store refuses every append (full disk, lost database)."""

    def append(self, entry: NewAuditEntry, at: float | None = None) -> AuditEntry:
        raise StoreError("cannot append to the audit ledger: disk I/O error")


async def test_a_failing_ledger_never_stops_the_webhook(
    tmp_path: Path, receiver: MesReceiver
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'hook.db'}")
    try:
        receiver.fail(503, count=1)  # a send to retry, then accepted: two sends, two failures
        hook = webhook(receiver.events_url, FailingLedger(store, GATEWAY))
        feed = feed_for(hook, Budget(100))
        relay = Relay(hook, OutboxRepository(store), feed, relay_settings())
        with store.sessions.begin() as s:
            done = feed.stage_event(s, "p1", str(uuid.uuid4()), '{"score": 0.5}')
        done()
        await hook.start()
        await relay.start()
        try:
            await wait_until(lambda: relay.delivered == 1, 20, what="the event delivered")
            await wait_until(lambda: hook.failures == 2, 10, what="both failures counted")
        finally:
            await relay.close()
            await hook.close()
        assert len(receiver.calls) == 1
        assert hook.health().counters["audit_failures"] == 2
        assert AuditRepository(store, GATEWAY).count() == 0
    finally:
        store.dispose()
