"""Window statistics over one tag's samples: pure numpy, no state.

The gateway computes features with these functions and the model builder trains with the very
same ones, so a model sees in production exactly the numbers it was trained on.
Samples are given in time order: ``t`` in seconds (any epoch), ``v`` the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["STATS", "compute", "compute_rows"]

FloatArray = npt.NDArray[np.floating]


def _nonempty(v: FloatArray) -> FloatArray:
    if v.size == 0:
        raise ValueError("no samples in the window")
    return v


# The reductions call numpy's ufuncs directly: np.mean/np.std go through Python wrappers that
# cost more than the arithmetic on windows of ~100 samples. The sums and divisions are the very
# ones np.mean and np.std (ddof=0) perform, so the results are the same to the last bit.
_sum = np.add.reduce


def _mean(t: FloatArray, v: FloatArray) -> float:
    return float(_sum(_nonempty(v)) / v.size)


def _std(t: FloatArray, v: FloatArray) -> float:
    # Population std (ddof=0): defined for a single sample, where it is 0.
    d = _nonempty(v) - _sum(v) / v.size
    return math.sqrt(float(_sum(d * d) / v.size))


def _min(t: FloatArray, v: FloatArray) -> float:
    return float(np.minimum.reduce(_nonempty(v)))


def _max(t: FloatArray, v: FloatArray) -> float:
    return float(np.maximum.reduce(_nonempty(v)))


def _last(t: FloatArray, v: FloatArray) -> float:
    return float(_nonempty(v)[-1])


def _slope(t: FloatArray, v: FloatArray) -> float:
    if v.size < 2:
        return 0.0
    # Centre time first: epoch seconds squared would swamp float64 precision.
    # Sums by add.reduce, not np.dot (BLAS sums in another order): compute_rows reduces each
    # row the same way, so one window and a row of many give the same bits.
    tc = t - _sum(t) / t.size
    denom = float(_sum(tc * tc))
    if denom == 0.0:
        return 0.0
    return float(_sum(tc * (v - _sum(v) / v.size)) / denom)


_FUNCS: dict[str, Callable[[FloatArray, FloatArray], float]] = {
    "mean": _mean,
    "std": _std,
    "min": _min,
    "max": _max,
    "last": _last,
    "slope": _slope,
}

STATS: tuple[str, ...] = tuple(_FUNCS)


def compute(stat: str, t: np.ndarray, v: np.ndarray) -> float:
    """One statistic of a window; ``slope`` is least-squares units per second (0.0 if < 2 samples).

    Raises ``ValueError`` for an unknown statistic, mismatched lengths, or (except ``slope``) an
    empty window.
    """
    func = _FUNCS.get(stat)
    if func is None:
        raise ValueError(f"unknown statistic {stat!r}; known: {', '.join(STATS)}")
    tf = np.asarray(t, dtype=np.float64)
    vf = np.asarray(v, dtype=np.float64)
    if tf.ndim != 1 or vf.ndim != 1 or tf.shape != vf.shape:
        raise ValueError(f"t and v must be 1-D and of equal length, got {tf.shape} and {vf.shape}")
    return func(tf, vf)


def compute_rows(stat: str, t: FloatArray, v: FloatArray) -> FloatArray:
    """One statistic of many windows of equal length at once: ``t`` and ``v`` are [rows, n]
    float64, n >= 1. Row i of the result is exactly ``compute(stat, t[i], v[i])``: numpy
    reduces each row of a C-contiguous array the way it reduces a 1-D array. ``t`` is only read
    by ``slope``."""
    n = v.shape[1]
    if n == 0:
        raise ValueError("no samples in the window")
    out: FloatArray
    if stat == "mean":
        out = _sum(v, axis=1) / n
    elif stat == "std":
        d = v - (_sum(v, axis=1) / n)[:, None]
        out = np.sqrt(_sum(d * d, axis=1) / n)
    elif stat == "min":
        out = np.minimum.reduce(v, axis=1)
    elif stat == "max":
        out = np.maximum.reduce(v, axis=1)
    elif stat == "last":
        out = v[:, -1].copy()
    elif stat == "slope":
        out = np.zeros(v.shape[0])
        if n >= 2:
            tc = t - (_sum(t, axis=1) / n)[:, None]
            denom = _sum(tc * tc, axis=1)
            num = _sum(tc * (v - (_sum(v, axis=1) / n)[:, None]), axis=1)
            np.divide(num, denom, out=out, where=denom != 0.0)
    else:
        raise ValueError(f"unknown statistic {stat!r}; known: {', '.join(STATS)}")
    return out
