"""The block unpacker gives, tag by tag, exactly what the per-tag decoder gives."""

from __future__ import annotations

import math
import random
import struct
from typing import Any, get_args

import pytest

from bridge.connectors.modbus.codec import RegisterType, WordOrder
from bridge.connectors.modbus.config import ModbusAddress
from bridge.connectors.modbus.plan import ReadBlock, plan_reads
from bridge.connectors.modbus.reply import Reply, block_values, decode_address
from bridge.connectors.modbus.unpack import Unpacker

ORDERS: tuple[WordOrder, ...] = get_args(WordOrder)
NUMERIC: tuple[RegisterType, ...] = tuple(t for t in get_args(RegisterType) if t != "string")


def same(a: Any, b: Any) -> bool:
    """Equal, type included; NaN equals NaN of the same bits (floats come from raw words)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return bool(a == b)


def addresses() -> list[ModbusAddress]:
    out: list[ModbusAddress] = []
    for kind in NUMERIC:
        if kind == "bool":
            continue
        for order in ORDERS:
            out.append(ModbusAddress(table="holding", address=0, type=kind, word_order=order))
    for order in ORDERS:
        out.append(
            ModbusAddress(table="holding", address=0, type="string", length=7, word_order=order)
        )
        out.append(
            ModbusAddress(table="holding", address=0, type="string", length=8, word_order=order)
        )
    out.append(ModbusAddress(table="holding", address=0, bit=0))
    out.append(ModbusAddress(table="holding", address=0, bit=15))
    out.append(ModbusAddress(table="holding", address=0, bit=4, bits=5))
    return out


def moved(address: ModbusAddress, to: int) -> ModbusAddress:
    return address.model_copy(update={"address": to})


def random_block(rng: random.Random, n_tags: int) -> ReadBlock:
    """Tags of every kind at random places: gaps, and tags sharing registers (bit fields)."""
    kinds = addresses()
    pairs: list[tuple[str, ModbusAddress]] = []
    at = rng.randrange(0, 5)
    for i in range(n_tags):
        address = moved(rng.choice(kinds), at)
        pairs.append((f"t{i}", address))
        step = address.register_count + rng.choice((0, 0, 1, 3))
        if address.bit is not None and rng.random() < 0.5:
            step = 0  # the next tag reads the same register
        at += step
    (block,) = plan_reads(pairs, max_gap=10, max_registers_per_read=125)
    return block


@pytest.mark.parametrize("seed", range(40))
def test_block_values_equal_the_per_tag_decoder(seed: int) -> None:
    rng = random.Random(seed)
    block = random_block(rng, rng.randrange(1, 30))
    # Biased towards the edges: 0, 0xFFFF, NaN/inf patterns, sign bits, ASCII and not.
    pool = [0, 0xFFFF, 0x7FFF, 0x8000, 0x7F80, 0xFF80, 0x7FF8, 0x4142, 0x00FF]
    for _ in range(5):
        words = [
            rng.choice(pool) if rng.random() < 0.4 else rng.randrange(65536)
            for _ in range(block.count)
        ]
        got = dict(block_values(block, Reply(3, 1, registers=words)))
        for p in block.tags:
            own = words[p.offset : p.offset + p.address.register_count]
            expected = decode_address(own, p.address)
            assert same(got[p.tag], expected), (p.address, own, got[p.tag], expected)


def test_every_type_and_order_alone() -> None:
    rng = random.Random(1)
    for address in addresses():
        unpacker = Unpacker(address.register_count, [(0, address)])
        for _ in range(50):
            words = [rng.randrange(65536) for _ in range(address.register_count)]
            (value,) = unpacker.values(words)
            assert same(value, decode_address(words, address)), (address, words)


def test_hand_made_block_without_unpacker_decodes_the_same() -> None:
    address = ModbusAddress(table="holding", address=0, type="float32", word_order="CDAB")
    planned = plan_reads([("p", address)], max_gap=0, max_registers_per_read=125)[0]
    bare = ReadBlock(table="holding", start=0, count=2, tags=planned.tags)
    assert bare.unpacker is None and planned.unpacker is not None
    words = [0x0000, 0x4049]
    assert block_values(bare, Reply(3, 1, registers=words)) == block_values(
        planned, Reply(3, 1, registers=words)
    )


def test_wrong_count_or_word_out_of_range_is_an_error() -> None:
    address = ModbusAddress(table="holding", address=0, type="uint32")
    unpacker = Unpacker(3, [(1, address)])
    with pytest.raises(ValueError, match="3 registers expected"):
        unpacker.values([1, 2])
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        unpacker.values([0, 0x10000, 0])
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        unpacker.values([0, -1, 0])
    assert unpacker.values([9, 1, 2]) == [0x00010002]


def test_a_tag_past_the_block_is_refused_when_built() -> None:
    address = ModbusAddress(table="holding", address=0, type="float64")
    with pytest.raises(ValueError, match="does not fit"):
        Unpacker(3, [(0, address)])
