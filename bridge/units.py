"""Engineering units: names checked and conversions worked out with pint, once, at load time.

pint costs ~0.4 s to import and ~0.5 s to build its registry, so it is imported on the first
unit looked up (a mapping without units, or a process that only serves the API, never pays it)
and the registry is built once per process. Nothing here runs per sample: the loader turns a
conversion into a ``(factor, offset)`` pair and ``bridge.normalize`` applies it.

Unit texts are pint's: ``degC``, ``°C``, ``degF``, ``bar``, ``psi``, ``mm/s``, ``m^3/h``,
``rpm``, ``%``, ``kWh``. ``m3/h``, ``mm2`` and the like (a digit 2 or 3 right after a unit,
as plant documents write powers) are read as ``m**3/h``, ``mm**2``.
"""

from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "UNECE_NAMESPACE",
    "Unit",
    "UnitError",
    "conversion",
    "parse",
    "same_unit",
    "unece",
]

# OPC UA Part 8: EUInformation of a UNECE Recommendation 20 code names this namespace.
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

# Units plants write most; offered first when a unit is misspelt.
_COMMON = (
    "degC", "degF", "K", "bar", "mbar", "psi", "Pa", "kPa", "MPa", "mm/s", "m/s", "rpm", "Hz",
    "%", "A", "mA", "V", "kV", "W", "kW", "MW", "kWh", "MWh", "m3/h", "l/min", "l/h", "kg/h",
    "t/h", "kg", "t", "g", "m", "mm", "um", "s", "ms", "min", "h", "N", "kN", "N*m", "ppm",
)  # fmt: skip

# UNECE Recommendation 20 common codes by pint's name of the unit (every spelling of a unit
# has one name: `degC`, `°C` and `celsius` are all `degree_Celsius`).
_UNECE: dict[str, str] = {
    "degree_Celsius": "CEL",
    "degree_Fahrenheit": "FAH",
    "kelvin": "KEL",
    "bar": "BAR",
    "millibar": "MBR",
    "pound_force_per_square_inch": "PS",
    "pascal": "PAL",
    "kilopascal": "KPA",
    "megapascal": "MPA",
    "millimeter / second": "C16",
    "meter / second": "MTS",
    "revolutions_per_minute": "RPM",
    "hertz": "HTZ",
    "percent": "P1",
    "ampere": "AMP",
    "milliampere": "4K",
    "volt": "VLT",
    "kilovolt": "KVT",
    "watt": "WTT",
    "kilowatt": "KWT",
    "megawatt": "MAW",
    "kilowatt_hour": "KWH",
    "megawatt_hour": "MWH",
    "meter ** 3 / hour": "MQH",
    "liter / minute": "L2",
    "liter / hour": "E32",
    "metric_ton / hour": "E18",
    "kilogram / hour": "E93",
    "kilogram": "KGM",
    "gram": "GRM",
    "metric_ton": "TNE",
    "meter": "MTR",
    "millimeter": "MMT",
    "micrometer": "4H",
    "second": "SEC",
    "millisecond": "C26",
    "minute": "MIN",
    "hour": "HUR",
    "newton": "NEW",
    "kilonewton": "B47",
    "newton * meter": "NU",
    "ppm": "59",
}

# Spellings answered without pint: the HMI server gives InputAge the unit `s` in every gateway,
# and a mapping without units must not pay pint's import for it.
_UNECE_AS_WRITTEN = {"s": "SEC", "degC": "CEL", "bar": "BAR", "%": "P1", "mm/s": "C16"}


class UnitError(ValueError):
    """A unit that cannot be read, or a conversion that cannot be made; ``hint`` says what to
    write instead."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Unit:
    text: str  # as written in the mapping
    name: str  # pint's name: one per unit, whatever the spelling
    dimensions: str  # "temperature", "pressure", ...; else pint's, e.g. "[length] ** 2"


# Words for the dimensions of plant units, for messages ("pressure", not "[mass] / ...").
_QUANTITIES = {
    "[temperature]": "temperature",
    "[mass] / [length] / [time] ** 2": "pressure",
    "[length] / [time]": "speed",
    "[length] / [time] ** 2": "acceleration",
    "[length] ** 3 / [time]": "volume flow",
    "[mass] / [time]": "mass flow",
    "1 / [time]": "frequency",
    "[mass] * [length] ** 2 / [time] ** 3": "power",
    "[mass] * [length] ** 2 / [time] ** 2": "energy or torque",
    "[current]": "electric current",
    "[mass] * [length] ** 2 / [current] / [time] ** 3": "voltage",
    "[length]": "length",
    "[length] ** 3": "volume",
    "[mass]": "mass",
    "[time]": "time",
    "[mass] * [length] / [time] ** 2": "force",
    "dimensionless": "dimensionless",
}


_POWER = re.compile(r"(?<=[A-Za-zµ])([23])(?![0-9.])")


def _powers(text: str) -> str:
    return _POWER.sub(r"**\1", text)


_lock = threading.Lock()
_registry_built: Any = None


def _registry() -> Any:
    """pint's registry, built on first use (a lock: the loader may run in a thread while
    another thread asks for a UNECE code)."""
    global _registry_built
    if _registry_built is None:
        with _lock:
            if _registry_built is None:
                import pint  # lazy on purpose: ~0.9 s with the registry

                _registry_built = pint.UnitRegistry(
                    preprocessors=[_powers], autoconvert_offset_to_baseunit=False
                )
    return _registry_built


@lru_cache(maxsize=1024)
def parse(text: str) -> Unit:
    """The unit written as ``text``; ``UnitError`` with a did-you-mean hint if pint does not
    know it."""
    registry = _registry()
    try:
        unit = registry.Unit(text)
    except Exception as exc:  # pint raises UndefinedUnitError, parser errors, ...
        raise UnitError("unknown unit", _suggest(text)) from exc
    dimensions = str(unit.dimensionality)
    return Unit(text, str(unit), _QUANTITIES.get(dimensions, dimensions))


def same_unit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are spellings of one unit (``degC`` and ``°C``)."""
    return parse(a).name == parse(b).name


@lru_cache(maxsize=1024)
def conversion(source: str, target: str) -> tuple[float, float]:
    """``(factor, offset)`` with ``value_in_target = value_in_source * factor + offset``.

    Affine units (degF -> degC) get an offset; the others an offset of 0.0. Both are measured
    on pint once: the factor over a span of 1e6, so the offset's rounding does not enter it.
    """
    a, b = parse(source), parse(target)
    if a.dimensions != b.dimensions:
        raise UnitError(
            f"cannot convert {source} ({a.dimensions}) to {target} ({b.dimensions})",
            f"convert_to must be a unit of {a.dimensions}, like `unit: {source}`",
        )
    quantity = _registry().Quantity
    try:
        zero = float(quantity(0.0, source).to(target).magnitude)
        if zero == 0.0:
            return float(quantity(1.0, source).to(target).magnitude), 0.0
        span = float(quantity(1e6, source).to(target).magnitude)
    except Exception as exc:  # e.g. degC/s: pint refuses offset units inside a product
        raise UnitError(
            f"cannot convert {source} to {target}: {exc}",
            "convert plain units (degF -> degC, psi -> bar); offset units such as degC "
            "cannot be part of a compound unit",
        ) from exc
    return (span - zero) / 1e6, zero


def unece(text: str) -> tuple[str, int] | None:
    """UNECE Recommendation 20 common code of a unit and its OPC UA ``UnitId``, if known."""
    code = _UNECE_AS_WRITTEN.get(text)
    if code is None:
        try:
            code = _UNECE.get(parse(text).name)
        except UnitError:
            return None
    if code is None:
        return None
    unit_id = 0
    for ch in code:  # OPC UA Part 8, EUInformation: the code's characters, 8 bits each
        unit_id = unit_id << 8 | ord(ch)
    return code, unit_id


def _suggest(text: str) -> str:
    folded = text.casefold().replace(" ", "")
    for common in _COMMON:
        if common.casefold() == folded:
            return f"did you mean {common!r}? (units are case-sensitive)"
    close = difflib.get_close_matches(text, _COMMON, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(text, _names(), n=1, cutoff=0.75)
    lead = f"did you mean {close[0]!r}? " if close else ""
    return lead + "write a unit pint knows, e.g. degC, bar, psi, mm/s, m3/h, rpm, %, kW"


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    names: set[str] = set()
    for name, definition in _registry()._units.items():
        names.add(name)
        if definition.symbol:
            names.add(definition.symbol)
        names.update(a for a in definition.aliases if a)
    return tuple(sorted(names))
