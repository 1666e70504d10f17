"""Shared pieces of the lifecycle tests: model variants built at test time, a real mapping, a
real tag table filled with chosen values, and a runner over them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import pytest
from pump_mapping import pump_mapping

from bridge.config import load_mapping
from bridge.config.resolved import Mapping
from bridge.inference import LoadedModel
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.simulators.plant.model_variants import write_variants
from bridge.types import Prediction, Quality, TagSample

ASSETS = ("pump-a", "pump-b", "pump-c")

# Constant readings the bundled model calls healthy (pump-a) and bearing_fault (pump-b).
HEALTHY = {"vibration": 2.0, "bearing_temperature": 50.0, "discharge_pressure": 4.2, "speed": 1470}
FAULTY = {"vibration": 20.0, "bearing_temperature": 90.0, "discharge_pressure": 4.2, "speed": 1470}


@pytest.fixture(scope="session")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_variants(tmp_path_factory.mktemp("models"))


@dataclass
class Rig:
    mapping: Mapping
    table: TagTable
    runner: ModelRunner
    published: list[Prediction] = field(default_factory=list)

    def feed(self, asset: str, values: dict[str, float], quality: Quality = Quality.GOOD) -> None:
        # The table stamps window samples with its own (monotonic) clock: replay the last seconds.
        now, mono = time.time(), time.monotonic()
        for age in (6.0, 4.0, 2.0, 0.5):
            with patch.object(self.table, "monotonic_clock", return_value=mono - age):
                self.table.apply(
                    [
                        TagSample(f"{asset}.{tag}", value, quality, now - age, now - age)
                        for tag, value in values.items()
                    ]
                )


def make_rig(tmp_path: Path, model: Path) -> Rig:
    path = tmp_path / "mapping.yaml"
    path.write_text(pump_mapping(store=tmp_path / "bridge.db", model=model, assets=ASSETS))
    mapping = load_mapping(path)
    table = TagTable(mapping)
    m = mapping.models["pump-health"]
    loaded = LoadedModel.load(model)
    rig_published: list[Prediction] = []

    async def publish(batch: Sequence[Prediction]) -> None:
        rig_published.extend(batch)

    runner = ModelRunner(m, loaded, loaded.labels, table.get, publish, "unit", "boot")
    rig = Rig(mapping, table, runner, rig_published)
    rig.feed("pump-a", HEALTHY)
    rig.feed("pump-b", FAULTY)
    rig.feed("pump-c", HEALTHY, Quality.BAD)  # blocked: never compared
    return rig


@pytest.fixture
def rig(tmp_path: Path, variants: dict[str, Path]) -> Rig:
    return make_rig(tmp_path, variants["pump_health_v1"])


@pytest.fixture
def rig_factory() -> Callable[[Path, Path], Rig]:
    """Another rig (another gateway) over its own tag table: ``rig_factory(folder, model)``."""
    return make_rig
