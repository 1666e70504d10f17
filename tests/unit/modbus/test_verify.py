"""`bridge verify` matching: golden vectors against registers, and the suggestions it makes."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.connectors.modbus.codec import encode, encode_string
from bridge.connectors.modbus.config import ExpectedValue, ModbusAddress
from bridge.connectors.modbus.verify import VerifyTag, engineering, judge, matches


def item(scale: float = 1.0, offset: float = 0.0, **address: Any) -> VerifyTag:
    return VerifyTag(
        "t", ModbusAddress.model_validate({"table": "holding", **address}), scale, offset
    )


def test_a_right_tag_is_ok() -> None:
    v = judge(
        item(address=0, type="float32", word_order="CDAB", expect=6.25),
        encode(6.25, "float32", "CDAB"),
    )
    assert v.ok and v.value == 6.25 and "OK" in v.line()


@pytest.mark.parametrize("actual", ["ABCD", "BADC", "DCBA"])
def test_wrong_word_order_is_found(actual: str) -> None:
    words = encode(1234.5, "float32", actual)  # type: ignore[arg-type]
    v = judge(item(address=0, type="float32", word_order="CDAB", expect=1234.5), words)
    assert not v.ok
    assert v.suggestions[0] == f"word_order: {actual}"


def test_wrong_type_and_order_of_a_64_bit_counter_is_found() -> None:
    words = encode(-123456789012, "int64", "DCBA")
    v = judge(item(address=0, type="uint64", expect=-123456789012), words)
    assert v.suggestions[0] == "type: int64, word_order: DCBA"


def test_missing_scale_is_found() -> None:
    v = judge(item(address=0, type="int16", expect=-12.5), encode(-125, "int16"))
    assert not v.ok and v.value == -125
    assert v.suggestions == ("scale: 0.1",)
    assert "try scale: 0.1" in v.line()


def test_scale_and_offset_apply_before_comparing() -> None:
    v = judge(item(scale=0.1, offset=-40.0, address=0, type="uint16", expect=2.0), [420])
    assert v.ok and v.value == pytest.approx(2.0)


def test_swapped_string_is_found() -> None:
    words = encode_string("PUMP7", 6, "BADC")
    v = judge(item(address=0, type="string", length=6, expect="PUMP7"), words)
    assert not v.ok and v.suggestions == ("word_order: BADC",)


def test_nothing_fits_says_so() -> None:
    v = judge(item(address=0, type="float32", expect=1.0), [0x1234, 0x5678])
    assert not v.ok and v.suggestions == ()
    assert "no type, order or scale fits" in v.line()


def test_bit_fields_compare_as_bools() -> None:
    assert judge(item(address=0, bit=3, expect=True), [0b1000]).ok
    assert not judge(item(address=0, bit=3, expect=True), [0b0100]).ok


@pytest.mark.parametrize(
    ("value", "expect", "ok"),
    [
        (1.0, {"value": 1.0}, True),
        (1.0000001, {"value": 1.0}, True),  # float32 rounding
        (1.001, {"value": 1.0}, False),
        (1.001, {"value": 1.0, "tolerance": 0.01}, True),
        (1, {"value": True}, False),  # a number is not a bool
        (True, {"value": True}, True),
        (float("nan"), {"value": 1.0}, False),
        ("A", {"value": "A"}, True),
    ],
)
def test_matches(value: Any, expect: dict[str, Any], ok: bool) -> None:
    assert matches(value, ExpectedValue.model_validate(expect)) is ok


def test_engineering_leaves_bools_and_text_alone() -> None:
    assert engineering(True, 10.0, 1.0) is True
    assert engineering("x", 10.0, 1.0) == "x"
    assert engineering(3, 0.5, 1.0) == 2.5
