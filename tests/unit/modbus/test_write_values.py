"""The Modbus writer's pure parts: what is sent for a value (round trip through the decoder for
every type and word order, refusals of what a type cannot hold) and the checks of a write's
reply."""

from __future__ import annotations

import random
import struct

import pytest

from bridge.config.actions import ModbusTarget
from bridge.connectors.modbus.codec import RegisterType, WordOrder, decode
from bridge.connectors.modbus.write import (
    WriteReply,
    check_write_reply,
    exception_status,
    words_for,
)
from bridge.errors import NotRepresentable

ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}


def holding(type_: str, order: str = "ABCD") -> ModbusTarget:
    return ModbusTarget.model_validate(
        {"source": "s", "table": "holding", "address": 10, "type": type_, "word_order": order}
    )


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", list(RANGES))
def test_integers_round_trip_through_the_decoder(type_: RegisterType, order: WordOrder) -> None:
    rng = random.Random(f"{type_}{order}")
    low, high = RANGES[type_]
    target = holding(type_, order)
    for value in [low, high, 0, 1, *(rng.randint(low, high) for _ in range(300))]:
        words = words_for(target, value)
        assert len(words) == target.register_count == WIDTH.get(type_, 4)
        assert decode(words, type_, order) == value
        # An integral float (what a rounded expression gives) is sent as the integer.
        if abs(value) < 2**52:
            assert words_for(target, float(value)) == words


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", ["float32", "float64"])
def test_floats_round_trip_through_the_decoder(type_: RegisterType, order: WordOrder) -> None:
    rng = random.Random(f"{type_}{order}")
    fmt = ">f" if type_ == "float32" else ">d"
    target = holding(type_, order)
    for raw in [0.0, -0.0, 1.5, -0.1, 3.0e38, *(rng.uniform(-1e9, 1e9) for _ in range(300))]:
        expected = struct.unpack(fmt, struct.pack(fmt, raw))[0]
        words = words_for(target, raw)
        assert len(words) == target.register_count
        assert decode(words, type_, order) == expected


def test_coils() -> None:
    coil = ModbusTarget.model_validate({"source": "s", "table": "coil", "address": 3})
    assert words_for(coil, True) == [1]
    assert words_for(coil, False) == [0]


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("int16", 32768),
        ("int16", -32769),
        ("uint16", -1),
        ("uint32", 2**32),
        ("int64", 2**63),
        ("uint64", -1),
        ("int32", 1.5),
        ("uint16", float("nan")),
        ("float32", 3.5e38),
        ("float32", float("inf")),
        ("float64", float("nan")),
        ("uint16", True),
    ],
)
def test_values_a_register_cannot_hold(type_: str, value: float) -> None:
    with pytest.raises(NotRepresentable):
        words_for(holding(type_), value)


def test_a_coil_takes_only_a_bool() -> None:
    coil = ModbusTarget.model_validate({"source": "s", "table": "coil", "address": 3})
    for value in (1, 0, 1.0):
        with pytest.raises(NotRepresentable):
            words_for(coil, value)


def test_exception_names() -> None:
    assert exception_status(2) == "IllegalDataAddress"
    assert exception_status(3) == "IllegalDataValue"
    assert exception_status(11) == "GatewayTargetDeviceFailedToRespond"
    assert exception_status(99) == "ModbusException99"


def reply(**changes: object) -> WriteReply:
    base: dict[str, object] = {
        "function_code": 6,
        "unit": 1,
        "transaction_id": 5,
        "request_transaction_id": 5,
        "address": 10,
        "value": 1234,
    }
    return WriteReply(**{**base, **changes})  # type: ignore[arg-type]


def test_a_write_reply_that_confirms_the_write() -> None:
    assert check_write_reply(reply(), 6, 1, 10, [1234]) is None
    multi = reply(function_code=16, value=None, count=2)
    assert check_write_reply(multi, 16, 1, 10, [1, 2]) is None
    on = reply(function_code=5, value=0xFF00)
    assert check_write_reply(on, 5, 1, 10, [1]) is None
    assert check_write_reply(reply(function_code=5, value=0), 5, 1, 10, [0]) is None
    # Unit 0 is answered by whatever device sits behind the address.
    assert check_write_reply(reply(unit=7), 6, 0, 10, [1234]) is None


@pytest.mark.parametrize(
    ("changes", "words", "why"),
    [
        ({"transaction_id": 0}, [1234], "transaction id"),
        ({"function_code": 16, "count": 1}, [1234], "function code"),
        ({"unit": 2}, [1234], "unit 2"),
        ({"address": 11}, [1234], "address 11"),
        ({"value": 1235}, [1234], "value 1235"),
    ],
)
def test_a_write_reply_that_does_not_confirm_it(
    changes: dict[str, object], words: list[int], why: str
) -> None:
    problem = check_write_reply(reply(**changes), 6, 1, 10, words)
    assert problem is not None and why in problem


def test_a_multiple_write_reply_with_another_count() -> None:
    problem = check_write_reply(reply(function_code=16, value=None, count=1), 16, 1, 10, [1, 2])
    assert problem is not None and "1 registers" in problem
    problem = check_write_reply(reply(function_code=5, value=0xFF00), 5, 1, 10, [0])
    assert problem is not None and "value" in problem
