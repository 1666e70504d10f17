"""Read-only REST API of the gateway (FastAPI)."""

from __future__ import annotations

from .app import create_app
from .view import GatewayView, ModelInfo, TagState

__all__ = ["GatewayView", "ModelInfo", "TagState", "create_app"]
