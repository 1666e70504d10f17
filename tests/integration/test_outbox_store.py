"""The outbox tables, Alembic migrations and durability settings, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from click.testing import CliRunner
from outbox_harness import PG_URL, pg_schema, prediction, store_url
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect, text
from stores import stored_predictions

# Imported for their tables: the metadata compared with the migrations must hold them all.
import bridge.store.alerts
import bridge.store.apikeys
import bridge.store.labels
import bridge.store.registry
from bridge.cli import main
from bridge.config.spec import DurabilitySettings
from bridge.errors import StoreError
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.store.tables import Base
from bridge.types import Prediction

# Every table module is loaded, so the models' metadata is complete for the migration check.
assert bridge.store.alerts and bridge.store.apikeys
assert bridge.store.labels and bridge.store.registry


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = str(request.param)
    if backend == "sqlite":
        s = open_store(store_url(backend, tmp_path))
        try:
            yield s
        finally:
            s.dispose()
        return
    try:
        ctx = pg_schema()
        schema = ctx.__enter__()
    except Exception as exc:  # the spine's store tests skip the same way
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
    try:
        s = open_store(PG_URL, schema=schema)
        try:
            yield s
        finally:
            s.dispose()
    finally:
        ctx.__exit__(None, None, None)


def feed(name: str = "mes", max_pending: int = 100) -> OutboxFeed:
    def encode(p: Prediction) -> str | None:
        # Like an event rule: this destination does not want asset "skip".
        return None if p.asset == "skip" else json.dumps({"id": p.id, "seq": p.seq})

    return OutboxFeed(name, encode, Budget(max_pending))


def test_migrations_create_exactly_the_models_tables(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert diff == [], "a model changed without an Alembic migration"
    assert version >= "0002"


def test_prediction_and_outbox_rows_are_one_transaction_and_a_retry_adds_nothing(
    store: Store,
) -> None:
    repo = PredictionRepository(store)
    f1, f2 = feed("mes"), feed("erp")
    batch = [prediction("p1", 0), prediction("p1", 1), prediction("skip", 0)]
    repo.add_many(batch, [f1, f2])
    # The same batch again, as after a commit whose reply was lost: nothing is queued twice.
    repo.add_many(batch, [f1, f2])
    outbox = OutboxRepository(store)
    for f in (f1, f2):
        pending = outbox.pending(f.destination)
        assert [(e.asset, e.event_id) for e in pending] == [
            ("p1", batch[0].id),
            ("p1", batch[1].id),
        ]
        assert json.loads(pending[0].body) == {"id": batch[0].id, "seq": 0}
        assert f.added == 2 and f.pending == 2
    assert len(stored_predictions(store)) == 3


def test_a_failed_transaction_leaves_neither_prediction_nor_outbox_row(store: Store) -> None:
    repo = PredictionRepository(store)

    def broken(p: Prediction) -> str | None:
        raise RuntimeError("encoder bug")

    with pytest.raises(RuntimeError):
        repo.add_many([prediction("p1", 0)], [OutboxFeed("mes", broken, Budget(10))])
    assert stored_predictions(store) == []
    assert OutboxRepository(store).pending() == []


def test_claim_takes_the_oldest_event_of_each_asset_only(store: Store) -> None:
    repo = PredictionRepository(store)
    f = feed()
    repo.add_many([prediction(a, s) for s in range(3) for a in ("p1", "p2")], [f])
    outbox = OutboxRepository(store)
    claim = outbox.claim("mes", limit=10)
    try:
        assert [(e.asset, e.event_id) for e in claim.events] == [
            ("p1", prediction("p1", 0).id),
            ("p2", prediction("p2", 0).id),
        ]
        dead = claim.finish([claim.events[0].id], {claim.events[1].id: "HTTP 422"}, 2, 60.0)
        assert dead == []
    finally:
        claim.close()
    # p2's head was rejected once and waits 60 s; p1 moved on to its next event.
    again = outbox.claim("mes", limit=10)
    try:
        assert [(e.asset, e.event_id) for e in again.events] == [("p1", prediction("p1", 1).id)]
    finally:
        again.close()


def test_sqlite_production_profile_is_full_and_refuses_normal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    s = open_store(url, synchronous="FULL", profile="production")
    try:
        with s.engine.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        s.dispose()
    with pytest.raises(StoreError, match="synchronous=FULL"):
        open_store(url, synchronous="NORMAL", profile="production")
    with pytest.raises(StoreError, match="production"):
        open_store("sqlite://", synchronous="FULL", profile="production")  # in memory


def test_postgres_production_profile_checks_the_server(tmp_path: Path) -> None:
    try:
        ctx = pg_schema()
        schema = ctx.__enter__()
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
    try:
        # This server runs with synchronous_commit=on and fsync=on, so production is allowed.
        s = open_store(PG_URL, schema=schema, synchronous="FULL", profile="production")
        s.dispose()
    finally:
        ctx.__exit__(None, None, None)


def test_durability_settings_defaults_and_production_rule() -> None:
    assert DurabilitySettings().synchronous == "NORMAL"
    assert DurabilitySettings(profile="production").synchronous == "FULL"
    with pytest.raises(ValidationError, match="production profile requires"):
        DurabilitySettings(profile="production", sqlite_synchronous="NORMAL")


def test_a_spine_database_made_by_create_all_is_adopted_and_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    # The spine's tables exactly as it made them (today's models have more columns), and no
    # alembic_version table: the baseline migration's body, run outside Alembic's bookkeeping.
    baseline = importlib.import_module("bridge.store.migrations.versions.0001_baseline")
    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        baseline.upgrade()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO predictions (prediction_id, seq, asset, model, version, sha256, "
                "quality, reason, timestamp, inputs_json) "
                "VALUES ('x', 1, 'p1', 'm', '1', 'ab', 'Good', '', 1.0, '[]')"
            )
        )
    engine.dispose()
    s = open_store(f"sqlite:///{db}")
    try:
        assert {"outbox", "dead_letters", "alembic_version"} <= set(
            inspect(s.engine).get_table_names()
        )
        assert [p.id for p in stored_predictions(s)] == ["x"]
    finally:
        s.dispose()


def test_cli_lists_replays_and_purges_dead_letters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    s = open_store(url)
    try:
        batch = [prediction(a, n) for n in range(3) for a in ("p1", "p2")]
        PredictionRepository(s).add_many(batch, [feed()])
        outbox = OutboxRepository(s)
        for _ in range(2):  # rejected twice with a limit of 2: two dead letters
            claim = outbox.claim("mes", 10, now=1e18)
            claim.finish([], {e.id: "HTTP 422: bad" for e in claim.events}, 2, 0.0)
            claim.close()
    finally:
        s.dispose()
    runner = CliRunner()
    listed = runner.invoke(main, ["outbox", "list", "--dead", "--store", url, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["event_id"] for r in rows] == [prediction("p1", 0).id, prediction("p2", 0).id]
    assert rows[0]["attempts"] == 2 and rows[0]["last_error"] == "HTTP 422: bad"

    pending = runner.invoke(main, ["outbox", "list", "--store", url])
    assert pending.exit_code == 0
    assert pending.stdout.count("p1") == 2 and pending.stdout.count("p2") == 2

    replayed = runner.invoke(
        main, ["outbox", "replay", "--store", url, "--event", rows[0]["event_id"]]
    )
    assert replayed.exit_code == 0 and "1 dead letter(s) replayed" in replayed.output
    s = open_store(url)
    try:
        # Back at the end of its asset's queue, attempts reset.
        assert [e.event_id for e in OutboxRepository(s).pending("mes")][-1] == rows[0]["event_id"]
        left = OutboxRepository(s).dead_letters()
        assert [d.event_id for d in left] == [rows[1]["event_id"]]
    finally:
        s.dispose()

    purged = runner.invoke(main, ["outbox", "purge", "--store", url, "--yes"])
    assert purged.exit_code == 0 and "1 dead letter(s) purged" in purged.output
    again = runner.invoke(main, ["outbox", "list", "--dead", "--store", url, "--json"])
    assert again.stdout == ""
    bad = runner.invoke(main, ["outbox", "list"])
    assert bad.exit_code == 2 and "--store" in bad.output
