"""Accuracy of the active and the candidate version where operators labelled predictions.

Operators confirm or reject the *published* prediction (``bridge.store.labels``); each
shadow/canary comparison row of that prediction holds what both versions said, so a label
judges both (``bridge.lifecycle.shadow.judge``): a confirm makes the shown value the truth, a
reject only tells that the shown value was wrong. Only the latest confirm/reject of a
prediction counts. Synchronous (store reads): call it with ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog

from bridge.errors import StoreError
from bridge.store.registry import RegistryRepository
from bridge.types import ModelStatus

from .shadow import AccuracyTally

__all__ = ["AssetAccuracy", "accuracy", "with_accuracy"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AssetAccuracy:
    asset: str
    active_version: str
    labelled: int  # compared predictions with a confirm or reject
    active_judged: int
    active_correct: int
    candidate_judged: int
    candidate_correct: int

    @property
    def active_rate(self) -> float | None:
        return self.active_correct / self.active_judged if self.active_judged else None

    @property
    def candidate_rate(self) -> float | None:
        return self.candidate_correct / self.candidate_judged if self.candidate_judged else None


def accuracy(repo: RegistryRepository, name: str, candidate_version: str) -> list[AssetAccuracy]:
    """Per asset and active version (the active one may have changed during a long shadow)."""
    tallies: dict[tuple[str, str], AccuracyTally] = {}
    for row in repo.labelled_comparisons(name, candidate_version):
        tally = tallies.setdefault((row.asset, row.active_version), AccuracyTally())
        tally.add(row.action, row.shown, row.active_value, row.candidate_value)
    return [
        AssetAccuracy(
            asset,
            active,
            t.labelled,
            t.active_judged,
            t.active_correct,
            t.candidate_judged,
            t.candidate_correct,
        )
        for (asset, active), t in sorted(tallies.items())
    ]


def with_accuracy(repo: RegistryRepository, statuses: Sequence[ModelStatus]) -> list[ModelStatus]:
    """``statuses`` with the accuracy of their current candidate against their active version;
    unchanged (and logged) when the store cannot be read, so the status still gets out."""
    out: list[ModelStatus] = []
    for status in statuses:
        if not status.candidate_version:
            out.append(status)
            continue
        try:
            rows = accuracy(repo, status.model, status.candidate_version)
        except StoreError as exc:
            log.warning("accuracy_not_read", model=status.model, error=str(exc))
            out.append(status)
            continue
        found = {
            r.asset: (r.active_rate, r.candidate_rate)
            for r in rows
            if r.active_version == status.active_version
        }
        assets = [a for a, _ in status.agreement] or sorted(found)
        per_asset = tuple((a, *found.get(a, (None, None))) for a in assets)
        out.append(replace(status, accuracy=per_asset))
    return out
