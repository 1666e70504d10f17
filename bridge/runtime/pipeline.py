"""Wires the flow together: sources -> normalize -> windows -> models -> sinks, plus the REST API.

``build_gateway`` only constructs the parts from the prepared mapping (the store is opened: the
parts are made over it); ``Gateway.run`` starts them stage by stage: store and sinks, then
inference, then normalization, then sources; stop is the reverse, draining the normalize queue
so nothing read is lost on the way down. What a part does belongs to its own package.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.api.view import ModelInfo
from bridge.audit.ledger import AuditLedger, open_ledger, trusted_keys
from bridge.cancel import cancel_and_wait
from bridge.config.resolved import Mapping
from bridge.config.spec import CollectorSettings
from bridge.lifecycle.policy import ModelPolicy, policy_of
from bridge.pki.mapping import trust_dirs_of
from bridge.prepare import Prepared
from bridge.runtime.actions import ActionRunner, ActionStatus
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.apiserver import ApiServer, api_server, ops_server
from bridge.runtime.collector import collect_between_events
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.fleet_wiring import Fleet, build_fleet, idle_in_transaction_s
from bridge.runtime.insight_wiring import Insight, StoreFeedback, build_insight
from bridge.runtime.integrity import IntegrityWatch
from bridge.runtime.live_models import LiveModels, live_models
from bridge.runtime.lossalerts import LossAlerts
from bridge.runtime.memory import TrimCounts, glibc_trim, release_native_memory
from bridge.runtime.metrics import GatewayOps, gateway_ops
from bridge.runtime.outputs import Outputs, slots_of
from bridge.runtime.parts import model_runner, source_supervisor
from bridge.runtime.reload import Reloader
from bridge.runtime.retention import retention_for
from bridge.runtime.runner import ModelRunner
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.stages import Hook, Stage, Tasks
from bridge.runtime.tagtable import TagTable
from bridge.runtime.tasks import TaskSet
from bridge.runtime.view import RuntimeView
from bridge.store.actions import ActionRepository
from bridge.store.alerts import AlertRepository
from bridge.store.audit import AuditRepository
from bridge.store.auditchain import NewAuditEntry
from bridge.store.db import Store, open_store
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import RegistryRepository
from bridge.store.sequences import SequenceRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, FollowsActions, Sink, TagSample

__all__ = ["Gateway", "build_gateway"]

log = structlog.get_logger(__name__)

NORMALIZE_QUEUE_BATCHES = 1024


@dataclass
class Gateway:
    """The built parts and their start order. ``run`` starts the stages in order (store, sinks,
    API, inference, normalization, sources) and closes them in reverse; the fields beyond
    ``stages`` are for whoever needs to look inside (tests, the demo)."""

    gateway_id: str
    store: Store
    tasks: TaskSet
    stages: Sequence[Stage]
    table: TagTable
    fanout: PredictionFanout
    runners: list[ModelRunner]
    supervisors: list[SourceSupervisor]
    sinks: list[Sink]
    api: ApiServer | None
    outputs: Outputs | None = None
    insight: Insight | None = None
    # Applies a changed mapping file in place (SIGHUP, POST /api/v1/reload, the file watch).
    reloader: Reloader | None = None
    # Set once every stage started (tests and the demo wait for it).
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # Metrics and probes (bridge.runtime.metrics); the scrape listener if it has its own.
    ops: GatewayOps | None = None
    metrics_server: ApiServer | None = None
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    fleet: Fleet | None = None
    # The audit ledger's writer (checkpoints, mirror); None when gateway.audit is off.
    audit: AuditLedger | None = None
    # The running mapping at start (the reloader's, once there is one, follows reloads).
    revision: str = ""
    mapping_name: str = ""
    # What handing freed native memory back to the system gave (bridge.runtime.memory).
    trims: TrimCounts = field(default_factory=TrimCounts)
    # The write-back actions (arm, confirm, reset); None when the mapping has none.
    actions: ActionRunner | None = None

    async def run(self, stop: asyncio.Event, *, reload_on_sighup: bool = False) -> None:
        """Run until ``stop`` is set; raise if a part of the gateway failed. Call it once.
        With ``reload_on_sighup`` (the ``bridge run`` process) SIGHUP reloads the mapping."""
        self.tasks.stop_on(stop)
        reloads: set[asyncio.Task[None]] = set()
        started: list[Stage] = []
        collector: asyncio.Task[None] | None = None
        trimmer: asyncio.Task[None] | None = None
        try:
            for stage in self.stages:
                started.append(stage)  # a half-started stage closes what it started
                await stage.start()
            log.info(
                "gateway_started",
                gateway=self.gateway_id,
                sources=len(self.supervisors),
                sinks=len(self.sinks),
                api=self.api.url if self.api else None,
            )
            # What start-up built (the OPC UA server's address space, the API's routes, the
            # model sessions) lives as long as the process: out of the collector's reach, a
            # full collection walks only what is made afterwards. Walking it all took
            # 160-180 ms every few seconds at 10,000 updates/s: the p99 of the HMI latency
            # (bench/README.md). Collected first, so no garbage of the start-up is frozen.
            gc.collect()
            gc.freeze()
            if self.collector.mode == "between-events":
                collector = asyncio.create_task(
                    collect_between_events(
                        self.collector.young_every_ms / 1000, self.collector.full_every_s
                    ),
                    name="collector",
                )
            trim = glibc_trim() if self.collector.trim_every_s > 0 else None
            if trim is not None:
                trimmer = asyncio.create_task(
                    release_native_memory(self.collector.trim_every_s, trim, self.trims),
                    name="memory-trim",
                )
            if reload_on_sighup and self.reloader is not None:
                _on_sighup(self.reloader, reloads)
            await self._audit("gateway.started", {"revision": self.revision})
            await self._audit("mapping.loaded", {"revision": self.revision}, self.mapping_name)
            self.started.set()
            await stop.wait()
        finally:
            if reload_on_sighup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            log.info("gateway_stopping", gateway=self.gateway_id)
            if self.started.is_set():
                # The revision running now: a reload may have replaced the one it started with.
                running = self.reloader.revision if self.reloader else self.revision
                await self._audit("gateway.stopped", {"revision": running})
            for housekeeping in (collector, trimmer):
                if housekeeping is not None:
                    await cancel_and_wait(housekeeping)
            for stage in reversed(started):
                await stage.close()
            await asyncio.to_thread(self.store.dispose)
            log.info(
                "gateway_stopped",
                gateway=self.gateway_id,
                predictions=self.fanout.published,
                tag_updates=self.table.updates,
            )
        if self.tasks.failure is not None:
            raise self.tasks.failure

    async def _audit(self, action: str, after: dict[str, str], mapping: str = "") -> None:
        if self.audit is not None:
            subject = f"mapping:{mapping}" if mapping else f"gateway:{self.gateway_id}"
            await self.audit.record(NewAuditEntry("system", "system", action, subject, None, after))


def _on_sighup(reloader: Reloader, running: set[asyncio.Task[None]]) -> None:
    def reload() -> None:
        task = asyncio.create_task(reloader.reload_logged(), name="mapping:reload")
        running.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(running.discard)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


async def build_gateway(prepared: Prepared) -> Gateway:
    """Open the store and construct every part from the prepared mapping; start nothing."""
    mapping = prepared.mapping
    log.info(
        "gateway_starting",
        gateway=mapping.gateway.id,
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
            idle_in_transaction_s=idle_in_transaction_s(mapping.gateway.fleet),
        )
    )
    try:
        policy = await asyncio.to_thread(policy_of, mapping)
        return _wire(prepared, store, policy)
    except BaseException:
        await asyncio.to_thread(store.dispose)
        raise


def _wire(prepared: Prepared, store: Store, policy: ModelPolicy) -> Gateway:
    mapping = prepared.mapping
    gid = mapping.gateway.id
    boot_id = uuid.uuid4().hex[:12]
    tasks = TaskSet()
    # Operator feedback (HMI methods) reaches the store through this narrow service.
    feedback = StoreFeedback(LabelRepository(store, gid), LineageRepository(store))
    # Predictions the store writer cannot keep become alerts (written once the store is back).
    loss_alerts = LossAlerts(AlertRepository(store, gateway=gid))
    # Old rows leave the store in batches; a low disk degrades health and raises an alert.
    retention = retention_for(mapping.gateway, store)
    # Outbox rows of the durable destinations (mes-rest) go in the store writer's transactions
    # (``Outputs`` hands it their feeds).
    store_sink = StoreSink(
        store,
        mapping_revision=mapping.revision,
        on_drop=loss_alerts.raise_for,
        gateway_id=gid,
    )
    alerts = AlertSink.for_models(
        AlertRepository(store, gateway=gid),
        slots_of(prepared),
        mapping.models,
        latest=OutboxRepository(store).latest_predictions,
    )
    fanout = PredictionFanout([])
    # The HMI server and the MES destinations, by name: a mapping reload changes them one by one.
    table = TagTable(mapping)
    outputs = Outputs(
        prepared, store, fanout, store_sink, alerts, feedback, table.readings, table.subscribe
    )

    runners = [
        model_runner(prepared, name, table, fanout.publish, gid, boot_id) for name in mapping.models
    ]
    # Registry versions replace the mapping's files before the first tick (bridge.lifecycle).
    live = live_models(mapping, store, runners, outputs.all_outputs, policy)
    # Drift scores and explanations, drift alerts to the MES outbox and retraining webhooks.
    insight = build_insight(mapping, store, runners, outputs.alert_feeds, mapping.gateway.outbox)
    outputs.alert_feed_hooks.append(insight.set_alert_feeds)
    queue: asyncio.Queue[Sequence[TagSample]] = asyncio.Queue(NORMALIZE_QUEUE_BATCHES)
    supervisors = _supervisors(mapping, queue, table)

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
    # Sources, runners and outputs come and go with a mapping reload: their probes are asked
    # per call.
    groups = [
        lambda: [s.health() for s in supervisors],
        lambda: [r.health() for r in runners],
        outputs.health,
        lambda: [r.health() for r in insight.relays],
    ]
    probes = [
        store_sink.health,
        alerts.health,
        loss_alerts.health,
        retention.health,
        lambda: _normalize_health(table, queue),
        lambda: insight.writer.health(),
    ]
    view = RuntimeView(gid, table, fanout, infos, probes, now, groups)
    started = asyncio.Event()
    ops = gateway_ops(
        mapping,
        view.health,
        store,
        tasks,
        started,
        supervisors,
        table,
        runners,
        store_sink,
        lambda: [*outputs.relays(), *insight.relays],
    )
    address = mapping.gateway.metrics.address
    metrics_server = None if address is None else ops_server(ops, *address)

    # Sequence numbers go on from the last committed ones (an MES orders by them).
    sequences = SequenceRepository(store)
    model_jobs = [(f"model:{r.model.name}", r.run) for r in runners]
    source_jobs = [(f"source:{s.name}", s.run) for s in supervisors]
    reloader = Reloader(
        prepared,
        tasks,
        table,
        queue,
        fanout,
        supervisors,
        runners,
        source_jobs,
        model_jobs,
        store_sink,
        view,
        live,
        sequences,
        RegistryRepository(store, gid),
        gid,
        boot_id,
    )
    reloader.outputs, reloader.insight = outputs, insight
    reloader.gateway_hooks += [
        lambda g: retention.follow(g.retention),
        lambda g: setattr(ops, "source_grace_s", g.probes.source_grace_s),
    ]
    probes.append(reloader.health)
    audit = _audit_ledger(mapping, store)
    integrity: list[IntegrityWatch] = []
    if audit is not None:
        reloader.audit = audit
        probes.append(audit.health)
        watch = IntegrityWatch(
            prepared,
            runners,
            RegistryRepository(store, gid),
            AlertRepository(store, gateway=gid),
            audit,
            mapping.gateway.audit.integrity_s,
            mapping.gateway.durability.profile == "production",
            gid,
        )
        reloader.applied_hooks.append(watch.after_reload)
        probes.append(watch.health)
        integrity.append(watch)
    reloader.runner_hooks.append(lambda r: r.observers.append(ops.collector.predictions.observe))
    reloader.applied_hooks.append(lambda p: setattr(ops.collector, "revision", p.mapping.revision))
    fleet: Fleet | None = None
    if mapping.gateway.fleet.enabled:
        fleet = build_fleet(
            mapping, store, boot_id, runners, store_sink, reloader, fanout, lambda: outputs.sinks
        )
        probes += [fleet.leases.health, fleet.mirror.health]
    actions = _actions(mapping, store, table, runners, reloader, fleet, outputs.all_outputs)
    if actions is not None:
        probes.append(actions.health)
    api = _api(
        mapping,
        view,
        store,
        live,
        insight,
        ops,
        reloader,
        metrics_on_api=address is None,
        actions=actions,
    )

    async def resume_sequences() -> None:
        for runner in runners:
            runner.resume(await asyncio.to_thread(sequences.last, gid, runner.model.name))

    def drain() -> None:
        while not queue.empty():
            table.apply(queue.get_nowait())

    stages = [
        # The store's own writers first and last (the loss alerts report what the store writer
        # could not keep, so they close after it); the registry says what serves before any
        # socket opens (a mapping model refused in production stops the start here).
        # The fleet's first heartbeat says which assets are this gateway's before any source
        # subscribes; its leases are the last thing given up on the way down.
        Stage(
            "store",
            [
                *([audit] if audit else []),
                loss_alerts,
                retention,
                Hook("sequences", resume_sequences),
                live,
                *([fleet.leases] if fleet else []),
            ],
        ),
        Stage(
            "sinks",
            [
                store_sink,
                alerts,
                outputs,
                insight,
                *([fleet.mirror] if fleet else []),
                *([actions] if actions else []),
            ],
        ),
        Stage(
            "api",
            [
                Hook(name, srv.start, srv.stop)
                for name, srv in (("api", api), ("metrics", metrics_server))
                if srv is not None
            ],
        ),
        Stage(
            "inference",
            [
                # Before the first tick: a model whose file nobody approved does not run.
                *integrity,
                Tasks("models", tasks, model_jobs),
                Tasks("registry", tasks, [("model:registry", live.watcher.run)]),
            ],
        ),
        # Stopped after the sources, then drained: nothing read is lost on the way down.
        Stage(
            "normalize",
            [Tasks("normalize", tasks, [("normalize", _consumer(queue, table))], drain)],
        ),
        # The reloader changes sources and models only while this stage runs: it is the
        # last part to start and the first to close (after a reload under way).
        Stage(
            "sources",
            [
                Tasks("sources", tasks, source_jobs),
                *_watch(mapping, tasks, reloader),
                *([fleet.resharder] if fleet else []),
            ],
        ),
    ]
    return Gateway(
        gid,
        store,
        tasks,
        stages,
        table,
        fanout,
        runners,
        supervisors,
        outputs.sinks,
        api,
        outputs,
        insight,
        reloader,
        started,
        ops,
        metrics_server,
        mapping.gateway.collector,
        fleet,
        audit,
        mapping.revision,
        mapping.path.name,
        actions=actions,
    )


def _actions(
    mapping: Mapping,
    store: Store,
    table: TagTable,
    runners: list[ModelRunner],
    reloader: Reloader,
    fleet: Fleet | None,
    shown_in: Sequence[object],
) -> ActionRunner | None:
    """The write-back actions, fed each runner's published predictions (after the other
    sinks) and the tag table's changes. In a fleet only the asset's lease holder acts.
    Changes to ``actions:`` apply at the next start, not on a reload. The outputs of
    ``shown_in`` (live, changed by a reload) that show actions get each status change."""
    if not mapping.actions:
        return None
    gid = mapping.gateway.id

    def serving(model: str) -> str | None:
        for runner in runners:
            if runner.model.name == model:
                return runner.deployment.active.version
        return None

    shard = fleet.leases.shard if fleet is not None else None
    actions = ActionRunner(
        mapping.actions,
        ActionRepository(store, gid),
        AlertRepository(store, gateway=gid),
        table,
        mapping.sources,
        mapping.models,
        serving=serving,
        served=None if shard is None else (lambda asset: asset in shard.assets()),
    )
    for runner in runners:
        runner.publish = actions.tapping(runner.publish)
    reloader.runner_hooks.append(lambda r: setattr(r, "publish", actions.tapping(r.publish)))

    def show(statuses: Sequence[ActionStatus]) -> None:
        for output in shown_in:
            if isinstance(output, FollowsActions):
                output.show_actions(statuses, actions)

    actions.subscribe(show)
    # An output a reload builds (a new HMI server) shows the actions at once, not at their next
    # change.
    reloader.applied_hooks.append(lambda _prepared: show(actions.statuses()))
    return actions


def _audit_ledger(mapping: Mapping, store: Store) -> AuditLedger | None:
    settings = mapping.gateway.audit
    if not settings.enabled:
        return None
    return open_ledger(settings, mapping.path.parent, AuditRepository(store, mapping.gateway.id))


def _supervisors(
    mapping: Mapping, queue: asyncio.Queue[Sequence[TagSample]], table: TagTable
) -> list[SourceSupervisor]:
    made = (source_supervisor(mapping, name, queue, table) for name in mapping.sources)
    return [s for s in made if s is not None]


def _watch(mapping: Mapping, tasks: TaskSet, reloader: Reloader) -> list[Tasks | Reloader]:
    """The reloader, after the file watch if the mapping asks for it: closed first, it lets a
    reload under way finish before the watch is cancelled."""
    settings = mapping.gateway.reload
    if not settings.watch:
        return [reloader]
    watch = Tasks(
        "watch", tasks, [("mapping:watch", lambda: reloader.watch(settings.watch_interval_s))]
    )
    return [watch, reloader]


def _api(
    mapping: Mapping,
    view: RuntimeView,
    store: Store,
    live: LiveModels,
    insight: Insight,
    ops: GatewayOps,
    reloader: Reloader,
    *,
    metrics_on_api: bool,
    actions: ActionRunner | None,
) -> ApiServer | None:
    if not mapping.gateway.api.enabled:
        return None
    return api_server(
        mapping.gateway.api,
        view,
        store,
        live,
        insight.insights,
        ops=ops,
        metrics_on_api=metrics_on_api,
        reloader=reloader,
        # Made (if need be) by the ledger's writer before this: the gateway's own key is there.
        audit_keys=trusted_keys(mapping.gateway.audit, mapping.path.parent) or None,
        # The running mapping's, so a reload that moves a pki_dir moves them too.
        trust_lists=lambda: trust_dirs_of(reloader.prepared.mapping),
        actions=actions,
    )


def _consumer(
    queue: asyncio.Queue[Sequence[TagSample]], table: TagTable
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def normalize() -> None:
        while True:
            batch = await queue.get()
            table.apply(batch)

    return normalize


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
