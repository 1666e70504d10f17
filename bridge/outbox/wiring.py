"""Builds a gateway's durable destinations from its ``outputs:`` (the kinds registered with
``register_destination``), each with its outbox feed and relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog

from bridge import plugins
from bridge.alertrule import Hold
from bridge.config.resolved import Endpoint
from bridge.config.spec import OutboxSettings
from bridge.destination import Destination, DestinationContext
from bridge.store.outbox import OutboxRepository
from bridge.types import ComponentHealth, PredictionSlot, Trigger

from .feed import Budget, OutboxFeed
from .relay import Relay, RelaySettings
from .rules import EventSelector

__all__ = ["Durable", "durable_for", "durable_outputs", "feed_for", "relay_settings_for"]

log = structlog.get_logger(__name__)


class Durable:
    """The outbox side of a gateway: its destinations, their feeds for the store writer and
    their relays. Destinations start before their relays and close after them."""

    def __init__(
        self,
        destinations: list[Destination],
        feeds: list[OutboxFeed],
        relays: list[Relay],
        repo: OutboxRepository | None = None,
        slots: Sequence[PredictionSlot] = (),
    ) -> None:
        self.destinations = destinations
        self.feeds = feeds
        self.relays = relays
        self._repo = repo
        self._slots = tuple(slots)

    @property
    def alert_feeds(self) -> list[OutboxFeed]:
        """Feeds of the destinations that want drift alerts: rules `every` or `alerts`, or no
        rules at all (a ``webhook`` output)."""
        return [f for f in self.feeds if f.wants_alerts]

    @property
    def probes(self) -> list[Callable[[], ComponentHealth]]:
        """Health of each destination (its own view: last error, counters) and of its relay
        (backlog, dead letters, budget)."""
        return [
            *(d.health for d in self.destinations),
            *(r.health for r in self.relays),
        ]

    async def start(self) -> None:
        await self._seed()
        for destination in self.destinations:
            await destination.start()
        for relay in self.relays:
            await relay.start()

    async def close(self) -> None:
        # Unsent events stay in the outbox: nothing to drain, the next start sends them.
        for relay in self.relays:
            await relay.close()
        for destination in self.destinations:
            try:
                await destination.close()
            except Exception:
                log.exception("destination_close_failed", destination=destination.name)

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
    destination: Destination,
    budget: Budget,
    slots: Sequence[PredictionSlot] = (),
    holds: Mapping[str, Hold] | None = None,
) -> OutboxFeed:
    """The store writer's side of one destination: its rules (if any) and its budget.

    ``holds``: each model's ``alerts:`` settings, so that an ``alerts`` rule raises exactly the
    alerts the gateway stores (without them, every change to a fault label)."""
    encode = destination.encode
    feed = OutboxFeed(destination.name, lambda p: encode(Trigger(p)), budget)
    rules = destination.capabilities.rules
    if rules is not None:
        feed.selector = EventSelector(rules, slots, holds)
        feed.render = _renderer(destination)
    return feed


def _renderer(destination: Destination) -> Callable[[Trigger], str]:
    encode = destination.encode

    def render(trigger: Trigger) -> str:
        body = encode(trigger)
        if body is None:
            # Its rules chose this event: a destination with rules shapes every event.
            raise TypeError(f"{destination.name}: encode() gave no body for a {trigger.event}")
        return body

    return render


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


def durable_outputs(
    outputs: Iterable[Endpoint],
    context: DestinationContext,
    repo: OutboxRepository,
    settings: OutboxSettings,
    holds: Mapping[str, Hold] | None = None,
) -> Durable:
    """The ``outputs:`` whose kind is a registered destination kind, built by its factory, with
    their feeds and relays; outputs of sink kinds are left to the caller."""
    kinds = plugins.destination_kinds()
    destinations = [
        kinds[out.kind].factory(out.name, out.settings, context)
        for out in outputs
        if out.kind in kinds
    ]
    return durable_for(destinations, repo, settings, context.slots, holds)


def durable_for(
    destinations: Sequence[Destination],
    repo: OutboxRepository,
    settings: OutboxSettings,
    slots: Sequence[PredictionSlot] = (),
    holds: Mapping[str, Hold] | None = None,
) -> Durable:
    """A feed and a relay for each destination.

    Each destination has its own feed (rules, budget counters) and relay (backlog, retries),
    so a slow or failing destination never holds up another.
    """
    feeds: list[OutboxFeed] = []
    relays: list[Relay] = []
    budget = Budget(settings.max_pending, settings.when_full)
    relay_settings = relay_settings_for(settings)
    for destination in destinations:
        feed = feed_for(destination, budget, slots, holds)
        feeds.append(feed)
        relays.append(Relay(destination, repo, feed, relay_settings))
    return Durable(list(destinations), feeds, relays, repo, slots)
