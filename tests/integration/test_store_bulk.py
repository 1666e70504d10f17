"""The store writer's bulk path (bridge.store.bulk) on both backends: new predictions by
executemany on SQLite and COPY straight into the table on PostgreSQL; a batch with stored ones
by multi-row VALUES ... RETURNING on SQLite and COPY through a staging table on PostgreSQL. A
batch gives exactly its rows, with the values the ORM path wrote, in batch order; a retried
batch stages events only for the predictions new to the store; a bad row fails its whole batch
the way it did before (a database refusal is a StoreError and nothing of the batch stays; a
Python error stays a Python error)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session
from stores import BACKENDS, PG_URL, temp_store

from bridge.errors import StoreError
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.bulk import KeyConflict, insert_fresh
from bridge.store.codec import PREDICTION_COLUMNS, prediction_row, prediction_to_values
from bridge.store.db import Store
from bridge.store.outbox import OnCommit
from bridge.store.repository import PredictionRepository
from bridge.store.tables import PredictionRow
from bridge.types import (
    Contribution,
    Explanation,
    InputSnapshot,
    Prediction,
    Quality,
)

REVISION = "9a" * 32
# More than SQLite's 1,927 rows of 17 columns per statement: the batch takes two statements.
BATCH = 2500


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(str(request.param), tmp_path) as s:
        yield s


def _prediction(i: int, seq: int = 1) -> Prediction:
    """Every kind of column value: text/number/no value, explanation or none, drift score or
    none, non-ASCII and NaN inputs, inputs of every value type."""
    value: str | float | None = ("worn", 12.5 + i, None)[i % 3]
    inputs = (
        InputSnapshot(f"pump-{i}.vibration", 4.25 + i, Quality.GOOD, 1714564800.125),
        InputSnapshot(f"pump-{i}.température", math.nan, Quality.BAD, None),
        InputSnapshot(f"pump-{i}.running", i % 2 == 0, Quality.UNCERTAIN, 1714564799.5),
        InputSnapshot(f"pump-{i}.mode", 'a"uto\n', Quality.GOOD, None),
        InputSnapshot(f"pump-{i}.count", i, Quality.GOOD, None),
    )
    explanation = (
        Explanation("bearing temperature +18 °C", (Contribution("t.mean", 81.5, 63.0, 0.25),))
        if i % 4 == 0
        else None
    )
    return Prediction(
        id=f"00000000-0000-5000-8000-{seq:04d}{i:08d}",
        seq=seq,
        asset=f"pump-{i:05d}",
        model="pump-health",
        version="1.0.0",
        sha256="cd" * 32,
        value=value,
        score=None if i % 5 == 0 else 0.5 + i / 1e6,
        quality=(Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)[i % 3],
        timestamp=1714564800.123456 + i,
        input_age_s=None if i % 6 == 0 else 1.5,
        inputs=inputs,
        reason="" if i % 3 == 0 else "stale input",
        explanation=explanation,
        drift_score=None if i % 2 else 0.125,
    )


def _feed() -> OutboxFeed:
    return OutboxFeed("mes", lambda p: f'{{"id":"{p.id}","asset":"{p.asset}"}}', Budget(10**6))


class Spy:
    """An outbox hook that records which predictions it was given and whether it committed."""

    def __init__(self) -> None:
        self.staged: list[list[str]] = []
        self.committed = 0

    def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit:
        self.staged.append([p.id for p in predictions])

        def done() -> None:
            self.committed += 1

        return done


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def test_a_batch_gives_its_rows_with_the_values_of_the_orm_path(store: Store) -> None:
    _check_batch(store)


def test_postgresql_without_staging_tables_takes_sqlalchemys_path(tmp_path: Path) -> None:
    """A connection whose staging tables could not be made (no TEMPORARY privilege) writes
    through SQLAlchemy Core instead: the same rows."""
    with temp_store("postgresql", tmp_path) as store:

        def unstaged(_dbapi: Any, record: Any, _proxy: Any) -> None:
            record.info.pop("bridge_staging", None)

        statements: list[str] = []

        def seen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(store.engine, "checkout", unstaged)
        event.listen(store.engine, "before_cursor_execute", seen)
        _check_batch(store)
        _retried_batch(store, offset=BATCH)
        # It did take the other path: SQLAlchemy's upserts, never the staging tables.
        assert any("ON CONFLICT" in s for s in statements)
        assert not any("bridge_stage_" in s for s in statements)


def test_sqlite_with_a_low_parameter_limit_splits_the_batch_further(tmp_path: Path) -> None:
    """An SQLite built with the old limit of 999 bound parameters gets statements of 58 rows."""
    with temp_store("sqlite", tmp_path) as store:

        def low_limit(dbapi: Any, _record: Any, _proxy: Any) -> None:
            dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

        event.listen(store.engine, "checkout", low_limit)
        _check_batch(store)


def _check_batch(store: Store) -> None:
    batch = [_prediction(i) for i in range(BATCH)]
    feed = _feed()
    PredictionRepository(store, REVISION, "gw-1").add_many(batch, [feed])

    stored = _rows(store, "SELECT * FROM predictions ORDER BY id")
    assert len(stored) == BATCH
    # Ids follow the batch's order (GET /predictions breaks timestamp ties by id).
    assert [r["prediction_id"] for r in stored] == [p.id for p in batch]
    for p, r in zip(batch, stored, strict=True):
        want = {**prediction_to_values(p), "mapping_revision": REVISION}
        got = {k: r[k] for k in want}
        assert all(_same(got[k], want[k]) for k in want), (p.id, got, want)

    events = _rows(store, "SELECT * FROM outbox ORDER BY id")
    assert [(e["destination"], e["asset"], e["event_id"]) for e in events] == [
        ("mes", p.asset, p.id) for p in batch
    ]
    assert events[0]["body"] == f'{{"id":"{batch[0].id}","asset":"{batch[0].asset}"}}'
    assert {
        (e["attempts"], e["retries"], e["last_error"], e["claimed_by"], e["lease_until"])
        for e in events
    } == {(0, 0, "", "", 0.0)}
    assert feed.added == BATCH

    marks = _rows(store, "SELECT asset, last_seq FROM prediction_sequences WHERE gateway_id='gw-1'")
    assert sorted((m["asset"], m["last_seq"]) for m in marks) == [(p.asset, 1) for p in batch]


def test_sequence_marks_only_rise(store: Store) -> None:
    repo = PredictionRepository(store, REVISION, "gw-1")
    repo.add_many([_prediction(0, seq=5), _prediction(1, seq=5)])
    # A late batch with a lower number (asset 0) and a higher one (asset 1).
    repo.add_many([_prediction(0, seq=3), _prediction(1, seq=9)])
    marks = _rows(store, "SELECT asset, last_seq FROM prediction_sequences ORDER BY asset")
    assert [(m["asset"], m["last_seq"]) for m in marks] == [("pump-00000", 5), ("pump-00001", 9)]


def test_a_retried_batch_stages_only_the_new_predictions(store: Store) -> None:
    _retried_batch(store)


def _retried_batch(store: Store, offset: int = 0) -> None:
    batch = (
        [_prediction(i, seq=2) for i in range(BATCH)]
        if offset
        else [_prediction(i) for i in range(BATCH)]
    )
    repo = PredictionRepository(store, REVISION)
    first, spy = Spy(), Spy()
    # The first half committed, but (say) its reply was lost: the whole batch comes again.
    repo.add_many(batch[: BATCH // 2], [first])
    repo.add_many(batch, [spy])
    assert spy.staged == [[p.id for p in batch[BATCH // 2 :]]]
    assert spy.committed == 1
    assert _rows(store, "SELECT count(*) AS n FROM predictions")[0]["n"] == BATCH + offset
    # Nothing new at all: the hook is given no prediction.
    again = Spy()
    repo.add_many(batch, [again])
    assert again.staged == [[]]


def test_a_row_the_database_refuses_fails_the_whole_batch(store: Store) -> None:
    batch = [_prediction(i) for i in range(10)]
    bad = batch[6]
    # version is NOT NULL on both backends: the database refuses the row.
    batch[6] = Prediction(**{**{f: getattr(bad, f) for f in bad.__slots__}, "version": None})
    spy = Spy()
    repo = PredictionRepository(store, REVISION, "gw-1")
    with pytest.raises(StoreError, match="cannot store 10 predictions"):
        repo.add_many(batch, [spy])
    # Nothing of it stayed, and the hook's commit work did not run.
    assert spy.committed == 0
    for table in ("predictions", "outbox", "prediction_sequences"):
        assert _rows(store, f"SELECT count(*) AS n FROM {table}")[0]["n"] == 0
    # The next good batch is stored whole, and only it (no staged row of the failed one left).
    good = [_prediction(i, seq=2) for i in range(10)]
    repo.add_many(good, [_feed()])
    assert [r["prediction_id"] for r in _rows(store, "SELECT * FROM predictions ORDER BY id")] == [
        p.id for p in good
    ]
    assert _rows(store, "SELECT count(*) AS n FROM outbox")[0]["n"] == 10


def test_a_value_python_cannot_convert_is_not_a_store_error(store: Store) -> None:
    """As before: a bug in the data (a list as the value) raises before any SQL; the writer
    treats it as a crash (retried, then set aside as poison), not as the database being away."""
    bad = _prediction(1)
    batch = [
        _prediction(0),
        Prediction(**{**{f: getattr(bad, f) for f in bad.__slots__}, "value": [1.0]}),
    ]
    with pytest.raises(TypeError):
        PredictionRepository(store, REVISION).add_many(batch, [_feed()])
    assert _rows(store, "SELECT count(*) AS n FROM predictions")[0]["n"] == 0


def test_a_lost_postgresql_connection_is_a_store_error_and_the_next_batch_reconnects(
    tmp_path: Path,
) -> None:
    with temp_store("postgresql", tmp_path) as store:
        repo = PredictionRepository(store, REVISION, "gw-1")
        repo.add_many([_prediction(0)], [_feed()])  # the pool now holds a connection
        with store.engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin = create_engine(PG_URL)
        try:
            with admin.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            admin.dispose()
        batch = [_prediction(i, seq=2) for i in range(5)]
        # pool_pre_ping replaces the killed connection at checkout: the batch goes through.
        repo.add_many(batch, [_feed()])
        assert _rows(store, "SELECT count(*) AS n FROM predictions")[0]["n"] == 6


def test_postgresql_connection_lost_inside_a_batch_is_a_store_error(tmp_path: Path) -> None:
    """The COPY runs on the driver's connection, outside SQLAlchemy's execute: its errors must
    still come out as a StoreError (retried by the writer), and the dead connection must not
    go back to the pool."""
    with temp_store("postgresql", tmp_path) as store:
        repo = PredictionRepository(store, REVISION, "gw-1")

        class Killer:
            """Kills the session's own backend just before the outbox rows are copied."""

            def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit:
                pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
                admin = create_engine(PG_URL)
                try:
                    with admin.begin() as conn:
                        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                finally:
                    admin.dispose()
                return _feed().stage(session, predictions)

        with pytest.raises(StoreError):
            repo.add_many([_prediction(i) for i in range(5)], [Killer()])
        repo.add_many([_prediction(i) for i in range(5)], [_feed()])
        assert _rows(store, "SELECT count(*) AS n FROM outbox")[0]["n"] == 5


def test_insert_fresh_writes_new_rows_and_flags_a_stored_key(store: Store) -> None:
    """New rows go in whole and in order; a batch with one stored key raises KeyConflict, and
    after the caller's rollback nothing of that batch is left."""
    table: Any = PredictionRow.__table__
    first = [prediction_row(_prediction(i), REVISION) for i in range(BATCH)]
    with store.sessions.begin() as session:
        insert_fresh(session, table, PREDICTION_COLUMNS, first, "prediction_id")
    replay = [prediction_row(_prediction(i, seq=2), REVISION) for i in range(10)] + [first[7]]
    with pytest.raises(KeyConflict), store.sessions.begin() as session:
        insert_fresh(session, table, PREDICTION_COLUMNS, replay, "prediction_id")
    ids = [
        r["prediction_id"]
        for r in _rows(store, "SELECT prediction_id FROM predictions ORDER BY id")
    ]
    assert ids == [row[0] for row in first]


class Probe:
    """An outbox hook that looks, inside the batch's transaction, at how the predictions went
    in: rows in the PostgreSQL staging table (the path that skips stored ones) or the SQLite
    statements seen so far."""

    def __init__(self, statements: list[str] | None = None) -> None:
        self.staged: list[int] = []
        self.statements = statements
        self.returning: list[bool] = []

    def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            count = conn.exec_driver_sql("SELECT count(*) FROM bridge_stage_predictions").scalar()
            self.staged.append(int(count or 0))
        if self.statements is not None:
            self.returning.append(
                any("INTO predictions" in s and "RETURNING" in s for s in self.statements)
            )
            self.statements.clear()
        return lambda: None


def test_postgresql_copies_new_predictions_straight_into_the_table(tmp_path: Path) -> None:
    """The staging table (COPY, then INSERT ... SELECT ... ON CONFLICT) is only for a batch
    with stored predictions: a batch of new ones is one COPY into the table."""
    with temp_store("postgresql", tmp_path) as store:
        repo = PredictionRepository(store, REVISION, "gw-1")
        batch = [_prediction(i) for i in range(BATCH)]
        probe = Probe()
        repo.add_many(batch[: BATCH // 2], [probe])
        repo.add_many(batch, [probe])  # the first half is stored: the other path
        assert probe.staged == [0, BATCH]
        assert _rows(store, "SELECT count(*) AS n FROM predictions")[0]["n"] == BATCH


def test_sqlite_inserts_new_predictions_without_returning(tmp_path: Path) -> None:
    """RETURNING (a multi-row INSERT that says which rows it added) is only for a batch with
    stored predictions: a batch of new ones is a plain executemany."""
    with temp_store("sqlite", tmp_path) as store:
        statements: list[str] = []

        def trace(dbapi: Any, _record: Any, _proxy: Any) -> None:
            dbapi.set_trace_callback(statements.append)

        event.listen(store.engine, "checkout", trace)
        repo = PredictionRepository(store, REVISION, "gw-1")
        batch = [_prediction(i) for i in range(BATCH)]
        probe = Probe(statements)
        repo.add_many(batch[: BATCH // 2], [probe])
        repo.add_many(batch, [probe])
        assert probe.returning == [False, True]
        assert _rows(store, "SELECT count(*) AS n FROM predictions")[0]["n"] == BATCH
