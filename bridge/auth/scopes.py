"""Scopes are ordered: a key of a higher scope may do everything a lower one may."""

from __future__ import annotations

import enum

__all__ = ["Scope"]


class Scope(enum.IntEnum):
    READ = 1  # look at tags, predictions, models, alerts
    OPERATE = 2  # act on the plant's events: acknowledge alerts
    ADMIN = 3  # manage API keys

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
        return self >= needed
