"""Durable delivery: destinations fed from the store's transactional outbox by a relay.

The core owns the outbox table, the event rules and the relay loop; a connector (``mes-rest``)
only provides an ``OutboxDestination``: how to encode an event and how to send it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import OutboxDestination, Retry
    from .relay import Relay, RelaySettings

__all__ = ["OutboxDestination", "Relay", "RelaySettings", "Retry"]

# Imported on first use: the store imports ``bridge.outbox.rules`` and the relay imports the
# store, so an eager import here would be circular.
_LAZY = {
    "OutboxDestination": ".protocol",
    "Relay": ".relay",
    "RelaySettings": ".relay",
    "Retry": ".protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
