"""One line for an operator from the top contribution: the tag's name in words, how far the
input is from its normal (the reference mean) and the unit, e.g.
``bearing temperature +18 °C above normal``. Pure."""

from __future__ import annotations

__all__ = ["describe", "unit_text"]

# Units as written in mappings -> as people read them.
_UNITS = {"degC": "°C", "degF": "°F", "deg": "°", "pct": "%", "percent": "%"}
# What a window statistic is, said in words ("" for the level itself).
_STAT_WORDS = {
    "mean": "",
    "last": "",
    "min": "minimum",
    "max": "peak",
    "std": "fluctuation",
    "slope": "trend",
}


def unit_text(unit: str) -> str:
    return _UNITS.get(unit, unit)


def _number(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:+.0f}"
    if a >= 10:
        return f"{v:+.0f}" if float(round(v)) == round(v, 1) else f"{v:+.1f}"
    if a >= 1:
        return f"{v:+.1f}"
    return f"{v:+.2g}"


def describe(tag: str, stat: str, unit: str, value: float, baseline: float) -> str:
    """``<tag words> [<stat words>] <+delta> <unit> above|below normal``."""
    words = tag.replace("_", " ")
    stat_words = _STAT_WORDS.get(stat, stat)
    if stat_words:
        words = f"{words} {stat_words}"
    u = unit_text(unit)
    if stat == "slope" and u:
        u = f"{u}/s"
    delta = value - baseline
    if delta == 0:
        return f"{words} at normal"
    side = "above" if delta > 0 else "below"
    amount = f"{_number(delta)} {u}" if u else _number(delta)
    return f"{words} {amount} {side} normal"
