"""Schema set-up through Alembic, the same migrations on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect

__all__ = ["upgrade"]

_BASELINE = "0001"
_SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision, in one transaction where the backend allows."""
    with engine.begin() as conn:
        cfg = _config(conn)
        names = set(inspect(conn).get_table_names())
        if "predictions" in names and "alembic_version" not in names:
            # Made by the spine's create_all before migrations existed: it is the baseline.
            command.stamp(cfg, _BASELINE)
        command.upgrade(cfg, "head")
