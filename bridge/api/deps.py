"""The typed dependencies routers ask for: ``Services``, and one alias per service it holds.

Every alias is a field of the one ``ApiServices`` the app was built with, so a handler names
only what it uses and FastAPI resolves ``Services`` once per request. None of them adds a
parameter to the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from bridge.config.spec import ApiSettings
from bridge.lifecycle.service import RegistryService
from bridge.store.alerts import AlertRepository
from bridge.store.history import PredictionHistory
from bridge.store.insights import InsightRepository
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository

from .keycache import KeyCache
from .queries import QueryRunner
from .services import ApiServices, Explainer, LiveModelState, services_of
from .view import GatewayView

__all__ = [
    "Alerts",
    "Explainers",
    "History",
    "Insights",
    "Keys",
    "Labels",
    "Lineage",
    "LiveModels",
    "Outbox",
    "Queries",
    "Registry",
    "Services",
    "Settings",
    "View",
    "services",
]


def services(request: Request) -> ApiServices:
    return services_of(request.app)


Services = Annotated[ApiServices, Depends(services)]


def _settings(s: Services) -> ApiSettings:
    return s.settings


def _view(s: Services) -> GatewayView:
    return s.view


def _queries(s: Services) -> QueryRunner:
    return s.queries


def _keys(s: Services) -> KeyCache:
    return s.keys


def _history(s: Services) -> PredictionHistory:
    return s.history


def _insights(s: Services) -> InsightRepository:
    return s.insights


def _alerts(s: Services) -> AlertRepository:
    return s.alerts


def _registry(s: Services) -> RegistryService:
    return s.registry


def _lineage(s: Services) -> LineageRepository:
    return s.lineage


def _labels(s: Services) -> LabelRepository:
    return s.labels


def _outbox(s: Services) -> OutboxRepository:
    return s.outbox


def _live_models(s: Services) -> LiveModelState | None:
    return s.live_models


def _explainers(s: Services) -> Mapping[str, Explainer]:
    return s.explainers


Settings = Annotated[ApiSettings, Depends(_settings)]
View = Annotated[GatewayView, Depends(_view)]
Queries = Annotated[QueryRunner, Depends(_queries)]
Keys = Annotated[KeyCache, Depends(_keys)]
History = Annotated[PredictionHistory, Depends(_history)]
Alerts = Annotated[AlertRepository, Depends(_alerts)]
Insights = Annotated[InsightRepository, Depends(_insights)]
Registry = Annotated[RegistryService, Depends(_registry)]
Lineage = Annotated[LineageRepository, Depends(_lineage)]
Labels = Annotated[LabelRepository, Depends(_labels)]
Outbox = Annotated[OutboxRepository, Depends(_outbox)]
LiveModels = Annotated[LiveModelState | None, Depends(_live_models)]
Explainers = Annotated[Mapping[str, Explainer], Depends(_explainers)]
