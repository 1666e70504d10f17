"""REST API of the gateway (FastAPI): read endpoints, alerts, API keys; every operation but
health needs an API key."""

from __future__ import annotations

from .app import close_app, create_app
from .services import ApiServices
from .view import GatewayView, ModelInfo, TagState

__all__ = ["ApiServices", "GatewayView", "ModelInfo", "TagState", "close_app", "create_app"]
