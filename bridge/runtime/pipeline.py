"""Wires the flow together: sources -> normalize -> windows -> models -> sinks, plus the REST API.

Start order is store and sinks, then inference, then normalization, then sources; stop is the
reverse, draining the normalize queue so nothing read is lost on the way down.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from bridge import registry
from bridge.api.view import ModelInfo
from bridge.outbox.relay import Relay
from bridge.outbox.wiring import split_outputs
from bridge.prepare import Prepared
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.apiserver import ApiServer, api_server
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.insight_wiring import Insight, StoreFeedback, build_insight
from bridge.runtime.lifecycle import start_lifecycle
from bridge.runtime.lossalerts import LossAlerts
from bridge.runtime.models import ModelRunner
from bridge.runtime.retention import retention_for
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagTable
from bridge.runtime.tasks import TaskSet
from bridge.runtime.view import RuntimeView
from bridge.store.alerts import AlertRepository
from bridge.store.db import open_store
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.sequences import SequenceRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, PredictionSlot, Sink, SinkContext, SourceTag, TagSample

__all__ = ["Gateway", "run_gateway"]

log = structlog.get_logger(__name__)

NORMALIZE_QUEUE_BATCHES = 1024


@dataclass
class Gateway:
    """The running parts, for whoever needs to look inside (tests, the demo)."""

    table: TagTable
    fanout: PredictionFanout
    runners: list[ModelRunner]
    supervisors: list[SourceSupervisor]
    sinks: list[Sink]
    api: ApiServer | None
    relays: list[Relay] = field(default_factory=list)
    insight: Insight | None = None


async def run_gateway(
    prepared: Prepared, stop: asyncio.Event, on_started: asyncio.Queue[Gateway] | None = None
) -> None:
    """Run until ``stop`` is set; raise if a part of the gateway failed."""
    mapping = prepared.mapping
    gid = mapping.gateway.id
    boot_id = uuid.uuid4().hex[:12]
    tasks = TaskSet(stop)
    log.info(
        "gateway_starting",
        gateway=gid,
        mapping=str(mapping.path),
        revision=mapping.revision[:12],
        tags=len(mapping.tags),
        assets=len(mapping.assets),
        models=len(mapping.models),
    )

    durability = mapping.gateway.durability
    store = await asyncio.to_thread(
        lambda: open_store(
            mapping.gateway.store,
            synchronous=durability.synchronous,
            profile=durability.profile,
        )
    )
    slots = tuple(
        PredictionSlot(asset, name, m.version, prepared.models[name].sha256, prepared.labels[name])
        for name, m in mapping.models.items()
        for asset in m.assets
    )
    # Operator feedback (HMI methods) reaches the store through this narrow service.
    feedback = StoreFeedback(LabelRepository(store), LineageRepository(store))
    context = SinkContext(gid, slots, feedback=feedback)
    sink_kinds = registry.sink_kinds()
    outputs = [
        sink_kinds[out.kind].factory(out.name, out.settings, context)
        for out in mapping.outputs.values()
    ]
    # Durable outputs (mes-rest) are fed from the outbox, written with each prediction batch.
    # The gateway id names its outbox leases: a restarted gateway takes its own back at once.
    repo = OutboxRepository(store, holder=gid)
    _, durable = split_outputs(outputs, repo, mapping.gateway.outbox, slots)
    # Predictions the store writer cannot keep become alerts (written once the store is back).
    loss_alerts = LossAlerts(AlertRepository(store))
    # Old rows leave the store in batches; a low disk degrades health and raises an alert.
    retention = retention_for(mapping.gateway, store)
    store_sink = StoreSink(
        store,
        outbox=durable.feeds,
        mapping_revision=mapping.revision,
        on_drop=loss_alerts.raise_for,
        gateway_id=gid,
    )
    alerts = AlertSink.for_models(AlertRepository(store), slots, mapping.models)
    sinks: list[Sink] = [store_sink, alerts, *outputs]

    table = TagTable(mapping)
    # The store writer is the sink that makes the runner wait while its queue is full
    # (backpressure): last, so the live sinks (the HMI server) have each prediction meanwhile.
    live_sinks = [s for s in sinks if not durable.owns(s) and s is not store_sink]
    fanout = PredictionFanout([*live_sinks, store_sink])
    runners = [
        ModelRunner(
            m, prepared.models[name], prepared.labels[name], table.get, fanout.publish, gid, boot_id
        )
        for name, m in mapping.models.items()
    ]
    # Sequence numbers go on from the last committed ones (an MES orders by them).
    sequences = SequenceRepository(store)
    for runner in runners:
        runner.resume(await asyncio.to_thread(sequences.last, gid, runner.model.name))
    # Registry versions replace the mapping's files before the first tick (bridge.lifecycle).
    live = await start_lifecycle(mapping, store, runners, sinks)
    # Drift scores and explanations, drift alerts to the MES outbox and retraining webhooks.
    insight = build_insight(mapping, store, runners, durable.alert_feeds, mapping.gateway.outbox)
    queue: asyncio.Queue[Sequence[TagSample]] = asyncio.Queue(NORMALIZE_QUEUE_BATCHES)
    source_kinds = registry.source_kinds()
    supervisors = []
    for src in mapping.sources.values():
        tags = mapping.tags_of_source(src.name)
        if not tags:
            log.warning("source_unused", source=src.name)
            continue
        source = source_kinds[src.kind].factory(
            src.name, src.settings, [SourceTag(t.id, t.address) for t in tags]
        )
        supervisors.append(
            SourceSupervisor(source, src.kind, [t.id for t in tags], queue.put, table.mark_bad)
        )

    now = time.time()
    infos = [
        ModelInfo(
            name,
            m.version,
            prepared.models[name].sha256,
            str(m.path),
            now,
            m.assets,
            tuple(f.name for f in m.features),
        )
        for name, m in mapping.models.items()
    ]
    probes = (
        [s.health for s in supervisors]
        + [r.health for r in runners]
        + [s.health for s in sinks]
        + [loss_alerts.health, retention.health]
        + [r.health for r in durable.relays]
        + [lambda: _normalize_health(table, queue)]
        + [lambda: insight.writer.health()]
        + [r.health for r in insight.relays]
    )
    view = RuntimeView(gid, table, fanout, infos, probes, now)
    api = None
    if mapping.gateway.api.enabled:
        api = api_server(mapping.gateway.api, view, store, live, insight.insights)
    gateway = Gateway(table, fanout, runners, supervisors, sinks, api, durable.relays, insight)

    started: list[Sink] = []
    try:
        await loss_alerts.start()
        await retention.start()
        for sink in sinks:
            await sink.start()
            started.append(sink)
        await durable.start()
        await insight.start()
        if api is not None:
            await api.start()
        for runner in runners:
            tasks.spawn(f"model:{runner.model.name}", runner.run())
        tasks.spawn("model:registry", live.watcher.run())
        tasks.spawn("normalize", _normalize(queue, table))
        for sup in supervisors:
            tasks.spawn(f"source:{sup.name}", sup.run())
        log.info(
            "gateway_started",
            gateway=gid,
            sources=len(supervisors),
            sinks=len(sinks),
            api=api.url if api else None,
        )
        # What start-up built (the OPC UA server's address space, the API's routes, the model
        # sessions) lives as long as the process: out of the collector's reach, a full
        # collection walks only what is made afterwards. Walking it all took 160-180 ms every
        # few seconds at 10,000 updates/s: the p99 of the HMI latency (bench/README.md).
        # Collected first, so no garbage of the start-up is frozen with it.
        gc.collect()
        gc.freeze()
        if on_started is not None:
            on_started.put_nowait(gateway)
        await stop.wait()
    finally:
        log.info("gateway_stopping", gateway=gid)
        await tasks.cancel("source:")
        _drain(queue, table)
        await tasks.cancel("normalize", "model:")
        if api is not None:
            await api.stop()
        await durable.close()
        await insight.close()
        for sink in reversed(started):
            try:
                await sink.close()
            except Exception:
                log.exception("sink_close_failed", sink=sink.name)
        await retention.close()
        await loss_alerts.close()  # after the store writer: it reports what it could not keep
        await asyncio.to_thread(store.dispose)
        log.info(
            "gateway_stopped", gateway=gid, predictions=fanout.published, tag_updates=table.updates
        )
    if tasks.failure is not None:
        raise tasks.failure


async def _normalize(queue: asyncio.Queue[Sequence[TagSample]], table: TagTable) -> None:
    while True:
        batch = await queue.get()
        table.apply(batch)


def _drain(queue: asyncio.Queue[Sequence[TagSample]], table: TagTable) -> None:
    while not queue.empty():
        table.apply(queue.get_nowait())


def _normalize_health(
    table: TagTable, queue: asyncio.Queue[Sequence[TagSample]]
) -> ComponentHealth:
    counters = {
        "updates": table.updates,
        "suppressed_by_deadband": table.suppressed,
        "unknown_tags": table.unknown,
        "queue_depth": queue.qsize(),
    }
    return ComponentHealth("normalize", "ok", "", counters)
