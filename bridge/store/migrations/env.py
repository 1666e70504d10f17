"""Alembic environment: always run by ``bridge.store.migrate`` on a connection it passes in."""

from __future__ import annotations

from alembic import context

from bridge.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
