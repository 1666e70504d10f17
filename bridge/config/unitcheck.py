"""A model input's declared unit against the unit its tag delivers, checked at load.

The rule is exact: the tag's unit (its ``convert_to`` when set) must be the unit the feature
names, spelt any way pint reads as that unit (``degC`` = ``°C`` = ``celsius``). A unit of the
same dimension but another scale (``degF`` for ``degC``, ``psi`` for ``bar``) is refused too:
the model would be fed numbers on the wrong scale. The fix offered is ``convert_to``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge import units
from bridge.config.resolved import ResolvedTag
from bridge.config.spec import ModelConfig

__all__ = ["check_feature_units"]

Loc = tuple[str | int, ...]
AddIssue = Callable[[Loc, str, str], None]


def check_feature_units(
    loc: Loc,
    model: ModelConfig,
    served: Sequence[str],
    tags: dict[str, ResolvedTag],
    add: AddIssue,
) -> None:
    """Report each feature whose tag, on some served asset, is not in the feature's unit."""
    checked: set[tuple[str, str]] = set()
    for i, feature in enumerate(model.features):
        if not feature.unit or (feature.tag, feature.unit) in checked:
            continue
        checked.add((feature.tag, feature.unit))
        # Assets of one template share their tag's unit: each distinct unit is judged once.
        by_unit: dict[str, list[str]] = {}
        for asset in served:
            tag = tags.get(f"{asset}.{feature.tag}")
            if tag is not None:
                by_unit.setdefault(tag.unit, []).append(asset)
        for unit, assets in by_unit.items():
            if unit and units.same_unit(unit, feature.unit):
                continue
            where = ", ".join(assets[:5]) + (
                f" and {len(assets) - 5} more" if len(assets) > 5 else ""
            )
            add((*loc, "features", i, "unit"), *_mismatch(feature.tag, feature.unit, unit, where))


def _mismatch(tag: str, wanted: str, unit: str, where: str) -> tuple[str, str]:
    if not unit:
        return (
            f"the model takes {tag!r} in {wanted} but the tag has no unit (asset(s) {where})",
            f"write `unit:` on the tag (and `convert_to: {wanted}` if it comes in another unit)",
        )
    message = f"the model takes {tag!r} in {wanted} but the tag is in {unit} (asset(s) {where})"
    try:
        units.conversion(unit, wanted)
    except units.UnitError:
        return message, f"{unit} and {wanted} measure different things: check the tag or model"
    return message, f"add `convert_to: {wanted}` to the tag, next to its `unit:`"
