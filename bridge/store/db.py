"""Opening the store: one engine per process, SQLite tuned for a gateway, PostgreSQL as is."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import StoreError

from .bulk import create_staging
from .migrate import upgrade
from .tables import PredictionRow, PredictionSequenceRow

__all__ = [
    "Profile",
    "QueryTimeoutError",
    "Store",
    "Synchronous",
    "open_store",
    "statement_timeout",
]

log = structlog.get_logger(__name__)

_SQLITE_BUSY_TIMEOUT_MS = 5000
# PRAGMA synchronous answers with a number.
_SYNC_LEVELS = {"NORMAL": 1, "FULL": 2}

Synchronous = Literal["NORMAL", "FULL"]
Profile = Literal["default", "production"]


@dataclass(frozen=True, slots=True)
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


class QueryTimeoutError(StoreError):
    """A query ran longer than its statement timeout and was stopped."""


# SQLite calls the progress handler every this many virtual machine instructions (~tens of
# microseconds): often enough to stop within a millisecond of the deadline, cheap otherwise.
_SQLITE_PROGRESS_STEPS = 1000
_PG_QUERY_CANCELED = "57014"


@contextlib.contextmanager
def statement_timeout(session: Session, seconds: float) -> Iterator[None]:
    """Stop the session's statements that run past ``seconds`` (QueryTimeoutError).

    SQLite has no statement timeout: a progress handler interrupts the query at the deadline
    and is removed afterwards (the connection goes back to the pool clean). PostgreSQL gets
    ``SET LOCAL statement_timeout``, which ends with the session's transaction.
    """
    connection = session.connection()
    sqlite = connection.dialect.name == "sqlite"
    raw: Any = None
    if sqlite:
        raw = connection.connection.driver_connection
        deadline = time.monotonic() + seconds
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), _SQLITE_PROGRESS_STEPS)
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000))}")
    try:
        yield
    except OperationalError as exc:
        interrupted = "interrupted" in str(exc.orig) if sqlite else False
        canceled = getattr(exc.orig, "sqlstate", None) == _PG_QUERY_CANCELED
        if interrupted or canceled:
            raise QueryTimeoutError(f"the query ran longer than {seconds:g} s") from exc
        raise
    finally:
        if raw is not None:
            raw.set_progress_handler(None, 0)


@contextlib.contextmanager
def read_session(store: Store, timeout_s: float | None) -> Iterator[Session]:
    """A session for a read that is stopped past ``timeout_s`` (QueryTimeoutError; None: no
    limit): the API's history reads, never the data path's writes."""
    with store.sessions() as session:
        if timeout_s is None:
            yield session
        else:
            with statement_timeout(session, timeout_s):
                yield session


def _sqlite_pragmas(synchronous: Synchronous) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while the sink writes. NORMAL survives process crashes and only
        # risks the last commits on power loss; the production profile asks for FULL.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    return on_connect


def _pg_staging(dbapi_connection: Any, record: Any) -> None:
    tables = [PredictionRow.__table__, PredictionSequenceRow.__table__]
    create_staging(dbapi_connection, record, tables)


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would make it 0644 less the umask):
    it holds API key hashes and the plant's data. SQLite gives the -wal and -shm files the
    mode of the database file. An existing file keeps its mode; one that others can read is
    reported, not changed (a reporting tool may read it through its group on purpose)."""
    try:
        # O_EXCL: never through a symbolic link or onto a file made meanwhile; the mode is set
        # by the call that creates the file, so there is no moment it is readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "store_file_readable_by_others",
                path=str(path),
                mode=oct(mode),
                fix=f"chmod 600 {path}",
            )
        return
    try:
        os.fchmod(fd, 0o600)  # a umask such as 0o277 would leave the owner unable to write
    finally:
        os.close(fd)


def _check_durability(engine: Engine, synchronous: Synchronous, profile: Profile) -> None:
    """Read the settings back: a database that silently ignored them must not run production."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            mode = str(conn.execute(text("PRAGMA journal_mode")).scalar())
            level = conn.execute(text("PRAGMA synchronous")).scalar()
            memory = mode.lower() == "memory"
            if not memory and mode.lower() != "wal":
                raise StoreError(f"SQLite refused WAL mode (journal_mode={mode})")
            if profile == "production" and (memory or level != _SYNC_LEVELS["FULL"]):
                raise StoreError(
                    "production profile needs an SQLite file with synchronous=FULL "
                    f"(got journal_mode={mode}, synchronous={level})"
                )
            if not memory and level != _SYNC_LEVELS[synchronous]:
                raise StoreError(f"SQLite refused synchronous={synchronous} (got {level})")
        elif engine.dialect.name == "postgresql" and profile == "production":
            commit = str(conn.execute(text("SHOW synchronous_commit")).scalar())
            fsync = str(conn.execute(text("SHOW fsync")).scalar())
            if commit != "on" or fsync != "on":
                raise StoreError(
                    "production profile needs PostgreSQL with synchronous_commit=on and "
                    f"fsync=on (got synchronous_commit={commit}, fsync={fsync})"
                )


def _absent(what: str) -> str:
    return (
        f"{what}; check --store or the mapping's gateway.store (a relative SQLite path is "
        "relative to the mapping file), or start the gateway once to create it"
    )


def _has_tables(engine: Engine) -> bool:
    with engine.connect() as conn:
        # "predictions" alone: a store made before migrations existed (upgrade() stamps it).
        return bool({"alembic_version", "predictions"} & set(inspect(conn).get_table_names()))


def open_store(
    url: str,
    *,
    schema: str | None = None,
    synchronous: Synchronous = "NORMAL",
    profile: Profile = "default",
    must_exist: bool = False,
    idle_in_transaction_s: float | None = None,
) -> Store:
    """Connect, check durability settings and migrate the schema to the newest revision.

    ``must_exist`` is for commands that only read (``bridge apikeys list``, ...): a store that
    is not there yet (no SQLite file, no bridge tables in the database) is a ``StoreError``
    saying so, and nothing is created.

    ``schema`` (PostgreSQL) puts the tables in that schema, which must exist; tests use it to
    keep their tables apart. The ``production`` profile refuses anything weaker than
    SQLite ``synchronous=FULL`` or PostgreSQL ``synchronous_commit=on`` with ``fsync=on``.

    ``idle_in_transaction_s`` (PostgreSQL) has the server roll back a session of this store that
    stays silent that long inside a transaction. A process cut off from the database mid
    transaction would otherwise keep its row locks until the server notices the dead link
    (TCP keepalive: hours), and every other writer of those rows would wait as long.
    """
    if profile == "production" and synchronous != "FULL":
        raise StoreError("production profile requires synchronous=FULL (refusing NORMAL)")
    try:
        sa_url = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL: {exc}") from exc
    try:
        if sa_url.get_backend_name() == "sqlite":
            database = sa_url.database or ""
            on_disk = database and database != ":memory:" and not database.startswith("file:")
            if must_exist and on_disk and not Path(database).is_file():
                raise StoreError(_absent(f"no store at {database}"))
            if on_disk:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                _create_private(Path(database))
            engine = create_engine(sa_url)
            event.listen(engine, "connect", _sqlite_pragmas(synchronous))
        else:
            # search_path as a connection option survives the pool's rollbacks, unlike a SET.
            # Options the URL already carries (?options=-csearch_path%3D...) are kept: a
            # connect argument would replace them.
            given = sa_url.query.get("options")
            options = [given] if isinstance(given, str) and given else []
            if schema:
                options.append(f"-csearch_path={schema}")
            if idle_in_transaction_s is not None:
                ms = max(1, round(idle_in_transaction_s * 1000))
                options.append(f"-cidle_in_transaction_session_timeout={ms}")
            connect_args = {"options": " ".join(options)} if options else {}
            engine = create_engine(
                sa_url.difference_update_query(["options"]),
                pool_pre_ping=True,
                connect_args=connect_args,
            )
            if engine.dialect.driver == "psycopg":
                # The store writer COPYs batches into per-connection staging tables
                # (bridge.store.bulk); made once per connection, never inside a batch.
                event.listen(engine, "connect", _pg_staging)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise StoreError(f"cannot open store {sa_url.render_as_string()}: {exc}") from exc
    try:
        if must_exist and not _has_tables(engine):
            engine.dispose()
            raise StoreError(_absent(f"no store at {sa_url.render_as_string()} (no bridge tables)"))
        _check_durability(engine, synchronous, profile)
        upgrade(engine)
    except (SQLAlchemyError, StoreError) as exc:
        engine.dispose()
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot prepare {sa_url.render_as_string()}: {exc}") from exc
    # Debug: every CLI command opens the store, and its output is the answer, not this line.
    log.debug(
        "store_opened",
        url=sa_url.render_as_string(),
        dialect=engine.dialect.name,
        synchronous=synchronous,
        profile=profile,
    )
    return Store(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))
