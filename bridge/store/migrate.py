"""Schema set-up through Alembic, the same migrations on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

__all__ = ["upgrade"]

_BASELINE = "0001"
_SCRIPTS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock key of schema upgrades ("bridge" in ASCII): the gateways of a fleet
# start together on one database, and only one of them may migrate it at a time.
_UPGRADE_LOCK = 0x627269646765


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision, in one transaction where the backend allows."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held to the end of this transaction; the others wait, then find it migrated.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        cfg = _config(conn)
        names = set(inspect(conn).get_table_names())
        if "predictions" in names and "alembic_version" not in names:
            # Made by the spine's create_all before migrations existed: it is the baseline.
            command.stamp(cfg, _BASELINE)
        command.upgrade(cfg, "head")
