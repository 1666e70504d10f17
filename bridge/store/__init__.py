"""SQL store (SQLAlchemy 2; SQLite by default, or PostgreSQL)."""

from __future__ import annotations

from .db import Store, open_store
from .repository import PredictionRepository
from .sink import StoreSink

__all__ = [
    "PredictionRepository",
    "Store",
    "StoreSink",
    "open_store",
]
