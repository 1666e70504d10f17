"""Splits a gateway's outputs into plain sinks and outbox destinations with their relays."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config.models import OutboxSettings
from bridge.store.outbox import Budget, OutboxFeed, OutboxRepository
from bridge.types import Sink

from .protocol import OutboxDestination
from .relay import Relay, RelaySettings

__all__ = ["Durable", "split_outputs"]


class Durable:
    """The outbox side of a gateway: feeds for the store writer, relays to start and stop."""

    def __init__(self, feeds: list[OutboxFeed], relays: list[Relay]) -> None:
        self.feeds = feeds
        self.relays = relays

    def owns(self, sink: Sink) -> bool:
        """True for a destination fed by a relay: the fan-out must not write to it."""
        return any(id(r.destination) == id(sink) for r in self.relays)

    async def start(self) -> None:
        for relay in self.relays:
            await relay.start()

    async def close(self) -> None:
        # Unsent events stay in the outbox: nothing to drain, the next start sends them.
        for relay in self.relays:
            await relay.close()


def split_outputs(
    outputs: Sequence[Sink], repo: OutboxRepository, settings: OutboxSettings
) -> tuple[list[Sink], Durable]:
    """Outputs that are ``OutboxDestination``s get a feed and a relay; the rest stay plain."""
    plain: list[Sink] = []
    feeds: list[OutboxFeed] = []
    relays: list[Relay] = []
    budget = Budget(settings.max_pending, settings.when_full)
    relay_settings = RelaySettings(
        batch_size=settings.batch_size,
        dead_letter_after=settings.dead_letter_after,
        reject_retry_s=settings.reject_retry_s,
    )
    for sink in outputs:
        if isinstance(sink, OutboxDestination):
            feed = OutboxFeed(sink.name, sink.encode, budget)
            feeds.append(feed)
            relays.append(Relay(sink, repo, feed, relay_settings))
        else:
            plain.append(sink)
    return plain, Durable(feeds, relays)
