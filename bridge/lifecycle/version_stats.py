"""Per-version counters a runner keeps: predictions, failures, latency, labels, agreement."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.histogram import LatencyHistogram
from bridge.lifecycle.shadow import AgreementTally

__all__ = ["VersionStats"]


@dataclass
class VersionStats:
    version: str
    predictions: int = 0
    failed_runs: int = 0
    runs: int = 0
    latency_ms_total: float = 0.0
    latency_ms_max: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)
    agreement: AgreementTally = field(default_factory=AgreementTally)
    # Run latencies for the metrics endpoint (bridge_model_run_duration_seconds).
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def ran(self, latency_ms: float) -> None:
        self.runs += 1
        self.latency_ms_total += latency_ms
        self.latency_ms_max = max(self.latency_ms_max, latency_ms)
        self.latency.observe(latency_ms / 1000)

    def counted(self, value: str | float | None) -> None:
        self.predictions += 1
        if isinstance(value, str):
            self.labels[value] = self.labels.get(value, 0) + 1

    @property
    def error_rate(self) -> float:
        attempts = self.runs + self.failed_runs
        return self.failed_runs / attempts if attempts else 0.0

    @property
    def latency_ms_mean(self) -> float:
        return self.latency_ms_total / self.runs if self.runs else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "predictions": self.predictions,
            "runs": self.runs,
            "failed_runs": self.failed_runs,
            "error_rate": self.error_rate,
            "latency_ms_mean": self.latency_ms_mean,
            "latency_ms_max": self.latency_ms_max,
            "labels": dict(self.labels),
            "compared": self.agreement.total,
            "disagreement": self.agreement.disagreement,
        }
