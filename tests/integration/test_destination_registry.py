"""A destination is a connector: a kind registered with ``register_destination`` is validated in
a mapping's ``outputs:``, built by ``durable_outputs`` and fed by the relay from the outbox the
store writer fills; the ``webhook`` connector, as an output, gets the drift alerts. Real SQLite
store, real HTTP receivers."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict
from support import free_port, wait_until

from bridge import plugins
from bridge.config.loader import load_mapping
from bridge.config.spec import OutboxSettings
from bridge.destination import Capabilities, Destination, DestinationContext, Envelope, Outcome
from bridge.destination import Retry as RetryLater
from bridge.drift.events import drift_event_id
from bridge.drift.monitor import DriftCrossing, FeatureWindowStats
from bridge.drift.writer import DriftAlertWriter
from bridge.errors import ConfigError
from bridge.outbox.wiring import durable_outputs
from bridge.plugins import DestinationKind
from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store, open_store
from bridge.store.drift import DriftAlertRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, Prediction, PredictionSlot, Quality, Trigger

pytestmark = pytest.mark.timeout(60)

GATEWAY = "gw-dest"
ASSETS = ("p1", "p2")


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str


class EchoPost:
    """A third-party destination in a few lines: POSTs every prediction but those whose value
    is ``skip``, one per request, and leaves every retry to the relay."""

    def __init__(self, name: str, settings: EchoSettings, context: DestinationContext) -> None:
        self.name = name
        self._url = settings.url
        self._gateway = context.gateway_id
        self.capabilities = Capabilities(concurrency=2)
        self._client: httpx.AsyncClient | None = None
        self.sent = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=5.0, trust_env=False)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok", counters={"sent": self.sent})

    def encode(self, event: Trigger) -> str | None:
        p = event.prediction
        if p.value == "skip":
            return None
        return json.dumps({"gateway": self._gateway, "asset": p.asset, "seq": p.seq})

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        assert self._client is not None
        out: list[Outcome] = []
        for key, body in batch:
            headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
            try:
                response = await self._client.post(self._url, content=body, headers=headers)
            except httpx.TransportError as exc:
                out.append(RetryLater(type(exc).__name__))
                continue
            self.sent += response.is_success
            out.append(None if response.is_success else RetryLater(f"HTTP {response.status_code}"))
        return out


def _echo(name: str, settings: Any, context: DestinationContext) -> Destination:
    return EchoPost(name, settings, context)


@pytest.fixture
def echo_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed connectors plus ``echo-post``, for this test only."""
    plugins.load_plugins()
    monkeypatch.setattr(plugins, "_destinations", dict(plugins.destination_kinds()))
    plugins.register_destination(DestinationKind("echo-post", EchoSettings, _echo))
    yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[MesReceiver]:
    r = MesReceiver(port=free_port())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


MAPPING = """\
version: 1
gateway: {{id: {gateway}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets: {{}}
outputs:
  {name}:
    kind: {kind}
    url: {url}
{extra}"""


def mapping_file(tmp_path: Path, kind: str, url: str, extra: str = "", name: str = "out") -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING.format(gateway=GATEWAY, name=name, kind=kind, url=url, extra=extra))
    return path


def prediction(asset: str, seq: int, value: str = "ok") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/m/{seq}")),
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=0.5,
        quality=Quality.GOOD,
        timestamp=1714564800.0 + seq,
        input_age_s=0.1,
    )


def test_a_registered_kind_validates_its_output_block(echo_kind: None, tmp_path: Path) -> None:
    path = mapping_file(tmp_path, "echo-post", "http://127.0.0.1:1/", extra="    retries: 3\n")
    with pytest.raises(ConfigError, match="retries"):
        load_mapping(path)


async def test_a_registered_destination_is_built_from_outputs_and_fed_by_the_relay(
    echo_kind: None, tmp_path: Path, store: Store, receiver: MesReceiver
) -> None:
    mapping = load_mapping(mapping_file(tmp_path, "echo-post", receiver.events_url))
    assert [o.kind for o in mapping.outputs.values()] == ["echo-post"]
    slots = tuple(PredictionSlot(a, "m", "1", "ab" * 32, ("ok",)) for a in ASSETS)
    receiver.fail(503, count=2)  # the relay, not the destination, retries these
    durable = durable_outputs(
        mapping.outputs.values(),
        DestinationContext(GATEWAY, slots),
        OutboxRepository(store),
        OutboxSettings(),
    )
    [destination] = durable.destinations
    assert isinstance(destination, EchoPost)
    writer = StoreSink(store, outbox=durable.feeds, batch_size=4)
    await writer.start()
    await durable.start()
    try:
        batch = [prediction(a, s) for s in range(1, 6) for a in ASSETS]
        skipped = prediction("p1", 6, value="skip")
        await writer.write([*batch, skipped])
        await wait_until(lambda: len(receiver.calls) == len(batch), 15, what="every event")
        by_asset: dict[str, list[int]] = {}
        for call in receiver.calls:
            by_asset.setdefault(call.body["asset"], []).append(call.body["seq"])
        assert by_asset == {a: [1, 2, 3, 4, 5] for a in ASSETS}  # in order per asset
        assert {c.idempotency_key for c in receiver.calls} == {p.id for p in batch}
        assert receiver.duplicate_count == 0
        [relay] = durable.relays
        await wait_until(lambda: relay.retried >= 2, 5, what="the 503s retried by the relay")
        names = {probe().name for probe in durable.probes}
        assert names == {"out", "outbox:out"}  # the destination's health and its relay's
    finally:
        await durable.close()
        await writer.close()


async def test_a_webhook_output_gets_the_drift_alerts(
    tmp_path: Path, store: Store, receiver: MesReceiver
) -> None:
    path = mapping_file(tmp_path, "webhook", receiver.events_url, name="retrain")
    mapping = load_mapping(path)
    slots = (PredictionSlot("p1", "m", "1", "ab" * 32, ("ok",)),)
    durable = durable_outputs(
        mapping.outputs.values(),
        DestinationContext(GATEWAY, slots),
        OutboxRepository(store),
        OutboxSettings(),
    )
    # No rules: the webhook declines predictions and takes every drift alert.
    assert [f.destination for f in durable.alert_feeds] == ["retrain"]
    drift = DriftAlertWriter(DriftAlertRepository(store), GATEWAY, durable.alert_feeds)
    writer = StoreSink(store, outbox=durable.feeds)
    stats = FeatureWindowStats("vib.mean", 1.7, 6.0, 0.5, 5.0, 7.0, 2.0, 0.3)
    crossing = DriftCrossing("p1", 1.7, 0.25, 60, ("vib.mean",), (stats,), 1714564800.0)
    await writer.start()
    await durable.start()
    await drift.start()
    try:
        await writer.write([prediction("p1", s) for s in range(3)])
        drift.raise_crossing("m", "1", "ab" * 32, crossing, None, prediction("p1", 3))
        await wait_until(lambda: len(receiver.calls) == 1, 15, what="the drift event")
        [call] = receiver.calls
        assert call.idempotency_key == drift_event_id(GATEWAY, "m", "p1", crossing.at)
        assert call.body["model"] == "m" and call.body["asset"] == "p1"
        await wait_until(lambda: writer.health().counters["written"] == 3, 5)
        # The row goes once the reply is recorded, a moment after the receiver has the call.
        outbox = OutboxRepository(store)
        await wait_until(lambda: outbox.pending_count("retrain") == 0, 5, what="outbox empty")
        assert len(receiver.calls) == 1  # the predictions made no events
    finally:
        await drift.close()
        await durable.close()
        await writer.close()
