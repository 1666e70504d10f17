"""The NGSI-LD destination over TLS, set up as the MES is (``bridge.client_tls``): a broker with
a certificate of the plant CA that asks for a client certificate (mutual TLS). With the CA and
the client certificate the batch is taken; without the plant CA nothing is sent and the retry
says which setting to fix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import testca
from https_receiver import HttpsReceiver

from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, Quality, Trigger

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> testca.TlsFiles:
    return testca.make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def broker(ca: testca.TlsFiles) -> AsyncIterator[HttpsReceiver]:
    async with HttpsReceiver(ca.server_cert, ca.server_key, client_ca=ca.ca) as server:
        yield server


def destination(url: str, tls: dict[str, str] | None) -> NgsiLdDestination:
    settings = NgsiLdSettings.model_validate(
        {
            "url": url,
            "tls": tls,
            "enterprise": "acme",
            "site": "dallas",
            "area": "packaging",
            "line": "line-4",
            "timeout_s": 3,
        }
    )
    return NgsiLdDestination("twin", settings, DestinationContext("gw"))


def batch(dest: NgsiLdDestination) -> list[Envelope]:
    p = Prediction("p1", 1, "pump-01", "health", "1", "ab", "healthy", 0.9, Quality.GOOD,
                   1714564800.0, 0.1)  # fmt: skip
    return [Envelope(p.id, dest.encode(Trigger(p)))]


async def test_upserts_with_the_plant_ca_and_a_client_certificate(
    ca: testca.TlsFiles, broker: HttpsReceiver
) -> None:
    dest = destination(
        broker.url,
        {"ca_file": str(ca.ca), "client_certificate": str(ca.client_cert),
         "client_key": str(ca.client_key)},
    )  # fmt: skip
    await dest.start()
    try:
        assert await dest.deliver(batch(dest)) == [None]
    finally:
        await dest.close()
    (call,) = broker.calls
    assert call.path == "/ngsi-ld/v1/entityOperations/upsert"
    assert call.body.startswith(b'[{"id":"urn:ngsi-ld:Asset:pump-01"')


async def test_without_the_plant_ca_nothing_is_sent_and_the_fix_is_named(
    broker: HttpsReceiver,
) -> None:
    dest = destination(broker.url, None)
    await dest.start()
    try:
        (outcome,) = await dest.deliver(batch(dest))
    finally:
        await dest.close()
    assert isinstance(outcome, Retry)
    assert "certificate verify failed" in outcome.reason
    assert "outputs.twin.tls.ca_file" in outcome.reason
    assert broker.calls == []
