"""Builds the drift, explanation and feedback parts of a gateway from its mapping.

Kept apart from ``pipeline`` so the pipeline only asks for them and starts/stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from bridge import plugins
from bridge.config.reference import load_reference
from bridge.config.resolved import Mapping, ResolvedModel
from bridge.config.spec import OutboxSettings
from bridge.destination import Destination, DestinationContext
from bridge.drift.monitor import DriftCrossing
from bridge.drift.webhookaudit import AuditedWebhook
from bridge.drift.writer import DriftAlertWriter
from bridge.errors import BridgeError, ConfigError, ConfigIssue, StoreError
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.outbox.relay import Relay
from bridge.outbox.wiring import feed_for, relay_settings_for
from bridge.runtime.insight import ModelInsight
from bridge.runtime.runner import ModelRunner
from bridge.store.audit import AuditRepository
from bridge.store.db import Store
from bridge.store.drift import DriftAlertRepository
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.registry import RegistryRepository, VersionRecord
from bridge.types import Feedback, Prediction

__all__ = ["Insight", "StoreFeedback", "build_insight"]

log = structlog.get_logger(__name__)


class StoreFeedback:
    """``bridge.types.FeedbackService`` over the store's label and prediction tables."""

    def __init__(self, labels: LabelRepository, lineage: LineageRepository) -> None:
        self._labels = labels
        self._lineage = lineage

    async def find(self, prediction_id: str) -> Prediction | None:
        found = await asyncio.to_thread(self._lineage.get, prediction_id)
        return found.prediction if found is not None else None

    async def record(self, feedback: Feedback) -> None:
        try:
            await asyncio.to_thread(self._labels.add, feedback)
        except StoreError:
            log.error("feedback_not_stored", prediction=feedback.prediction_id)
            raise
        log.info(
            "operator_feedback",
            prediction=feedback.prediction_id,
            asset=feedback.asset,
            model=feedback.model,
            action=feedback.action,
            by=feedback.by,
            channel=feedback.channel,
        )


@dataclass
class Insight:
    """The drift and explanation parts of a running gateway: one ``ModelInsight`` per model
    with ``drift:`` or ``explain:`` (its ``enrich`` hooked into the model's runner), the drift
    alert writer, and each ``drift.webhook``'s destination and relay. ``attach`` builds a
    model's parts, at start and for a model a mapping reload adds or changes (``replace``)."""

    insights: dict[str, ModelInsight]
    writer: DriftAlertWriter
    webhooks: list[Destination] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)
    mapping: Mapping | None = None
    store: Store | None = None
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    _started: bool = False
    # Webhooks (and their relays) a reload took out or added, closed or started by ``settle``.
    _closing: list[tuple[Destination, Relay]] = field(default_factory=list)
    _opening: list[tuple[Destination, Relay]] = field(default_factory=list)

    async def start(self) -> None:
        await self.writer.start()
        for hook in self.webhooks:
            await hook.start()
        for relay in self.relays:
            await relay.start()
        self._started = True

    async def close(self) -> None:
        self._started = False
        for relay in self.relays:
            await relay.close()
        for hook in self.webhooks:
            await hook.close()
        await self.writer.close()

    def attach(self, runner: ModelRunner) -> tuple[Destination, Relay] | None:
        """Build the drift and explanation parts of ``runner``'s model if it has ``drift:`` or
        ``explain:`` (with a ``reference``); the webhook and its relay, if any, are returned
        not started."""
        assert self.mapping is not None and self.store is not None
        mapping, m = self.mapping, runner.model
        if m.reference is None or (m.drift is None and m.explain is None):
            return None
        reference = load_reference(m.reference, [f.name for f in m.features])
        first = m.assets[0] if m.assets else ""
        units = {
            f.tag: mapping.tags[f"{first}.{f.tag}"].unit
            for f in m.features
            if f"{first}.{f.tag}" in mapping.tags
        }
        webhook: tuple[Destination, Relay] | None = None
        webhook_feed: OutboxFeed | None = None
        if m.drift is not None and m.drift.webhook:
            # Each send is a ``webhook.fired`` ledger entry, recorded on the core's side: the
            # connector does not reach the store.
            ledger = AuditRepository(self.store, mapping.gateway.id)
            hook: Destination = AuditedWebhook(
                _webhook(mapping, m), m.name, m.drift.webhook, ledger
            )
            # The webhooks' relays cap retries like the MES's: one event answered 5xx forever
            # is dead-lettered after ``max_retries`` / ``max_retry_age_s`` instead of blocking
            # the model's.
            webhook_feed = feed_for(hook, Budget(self.outbox.max_pending, self.outbox.when_full))
            repo = OutboxRepository(self.store, holder=mapping.gateway.id)
            relay = Relay(hook, repo, webhook_feed, relay_settings_for(self.outbox))
            self.webhooks.append(hook)
            self.relays.append(relay)
            webhook = (hook, relay)
        writer = self.writer
        registry = RegistryRepository(self.store)

        def on_crossing(
            c: DriftCrossing,
            p: Prediction | None,
            runner: ModelRunner = runner,
            feed: OutboxFeed | None = webhook_feed,
        ) -> None:
            served = runner.deployment.active
            version = p.version if p is not None else served.version
            sha = p.sha256 if p is not None else served.sha256
            writer.raise_crossing(runner.model.name, version, sha, c, feed, p)

        def lookup(version: str, sha256: str, name: str = m.name) -> VersionRecord | None:
            return registry.get(name, version)  # the insight compares the sha256

        insight = ModelInsight(m, reference, units, on_crossing, lookup)
        runner.enrichers.append(insight.enrich)
        self.insights[m.name] = insight
        return webhook

    def rewire(self, mapping: Mapping, gone: Sequence[str], runners: Sequence[ModelRunner]) -> None:
        """A mapping reload, with no await (the runners must not tick half-way): the models
        ``gone`` (removed, or changed) lose their parts, then ``runners`` (of models added or
        changed) get theirs, built as at start (``attach``); a changed model's drift windows
        start over. The webhooks gone and new are closed and started by ``settle``."""
        self.mapping = mapping
        for name in gone:
            self._detach(name, runners)
        for runner in runners:
            try:
                webhook = self.attach(runner)
            except (BridgeError, OSError, ValueError) as exc:  # prepare checked them: unlikely
                log.error("model_insight_not_built", model=runner.model.name, error=str(exc))
                continue
            if webhook is not None:
                self._opening.append(webhook)
            if runner.model.name in self.insights:
                log.info("model_insight_built", model=runner.model.name)

    async def settle(self) -> None:
        """Close the webhooks of models gone, start those of models added (if this runs)."""
        closing, self._closing = self._closing, []
        opening, self._opening = self._opening, []
        for hook, relay in closing:
            await relay.close()
            try:
                await hook.close()
            except Exception:
                log.exception("destination_close_failed", destination=hook.name)
        if self._started:
            for hook, relay in opening:
                await hook.start()
                await relay.start()

    def _detach(self, name: str, runners: Sequence[ModelRunner]) -> None:
        insight = self.insights.pop(name, None)
        if insight is not None:
            for runner in runners:
                if insight.enrich in runner.enrichers:
                    runner.enrichers.remove(insight.enrich)
        hooks = [h for h in self.webhooks if h.name == f"webhook-{name}"]
        relays = [r for r in self.relays if r.destination in hooks]
        self.webhooks[:] = [h for h in self.webhooks if h not in hooks]
        self.relays[:] = [r for r in self.relays if r not in relays]
        self._closing.extend((r.destination, r) for r in relays)

    def set_alert_feeds(self, feeds: Sequence[OutboxFeed]) -> None:
        """The durable destinations that get drift alerts (outputs a reload changed)."""
        self.writer.set_alert_feeds(feeds)


def build_insight(
    mapping: Mapping,
    store: Store,
    runners: Sequence[ModelRunner],
    alert_feeds: Sequence[OutboxFeed],
    outbox: OutboxSettings,
) -> Insight:
    """One ``ModelInsight`` per model that has ``drift:`` or ``explain:``, hooked into its
    runner; one webhook destination (outbox + relay) per model with ``drift.webhook``."""
    gid = mapping.gateway.id
    writer = DriftAlertWriter(DriftAlertRepository(store, gateway=gid), gid, alert_feeds)
    parts = Insight({}, writer, mapping=mapping, store=store, outbox=outbox)
    for runner in runners:
        parts.attach(runner)
    return parts


# The model's ``drift:`` keys that hold the webhook's settings, for messages about them.
_WEBHOOK_KEYS = (
    ("url", "drift.webhook"),
    ("headers", "drift.webhook_headers"),
    ("tls", "drift.webhook_tls"),
)


def _webhook(mapping: Mapping, model: ResolvedModel) -> Destination:
    """The retraining webhook of ``model``: the ``webhook`` destination kind (a connector, found
    through the registry like any output) with the model's ``drift.webhook*`` settings."""
    drift = model.drift
    assert drift is not None and drift.webhook
    kind = plugins.destination_kinds().get("webhook")
    if kind is None:
        raise ConfigError(
            [
                ConfigIssue(
                    str(mapping.path),
                    None,
                    f"models.{model.name}.drift.webhook",
                    "no `webhook` destination connector is installed",
                    "install the gateway with its connectors (pip install -e .), or remove "
                    "drift.webhook",
                )
            ]
        )
    settings = kind.settings_model.model_validate(
        {"url": drift.webhook, "headers": drift.webhook_headers, "tls": drift.webhook_tls}
    )
    context = DestinationContext(mapping.gateway.id, setting_keys=_WEBHOOK_KEYS)
    return kind.factory(f"webhook-{model.name}", settings, context)
