"""Alembic migrations of the store; ``bridge.store.migrate.upgrade`` runs them at start-up."""
