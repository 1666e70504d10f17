"""The mapping after loading: templates expanded, references resolved, connector blocks typed.

Everything after the loader works on these; nothing downstream reads YAML or dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.config.actions import ResolvedAction
from bridge.config.spec import (
    AlertConfig,
    DriftConfig,
    ExplainConfig,
    GatewaySettings,
    ModelOutputs,
    Stat,
)
from bridge.config.yamlsource import LineIndex
from bridge.types import AssetInfo

__all__ = ["Endpoint", "Feature", "Mapping", "ResolvedModel", "ResolvedTag"]


# Not frozen, on purpose: a frozen dataclass sets each field through object.__setattr__, and
# a 100,000-tag mapping builds 100,000 of these (0.2 s of `bridge validate`). Treat as immutable.
@dataclass(slots=True)
class ResolvedTag:
    id: str  # "<asset>.<tag>"
    asset: str
    name: str
    source: str
    address: Any  # the source connector's validated address model
    unit: str
    scale: float
    offset: float
    deadband: float
    clamp: tuple[float, float] | None
    max_age_s: float
    description: str = ""
    # With `convert_to`: ``unit`` above is the unit converted to, ``source_unit`` the one the
    # source's value (after scale/offset) comes in, and ``convert`` the (factor, offset) that
    # bridge.normalize applies: worked out once at load, never per sample.
    source_unit: str = ""
    convert: tuple[float, float] | None = None
    # Republish the unchanged value to the tag outputs this often (``TagTable.readings``).
    heartbeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class Feature:
    tag: str
    stat: Stat
    unit: str = ""  # the model's unit for this input; the loader checked the tag has it

    @property
    def name(self) -> str:
        return f"{self.tag}.{self.stat}"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str
    path: Path
    version: str
    sha256: str | None
    assets: tuple[str, ...]
    input: str
    features: tuple[Feature, ...]
    outputs: ModelOutputs
    labels: tuple[str, ...] | None
    period_s: float
    window_s: float
    min_window_s: float
    max_samples: int
    reference: Path | None = None
    drift: DriftConfig | None = None
    explain: ExplainConfig | None = None
    alerts: AlertConfig = field(default_factory=AlertConfig)
    # `period`: every period_s over all assets; `change`: over the assets whose inputs changed,
    # at most once per min_interval_s (bridge.runtime.trigger).
    trigger: Literal["period", "change"] = "period"
    min_interval_s: float = 0.01
    # `backfill: {predictions: true}`: predictions at period_s over a gap filled from history.
    backfill_predictions: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A source or an output: its name, its kind and the connector's validated settings model."""

    name: str
    kind: str
    settings: Any


@dataclass(frozen=True, slots=True)
class Mapping:
    path: Path
    revision: str  # sha256 of the mapping file's bytes
    gateway: GatewaySettings
    sources: dict[str, Endpoint]
    tags: dict[str, ResolvedTag]
    assets: dict[str, tuple[str, ...]]  # asset -> tag ids
    models: dict[str, ResolvedModel]
    outputs: dict[str, Endpoint]
    index: LineIndex  # key path -> line, for errors found after loading (e.g. model checks)
    # `validate --no-env`: variable -> the keys (dotted) whose value waits for it at run time.
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # asset -> its template and description (for outputs that describe the plant).
    asset_infos: dict[str, AssetInfo] = field(default_factory=dict)
    # `actions:`, every reference checked (bridge.config.actions, evaluated by bridge.actions).
    actions: dict[str, ResolvedAction] = field(default_factory=dict)

    def tags_of_source(self, source: str) -> list[ResolvedTag]:
        return [t for t in self.tags.values() if t.source == source]

    def input_units(self, model: ResolvedModel, asset: str) -> tuple[tuple[str, str], ...]:
        """(tag name, unit) of each input ``model`` reads on ``asset``, once per tag."""
        out: dict[str, str] = {}
        for f in model.features:
            tag = self.tags.get(f"{asset}.{f.tag}")
            if tag is not None and tag.unit:
                out.setdefault(f.tag, tag.unit)
        return tuple(out.items())
