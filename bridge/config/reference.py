"""Reference statistics of a model's training data, stored with each registered version.

The format (JSON, one object; ``bridge models register --reference stats.json``)::

    {
      "format": "bridge-reference/1",
      "rows": 12000,                       # optional: how many training rows it describes
      "features": {
        "vibration.mean": {
          "mean": 2.1, "std": 0.4,         # required, std >= 0
          "min": 0.9, "max": 4.2,          # optional
          "bins": [0.5, 1.5, 2.5, 3.5, 4.5],   # histogram bin edges, strictly increasing
          "fractions": [0.1, 0.5, 0.3, 0.1]    # share of rows per bin, len(bins) - 1, sum 1
        },
        ...
      }
    }

Feature names are the mapping's feature names (``<tag>.<stat>``). Values below the first edge
count in the first bin and values above the last edge in the last bin, so a drift check (PSI)
compares a window's fractions over the same edges with ``fractions``.

The format lives with the configuration because a mapping names such a file
(``models.<name>.reference``) and loading the mapping checks it; the model registry
(``bridge.lifecycle``) and the drift check read the same format from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.errors import BridgeError

__all__ = [
    "FORMAT",
    "ReferenceFileError",
    "compute_reference",
    "load_reference",
    "validate_reference",
]

FORMAT = "bridge-reference/1"


class ReferenceFileError(BridgeError):
    """A reference statistics file that does not follow the format."""


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReferenceFileError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def validate_reference(data: Any, features: Sequence[str] | None = None) -> dict[str, Any]:
    """Check ``data`` against the format; with ``features``, every one must be described."""
    if not isinstance(data, dict):
        raise ReferenceFileError("reference statistics must be a JSON object")
    if data.get("format") != FORMAT:
        raise ReferenceFileError(f'reference statistics need "format": "{FORMAT}"')
    feats = data.get("features")
    if not isinstance(feats, dict) or not feats:
        raise ReferenceFileError('reference statistics need a non-empty "features" object')
    for name, st in feats.items():
        where = f"features.{name}"
        if not isinstance(st, dict):
            raise ReferenceFileError(f"{where} must be an object")
        _number(f"{where}.mean", st.get("mean"))
        if _number(f"{where}.std", st.get("std")) < 0:
            raise ReferenceFileError(f"{where}.std must be >= 0")
        for key in ("min", "max"):
            if key in st:
                _number(f"{where}.{key}", st[key])
        bins, fractions = st.get("bins"), st.get("fractions")
        if (bins is None) != (fractions is None):
            raise ReferenceFileError(f"{where}: give both bins and fractions, or neither")
        if bins is None:
            continue
        if not isinstance(bins, list) or not isinstance(fractions, list) or len(bins) < 2:
            raise ReferenceFileError(f"{where}.bins must be a list of at least 2 edges")
        edges = [_number(f"{where}.bins", b) for b in bins]
        if any(b >= a for a, b in zip(edges[1:], edges, strict=False)):
            raise ReferenceFileError(f"{where}.bins must be strictly increasing")
        if len(fractions) != len(edges) - 1:
            raise ReferenceFileError(
                f"{where}.fractions must have len(bins) - 1 = {len(edges) - 1} entries"
            )
        shares = [_number(f"{where}.fractions", f) for f in fractions]
        if any(f < 0 for f in shares) or abs(sum(shares) - 1.0) > 1e-3:
            raise ReferenceFileError(f"{where}.fractions must be >= 0 and sum to 1")
    if features is not None:
        missing = [f for f in features if f not in feats]
        if missing:
            raise ReferenceFileError(f"reference statistics miss features: {', '.join(missing)}")
    return data


def load_reference(path: Path, features: Sequence[str] | None = None) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReferenceFileError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReferenceFileError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    try:
        return validate_reference(data, features)
    except ReferenceFileError as exc:
        raise ReferenceFileError(f"{path}: {exc}") from exc


def compute_reference(
    x: npt.NDArray[np.float64], names: Sequence[str], bins: int = 10
) -> dict[str, Any]:
    """Reference statistics of a training matrix ``x`` [rows, features], equal-width bins."""
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ReferenceFileError(f"x has shape {x.shape}, expected [rows, {len(names)}]")
    feats: dict[str, Any] = {}
    for j, name in enumerate(names):
        col = x[:, j]
        lo, hi = float(col.min()), float(col.max())
        if hi <= lo:
            hi = lo + 1.0
        counts, edges = np.histogram(col, bins=bins, range=(lo, hi))
        feats[name] = {
            "mean": float(col.mean()),
            "std": float(col.std()),
            "min": float(col.min()),
            "max": float(col.max()),
            "bins": [float(e) for e in edges],
            "fractions": [float(c) / col.size for c in counts],
        }
    return {"format": FORMAT, "rows": int(x.shape[0]), "features": feats}
