"""Window statistics over one tag's samples: pure numpy, no state.

The gateway computes features with these functions and the model builder trains with the very
same ones, so a model sees in production exactly the numbers it was trained on.
Samples are given in time order: ``t`` in seconds (any epoch), ``v`` the values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["STATS", "compute"]

FloatArray = npt.NDArray[np.floating]


def _nonempty(v: FloatArray) -> FloatArray:
    if v.size == 0:
        raise ValueError("no samples in the window")
    return v


def _mean(t: FloatArray, v: FloatArray) -> float:
    return float(np.mean(_nonempty(v)))


def _std(t: FloatArray, v: FloatArray) -> float:
    # Population std (ddof=0): defined for a single sample, where it is 0.
    return float(np.std(_nonempty(v)))


def _min(t: FloatArray, v: FloatArray) -> float:
    return float(np.min(_nonempty(v)))


def _max(t: FloatArray, v: FloatArray) -> float:
    return float(np.max(_nonempty(v)))


def _last(t: FloatArray, v: FloatArray) -> float:
    return float(_nonempty(v)[-1])


def _slope(t: FloatArray, v: FloatArray) -> float:
    if v.size < 2:
        return 0.0
    # Centre time first: epoch seconds squared would swamp float64 precision.
    tc = t - np.mean(t)
    denom = float(np.dot(tc, tc))
    if denom == 0.0:
        return 0.0
    return float(np.dot(tc, v - np.mean(v)) / denom)


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
