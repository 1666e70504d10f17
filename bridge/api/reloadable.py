"""What the reload endpoint needs from a running gateway (``bridge.runtime.reload`` has it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MappingReloader", "ReloadSummary", "ReloadUnavailable"]


@dataclass(frozen=True)
class ReloadSummary:
    """What a reload applied. ``changes`` maps e.g. ``sources.added`` to names;
    ``restart_needed`` names what changed but only applies at the next start (``gateway:``
    keys such as ``gateway.api.port``); ``outbox_kept``: undelivered events of each removed
    destination, kept in the store."""

    revision: str
    previous_revision: str
    changes: Mapping[str, Sequence[str]]
    restart_needed: Sequence[str]
    outbox_kept: Mapping[str, int] = field(default_factory=dict)


class ReloadUnavailable(Exception):
    """The gateway cannot reload now (still starting, or stopping)."""


class MappingReloader(Protocol):
    async def reload(self, actor: str = "system") -> ReloadSummary:
        """Read the mapping file again and apply it; raise ``bridge.errors.ConfigError`` (the
        running mapping stays) or ``ReloadUnavailable``."""
        ...
