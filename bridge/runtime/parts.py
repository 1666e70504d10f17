"""The parts of a gateway that a mapping reload makes again one at a time: a source's
supervisor and a model's runner. ``bridge.runtime.pipeline`` builds them at start,
``bridge.runtime.reload`` when the mapping changes, the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence

import structlog

from bridge import plugins
from bridge.config.resolved import Mapping, ResolvedTag
from bridge.prepare import Prepared
from bridge.runtime.runner import ModelRunner
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagTable
from bridge.types import Prediction, SourceTag, TagSample

__all__ = ["model_runner", "source_supervisor", "source_tags"]

log = structlog.get_logger(__name__)


def source_supervisor(
    mapping: Mapping,
    name: str,
    queue: asyncio.Queue[Sequence[TagSample]],
    table: TagTable,
    assets: Collection[str] | None = None,
) -> SourceSupervisor | None:
    """The supervisor of source ``name`` over its tags (in a fleet, only those of the
    ``assets`` this gateway serves); None for a source no tag reads."""
    src = mapping.sources[name]
    tags = source_tags(mapping, name, assets)
    if not tags:
        if assets is None:
            log.warning("source_unused", source=name)
        return None
    source = plugins.source_kinds()[src.kind].factory(
        name, src.settings, [SourceTag(t.id, t.address) for t in tags]
    )
    return SourceSupervisor(source, src.kind, [t.id for t in tags], queue.put, table.mark_bad)


def source_tags(mapping: Mapping, name: str, assets: Collection[str] | None) -> list[ResolvedTag]:
    """The tags source ``name`` reads for ``assets`` (None: for every asset)."""
    tags = mapping.tags_of_source(name)
    return tags if assets is None else [t for t in tags if t.asset in assets]


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
        past=table.take_past,
    )
