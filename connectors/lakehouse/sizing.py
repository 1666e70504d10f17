"""How big a table's spool segment grows before it is sealed, so that its Parquet files come
out near ``flush.target_file_mb``.

The spool holds Arrow (uncompressed); Parquet compresses it many times, and one commit writes a
file per partition it touches. Counting spool bytes alone gave files 6-200x under the target.
So the seal threshold is the target times what the table's last commit showed: spool bytes of
the segment per Parquet byte of the largest partition it wrote (compression and partition
fan-out in one figure; the largest, so that no partition's file overshoots). Remembered in the
table's spool directory across restarts (a hint: 1.0 without it). ``flush.max_age_s`` still
seals first when rows come slowly.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MAX_EXPANSION", "SPLIT", "SegmentSizing"]

# Bounds of the learned figure: never smaller segments than the target itself, never more than
# this many times it (a segment is read back whole at its commit).
MAX_EXPANSION = 256.0
# A segment much smaller than the threshold (sealed by age, or at a stop) is mostly fixed
# per-file overhead once in Parquet: it would understate the ratio, so it teaches nothing.
_SMALL = 0.25
_FILE = "sizing.json"
# The writer splits a partition's rows into files of at most ``SPLIT`` x the target: a segment
# sized for one file of the target per partition is then one file, not one and a remainder
# (delta-rs closes a file somewhat before the size it is given). Oversized segments (the cap
# above, a changed compression) are still split.
SPLIT = 1.5


class SegmentSizing:
    """The seal threshold of one table: ``target`` bytes per file wanted, at most ``cap``
    bytes per segment (a share of ``max_spool_mb``: the spool's bound still holds)."""

    def __init__(self, directory: Path, target: int, cap: int) -> None:
        self.target = target
        self.cap = max(1, cap)
        self._path = directory / _FILE
        self.expansion = 1.0
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            self.expansion = _bounded(float(json.loads(self._path.read_text())["expansion"]))

    @property
    def split_bytes(self) -> int:
        """The largest file a commit writes."""
        return round(self.target * SPLIT)

    @property
    def seal_bytes(self) -> int:
        """Seal a segment once its spool file reaches this."""
        return max(1, min(self.cap, round(self.target * self.expansion)))

    def learn(self, segment_bytes: int, files: Sequence[tuple[str, int]]) -> None:
        """A commit of a ``segment_bytes`` segment added ``files`` (path in the table, bytes)."""
        partitions: dict[str, int] = {}
        for path, size in files:
            key = posixpath.dirname(path)
            partitions[key] = partitions.get(key, 0) + size
        largest = max(partitions.values(), default=0)
        if largest <= 0 or segment_bytes < _SMALL * self.seal_bytes:
            return
        expansion = _bounded(segment_bytes / largest)
        if expansion == self.expansion:
            return
        self.expansion = expansion
        # Best effort, not fsync'd: losing it costs some small files after a restart.
        with contextlib.suppress(OSError):
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"expansion": expansion}))
            os.replace(tmp, self._path)


def _bounded(expansion: float) -> float:
    if expansion != expansion:  # NaN
        return 1.0
    return min(MAX_EXPANSION, max(1.0, expansion))
