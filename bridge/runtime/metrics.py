"""The gateway's Prometheus metrics and its liveness/readiness probes (``bridge.api.ops``).

A custom collector reads, at scrape time, the counters the components already keep (their
``health()`` counters, the runners' per-version stats, the tag table, the outbox relays): the
hot path does not change for a scrape. Only histograms need observation points, and those are
``bridge.histogram.LatencyHistogram`` fields of the components (model runs per version, store
commits); the API's request latency is observed by its middleware.

Figures that live in the store (alerts, operator feedback) are read by ``refresh`` in a thread
before a scrape, at most every ``STORE_FIGURES_EVERY_S``, over the last ``WINDOW_S``.

Label cardinality is bounded by the mapping: sources, models, versions, model labels,
destinations and component names. No series is per asset, per tag, per prediction or per value.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bridge.api.ops import ProbeResult
from bridge.config.resolved import Mapping
from bridge.errors import BridgeError
from bridge.histogram import LatencyHistogram
from bridge.outbox.relay import Relay
from bridge.runtime.runner import ModelRunner, TickOutcome
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagEntry, TagTable
from bridge.runtime.tasks import TaskSet
from bridge.store.alerts import AlertMetrics, AlertRepository
from bridge.store.db import Store
from bridge.store.labels import FeedbackMetrics, LabelRepository
from bridge.store.probe import store_writable
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, Quality

__all__ = ["GatewayCollector", "GatewayOps", "PredictionCounter", "gateway_ops"]

log = structlog.get_logger(__name__)

# Store-backed figures cover the last day and are read at most this often (a scrape every
# 15 s must not count a day of predictions each time).
WINDOW_S = 86400.0
STORE_FIGURES_EVERY_S = 30.0
# A store that takes no write lock within this is reported not ready.
STORE_PROBE_TIMEOUT_S = 1.0
_MIB = 1024 * 1024
_QUALITY = attrgetter("quality")
_STATES = ("starting", "ok", "degraded", "down", "stopped")


@dataclass
class PredictionCounter:
    """Counts predictions per model, version, label and quality: a runner observer (one dict
    update per prediction). A numeric model's value is not a label: it counts as ``numeric``."""

    counts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def observe(self, outcome: TickOutcome) -> None:
        counts = self.counts
        for p in outcome.predictions:
            value = p.value
            label = value if isinstance(value, str) else ("" if value is None else "numeric")
            key = (p.model, p.version, label, p.quality.label)
            counts[key] = counts.get(key, 0) + 1


@dataclass
class StoreFigures:
    """The store-backed part of a scrape, as last read."""

    alerts: AlertMetrics | None = None
    feedback: FeedbackMetrics | None = None
    read_at: float = float("-inf")  # monotonic
    errors: int = 0


def _histogram(
    name: str,
    doc: str,
    labels: Sequence[str],
    rows: Sequence[tuple[Sequence[str], LatencyHistogram]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in rows:
        family.add_metric(list(values), h.cumulative(), h.total_s)
    return family


@dataclass(eq=False)  # registries keep collectors in a dict: hashed by identity
class GatewayCollector(Collector):
    gateway_id: str
    revision: str
    supervisors: Sequence[SourceSupervisor]
    table: TagTable
    runners: Sequence[ModelRunner]
    store_sink: StoreSink
    # The outbox relays now (a mapping reload adds and removes destinations).
    relays: Callable[[], Sequence[Relay]]
    health: Callable[[], Sequence[ComponentHealth]]
    predictions: PredictionCounter
    figures: StoreFigures
    _grouped: dict[str, list[TagEntry]] = field(init=False, default_factory=dict)
    _grouped_for: tuple[int, int] = field(init=False, default=(0, -1))

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "bridge_info", "This gateway: id and mapping revision.", labels=["gateway", "revision"]
        )
        info.add_metric([self.gateway_id, self.revision[:12]], 1)
        yield info
        yield from self._sources()
        yield from self._tags()
        yield from self._models()
        yield from self._outbox()
        healths = self.health()
        yield from self._components(healths)
        yield from self._fleet(healths)
        yield from self._store(healths)
        yield from self._store_figures()
        yield from self._loop()

    def _loop(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # read outside the event loop (a stopped gateway's registry)
            return
        yield GaugeMetricFamily(
            "bridge_asyncio_tasks",
            "Tasks alive on the gateway's event loop: steady once started; growth is a leak.",
            value=tasks,
        )

    def _sources(self) -> Iterator[Metric]:
        labels = ["source"]
        up = GaugeMetricFamily(
            "bridge_source_connected",
            "1 while the source is connected (also with some of its sessions lost), else 0.",
            labels=[*labels, "kind"],
        )
        updates = CounterMetricFamily(
            "bridge_source_tag_updates", "Tag samples received from the source.", labels=labels
        )
        reconnects = CounterMetricFamily(
            "bridge_source_reconnects",
            "Connections made again after the first one (a lost or refused source came back).",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "bridge_source_connection_failures",
            "Failed connection attempts and connections lost.",
            labels=labels,
        )
        tags = GaugeMetricFamily(
            "bridge_source_tags",
            "Tags the source reads (in a fleet, those of the assets this gateway serves or is "
            "about to take).",
            labels=labels,
        )
        for s in self.supervisors:
            up.add_metric([s.name, s.kind], 1 if s.state == "connected" else 0)
            tags.add_metric([s.name], len(s.tag_ids))
            updates.add_metric([s.name], s.samples)
            reconnects.add_metric([s.name], max(0, s.connects - 1))
            failures.add_metric([s.name], s.failures)
        yield from (up, updates, reconnects, failures, tags)

    def _by_source(self) -> dict[str, list[TagEntry]]:
        """The table's entries grouped by source, regrouped only when the entries change."""
        entries = self.table.entries
        key = (id(entries), len(entries))
        if key != self._grouped_for:
            grouped: dict[str, list[TagEntry]] = {}
            for entry in entries.values():
                grouped.setdefault(entry.tag.source, []).append(entry)
            self._grouped, self._grouped_for = grouped, key
        return self._grouped

    def _tags(self) -> Iterator[Metric]:
        # Counted in C (map + Counter): a Python loop over 10,000 tags cost 15 ms per scrape.
        counts: dict[tuple[str, Quality], int] = {}
        for source, entries in self._by_source().items():
            for quality, n in Counter(map(_QUALITY, entries)).items():
                counts[(source, quality)] = n
        tags = GaugeMetricFamily(
            "bridge_tags", "Tags by source and current quality.", labels=["source", "quality"]
        )
        sources = sorted({s for s, _ in counts} | {s.name for s in self.supervisors})
        for source in sources:
            for quality in Quality:
                tags.add_metric([source, quality.label], counts.get((source, quality), 0))
        yield tags
        t = self.table
        yield CounterMetricFamily(
            "bridge_tag_updates_applied", "Tag samples applied to the live state.", value=t.updates
        )
        yield CounterMetricFamily(
            "bridge_tag_updates_suppressed",
            "Tag samples within their deadband (not applied).",
            value=t.suppressed,
        )
        yield CounterMetricFamily(
            "bridge_tag_samples_unknown",
            "Samples of tags the mapping does not know.",
            value=t.unknown,
        )
        yield CounterMetricFamily(
            "bridge_tag_samples_backfilled",
            "Historical samples read back from a server's history after an outage (backfill).",
            value=t.backfilled,
        )

    def _models(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        runs = CounterMetricFamily("bridge_model_runs", "Model runs (batched).", labels=labels)
        errors = CounterMetricFamily(
            "bridge_model_run_errors", "Model runs that failed.", labels=labels
        )
        overruns = CounterMetricFamily(
            "bridge_model_overruns",
            "Periodic ticks skipped because a run took too long.",
            labels=["model"],
        )
        rows: list[tuple[Sequence[str], LatencyHistogram]] = []
        for r in self.runners:
            overruns.add_metric([r.model.name], r.overruns)
            for version, st in sorted(r.stats.items()):
                runs.add_metric([r.model.name, version], st.runs)
                errors.add_metric([r.model.name, version], st.failed_runs)
                rows.append(((r.model.name, version), st.latency))
        yield from (runs, errors, overruns)
        yield _histogram(
            "bridge_model_run_duration_seconds",
            "Model run latency (one batched run).",
            labels,
            rows,
        )
        made = CounterMetricFamily(
            "bridge_predictions",
            "Predictions made, by model, version, label (`numeric` for a numeric output, empty "
            "when none) and quality.",
            labels=[*labels, "label", "quality"],
        )
        for (model, version, label, quality), n in sorted(self.predictions.counts.items()):
            made.add_metric([model, version, label, quality], n)
        yield made

    def _outbox(self) -> Iterator[Metric]:
        labels = ["destination"]
        backlog = GaugeMetricFamily(
            "bridge_outbox_backlog", "Events waiting in the outbox.", labels=labels
        )
        age = GaugeMetricFamily(
            "bridge_outbox_oldest_age_seconds",
            "Age of the oldest waiting event (0 when none waits).",
            labels=labels,
        )
        dead = GaugeMetricFamily(
            "bridge_outbox_dead_letters", "Dead letters kept in the store.", labels=labels
        )
        counters = {
            "delivered": ("bridge_outbox_delivered", "Events the destination accepted."),
            "rejected": ("bridge_outbox_rejected", "Events the destination refused for good."),
            "retried": ("bridge_outbox_retries", "Deliveries retried after a failure."),
            "dead_lettered": ("bridge_outbox_dead_lettered", "Events moved to dead letters."),
            "dropped": ("bridge_outbox_dropped", "Events dropped from a full outbox."),
            "refused": ("bridge_outbox_refused", "Events not queued: the outbox was full."),
        }
        families = {
            key: CounterMetricFamily(name, doc, labels=labels)
            for key, (name, doc) in counters.items()
        }
        for relay in self.relays():
            c = relay.health().counters
            name = relay.destination.name
            backlog.add_metric([name], c.get("backlog", 0))
            age.add_metric([name], c.get("oldest_pending_age_s", 0))
            dead.add_metric([name], c.get("dead_letters", 0))
            for key, family in families.items():
                family.add_metric([name], c.get(key, 0))
        yield from (backlog, age, dead, *families.values())

    def _components(self, healths: Sequence[ComponentHealth]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "bridge_component_state",
            "1 for the component's current state (as in /api/v1/health), 0 for the others.",
            labels=["component", "state"],
        )
        depth = GaugeMetricFamily(
            "bridge_queue_depth", "Items waiting in a component's queue.", labels=["component"]
        )
        dropped = CounterMetricFamily(
            "bridge_queue_dropped",
            "Items a component's queue could not keep (counted, logged and alerted by it).",
            labels=["component"],
        )
        for h in healths:
            for s in _STATES:
                state.add_metric([h.name, s], 1 if h.state == s else 0)
            if "queue_depth" in h.counters:
                depth.add_metric([h.name], h.counters["queue_depth"])
                if "dropped" in h.counters:
                    dropped.add_metric([h.name], h.counters["dropped"])
        yield from (state, depth, dropped)

    def _fleet(self, healths: Sequence[ComponentHealth]) -> Iterator[Metric]:
        fleet = next((h for h in healths if h.name == "fleet"), None)
        if fleet is None:
            return
        c = fleet.counters
        gauges = {
            "members": ("bridge_fleet_members", "Live gateways of the fleet (this one included)."),
            "serving": ("bridge_fleet_assets_served", "Assets whose leases this gateway holds."),
            "claiming": (
                "bridge_fleet_assets_claiming",
                "Assets this gateway claimed that another gateway still serves (a hand-over).",
            ),
        }
        counters = {
            "taken": ("bridge_fleet_assets_taken", "Leases taken (free or a dead gateway's)."),
            "handed_over": ("bridge_fleet_assets_handed_over", "Leases handed to a claimant."),
            "beat_failures": ("bridge_fleet_heartbeat_failures", "Heartbeats that failed."),
            "expired": (
                "bridge_fleet_lease_expiries",
                "Times this gateway stopped publishing because it could not renew in time.",
            ),
        }
        for key, (name, doc) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=c.get(key, 0))
        for key, (name, doc) in counters.items():
            yield CounterMetricFamily(name, doc, value=c.get(key, 0))

    def _store(self, healths: Sequence[ComponentHealth]) -> Iterator[Metric]:
        c = self.store_sink.counters
        yield CounterMetricFamily(
            "bridge_store_predictions_written", "Predictions committed.", value=c["written"]
        )
        yield CounterMetricFamily(
            "bridge_store_predictions_dropped",
            "Predictions the store writer could not keep (each raised an alert).",
            value=c["dropped"],
        )
        yield CounterMetricFamily(
            "bridge_store_predictions_fenced",
            "Predictions refused because their asset's lease changed hands (fleet).",
            value=c["fenced"],
        )
        yield _histogram(
            "bridge_store_write_duration_seconds",
            "Commit time of one batch of predictions (with their outbox rows).",
            [],
            [((), self.store_sink.write_latency)],
        )
        retention = next((h for h in healths if h.name == "retention"), None)
        deleted = CounterMetricFamily(
            "bridge_retention_deleted_rows", "Rows the retention job deleted.", labels=["kind"]
        )
        if retention is not None:
            for key, n in sorted(retention.counters.items()):
                if key.startswith("deleted_"):
                    deleted.add_metric([key.removeprefix("deleted_")], n)
            free_mib = retention.counters.get("free_mib", -1)
            if free_mib >= 0:
                yield GaugeMetricFamily(
                    "bridge_disk_free_bytes",
                    "Free disk under the store at the last check (MiB resolution).",
                    value=free_mib * _MIB,
                )
        yield deleted

    def _store_figures(self) -> Iterator[Metric]:
        f = self.figures
        yield CounterMetricFamily(
            "bridge_metrics_store_read_errors",
            "Scrapes whose store-backed figures could not be read (the last ones are shown).",
            value=f.errors,
        )
        if f.alerts is not None:
            a = f.alerts
            alerts = GaugeMetricFamily(
                "bridge_alerts", "Alerts raised in the last 24 h by state.", labels=["state"]
            )
            alerts.add_metric(["open"], a.open)
            alerts.add_metric(["acknowledged"], a.acknowledged)
            yield alerts
            if a.mean_time_to_ack_s is not None:
                yield GaugeMetricFamily(
                    "bridge_alert_mean_time_to_ack_seconds",
                    "Mean time to acknowledge (MTTA) of the alerts raised in the last 24 h.",
                    value=a.mean_time_to_ack_s,
                )
            yield GaugeMetricFamily(
                "bridge_alert_oldest_open_age_seconds",
                "Age of the oldest open alert raised in the last 24 h (0: none open).",
                value=a.oldest_open_age_s or 0.0,
            )
        if f.feedback is not None:
            fb = f.feedback
            if fb.mean_time_to_acknowledge_s is not None:
                yield GaugeMetricFamily(
                    "bridge_feedback_mean_time_to_ack_seconds",
                    "Mean time from a prediction to its first operator feedback, last 24 h.",
                    value=fb.mean_time_to_acknowledge_s,
                )
            if fb.autonomous_decision_coverage is not None:
                yield GaugeMetricFamily(
                    "bridge_decision_coverage_ratio",
                    "Share of the Good predictions of the last 24 h no operator rejected.",
                    value=fb.autonomous_decision_coverage,
                )


@dataclass
class GatewayOps:
    """``bridge.api.ops.Operations`` of a running gateway."""

    collector: GatewayCollector
    store: Store
    tasks: TaskSet
    started: asyncio.Event
    source_grace_s: float
    alerts: AlertRepository
    labels: LabelRepository
    monotonic: Callable[[], float] = time.monotonic
    registry: CollectorRegistry = field(init=False)
    _refreshing: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)

    async def refresh(self) -> None:
        figures = self.collector.figures
        async with self._refreshing:  # concurrent scrapes share one read
            if self.monotonic() - figures.read_at < STORE_FIGURES_EVERY_S:
                return
            since = time.time() - WINDOW_S
            try:
                figures.alerts = await asyncio.to_thread(self.alerts.metrics, since)
                figures.feedback = await asyncio.to_thread(self.labels.metrics, since)
            except BridgeError as exc:
                figures.errors += 1
                log.warning("metrics_store_figures_failed", error=str(exc))
            figures.read_at = self.monotonic()

    async def liveness(self) -> ProbeResult:
        # Answering at all shows the loop runs; the lag is how long a ready callback waits.
        started = self.monotonic()
        await asyncio.sleep(0)
        lag = self.monotonic() - started
        details = {"loop_lag_s": round(lag, 4)}
        failure = self.tasks.failure
        if failure is not None:
            return ProbeResult(False, {"gateway": f"a part failed: {failure!r}"}, details)
        return ProbeResult(True, details=details)

    async def readiness(self) -> ProbeResult:
        failing: dict[str, str] = {}
        if not self.started.is_set():
            failing["gateway"] = "starting (models, normalization or sources not started yet)"
        now = self.monotonic()
        for s in self.collector.supervisors:
            if s.state == "connected":
                continue
            down = s.down_since
            if s.connects and down is not None and now - down <= self.source_grace_s:
                continue  # a reconnect in progress, within the grace period
            why = s.detail or s.state
            failing[f"source:{s.name}"] = (
                f"never connected: {why}" if not s.connects else f"disconnected: {why}"
            )
        problem = await asyncio.to_thread(store_writable, self.store, STORE_PROBE_TIMEOUT_S)
        if problem:
            failing["store"] = problem
        sink = self.collector.store_sink.health()
        if sink.state in ("down", "stopped"):
            failing["store"] = failing.get("store") or f"store writer {sink.state}: {sink.detail}"
        models = {r.model.name: r.deployment.active.version for r in self.collector.runners}
        return ProbeResult(not failing, failing, {"models": models})


def gateway_ops(
    mapping: Mapping,
    health: Callable[[], Sequence[ComponentHealth]],
    store: Store,
    tasks: TaskSet,
    started: asyncio.Event,
    supervisors: Sequence[SourceSupervisor],
    table: TagTable,
    runners: Sequence[ModelRunner],
    store_sink: StoreSink,
    relays: Callable[[], Sequence[Relay]],
) -> GatewayOps:
    """The gateway's metrics and probes. Predictions are counted by a runner observer; all
    else is read from the parts when Prometheus scrapes."""
    predictions = PredictionCounter()
    for runner in runners:
        runner.observers.append(predictions.observe)
    collector = GatewayCollector(
        mapping.gateway.id,
        mapping.revision,
        supervisors,
        table,
        runners,
        store_sink,
        relays,
        health,
        predictions,
        StoreFigures(),
    )
    return GatewayOps(
        collector,
        store,
        tasks,
        started,
        mapping.gateway.probes.source_grace_s,
        AlertRepository(store),
        LabelRepository(store),
    )
