"""SQL statement builders that differ by dialect, shared by the store's repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy import FromClause, Table, insert
from sqlalchemy.dialects import postgresql, sqlite

from .db import Store

__all__ = ["insert_ignoring"]


def insert_ignoring(store: Store, table: FromClause, keys: list[str]) -> Any:
    """INSERT that skips rows whose ``keys`` already exist (SQLite and PostgreSQL).

    A retried batch whose first commit went through but whose reply was lost must add nothing,
    so the repositories that write idempotently (predictions, alerts) all insert through this.
    Other dialects get a plain INSERT: the unique key then refuses a repeat loudly.
    ``table`` is a mapped class's ``__table__`` (typed as any FROM clause by SQLAlchemy).
    """
    assert isinstance(table, Table), table
    if store.dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    if store.dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    return insert(table)
