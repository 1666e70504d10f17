"""Agreement between a candidate and the active version, row by row and per asset.

A classifier agrees when both predict the same label. A regressor agrees when the values are
within ``abs_tol + rel_tol * |active|``. A row where either side has no value (blocked input,
failed run) is not compared at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AccuracyTally",
    "AgreementTally",
    "CandidateComparison",
    "agrees",
    "judge",
    "value_text",
]

REL_TOL = 0.01
ABS_TOL = 1e-6


def agrees(
    active: str | float | None,
    candidate: str | float | None,
    rel_tol: float = REL_TOL,
    abs_tol: float = ABS_TOL,
) -> bool | None:
    """``None`` when there is nothing to compare."""
    if active is None or candidate is None:
        return None
    if isinstance(active, str) or isinstance(candidate, str):
        return str(active) == str(candidate)
    if math.isnan(active) or math.isnan(candidate):
        return False
    return abs(active - candidate) <= abs_tol + rel_tol * abs(active)


def value_text(value: str | float | None) -> str | None:
    """How a prediction value is stored in a comparison row."""
    if value is None or isinstance(value, str):
        return value
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class CandidateComparison:
    """One asset in one tick where a candidate ran beside the active version, as the runner
    saw it; values are already text (``value_text``), as they are compared later."""

    model: str
    asset: str
    mode: Literal["shadow", "canary"]
    active_version: str
    candidate_version: str
    prediction_id: str
    active_value: str | None
    candidate_value: str | None
    candidate_score: float | None
    agree: bool
    timestamp: float
    gateway: str


@dataclass
class AgreementTally:
    """Running counts per asset for one candidate version, kept by the runner (this gateway)."""

    compared: dict[str, int] = field(default_factory=dict)
    agreed: dict[str, int] = field(default_factory=dict)

    def add(self, asset: str, agree: bool) -> None:
        self.compared[asset] = self.compared.get(asset, 0) + 1
        self.agreed[asset] = self.agreed.get(asset, 0) + int(agree)

    def rate(self, asset: str) -> float | None:
        n = self.compared.get(asset, 0)
        return self.agreed.get(asset, 0) / n if n else None

    @property
    def total(self) -> int:
        return sum(self.compared.values())

    @property
    def disagreement(self) -> float:
        n = self.total
        return 1.0 - sum(self.agreed.values()) / n if n else 0.0


def _same(a: str | None, b: str | None) -> bool | None:
    """Stored values are text: numbers compare with ``agrees``' tolerance, labels exactly."""
    if a is None or b is None:
        return None
    try:
        return agrees(float(a), float(b))
    except ValueError:
        return a == b


def judge(action: str, shown: str | None, value: str | None) -> bool | None:
    """Was ``value`` right, given the operator's ``confirm``/``reject`` of the ``shown`` value?

    A confirm makes the shown value the truth. A reject only says the shown value was wrong:
    a version that predicted the same is wrong, one that predicted something else cannot be
    judged (the right answer is not known), so ``None``.
    """
    same = _same(shown, value)
    if same is None or action not in ("confirm", "reject"):
        return None
    if action == "confirm":
        return same
    return False if same else None


@dataclass
class AccuracyTally:
    """Operator-judged predictions of the active and the candidate version for one asset."""

    labelled: int = 0
    active_judged: int = 0
    active_correct: int = 0
    candidate_judged: int = 0
    candidate_correct: int = 0

    def add(
        self, action: str, shown: str | None, active: str | None, candidate: str | None
    ) -> None:
        self.labelled += 1
        a = judge(action, shown, active)
        if a is not None:
            self.active_judged += 1
            self.active_correct += int(a)
        c = judge(action, shown, candidate)
        if c is not None:
            self.candidate_judged += 1
            self.candidate_correct += int(c)
