"""Everything the API serves from, as one frozen set of typed services.

``create_app`` takes an ``ApiServices``; routers reach it through one FastAPI dependency
(``bridge.api.deps``). The parts only a running gateway has (live model state, the models that
explain on request) are typed fields that are simply empty elsewhere (tests, benchmarks, an API
over a store alone), so no router guesses with a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI

from bridge.config.actions import ResolvedAction
from bridge.config.spec import ApiSettings
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.version_stats import VersionStats
from bridge.pki.trustlists import TrustDir
from bridge.store.actions import ActionRepository
from bridge.store.alerts import AlertRepository
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditRepository
from bridge.store.db import Store
from bridge.store.decisions import DecisionRepository
from bridge.store.history import PredictionHistory
from bridge.store.insights import InsightRepository
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import RegistryRepository
from bridge.types import ActionControl as PeopleActions
from bridge.types import ActionView, Explanation

from .keycache import KeyCache
from .ops import ApiMetrics, Operations
from .queries import QueryRunner
from .reloadable import MappingReloader
from .sessions import SessionStore
from .view import GatewayView

__all__ = [
    "ActionControl",
    "ApiServices",
    "Explainer",
    "LiveModelState",
    "install_services",
    "no_trust_lists",
    "services_of",
]

# Queries that may wait for a free query thread; beyond, the API answers 503 at once.
_WAITING_PER_THREAD = 8


class LiveModelState(Protocol):
    """The registry side of a running gateway: the admin API wakes its watcher after a change
    (so this gateway switches at once) and reads the counters of the versions it serves."""

    def wake(self) -> None: ...

    def version_stats(self, name: str) -> Sequence[VersionStats]: ...


class Explainer(Protocol):
    """A running model's insight: its recent predictions kept to explain one on request, and
    the drift of each of its inputs per asset."""

    def explain_kept(self, prediction_id: str) -> Explanation | None: ...

    def feature_drift(self, asset: str) -> Mapping[str, float]: ...


class ActionControl(PeopleActions, Protocol):
    """The write-back actions of a running gateway (bridge.runtime.actions.ActionRunner): what
    each one does now, and what people do to them (each call raises a BridgeError naming
    why it cannot be done)."""

    @property
    def actions(self) -> Mapping[str, ResolvedAction]: ...

    def statuses(self) -> Sequence[ActionView]: ...

    def serves(self, name: str) -> bool: ...


def no_trust_lists() -> Sequence[TrustDir]:
    return ()


@dataclass(frozen=True)
class ApiServices:
    """One per app, shared by every request: the repositories open a session per call, the
    query runner and the key cache are built for concurrent requests."""

    settings: ApiSettings
    view: GatewayView
    queries: QueryRunner
    keys: KeyCache
    history: PredictionHistory
    alerts: AlertRepository
    registry: RegistryService
    lineage: LineageRepository
    labels: LabelRepository
    outbox: OutboxRepository
    audit: AuditRepository
    decisions: DecisionRepository
    insights: InsightRepository
    # The actions' stored state and events (an API over a store alone reads them too).
    action_log: ActionRepository
    # Only a running gateway has these: without them the admin API changes the registry (other
    # gateways follow within their poll) and no prediction is kept for explanation.
    live_models: LiveModelState | None = None
    explainers: Mapping[str, Explainer] = field(default_factory=dict)
    # Probes and scrape of a running gateway (None: the probes answer 200, /metrics holds the
    # API's own request metrics). ``metrics_on_api`` False: /metrics has a listener of its own.
    ops: Operations | None = None
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    metrics_on_api: bool = True
    # Applies a changed mapping file (POST /api/v1/reload); only a running gateway has one.
    reloader: MappingReloader | None = None
    # Browser sessions of the console (bridge.console); the API accepts their cookie too.
    sessions: SessionStore = field(default_factory=SessionStore)
    # The public keys whose audit checkpoints count (the gateway's and gateway.audit's
    # trusted_keys); None: any valid signature, and /audit/verify says the signer is not pinned.
    audit_keys: Sequence[str] | None = None
    # The trust lists of peer certificates of the running mapping, read on each request (a
    # reload may change them); an API without a mapping has none.
    trust_lists: Callable[[], Sequence[TrustDir]] = no_trust_lists
    # The running gateway's write-back actions; None: it has none, or the API runs apart.
    actions: ActionControl | None = None

    @classmethod
    def from_store(
        cls,
        view: GatewayView,
        store: Store,
        settings: ApiSettings | None = None,
        *,
        registry: RegistryService | None = None,
        live_models: LiveModelState | None = None,
        explainers: Mapping[str, Explainer] | None = None,
        ops: Operations | None = None,
        metrics_on_api: bool = True,
        reloader: MappingReloader | None = None,
        audit_keys: Sequence[str] | None = None,
        trust_lists: Callable[[], Sequence[TrustDir]] | None = None,
        actions: ActionControl | None = None,
    ) -> ApiServices:
        """The store-backed services. ``registry`` defaults to one that knows no mapping and
        no signing policy; the gateway passes its own."""
        settings = settings or ApiSettings()
        queries = QueryRunner(settings.query_threads, settings.query_threads * _WAITING_PER_THREAD)
        return cls(
            settings=settings,
            view=view,
            queries=queries,
            keys=KeyCache(ApiKeyRepository(store, view.gateway_id), queries=queries),
            history=PredictionHistory(store, timeout_s=settings.query_timeout_s),
            # Ledger entries of changes made through this API name the gateway serving it.
            alerts=AlertRepository(
                store, timeout_s=settings.query_timeout_s, gateway=view.gateway_id
            ),
            registry=registry or RegistryService(RegistryRepository(store, view.gateway_id)),
            lineage=LineageRepository(store),
            labels=LabelRepository(store, view.gateway_id),
            outbox=OutboxRepository(store, gateway=view.gateway_id),
            audit=AuditRepository(store, view.gateway_id),
            decisions=DecisionRepository(store, timeout_s=settings.query_timeout_s),
            insights=InsightRepository(store, timeout_s=settings.query_timeout_s),
            action_log=ActionRepository(store, view.gateway_id, timeout_s=settings.query_timeout_s),
            actions=actions,
            audit_keys=audit_keys,
            trust_lists=trust_lists or no_trust_lists,
            live_models=live_models,
            # Kept, not copied: the app reads the runtime's own mapping, as it always has.
            explainers=explainers if explainers is not None else {},
            ops=ops,
            metrics=ApiMetrics(ops.registry if ops is not None else None),
            metrics_on_api=metrics_on_api,
            reloader=reloader,
            sessions=SessionStore(
                settings.console.session_hours * 3600,
                settings.console.idle_minutes * 60,
                settings.console.max_sessions,
            ),
        )


def install_services(app: FastAPI, services: ApiServices) -> None:
    """Hand ``services`` to the app's requests (read back by ``services_of`` only)."""
    app.state.services = services


def services_of(app: FastAPI) -> ApiServices:
    found = app.state.services
    if not isinstance(found, ApiServices):
        raise TypeError("this app was not built by bridge.api.create_app (no ApiServices)")
    return found
