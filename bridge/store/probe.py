"""Can the store take a write right now? For the readiness probe (``/readyz``).

SQLite: a connection of its own takes the write lock (``BEGIN IMMEDIATE``) and gives it back at
once, so a file that is read-only, gone, or locked by another writer for longer than the probe's
timeout answers "no" without any row being written. PostgreSQL: the server must not be a
read-only standby nor default to read-only transactions. Synchronous: call it in a thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .db import Store

__all__ = ["store_writable"]


def store_writable(store: Store, timeout_s: float = 1.0) -> str:
    """``""`` when a write would be taken now, else why not."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return ""  # the engine's own memory: writable as long as the process lives
        return _sqlite_writable(Path(database), timeout_s)
    return _server_writable(store, timeout_s)


def _sqlite_writable(path: Path, timeout_s: float) -> str:
    if not path.is_file():
        return f"store file {path} is missing"
    try:
        # mode=rw: never create the file here (a missing store is an answer, not a fix).
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout_s, isolation_level=None
        )
    except sqlite3.Error as exc:
        return f"cannot open store file {path}: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return f"store file {path} takes no write: {exc}"
    finally:
        conn.close()
    return ""


def _server_writable(store: Store, timeout_s: float) -> str:
    try:
        with store.engine.connect() as conn:
            if store.engine.dialect.name == "postgresql":
                ms = max(1, round(timeout_s * 1000))
                conn.execute(text(f"SET LOCAL statement_timeout = {ms}"))
                standby, read_only = conn.execute(
                    text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                ).one()
                if standby:
                    return "the database server is a read-only standby"
                if read_only == "on":
                    return "the database server takes read-only transactions only"
            else:
                conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"cannot reach the store: {exc.__class__.__name__}: {exc}"
    return ""
