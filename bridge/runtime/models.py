"""Runs one model periodically: all its assets in one batched call, off the event loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.config.resolved import ResolvedModel
from bridge.errors import InferenceError
from bridge.features.vector import AssetRow, WindowedTag, build_batch
from bridge.inference.model import BatchResult, LoadedModel
from bridge.types import ComponentHealth, HealthState, Prediction, Quality

__all__ = ["ModelRunner"]

log = structlog.get_logger(__name__)

# Stable namespace for prediction ids: uuid5(namespace, gateway/boot/asset/model/seq).
PREDICTION_NS = uuid.UUID("6f1b2a3e-8c1d-5e0f-9a7b-2c4d6e8f0a1b")


@dataclass
class ModelRunner:
    model: ResolvedModel
    loaded: LoadedModel
    labels: tuple[str, ...]
    lookup: Callable[[str], WindowedTag]
    publish: Callable[[Sequence[Prediction]], Awaitable[None]]
    gateway_id: str
    boot_id: str
    runs: int = 0
    overruns: int = 0
    errors: int = 0
    last_latency_ms: float = 0.0
    last_error: str = ""
    _seq: dict[str, int] = field(default_factory=dict)

    def health(self) -> ComponentHealth:
        state: HealthState = "degraded" if self.last_error else "ok"
        counters = {
            "runs": self.runs,
            "overruns": self.overruns,
            "errors": self.errors,
            "last_latency_us": int(self.last_latency_ms * 1000),
        }
        return ComponentHealth(f"model:{self.model.name}", state, self.last_error, counters)

    async def run(self) -> None:
        period = self.model.period_s
        next_at = time.monotonic()
        while True:
            await self.tick()
            next_at += period
            now = time.monotonic()
            if now > next_at:  # skip ticks we missed instead of bursting to catch up
                missed = int((now - next_at) // period) + 1
                self.overruns += missed
                next_at += missed * period
            await asyncio.sleep(next_at - now)

    async def tick(self) -> list[Prediction]:
        now = time.time()
        batch = build_batch(self.model, self.lookup, now)
        predictions = [self._blocked(row, now) for row in batch.blocked]
        if batch.runnable:
            started = time.perf_counter()
            try:
                result = await self.loaded.run_async(batch.x)
            except InferenceError as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.error("inference_failed", model=self.model.name, error=str(exc))
                predictions += [
                    self._blocked(
                        AssetRow(
                            r.asset,
                            Quality.BAD,
                            f"inference failed: {exc}",
                            r.inputs,
                            r.input_age_s,
                        ),
                        now,
                    )
                    for r in batch.runnable
                ]
            else:
                self.last_error = ""
                self.last_latency_ms = (time.perf_counter() - started) * 1000
                predictions += [
                    self._made(row, result, i, now) for i, row in enumerate(batch.runnable)
                ]
        self.runs += 1
        await self.publish(predictions)
        return predictions

    def _next_id(self, asset: str) -> tuple[str, int]:
        seq = self._seq.get(asset, 0) + 1
        self._seq[asset] = seq
        key = f"{self.gateway_id}/{self.boot_id}/{asset}/{self.model.name}/{seq}"
        return str(uuid.uuid5(PREDICTION_NS, key)), seq

    def _made(self, row: AssetRow, result: BatchResult, i: int, now: float) -> Prediction:
        value: str | float | None = None
        if result.labels is not None:
            index = int(result.labels[i])
            value = self.labels[index] if 0 <= index < len(self.labels) else str(index)
        elif result.values is not None:
            value = float(result.values[i])
        score = float(result.scores[i]) if result.scores is not None else None
        return self._prediction(row, now, value, score, row.quality)

    def _blocked(self, row: AssetRow, now: float) -> Prediction:
        return self._prediction(row, now, None, None, Quality.BAD)

    def _prediction(
        self,
        row: AssetRow,
        now: float,
        value: str | float | None,
        score: float | None,
        quality: Quality,
    ) -> Prediction:
        pid, seq = self._next_id(row.asset)
        return Prediction(
            id=pid,
            seq=seq,
            asset=row.asset,
            model=self.model.name,
            version=self.model.version,
            sha256=self.loaded.sha256,
            value=value,
            score=score,
            quality=quality,
            timestamp=now,
            input_age_s=row.input_age_s,
            inputs=row.inputs,
            reason=row.reason,
        )
