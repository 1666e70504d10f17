"""A fixed-size numpy ring of (time, value) per tag: O(1) append, window slices without copies
of the whole history. Numpy rings, because building arrays from deques costs ~10x more."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Ring"]

F64 = npt.NDArray[np.float64]


class Ring:
    """Keeps the newest ``capacity`` samples.

    With ``horizon_s`` (the longest window a model reads from it) the arrays start at 16
    samples and grow, up to ``capacity``, only while the oldest samples are still needed: a
    ring drops its oldest sample instead of growing once the next one is at least
    ``horizon_s`` old, so it still holds one sample at or before any window start. ``since``
    and ``oldest``-based decisions are then the same as with the full ring, and a tag's memory
    follows its rate x window, not ``max_samples`` (at 100,000 tags that was most of the
    gateway's memory).
    """

    __slots__ = ("_head", "_horizon_s", "_n", "_size", "_t", "_v", "capacity")

    def __init__(self, capacity: int, horizon_s: float | None = None) -> None:
        self.capacity = capacity
        self._horizon_s = horizon_s
        size = capacity if horizon_s is None else 0  # allocated on the first append
        self._size = size  # len(self._t), kept: append reads it on every sample
        self._t: F64 = np.zeros(size, dtype=np.float64)
        self._v: F64 = np.zeros(size, dtype=np.float64)
        self._head = 0  # next write position
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def allocated(self) -> int:
        """Samples the ring has room for now (grows up to ``capacity``)."""
        return self._size

    def append(self, t: float, v: float) -> None:
        n, size = self._n, self._size
        if n == size and size < self.capacity and self._keeps_oldest(t):
            size = self._grow()
        head = self._head
        self._t[head] = t
        self._v[head] = v
        head += 1
        self._head = 0 if head == size else head
        if n < size:
            self._n = n + 1

    def _keeps_oldest(self, t: float) -> bool:
        """Full: would dropping the oldest sample lose history a window may still need?"""
        if self._n < 2 or self._horizon_s is None:
            return True
        second = self._head + 1  # the oldest is at head when full
        if second == self._n:
            second = 0
        return bool(self._t[second] > t - self._horizon_s)

    def _grow(self) -> int:
        size = min(self.capacity, max(16, 2 * self._size))
        t, v = self._ordered()
        n = self._n
        self._t = np.zeros(size, dtype=np.float64)
        self._v = np.zeros(size, dtype=np.float64)
        self._t[:n] = t
        self._v[:n] = v
        self._head = n
        self._size = size
        return size

    def clear(self) -> None:
        self._head = 0
        self._n = 0

    def oldest(self) -> float | None:
        """Time of the oldest sample kept, or None when empty."""
        if self._n == 0:
            return None
        return float(self._t[0] if self._n < self._size else self._t[self._head])

    def since(self, start: float) -> tuple[F64, F64]:
        """Samples with time >= ``start``, oldest first."""
        t, v = self._ordered()
        if self._n == 0 or t[0] >= start:  # the whole history is in the window: no search
            return t, v
        i = int(t.searchsorted(start, side="left"))
        return t[i:], v[i:]

    def _ordered(self) -> tuple[F64, F64]:
        if self._n < self._size:
            return self._t[: self._n], self._v[: self._n]
        h = self._head
        return np.concatenate((self._t[h:], self._t[:h])), np.concatenate(
            (self._v[h:], self._v[:h])
        )
