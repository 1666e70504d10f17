"""Bulk inserts for the store writer's hot path: thousands of rows per transaction at the cost
of the database, not of building statements.

Why not SQLAlchemy's executemany: for a batch of 2,000 predictions with their outbox rows it
spent more time than the database did, in per-row parameter processing (``construct_params``,
ORM bulk insert) and, on PostgreSQL, in psycopg splitting the 34,000-placeholder statement of
``insertmanyvalues`` in Python (profiled: 780 predictions/s on PostgreSQL, ~2,000/s on SQLite,
where a bare executemany of the same rows does ~11,000/s; ``bench/store.py``).

- SQLite: plain rows by the driver's ``executemany``; rows that may exist already by a
  multi-row ``INSERT ... VALUES (...),(...) ON CONFLICT DO NOTHING RETURNING key`` (executemany
  cannot return rows).
- PostgreSQL with psycopg 3: ``COPY`` (rows encoded in C, ~2 us each) straight into the table
  for plain rows; for rows that may exist, ``COPY`` into a temporary staging table, then one
  ``INSERT ... SELECT ... ON CONFLICT`` (psycopg's executemany cost ~10x the client CPU, and
  ``unnest`` of Python lists more still: psycopg dumps list arrays in Python).
- Rows that are new but for a rare replay (the store writer's predictions): ``insert_fresh``
  writes them the plain way and says when a key was stored already, so the caller rolls back
  and writes that batch with ``insert_new``. The staging detour cost PostgreSQL ~50 % more per
  batch than a COPY straight into the table, and RETURNING cost SQLite ~10 % over executemany
  (2,000 predictions, ``bench/store.py``).
- Anything else (another dialect or driver): SQLAlchemy Core, as before.

Values go to the driver as they are: the columns written here (strings, integers, doubles)
have no SQLAlchemy bind processing on either dialect. Driver errors come out as SQLAlchemy's
``DBAPIError`` subclasses, the way SQLAlchemy's own execution wraps them (a lost connection is
invalidated), so callers keep their ``except SQLAlchemyError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from sqlalchemy import BigInteger, Column, Connection, Identity, MetaData, Table, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable

__all__ = [
    "KeyConflict",
    "create_staging",
    "insert_fresh",
    "insert_new",
    "insert_rows",
    "upsert_max",
]

log = structlog.get_logger(__name__)

Row = Sequence[Any]

# SQLite's limit of bound parameters per statement when the library cannot say (the default
# SQLITE_MAX_VARIABLE_NUMBER before 3.32), and at most the default since 3.32 (32,766; some
# builds allow 250,000): a multi-row INSERT of 17 columns then holds up to 1,927 rows, so
# 2,000 take two statements whatever the build.
_SQLITE_MIN_PARAMS = 999
_SQLITE_MAX_PARAMS = 32766
_STAGE_PREFIX = "bridge_stage_"
# Staged rows keep their batch order through this column: ids are given in that order.
_ORDINAL = "bridge_n"
# Set in a connection's info once its staging tables exist.
_STAGED = "bridge_staging"
_PG_UNIQUE_VIOLATION = "23505"


class KeyConflict(Exception):
    """``insert_fresh`` met a row whose key is stored already. The transaction must be rolled
    back (PostgreSQL has aborted it; SQLite holds the rows before and after the stored one)."""


def _fast(conn: Connection, staged: bool = False) -> str:
    """Which fast path this connection takes: "sqlite", "postgresql" (psycopg 3; with
    ``staged``, only where its staging tables were made) or ""."""
    dialect = conn.dialect
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        return "sqlite"
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return "postgresql" if conn.info.get(_STAGED) or not staged else ""
    return ""


@contextlib.contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Driver errors as SQLAlchemy raises them from ``execute``; a lost connection is
    invalidated, so the pool does not hand it out again."""
    dbapi: Any = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc


def _names(conn: Connection, names: Sequence[str]) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return ", ".join(quote(n) for n in names)


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    statement = f"COPY {_names(conn, [table])} ({_names(conn, columns)}) FROM STDIN"
    with _driver_errors(conn, statement), _cursor(conn) as cursor, cursor.copy(statement) as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def _sqlite_max_params(conn: Connection) -> int:
    """This connection's limit of bound parameters (the library's build decides it)."""
    dbapi: Any = conn.dialect.loaded_dbapi
    raw: Any = conn.connection.driver_connection
    try:
        return min(_SQLITE_MAX_PARAMS, int(raw.getlimit(dbapi.SQLITE_LIMIT_VARIABLE_NUMBER)))
    except AttributeError:  # a driver without getlimit (Python < 3.11)
        return _SQLITE_MIN_PARAMS


def _sqlite_run(conn: Connection, statement: str, rows: Sequence[Row]) -> None:
    with _driver_errors(conn, statement):
        cursor = _cursor(conn)
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()


def _sqlite_returning(conn: Connection, statement: str, params: list[Any]) -> list[Any]:
    with _driver_errors(conn, statement):
        cursor = _cursor(conn)
        try:
            return [found for (found,) in cursor.execute(statement, params)]
        finally:
            cursor.close()


def _staged_insert(conn: Connection, table: Table, columns: Sequence[str], tail: str) -> Any:
    """INSERT INTO ``table`` the rows just copied into its staging table, in their order."""
    names = _names(conn, columns)
    stage = _names(conn, [_STAGE_PREFIX + table.name])
    return conn.exec_driver_sql(
        f"INSERT INTO {_names(conn, [table.name])} ({names}) SELECT {names} FROM {stage} "
        f"ORDER BY {_ORDINAL} {tail}"
    )


def insert_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """INSERT ``rows`` (tuples in the order of ``columns``) inside the session's transaction.

    A row that breaks a constraint fails the statement, as a plain INSERT does.
    """
    if not rows:
        return
    conn = session.connection()
    path = _fast(conn)
    if path == "postgresql":
        _copy(conn, table.name, columns, rows)
    elif path == "sqlite":
        marks = ", ".join("?" * len(columns))
        into = f"{_names(conn, [table.name])} ({_names(conn, columns)})"
        _sqlite_run(conn, f"INSERT INTO {into} VALUES ({marks})", rows)
    else:
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def insert_new(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Row], key: str
) -> list[Any]:
    """INSERT the rows whose ``key`` (a unique column) is not stored yet, in their order, and
    return the keys of those inserted; the others are skipped (ON CONFLICT DO NOTHING)."""
    if not rows:
        return []
    conn = session.connection()
    path = _fast(conn, staged=True)
    quoted_key = _names(conn, [key])
    skip = f"ON CONFLICT ({quoted_key}) DO NOTHING RETURNING {quoted_key}"
    if path == "postgresql":
        _copy(conn, _STAGE_PREFIX + table.name, columns, rows)
        return list(_staged_insert(conn, table, columns, skip).scalars())
    if path == "sqlite":
        per = max(1, _sqlite_max_params(conn) // len(columns))
        one = "(" + ", ".join("?" * len(columns)) + ")"
        into = f"{_names(conn, [table.name])} ({_names(conn, columns)})"
        done: list[Any] = []
        for start in range(0, len(rows), per):
            part = rows[start : start + per]
            many = ", ".join([one] * len(part))
            params = [value for row in part for value in row]
            done += _sqlite_returning(conn, f"INSERT INTO {into} VALUES {many} {skip}", params)
        return done
    values = [dict(zip(columns, row, strict=True)) for row in rows]
    if conn.dialect.name not in ("postgresql", "sqlite"):
        # Other dialects: a plain INSERT; the unique key refuses a repeat loudly.
        conn.execute(insert(table), values)
        return [v[key] for v in values]
    ignoring = (
        postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    )
    stmt = ignoring.on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
    return list(conn.execute(stmt, values).scalars())


def insert_fresh(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Row], key: str
) -> None:
    """INSERT ``rows``, which are expected to be new, the cheapest way the backend has: COPY
    straight into the table on PostgreSQL, ``executemany`` on SQLite.

    Raises ``KeyConflict`` when a row's ``key`` (a unique column) is stored already: the
    caller rolls the transaction back and writes the batch again with ``insert_new``.
    """
    if not rows:
        return
    conn = session.connection()
    path = _fast(conn)
    if path == "postgresql":
        try:
            _copy(conn, table.name, columns, rows)
        except IntegrityError as exc:
            # The table's other unique key is its identity column, never given here.
            if getattr(exc.orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
                raise KeyConflict(f"a {key} of the batch is stored already") from exc
            raise
        return
    if path == "sqlite":
        into = f"{_names(conn, [table.name])} ({_names(conn, columns)})"
        marks = ", ".join("?" * len(columns))
        statement = (
            f"INSERT INTO {into} VALUES ({marks}) ON CONFLICT ({_names(conn, [key])}) DO NOTHING"
        )
        with _driver_errors(conn, statement):
            cursor = _cursor(conn)
            try:
                cursor.executemany(statement, rows)
                # executemany sums the rows each INSERT changed: fewer means some were skipped.
                added = int(cursor.rowcount)
            finally:
                cursor.close()
    else:
        added = len(insert_new(session, table, columns, rows, key))
    if added != len(rows):
        raise KeyConflict(f"{len(rows) - added} {key}s of the batch are stored already")


def upsert_max(
    session: Session, table: Table, keys: Sequence[str], column: str, rows: Sequence[Row]
) -> None:
    """INSERT ``rows`` (``keys`` then ``column``); a stored row keeps the larger ``column``.

    Rows are written in the given order (callers sort them: concurrent writers then lock rows
    in the same order and cannot deadlock).
    """
    if not rows:
        return
    conn = session.connection()
    path = _fast(conn, staged=True)
    columns = [*keys, column]
    name, col = _names(conn, [table.name]), _names(conn, [column])
    update = f"ON CONFLICT ({_names(conn, keys)}) DO UPDATE SET {col} ="
    if path == "postgresql":
        _copy(conn, _STAGE_PREFIX + table.name, columns, rows)
        _staged_insert(conn, table, columns, f"{update} greatest({name}.{col}, excluded.{col})")
    elif path == "sqlite":
        marks = ", ".join("?" * len(columns))
        # SQLite's max() with two arguments is the scalar maximum.
        _sqlite_run(
            conn,
            f"INSERT INTO {name} ({_names(conn, columns)}) VALUES ({marks}) "
            f"{update} max({name}.{col}, excluded.{col})",
            rows,
        )
    else:
        values = [dict(zip(columns, row, strict=True)) for row in rows]
        stmt: Any
        if conn.dialect.name == "postgresql":
            pg = postgresql.insert(table)
            highest = func.greatest(table.c[column], pg.excluded[column])
            stmt = pg.on_conflict_do_update(index_elements=list(keys), set_={column: highest})
        else:
            lite = sqlite.insert(table)
            highest = func.max(table.c[column], lite.excluded[column])
            stmt = lite.on_conflict_do_update(index_elements=list(keys), set_={column: highest})
        conn.execute(stmt, values)


def create_staging(dbapi_connection: Any, record: Any, tables: Sequence[Any]) -> None:
    """PostgreSQL: the temporary staging tables of ``tables`` on a new connection (a pool
    ``connect`` event), committed there, so no data transaction ever creates them.

    Same column types as the tables, no constraints (the real table checks them on the
    INSERT ... SELECT), an ordinal that keeps the batch's order, emptied at every commit (ON
    COMMIT DELETE ROWS: an in-place truncation, no new file and no catalog churn per batch).
    A server that refuses them (no TEMPORARY privilege) leaves that connection on SQLAlchemy's
    slower path, logged, instead of failing the store.
    """
    meta = MetaData()
    ddl: list[str] = []
    for table in tables:
        # The surrogate key is the real table's to give; everything else is staged.
        columns = [c for c in table.columns if c.autoincrement is not True]
        stage = Table(
            _STAGE_PREFIX + table.name,
            meta,
            Column(_ORDINAL, BigInteger, Identity()),
            *(Column(c.name, c.type, nullable=True) for c in columns),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        compiled = CreateTable(stage).compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
        ddl.append(str(compiled))
    try:
        with dbapi_connection.cursor() as cursor:
            for statement in ddl:
                cursor.execute(statement)
        dbapi_connection.commit()
    except Exception as exc:  # the driver's error: this connection goes without staging
        dbapi_connection.rollback()
        log.warning("store_staging_unavailable", error=str(exc), effect="slower batch inserts")
        return
    record.info[_STAGED] = True
