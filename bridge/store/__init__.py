"""SQL store: predictions and loaded models (SQLAlchemy 2; SQLite by default, or PostgreSQL)."""

from __future__ import annotations

from .db import Store, open_store
from .repository import ModelRecord, ModelRepository, PredictionRepository
from .sink import StoreSink

__all__ = [
    "ModelRecord",
    "ModelRepository",
    "PredictionRepository",
    "Store",
    "StoreSink",
    "open_store",
]
