"""A store on a given backend in a throwaway place: a SQLite file under ``tmp_path``, or a fresh
PostgreSQL schema on 127.0.0.1 that is dropped afterwards with everything in it."""

from __future__ import annotations

import contextlib
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bridge.store.db import Store, open_store
from bridge.store.history import PredictionHistory
from bridge.types import Prediction

__all__ = ["BACKENDS", "PG_URL", "pg_schema", "stored_predictions", "temp_store"]

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def pg_schema(prefix: str = "bridge_test") -> Iterator[str]:
    """A fresh schema, dropped afterwards. Skips the calling test when the driver is missing or
    the server does not answer, so a machine without PostgreSQL still runs the SQLite cases."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL case needs the psycopg driver (pip install 'psycopg[binary]')")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as exc:
            pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc}")
        try:
            yield schema
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def temp_store(
    backend: str, tmp_path: Path, name: str = "bridge.db", *, prefix: str = "bridge_test"
) -> Iterator[Store]:
    """``backend`` is "sqlite" (the file ``tmp_path / name``) or "postgresql" (a schema named
    ``prefix_<random>``)."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            store = open_store(f"sqlite:///{tmp_path / name}")
        elif backend == "postgresql":
            store = open_store(PG_URL, schema=stack.enter_context(pg_schema(prefix)))
        else:
            raise ValueError(f"unknown backend {backend!r}")
        try:
            yield store
        finally:
            store.dispose()


def stored_predictions(
    store: Store,
    asset: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1000,
) -> list[Prediction]:
    """What the store holds, newest first, read the way ``GET /predictions`` reads it (the store
    has no other read path for predictions)."""
    return PredictionHistory(store).page(asset, since, until, limit).items
