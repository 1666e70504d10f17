"""What one model runner serves: the active version and, optionally, a shadow or canary candidate.

A ``Deployment`` is immutable. The runner reads it once per tick and the watcher replaces it
between ticks, so a tick never mixes two deployments and a swap is one reference assignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.inference.model import LoadedModel
from bridge.lifecycle.canary_guard import CanaryGuard

__all__ = ["CandidateMode", "Deployment", "Served"]

CandidateMode = Literal["shadow", "canary"]


@dataclass(frozen=True, slots=True)
class Served:
    version: str
    sha256: str
    loaded: LoadedModel
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Deployment:
    active: Served
    candidate: Served | None = None
    mode: CandidateMode | None = None
    canary_share: float | None = None  # percent of assets, as the registry says (for display)
    # The assets that get the candidate, resolved from the share or the list by
    # ``bridge.lifecycle.canary.canary_assets`` over all of the model's assets.
    canary_assets: frozenset[str] | None = None
    guard: CanaryGuard | None = None

    def serves_candidate(self, model: str, asset: str) -> bool:
        """Whether ``asset``'s published prediction comes from the candidate (canary only)."""
        return (
            self.candidate is not None
            and self.mode == "canary"
            and self.canary_assets is not None
            and asset in self.canary_assets
        )

    def runs_candidate(self, model: str, asset: str) -> bool:
        if self.candidate is None:
            return False
        return self.mode == "shadow" or self.serves_candidate(model, asset)

    def key(self) -> tuple[object, ...]:
        """Equal keys mean the same deployment (same files, same candidate settings)."""
        cand = self.candidate
        return (
            self.active.version,
            self.active.sha256,
            cand.version if cand else None,
            cand.sha256 if cand else None,
            self.mode,
            self.canary_share,
            tuple(sorted(self.canary_assets)) if self.canary_assets is not None else None,
            self.guard,
        )
