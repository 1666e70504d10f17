"""Wires the model registry into a running gateway: the watcher, the status feed for sinks that
show model versions (``write_models``), and what the in-process REST API needs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from bridge.config.resolved import Mapping
from bridge.lifecycle.policy import policy_of
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.stats import VersionStats
from bridge.lifecycle.switching import RegistryWatcher
from bridge.runtime.models import ModelRunner
from bridge.store.db import Store
from bridge.store.registry import Comparison, RegistryRepository
from bridge.types import ModelStatus

__all__ = ["LiveModels", "ModelStatusSink", "start_lifecycle"]

log = structlog.get_logger(__name__)


@runtime_checkable
class ModelStatusSink(Protocol):
    """A sink that also shows which model versions serve (e.g. the OPC UA ``Models`` folder)."""

    async def write_models(self, statuses: Sequence[ModelStatus]) -> None: ...


@dataclass
class LiveModels:
    """The registry side of a running gateway; the admin API reads stats and wakes the watcher."""

    service: RegistryService
    watcher: RegistryWatcher
    runners: Sequence[ModelRunner]

    def wake(self) -> None:
        self.watcher.wake()

    def version_stats(self, name: str) -> list[VersionStats]:
        return [st for r in self.runners if r.model.name == name for st in r.stats.values()]

    def status(self, name: str) -> ModelStatus | None:
        runner = next((r for r in self.runners if r.model.name == name), None)
        return self.watcher.status(runner) if runner is not None else None


async def start_lifecycle(
    mapping: Mapping, store: Store, runners: Sequence[ModelRunner], sinks: Sequence[Any]
) -> LiveModels:
    """Seed the registry with the mapping's models, load what it says serves, and return the
    watcher (not yet running) with the status feed connected."""
    repo = RegistryRepository(store)
    policy = await asyncio.to_thread(policy_of, mapping)

    async def record(rows: Sequence[Comparison]) -> None:
        await asyncio.to_thread(repo.add_comparisons, rows)

    for runner in runners:
        runner.record_comparisons = record
    watcher = RegistryWatcher(repo, runners, mapping.gateway.models.poll_s, policy)
    await watcher.seed()
    await watcher.sync()  # registry versions serve from the first tick
    status_sinks = [s for s in sinks if isinstance(s, ModelStatusSink)]

    async def publish(statuses: Sequence[ModelStatus]) -> None:
        for sink in status_sinks:
            try:
                await sink.write_models(statuses)
            except Exception:  # a display must not stop the registry watcher
                log.exception("model_status_write_failed", sink=getattr(sink, "name", "?"))

    watcher.publish_status = publish if status_sinks else None
    # The REST API's registry knows the mapping: an unfitting version is refused at the call.
    service = RegistryService(repo, policy, {r.model.name: r.model for r in runners})
    return LiveModels(service, watcher, runners)
