"""Check Modbus tags against values known to be true (golden vectors in the mapping's
``expect:``) and, when one is off, find the type, byte order or scale that would match.

The matching is pure (words in, verdict out); ``read_and_verify`` does the reading, one
request at a time, on the same ``Link`` the source uses, and sends the blocks the poller will
send (``plan_reads`` with the source's ``max_gap`` and request size): a PLC that refuses a block
because it spans an address it does not have marks every tag of that block Bad at run time,
even when each tag alone reads fine, so each tag alone is not what needs checking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import get_args

from bridge.connectors.modbus.codec import RegisterType, WordOrder
from bridge.connectors.modbus.config import ExpectedValue, ModbusAddress, ModbusSourceSettings
from bridge.connectors.modbus.link import Link
from bridge.connectors.modbus.plan import ReadBlock, plan_reads
from bridge.connectors.modbus.reply import BadReply, Reply, block_values, decode_address
from bridge.types import TagValue

__all__ = [
    "BlockProblem",
    "Verdict",
    "VerifyReport",
    "VerifyTag",
    "engineering",
    "judge",
    "matches",
    "read_and_verify",
]

ORDERS: tuple[WordOrder, ...] = get_args(WordOrder)
_SAME_WIDTH: dict[int, tuple[RegisterType, ...]] = {
    1: ("uint16", "int16"),
    2: ("float32", "int32", "uint32"),
    4: ("float64", "int64", "uint64"),
}
_SCALES = tuple(10.0**k for k in range(-4, 5))
_MAX_SUGGESTIONS = 4


@dataclass(frozen=True, slots=True)
class VerifyTag:
    """A tag of the source: its id, address, and the mapping's scale/offset. Tags with
    ``expect`` on their address are judged; the others only shape the blocks."""

    tag: str
    address: ModbusAddress
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    tag: str
    ok: bool
    value: TagValue
    expected: bool | int | float | str
    problem: str = ""
    suggestions: tuple[str, ...] = ()

    def line(self) -> str:
        if self.ok:
            return f"OK   {self.tag} = {self.value!r}"
        if self.problem:
            return f"FAIL {self.tag}: {self.problem}"
        hint = "; ".join(self.suggestions) if self.suggestions else "no type, order or scale fits"
        return f"OFF  {self.tag} = {self.value!r}, expected {self.expected!r} (try {hint})"


@dataclass(frozen=True, slots=True)
class BlockProblem:
    """A block the poller will send that the device refuses, and the setting that fixes it."""

    source: str
    block: str  # e.g. "holding 10-21 (unit 1)"
    tags: tuple[str, ...]
    reason: str
    fix: str

    def line(self) -> str:
        return (
            f"FAIL block {self.block} of source {self.source} ({', '.join(self.tags)}): "
            f"{self.reason}; {self.fix}"
        )


@dataclass(slots=True)
class VerifyReport:
    verdicts: list[Verdict] = field(default_factory=list)
    blocks: list[BlockProblem] = field(default_factory=list)
    requests: int = 0  # blocks read as the poller reads them

    @property
    def ok(self) -> bool:
        return not self.blocks and all(v.ok for v in self.verdicts)


def describe(block: ReadBlock) -> str:
    last = block.start + block.count - 1
    span = str(block.start) if last == block.start else f"{block.start}-{last}"
    return f"{block.table} {span} (unit {block.unit})"


def engineering(raw: TagValue, scale: float, offset: float) -> TagValue:
    """``raw * scale + offset`` for numbers, as the gateway's normalize step computes it."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return raw
    if scale == 1.0 and offset == 0.0:
        return raw
    return raw * scale + offset


def matches(value: TagValue, expect: ExpectedValue) -> bool:
    want = expect.value
    if isinstance(want, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(want, bool) and value == want
    if isinstance(want, str) or isinstance(value, str):
        return value == want
    if not isinstance(value, int | float) or not math.isfinite(value):
        return False
    # Tolerance 0 still has to let float32 rounding through (about 6e-8 relative).
    allowed = expect.tolerance or 1e-6 * max(1.0, abs(want))
    return abs(value - want) <= allowed


def judge(item: VerifyTag, words: Sequence[int]) -> Verdict:
    """Verdict for ``item`` given the registers it occupies (as read, in address order)."""
    a = item.address
    assert a.expect is not None
    value = engineering(decode_address(words, a), item.scale, item.offset)
    if matches(value, a.expect):
        return Verdict(item.tag, True, value, a.expect.value)
    return Verdict(item.tag, False, value, a.expect.value, suggestions=_suggest(item, words))


def _suggest(item: VerifyTag, words: Sequence[int]) -> tuple[str, ...]:
    a = item.address
    assert a.expect is not None
    out: list[str] = []
    for variant, change in _variants(a):
        try:
            raw = decode_address(words, variant)
        except ValueError:
            continue
        if matches(engineering(raw, item.scale, item.offset), a.expect):
            out.append(change or "check the PLC value")
            continue
        for scale in _SCALES:
            if scale != item.scale and matches(engineering(raw, scale, item.offset), a.expect):
                out.append(", ".join(x for x in (change, f"scale: {scale:g}") if x))
    # Fewest changes first: an order alone, then a type, then a scale on top.
    out.sort(key=lambda s: s.count(",") + ("scale" in s))
    return tuple(dict.fromkeys(out))[:_MAX_SUGGESTIONS]


def _variants(a: ModbusAddress) -> Iterable[tuple[ModbusAddress, str]]:
    """The same registers read with another order and/or type of the same width."""
    if a.bit is not None or a.is_bit:
        return
    if a.type == "string":
        for order in ("ABCD", "BADC"):
            if order != a.word_order:
                yield a.model_copy(update={"word_order": order}), f"word_order: {order}"
        return
    width = a.register_count
    for type_ in _SAME_WIDTH.get(width, ()):
        for order in ORDERS if width > 1 else ("ABCD",):
            changes = []
            if type_ != a.type:
                changes.append(f"type: {type_}")
            if width > 1 and order != a.word_order:
                changes.append(f"word_order: {order}")
            yield a.model_copy(update={"type": type_, "word_order": order}), ", ".join(changes)


async def read_and_verify(
    name: str, settings: ModbusSourceSettings, items: Sequence[VerifyTag]
) -> VerifyReport:
    """Read the blocks the poller will send (one request in flight) and judge the tags with
    ``expect``. A refused block is read again tag by tag, and its gaps alone, to name the fix."""
    link = Link(name, settings)
    deadline = settings.timeout_s + 1.0
    if not await link.connect(deadline):
        raise ConnectionError(f"cannot connect to {link.endpoint}")
    by_tag = {item.tag: item for item in items}
    blocks = plan_reads(
        [(i.tag, i.address) for i in items],
        settings.max_gap,
        settings.max_registers_per_read,
        settings.unit,
    )
    report = VerifyReport()
    try:
        for block in blocks:
            judged = [by_tag[p.tag] for p in block.tags if by_tag[p.tag].address.expect is not None]
            report.requests += 1
            try:
                reply = await link.read(block)
                block_values(block, reply)  # every check a poll makes, before judging
            except BadReply as exc:
                if exc.mismatch:
                    report.verdicts.extend(_unreadable(judged, exc.reason))
                    continue
                await _diagnose(link, name, block, by_tag, exc.reason, settings.max_gap, report)
                continue
            except Exception as exc:
                report.verdicts.extend(_unreadable(judged, f"no reply ({exc})"))
                continue
            for planned in block.tags:
                item = by_tag[planned.tag]
                if item.address.expect is not None:
                    report.verdicts.append(_judge_in_block(item, planned.offset, block, reply))
    finally:
        link.close()
    return report


def _unreadable(items: Sequence[VerifyTag], reason: str) -> list[Verdict]:
    return [Verdict(i.tag, False, None, _expected(i), reason) for i in items]


def _expected(item: VerifyTag) -> bool | int | float | str:
    assert item.address.expect is not None
    return item.address.expect.value


def _judge_in_block(item: VerifyTag, offset: int, block: ReadBlock, reply: Reply) -> Verdict:
    if block.is_bit:
        value: TagValue = bool(reply.bits[offset])
        assert item.address.expect is not None
        return Verdict(item.tag, matches(value, item.address.expect), value, _expected(item))
    width = item.address.register_count
    return judge(item, reply.registers[offset : offset + width])


async def _diagnose(
    link: Link,
    source: str,
    block: ReadBlock,
    by_tag: dict[str, VerifyTag],
    reason: str,
    max_gap: int,
    report: VerifyReport,
) -> None:
    """The device refused ``block``: find whether a tag's own address or a gap is to blame."""
    refused_tags: list[str] = []
    for planned in block.tags:
        item = by_tag[planned.tag]
        (alone,) = plan_reads([(item.tag, item.address)], 0, 125, block.unit)
        try:
            reply = await link.read(alone)
            block_values(alone, reply)
        except Exception as exc:
            refused_tags.append(item.tag)
            if item.address.expect is not None:
                why = exc.reason if isinstance(exc, BadReply) else f"no reply ({exc})"
                report.verdicts.append(
                    Verdict(item.tag, False, None, _expected(item), f"refused alone too: {why}")
                )
            continue
        if item.address.expect is not None:
            verdict = _judge_in_block(item, 0, alone, reply)
            report.verdicts.append(verdict)
    tags = tuple(p.tag for p in block.tags)
    if refused_tags:
        fix = (
            f"the device refuses the address of {', '.join(refused_tags)} itself: correct it; "
            f"until then it takes the other {len(tags) - len(refused_tags)} tag(s) of the "
            "block down with it"
        )
    else:
        holes = await _refused_gaps(link, block)
        if holes:
            smallest = min(size for _, size in holes)
            where = ", ".join(f"{block.table} {start}-{start + size - 1}" for start, size in holes)
            fix = (
                f"the device has no {where} inside this block: set max_gap: {smallest - 1} "
                f"(now {max_gap}) on source {source}, or split the block by moving those tags "
                "to their own source entry"
            )
        else:
            fix = (
                f"every tag and gap reads alone: the device refuses {block.count}-register "
                f"requests; lower max_registers_per_read below {block.count}"
            )
    report.blocks.append(BlockProblem(source, describe(block), tags, reason, fix))


async def _refused_gaps(link: Link, block: ReadBlock) -> list[tuple[int, int]]:
    """``(start, size)`` of each unused stretch of ``block`` that the device refuses alone."""
    holes: list[tuple[int, int]] = []
    end = block.start
    for planned in sorted(block.tags, key=lambda p: p.offset):
        first = block.start + planned.offset
        if first > end:
            gap = ReadBlock(
                table=block.table, start=end, count=first - end, tags=(), unit=block.unit
            )
            try:
                reply = await link.read(gap)
                if reply.function_code & 0x80:
                    holes.append((end, first - end))
            except Exception:
                holes.append((end, first - end))
        end = max(end, first + planned.address.register_count)
    return holes
