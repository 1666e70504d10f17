"""Retention on real stores (an SQLite file in WAL mode, a PostgreSQL schema): rows past their
retention go in batches, newer rows, undelivered outbox events and dead letters stay, the store
writer keeps committing while a large delete runs, and a low disk degrades health, raises one
alert per episode and deletes history before predictions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, insert, select, text
from stores import BACKENDS, temp_store
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.config.spec import GatewaySettings, RetentionSettings
from bridge.drift.events import DRIFT_LABEL
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.runtime.retention import DISK_LOW_LABEL, RetentionJob, retention_for
from bridge.store.alerts import Alert, AlertFilter, AlertRepository, AlertRow
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.history import PredictionHistory
from bridge.store.labels import PredictionLabelRow
from bridge.store.registry import ComparisonRow
from bridge.store.retention import RetentionStore
from bridge.store.sink import StoreSink
from bridge.store.tables import DeadLetterRow, OutboxAcceptedRow, OutboxRow, PredictionRow
from bridge.types import Prediction, Quality

DAY = 86400.0
NOW = 1_800_000_000.0  # the job's clock: rows are placed relative to it
MIB = 1024 * 1024


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, prefix="bridge_retention") as s:
        yield s


def _uid() -> str:
    return str(uuid.uuid4())


def prediction_values(ts: float, asset: str = "p1") -> dict[str, Any]:
    return {
        "prediction_id": _uid(),
        "seq": 1,
        "asset": asset,
        "model": "health",
        "version": "1",
        "sha256": "ab" * 32,
        "value_text": "ok",
        "quality": "Good",
        "reason": "",
        "timestamp": ts,
        "inputs_json": "[]",
    }


def comparison(ts: float) -> dict[str, Any]:
    return {
        "name": "health",
        "asset": "p1",
        "mode": "shadow",
        "active_version": "1",
        "candidate_version": "2",
        "prediction_id": _uid(),
        "agree": True,
        "timestamp": ts,
        "gateway": "g",
    }


def alert(ts: float, label: str = "fault") -> dict[str, Any]:
    return {
        "prediction_id": _uid(),
        "asset": "p1",
        "model": "health",
        "label": label,
        "previous": "ok",
        "raised_at": ts,
    }


def label(ptime: float) -> dict[str, Any]:
    return {
        "prediction_id": _uid(),
        "asset": "p1",
        "model": "health",
        "action": "confirm",
        "by": "op",
        "channel": "api",
        "comment": "",
        "prediction_time": ptime,
        "at": ptime + 60,
    }


def outbox(ts: float) -> dict[str, Any]:
    return {
        "destination": "mes",
        "asset": "p1",
        "event_id": _uid(),
        "body": "{}",
        "created_at": ts,
    }


def dead(ts: float) -> dict[str, Any]:
    return {**outbox(ts), "failed_at": ts, "attempts": 3, "last_error": "400"}


def add(store: Store, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    with store.sessions.begin() as session:
        session.execute(insert(table), list(rows))


def count(store: Store, column: Any, *where: Any) -> int:
    with store.sessions() as session:
        return int(session.execute(select(func.count(column)).where(*where)).scalar_one())


def job(
    store: Store,
    settings: RetentionSettings,
    *,
    free_disk: Any = None,
    on_batch: Any = None,
) -> RetentionJob:
    return RetentionJob(
        RetentionStore(store, DRIFT_LABEL),
        settings,
        AlertRepository(store),
        "gw",
        free_disk=free_disk,
        where="/test",
        clock=lambda: NOW,
        on_batch=on_batch,
    )


async def test_old_rows_go_in_batches_and_newer_rows_undelivered_events_dead_letters_stay(
    store: Store,
) -> None:
    add(store, PredictionRow.__table__, [prediction_values(NOW - 40 * DAY - i) for i in range(250)])
    add(store, PredictionRow.__table__, [prediction_values(NOW - 29 * DAY - i) for i in range(5)])
    add(store, ComparisonRow.__table__, [comparison(NOW - 31 * DAY), comparison(NOW - DAY)])
    add(store, PredictionLabelRow.__table__, [label(NOW - 400 * DAY), label(NOW - 300 * DAY)])
    add(
        store,
        AlertRow.__table__,
        [
            alert(NOW - 366 * DAY),
            alert(NOW - 100 * DAY),
            alert(NOW - 91 * DAY, DRIFT_LABEL),
            alert(NOW - 80 * DAY, DRIFT_LABEL),
        ],
    )
    # Undelivered events and dead letters, however old, are never retention's to delete.
    add(store, OutboxRow.__table__, [outbox(NOW - 500 * DAY) for _ in range(3)])
    add(store, DeadLetterRow.__table__, [dead(NOW - 500 * DAY)])
    with store.sessions() as session:
        waiting = int(session.execute(select(func.min(OutboxRow.id))).scalar_one())
    # Delivered-event notes: one whose row is gone (history), one whose row still waits to be
    # cleared by the relay (deleting it would resend the event after a crash), one recent.
    add(
        store,
        OutboxAcceptedRow.__table__,
        [
            {"row_id": 10**9, "destination": "mes", "accepted_at": NOW - 8 * DAY},
            {"row_id": waiting, "destination": "mes", "accepted_at": NOW - 8 * DAY},
            {"row_id": 10**9 + 1, "destination": "mes", "accepted_at": NOW - DAY},
        ],
    )
    batches: list[tuple[str, int]] = []

    async def on_batch(key: str, n: int) -> None:
        batches.append((key, n))

    settings = RetentionSettings(batch_rows=100, pause_s=0)
    deleted = await job(store, settings, on_batch=on_batch).run_once()

    assert [n for k, n in batches if k == "predictions"] == [100, 100, 50]
    assert deleted == {
        "outbox_history": 1,
        "comparisons": 1,
        "drift": 1,
        "alerts": 1,
        "labels": 1,
        "action_events": 0,
        "predictions": 250,
    }
    assert count(store, PredictionRow.id) == 5
    assert count(store, PredictionRow.id, PredictionRow.timestamp < NOW - 30 * DAY) == 0
    assert count(store, ComparisonRow.id) == 1
    assert count(store, PredictionLabelRow.id) == 1
    assert count(store, AlertRow.id, AlertRow.label == DRIFT_LABEL) == 1
    assert count(store, AlertRow.id, AlertRow.label != DRIFT_LABEL) == 1
    assert count(store, OutboxRow.id) == 3
    assert count(store, DeadLetterRow.id) == 1
    with store.sessions() as session:
        notes = set(session.execute(select(OutboxAcceptedRow.row_id)).scalars())
    assert notes == {waiting, 10**9 + 1}
    # A second run finds nothing more.
    again = await job(store, settings).run_once()
    assert sum(again.values()) == 0


def _prediction(i: int, ts: float) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"retention-test/{i}")),
        seq=i,
        asset=f"p{i % 20}",
        model="health",
        version="1",
        sha256="ab" * 32,
        value="ok",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.1,
    )


@pytest.mark.timeout(300)
async def test_the_store_writer_keeps_committing_while_a_large_delete_runs(store: Store) -> None:
    old = 200_000
    chunk = 20_000
    for start in range(0, old, chunk):
        add(
            store,
            PredictionRow.__table__,
            [prediction_values(NOW - 40 * DAY - start - i) for i in range(chunk)],
        )
    sink = StoreSink(store, batch_size=50)
    await sink.start()
    produced = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal produced
        while not stop.is_set():
            await sink.write([_prediction(produced + k, NOW - k) for k in range(10)])
            produced += 10
            await asyncio.sleep(0.002)

    # The writer's committed rows, read at each batch of the delete.
    seen: list[int] = []

    async def on_batch(key: str, n: int) -> None:
        seen.append(sink.health().counters["written"])

    producer = asyncio.create_task(produce())
    try:
        settings = RetentionSettings(batch_rows=5000, pause_s=0.05)
        started = time.monotonic()
        deleted = await job(store, settings, on_batch=on_batch).run_once()
        took = time.monotonic() - started
    finally:
        stop.set()
        await producer
        await sink.close()

    assert deleted["predictions"] == old
    assert len(seen) == old // 5000
    # Commits land between the delete's batches, not only after it: the delete never holds
    # the store for its whole run.
    gaps_with_commits = sum(1 for a, b in itertools.pairwise(seen) if b > a)
    assert gaps_with_commits >= (len(seen) - 1) // 2, (seen, took)
    counters = sink.health().counters
    assert counters["dropped"] == 0
    assert counters["written"] == produced
    assert count(store, PredictionRow.id) == produced


def low_disk_alerts(store: Store) -> list[Alert]:
    return [a for a in AlertRepository(store).page(AlertFilter(), 10) if a.label == DISK_LOW_LABEL]


class Disk:
    """An injectable free-disk reading."""

    def __init__(self, free_mib: int, total_mib: int = 100_000) -> None:
        self.free_mib = free_mib
        self.total_mib = total_mib

    def __call__(self) -> tuple[int, int]:
        return self.free_mib * MIB, self.total_mib * MIB


async def test_low_disk_degrades_health_raises_one_alert_and_deletes_history_first(
    store: Store,
) -> None:
    disk = Disk(free_mib=50_000)
    batches: list[str] = []

    async def on_batch(key: str, n: int) -> None:
        batches.append(key)

    settings = RetentionSettings(min_free_mib=1024, min_free_percent=2, batch_rows=100)
    retention = job(store, settings, free_disk=disk, on_batch=on_batch)
    add(
        store,
        PredictionRow.__table__,
        [prediction_values(NOW - 2 * DAY), prediction_values(NOW - 10 * DAY)],
    )
    add(store, ComparisonRow.__table__, [comparison(NOW - 2 * DAY), comparison(NOW - 10 * DAY)])
    add(store, AlertRow.__table__, [alert(NOW - 2 * DAY, DRIFT_LABEL)])
    add(
        store,
        OutboxAcceptedRow.__table__,
        [{"row_id": 10**9, "destination": "mes", "accepted_at": NOW - 2 * DAY}],
    )

    await retention.start()  # health is "ok" only while the worker runs
    try:
        # Its first pass: the disk is fine, nothing is old enough; then it sleeps for
        # disk_check_s (60 s), and the test drives the checks and runs itself.
        await wait_until(lambda: retention.counters["runs"] == 1, what="the first run")
        assert retention.health().state == "ok"
        assert retention.health().counters["free_mib"] == 50_000
        assert batches == []

        disk.free_mib = 900  # below min_free_mib
        assert await retention.check_disk() is True
        assert await retention.check_disk() is False  # the same episode
        health = retention.health()
        assert health.state == "degraded"
        assert "min_free_mib" in health.detail and "900 MiB" in health.detail
        assert health.counters["free_mib"] == 900
        alerts = [
            a for a in AlertRepository(store).page(AlertFilter(), 10) if a.label == DISK_LOW_LABEL
        ]
        assert len(alerts) == 1 and alerts[0].asset == "gw"

        # A prediction just past its retention shows the order: history first.
        add(store, PredictionRow.__table__, [prediction_values(NOW - 31 * DAY)])
        deleted = await retention.run_once()
        assert deleted["comparisons"] == 2 and deleted["drift"] == 1
        assert deleted["outbox_history"] == 1 and deleted["predictions"] == 1
        assert batches == ["outbox_history", "comparisons", "drift", "predictions"]
        # Predictions within their retention stay, whatever the disk.
        assert count(store, PredictionRow.id) == 2

        disk.free_mib = 1100  # above the threshold but within the margin: still low
        assert await retention.check_disk() is False
        assert retention.health().state == "degraded"
        disk.free_mib = 5000
        await retention.check_disk()
        assert retention.health().state == "ok"
        disk.free_mib, disk.total_mib = 10_000, 1_000_000  # 1 % free: below min_free_percent
        assert await retention.check_disk() is True
        assert len(low_disk_alerts(store)) == 2
    finally:
        await retention.close()
    assert retention.health().state == "stopped"


async def test_the_gateway_job_reads_the_disk_of_the_sqlite_folder(tmp_path: Path) -> None:
    with temp_store("sqlite", tmp_path, "store.db") as store:
        gateway = GatewaySettings(
            store=f"sqlite:///{tmp_path / 'store.db'}",
            retention=RetentionSettings(min_free_mib=0, min_free_percent=0),
        )
        retention = retention_for(gateway, store)
        assert await retention.check_disk() is False
        assert retention.health().counters["free_mib"] > 0
        pg = retention_for(GatewaySettings(store="postgresql://h/db"), store)
        assert await pg.check_disk() is False
        assert pg.health().counters["free_mib"] == -1  # nothing watched


def test_a_page_of_predictions_reads_the_timestamp_index(tmp_path: Path) -> None:
    """GET /predictions without an asset: newest first by (timestamp, id). Without an index
    SQLite sorts the whole table for every page (2.4 s at 1M rows)."""
    with temp_store("sqlite", tmp_path) as store, store.engine.connect() as conn:
        plan = conn.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT * FROM predictions WHERE timestamp <= 5 "
                "ORDER BY timestamp DESC, id DESC LIMIT 101"
            )
        ).all()
        detail = " ".join(str(row[-1]) for row in plan)
        assert "ix_predictions_timestamp" in detail
        assert "TEMP B-TREE" not in detail
        plan = conn.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT id FROM predictions WHERE model = 'm' AND version = '1'"
            )
        ).all()
        assert "ix_predictions_model_version" in " ".join(str(row[-1]) for row in plan)


GATEWAY_MAPPING = """
version: 1
gateway:
  id: ret
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  retention: {{min_free_percent: 99.99, disk_check_s: 0.2}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}"}}
assets:
  pump:
    tags:
      speed: {{source: plant, address: "nsu=urn:t;s=Speed"}}
"""


@pytest.mark.timeout(60)
async def test_the_gateway_reports_a_low_disk_in_health_and_raises_one_alert(
    tmp_path: Path,
) -> None:
    """The running gateway reads the real disk of its SQLite folder; a threshold of 99.99 %
    free makes any real disk low."""
    db = tmp_path / "gw.db"
    api = free_port()
    path = tmp_path / "mapping.yaml"
    path.write_text(GATEWAY_MAPPING.format(store=db, api=api, plant=free_port()))
    with temp_store("sqlite", tmp_path, "gw.db") as store:
        key = ApiKeyRepository(store).create("t", Scope.READ)[1]
        stop = asyncio.Event()
        gateway = asyncio.create_task((await build_gateway(prepare(path))).run(stop))
        try:
            headers = {"X-API-Key": key}
            url = f"http://127.0.0.1:{api}"
            part: dict[str, Any] = {}
            async with httpx.AsyncClient(base_url=url, timeout=5, headers=headers) as http:

                async def first_run_done() -> bool:
                    nonlocal part
                    with contextlib.suppress(httpx.TransportError):
                        health = (await http.get("/api/v1/health")).json()
                        part = {c["name"]: c for c in health["components"]}["retention"]
                    return bool(part) and part["counters"]["runs"] >= 1

                # The check raises the alert, then the job's first run follows.
                await wait_until(first_run_done, timeout=20, what="the first run")
            assert part["state"] == "degraded"
            assert "min_free_percent" in part["detail"]
            assert len(low_disk_alerts(store)) == 1
            await asyncio.sleep(0.6)  # a few more checks: the same episode, no new alert
            assert len(low_disk_alerts(store)) == 1
        finally:
            stop.set()
            await asyncio.wait_for(gateway, 20)


def test_a_page_deep_in_the_history_seeks_its_cursor_in_the_index(tmp_path: Path) -> None:
    """The page after a cursor must start at the cursor, not scan the index from the newest
    row down to it (measured: 454 ms for a page in the middle of 10M rows)."""
    with temp_store("sqlite", tmp_path) as store:
        add(store, PredictionRow.__table__, [prediction_values(NOW - i) for i in range(300)])
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, sql: str, params: Any, *_: Any) -> None:
            if sql.lstrip().upper().startswith("SELECT") and "predictions" in sql:
                statements.append((sql, params))

        event.listen(store.engine, "before_cursor_execute", capture)
        try:
            first = PredictionHistory(store).page(None, None, None, 100)
            assert first.next_key is not None
            second = PredictionHistory(store).page(None, None, None, 100, after=first.next_key)
        finally:
            event.remove(store.engine, "before_cursor_execute", capture)
        assert [p.timestamp for p in second.items] == [NOW - i for i in range(100, 200)]
        sql, params = statements[-1]
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
        detail = " ".join(str(row[-1]) for row in plan)
        assert "SEARCH predictions USING INDEX ix_predictions_timestamp (timestamp<?)" in detail
