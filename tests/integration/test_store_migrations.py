"""Revision 0011 drops the unread ``models`` table; its downgrade gives it back as 0001 made it,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from stores import BACKENDS, temp_store

import bridge.store.migrate
from bridge.store.db import Store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path) as s:
        yield s


def _alembic(store: Store, action: str, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = Config()
        scripts = Path(bridge.store.migrate.__file__).parent / "migrations"
        cfg.set_main_option("script_location", str(scripts))
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def test_0011_drops_models_and_its_downgrade_recreates_it(store: Store) -> None:
    assert "models" not in _tables(store)  # open_store upgraded to head

    _alembic(store, "downgrade", "0010")
    assert "models" in _tables(store)
    schema = inspect(store.engine)
    assert [c["name"] for c in schema.get_columns("models")] == [
        "id",
        "name",
        "version",
        "sha256",
        "path",
        "loaded_at",
    ]
    assert [u["column_names"] for u in schema.get_unique_constraints("models")] == [
        ["name", "version", "sha256"]
    ]

    _alembic(store, "upgrade", "head")
    assert "models" not in _tables(store)
    assert "predictions" in _tables(store)
