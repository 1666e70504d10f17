"""Check Modbus tags against values known to be true (golden vectors in the mapping's
``expect:``) and, when one is off, find the type, byte order or scale that would match.

The matching is pure (words in, verdict out); ``read_and_verify`` does the reading, one
request at a time, on the same ``Link`` the source uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import get_args

from bridge.types import TagValue
from connectors.modbus.codec import RegisterType, WordOrder
from connectors.modbus.config import ExpectedValue, ModbusAddress, ModbusSourceSettings
from connectors.modbus.link import Link
from connectors.modbus.plan import plan_reads
from connectors.modbus.reply import BadReply, block_values, decode_address

__all__ = ["Verdict", "VerifyTag", "engineering", "judge", "matches", "read_and_verify"]

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
    """A tag to check: its id, address (with ``expect``), and the mapping's scale/offset."""

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
) -> list[Verdict]:
    """Read each tag on its own (one request in flight) and judge it."""
    link = Link(name, settings)
    deadline = settings.timeout_s + 1.0
    if not await link.connect(deadline):
        raise ConnectionError(f"cannot connect to {link.endpoint}")
    verdicts: list[Verdict] = []
    try:
        for item in items:
            assert item.address.expect is not None
            expected = item.address.expect.value
            (block,) = plan_reads([(item.tag, item.address)], 0, 125, settings.unit)
            try:
                reply = await link.read(block)
                block_values(block, reply)  # every check a poll makes, before judging
            except BadReply as exc:
                verdicts.append(Verdict(item.tag, False, None, expected, exc.reason))
                continue
            except Exception as exc:
                verdicts.append(Verdict(item.tag, False, None, expected, f"no reply ({exc})"))
                continue
            if block.is_bit:
                value: TagValue = bool(reply.bits[0])
                ok = matches(value, item.address.expect)
                verdicts.append(Verdict(item.tag, ok, value, expected))
            else:
                verdicts.append(judge(item, reply.registers))
    finally:
        link.close()
    return verdicts
