"""``unitCode``: every unit the shipped mappings use has its UN/CEFACT Rec. 20 common code; a
unit without one is sent without ``unitCode`` and logged once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from bridge.connectors.ngsild.units import UnitCodes

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


def _units(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("unit", "convert_to") and isinstance(value, str):
                found.add(value)
            else:
                found |= _units(value)
    elif isinstance(node, list):
        for item in node:
            found |= _units(item)
    return found


def mapping_units() -> set[str]:
    units: set[str] = set()
    for path in sorted(MAPPINGS.glob("*.yaml")):
        units |= _units(yaml.safe_load(path.read_text()))
    return units


def test_the_mappings_use_units() -> None:
    # The next test proves something only if the mappings name units.
    assert {"degC", "bar", "mm/s", "rpm", "%", "m3/h", "psi", "degF", "kWh", "A"} <= mapping_units()


@pytest.mark.parametrize("unit", sorted(mapping_units()))
def test_every_unit_of_the_mappings_has_a_code(unit: str) -> None:
    assert UnitCodes("t").code(unit) is not None, unit


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("degC", "CEL"), ("°C", "CEL"), ("degF", "FAH"), ("bar", "BAR"), ("psi", "PS"),
        ("mm/s", "C16"), ("rpm", "RPM"), ("%", "P1"), ("m3/h", "MQH"), ("m^3/h", "MQH"),
        ("A", "AMP"), ("V", "VLT"), ("kW", "KWT"), ("kWh", "KWH"), ("Hz", "HTZ"),
        ("l/min", "L2"), ("L/min", "L2"), ("kPa", "KPA"), ("s", "SEC"),
    ],
)  # fmt: skip
def test_common_codes(unit: str, code: str) -> None:
    assert UnitCodes("t").code(unit) == code


def test_a_unit_without_a_code_is_omitted_and_logged_once() -> None:
    codes = UnitCodes("twin")
    with capture_logs() as logs:
        assert codes.code("furlong/fortnight") is None
        assert codes.code("furlong/fortnight") is None
        assert codes.code("not a unit at all") is None
        assert codes.code(None) is None and codes.code("") is None
    warned = [e["unit"] for e in logs if e["event"] == "ngsild_unit_without_code"]
    assert warned == ["furlong/fortnight", "not a unit at all"]


README = Path(__file__).resolve().parents[3] / "connectors" / "ngsild" / "README.md"


def test_the_readme_table_says_what_is_sent() -> None:
    text = README.read_text()
    table = text[text.index("| unit | code |") :].split("\n\n")[0].splitlines()[2:]
    pairs = []
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for unit, code in zip(cells[::2], cells[1::2], strict=True):
            units, codes = unit.split(", "), code.split(", ")
            pairs += [(u, c) for u, c in zip(units, codes, strict=True) if u]
    assert len(pairs) > 30
    codes = UnitCodes("t")
    assert [(u, codes.code(u)) for u, _ in pairs] == pairs
