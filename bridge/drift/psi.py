"""Population Stability Index of many windows at once. Pure numpy.

PSI = sum over bins of (a - e) * ln(a / e), with ``e`` the reference share of a bin and ``a``
the window's share. Values below the first edge count in the first bin and above the last edge
in the last bin, as in the reference format. Empty bins would make the logarithm infinite: the
reference share is floored at ``E_FLOOR`` and the window share at half a sample, so one missing
rare value in a small window does not read as drift.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["E_FLOOR", "bin_index", "psi_counts", "psi_rows"]

F64 = npt.NDArray[np.float64]
E_FLOOR = 1e-4


def bin_index(values: npt.NDArray[np.floating], edges: F64) -> npt.NDArray[np.intp]:
    """The reference bin of each value; only the inner edges decide: outer bins are open."""
    return np.searchsorted(edges[1:-1], values, side="right")


def psi_counts(counts: npt.NDArray[np.integer], n: int, expected: F64) -> F64:
    """PSI of each row of bin ``counts`` [rows, K] (``n`` samples per row) against
    ``expected`` [K] shares summing to 1."""
    if counts.shape[0] == 0 or n == 0:
        return np.zeros(counts.shape[0])
    actual = np.maximum(counts / n, 0.5 / n)
    e = np.maximum(expected, E_FLOOR)
    out: F64 = ((actual - e) * np.log(actual / e)).sum(axis=1)
    return out


def psi_rows(windows: npt.NDArray[np.floating], edges: F64, expected: F64) -> F64:
    """PSI of each row of ``windows`` [rows, samples] against one feature's reference.

    ``edges`` has K+1 increasing values, ``expected`` K shares summing to 1.
    """
    rows, n = windows.shape
    k = expected.size
    if rows == 0 or n == 0:
        return np.zeros(rows)
    idx = bin_index(windows, edges) + (np.arange(rows) * k)[:, None]
    counts = np.bincount(idx.ravel(), minlength=rows * k).reshape(rows, k)
    return psi_counts(counts, n, expected)
