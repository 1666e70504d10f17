"""Occlusion / baseline substitution: the effect of input j on a row is f(x) - f(x with x_j set
to its baseline). All rows and all inputs go through the model in one batched call of
rows x features perturbed rows. Pure apart from the model call it is given.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["occlusion_effects", "perturbed"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def perturbed(x: F32, baseline: F64) -> F32:
    """[rows * features, features]: row r, feature j at index r * features + j has x_j
    replaced by ``baseline[j]``."""
    rows, n = x.shape
    out = np.repeat(x, n, axis=0).reshape(rows, n, n)
    diag = np.arange(n)
    out[:, diag, diag] = baseline.astype(np.float32)
    return out.reshape(rows * n, n)


def occlusion_effects(
    x: F32, baseline: F64, score: Callable[[F32], F64], base: F64 | None = None
) -> F64:
    """[rows, features] effects. ``score`` maps rows to the number being explained (one per
    row: a classifier's probability of the class it chose, a regressor's value); ``base`` is
    ``score(x)`` if the caller has it already."""
    rows, n = x.shape
    if rows == 0:
        return np.zeros((0, n))
    if base is None:
        base = score(x)
    moved = score(perturbed(x, baseline)).reshape(rows, n)
    out: F64 = base[:, None] - moved
    return out
