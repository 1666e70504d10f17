"""Hands each batch of predictions to every sink; keeps the latest per asset+model for the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from bridge.types import Prediction, Sink

__all__ = ["PredictionFanout"]

log = structlog.get_logger(__name__)


@dataclass
class PredictionFanout:
    sinks: Sequence[Sink]
    latest: dict[tuple[str, str], Prediction] = field(default_factory=dict)
    published: int = 0

    async def publish(self, batch: Sequence[Prediction]) -> None:
        if not batch:
            return
        if not batch[0].historical:  # the runner publishes the past in batches of its own
            for p in batch:
                self.latest[(p.asset, p.model)] = p
        self.published += len(batch)
        # Sinks only enqueue in write(), in order; the store writer may wait there for room in
        # its queue (backpressure on the model runner), so the gateway puts it last. A sink that
        # raises must not starve the others.
        for sink in self.sinks:
            try:
                await sink.write(batch)
            except Exception:
                log.exception("sink_write_failed", sink=sink.name, predictions=len(batch))
