"""Check a read reply against its request and turn it into tag values. Pure: no I/O.

pymodbus accepts replies with the wrong function code or fewer registers than asked for, so
everything that can be checked is checked here before a single value is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.connectors.modbus.codec import decode, decode_bits, decode_string
from bridge.connectors.modbus.config import ModbusAddress, Table
from bridge.connectors.modbus.plan import ReadBlock
from bridge.connectors.modbus.unpack import Unpacker
from bridge.types import TagValue

__all__ = [
    "EXCEPTION_NAMES",
    "FUNCTION_CODES",
    "BadReply",
    "Reply",
    "block_values",
    "checked_values",
    "decode_address",
]

FUNCTION_CODES: dict[Table, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class BadReply(Exception):
    """The reply cannot be used; ``reason`` goes into the tags' ``TagSample.reason``.

    ``mismatch``: the reply does not fit the request (it may be a late reply to an earlier one,
    so this request's own reply may still be coming); False for a proper exception reply.
    """

    def __init__(self, reason: str, *, mismatch: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mismatch = mismatch


@dataclass(frozen=True, slots=True)
class Reply:
    """The parts of a read reply that matter, free of any library type.

    ``transaction_id`` is the reply's MBAP transaction id and ``request_transaction_id`` the one
    the request carried (both 0 on RTU, which has none).
    """

    function_code: int
    unit: int
    exception_code: int = 0
    registers: Sequence[int] = ()
    bits: Sequence[bool] = ()
    transaction_id: int = 0
    request_transaction_id: int = 0


def block_values(
    block: ReadBlock, reply: Reply, unit: int | None = None
) -> list[tuple[str, TagValue]]:
    """``(tag, value)`` for every tag of ``block``; raises ``BadReply`` if the reply is unusable.

    ``unit`` defaults to the block's unit.
    """
    return list(zip((p.tag for p in block.tags), checked_values(block, reply, unit), strict=True))


def checked_values(block: ReadBlock, reply: Reply, unit: int | None = None) -> list[TagValue]:
    """The value of every tag of ``block``, in the order of ``block.tags``; raises ``BadReply``
    if the reply is unusable. ``unit`` defaults to the block's unit."""
    if unit is None:
        unit = block.unit
    # pymodbus accepts a reply with transaction id 0 for any request: a late reply to an
    # earlier request (or a stray frame) would otherwise pass as this one's answer.
    if reply.transaction_id != reply.request_transaction_id:
        raise BadReply(
            f"reply transaction id {reply.transaction_id} does not match request "
            f"{reply.request_transaction_id}"
        )
    expected_fc = FUNCTION_CODES[block.table]
    if reply.function_code & 0x80:
        code = reply.exception_code
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        mismatch = reply.function_code != expected_fc | 0x80 or bool(unit and reply.unit != unit)
        raise BadReply(f"modbus exception {code} ({name})", mismatch=mismatch)
    if reply.function_code != expected_fc:
        raise BadReply(
            f"reply function code {reply.function_code} does not match request {expected_fc}"
        )
    # Unit 0 is answered by whatever device sits behind the address, so it is not checked.
    if unit and reply.unit != unit:
        raise BadReply(f"reply from unit {reply.unit}, expected unit {unit}")
    if block.is_bit:
        return _bit_values(block, reply.bits)
    return _register_values(block, reply.registers)


def _bit_values(block: ReadBlock, bits: Sequence[bool]) -> list[TagValue]:
    # Bits travel packed in whole bytes, so a correct reply is padded to a multiple of 8.
    expected = (block.count + 7) // 8 * 8
    if len(bits) != expected:
        raise BadReply(
            f"short or long reply: {len(bits)} bits for {block.count} requested "
            f"(expected {expected} with padding)"
        )
    return [bool(bits[p.offset]) for p in block.tags]


def _register_values(block: ReadBlock, registers: Sequence[int]) -> list[TagValue]:
    if len(registers) != block.count:
        raise BadReply(
            f"short or long reply: {len(registers)} registers for {block.count} requested"
        )
    unpacker = block.unpacker or Unpacker(block.count, [(p.offset, p.address) for p in block.tags])
    return unpacker.values(registers)


def decode_address(words: Sequence[int], address: ModbusAddress) -> TagValue:
    """The value ``address`` describes, from its own registers (``address.register_count``)."""
    if address.bit is not None:
        if len(words) != 1:
            raise ValueError(f"a bit field needs 1 register, got {len(words)}")
        return decode_bits(words[0], address.bit, address.bits)
    if address.type == "string":
        return decode_string(words, address.length, address.word_order)
    return decode(words, address.type, address.word_order)
