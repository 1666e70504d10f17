"""Which assets a canary serves: the ``round(share x N)`` assets of lowest hash rank.

Several gateways sharing one database must agree on the assignment without talking to each
other, so it depends on nothing but the model name, the asset ids and the share: no random
state, no Python ``hash()`` (salted per process), no insertion order. A threshold on each asset's
hash (the earlier rule) served 0 of 4 assets at 50 %: with few assets the hashes rarely split as
the share says. Ranking all of the model's assets by hash and taking the first ``round(share x N)``
gives exactly that many, and a larger share only adds assets to the ones a smaller share chose.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable

__all__ = ["canary_assets", "canary_count", "rank"]


def rank(model: str, asset: str) -> bytes:
    """The asset's place in the model's canary order (a sha256 digest, compared as bytes)."""
    return hashlib.sha256(f"{model}\x00{asset}".encode()).digest()


def canary_count(share: float, total: int) -> int:
    """``share`` percent of ``total`` assets, halves rounded up (``round`` would round to even)."""
    return min(total, math.floor(share * total / 100 + 0.5))


def canary_assets(
    model: str,
    assets: Iterable[str],
    share: float | None,
    listed: Collection[str] | None = None,
) -> frozenset[str]:
    """The assets that get the candidate: an explicit list wins, else a share (0..100) of them."""
    served = sorted(set(assets))
    if listed is not None:
        return frozenset(a for a in served if a in listed)
    if share is None or share <= 0:
        return frozenset()
    ranked = sorted(served, key=lambda asset: rank(model, asset))
    return frozenset(ranked[: canary_count(share, len(ranked))])
