"""Sparkplug B 3.0 payloads and topics: build them as an edge node, read them as a host.

Pure (bytes in, bytes out, no MQTT client) so every rule the specification puts on payloads is
unit-tested: NBIRTH seq 0 then +1 mod 256 over every message of the edge node, the bdSeq shared
by the will's NDEATH and the NBIRTH of one MQTT session, names and aliases in births but only
aliases (and no datatype) in DATA, explicit nulls, and the host's ``Node Control/Rebirth``.

Integers: the proto carries Int8/16/32 and UInt8/16/32 in a uint32 field, Int64, UInt64 and
DateTime in a uint64 one. A negative value goes as two's complement sign-extended to the field's
width, as Eclipse Tahu's Java reference does; reading cuts the value to the datatype's own width
first, so a sender that masked to 8 or 16 bits decodes the same.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import NamedTuple, cast

from google.protobuf.message import DecodeError

from bridge.connectors.mqtt.sparkplug.sparkplug_b_pb2 import Payload

__all__ = [
    "BDSEQ_METRIC",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "AliasTable",
    "BdSeqStore",
    "DataType",
    "DataValue",
    "HostState",
    "MessageType",
    "MetricSpec",
    "MetricValue",
    "ParsedMetric",
    "ParsedPayload",
    "PropertyScalar",
    "SeqCounter",
    "SparkplugError",
    "SparkplugTopic",
    "aliases_of",
    "data_payload",
    "datatype_for",
    "device_birth",
    "node_birth",
    "node_death_payload",
    "parse",
    "parse_state",
    "parse_topic",
    "rebirth_command",
    "rebirth_requested",
    "state_payload",
    "state_topic",
    "topic",
    "validate_id",
]

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"

MetricValue = bool | int | float | str | bytes
PropertyScalar = bool | int | float | str
AliasTable = Mapping[int, tuple[str, int]]


class SparkplugError(ValueError):
    """A value, id or payload that Sparkplug B cannot carry, or bytes that are not Sparkplug B."""


class DataType(IntEnum):
    """The ``DataType`` codes of sparkplug_b.proto (the wire carries the number)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


_SIGNED_BITS: dict[int, int] = {
    DataType.INT8: 8,
    DataType.INT16: 16,
    DataType.INT32: 32,
    DataType.INT64: 64,
}
_UNSIGNED_BITS: dict[int, int] = {
    DataType.UINT8: 8,
    DataType.UINT16: 16,
    DataType.UINT32: 32,
    DataType.UINT64: 64,
    DataType.DATETIME: 64,
}
_STRING_TYPES = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
_BYTES_TYPES = frozenset({DataType.BYTES, DataType.FILE})
# DataSet, Template and the arrays need structures of their own; nothing in the gateway has them.
_ENCODABLE = frozenset(
    {*_SIGNED_BITS, *_UNSIGNED_BITS, *_STRING_TYPES, *_BYTES_TYPES}
    | {DataType.FLOAT, DataType.DOUBLE, DataType.BOOLEAN}
)
_SCALAR_FIELDS = frozenset(
    {
        "int_value",
        "long_value",
        "float_value",
        "double_value",
        "boolean_value",
        "string_value",
        "bytes_value",
    }
)
_FLOAT32_MAX = 3.4028234663852886e38


def datatype_for(value: PropertyScalar | bytes) -> DataType:
    """The Sparkplug datatype a gateway value travels as when the mapping names none: the widest
    of its kind, so no later value of the same Python type can overflow the birth's datatype."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64
    if isinstance(value, float):
        return DataType.DOUBLE
    if isinstance(value, str):
        return DataType.STRING
    if isinstance(value, bytes):
        return DataType.BYTES
    raise SparkplugError(f"no Sparkplug datatype for a {type(value).__name__}")


# ---- values <-> protobuf fields -------------------------------------------------------------


def _integer(datatype: DataType, value: object) -> int:
    if isinstance(value, datetime) and datatype is DataType.DATETIME:
        if value.tzinfo is None:
            raise SparkplugError("a DateTime needs an aware datetime (naive is ambiguous)")
        return round(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SparkplugError(f"{datatype.name} needs an int, not {type(value).__name__}")
    return value


def _int_field(datatype: DataType, value: object) -> tuple[str, int]:
    number = _integer(datatype, value)
    signed = datatype in _SIGNED_BITS
    bits = _SIGNED_BITS[datatype] if signed else _UNSIGNED_BITS[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= number <= high:
        raise SparkplugError(f"{number} is out of range for {datatype.name}")
    width = 32 if bits <= 32 else 64
    return ("int_value" if width == 32 else "long_value"), number & ((1 << width) - 1)


def _float_field(datatype: DataType, value: object) -> tuple[str, float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SparkplugError(f"{datatype.name} needs a number, not {type(value).__name__}")
    number = float(value)
    if datatype is DataType.FLOAT:
        if math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise SparkplugError(f"{number} is out of range for Float (use Double)")
        return "float_value", number
    return "double_value", number


def _wire(datatype: DataType, value: object) -> tuple[str, MetricValue]:
    """The oneof field of Metric/PropertyValue that carries ``value`` and what to put in it."""
    if datatype in _SIGNED_BITS or datatype in _UNSIGNED_BITS:
        return _int_field(datatype, value)
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        return _float_field(datatype, value)
    if datatype is DataType.BOOLEAN and isinstance(value, bool):
        return "boolean_value", value
    if datatype in _STRING_TYPES and isinstance(value, str):
        return "string_value", value
    if datatype in _BYTES_TYPES and isinstance(value, bytes):
        return "bytes_value", value
    if datatype not in _ENCODABLE:
        raise SparkplugError(f"datatype {datatype.name} is not supported by this codec")
    raise SparkplugError(f"{datatype.name} cannot carry a {type(value).__name__}")


def _signed(raw: int, bits: int) -> int:
    masked = raw & ((1 << bits) - 1)
    return masked - (1 << bits) if masked >> (bits - 1) else masked


def _read_value(
    datatype: int | None, message: Payload.Metric | Payload.PropertyValue
) -> MetricValue | None:
    which = message.WhichOneof("value")
    if which is None or which not in _SCALAR_FIELDS:
        return None  # absent, or a DataSet/Template/extension this codec does not decode
    raw = cast(MetricValue, getattr(message, which))
    bits = None if datatype is None else _SIGNED_BITS.get(datatype)
    if bits is not None and isinstance(raw, int) and not isinstance(raw, bool):
        return _signed(raw, bits)
    return raw


# ---- building payloads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What a birth says about one metric; DATA messages afterwards name it by ``alias`` only.

    ``properties`` become the metric's PropertySet (e.g. ``engUnit``, ``engLow``, ``engHigh``):
    str as String, bool as Boolean, int as Int64, float as Double.
    """

    name: str
    alias: int
    datatype: DataType
    properties: Mapping[str, PropertyScalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise SparkplugError("a metric needs a name")
        if not 0 <= self.alias < 1 << 64:
            raise SparkplugError(f"alias {self.alias} of {self.name!r} is not a uint64")
        if self.datatype not in _ENCODABLE:
            raise SparkplugError(f"datatype {self.datatype!r} of {self.name!r} is not supported")


class DataValue(NamedTuple):
    """One metric of a DATA message. ``timestamp_ms`` None: the payload's own timestamp."""

    alias: int
    datatype: DataType
    value: MetricValue | datetime | None
    timestamp_ms: int | None = None
    is_historical: bool = False


def _set_value(
    target: Payload.Metric | Payload.PropertyValue, datatype: DataType, value: object
) -> None:
    if value is None:
        # The spec's explicit null: no sentinel value that a host could mistake for data.
        target.is_null = True
        return
    name, wire = _wire(datatype, value)
    setattr(target, name, wire)


def _set_properties(metric: Payload.Metric, properties: Mapping[str, PropertyScalar]) -> None:
    for key, value in properties.items():
        datatype = datatype_for(value)
        if datatype is DataType.BYTES:  # PropertyValue has no bytes field
            raise SparkplugError(f"property {key!r}: bytes cannot be a property")
        metric.properties.keys.append(key)
        entry = metric.properties.values.add()
        entry.type = datatype
        _set_value(entry, datatype, value)


def _new_payload(seq: int | None, timestamp_ms: int) -> Payload:
    payload = Payload()
    payload.timestamp = timestamp_ms
    if seq is not None:
        if not 0 <= seq <= 255:
            raise SparkplugError(f"seq {seq} is not 0..255")
        payload.seq = seq
    return payload


def _add_named(
    payload: Payload, name: str, datatype: DataType, value: object, timestamp_ms: int | None
) -> Payload.Metric:
    metric = payload.metrics.add()
    metric.name = name
    metric.datatype = datatype
    if timestamp_ms is not None:
        metric.timestamp = timestamp_ms
    _set_value(metric, datatype, value)
    return metric


def _add_births(
    payload: Payload,
    metrics: Sequence[tuple[MetricSpec, MetricValue | datetime | None]],
    timestamp_ms: int,
    reserved: frozenset[str],
) -> None:
    names: set[str] = set(reserved)
    aliases: set[int] = set()
    for spec, value in metrics:
        if spec.name in names:
            raise SparkplugError(f"metric name {spec.name!r} is reserved or used twice")
        if spec.alias in aliases:
            raise SparkplugError(f"alias {spec.alias} ({spec.name!r}) is used twice")
        names.add(spec.name)
        aliases.add(spec.alias)
        metric = _add_named(payload, spec.name, spec.datatype, value, timestamp_ms)
        metric.alias = spec.alias
        _set_properties(metric, spec.properties)


def _check_bdseq(bdseq: int) -> int:
    if not 0 <= bdseq <= 255:
        raise SparkplugError(f"bdSeq {bdseq} is not 0..255")
    return bdseq


def node_birth(
    seq: int,
    timestamp_ms: int,
    metrics: Sequence[tuple[MetricSpec, MetricValue | datetime | None]],
    bdseq: int,
) -> bytes:
    """NBIRTH: ``bdSeq`` (UInt64, the value of this session's will), ``Node Control/Rebirth``
    (Boolean false) and every node metric with name, alias, datatype, value and properties.

    ``seq`` must be 0 (``SeqCounter.birth()``): taking it, rather than writing 0 here, makes a
    caller that forgot to reset its counter fail at once instead of confusing every host.
    """
    if seq != 0:
        raise SparkplugError(f"an NBIRTH has seq 0, not {seq} (call SeqCounter.birth())")
    payload = _new_payload(seq, timestamp_ms)
    _add_named(payload, BDSEQ_METRIC, DataType.UINT64, _check_bdseq(bdseq), timestamp_ms)
    _add_named(payload, REBIRTH_METRIC, DataType.BOOLEAN, False, timestamp_ms)
    _add_births(payload, metrics, timestamp_ms, frozenset({BDSEQ_METRIC, REBIRTH_METRIC}))
    return payload.SerializeToString()


def device_birth(
    seq: int,
    timestamp_ms: int,
    metrics: Sequence[tuple[MetricSpec, MetricValue | datetime | None]],
) -> bytes:
    """DBIRTH: the device's metrics with names and aliases; no bdSeq and no Node Control (those
    belong to the edge node), ``seq`` the node's next one."""
    payload = _new_payload(seq, timestamp_ms)
    _add_births(payload, metrics, timestamp_ms, frozenset())
    return payload.SerializeToString()


def data_payload(seq: int, timestamp_ms: int, values: Sequence[DataValue]) -> bytes:
    """NDATA/DDATA: metrics by alias only, without name or datatype (the birth said both; the
    spec says DATA should not repeat the datatype), each with its own or the payload's time."""
    payload = _new_payload(seq, timestamp_ms)
    for entry in values:
        if not 0 <= entry.alias < 1 << 64:
            raise SparkplugError(f"alias {entry.alias} is not a uint64")
        metric = payload.metrics.add()
        metric.alias = entry.alias
        metric.timestamp = timestamp_ms if entry.timestamp_ms is None else entry.timestamp_ms
        if entry.is_historical:
            metric.is_historical = True
        _set_value(metric, entry.datatype, entry.value)
    return payload.SerializeToString()


def node_death_payload(bdseq: int, timestamp_ms: int | None = None) -> bytes:
    """NDEATH: the ``bdSeq`` metric only and no seq. The will is registered at CONNECT, long
    before it fires, so it has no timestamp unless one is given (an NDEATH sent on purpose)."""
    payload = Payload()
    if timestamp_ms is not None:
        payload.timestamp = timestamp_ms
    _add_named(payload, BDSEQ_METRIC, DataType.UINT64, _check_bdseq(bdseq), None)
    return payload.SerializeToString()


def rebirth_command(timestamp_ms: int) -> bytes:
    """The NCMD a host sends to ask for new births (for tests that play the host)."""
    payload = _new_payload(None, timestamp_ms)
    _add_named(payload, REBIRTH_METRIC, DataType.BOOLEAN, True, timestamp_ms)
    return payload.SerializeToString()


# ---- reading payloads -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedMetric:
    """One decoded metric. ``value`` None with ``is_null`` False: no value on the wire, or a
    DataSet/Template/array (not decoded). ``name``/``datatype`` None: an alias-only DATA metric
    that no alias table resolved."""

    name: str | None
    alias: int | None
    datatype: int | None
    value: MetricValue | None
    is_null: bool
    is_historical: bool
    timestamp: int | None
    properties: Mapping[str, MetricValue | None]


@dataclass(frozen=True, slots=True)
class ParsedPayload:
    seq: int | None
    timestamp: int | None
    metrics: tuple[ParsedMetric, ...]

    def by_name(self) -> dict[str, ParsedMetric]:
        return {metric.name: metric for metric in self.metrics if metric.name is not None}


def _read_properties(metric: Payload.Metric) -> dict[str, MetricValue | None]:
    if not metric.HasField("properties"):
        return {}
    props = metric.properties
    # Lenient on unequal lengths (the spec forbids them): one bad PropertySet from a foreign
    # node should not hide the metric's value.
    return {
        key: None if entry.is_null else _read_value(entry.type, entry)
        for key, entry in zip(props.keys, props.values, strict=False)
    }


def _known(code: int) -> int:
    """The code as a ``DataType`` when it is one (readable in reprs and logs), else as sent."""
    try:
        return DataType(code)
    except ValueError:
        return code


def _read_metric(metric: Payload.Metric, aliases: AliasTable) -> ParsedMetric:
    alias = metric.alias if metric.HasField("alias") else None
    name = metric.name if metric.HasField("name") else None
    datatype = _known(metric.datatype) if metric.HasField("datatype") else None
    if alias is not None and alias in aliases:
        known_name, known_type = aliases[alias]
        name = known_name if name is None else name
        datatype = known_type if datatype is None else datatype
    is_null = metric.is_null
    return ParsedMetric(
        name=name,
        alias=alias,
        datatype=datatype,
        value=None if is_null else _read_value(datatype, metric),
        is_null=is_null,
        is_historical=metric.is_historical,
        timestamp=metric.timestamp if metric.HasField("timestamp") else None,
        properties=_read_properties(metric),
    )


def parse(payload: bytes, aliases: AliasTable | None = None) -> ParsedPayload:
    """Decode a Sparkplug B payload. ``aliases`` (from ``aliases_of`` on the births) gives the
    names and datatypes of alias-only DATA metrics, without which signed ones read unsigned."""
    message = Payload()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from exc
    table: AliasTable = aliases or {}
    return ParsedPayload(
        seq=message.seq if message.HasField("seq") else None,
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        metrics=tuple(_read_metric(metric, table) for metric in message.metrics),
    )


def aliases_of(birth: ParsedPayload) -> dict[int, tuple[str, int]]:
    """alias -> (name, datatype) of an NBIRTH/DBIRTH, for ``parse`` of the DATA that follow."""
    return {
        metric.alias: (metric.name, metric.datatype)
        for metric in birth.metrics
        if metric.alias is not None and metric.name is not None and metric.datatype is not None
    }


def rebirth_requested(payload: bytes) -> bool:
    """Whether an NCMD asks for new births (``Node Control/Rebirth`` = true). Raises
    ``SparkplugError`` for bytes that are not Sparkplug B."""
    return any(
        metric.name == REBIRTH_METRIC and metric.value is True for metric in parse(payload).metrics
    )


# ---- session counters -----------------------------------------------------------------------


class SeqCounter:
    """The payload ``seq`` of one edge node: 0 on NBIRTH, then +1 (mod 256) on every message the
    node publishes (DBIRTH, NDATA, DDATA, DDEATH), whichever device it is about."""

    def __init__(self) -> None:
        self._next = 0

    def birth(self) -> int:
        """The NBIRTH's seq (0); the count restarts with every NBIRTH, rebirths included."""
        self._next = 1
        return 0

    def next(self) -> int:
        value = self._next
        self._next = (value + 1) % 256
        return value


class BdSeqStore:
    """The birth/death sequence number (0..255) kept in a file, so that a restarted gateway
    does not reuse the bdSeq of its previous session (a host would pair an old NDEATH with the
    new NBIRTH and mark a live node offline).

    The file holds the bdSeq of the next MQTT session. Missing, unreadable or garbage: 0 (the
    spec's start); a host only compares NDEATH to NBIRTH within a session, so restarting the
    count is safe, where refusing to connect would not be.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._current: int | None = None

    @property
    def current(self) -> int | None:
        """The bdSeq of the session being opened (last ``next_for_connect``), None before."""
        return self._current

    def next_for_connect(self) -> int:
        """The bdSeq for the next MQTT CONNECT: put it in the will's NDEATH and in the NBIRTH
        that follows (and in an NDEATH sent on purpose). The file moves on before it is
        returned, so a crash after CONNECT cannot hand the same bdSeq to the next session."""
        value = self._read()
        self._write((value + 1) % 256)
        self._current = value
        return value

    def _read(self) -> int:
        try:
            value = int(self._path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return 0
        return value if 0 <= value <= 255 else 0

    def _write(self, value: int) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self._path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(f"{value}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self._path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        # The rename itself is only durable once the directory entry is on disk.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ---- topics and host STATE ------------------------------------------------------------------


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


_DEVICE_TYPES = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)


def validate_id(value: str, what: str = "id") -> str:
    """A group, edge node, device or host id: a non-empty UTF-8 string without the MQTT
    separators and wildcards (``/ + #``) that would change which topics it names."""
    if not value:
        raise SparkplugError(f"{what} is empty")
    bad = sorted({char for char in value if char in "/+#\x00"})
    if bad:
        raise SparkplugError(f"{what} {value!r} contains {' '.join(map(repr, bad))}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise SparkplugError(f"{what} {value!r} is not valid UTF-8") from exc
    return value


def _message_type(value: MessageType | str) -> MessageType:
    try:
        return MessageType(value)
    except ValueError:
        raise SparkplugError(f"{value!r} is not a Sparkplug message type") from None


def topic(
    group_id: str,
    message_type: MessageType | str,
    edge_node_id: str,
    device_id: str | None = None,
) -> str:
    """``spBv1.0/{group}/{type}/{node}[/{device}]``; a device id exactly for the D* types."""
    kind = _message_type(message_type)
    if kind is MessageType.STATE:
        raise SparkplugError("STATE topics name a host: use state_topic()")
    parts = [NAMESPACE, validate_id(group_id, "group_id"), kind.value]
    parts.append(validate_id(edge_node_id, "edge_node_id"))
    if kind in _DEVICE_TYPES:
        if device_id is None:
            raise SparkplugError(f"{kind.value} needs a device_id")
        parts.append(validate_id(device_id, "device_id"))
    elif device_id is not None:
        raise SparkplugError(f"{kind.value} is an edge node message: no device_id")
    return "/".join(parts)


def state_topic(host_id: str) -> str:
    """Sparkplug 3.0 host application state: ``spBv1.0/STATE/{host_id}``."""
    return f"{NAMESPACE}/STATE/{validate_id(host_id, 'host_id')}"


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None


def parse_topic(name: str) -> SparkplugTopic:
    """The parts of an edge node topic (not STATE); ``SparkplugError`` for anything else."""
    parts = name.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise SparkplugError(f"{name!r} is not a Sparkplug B edge node topic")
    device_id = parts[4] if len(parts) == 5 else None
    topic(parts[1], parts[2], parts[3], device_id)  # validates the ids, the type and the device
    return SparkplugTopic(parts[1], MessageType(parts[2]), parts[3], device_id)


@dataclass(frozen=True, slots=True)
class HostState:
    """A host application's STATE (retained, JSON): online and the time of its session."""

    online: bool
    timestamp: int


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """The STATE JSON a host publishes (for tests that play the host)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode("utf-8")


def parse_state(payload: bytes) -> HostState:
    """Read a host's STATE message: ``{"online": bool, "timestamp": int}``."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SparkplugError(f"STATE is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise SparkplugError("STATE is not a JSON object")
    online = document.get("online")
    stamp = document.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugError(f"STATE online is not a boolean ({online!r})")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise SparkplugError(f"STATE timestamp is not an integer ({stamp!r})")
    return HostState(online, stamp)
