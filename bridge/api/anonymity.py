"""The anonymity rules of the insights (``GET /api/v1/insights``). Pure.

* Asset names never leave: rows are per model, label and period, and an optional per-asset
  breakdown names each asset only by ``asset_key`` = HMAC-SHA256(salt, asset name), the first
  16 hex digits. The salt is the gateway's secret: without it nobody can recompute a key from
  a list of asset names (which are few and easy to guess).
* k distinct assets: a row is published only when its group (the rows sharing model, label and
  period) was computed from at least ``k`` distinct assets; others are suppressed, only counted.
* Rare events: a per-asset row is also suppressed when any count of events it shows (label
  predictions, alerts raised or acknowledged, drift events) is between 1 and k-1. One asset's
  rare event (its only fault of the week) is what an outsider may know from elsewhere ("pump 7
  cavitated on Tuesday"), and would link its key to its name, and with it every other row of
  that key. Zero and frequent counts single out nobody. Aggregate rows need no such rule: k
  assets stand behind each of their figures.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["ASSET_KEY_HEX", "AssetKeys", "has_rare_count", "k_anonymous"]

ASSET_KEY_HEX = 16  # 64 bits: no collision among any plant's assets, short enough to read


class AssetKeys:
    """Salted asset keys. The salt stays inside: not in ``repr``, not in an exception."""

    __slots__ = ("_salt",)

    def __init__(self, salt: str) -> None:
        if not salt:
            raise ValueError("an asset key needs a salt")
        self._salt = salt.encode("utf-8")

    def __repr__(self) -> str:
        return "AssetKeys(salt=<hidden>)"

    def key(self, asset: str) -> str:
        digest = hmac.new(self._salt, asset.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:ASSET_KEY_HEX]


def k_anonymous(assets: int, k: int) -> bool:
    """Whether a group computed from ``assets`` distinct assets may be published."""
    return assets >= k


def has_rare_count(counts: Iterable[int], k: int) -> bool:
    """Whether any event count is rare enough to single one asset out (1 to k-1)."""
    return any(0 < c < k for c in counts)
