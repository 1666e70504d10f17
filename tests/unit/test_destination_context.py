"""What the gateway tells a destination it builds (``bridge.destination.DestinationContext``):
the mapping's assets with their templates and descriptions, its tags with unit, scale, offset,
clamp, source and address as written, and its revision; a reload that keeps the destination
hands it the new ones (``FollowsContext``). A real mapping file through the loader, the real
``Outputs`` over a SQLite store in tmp_path, a destination kind registered for the test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from bridge import plugins
from bridge.config import load_mapping
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome
from bridge.plugins import DestinationKind
from bridge.prepare import Prepared
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.outputs import Outputs
from bridge.runtime.plantfacts import address_text
from bridge.store.alerts import AlertRepository
from bridge.store.db import Store, open_store
from bridge.store.sink import StoreSink
from bridge.types import AssetInfo, ComponentHealth, TagInfo, Trigger

MAPPING = """
version: 1
gateway: {{id: facts-gw, store: "sqlite:///unused.db"}}
sources:
  scada: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
  plc: {{kind: modbus, host: 127.0.0.1, port: 5020}}
templates:
  pump:
    description: Centrifugal pump
    tags:
      vibration:
        source: scada
        address: "nsu=urn:plant;s=Pump{{n}}.Vibration"
        unit: mm/s
assets:
  pump-01: {{template: pump, vars: {{n: "01"}}, description: Feed pump 1}}
  tank-1:
    tags:
      temperature:
        source: plc
        address: {{table: holding, address: 0, type: float32, word_order: CDAB}}
        unit: degF
        convert_to: degC
        scale: {scale}
        offset: -3.5
        clamp: [-40, 200]
        description: Tank temperature
outputs:
  probe: {{kind: facts-probe}}
"""


class ProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Probe:
    """A destination that keeps what it was told."""

    def __init__(self, name: str, context: DestinationContext) -> None:
        self.name = name
        self.context = context
        self.followed: list[DestinationContext] = []
        self.capabilities = Capabilities()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")

    def encode(self, event: Trigger) -> str | None:
        return None

    async def deliver(self, batch: Sequence[Envelope]) -> Sequence[Outcome]:
        return [None] * len(batch)

    async def follow_context(self, context: DestinationContext) -> None:
        self.followed.append(context)


built: list[Probe] = []


def _probe(name: str, settings: Any, context: DestinationContext) -> Probe:
    probe = Probe(name, context)
    built.append(probe)
    return probe


@pytest.fixture(autouse=True)
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    plugins.load_plugins()
    monkeypatch.setattr(plugins, "_destinations", dict(plugins.destination_kinds()))
    plugins.register_destination(DestinationKind("facts-probe", ProbeSettings, _probe))
    built.clear()
    yield
    built.clear()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        yield s
    finally:
        s.dispose()


def prepared(path: Path, scale: float) -> Prepared:
    path.write_text(MAPPING.format(scale=scale))
    return Prepared(load_mapping(path, {}), {}, {})


def outputs_of(first: Prepared, store: Store) -> Outputs:
    alerts = AlertSink(AlertRepository(store, gateway="facts-gw"), ())
    return Outputs(first, store, PredictionFanout([]), StoreSink(store), alerts, None)


async def test_a_destination_is_told_the_mappings_assets_tags_and_revision(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "mapping.yaml"
    first = prepared(path, 0.5)
    outputs = outputs_of(first, store)
    [probe] = built
    context = probe.context
    assert context.gateway_id == "facts-gw"
    assert context.revision == hashlib.sha256(path.read_bytes()).hexdigest()
    assert context.assets == (
        AssetInfo("pump-01", "pump", "Feed pump 1"),
        AssetInfo("tank-1", "", ""),
    )
    assert context.tag_infos == (
        TagInfo(
            "pump-01.vibration",
            "pump-01",
            "vibration",
            "mm/s",
            1.0,
            0.0,
            None,
            "scada",
            "nsu=urn:plant;s=Pump01.Vibration",
        ),
        TagInfo(
            "tank-1.temperature",
            "tank-1",
            "temperature",
            "degC",
            0.5,
            -3.5,
            (-40.0, 200.0),
            "plc",
            "{table: holding, address: 0, type: float32, word_order: CDAB}",
            "Tank temperature",
            "degF",
        ),
    )
    # The registry's model statuses reach every output that shows them, destinations too.
    assert probe in outputs.all_outputs

    # A reload that changes a tag keeps the destination and hands it the new facts.
    second = prepared(path, 0.25)
    change = await outputs.apply(second, [])
    assert change.restarted == () and built == [probe]
    [followed] = probe.followed
    assert followed.revision == second.mapping.revision != context.revision
    assert followed.tag_infos[1].scale == 0.25
    assert followed.assets == context.assets


def test_an_address_reads_as_the_mapping_wrote_it() -> None:
    class Nested(BaseModel):
        type: str
        field: str | None = None

    class Address(BaseModel):
        topic: str
        pointer: str = ""
        count: int = 0
        flag: bool = False
        event: Nested | None = None

    assert address_text(Address(topic="plant/a b")) == "plant/a b"  # one key: its text
    assert (
        address_text(Address(topic="t", pointer="/x", count=0))
        == "{topic: t, pointer: /x, count: 0}"
    )
    # Strings YAML would read as something else, or not as one scalar, are quoted.
    assert address_text(Address(topic="true", pointer="a: b", flag=True)) == (
        '{topic: "true", pointer: "a: b", flag: true}'
    )
    nested = Address(topic="12", event=Nested(type="AlarmConditionType", field="ActiveState/Id"))
    assert address_text(nested) == (
        '{topic: "12", event: {type: AlarmConditionType, field: ActiveState/Id}}'
    )
