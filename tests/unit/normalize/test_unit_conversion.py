"""``unit`` + ``convert_to``: the loader turns the pair into one (factor, offset) and normalize
applies it after the mapping's scale/offset, so the value reaching windows and models is in
``convert_to``. Values are checked against the textbook formulas."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import units
from bridge.config import load_mapping
from bridge.normalize import compile_transform, linear_of, transform_key
from bridge.types import Quality

G, U = Quality.GOOD, Quality.UNCERTAIN
PSI_IN_BAR = 0.45359237 * 9.80665 / 0.0254**2 / 1e5  # lbf/in^2 in bar, by definition


def _tags(tmp_path: Path, tags: str) -> dict[str, object]:
    file = tmp_path / "m.yaml"
    file.write_text(
        "version: 1\n"
        "sources:\n"
        '  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}\n'
        "assets:\n"
        "  p1:\n"
        "    tags:\n" + tags
    )
    return dict(load_mapping(file).tags)


def test_degf_to_degc_is_affine(tmp_path: Path) -> None:
    tags = _tags(
        tmp_path,
        '      t: {source: plant, address: "nsu=urn:x;s=T", unit: degF, convert_to: degC}\n',
    )
    tag = tags["p1.t"]
    assert tag.unit == "degC" and tag.source_unit == "degF"  # type: ignore[attr-defined]
    transform = compile_transform(tag)  # type: ignore[arg-type]
    for fahrenheit in (-40.0, 32.0, 98.6, 212.0, 451.0):
        value, quality, why = transform(fahrenheit, G)
        assert value == pytest.approx((fahrenheit - 32) * 5 / 9, abs=1e-9)
        assert (quality, why) == (G, "")


def test_scale_applies_before_conversion(tmp_path: Path) -> None:
    """scale/offset turn the raw value into `unit`; then `unit` -> `convert_to`."""
    tags = _tags(
        tmp_path,
        '      t: {source: plant, address: "nsu=urn:x;s=T", unit: degF, convert_to: degC,\n'
        "          scale: 0.1, offset: 2.0}\n"
        '      p: {source: plant, address: "nsu=urn:x;s=P", unit: psi, convert_to: bar,\n'
        "          scale: 0.01}\n",
    )
    t, p = compile_transform(tags["p1.t"]), compile_transform(tags["p1.p"])  # type: ignore[arg-type]
    raw = 2100  # tenths of a degree F, plus 2: 212 degF
    assert t(raw, G)[0] == pytest.approx((raw * 0.1 + 2.0 - 32) * 5 / 9, abs=1e-9)
    assert t(raw, G)[0] == pytest.approx(100.0, abs=1e-9)
    assert p(14504, G)[0] == pytest.approx(145.04 * PSI_IN_BAR, rel=1e-12)


def test_psi_to_bar_and_clamp_in_the_converted_unit(tmp_path: Path) -> None:
    tags = _tags(
        tmp_path,
        '      p: {source: plant, address: "nsu=urn:x;s=P", unit: psi, convert_to: bar,\n'
        "          clamp: [0, 10]}\n",
    )
    transform = compile_transform(tags["p1.p"])  # type: ignore[arg-type]
    assert transform(100.0, G)[0] == pytest.approx(100 * PSI_IN_BAR, rel=1e-12)  # 6.89 bar
    value, quality, why = transform(200.0, G)  # 13.8 bar: above the clamp, which is in bar
    assert (value, quality) == (10.0, U) and "clamped" in why


def test_tags_differing_only_by_conversion_do_not_share_a_transform(tmp_path: Path) -> None:
    tags = _tags(
        tmp_path,
        '      a: {source: plant, address: "nsu=urn:x;s=A", unit: degC}\n'
        '      b: {source: plant, address: "nsu=urn:x;s=B", unit: degF, convert_to: degC}\n'
        '      c: {source: plant, address: "nsu=urn:x;s=C", unit: bar, convert_to: bar}\n',
    )
    a, b, c = (tags[f"p1.{n}"] for n in "abc")
    assert transform_key(a) != transform_key(b)  # type: ignore[arg-type]
    assert linear_of(c) == (1.0, 0.0)  # type: ignore[arg-type]
    assert compile_transform(a)(7, G)[0] == 7  # type: ignore[arg-type] # no conversion: untouched


def test_conversion_pairs() -> None:
    assert units.conversion("degF", "degC") == pytest.approx((5 / 9, -160 / 9), abs=1e-12)
    assert units.conversion("degC", "K") == (1.0, 273.15)
    assert units.conversion("psi", "bar") == pytest.approx((PSI_IN_BAR, 0.0), rel=1e-12)
    assert units.conversion("m3/h", "l/min") == pytest.approx((1000 / 60, 0.0), rel=1e-12)
    with pytest.raises(units.UnitError, match="pressure"):
        units.conversion("psi", "degC")


def test_spellings_of_one_unit_and_unece_codes() -> None:
    assert units.same_unit("degC", "°C") and units.same_unit("m3/h", "m^3/h")
    assert not units.same_unit("degC", "degF")
    assert units.unece("degC") == ("CEL", (ord("C") << 16) | (ord("E") << 8) | ord("L"))
    assert units.unece("mm/s") is not None and units.unece("mm/s")[0] == "C16"  # type: ignore[index]
    assert units.unece("furlong / fortnight") is None
    assert units.unece("nonsense-unit") is None


def test_unknown_unit_suggests_a_spelling() -> None:
    with pytest.raises(units.UnitError) as info:
        units.parse("degc")
    assert "did you mean 'degC'?" in info.value.hint
