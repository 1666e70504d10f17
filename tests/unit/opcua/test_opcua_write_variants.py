"""The OPC UA writer's Variant for each target type, and the values a type cannot hold."""

from __future__ import annotations

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from bridge.connectors.opcua.write import VARIANT_TYPES, variant_for
from bridge.errors import NotRepresentable

GOOD = [
    ("bool", True, ua.VariantType.Boolean, True),
    ("int16", -32768, ua.VariantType.Int16, -32768),
    ("uint16", 65535.0, ua.VariantType.UInt16, 65535),
    ("int32", 2**31 - 1, ua.VariantType.Int32, 2**31 - 1),
    ("uint32", 2**32 - 1, ua.VariantType.UInt32, 2**32 - 1),
    ("int64", -(2**63), ua.VariantType.Int64, -(2**63)),
    ("uint64", 2**64 - 1, ua.VariantType.UInt64, 2**64 - 1),
    ("float32", 1.5, ua.VariantType.Float, 1.5),
    ("float32", 3, ua.VariantType.Float, 3.0),
    ("float64", -0.1, ua.VariantType.Double, -0.1),
]


@pytest.mark.parametrize(("type_", "value", "vtype", "decoded"), GOOD)
def test_the_variant_and_its_wire_form(
    type_: str, value: float, vtype: ua.VariantType, decoded: float
) -> None:
    variant = variant_for(type_, value)
    assert variant.VariantType == vtype
    back = variant_from_binary(Buffer(variant_to_binary(variant)))
    assert back.VariantType == vtype
    assert back.Value == decoded and type(back.Value) is type(decoded)


def test_every_target_type_has_a_variant_type() -> None:
    from typing import get_args

    from bridge.config.actions import ValueType

    assert set(VARIANT_TYPES) == set(get_args(ValueType))


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("int16", 32768),
        ("uint16", -1),
        ("uint64", 2**64),
        ("int32", 2.5),
        ("float32", 3.5e38),
        ("float64", float("nan")),
        ("float32", float("-inf")),
        ("int16", False),
        ("bool", 1),
        ("bool", 0.0),
    ],
)
def test_values_a_type_cannot_hold(type_: str, value: float) -> None:
    with pytest.raises(NotRepresentable):
        variant_for(type_, value)
