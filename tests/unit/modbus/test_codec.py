"""Golden register values for every type and byte/word order, plus round-trip properties."""

from __future__ import annotations

import math
import random
import struct

import pytest

from bridge.connectors.modbus.codec import (
    RegisterType,
    WordOrder,
    decode,
    decode_bits,
    decode_string,
    encode,
    encode_string,
    register_count,
)

ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

# (type, order, value, registers as a device sends them) -- written by hand from the IEEE 754 /
# two's complement byte patterns, not computed with the code under test.
GOLDEN: list[tuple[RegisterType, WordOrder, int | float, list[int]]] = [
    # 123.456f = 0x42F6E979
    ("float32", "ABCD", 123.456, [0x42F6, 0xE979]),
    ("float32", "CDAB", 123.456, [0xE979, 0x42F6]),
    ("float32", "BADC", 123.456, [0xF642, 0x79E9]),
    ("float32", "DCBA", 123.456, [0x79E9, 0xF642]),
    # -1.0f = 0xBF800000
    ("float32", "ABCD", -1.0, [0xBF80, 0x0000]),
    ("float32", "CDAB", -1.0, [0x0000, 0xBF80]),
    ("float32", "BADC", -1.0, [0x80BF, 0x0000]),
    ("float32", "DCBA", -1.0, [0x0000, 0x80BF]),
    ("float32", "ABCD", 0.0, [0x0000, 0x0000]),
    # 0x12345678
    ("int32", "ABCD", 305419896, [0x1234, 0x5678]),
    ("int32", "CDAB", 305419896, [0x5678, 0x1234]),
    ("int32", "BADC", 305419896, [0x3412, 0x7856]),
    ("int32", "DCBA", 305419896, [0x7856, 0x3412]),
    # -2 = 0xFFFFFFFE
    ("int32", "ABCD", -2, [0xFFFF, 0xFFFE]),
    ("int32", "CDAB", -2, [0xFFFE, 0xFFFF]),
    ("int32", "BADC", -2, [0xFFFF, 0xFEFF]),
    ("int32", "DCBA", -2, [0xFEFF, 0xFFFF]),
    ("int32", "ABCD", -2147483648, [0x8000, 0x0000]),
    ("int32", "CDAB", -2147483648, [0x0000, 0x8000]),
    ("int32", "ABCD", 2147483647, [0x7FFF, 0xFFFF]),
    # -100000 = 0xFFFE7960
    ("int32", "ABCD", -100000, [0xFFFE, 0x7960]),
    ("int32", "CDAB", -100000, [0x7960, 0xFFFE]),
    ("uint32", "ABCD", 4294967295, [0xFFFF, 0xFFFF]),
    ("uint32", "CDAB", 4294967295, [0xFFFF, 0xFFFF]),
    ("uint32", "DCBA", 4294967295, [0xFFFF, 0xFFFF]),
    ("uint32", "ABCD", 65536, [0x0001, 0x0000]),
    ("uint32", "CDAB", 65536, [0x0000, 0x0001]),
    ("uint32", "BADC", 65536, [0x0100, 0x0000]),
    ("uint32", "DCBA", 65536, [0x0000, 0x0100]),
    # 3000000000 = 0xB2D05E00: above the int32 range, must stay positive
    ("uint32", "ABCD", 3000000000, [0xB2D0, 0x5E00]),
    ("uint32", "CDAB", 3000000000, [0x5E00, 0xB2D0]),
    ("int16", "ABCD", -1, [0xFFFF]),
    ("int16", "ABCD", -200, [0xFF38]),
    ("int16", "ABCD", -32768, [0x8000]),
    ("int16", "ABCD", 32767, [0x7FFF]),
    ("uint16", "ABCD", 65535, [0xFFFF]),
    ("uint16", "ABCD", 1441, [0x05A1]),
    # Orders do not apply to 16-bit values.
    ("int16", "DCBA", -200, [0xFF38]),
    ("uint16", "CDAB", 0x1234, [0x1234]),
    # 64-bit: ABCD = ABCDEFGH, CDAB = GHEFCDAB (words reversed), BADC = BADCFEHG (bytes swapped
    # in each word), DCBA = HGFEDCBA. 0x0102030405060708:
    ("int64", "ABCD", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("int64", "CDAB", 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("int64", "BADC", 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("int64", "DCBA", 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    # -2 = 0xFFFFFFFFFFFFFFFE
    ("int64", "ABCD", -2, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
    ("int64", "CDAB", -2, [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF]),
    ("int64", "BADC", -2, [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF]),
    ("int64", "DCBA", -2, [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]),
    ("int64", "ABCD", -(2**63), [0x8000, 0, 0, 0]),
    ("uint64", "ABCD", 2**64 - 1, [0xFFFF] * 4),
    # 2**63 = 0x8000000000000000: above the int64 range, must stay positive
    ("uint64", "ABCD", 2**63, [0x8000, 0, 0, 0]),
    ("uint64", "CDAB", 2**63, [0, 0, 0, 0x8000]),
    ("uint64", "BADC", 2**63, [0x0080, 0, 0, 0]),
    ("uint64", "DCBA", 2**63, [0, 0, 0, 0x0080]),
    # -123.456 = 0xC05EDD2F1A9FBE77
    ("float64", "ABCD", -123.456, [0xC05E, 0xDD2F, 0x1A9F, 0xBE77]),
    ("float64", "CDAB", -123.456, [0xBE77, 0x1A9F, 0xDD2F, 0xC05E]),
    ("float64", "BADC", -123.456, [0x5EC0, 0x2FDD, 0x9F1A, 0x77BE]),
    ("float64", "DCBA", -123.456, [0x77BE, 0x9F1A, 0x2FDD, 0x5EC0]),
    # 1.0 = 0x3FF0000000000000
    ("float64", "ABCD", 1.0, [0x3FF0, 0, 0, 0]),
    ("float64", "DCBA", 1.0, [0, 0, 0, 0xF03F]),
]


@pytest.mark.parametrize(("type_", "order", "value", "registers"), GOLDEN)
def test_decode_golden(
    type_: RegisterType, order: WordOrder, value: float, registers: list[int]
) -> None:
    decoded = decode(registers, type_, order)
    if type_ == "float64":
        assert decoded == value  # exact: a float64 holds the Python float unchanged
    elif type_ == "float32":
        assert isinstance(decoded, float)
        assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert isinstance(decoded, int) and not isinstance(decoded, bool)
        assert decoded == value


@pytest.mark.parametrize(("type_", "order", "value", "registers"), GOLDEN)
def test_encode_golden(
    type_: RegisterType, order: WordOrder, value: float, registers: list[int]
) -> None:
    assert encode(value, type_, order) == registers


def test_bool_registers() -> None:
    assert decode([0], "bool") is False
    assert decode([1], "bool") is True
    assert decode([0xFFFF], "bool") is True
    assert encode(True, "bool") == [1]
    assert encode(False, "bool") == [0]


def test_nan_and_infinity_decode_as_floats() -> None:
    nan = decode([0x7FC0, 0x0000], "float32", "ABCD")
    assert isinstance(nan, float) and math.isnan(nan)
    assert decode([0x0000, 0x7F80], "float32", "CDAB") == math.inf
    assert decode([0xFF80, 0x0000], "float32", "ABCD") == -math.inf


def test_register_count() -> None:
    assert [register_count(t) for t in ("bool", "int16", "uint16")] == [1, 1, 1]
    assert [register_count(t) for t in ("int32", "uint32", "float32")] == [2, 2, 2]
    assert [register_count(t) for t in ("int64", "uint64", "float64")] == [4, 4, 4]
    assert [register_count("string", n) for n in (1, 2, 3, 10)] == [1, 1, 2, 5]


# (text, length, order, registers): ASCII codes written by hand ("A" = 0x41, "1" = 0x31).
STRINGS: list[tuple[str, int, WordOrder, list[int]]] = [
    ("AB12", 4, "ABCD", [0x4142, 0x3132]),
    ("AB12", 4, "BADC", [0x4241, 0x3231]),
    ("AB12", 4, "DCBA", [0x4241, 0x3231]),
    ("AB12", 4, "CDAB", [0x4142, 0x3132]),  # strings ignore word order
    ("ABC", 3, "ABCD", [0x4142, 0x4300]),
    ("ABC", 6, "ABCD", [0x4142, 0x4300, 0x0000]),  # NUL padding is not text
    ("ABC", 6, "BADC", [0x4241, 0x0043, 0x0000]),
    ("", 2, "ABCD", [0x0000]),
]


@pytest.mark.parametrize(("text", "length", "order", "registers"), STRINGS)
def test_string_golden(text: str, length: int, order: WordOrder, registers: list[int]) -> None:
    assert decode_string(registers, length, order) == text
    assert encode_string(text, length, order) == registers


def test_string_edge_cases() -> None:
    assert decode_string([0x41FF], 2) == "A\ufffd"  # not ASCII: visible, not guessed
    with pytest.raises(ValueError, match="register"):
        decode_string([0x4142], 3)
    with pytest.raises(ValueError, match="longer"):
        encode_string("ABCDE", 4)
    with pytest.raises(ValueError):
        decode([0x4142], "string")


# 0xA005 = 1010 0000 0000 0101
@pytest.mark.parametrize(
    ("bit", "bits", "value"),
    [(0, 1, True), (1, 1, False), (2, 1, True), (15, 1, True), (14, 1, False),
     (0, 3, 5), (12, 4, 0xA), (13, 3, 5), (0, 16, 0xA005)],
)  # fmt: skip
def test_bit_field_golden(bit: int, bits: int, value: int | bool) -> None:
    decoded = decode_bits(0xA005, bit, bits)
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize(("bit", "bits"), [(-1, 1), (16, 1), (15, 2), (0, 0), (0, 17)])
def test_bit_field_rejects_fields_outside_the_register(bit: int, bits: int) -> None:
    with pytest.raises(ValueError):
        decode_bits(0xFFFF, bit, bits)


@pytest.mark.parametrize(
    ("registers", "type_"),
    [([1], "float32"), ([1, 2, 3], "int32"), ([], "uint16"), ([1, 2], "int16")],
)
def test_decode_rejects_wrong_register_count(registers: list[int], type_: RegisterType) -> None:
    with pytest.raises(ValueError, match="register"):
        decode(registers, type_)


@pytest.mark.parametrize("word", [-1, 0x10000])
def test_decode_rejects_out_of_range_words(word: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        decode([word], "uint16")


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (40000, "int16"),
        (-32769, "int16"),
        (-1, "uint16"),
        (65536, "uint16"),
        (2**31, "int32"),
        (2**32, "uint32"),
        (-1, "uint32"),
        (2**63, "int64"),
        (2**64, "uint64"),
        (-1, "uint64"),
        (1e39, "float32"),
        (1.5, "int32"),
    ],
)
def test_encode_rejects_values_that_do_not_fit(value: float, type_: RegisterType) -> None:
    with pytest.raises(ValueError):
        encode(value, type_)


INT_RANGES: dict[RegisterType, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", list(INT_RANGES))
def test_integer_round_trip(type_: RegisterType, order: WordOrder) -> None:
    rng = random.Random(f"{type_}-{order}")
    low, high = INT_RANGES[type_]
    values = [low, high, 0, 1, -1 if low < 0 else 2] + [rng.randint(low, high) for _ in range(500)]
    for value in values:
        registers = encode(value, type_, order)
        assert len(registers) == register_count(type_)
        assert all(0 <= r <= 0xFFFF for r in registers)
        assert decode(registers, type_, order) == value


@pytest.mark.parametrize("order", ORDERS)
def test_float_round_trip(order: WordOrder) -> None:
    rng = random.Random(order)
    for _ in range(500):
        value = rng.uniform(-1e6, 1e6)
        as_float32 = struct.unpack(">f", struct.pack(">f", value))[0]
        assert decode(encode(value, "float32", order), "float32", order) == as_float32


def test_orders_match_independent_struct_layouts() -> None:
    # ABCD is big-endian and DCBA little-endian of the same bytes: check against struct.
    rng = random.Random(7)
    for _ in range(200):
        words = [rng.randrange(0x10000), rng.randrange(0x10000)]
        raw = words[0].to_bytes(2, "big") + words[1].to_bytes(2, "big")
        assert decode(words, "uint32", "ABCD") == struct.unpack(">I", raw)[0]
        assert decode(words, "uint32", "DCBA") == struct.unpack("<I", raw)[0]
        assert decode(words, "int32", "DCBA") == struct.unpack("<i", raw)[0]
        swapped = raw[2:] + raw[:2]
        assert decode(words, "uint32", "CDAB") == struct.unpack(">I", swapped)[0]


def test_every_order_is_distinct_for_an_asymmetric_value() -> None:
    encodings = {tuple(encode(0x01020304, "uint32", order)) for order in ORDERS}
    assert len(encodings) == 4
