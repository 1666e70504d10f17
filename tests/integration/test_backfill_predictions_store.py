"""The store's ``historical`` flag of predictions (revision 0016) on SQLite and PostgreSQL: kept
through the bulk insert paths and read back; never taken as the last prediction where event
rules, alerts and alarms resume; the migration adds it to existing rows as false and its
downgrade removes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from stores import BACKENDS, stored_predictions, temp_store

import bridge.store.migrate
from bridge.store.db import Store
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import Prediction, Quality


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path) as s:
        yield s


def _prediction(seq: int, timestamp: float, *, historical: bool) -> Prediction:
    return Prediction(
        id=f"00000000-0000-5000-8000-{seq:012d}",
        seq=seq,
        asset="pump-a",
        model="health",
        version="1",
        sha256="ab" * 32,
        value="bearing_fault" if historical else "healthy",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=timestamp,
        input_age_s=0.1,
        historical=historical,
    )


def _alembic(store: Store, action: str, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = Config()
        scripts = Path(bridge.store.migrate.__file__).parent / "migrations"
        cfg.set_main_option("script_location", str(scripts))
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def test_flag_is_stored_and_the_last_live_prediction_is_where_rules_resume(store: Store) -> None:
    repo = PredictionRepository(store)
    live = _prediction(1, 1000.0, historical=False)
    # Made later for a time after the live one (a clock ahead, a long gap): still not "latest".
    past = [_prediction(2, 1001.0, historical=True), _prediction(3, 1002.0, historical=True)]
    repo.add_many([live])
    repo.add_many(past)
    repo.add_many([*past, live])  # a replay: the insert path for rows that may exist
    stored = stored_predictions(store, "pump-a")
    assert [(p.seq, p.historical) for p in stored] == [(3, True), (2, True), (1, False)]
    assert stored[0] == past[1]
    [last] = OutboxRepository(store).latest_predictions([("pump-a", "health")])
    assert last == live


def test_migration_adds_the_column_false_and_its_downgrade_removes_it(store: Store) -> None:
    _alembic(store, "downgrade", "0015")
    assert "historical" not in {c["name"] for c in inspect(store.engine).get_columns("predictions")}
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO predictions (prediction_id, seq, asset, model, version, sha256, "
                "quality, reason, timestamp, inputs_json) VALUES ('old-1', 1, 'pump-a', "
                "'health', '1', 'ab', 'Good', '', 900.0, '[]')"
            )
        )
    _alembic(store, "upgrade", "head")
    [old] = stored_predictions(store, "pump-a")
    assert old.id == "old-1" and old.historical is False
