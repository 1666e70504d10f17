"""Wires the model registry into a running gateway: the watcher, the status feed for sinks that
show model versions (``write_models``), and what the in-process REST API needs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from bridge.config.resolved import Mapping
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.shadow import CandidateComparison
from bridge.lifecycle.switching import RegistryWatcher
from bridge.lifecycle.version_stats import VersionStats
from bridge.runtime.runner import ModelRunner
from bridge.store.db import Store
from bridge.store.registry import Comparison, RegistryRepository
from bridge.types import ModelStatus

__all__ = ["LiveModels", "ModelStatusSink", "live_models", "stored_comparison"]

log = structlog.get_logger(__name__)


@runtime_checkable
class ModelStatusSink(Protocol):
    """A sink that also shows which model versions serve (e.g. the OPC UA ``Models`` folder)."""

    async def write_models(self, statuses: Sequence[ModelStatus]) -> None: ...


@dataclass
class LiveModels:
    """The registry side of a running gateway; the admin API reads stats and wakes the watcher.

    ``start`` seeds the registry with the mapping's models and loads what it says serves, so
    registry versions serve from the first tick; the watcher's own loop is a task of the
    inference stage."""

    name: str
    service: RegistryService
    watcher: RegistryWatcher
    runners: Sequence[ModelRunner]
    # The gateway's live outputs (changed in place by a mapping reload); those that show model
    # versions (``ModelStatusSink``) get the watcher's statuses.
    sinks: Sequence[Any] = ()
    _running: bool = False

    def wake(self) -> None:
        self.watcher.wake()

    def version_stats(self, name: str) -> list[VersionStats]:
        return [st for r in self.runners if r.model.name == name for st in r.stats.values()]

    def status(self, name: str) -> ModelStatus | None:
        runner = next((r for r in self.runners if r.model.name == name), None)
        return self.watcher.status(runner) if runner is not None else None

    async def start(self) -> None:
        await self.watcher.seed()
        await self.watcher.sync()  # registry versions serve from the first tick
        self._running = True
        self.follow_sinks()

    async def close(self) -> None:
        self._running = False
        self.watcher.publish_status = None

    def follow_sinks(self) -> None:
        """Publish statuses while an output shows them (the set changes with a reload); the
        watcher reads accuracy from the store for them, so not otherwise."""
        shown = self._running and any(isinstance(s, ModelStatusSink) for s in self.sinks)
        self.watcher.publish_status = self._publish if shown else None

    async def _publish(self, statuses: Sequence[ModelStatus]) -> None:
        for sink in [s for s in self.sinks if isinstance(s, ModelStatusSink)]:
            try:
                await sink.write_models(statuses)
            except Exception:  # a display must not stop the registry watcher
                log.exception("model_status_write_failed", sink=getattr(sink, "name", "?"))


def live_models(
    mapping: Mapping,
    store: Store,
    runners: Sequence[ModelRunner],
    sinks: Sequence[Any],
    policy: ModelPolicy,
) -> LiveModels:
    """The registry watcher (not yet started) over ``runners``, the status feed for the sinks
    that show model versions, and the registry service the REST API uses."""
    repo = RegistryRepository(store, mapping.gateway.id)

    async def record(rows: Sequence[CandidateComparison]) -> None:
        await asyncio.to_thread(repo.add_comparisons, [stored_comparison(c) for c in rows])

    for runner in runners:
        runner.record_comparisons = record
    watcher = RegistryWatcher(repo, runners, mapping.gateway.models.poll_s, policy)
    # The REST API's registry knows the mapping: an unfitting version is refused at the call.
    service = RegistryService(repo, policy, {r.model.name: r.model for r in runners})
    return LiveModels("registry", service, watcher, runners, sinks)


def stored_comparison(c: CandidateComparison) -> Comparison:
    """The store's row for a runner's comparison (the boundary between domain and store)."""
    return Comparison(
        name=c.model,
        asset=c.asset,
        mode=c.mode,
        active_version=c.active_version,
        candidate_version=c.candidate_version,
        prediction_id=c.prediction_id,
        active_value=c.active_value,
        candidate_value=c.candidate_value,
        candidate_score=c.candidate_score,
        agree=c.agree,
        timestamp=c.timestamp,
        gateway=c.gateway,
    )
