"""Register words <-> values. Pure: no I/O, no pymodbus, so every byte/word order is golden-tested.

Order letters name the bytes of a 32-bit value in big-endian order (A = most significant) as
they appear on the wire: ``ABCD`` is plain big-endian, ``CDAB`` swaps the two words (common on
PLCs), ``BADC`` swaps the bytes inside each word, ``DCBA`` reverses all four bytes. For 64-bit
values the same two ideas apply to four words (the usual ABCDEFGH / GHEFCDAB / BADCFEHG /
HGFEDCBA): ``CDAB`` reverses the word order, ``BADC`` swaps bytes inside each word, ``DCBA`` does
both. Strings only honour the byte swap (``BADC``/``DCBA``: low byte first in each register).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "RegisterType",
    "WordOrder",
    "decode",
    "decode_bits",
    "decode_string",
    "encode",
    "encode_string",
    "register_count",
]

RegisterType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "float32",
    "int64",
    "uint64",
    "float64",
    "string",
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}
_WIDTH: dict[str, int] = {
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
_SWAPS_WORDS = frozenset({"CDAB", "DCBA"})
_SWAPS_BYTES = frozenset({"BADC", "DCBA"})


def register_count(type_: RegisterType, length: int = 0) -> int:
    """Registers a value of ``type_`` occupies (``length`` is the character count of a string)."""
    if type_ == "string":
        return (length + 1) // 2
    return _WIDTH.get(type_, 1)


def _reorder(words: Sequence[int], word_order: WordOrder) -> list[int]:
    # Both swaps are their own inverse, so the same function encodes and decodes.
    out = list(words)
    if len(out) > 1 and word_order in _SWAPS_WORDS:
        out.reverse()
    if word_order in _SWAPS_BYTES:
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def _check_words(registers: Sequence[int], expected: int, what: str) -> None:
    if len(registers) != expected:
        raise ValueError(f"{what} needs {expected} register(s), got {len(registers)}")
    for word in registers:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} is outside 0..65535")


def decode(
    registers: Sequence[int], type_: RegisterType, word_order: WordOrder = "ABCD"
) -> int | float | bool:
    """Numeric value held by ``registers`` (16-bit words as received, in address order).

    ``word_order`` matters for 32- and 64-bit types only. NaN and infinities decode as floats.
    Raises ``ValueError`` if the number of words or a word's range is wrong.
    """
    if type_ == "string":
        raise ValueError("strings are decoded with decode_string()")
    _check_words(registers, register_count(type_), type_)
    if type_ == "bool":
        return registers[0] != 0
    words = registers if type_ in ("int16", "uint16") else _reorder(registers, word_order)
    data = b"".join(word.to_bytes(2, "big") for word in words)
    value: int | float = struct.unpack(_STRUCT[type_], data)[0]
    return value


def decode_bits(register: int, bit: int, bits: int = 1) -> int | bool:
    """The ``bits``-wide field starting at ``bit`` (0 = least significant) of one register;
    a single bit decodes as bool."""
    if not 0 <= register <= 0xFFFF:
        raise ValueError(f"register value {register} is outside 0..65535")
    if bit < 0 or bits < 1 or bit + bits > 16:
        raise ValueError(f"bit field {bit}+{bits} does not fit in 16 bits")
    field = (register >> bit) & ((1 << bits) - 1)
    return bool(field) if bits == 1 else field


def decode_string(registers: Sequence[int], length: int, word_order: WordOrder = "ABCD") -> str:
    """``length`` characters packed two per register; trailing NULs are padding, not text.

    Bytes outside ASCII come back as U+FFFD rather than as a guess at a code page.
    """
    _check_words(registers, register_count("string", length), f"string of {length}")
    words = (
        [((w & 0xFF) << 8) | (w >> 8) for w in registers]
        if word_order in _SWAPS_BYTES
        else registers
    )
    data = b"".join(w.to_bytes(2, "big") for w in words)[:length]
    return data.rstrip(b"\x00").decode("ascii", errors="replace")


def encode_string(text: str, length: int, word_order: WordOrder = "ABCD") -> list[int]:
    """Registers a device would hold for ``text`` (NUL-padded to ``length`` characters)."""
    data = text.encode("ascii")
    if len(data) > length:
        raise ValueError(f"{text!r} is longer than {length} characters")
    data = data.ljust(register_count("string", length) * 2, b"\x00")
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return [((w & 0xFF) << 8) | (w >> 8) for w in words] if word_order in _SWAPS_BYTES else words


def encode(value: float | bool, type_: RegisterType, word_order: WordOrder = "ABCD") -> list[int]:
    """Registers (in address order) that a device would hold for ``value``.

    Integers must fit the type exactly (no silent wrap); floats are rounded to the type.
    Raises ``ValueError`` when the value does not fit.
    """
    if type_ == "string":
        raise ValueError("strings are encoded with encode_string()")
    if type_ == "bool":
        return [1 if value else 0]
    if type_ not in ("float32", "float64"):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{type_} needs an integer, got {value!r}")
        value = int(value)
    try:
        data = struct.pack(_STRUCT[type_], value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit in {type_}") from exc
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words if type_ in ("int16", "uint16") else _reorder(words, word_order)
