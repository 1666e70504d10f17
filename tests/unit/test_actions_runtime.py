"""The action runner on a real SQLite store and tag table, without sockets: an action of an
asset this gateway does not serve (a fleet's lease is another's) decides and writes nothing,
and the read-back comparison is exact for integers and bools, float32-exact for float32."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from support import wait_until

from bridge.config import load_mapping
from bridge.runtime.actions import ActionRunner, read_back_matches
from bridge.runtime.tagtable import TagTable
from bridge.store.actions import ActionEventFilter, ActionRepository
from bridge.store.alerts import AlertRepository
from bridge.store.db import open_store
from bridge.types import Quality, TagSample, TargetWriter

ROOT = Path(__file__).resolve().parents[2]
MAPPING = """version: 1
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
  plc: {kind: modbus, host: 127.0.0.1}
assets:
  pump-01:
    tags:
      temp: {source: plant, address: "nsu=urn:p;s=T"}
actions:
  cool:
    asset: pump-01
    target: {modbus: {source: plc, table: holding, address: 20, type: uint16}}
    trigger: {tag: "temp > 50"}
    value: {constant: 100}
    limits: {min: 0, max: 200}
    mode: auto
"""


def _never(source: str) -> TargetWriter:
    raise AssertionError(f"a writer of {source} was made for an asset not served")


async def test_an_action_of_an_asset_not_served_writes_nothing(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models", dirs_exist_ok=True)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    mapping = load_mapping(tmp_path / "mapping.yaml")
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    table = TagTable(mapping)
    repo = ActionRepository(store, "gw")
    runner = ActionRunner(
        mapping.actions,
        repo,
        AlertRepository(store),
        table,
        mapping.sources,
        mapping.models,
        serving=lambda model: None,
        served=lambda asset: False,
        make_writer=_never,
    )
    try:
        await runner.start()
        await runner.arm("cool", "key:op")
        table.apply([TagSample("pump-01.temp", 60.0, Quality.GOOD, time.time())])
        await wait_until(lambda: runner.counters["not_served"] >= 1, 5, what="the event")
        await asyncio.sleep(0.1)
        assert repo.events(ActionEventFilter()) == []
        assert runner.counters["evaluated"] == 0
    finally:
        await runner.close()
        store.dispose()


@pytest.mark.parametrize(
    ("kind", "written", "back", "same"),
    [
        ("uint16", 1150, 1150, True),
        ("uint16", 1150, 1151, False),
        ("int32", 5, True, False),
        ("bool", True, True, True),
        ("bool", True, 1, False),
        ("float32", 0.1, 0.10000000149011612, True),
        ("float32", 1150.0, 1150.0001, False),
        ("float64", 0.1, 0.1, True),
        ("float64", 0.1, 0.10000000149011612, False),
        ("float32", 1.0, float("nan"), False),
    ],
)
def test_read_back_comparison(kind: str, written: float, back: float, same: bool) -> None:
    assert read_back_matches(kind, written, back) is same
