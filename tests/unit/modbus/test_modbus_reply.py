"""Reply checks: exception replies, wrong function codes and short replies never become values."""

from __future__ import annotations

import pytest

from bridge.connectors.modbus.codec import encode
from bridge.connectors.modbus.config import ModbusAddress
from bridge.connectors.modbus.plan import ReadBlock, plan_reads
from bridge.connectors.modbus.reply import BadReply, Reply, block_values


def holding_block() -> ReadBlock:
    tags = [
        ("p", ModbusAddress(table="holding", address=0, type="float32", word_order="CDAB")),
        ("n", ModbusAddress(table="holding", address=2, type="int16")),
        ("u", ModbusAddress(table="holding", address=3, type="uint32")),
    ]
    (block,) = plan_reads(tags, max_gap=0, max_registers_per_read=125)
    return block


def coil_block() -> ReadBlock:
    tags = [
        ("c0", ModbusAddress(table="coil", address=0)),
        ("c2", ModbusAddress(table="coil", address=2)),
    ]
    (block,) = plan_reads(tags, max_gap=10, max_registers_per_read=125)
    return block


def registers() -> list[int]:
    return encode(123.456, "float32", "CDAB") + encode(-5, "int16") + encode(70000, "uint32")


def test_good_register_reply() -> None:
    values = dict(block_values(holding_block(), Reply(3, 1, registers=registers()), unit=1))
    assert values["p"] == pytest.approx(123.456, rel=1e-7)
    assert values["n"] == -5
    assert values["u"] == 70000


def test_exception_reply_names_the_code() -> None:
    with pytest.raises(BadReply) as err:
        block_values(holding_block(), Reply(0x83, 1, exception_code=2), unit=1)
    assert err.value.reason == "modbus exception 2 (illegal data address)"


def test_unknown_exception_code() -> None:
    with pytest.raises(BadReply, match="modbus exception 99"):
        block_values(holding_block(), Reply(0x83, 1, exception_code=99), unit=1)


def test_wrong_function_code_is_rejected() -> None:
    with pytest.raises(BadReply, match="function code 4 does not match request 3"):
        block_values(holding_block(), Reply(4, 1, registers=registers()), unit=1)


@pytest.mark.parametrize("drop", [1, 5])
def test_short_register_reply_is_rejected(drop: int) -> None:
    with pytest.raises(BadReply, match="short or long reply"):
        block_values(holding_block(), Reply(3, 1, registers=registers()[:-drop]), unit=1)


def test_long_register_reply_is_rejected() -> None:
    with pytest.raises(BadReply, match="short or long reply"):
        block_values(holding_block(), Reply(3, 1, registers=[*registers(), 0]), unit=1)


def test_reply_from_another_unit_is_rejected() -> None:
    with pytest.raises(BadReply, match="unit 7"):
        block_values(holding_block(), Reply(3, 7, registers=registers()), unit=1)


def test_unit_zero_accepts_any_unit() -> None:
    assert len(block_values(holding_block(), Reply(3, 9, registers=registers()), unit=0)) == 3


def test_bits_with_byte_padding() -> None:
    bits = [True, False, False, True, True, True, True, True]  # 3 asked, padded to 8
    assert block_values(coil_block(), Reply(1, 1, bits=bits), unit=1) == [
        ("c0", True),
        ("c2", False),
    ]


@pytest.mark.parametrize("length", [0, 3, 16])
def test_bit_reply_of_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(BadReply, match="bits"):
        block_values(coil_block(), Reply(1, 1, bits=[True] * length), unit=1)


def test_invalid_register_word_raises_value_error() -> None:
    # Out-of-range words cannot come from the wire; the source marks such a block Bad.
    with pytest.raises(ValueError):
        block_values(holding_block(), Reply(3, 1, registers=[0x10000] * 5), unit=1)


def test_own_exception_reply_is_not_a_mismatch() -> None:
    # A proper exception reply answers this request: no late reply can still be on its way.
    with pytest.raises(BadReply) as err:
        block_values(holding_block(), Reply(0x83, 1, exception_code=2), unit=1)
    assert not err.value.mismatch


@pytest.mark.parametrize(
    "reply",
    [
        Reply(0x84, 1, exception_code=2),  # exception for another function code
        Reply(0x83, 2, exception_code=2),  # exception from another unit
        Reply(4, 1, registers=registers()),  # another function code
        Reply(3, 1, registers=registers()[:-1]),  # another count
    ],
)
def test_replies_that_do_not_fit_are_mismatches(reply: Reply) -> None:
    with pytest.raises(BadReply) as err:
        block_values(holding_block(), reply, unit=1)
    assert err.value.mismatch
