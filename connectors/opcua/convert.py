"""Pure conversions between asyncua values and bridge values. No sockets, no sessions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua

from bridge.connectors.opcua.nodeid import NodeRef, parse_nsu
from bridge.connectors.opcua.nodeid import identifier_value as _identifier_value
from bridge.types import Quality, TagValue

__all__ = [
    "Converted",
    "NodeRef",
    "data_value_to_sample_parts",
    "datetime_to_epoch",
    "make_node_id",
    "node_id_for",
    "parse_nsu",
    "quality_of",
    "status_name",
    "variant_to_value",
]

_SEVERITY_MASK = 0xC000_0000
_UNCERTAIN = 0x4000_0000
# The low 16 bits carry info flags (overflow, limits) that are not part of the code's name.
_CODE_MASK = 0xFFFF_0000

_INT_TYPES = frozenset(
    {
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
_FLOAT_TYPES = frozenset({ua.VariantType.Float, ua.VariantType.Double})


@dataclass(frozen=True, slots=True)
class Converted:
    value: TagValue
    quality: Quality
    reason: str = ""


def node_id_for(ref: NodeRef, namespace_index: int) -> ua.NodeId:
    """Build the NodeId for one session, once its namespace array told us the index."""
    kind = {
        "i": ua.NodeIdType.Numeric,
        "s": ua.NodeIdType.String,
        "g": ua.NodeIdType.Guid,
        "b": ua.NodeIdType.ByteString,
    }[ref.kind]
    return make_node_id(_identifier_value(ref), namespace_index, kind)


def make_node_id(
    identifier: int | str | uuid.UUID | bytes,
    namespace_index: int,
    kind: ua.NodeIdType | None = None,
) -> ua.NodeId:
    # asyncua annotates NodeId with its own int/str subclasses; plain values are what it expects.
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index), cast(Any, kind))


def status_name(code: int) -> str:
    name, _ = ua.status_codes.get_name_and_doc(code & _CODE_MASK)
    return str(name)


def quality_of(status: ua.StatusCode | None) -> tuple[Quality, str]:
    """Quality from the two severity bits; the reason is the code's name unless Good."""
    if status is None:
        return Quality.GOOD, ""
    code = int(status.value)
    severity = code & _SEVERITY_MASK
    if severity == 0:
        return Quality.GOOD, ""
    name = status_name(code)
    if severity == _UNCERTAIN:
        return Quality.UNCERTAIN, name
    if name in ("Bad", "Uncertain"):
        name = f"Bad (0x{code:08X})"
    return Quality.BAD, name


def datetime_to_epoch(value: datetime | None) -> float | None:
    """Epoch seconds; OPC UA's 'no time' (1601-01-01) and None both become None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.year <= 1601:
        return None
    return value.timestamp()


def variant_to_value(variant: ua.Variant | None) -> Converted:
    """A scalar bridge value, or Bad quality with a reason for anything a tag cannot hold."""
    if variant is None or variant.VariantType == ua.VariantType.Null or variant.Value is None:
        return Converted(None, Quality.BAD, "null value")
    vtype = variant.VariantType
    if variant.is_array or isinstance(variant.Value, list | tuple):
        return Converted(None, Quality.BAD, f"unsupported array of {vtype.name}")
    raw: Any = variant.Value
    if vtype == ua.VariantType.Boolean:
        return Converted(bool(raw), Quality.GOOD)
    if vtype in _INT_TYPES:
        return Converted(int(raw), Quality.GOOD)
    if vtype in _FLOAT_TYPES:
        return Converted(float(raw), Quality.GOOD)
    if vtype == ua.VariantType.String:
        return Converted(str(raw), Quality.GOOD)
    if vtype == ua.VariantType.DateTime and isinstance(raw, datetime):
        return Converted(datetime_to_epoch(raw), Quality.GOOD)
    if vtype == ua.VariantType.LocalizedText and isinstance(raw, ua.LocalizedText):
        return Converted(raw.Text, Quality.GOOD)
    return Converted(None, Quality.BAD, f"unsupported type {vtype.name}")


def data_value_to_sample_parts(
    dv: ua.DataValue,
) -> tuple[TagValue, Quality, str, float | None, float | None]:
    """(value, quality, reason, source_time, server_time) of one DataValue.

    The worse of the status and the value conversion wins, and a Bad status keeps its own reason.
    """
    status = dv.StatusCode
    variant = dv.Value
    source_time = datetime_to_epoch(dv.SourceTimestamp)
    server_time = datetime_to_epoch(dv.ServerTimestamp)
    # Fast path for the common case (Good status, scalar number), run for every notification:
    # the same result as the general path below without its intermediate objects.
    if (status is None or not status.value & _SEVERITY_MASK) and variant is not None:
        raw = variant.Value
        if type(raw) is float and variant.VariantType in _FLOAT_TYPES:
            return raw, Quality.GOOD, "", source_time, server_time
        if type(raw) is int and variant.VariantType in _INT_TYPES:
            return raw, Quality.GOOD, "", source_time, server_time
    status_quality, status_reason = quality_of(status)
    if status_quality is Quality.BAD:
        return None, Quality.BAD, status_reason, source_time, server_time
    converted = variant_to_value(dv.Value)
    if converted.quality >= status_quality:
        return converted.value, converted.quality, converted.reason, source_time, server_time
    return converted.value, status_quality, status_reason, source_time, server_time
