"""Agreement between a candidate and the active version, row by row and per asset.

A classifier agrees when both predict the same label. A regressor agrees when the values are
within ``abs_tol + rel_tol * |active|``. A row where either side has no value (blocked input,
failed run) is not compared at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AgreementTally", "agrees", "value_text"]

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
