"""The REST API over TLS on a real uvicorn server (127.0.0.1), with a test CA: server
authentication, and mutual TLS that refuses a client without a certificate of the CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from emptyview import EmptyView
from support import LOOPBACK, free_port
from testca import TlsFiles, make_ca

from bridge.api import ApiServices, create_app
from bridge.config.spec import ApiSettings, ApiTlsSettings
from bridge.errors import ConnectorError
from bridge.runtime.apiserver import ApiServer
from bridge.store import open_store


@pytest.fixture
def ca(tmp_path: Path) -> TlsFiles:
    return make_ca(tmp_path / "pki")


async def _serve(tmp_path: Path, tls: ApiTlsSettings) -> AsyncIterator[ApiServer]:
    store = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    settings = ApiSettings(host=LOOPBACK, port=free_port(), tls=tls)
    app = create_app(ApiServices.from_store(EmptyView("gw-tls"), store, settings))
    server = ApiServer(app, settings.host, settings.port, tls=tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.dispose()


@pytest.fixture
async def tls_server(tmp_path: Path, ca: TlsFiles) -> AsyncIterator[ApiServer]:
    tls = ApiTlsSettings(certificate=str(ca.server_cert), private_key=str(ca.server_key))
    async for server in _serve(tmp_path, tls):
        yield server


@pytest.fixture
async def mtls_server(tmp_path: Path, ca: TlsFiles) -> AsyncIterator[ApiServer]:
    tls = ApiTlsSettings(
        certificate=str(ca.server_cert), private_key=str(ca.server_key), client_ca=str(ca.ca)
    )
    async for server in _serve(tmp_path, tls):
        yield server


def _trusting(ca: TlsFiles, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca))
    if client_cert:
        ctx.load_cert_chain(str(ca.client_cert), str(ca.client_key))
    return ctx


async def test_https_with_the_plant_ca(tls_server: ApiServer, ca: TlsFiles) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(verify=_trusting(ca), timeout=10) as http:
        r = await http.get(f"{tls_server.url}/api/v1/health")
    assert (r.status_code, r.json()["status"]) == (200, "up")
    # A client that does not trust the plant CA refuses the server.
    async with httpx.AsyncClient(verify=ssl.create_default_context(), timeout=10) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"{tls_server.url}/api/v1/health")
    # Plain HTTP on the TLS port gets no answer.
    async with httpx.AsyncClient(timeout=10) as http:
        plain = tls_server.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            await http.get(f"{plain}/api/v1/health")


async def test_mutual_tls_needs_a_client_certificate_of_the_ca(
    mtls_server: ApiServer, ca: TlsFiles, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(verify=_trusting(ca, client_cert=True), timeout=10) as http:
        r = await http.get(f"{mtls_server.url}/api/v1/health")
    assert r.status_code == 200
    async with httpx.AsyncClient(verify=_trusting(ca), timeout=10) as http:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(f"{mtls_server.url}/api/v1/health")
    # A certificate from another CA is refused too.
    other = make_ca(tmp_path / "other")
    ctx = ssl.create_default_context(cafile=str(ca.ca))
    ctx.load_cert_chain(str(other.client_cert), str(other.client_key))
    async with httpx.AsyncClient(verify=ctx, timeout=10) as http:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(f"{mtls_server.url}/api/v1/health")


def test_missing_or_mismatched_tls_files_are_clear_errors(tmp_path: Path, ca: TlsFiles) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        app = create_app(ApiServices.from_store(EmptyView("gw-tls"), store))
        missing = ApiTlsSettings(certificate=str(tmp_path / "nope.pem"), private_key="k.pem")
        with pytest.raises(ConnectorError, match=r"gateway.api.tls.certificate: no file"):
            ApiServer(app, LOOPBACK, free_port(), tls=missing)
        # The client's key does not belong to the server's certificate.
        mismatched = ApiTlsSettings(certificate=str(ca.server_cert), private_key=str(ca.client_key))
        with pytest.raises(ConnectorError, match="cannot load the certificate"):
            ApiServer(app, LOOPBACK, free_port(), tls=mismatched)
    finally:
        store.dispose()
