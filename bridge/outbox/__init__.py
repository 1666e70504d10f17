"""Durable delivery: destinations fed from the store's transactional outbox by a relay.

The core owns the outbox table and the relay loop; a connector (``mes-rest``) only provides
an ``OutboxDestination``: how to encode a prediction and how to send one event.
"""

from __future__ import annotations

from .protocol import OutboxDestination
from .relay import Relay, RelaySettings

__all__ = ["OutboxDestination", "Relay", "RelaySettings"]
