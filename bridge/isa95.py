"""The ISA-95 levels above an asset (enterprise, site, area, line), as destinations that place
assets in a plant hierarchy declare them: the UNS topic tree, the lakehouse's context table,
NGSI-LD ``isPartOf`` relationships, Ditto attributes.

Every destination block carries its own levels (one gateway may publish the same assets into
two hierarchies); this model keeps their spelling and their checks the same everywhere.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

__all__ = ["ISA95_LEVELS", "Isa95Levels", "check_level"]

ISA95_LEVELS = ("enterprise", "site", "area", "line")

# A level is a path segment somewhere: an MQTT topic level, a URN part, a partition value.
_FORBIDDEN = "/+#\x00"


def check_level(value: str) -> str:
    """A level's name: not empty, none of ``/ + #`` (they split or match topic levels)."""
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{value!r} cannot be a topic level (no /, +, # and not empty)")
    return value


class Isa95Levels(BaseModel):
    """Where assets sit in the plant: the defaults of every asset, and per asset what differs."""

    enterprise: str = Field(description="ISA-95 enterprise level of the assets, e.g. acme.")
    site: str = Field(description="ISA-95 site level, e.g. dallas.")
    area: str = Field(description="ISA-95 area level, e.g. packaging.")
    line: str = Field(description="ISA-95 line (work cell) level of every asset, e.g. line-4.")
    asset_levels: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per asset, levels that differ from the defaults above, e.g. "
        "{pump-a: {line: line-5}}.",
    )

    @field_validator("enterprise", "site", "area", "line")
    @classmethod
    def _level(cls, value: str) -> str:
        return check_level(value)

    @field_validator("asset_levels")
    @classmethod
    def _asset_levels(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for asset, levels in value.items():
            for key, level in levels.items():
                if key not in ISA95_LEVELS:
                    raise ValueError(
                        f"asset {asset}: {key!r} is not a level ({', '.join(ISA95_LEVELS)})"
                    )
                check_level(level)
        return value

    def levels_of(self, asset: str) -> dict[str, str]:
        """The four levels of ``asset``, in order from the enterprise down."""
        levels = {key: getattr(self, key) for key in ISA95_LEVELS}
        levels.update(self.asset_levels.get(asset, {}))
        return levels
