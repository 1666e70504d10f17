"""FastAPI app factory. Nothing is built at import time; the runtime serves the app with uvicorn.

Every request passes, in order: the guard (API key and the key's budget, from the headers
alone), the body cap, then FastAPI (scopes, parameters, body). Errors of every layer are
RFC 9457 problem details (bridge.api.problems).
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI

from .actions import build_actions_router
from .alerts import build_alert_router
from .audit import build_audit_router
from .bodylimit import BodyLimit
from .certificates import build_certificates_router
from .contexts import CONTEXTS_PREFIX, build_contexts_router
from .decisions import build_decisions_router
from .docs import ASSETS_PREFIX, DOCS_PATHS, mount_docs
from .guard import ApiGuard
from .insights import build_insights_router
from .keys import build_key_router
from .limits import KeyLimits
from .lineage import build_lineage_router
from .models_admin import build_models_admin_router
from .openapi import install_openapi
from .ops import OPS_PATHS, RequestMetrics, build_ops_router
from .outbox import build_outbox_router
from .problems import install_problem_handlers
from .reload import build_reload_router
from .routes import HEALTH_PATH, build_router
from .services import ApiServices, install_services, services_of

# The console's pages check their session themselves (a page answers a login form, not a 401).
CONSOLE_PREFIX = "/console"

__all__ = ["close_app", "create_app"]

log = structlog.get_logger(__name__)


def create_app(services: ApiServices) -> FastAPI:
    """Every operation but health, the docs, the probes, the scrape and the published documents
    (``/contexts/...``) needs an API key (see bridge.api.auth). ``ApiServices.from_store``
    builds the services of an API over a store."""
    settings = services.settings
    app = FastAPI(
        title="bridge gateway",
        summary="Tags, predictions, models, alerts and health of one edge gateway.",
        version="1",
        docs_url=None,  # served by mount_docs, from the gateway's own files
        redoc_url=None,
    )
    install_services(app, services)
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(build_router())
    app.include_router(build_alert_router())
    app.include_router(build_actions_router())
    app.include_router(build_lineage_router())
    app.include_router(build_decisions_router())
    app.include_router(build_insights_router())
    app.include_router(build_key_router())
    app.include_router(build_certificates_router())
    app.include_router(build_outbox_router())
    app.include_router(build_audit_router())
    app.include_router(build_models_admin_router())
    app.include_router(
        build_ops_router(services.ops, services.metrics.registry, metrics=services.metrics_on_api)
    )
    app.include_router(build_reload_router())
    app.include_router(build_contexts_router())
    mount_docs(app)
    # The last added runs first: the request metrics, the guard, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        ApiGuard,
        keys=services.keys,
        limits=KeyLimits(
            settings.rate_limit_per_s, settings.rate_burst, settings.max_concurrent_per_key
        ),
        public=(HEALTH_PATH, *DOCS_PATHS, *OPS_PATHS),
        # Context brokers fetch the published @contexts anonymously.
        public_prefixes=(ASSETS_PREFIX + "/", CONSOLE_PREFIX, CONTEXTS_PREFIX + "/"),
        sessions=services.sessions,
    )
    # Outermost: requests the guard or the body cap refuse are counted too.
    app.add_middleware(RequestMetrics, metrics=services.metrics, routes=app.router.routes)
    return app


def close_app(app: FastAPI) -> None:
    """Stop the API's query threads (queries still waiting are dropped)."""
    services_of(app).queries.close()
