"""Splits a gateway's outputs into plain sinks and outbox destinations with their relays."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from bridge.config.models import OutboxSettings
from bridge.store.outbox import Budget, OutboxFeed, OutboxRepository
from bridge.types import PredictionSlot, Sink

from .protocol import OutboxDestination, RuleDestination
from .relay import Relay, RelaySettings
from .rules import EventSelector

__all__ = ["Durable", "feed_for", "relay_settings_for", "split_outputs"]

log = structlog.get_logger(__name__)


class Durable:
    """The outbox side of a gateway: feeds for the store writer, relays to start and stop."""

    def __init__(
        self,
        feeds: list[OutboxFeed],
        relays: list[Relay],
        repo: OutboxRepository | None = None,
        slots: Sequence[PredictionSlot] = (),
    ) -> None:
        self.feeds = feeds
        self.relays = relays
        self._repo = repo
        self._slots = tuple(slots)

    @property
    def alert_feeds(self) -> list[OutboxFeed]:
        """Feeds of the destinations that want drift alerts (rules `every` or `alerts`)."""
        return [f for f in self.feeds if f.wants_alerts]

    def owns(self, sink: Sink) -> bool:
        """True for a destination fed by a relay: the fan-out must not write to it."""
        return any(id(r.destination) == id(sink) for r in self.relays)

    async def start(self) -> None:
        await self._seed()
        for relay in self.relays:
            await relay.start()

    async def close(self) -> None:
        # Unsent events stay in the outbox: nothing to drain, the next start sends them.
        for relay in self.relays:
            await relay.close()

    async def _seed(self) -> None:
        """Rules that remember (label change, threshold) continue from the stored predictions."""
        selectors = [f.selector for f in self.feeds if f.selector and f.selector.stateful]
        if not selectors or self._repo is None or not self._slots:
            return
        pairs = sorted({(s.asset, s.model) for s in self._slots})
        latest = await asyncio.to_thread(self._repo.latest_predictions, pairs)
        for selector in selectors:
            selector.seed(latest)
        log.info("outbox_rules_seeded", predictions=len(latest), destinations=len(selectors))


def feed_for(
    destination: OutboxDestination, budget: Budget, slots: Sequence[PredictionSlot] = ()
) -> OutboxFeed:
    """The store writer's side of one destination: its rules (if any) and its budget."""
    feed = OutboxFeed(destination.name, destination.encode, budget)
    if isinstance(destination, RuleDestination):
        feed.selector = EventSelector(destination.rules, slots)
        feed.render = destination.encode_event
    return feed


def relay_settings_for(settings: OutboxSettings) -> RelaySettings:
    """The relay's part of the mapping's ``gateway.outbox`` settings."""
    return RelaySettings(
        batch_size=settings.batch_size,
        dead_letter_after=settings.dead_letter_after,
        reject_retry_s=settings.reject_retry_s,
        max_retries=settings.max_retries,
        max_retry_age_s=settings.max_retry_age_s,
        lease_s=settings.lease_s,
    )


def split_outputs(
    outputs: Sequence[Sink],
    repo: OutboxRepository,
    settings: OutboxSettings,
    slots: Sequence[PredictionSlot] = (),
) -> tuple[list[Sink], Durable]:
    """Outputs that are ``OutboxDestination``s get a feed and a relay; the rest stay plain.

    Each destination has its own feed (rules, budget counters) and relay (backlog, retries),
    so a slow or failing destination never holds up another.
    """
    plain: list[Sink] = []
    feeds: list[OutboxFeed] = []
    relays: list[Relay] = []
    budget = Budget(settings.max_pending, settings.when_full)
    relay_settings = relay_settings_for(settings)
    for sink in outputs:
        if isinstance(sink, OutboxDestination):
            feed = feed_for(sink, budget, slots)
            feeds.append(feed)
            relays.append(Relay(sink, repo, feed, relay_settings))
        else:
            plain.append(sink)
    return plain, Durable(feeds, relays, repo, slots)
