"""Serves the FastAPI app with uvicorn inside the gateway's own event loop.

We bind the socket ourselves (a busy port becomes a clear error, where uvicorn would call
``sys.exit``) and leave signal handling to the gateway, which stops everything in order.
With ``tls`` uvicorn serves HTTPS; with ``tls.client_ca`` it also requires a client certificate
signed by that CA (mutual TLS): others are refused during the handshake.

``api_server`` builds the gateway's API: the store-backed services plus the parts only the
running gateway owns, handed in typed (see bridge.api.services).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path

import structlog
import uvicorn
from fastapi import FastAPI

from bridge.api import ApiServices, GatewayView, close_app
from bridge.api.ops import Operations, create_ops_app
from bridge.api.reloadable import MappingReloader
from bridge.api.services import ActionControl, Explainer
from bridge.cancel import cancel_and_wait
from bridge.config.spec import ApiSettings, ApiTlsSettings
from bridge.console.app import close_console, create_gateway_app
from bridge.errors import ConnectorError
from bridge.pki.trustlists import TrustDir
from bridge.runtime.live_models import LiveModels
from bridge.store.db import Store

__all__ = ["ApiServer", "api_server", "ops_server"]

log = structlog.get_logger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _check_files(tls: ApiTlsSettings) -> None:
    files = {"certificate": tls.certificate, "private_key": tls.private_key}
    if tls.client_ca is not None:
        files["client_ca"] = tls.client_ca
    for key, path in files.items():
        if not Path(path).is_file():
            raise ConnectorError(
                f"gateway.api.tls.{key}: no file {path} (fix the path, or create it with your "
                "plant CA)"
            )


class ApiServer:
    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        tls: ApiTlsSettings | None = None,
        on_close: Callable[[FastAPI], None] | None = close_app,
        what: str = "REST API",
    ) -> None:
        self.host, self.port = host, port
        self._app = app
        self._on_close = on_close
        self._what = what
        self._scheme = "http" if tls is None else "https"
        if tls is not None:
            _check_files(tls)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=None if tls is None else tls.certificate,
            ssl_keyfile=None if tls is None else tls.private_key,
            ssl_ca_certs=None if tls is None else tls.client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )
        try:
            # uvicorn builds its SSL context here: a bad certificate or key fails now, clearly.
            config.load()
        except (ssl.SSLError, OSError) as exc:
            raise ConnectorError(
                f"gateway.api.tls: cannot load the certificate, key or client CA: {exc} "
                "(PEM files expected; the key must belong to the certificate)"
            ) from exc
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._scheme}://{host}:{self.port}"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            setting = "gateway.api.port" if self._what == "REST API" else "gateway.metrics.listen"
            raise ConnectorError(
                f"{self._what} cannot listen on {self.host}:{self.port}: {exc.strerror} "
                f"(is another bridge running? change {setting})"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api")
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise ConnectorError(f"{self._what} stopped during start-up")
                await asyncio.sleep(0.02)
        log.info("api_listening", what=self._what, url=self.url, docs=f"{self.url}/docs")

    async def stop(self) -> None:
        if self._task is None:
            return
        close_console(self._app)  # its live streams would hold the stop for the timeout
        self._server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._server.force_exit = True
            await cancel_and_wait(self._task)
        self._task = None
        if self._on_close is not None:
            self._on_close(self._app)


def api_server(
    settings: ApiSettings,
    view: GatewayView,
    store: Store,
    live: LiveModels,
    explainers: Mapping[str, Explainer],
    ops: Operations | None = None,
    metrics_on_api: bool = True,
    reloader: MappingReloader | None = None,
    audit_keys: Sequence[str] | None = None,
    trust_lists: Callable[[], Sequence[TrustDir]] | None = None,
    actions: ActionControl | None = None,
) -> ApiServer:
    """The gateway's REST API (not yet listening). Its registry service is the gateway's own,
    which knows the mapping and the signing policy, so an unfitting version is refused at the
    call; registry changes wake this gateway's watcher at once."""
    services = ApiServices.from_store(
        view,
        store,
        settings,
        registry=live.service,
        live_models=live,
        explainers=explainers,
        ops=ops,
        metrics_on_api=metrics_on_api,
        reloader=reloader,
        audit_keys=audit_keys,
        trust_lists=trust_lists,
        actions=actions,
    )
    return ApiServer(create_gateway_app(services), settings.host, settings.port, tls=settings.tls)


def ops_server(ops: Operations, host: str, port: int) -> ApiServer:
    """``/metrics``, ``/livez`` and ``/readyz`` on a listener of their own (plain HTTP: a
    scrape address is meant for a plant network or the host itself)."""
    return ApiServer(create_ops_app(ops), host, port, on_close=None, what="metrics endpoint")
