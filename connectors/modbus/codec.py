"""Register words <-> values. Pure: no I/O, no pymodbus, so every byte/word order is golden-tested.

Order letters name the bytes of the value in big-endian order (A = most significant) as they
appear on the wire: ``ABCD`` is plain big-endian, ``CDAB`` swaps the two words (common on
PLCs), ``BADC`` swaps the bytes inside each word, ``DCBA`` reverses all four bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

__all__ = ["RegisterType", "WordOrder", "decode", "encode", "register_count"]

RegisterType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
}

# Position in wire order of each canonical byte. Every permutation here is its own inverse,
# so the same table serves encoding and decoding.
_PERMUTATION: dict[str, tuple[int, int, int, int]] = {
    "ABCD": (0, 1, 2, 3),
    "CDAB": (2, 3, 0, 1),
    "BADC": (1, 0, 3, 2),
    "DCBA": (3, 2, 1, 0),
}


def register_count(type_: RegisterType) -> int:
    """Number of 16-bit registers a value of ``type_`` occupies."""
    return 2 if type_ in ("int32", "uint32", "float32") else 1


def _reorder(data: bytes, word_order: WordOrder) -> bytes:
    if len(data) != 4:
        return data
    perm = _PERMUTATION[word_order]
    return bytes(data[i] for i in perm)


def decode(
    registers: Sequence[int], type_: RegisterType, word_order: WordOrder = "ABCD"
) -> int | float | bool:
    """Value held by ``registers`` (16-bit words as received, in address order).

    ``word_order`` only matters for 32-bit types. NaN and infinities decode as floats.
    Raises ``ValueError`` if the number of words or a word's range is wrong.
    """
    expected = register_count(type_)
    if len(registers) != expected:
        raise ValueError(f"{type_} needs {expected} register(s), got {len(registers)}")
    for word in registers:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} is outside 0..65535")
    if type_ == "bool":
        return registers[0] != 0
    data = b"".join(word.to_bytes(2, "big") for word in registers)
    value: int | float = struct.unpack(_STRUCT[type_], _reorder(data, word_order))[0]
    return value


def encode(value: float | bool, type_: RegisterType, word_order: WordOrder = "ABCD") -> list[int]:
    """Registers (in address order) that a device would hold for ``value``.

    Integers must fit the type exactly (no silent wrap); floats are rounded to float32.
    Raises ``ValueError`` when the value does not fit.
    """
    if type_ == "bool":
        return [1 if value else 0]
    if type_ != "float32":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{type_} needs an integer, got {value!r}")
        value = int(value)
    try:
        data = struct.pack(_STRUCT[type_], value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit in {type_}") from exc
    data = _reorder(data, word_order)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
