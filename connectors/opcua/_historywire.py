"""OPC UA binary of the DataValues of a raw HistoryRead (Part 6 5.2.2.17), written directly.

asyncua's generic encoder took 12-20 µs per DataValue of a HistoryRead response, most of the
server's time (python -m bench.opcua_history); these are the bytes it writes (the tests compare
both).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.types import HistoryValue

__all__ = ["TICKS_AT_EPOCH", "Encoder", "Wire", "history_data", "placeholder", "ticks", "wire_for"]

_TTR = ua.TimestampsToReturn
_HISTORY_DATA = ua.NodeId(cast(Any, ObjectIds.HistoryData_Encoding_DefaultBinary), cast(Any, 0))
TICKS_AT_EPOCH = 116_444_736_000_000_000  # 100 ns ticks from 1601-01-01 to 1970-01-01
_DOUBLE, _STRING = ua.VariantType.Double.value, ua.VariantType.String.value
_INT32 = struct.Struct("<i").pack
_HEAD_DOUBLE = struct.Struct("<BBd").pack  # encoding mask, variant type, value
_HEAD_TEXT = struct.Struct("<BBi").pack  # encoding mask, variant type, length (+ UTF-8)
_HEAD_INT32 = _HEAD_TEXT  # encoding mask, variant type, value
_INT32_TYPE = ua.VariantType.Int32.value

# (value, variant type, status code, timestamp ticks) -> one DataValue's bytes
Wire = Callable[[Any, int, int, int], bytes]
Encoder = Callable[[HistoryValue], bytes]


def ticks(timestamp: float) -> int:
    """DateTime ticks of an epoch timestamp, rounded to the microsecond as
    ``datetime.fromtimestamp`` rounds it (what the live node's SourceTimestamp shows)."""
    fraction, whole = math.modf(timestamp)
    return (int(whole) * 1_000_000 + round(fraction * 1_000_000)) * 10 + TICKS_AT_EPOCH


def wire_for(timestamps: ua.TimestampsToReturn) -> Wire:
    """A DataValue encoder for these timestamps: Value and StatusCode always (as asyncua
    writes them), SourceTimestamp and/or ServerTimestamp (both the same time)."""
    source = timestamps in (_TTR.Source, _TTR.Both)
    server = timestamps in (_TTR.Server, _TTR.Both)
    mask = 0x01 | 0x02 | (0x04 if source else 0) | (0x08 if server else 0)
    null = bytes((mask, 0))
    if source and server:
        both = struct.Struct("<Iqq").pack

        def tail(status: int, ticks: int) -> bytes:
            return both(status, ticks, ticks)

    else:
        one = struct.Struct("<Iq").pack

        def tail(status: int, ticks: int) -> bytes:
            return one(status, ticks)

    def encode(value: Any, vtype: int, status: int, ticks: int) -> bytes:
        if value is None:
            return null + tail(status, ticks)
        if vtype == _DOUBLE:
            return _HEAD_DOUBLE(mask, _DOUBLE, value) + tail(status, ticks)
        if vtype == _INT32_TYPE:
            return _HEAD_INT32(mask, _INT32_TYPE, value) + tail(status, ticks)
        data: bytes = str(value).encode()
        return _HEAD_TEXT(mask, _STRING, len(data)) + data + tail(status, ticks)

    return encode


def history_data(parts: Sequence[bytes]) -> ua.ExtensionObject:
    """HistoryData of encoded DataValues, as the ExtensionObject asyncua sends as it is."""
    body: Any = _INT32(len(parts)) + b"".join(parts)
    return ua.ExtensionObject(TypeId=_HISTORY_DATA, Body=body)


def placeholder(us: int, wire: Wire) -> bytes:
    """A bound that does not exist (Part 11 4.4: FIRST/LAST): no value, BadBoundNotFound."""
    return wire(None, 0, StatusCodes.BadBoundNotFound, us * 10 + TICKS_AT_EPOCH)
