"""A fixed-size numpy ring of (time, value) per tag: O(1) append, window slices without copies
of the whole history. Numpy rings, because building arrays from deques costs ~10x more.

Times must never go backwards (``since`` searches them): the tag table stamps samples with the
monotonic clock, never the wall clock an NTP step may set back."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["Replay", "Ring"]

F64 = npt.NDArray[np.float64]


# Shared by every lazy ring until its first sample: an empty array still costs ~100 bytes.
_EMPTY: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)


class Ring:
    """Keeps the newest ``capacity`` samples.

    With ``horizon_s`` (the longest window a model reads from it) the ring starts empty and
    grows, up to ``capacity``, only while the oldest samples are still needed: a ring drops
    its oldest sample instead of growing once the next one is at least ``horizon_s`` old, so
    it still holds one sample at or before any window start. ``since`` and ``oldest``-based
    decisions are then the same as with the full ring, and a tag's memory follows its rate x
    window, not ``max_samples`` (at 100,000 tags that was most of the gateway's memory).

    Growth doubles (16, 32, 64, ...) until the ring first finds its oldest sample no longer
    needed; it is then cut to the samples it holds plus 1/16 ("settled": rate x window,
    instead of the next power of two: 107 instead of 128 samples at 10 Hz x 10 s) and grows
    by an eighth from there if the rate rises. Times and values share one float64 array (times in
    [0, size), values in [size, 2 size): one array header per ring, and 1-D indexing, which
    costs half of 2-D indexing per sample), so the values are the very float64 numbers the
    statistics always read.
    """

    __slots__ = ("_buf", "_head", "_held", "_horizon_s", "_n", "_settled", "_size", "capacity")

    def __init__(self, capacity: int, horizon_s: float | None = None) -> None:
        self.capacity = capacity
        self._horizon_s = horizon_s
        self._settled = False
        # Without a horizon the whole capacity is allocated now.
        self._buf = _EMPTY if horizon_s is not None else np.zeros(2 * capacity, np.float64)
        self._size = 0 if horizon_s is not None else capacity  # len of a row, read per sample
        self._head = 0  # next write position
        self._n = 0
        self._held: float | None = None  # the horizon while ``hold`` keeps every sample

    def __len__(self) -> int:
        return self._n

    @property
    def allocated(self) -> int:
        """Samples the ring has room for now (grows up to ``capacity``)."""
        return self._size

    def append(self, t: float, v: float) -> None:
        n, size, head = self._n, self._size, self._head
        buf = self._buf
        if n == size:
            if size < self.capacity:
                # _keeps_oldest, inlined: this runs for every sample of a settled ring.
                horizon = self._horizon_s
                if horizon is None or n < 2:
                    size = self._grow()
                else:
                    second = head + 1  # the oldest is at head when full
                    if second == size:
                        second = 0
                    if buf[second] > t - horizon:
                        size = self._grow()
                if size != n:
                    head, buf = self._head, self._buf
        elif (
            self._horizon_s is not None
            and not self._settled
            and size > 16
            and not self._keeps_oldest(t)
        ):
            size = self._settle()
            head, buf = self._head, self._buf
        buf[head] = t
        buf[size + head] = v
        head += 1
        self._head = 0 if head == size else head
        if n < size:
            self._n = n + 1

    def _keeps_oldest(self, t: float) -> bool:
        """Would dropping the oldest sample lose history a window may still need?"""
        n = self._n
        if n < 2 or self._horizon_s is None:
            return True
        second = self._head - n + 1  # the oldest is n places behind the next write
        if second < 0:
            second += self._size
        return bool(self._buf[second] > t - self._horizon_s)

    def _grow(self) -> int:
        size = self._size
        if self._settled:
            size = min(self.capacity, size + max(8, size // 8))
        else:
            size = min(self.capacity, max(16, 2 * size))
        self._resize(size)
        return size

    def _settle(self) -> int:
        """Not full, and the oldest sample is no longer needed: the ring has seen what its rate
        x window needs. Cut it to that, with 1/16 to spare for the jitter of a real source's
        rate (which would otherwise make it grow again at once)."""
        self._settled = True
        size = min(self.capacity, self._n + max(2, self._n // 16))
        self._resize(size)
        return size

    def _resize(self, size: int) -> None:
        t, v = self._ordered()
        n = self._n
        buf = np.zeros(2 * size, dtype=np.float64)
        buf[:n] = t
        buf[size : size + n] = v
        self._buf = buf
        self._head = n if n < size else 0
        self._size = size

    def clear(self) -> None:
        self._head = 0
        self._n = 0

    def hold(self) -> None:
        """Keep every sample (up to ``capacity``) until ``release``: a backfill appends an
        outage's worth of past samples at once, and windows ending at those past times still
        need the samples the horizon would drop. An infinite horizon in place of the real one
        leaves ``append`` as it is: no test of a flag per sample on the live path."""
        if self._horizon_s is not None and self._held is None:
            self._held, self._horizon_s = self._horizon_s, math.inf

    def release(self) -> None:
        """The horizon again, and the room ``hold`` made cut back to what it needs: the
        samples since the newest minus the horizon and one before, plus 1/16 (``_settle``)."""
        horizon = self._held
        if horizon is None:
            return
        self._horizon_s, self._held = horizon, None
        n = self._n
        newest = self.newest()
        if newest is None:
            return
        keep = min(n, self.count_since(newest - horizon) + 1)
        size = min(self.capacity, max(16, keep + max(2, keep // 16)))
        if size >= self._size:
            return
        t, v = self._ordered()
        buf = np.zeros(2 * size, dtype=np.float64)
        buf[:keep] = t[n - keep :]
        buf[size : size + keep] = v[n - keep :]
        self._buf, self._size, self._n = buf, size, keep
        self._head = keep if keep < size else 0

    def replay(self) -> Replay:
        """A copy of the samples that reads as this ring did at an earlier time (``Replay``)."""
        t, v = self._ordered()
        return Replay(t.copy(), v.copy())

    def newest(self) -> float | None:
        """Time of the newest sample, or None when empty."""
        if self._n == 0:
            return None
        i = self._head - 1
        return float(self._buf[i + self._size if i < 0 else i])

    def last(self) -> float | None:
        """Value of the newest sample, or None when empty."""
        if self._n == 0:
            return None
        i = self._head - 1
        return float(self._buf[self._size + (i + self._size if i < 0 else i)])

    def oldest(self) -> float | None:
        """Time of the oldest sample kept, or None when empty."""
        n = self._n
        if n == 0:
            return None
        i = self._head - n
        return float(self._buf[i + self._size if i < 0 else i])

    def since(self, start: float) -> tuple[F64, F64]:
        """Samples with time >= ``start``, oldest first."""
        t, v = self._ordered()
        if self._n == 0 or t[0] >= start:  # the whole history is in the window: no search
            return t, v
        i = int(t.searchsorted(start, side="left"))
        return t[i:], v[i:]

    def count_since(self, start: float) -> int:
        """How many samples ``since(start)`` returns, without building them."""
        older, newer = self._segments()
        if older.size and older[0] >= start:
            return self._n
        k = newer.size - int(newer.searchsorted(start, side="left"))
        if k == newer.size:
            k += older.size - int(older.searchsorted(start, side="left"))
        return k

    def copy_newest(self, k: int, t_out: F64 | None, v_out: F64) -> None:
        """Write the newest ``k`` samples, oldest first, into ``t_out`` (unless None) and
        ``v_out``: the arrays ``since`` gives for a window of ``k`` samples, written straight
        into a caller's stacked matrix (100,000 windows copied one by one were the largest
        transient of a model tick)."""
        buf, h, size = self._buf, self._head, self._size
        first = h - k  # newest k are [h - k, h), wrapping below 0
        if first >= 0:
            if t_out is not None:
                t_out[:] = buf[first:h]
            v_out[:] = buf[size + first : size + h]
            return
        split = -first  # samples before the wrap point
        if t_out is not None:
            t_out[:split] = buf[size + first : size]
            t_out[split:] = buf[:h]
        v_out[:split] = buf[2 * size + first :]
        v_out[split:] = buf[size : size + h]

    def _segments(self) -> tuple[F64, F64]:
        """The times in two ordered runs: older (from the oldest to the end of the array, when
        wrapped) and newer (up to the next write)."""
        n, h, buf = self._n, self._head, self._buf
        if h >= n:
            return buf[h:h], buf[h - n : h]
        return buf[h - n + self._size : self._size], buf[:h]

    def _ordered(self) -> tuple[F64, F64]:
        n, h, buf, size = self._n, self._head, self._buf, self._size
        if h >= n:  # not wrapped: the samples are [h - n, h)
            return buf[h - n : h], buf[size + h - n : size + h]
        first = h - n + size
        return (
            np.concatenate((buf[first:size], buf[:h])),
            np.concatenate((buf[size + first :], buf[size : size + h])),
        )


class Replay(Ring):
    """A ring's samples as they were at a past time ``t``: ``at(t)`` hides every sample after
    ``t``, so ``oldest``, ``newest``, ``last``, ``since``, ``count_since`` and ``copy_newest``
    (what feature building reads) answer as the ring did then. For predictions made after the
    fact over a backfilled gap; read-only (``append`` raises).

    The samples lie unwrapped in one array (times, then values), and the write position is
    the end of the visible ones: the ring's own reads need no change and no copy per ``t``."""

    __slots__ = ("_times",)

    def __init__(self, t: F64, v: F64) -> None:
        super().__init__(len(t))
        n = len(t)
        self._buf = np.concatenate((t, v))
        self._size = n
        self._times = self._buf[:n]
        self._head = self._n = n

    def at(self, t: float) -> Replay:
        """Show the samples with time <= ``t`` (all of them again with ``math.inf``)."""
        end = int(self._times.searchsorted(t, side="right"))
        self._head = self._n = end
        return self

    def append(self, t: float, v: float) -> None:
        raise TypeError("a Replay is read-only")
