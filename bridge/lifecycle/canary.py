"""Which assets a canary serves: a stable hash of (model, asset), the same in every process.

Several gateways sharing one database must agree on the assignment without talking to each
other, so it depends on nothing but the model name, the asset id and the share: no random
state, no Python ``hash()`` (salted per process), no insertion order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

__all__ = ["BUCKETS", "bucket", "in_canary"]

BUCKETS = 10_000  # a share is honoured to 0.01 %


def bucket(model: str, asset: str) -> int:
    """0 <= bucket < BUCKETS, uniform over assets."""
    digest = hashlib.sha256(f"{model}\x00{asset}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(model: str, asset: str, share: float | None, assets: Collection[str] | None) -> bool:
    """An explicit asset list wins; otherwise ``share`` percent (0..100) of the buckets."""
    if assets is not None:
        return asset in assets
    if share is None or share <= 0:
        return False
    return bucket(model, asset) < round(share * BUCKETS / 100)
