"""Rendezvous (highest-random-weight) hashing: which live gateway serves an asset.

Every gateway computes the same answer from the same list of members, with no table to agree
on: each (member, asset) pair gets a pseudo-random weight and the heaviest member wins. When a
member joins it wins about 1/N of the assets, taken evenly from the others; when one leaves,
only its assets move, spread evenly over the rest. Nothing else moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["owner", "share"]


def _weight(member: str, asset: str) -> bytes:
    return hashlib.blake2b(f"{member}\x00{asset}".encode(), digest_size=8).digest()


def owner(asset: str, members: Sequence[str]) -> str:
    """The member that serves ``asset``; ``""`` when there is none."""
    if not members:
        return ""
    return max(members, key=lambda m: (_weight(m, asset), m))


def share(me: str, assets: Iterable[str], members: Sequence[str]) -> set[str]:
    """The assets ``me`` serves among ``members`` (``me`` counts as a member)."""
    everyone = tuple(members) if me in members else (*members, me)
    return {a for a in assets if owner(a, everyone) == me}
