"""Turn a raw source value into an engineering value (scaled, then converted to the tag's
``convert_to`` unit). No state, no I/O: tested with tables."""

from __future__ import annotations

import math
from collections.abc import Callable

from bridge.config.resolved import ResolvedTag
from bridge.types import Quality, TagValue

__all__ = ["Transform", "compile_transform", "linear_of", "passes_deadband", "transform_key"]

Transform = Callable[[TagValue, Quality], tuple[TagValue, Quality, str]]


def transform_key(tag: ResolvedTag) -> tuple[float, float, tuple[float, float] | None]:
    """What the tag's transform depends on: tags with equal keys can share one."""
    scale, offset = linear_of(tag)
    return scale, offset, tag.clamp


def linear_of(tag: ResolvedTag) -> tuple[float, float]:
    """``(scale, offset)`` from the raw value to the tag's unit: the mapping's scale/offset
    (raw -> ``unit``) followed by the unit conversion (``unit`` -> ``convert_to``), folded into
    one multiply-add at load time."""
    if tag.convert is None:
        return tag.scale, tag.offset
    factor, shift = tag.convert
    return tag.scale * factor, tag.offset * factor + shift


def compile_transform(tag: ResolvedTag) -> Transform:
    """Build the value function for one tag; the common identity case costs nothing extra."""
    (scale, offset), clamp = linear_of(tag), tag.clamp
    linear = scale != 1.0 or offset != 0.0

    def transform(raw: TagValue, quality: Quality) -> tuple[TagValue, Quality, str]:
        if raw is None or isinstance(raw, bool | str):
            return raw, quality, ""
        value = float(raw) * scale + offset if linear else raw
        if isinstance(value, float) and not math.isfinite(value):
            return None, Quality.BAD, f"not a finite number ({value})"
        if clamp is not None:
            low, high = clamp
            if value < low or value > high:
                clamped = low if value < low else high
                worse = max(quality, Quality.UNCERTAIN)
                return clamped, worse, f"{value:g} clamped to [{low:g}, {high:g}]"
        return value, quality, ""

    return transform


def passes_deadband(previous: TagValue, value: TagValue, deadband: float) -> bool:
    """True when ``value`` differs enough from the last accepted ``previous`` to be reported."""
    if deadband <= 0 or previous is None or value is None:
        return True
    if isinstance(value, bool | str) or isinstance(previous, bool | str):
        return value != previous
    return abs(float(value) - float(previous)) >= deadband
