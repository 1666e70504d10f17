"""Scopes of API keys.

``read < operate < admin`` are ordered: a key of a higher scope may do everything a lower one
may. ``insights`` stands apart: a key of it may only read the anonymised insights
(``GET /api/v1/insights``), and of the others only ``admin`` may read them too (to check what
is published); ``read`` and ``operate`` may not, since the insights are meant for third parties
and a plant's own read keys have no business with what is sold.
"""

from __future__ import annotations

import enum

__all__ = ["Scope"]


class Scope(enum.IntEnum):
    READ = 1  # look at tags, predictions, models, alerts
    OPERATE = 2  # act on the plant's events: acknowledge alerts
    ADMIN = 3  # manage API keys
    # Below every other value on purpose: a comparison ``scope >= Scope.READ`` written anywhere
    # refuses it. Stored as its label ("insights"), like the others.
    INSIGHTS = 0  # the anonymised insights only

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            known = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown scope {text!r} (one of: {known})") from None

    def allows(self, needed: Scope) -> bool:
        if needed is Scope.INSIGHTS:
            return self is Scope.INSIGHTS or self is Scope.ADMIN
        # INSIGHTS is below READ: it allows nothing else.
        return self >= needed
