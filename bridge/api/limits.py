"""Per-key request budgets: a token bucket (rate) and a count of requests in progress
(concurrency). Pure: the caller passes the time, so tests need no clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KeyLimits", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    detail: str
    retry_after_s: int


@dataclass(slots=True)
class _Budget:
    tokens: float
    stamp: float
    active: int = 0


class KeyLimits:
    """``admit`` takes a slot or says why not; every admitted request ``release``s its slot.

    Only keys that authenticated get a budget, so the table grows with the number of keys, not
    with what strangers send; idle full budgets are dropped when it passes ``max_keys``.
    """

    def __init__(
        self, rate_per_s: float, burst: int, max_concurrent: int, max_keys: int = 4096
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_concurrent = max_concurrent
        self._max_keys = max_keys
        self._budgets: dict[str, _Budget] = {}

    def admit(self, key_id: str, now: float) -> Refusal | None:
        budget = self._budgets.get(key_id)
        if budget is None:
            if len(self._budgets) >= self._max_keys:
                self._forget_idle(now)
            budget = self._budgets[key_id] = _Budget(float(self.burst), now)
        budget.tokens = min(
            float(self.burst), budget.tokens + (now - budget.stamp) * self.rate_per_s
        )
        budget.stamp = now
        if budget.active >= self.max_concurrent:
            return Refusal(
                f"key '{key_id}' already has {budget.active} requests in progress "
                f"(gateway.api.max_concurrent_per_key: {self.max_concurrent})",
                1,
            )
        if budget.tokens < 1.0:
            wait = math.ceil((1.0 - budget.tokens) / self.rate_per_s)
            return Refusal(
                f"key '{key_id}' is over its request rate "
                f"(gateway.api.rate_limit_per_s: {self.rate_per_s:g}, "
                f"rate_burst: {self.burst}); retry in {wait} s",
                max(1, wait),
            )
        budget.tokens -= 1.0
        budget.active += 1
        return None

    def release(self, key_id: str) -> None:
        budget = self._budgets.get(key_id)
        if budget is not None and budget.active > 0:
            budget.active -= 1

    def _forget_idle(self, now: float) -> None:
        for key_id, b in list(self._budgets.items()):
            refilled = b.tokens + (now - b.stamp) * self.rate_per_s >= self.burst
            if b.active == 0 and refilled:
                del self._budgets[key_id]
