"""The parts of a gateway that a mapping reload makes again one at a time: a source's
supervisor and a model's runner. ``bridge.runtime.pipeline`` builds them at start,
``bridge.runtime.reload`` when the mapping changes, the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from bridge import plugins
from bridge.config.resolved import Mapping
from bridge.prepare import Prepared
from bridge.runtime.runner import ModelRunner
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagTable
from bridge.types import Prediction, SourceTag, TagSample

__all__ = ["model_runner", "source_supervisor"]

log = structlog.get_logger(__name__)


def source_supervisor(
    mapping: Mapping,
    name: str,
    queue: asyncio.Queue[Sequence[TagSample]],
    table: TagTable,
) -> SourceSupervisor | None:
    """The supervisor of source ``name`` over its tags; None for a source no tag reads."""
    src = mapping.sources[name]
    tags = mapping.tags_of_source(name)
    if not tags:
        log.warning("source_unused", source=name)
        return None
    source = plugins.source_kinds()[src.kind].factory(
        name, src.settings, [SourceTag(t.id, t.address) for t in tags]
    )
    return SourceSupervisor(source, src.kind, [t.id for t in tags], queue.put, table.mark_bad)


def model_runner(
    prepared: Prepared,
    name: str,
    table: TagTable,
    publish: Callable[[Sequence[Prediction]], Awaitable[None]],
    gateway_id: str,
    boot_id: str,
) -> ModelRunner:
    """The runner of model ``name``; a ``trigger: change`` model takes the table's trigger."""
    return ModelRunner(
        prepared.mapping.models[name],
        prepared.models[name],
        prepared.labels[name],
        table.get,
        publish,
        gateway_id,
        boot_id,
        trigger=table.triggers.get(name),
    )
