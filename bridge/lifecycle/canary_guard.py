"""A canary's guard: the limits past which the running gateway rolls the candidate back.

The registry stores a guard as the operator gave it (a JSON object of the keys in
``GUARD_KEYS``, the REST API and CLI show it that way); the runtime works with this typed
form, made once per deployment by ``CanaryGuard.of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.lifecycle.version_stats import VersionStats

__all__ = ["DEFAULT_MIN_SAMPLES", "GUARD_KEYS", "CanaryGuard"]

GUARD_KEYS = frozenset({"max_disagreement", "max_error_rate", "min_samples"})
# Compared rows (or attempted runs) before a limit acts: a few rows say nothing about a rate.
DEFAULT_MIN_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class CanaryGuard:
    max_disagreement: float | None = None
    max_error_rate: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES

    @classmethod
    def of(cls, settings: Mapping[str, float] | None) -> CanaryGuard | None:
        """The guard the registry's settings describe; ``None`` for no settings (no guard).
        Keys outside ``GUARD_KEYS`` were refused when the canary was started."""
        if not settings:
            return None
        # Limits keep the operator's number as given: reasons quote it ("> 0.3").
        return cls(
            max_disagreement=settings.get("max_disagreement"),
            max_error_rate=settings.get("max_error_rate"),
            min_samples=int(settings.get("min_samples", DEFAULT_MIN_SAMPLES)),
        )

    @property
    def tolerates_failures(self) -> bool:
        """A ``max_error_rate`` states how many failed candidate runs are acceptable; without
        it the first failure retires the candidate."""
        return self.max_error_rate is not None

    def tripped(self, stats: VersionStats) -> str | None:
        """Why the candidate with ``stats`` must be rolled back, or ``None``."""
        tally = stats.agreement
        if (
            self.max_disagreement is not None
            and tally.total >= self.min_samples
            and tally.disagreement > self.max_disagreement
        ):
            return f"disagreement {tally.disagreement:.3f} > {self.max_disagreement}"
        attempts = stats.runs + stats.failed_runs
        if (
            self.max_error_rate is not None
            and attempts >= self.min_samples
            and stats.error_rate > self.max_error_rate
        ):
            return f"error rate {stats.error_rate:.3f} > {self.max_error_rate}"
        return None
