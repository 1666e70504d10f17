"""MES REST and the retraining webhook over HTTPS with a plant CA and a client certificate,
against a real uvicorn HTTPS server on 127.0.0.1 that requires one (mutual TLS); and no
credential of the MES URL in logs or health."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import testca
from https_receiver import HttpsReceiver
from pydantic import ValidationError
from structlog.testing import capture_logs
from support import free_port, wait_until

from bridge.connectors.mes import MesDestination, MesSettings
from bridge.connectors.webhook import WebhookDestination, WebhookSettings
from bridge.destination import DestinationContext, Envelope, Outcome
from bridge.errors import ConnectorError
from bridge.simulators.mes import MesReceiver
from bridge.types import PredictionSlot

PASSWORD = "pl4nt-Secr3t-pw"
TOKEN = "tok-Zy81-query"


async def send_one(dest: MesDestination | WebhookDestination, key: str, body: str) -> Outcome:
    (outcome,) = await dest.deliver([Envelope(key, body)])
    return outcome


def drift_webhook(url: str, **fields: Any) -> WebhookDestination:
    """A webhook as the gateway builds it from a model's ``drift.webhook*`` keys."""
    context = DestinationContext("gw", setting_keys=(("tls", "drift.webhook_tls"),))
    return WebhookDestination("webhook-m", WebhookSettings(url=url, **fields), context)


@pytest.fixture
def ca(tmp_path: Path) -> testca.TlsFiles:
    return testca.make_ca(tmp_path / "pki")


@pytest.fixture
async def mutual(ca: testca.TlsFiles) -> AsyncIterator[HttpsReceiver]:
    async with HttpsReceiver(ca.server_cert, ca.server_key, client_ca=ca.ca) as server:
        yield server


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., MesDestination]]:
    sinks: list[MesDestination] = []

    def make(url: str, **fields: Any) -> MesDestination:
        settings = MesSettings(
            url=url, initial_backoff_s=0.02, max_backoff_s=0.1, timeout_s=2.0, **fields
        )
        sink = MesDestination(
            "mes", settings, DestinationContext("gw", (PredictionSlot("p", "m", "1", ""),))
        )
        sinks.append(sink)
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            await sink.close()


def tls(ca: testca.TlsFiles, *, with_ca: bool = True, client: bool = True) -> dict[str, str]:
    out = {"ca_file": str(ca.ca)} if with_ca else {}
    if client:
        out |= {"client_certificate": str(ca.client_cert), "client_key": str(ca.client_key)}
    return out


async def _fails_with(deliver: asyncio.Task[Any], health: Callable[[], Any]) -> str:
    """Why a delivery failed: a destination either returns ``Retry`` (the relay retries) or
    keeps retrying by itself; either way it is never accepted and health says why."""
    try:
        await wait_until(
            lambda: deliver.done() or health().state == "degraded", timeout=10, what="a failure"
        )
        if deliver.done():
            outcome = deliver.result()
            reason = getattr(outcome, "reason", None)  # a Retry: neither accepted nor rejected
            assert isinstance(reason, str), f"not a failure to retry: {outcome!r}"
            assert health().state == "degraded"
            return f"{reason} | {health().detail}"
        return str(health().detail)
    finally:
        deliver.cancel()
        await asyncio.gather(deliver, return_exceptions=True)


async def test_mes_delivers_with_plant_ca_and_client_certificate(
    ca: testca.TlsFiles, mutual: HttpsReceiver, make_sink: Callable[..., MesDestination]
) -> None:
    sink = make_sink(f"{mutual.url}/api/v1/events", tls=tls(ca))
    await sink.start()
    assert await asyncio.wait_for(send_one(sink, "key-1", '{"n": 1}'), 10) is None
    assert [(c.path, c.body, c.idempotency_key) for c in mutual.calls] == [
        ("/api/v1/events", b'{"n": 1}', "key-1")
    ]
    assert sink.health().state == "ok"


async def test_mes_without_the_plant_ca_refuses_the_certificate(
    mutual: HttpsReceiver, make_sink: Callable[..., MesDestination]
) -> None:
    # The default trust (public CAs) does not know the plant CA: no delivery, a clear reason,
    # and nothing sent another way.
    sink = make_sink(f"{mutual.url}/api/v1/events")
    await sink.start()
    detail = await _fails_with(asyncio.create_task(send_one(sink, "k", "{}")), sink.health)
    assert "certificate was refused" in detail and "certificate verify failed" in detail
    assert "outputs.mes.tls.ca_file" in detail
    assert mutual.calls == []


async def test_mes_without_client_certificate_is_refused_by_the_server(
    ca: testca.TlsFiles, mutual: HttpsReceiver, make_sink: Callable[..., MesDestination]
) -> None:
    sink = make_sink(f"{mutual.url}/api/v1/events", tls=tls(ca, client=False))
    await sink.start()
    detail = await _fails_with(asyncio.create_task(send_one(sink, "k", "{}")), sink.health)
    assert mutual.calls == []
    assert "reset the TLS connection" in detail, detail
    assert "outputs.mes.tls.client_certificate" in detail


async def test_webhook_delivers_with_ca_and_client_certificate(
    ca: testca.TlsFiles, mutual: HttpsReceiver
) -> None:
    from bridge.client_tls import ClientTls

    hook = drift_webhook(f"{mutual.url}/retrain", tls=ClientTls(**tls(ca)), max_backoff_s=0.1)
    await hook.start()
    try:
        assert await asyncio.wait_for(send_one(hook, "drift-1", '{"model": "m"}'), 10) is None
    finally:
        await hook.close()
    assert [(c.path, c.idempotency_key) for c in mutual.calls] == [("/retrain", "drift-1")]


async def test_webhook_without_the_ca_refuses_the_certificate(mutual: HttpsReceiver) -> None:
    hook = drift_webhook(f"{mutual.url}/retrain", initial_backoff_s=0.02, max_backoff_s=0.1)
    await hook.start()
    try:
        detail = await _fails_with(asyncio.create_task(send_one(hook, "d", "{}")), hook.health)
    finally:
        await hook.close()
    assert "certificate was refused" in detail and "drift.webhook_tls.ca_file" in detail
    assert mutual.calls == []


def test_tls_settings_with_an_http_url_are_refused(ca: testca.TlsFiles) -> None:
    with pytest.raises(ValidationError, match="not https://"):
        MesSettings(url="http://127.0.0.1:1/events", tls=tls(ca))


# -- credentials of the URL stay out of logs and health ------------------------------------


async def test_mes_url_credentials_are_not_logged(make_sink: Callable[..., MesDestination]) -> None:
    mes = MesReceiver(port=free_port())
    await mes.start()
    try:
        url = f"http://gateway:{PASSWORD}@127.0.0.1:{mes.port}/api/v1/events?token={TOKEN}"
        with capture_logs() as logs:
            sink = make_sink(url)
            await sink.start()
            assert await asyncio.wait_for(send_one(sink, "k1", '{"n": 1}'), 10) is None
            await sink.close()
    finally:
        await mes.stop()
    # The credentials were used (HTTP Basic) ...
    [call] = mes.calls
    assert (
        call.authorization == "Basic " + base64.b64encode(f"gateway:{PASSWORD}".encode()).decode()
    )
    # ... and not written anywhere.
    started = [e for e in logs if e["event"] == "mes_destination_started"]
    assert started and started[0]["url"].startswith("http://***@127.0.0.1:")
    assert "token=***" in started[0]["url"]
    text = repr(logs)
    assert PASSWORD not in text and TOKEN not in text


async def test_mes_failure_detail_has_no_credentials(
    make_sink: Callable[..., MesDestination],
) -> None:
    port = free_port()  # nothing listens: connection refused, retried
    sink = make_sink(f"http://gateway:{PASSWORD}@127.0.0.1:{port}/events?token={TOKEN}")
    with capture_logs() as logs:
        await sink.start()
        detail = await _fails_with(asyncio.create_task(send_one(sink, "k", "{}")), sink.health)
    assert "ConnectError" in detail
    assert PASSWORD not in detail and TOKEN not in detail
    assert PASSWORD not in repr(logs) and TOKEN not in repr(logs)


async def test_start_refuses_a_ca_file_gone_since_validation(
    tmp_path: Path, ca: testca.TlsFiles, make_sink: Callable[..., MesDestination]
) -> None:
    moved = tmp_path / "plant-ca.pem"
    moved.write_bytes(ca.ca.read_bytes())
    sink = make_sink("https://127.0.0.1:1/events", tls={"ca_file": str(moved)})
    moved.unlink()
    with pytest.raises(ConnectorError, match=r"ca_file: no such file: .*plant-ca.pem"):
        await sink.start()
