"""A fixed-size numpy ring of (time, value) per tag: O(1) append, window slices without copies
of the whole history. Numpy rings, because building arrays from deques costs ~10x more."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Ring"]

F64 = npt.NDArray[np.float64]


class Ring:
    __slots__ = ("_head", "_n", "_t", "_v", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._t: F64 = np.zeros(capacity, dtype=np.float64)
        self._v: F64 = np.zeros(capacity, dtype=np.float64)
        self._head = 0  # next write position
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, t: float, v: float) -> None:
        self._t[self._head] = t
        self._v[self._head] = v
        head = self._head + 1
        self._head = 0 if head == self.capacity else head
        if self._n < self.capacity:
            self._n += 1

    def clear(self) -> None:
        self._head = 0
        self._n = 0

    def oldest(self) -> float | None:
        """Time of the oldest sample kept, or None when empty."""
        if self._n == 0:
            return None
        return float(self._t[0] if self._n < self.capacity else self._t[self._head])

    def since(self, start: float) -> tuple[F64, F64]:
        """Samples with time >= ``start``, oldest first."""
        t, v = self._ordered()
        if self._n == 0 or t[0] >= start:  # the whole history is in the window: no search
            return t, v
        i = int(t.searchsorted(start, side="left"))
        return t[i:], v[i:]

    def _ordered(self) -> tuple[F64, F64]:
        if self._n < self.capacity:
            return self._t[: self._n], self._v[: self._n]
        h = self._head
        return np.concatenate((self._t[h:], self._t[:h])), np.concatenate(
            (self._v[h:], self._v[:h])
        )
