"""Durable delivery: destinations fed from the store's transactional outbox by a relay.

The core owns the outbox (``feed``: which events a destination gets and which lose when it is
full; ``rules``: the event rules; ``relay``: delivery, retries, dead letters) on top of the
store's plain row operations (``bridge.store.outbox``); a connector (``mes-rest``) only
provides a ``bridge.destination.Destination``: how to encode an event and how to send it.
"""

from __future__ import annotations

from .feed import Budget, OutboxFeed
from .relay import Relay, RelaySettings

__all__ = ["Budget", "OutboxFeed", "Relay", "RelaySettings"]
