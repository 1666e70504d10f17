"""Coalescing of tags into read blocks."""

from __future__ import annotations

import itertools
import random

import pytest

from bridge.connectors.modbus.config import ModbusAddress, Table
from bridge.connectors.modbus.plan import MAX_BITS_PER_READ, ReadBlock, plan_reads


def reg(address: int, type_: str = "uint16", table: Table = "holding") -> ModbusAddress:
    return ModbusAddress.model_validate({"table": table, "address": address, "type": type_})


def bit(address: int, table: Table = "coil") -> ModbusAddress:
    return ModbusAddress(table=table, address=address)


def spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.table, b.start, b.count) for b in blocks]


def test_contiguous_tags_make_one_block_with_offsets() -> None:
    tags = [("c", reg(2, "float32")), ("a", reg(0)), ("b", reg(1, "int16"))]
    blocks = plan_reads(tags, max_gap=0, max_registers_per_read=125)
    assert spans(blocks) == [("holding", 0, 4)]
    assert [(p.tag, p.offset) for p in blocks[0].tags] == [("a", 0), ("b", 1), ("c", 2)]


def test_gap_up_to_max_gap_is_merged() -> None:
    tags = [("a", reg(0)), ("b", reg(11))]  # addresses 1..10 unused: a gap of 10
    assert spans(plan_reads(tags, max_gap=10, max_registers_per_read=125)) == [("holding", 0, 12)]
    merged = plan_reads(tags, max_gap=10, max_registers_per_read=125)[0]
    assert [(p.tag, p.offset) for p in merged.tags] == [("a", 0), ("b", 11)]


def test_gap_beyond_max_gap_is_split() -> None:
    tags = [("a", reg(0)), ("b", reg(11))]
    assert spans(plan_reads(tags, max_gap=9, max_registers_per_read=125)) == [
        ("holding", 0, 1),
        ("holding", 11, 1),
    ]


def test_max_gap_zero_merges_only_adjacent() -> None:
    tags = [("a", reg(0)), ("b", reg(1)), ("c", reg(3))]
    assert spans(plan_reads(tags, max_gap=0, max_registers_per_read=125)) == [
        ("holding", 0, 2),
        ("holding", 3, 1),
    ]


def test_125_register_limit_splits() -> None:
    tags = [(f"t{i}", reg(i)) for i in range(130)]
    blocks = plan_reads(tags, max_gap=10, max_registers_per_read=125)
    assert spans(blocks) == [("holding", 0, 125), ("holding", 125, 5)]
    assert sum(len(b.tags) for b in blocks) == 130


def test_32_bit_tag_is_never_split_across_blocks() -> None:
    tags = [(f"t{i}", reg(i)) for i in range(124)] + [("f", reg(124, "float32"))]
    blocks = plan_reads(tags, max_gap=10, max_registers_per_read=125)
    assert spans(blocks) == [("holding", 0, 124), ("holding", 124, 2)]
    assert [(p.tag, p.offset) for p in blocks[1].tags] == [("f", 0)]


def test_32_bit_tags_with_small_limit() -> None:
    tags = [(f"f{i}", reg(2 * i, "float32")) for i in range(6)]
    blocks = plan_reads(tags, max_gap=10, max_registers_per_read=5)
    assert spans(blocks) == [("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 4)]


def test_tag_wider_than_limit_gets_its_own_block() -> None:
    tags = [("a", reg(0)), ("f", reg(1, "float32")), ("b", reg(3))]
    assert spans(plan_reads(tags, max_gap=10, max_registers_per_read=1)) == [
        ("holding", 0, 1),
        ("holding", 1, 2),
        ("holding", 3, 1),
    ]


def test_overlapping_and_duplicate_addresses_share_registers() -> None:
    tags = [("f", reg(0, "float32")), ("lo", reg(1)), ("dup", reg(0, "float32"))]
    blocks = plan_reads(tags, max_gap=0, max_registers_per_read=125)
    assert spans(blocks) == [("holding", 0, 2)]
    assert sorted((p.tag, p.offset) for p in blocks[0].tags) == [("dup", 0), ("f", 0), ("lo", 1)]


def test_tables_are_planned_separately_in_a_fixed_order() -> None:
    tags = [
        ("d", bit(0, "discrete")),
        ("c", bit(0)),
        ("i", reg(0, table="input")),
        ("h", reg(1)),
    ]
    assert spans(plan_reads(tags, max_gap=10, max_registers_per_read=125)) == [
        ("holding", 1, 1),
        ("input", 0, 1),
        ("coil", 0, 1),
        ("discrete", 0, 1),
    ]


def test_bits_use_the_2000_bit_limit_not_the_register_limit() -> None:
    tags = [(f"c{i}", bit(i)) for i in range(MAX_BITS_PER_READ + 1)]
    blocks = plan_reads(tags, max_gap=0, max_registers_per_read=10)
    assert spans(blocks) == [("coil", 0, MAX_BITS_PER_READ), ("coil", MAX_BITS_PER_READ, 1)]


def test_no_tags_no_blocks() -> None:
    assert plan_reads([], max_gap=10, max_registers_per_read=125) == []


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    max_gap = rng.randint(0, 20)
    limit = rng.randint(2, 125)
    tags = []
    for i in range(rng.randint(1, 80)):
        type_ = rng.choice(["uint16", "int16", "int32", "float32"])
        tags.append((f"t{i}", reg(rng.randint(0, 600), type_)))
    blocks = plan_reads(tags, max_gap=max_gap, max_registers_per_read=limit)

    planned = [p.tag for b in blocks for p in b.tags]
    assert sorted(planned) == sorted(t for t, _ in tags)  # every tag exactly once
    previous_end = -1
    for block in blocks:
        assert block.count <= limit
        assert block.start > previous_end - 1  # sorted, no overlap between blocks
        for p in block.tags:
            assert p.address.address == block.start + p.offset
            assert p.offset >= 0 and p.offset + p.address.register_count <= block.count
        # No unused run inside a block is longer than max_gap.
        used = sorted(
            r for p in block.tags for r in range(p.offset, p.offset + p.address.register_count)
        )
        assert used[0] == 0 and used[-1] == block.count - 1
        gaps = [b - a - 1 for a, b in itertools.pairwise(used)]
        assert all(g <= max_gap for g in gaps)
        previous_end = block.start + block.count
    # Neighbouring blocks were split for a reason: too far apart or too long together.
    for left, right in itertools.pairwise(blocks):
        gap = right.start - (left.start + left.count)
        first_right = min(p.address.register_count for p in right.tags if p.offset == 0)
        assert gap > max_gap or right.start + first_right - left.start > limit
