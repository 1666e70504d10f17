"""Coalesce tags into as few read requests as possible. Pure: no I/O.

A request costs about the same whatever its size, so neighbouring tags of one table of one unit
are read together: sorted by address, merged while the unused gap between them is at most
``max_gap`` and the block stays within the per-request limit. A tag is never split across two
blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bridge.connectors.modbus.config import BIT_TABLES, ModbusAddress, Table
from bridge.connectors.modbus.unpack import Unpacker

__all__ = ["MAX_BITS_PER_READ", "PlannedTag", "ReadBlock", "plan_reads"]

# Protocol limit for FC1/FC2 (coils, discrete inputs).
MAX_BITS_PER_READ = 2000

_TABLE_ORDER: tuple[Table, ...] = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True, slots=True)
class PlannedTag:
    """One tag inside a block; ``offset`` is its first register (or bit) within the block."""

    tag: str
    address: ModbusAddress
    offset: int


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` of ``unit`` from ``start``."""

    table: Table
    start: int
    count: int
    tags: tuple[PlannedTag, ...]
    unit: int = 1
    # Built by the planner for register blocks (a hand-made block gets one when first read).
    unpacker: Unpacker | None = field(default=None, compare=False, repr=False)

    @property
    def is_bit(self) -> bool:
        return self.table in ("coil", "discrete")


def plan_reads(
    tags: Iterable[tuple[str, ModbusAddress]],
    max_gap: int,
    max_registers_per_read: int,
    default_unit: int = 1,
) -> list[ReadBlock]:
    """Read blocks for ``tags`` (``(tag id, address)`` pairs), per unit (ascending), per table,
    in address order. A tag's unit is its address's ``unit`` or else ``default_unit``.

    A tag wider than the limit (a 32-bit value with a limit of 1) gets a block of its own
    rather than being split.
    """
    by_key: dict[tuple[int, Table], list[tuple[str, ModbusAddress]]] = {}
    for tag, address in tags:
        unit = default_unit if address.unit is None else address.unit
        by_key.setdefault((unit, address.table), []).append((tag, address))
    blocks: list[ReadBlock] = []
    for unit in sorted({u for u, _ in by_key}):
        for table in _TABLE_ORDER:
            members = by_key.get((unit, table))
            if members:
                bit = table in ("coil", "discrete")
                limit = MAX_BITS_PER_READ if bit else max_registers_per_read
                blocks.extend(_plan_table(unit, table, members, max_gap, limit))
    return blocks


def _plan_table(
    unit: int, table: Table, members: Sequence[tuple[str, ModbusAddress]], max_gap: int, limit: int
) -> list[ReadBlock]:
    ordered = sorted(members, key=lambda m: (m[1].address, -m[1].register_count, m[0]))
    blocks: list[ReadBlock] = []
    current: list[tuple[str, ModbusAddress]] = []
    start = end = 0  # end is exclusive
    for tag, address in ordered:
        first = address.address
        last = first + address.register_count
        fits = bool(current) and first - end <= max_gap and max(end, last) - start <= limit
        if fits:
            current.append((tag, address))
            end = max(end, last)
            continue
        if current:
            blocks.append(_block(unit, table, start, end, current))
        current = [(tag, address)]
        start, end = first, last
    if current:
        blocks.append(_block(unit, table, start, end, current))
    return blocks


def _block(
    unit: int, table: Table, start: int, end: int, members: Sequence[tuple[str, ModbusAddress]]
) -> ReadBlock:
    planned = tuple(PlannedTag(tag, address, address.address - start) for tag, address in members)
    count = end - start
    unpacker = None
    if table not in BIT_TABLES:
        unpacker = Unpacker(count, [(p.offset, p.address) for p in planned])
    return ReadBlock(
        table=table, start=start, count=count, tags=planned, unit=unit, unpacker=unpacker
    )
