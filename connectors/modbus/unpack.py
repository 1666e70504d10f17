"""Decode every tag of a register block at once. Pure: no I/O, no pymodbus.

``codec.decode`` costs a few microseconds per tag (a word list, a bytes join and a struct call
each); a 125-register block of 80 tags would spend more time there than on the wire. An
``Unpacker`` is built once per block: the byte order of every tag is turned into one byte
permutation of the block and the types into one ``struct`` format, so a reply becomes values
with three C calls (pack the words, permute the bytes, unpack), plus a small fix-up for the
types ``struct`` has no code for (bools, bit fields, strings). Its results equal
``reply.decode_address`` tag by tag (``tests/unit/modbus/test_unpack.py`` checks every type and
order against it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from operator import itemgetter

from bridge.connectors.modbus.config import ModbusAddress
from bridge.types import TagValue

__all__ = ["Unpacker"]

_CODES: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}
_SWAPS_WORDS = frozenset({"CDAB", "DCBA"})
_SWAPS_BYTES = frozenset({"BADC", "DCBA"})

Fixup = Callable[[object], TagValue]


def _bit_field(bit: int, bits: int) -> Fixup:
    mask = (1 << bits) - 1
    if bits == 1:
        return lambda word: bool((word >> bit) & 1)  # type: ignore[operator]
    return lambda word: (word >> bit) & mask  # type: ignore[operator]


def _text(length: int) -> Fixup:
    return lambda data: data[:length].rstrip(b"\x00").decode("ascii", errors="replace")  # type: ignore[index]


def _tag_bytes(offset: int, address: ModbusAddress) -> tuple[str, list[int], Fixup | None]:
    """The struct code of one tag, the block byte indices it reads (in big-endian order of the
    value) and the fix-up turning what struct returns into the tag's value."""
    count = address.register_count
    words = list(range(offset, offset + count))
    if address.bit is not None:
        return "H", [2 * offset, 2 * offset + 1], _bit_field(address.bit, address.bits)
    kind = address.type  # a register bool always has `bit:` (config), so it is handled above
    # As in codec: 16-bit types ignore word_order; strings honour only the byte swap.
    order = address.word_order
    swap_words = kind != "string" and count > 1 and order in _SWAPS_WORDS
    swap_bytes = order in _SWAPS_BYTES and kind not in ("int16", "uint16")
    if swap_words:
        words.reverse()
    indices: list[int] = []
    for w in words:
        indices.extend((2 * w + 1, 2 * w) if swap_bytes else (2 * w, 2 * w + 1))
    if kind == "string":
        return f"{2 * count}s", indices, _text(address.length)
    return _CODES[kind], indices, None


class Unpacker:
    """Values of ``tags`` (``(offset in the block, address)``) from the block's ``count``
    registers, in the order of ``tags``."""

    __slots__ = ("_count", "_fixups", "_pack", "_pick", "_unpack")

    def __init__(self, count: int, tags: Sequence[tuple[int, ModbusAddress]]) -> None:
        codes: list[str] = []
        indices: list[int] = []
        fixups: list[tuple[int, Fixup]] = []
        for i, (offset, address) in enumerate(tags):
            if offset < 0 or offset + address.register_count > count:
                raise ValueError(f"tag at offset {offset} does not fit a {count}-register block")
            code, tag_indices, fixup = _tag_bytes(offset, address)
            codes.append(code)
            indices.extend(tag_indices)
            if fixup is not None:
                fixups.append((i, fixup))
        self._count = count
        self._pack = struct.Struct(f">{count}H").pack
        self._unpack = struct.Struct(">" + "".join(codes)).unpack
        # The identity (every register used once, in order, nothing swapped) needs no copy.
        identity = indices == list(range(2 * count))
        self._pick: Callable[[bytes], bytes] | None = None
        if not identity and indices:
            getter = itemgetter(*indices)  # every tag reads 2 bytes or more: a tuple back
            self._pick = lambda data: bytes(getter(data))
        self._fixups = tuple(fixups)

    def values(self, registers: Sequence[int]) -> list[TagValue]:
        """One value per tag. Raises ``ValueError`` for a wrong register count or a word
        outside 0..65535."""
        if len(registers) != self._count:
            raise ValueError(f"{self._count} registers expected, got {len(registers)}")
        try:
            data = self._pack(*registers)
        except struct.error as exc:
            raise ValueError(f"register value outside 0..65535 ({exc})") from exc
        if self._pick is not None:
            data = self._pick(data)
        values: list[TagValue] = list(self._unpack(data))
        for i, fixup in self._fixups:
            values[i] = fixup(values[i])
        return values
