"""Opening the store: one engine per process, SQLite tuned for a gateway, PostgreSQL as is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import StoreError

from .models import Base

__all__ = ["Store", "open_store"]

log = structlog.get_logger(__name__)

_SQLITE_BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the sink writes; NORMAL is crash-safe under WAL and only
    # risks the last commits on power loss, which the MES outbox covers.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def open_store(url: str, *, schema: str | None = None) -> Store:
    """Connect and make sure the tables exist.

    ``schema`` (PostgreSQL) puts the tables in that schema, which must exist; tests use it to
    keep their tables apart.
    """
    try:
        sa_url = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL: {exc}") from exc
    try:
        if sa_url.get_backend_name() == "sqlite":
            database = sa_url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(sa_url)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(sa_url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise StoreError(f"cannot open store {sa_url.render_as_string()}: {exc}") from exc
    if schema is not None:
        engine = engine.execution_options(schema_translate_map={None: schema})
    try:
        # Until Alembic migrations exist, create_all sets up a fresh database; it never alters
        # an existing table, so a schema change needs a migration (or a new file) for now.
        Base.metadata.create_all(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot create tables in {sa_url.render_as_string()}: {exc}") from exc
    log.info("store_opened", url=sa_url.render_as_string(), dialect=engine.dialect.name)
    return Store(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))
