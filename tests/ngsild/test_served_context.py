"""The gateway's API serves the NGSI-LD destination's @context (``GET /contexts/...``) over real
HTTP, to anyone, byte-identical to connectors/ngsild/context.json; with
``gateway.api.public_url`` the destination's entities name that URL, and a JSON-LD processor
that fetches the document from the running API expands them as the inline context does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emptyview import EmptyView
from ngsild_broker import NgsiLdBroker
from ngsild_checks import check_request
from pydantic import ValidationError
from pyld import jsonld
from support import LOOPBACK, free_port

from bridge.api import ApiServices, create_app
from bridge.config.spec import ApiSettings
from bridge.connectors import ngsild
from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.connectors.ngsild.config import CORE_CONTEXT
from bridge.connectors.ngsild.context import CONTEXT_FILE, DOCUMENT_NAME, entity_context
from bridge.destination import DestinationContext, Envelope
from bridge.runtime.apiserver import ApiServer
from bridge.store import open_store
from bridge.types import Prediction, Quality, Trigger

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).resolve().parent
CORE_DOCUMENT = HERE / "ngsi-ld-core-context-v1.8.subset.jsonld"
T0 = 1714564800.0


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[str]:
    ngsild.register()  # as the entry point does in an installed gateway
    store = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    settings = ApiSettings(host=LOOPBACK, port=free_port())
    server = ApiServer(
        create_app(ApiServices.from_store(EmptyView("gw-contexts"), store, settings)),
        settings.host,
        settings.port,
    )
    await server.start()
    try:
        yield server.url.rstrip("/")
    finally:
        await server.stop()
        store.dispose()


def _prediction(seq: int) -> Prediction:
    return Prediction(
        id=f"p-{seq}",
        seq=seq,
        asset="pump-01",
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy",
        score=0.5,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.1,
    )


def _settings(url: str) -> NgsiLdSettings:
    return NgsiLdSettings.model_validate(
        {"url": url, "enterprise": "acme", "site": "dallas", "area": "a", "line": "l"}
    )


async def test_the_api_serves_the_context_to_anyone_byte_for_byte(api: str) -> None:
    url = f"{api}/contexts/{DOCUMENT_NAME}"
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.get(url)  # no key: a broker has none
        assert r.status_code == 200, r.text
        assert r.content == CONTEXT_FILE.read_bytes()
        assert r.headers["content-type"] == "application/ld+json"
        assert r.headers["cache-control"].startswith("public, max-age=")
        etag = r.headers["etag"]
        again = await http.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        stale = await http.get(url, headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200 and stale.content == r.content
        missing = await http.get(f"{api}/contexts/nope.jsonld")
        assert missing.status_code == 404
        assert DOCUMENT_NAME in missing.json()["detail"]  # names what is published
        # The API's other operations still need a key.
        assert (await http.get(f"{api}/api/v1/tags")).status_code == 401


async def test_entities_name_the_served_context_and_expand_as_the_inline_one(api: str) -> None:
    served = f"{api}/contexts/{DOCUMENT_NAME}"
    async with NgsiLdBroker() as broker:
        context = DestinationContext("gw-contexts", public_url=api + "/")
        dest = NgsiLdDestination("twin", _settings(broker.url), context)
        inline = NgsiLdDestination("twin", _settings(broker.url), DestinationContext("gw"))
        await dest.start()
        try:
            body = dest.encode(Trigger(_prediction(1)))
            assert await dest.deliver([Envelope("k1", body)]) == [None]
        finally:
            await dest.close()
    sent = broker.requests[0].body
    for entity in sent:  # the asset and its levels
        assert entity["@context"] == [served, CORE_CONTEXT]
    assert broker.requests[0].raw.count(b'"@vocab"') == 0  # nothing inline
    fetched: list[str] = []

    def loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        # Our context from the running API over loopback; the ETSI one from the repository.
        if url == CORE_CONTEXT:
            document = CORE_DOCUMENT.read_text()
        else:
            assert url == served, url
            fetched.append(url)
            document = httpx.get(url, trust_env=False).raise_for_status().text
        return {"contextUrl": None, "documentUrl": url, "document": json.loads(document)}

    asset = sent[0]
    as_inline = dict(asset, **{"@context": entity_context(None, CORE_CONTEXT)})
    assert inline.encode(Trigger(_prediction(1))).count('"@vocab"') == 1
    # pyld blocks: off the loop that serves the API.
    # Schema, and every attribute of every entity landing on one of our IRIs or the core's.
    await asyncio.to_thread(check_request, sent, loader)
    by_url = await asyncio.to_thread(jsonld.expand, asset, {"documentLoader": loader})
    by_inline = await asyncio.to_thread(jsonld.expand, as_inline, {"documentLoader": loader})
    assert fetched, "the served context was not fetched"
    assert by_url == by_inline
    assert any(k.startswith("urn:bridge-gateway:ngsi-ld:") for k in by_url[0])


def test_public_url_must_be_an_http_url() -> None:
    assert ApiSettings(public_url="https://gw-07.plant:8000/").public_url == (
        "https://gw-07.plant:8000"
    )
    for bad in ("gw-07.plant:8000", "ftp://gw/", "https://", "https://gw/?x=1"):
        with pytest.raises(ValidationError, match="public_url"):
            ApiSettings(public_url=bad)


def test_a_configured_context_url_wins_over_the_served_one() -> None:
    settings = NgsiLdSettings.model_validate(
        {
            "url": "http://broker:1026",
            "context_url": "https://contexts.plant/bridge.json",
            "enterprise": "acme",
            "site": "dallas",
            "area": "a",
            "line": "l",
        }
    )
    dest = NgsiLdDestination(
        "twin", settings, DestinationContext("gw", public_url="http://gw:8000")
    )
    body = dest.encode(Trigger(_prediction(1)))
    assert '"@context":["https://contexts.plant/bridge.json",' in body
