"""Sparkplug B codec: round trips for every scalar datatype, checked against the raw protobuf
message (the wire a host reads, not just our own reading of it), plus the session rules: NBIRTH
and NDEATH bdSeq, seq 0..255, alias-only DATA, rebirth requests, topics and host STATE."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.connectors.mqtt.sparkplug.codec import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    BdSeqStore,
    DataType,
    DataValue,
    HostState,
    MessageType,
    MetricSpec,
    MetricValue,
    SeqCounter,
    SparkplugError,
    SparkplugTopic,
    aliases_of,
    data_payload,
    datatype_for,
    device_birth,
    node_birth,
    node_death_payload,
    parse,
    parse_state,
    parse_topic,
    rebirth_command,
    rebirth_requested,
    state_payload,
    state_topic,
    topic,
)
from bridge.connectors.mqtt.sparkplug.sparkplug_b_pb2 import Payload

T0 = 1_700_000_000_000

# (datatype, value, the oneof field a host finds it in, the raw number/value on the wire).
# Wire values written by hand: two's complement sign-extended to the field's 32 or 64 bits.
CASES: list[tuple[DataType, MetricValue, str, MetricValue]] = [
    (DataType.INT8, -128, "int_value", 0xFFFF_FF80),
    (DataType.INT8, 127, "int_value", 127),
    (DataType.INT16, -87, "int_value", 0xFFFF_FFA9),
    (DataType.INT16, 32767, "int_value", 32767),
    (DataType.INT32, -(2**31), "int_value", 0x8000_0000),
    (DataType.INT32, 2**31 - 1, "int_value", 0x7FFF_FFFF),
    (DataType.INT64, -1, "long_value", 2**64 - 1),
    (DataType.INT64, 2**63 - 1, "long_value", 2**63 - 1),
    (DataType.UINT8, 255, "int_value", 255),
    (DataType.UINT16, 65535, "int_value", 65535),
    (DataType.UINT32, 2**32 - 1, "int_value", 2**32 - 1),
    (DataType.UINT64, 2**64 - 1, "long_value", 2**64 - 1),
    (DataType.FLOAT, 1.5, "float_value", 1.5),
    (DataType.DOUBLE, 0.1, "double_value", 0.1),
    (DataType.BOOLEAN, True, "boolean_value", True),
    (DataType.BOOLEAN, False, "boolean_value", False),
    (DataType.STRING, "Pumpe 1 – Druck", "string_value", "Pumpe 1 – Druck"),
    (DataType.DATETIME, T0 + 123, "long_value", T0 + 123),
    (DataType.TEXT, "a longer\ntext", "string_value", "a longer\ntext"),
    (
        DataType.UUID,
        "0b2a3e1c-6f7d-4a51-9a43-2f3c1e5d7b88",
        "string_value",
        "0b2a3e1c-6f7d-4a51-9a43-2f3c1e5d7b88",
    ),
    (DataType.BYTES, b"\x00\xff\x10", "bytes_value", b"\x00\xff\x10"),
    (DataType.FILE, b"%PDF-1.7", "bytes_value", b"%PDF-1.7"),
]


def raw(payload: bytes) -> Payload:
    message = Payload()
    message.ParseFromString(payload)
    return message


def only_user_metric(payload: bytes) -> Payload.Metric:
    metrics = [m for m in raw(payload).metrics if m.name not in (BDSEQ_METRIC, REBIRTH_METRIC)]
    assert len(metrics) == 1
    return metrics[0]


# ---- datatypes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("datatype", "value", "field", "wire"), CASES)
def test_every_datatype_round_trips_through_a_birth(
    datatype: DataType, value: MetricValue, field: str, wire: MetricValue
) -> None:
    spec = MetricSpec("Line1/Tag", 7, datatype)
    payload = device_birth(3, T0, [(spec, value)])

    metric = only_user_metric(payload)
    assert metric.datatype == datatype
    assert metric.WhichOneof("value") == field
    assert getattr(metric, field) == wire

    parsed = parse(payload).by_name()["Line1/Tag"]
    assert parsed.value == value
    assert type(parsed.value) is type(value)
    assert parsed.datatype == datatype
    assert parsed.alias == 7
    assert not parsed.is_null


@pytest.mark.parametrize(("datatype", "value", "field", "wire"), CASES)
def test_every_datatype_round_trips_through_alias_only_data(
    datatype: DataType, value: MetricValue, field: str, wire: MetricValue
) -> None:
    birth = parse(device_birth(0, T0, [(MetricSpec("Tag", 42, datatype), None)]))
    payload = data_payload(1, T0 + 1, [DataValue(42, datatype, value)])

    assert raw(payload).metrics[0].WhichOneof("value") == field
    parsed = parse(payload, aliases_of(birth)).metrics[0]
    assert (parsed.name, parsed.alias, parsed.datatype) == ("Tag", 42, datatype)
    assert parsed.value == value
    assert type(parsed.value) is type(value)


def test_signed_ints_masked_to_their_width_by_another_sender_read_the_same() -> None:
    message = Payload()
    for alias, code, wire in ((1, DataType.INT16, 0xFFA9), (2, DataType.INT8, 0xFF)):
        metric = message.metrics.add()
        metric.name = f"m{alias}"
        metric.datatype = code
        metric.int_value = wire
    values = {m.name: m.value for m in parse(message.SerializeToString()).metrics}
    assert values == {"m1": -87, "m2": -1}


def test_alias_only_data_without_a_birth_reads_the_raw_unsigned_wire_value() -> None:
    payload = data_payload(1, T0, [DataValue(5, DataType.INT32, -2)])
    metric = parse(payload).metrics[0]
    assert (metric.name, metric.datatype, metric.value) == (None, None, 2**32 - 2)


def test_datetime_values_travel_as_epoch_milliseconds() -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    payload = data_payload(1, T0, [DataValue(1, DataType.DATETIME, when)])
    assert raw(payload).metrics[0].long_value == 1_714_557_600_250
    with pytest.raises(SparkplugError, match="aware"):
        data_payload(1, T0, [DataValue(1, DataType.DATETIME, datetime(2024, 5, 1))])


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        (DataType.INT8, 128, "out of range"),
        (DataType.INT8, -129, "out of range"),
        (DataType.INT64, 2**63, "out of range"),
        (DataType.UINT8, 256, "out of range"),
        (DataType.UINT32, -1, "out of range"),
        (DataType.UINT64, 2**64, "out of range"),
        (DataType.INT32, True, "needs an int"),
        (DataType.INT32, 1.0, "needs an int"),
        (DataType.DOUBLE, False, "needs a number"),
        (DataType.DOUBLE, "1.0", "needs a number"),
        (DataType.FLOAT, 1e39, "out of range for Float"),
        (DataType.BOOLEAN, 1, "cannot carry"),
        (DataType.STRING, 5, "cannot carry"),
        (DataType.BYTES, "text", "cannot carry"),
    ],
)
def test_values_a_datatype_cannot_carry_are_refused(
    datatype: DataType, value: object, message: str
) -> None:
    with pytest.raises(SparkplugError, match=message):
        data_payload(1, T0, [DataValue(1, datatype, value)])  # type: ignore[arg-type]


def test_datatypes_without_an_encoding_are_refused_at_the_spec() -> None:
    for datatype in (DataType.DATASET, DataType.TEMPLATE, DataType.INT8_ARRAY, DataType.UNKNOWN):
        with pytest.raises(SparkplugError, match="not supported"):
            MetricSpec("x", 1, datatype)


def test_gateway_values_map_to_the_widest_datatype_of_their_kind() -> None:
    assert datatype_for(True) is DataType.BOOLEAN
    assert datatype_for(3) is DataType.INT64
    assert datatype_for(3.5) is DataType.DOUBLE
    assert datatype_for("on") is DataType.STRING
    assert datatype_for(b"\x01") is DataType.BYTES
    with pytest.raises(SparkplugError):
        datatype_for(None)  # type: ignore[arg-type]


# ---- nulls, properties, historical ----------------------------------------------------------


def test_null_values_are_explicit_and_keep_their_datatype() -> None:
    spec = MetricSpec("Flow", 3, DataType.DOUBLE)
    metric = only_user_metric(node_birth(0, T0, [(spec, None)], bdseq=0))
    assert metric.is_null
    assert metric.WhichOneof("value") is None
    assert metric.datatype == DataType.DOUBLE

    data = data_payload(1, T0, [DataValue(3, DataType.DOUBLE, None)])
    assert raw(data).metrics[0].is_null
    parsed = parse(data).metrics[0]
    assert parsed.is_null
    assert parsed.value is None


def test_properties_become_a_typed_property_set() -> None:
    spec = MetricSpec(
        "Pressure",
        1,
        DataType.FLOAT,
        {"engUnit": "bar", "engLow": 0.0, "engHigh": 16, "writable": False},
    )
    metric = only_user_metric(node_birth(0, T0, [(spec, 2.5)], bdseq=0))
    assert list(metric.properties.keys) == ["engUnit", "engLow", "engHigh", "writable"]
    types = [value.type for value in metric.properties.values]
    assert types == [DataType.STRING, DataType.DOUBLE, DataType.INT64, DataType.BOOLEAN]
    assert metric.properties.values[0].string_value == "bar"

    parsed = parse(node_birth(0, T0, [(spec, 2.5)], bdseq=0)).by_name()["Pressure"]
    assert parsed.properties == {
        "engUnit": "bar",
        "engLow": 0.0,
        "engHigh": 16,
        "writable": False,
    }
    assert parsed.value == 2.5


def test_bytes_cannot_be_a_property() -> None:
    spec = MetricSpec("x", 1, DataType.INT32, {"blob": b"\x00"})  # type: ignore[dict-item]
    with pytest.raises(SparkplugError, match="property"):
        device_birth(1, T0, [(spec, 1)])


def test_data_is_by_alias_only_with_own_or_payload_timestamps_and_historical_flags() -> None:
    payload = data_payload(
        9,
        T0,
        [
            DataValue(1, DataType.INT32, 10),
            DataValue(2, DataType.DOUBLE, 1.25, timestamp_ms=T0 - 60_000, is_historical=True),
        ],
    )
    message = raw(payload)
    assert (message.seq, message.timestamp) == (9, T0)
    for metric in message.metrics:
        assert not metric.HasField("name")
        assert not metric.HasField("datatype")  # the spec: DATA should not repeat it
    live, old = parse(payload).metrics
    assert (live.alias, live.timestamp, live.is_historical) == (1, T0, False)
    assert (old.alias, old.timestamp, old.is_historical) == (2, T0 - 60_000, True)
    assert old.value == 1.25


# ---- births and deaths ----------------------------------------------------------------------


def test_node_birth_carries_bdseq_rebirth_and_every_metric_with_name_and_alias() -> None:
    specs = [
        (MetricSpec("Pump/Speed", 1, DataType.FLOAT, {"engUnit": "rpm"}), 1450.0),
        (MetricSpec("Pump/Running", 2, DataType.BOOLEAN), True),
    ]
    message = raw(node_birth(0, T0, specs, bdseq=17))
    assert message.HasField("seq")
    assert (message.seq, message.timestamp) == (0, T0)
    bdseq, rebirth, speed, running = message.metrics
    assert (bdseq.name, bdseq.datatype, bdseq.long_value) == (BDSEQ_METRIC, DataType.UINT64, 17)
    assert (rebirth.name, rebirth.datatype) == (REBIRTH_METRIC, DataType.BOOLEAN)
    assert rebirth.WhichOneof("value") == "boolean_value"
    assert rebirth.boolean_value is False
    assert (speed.name, speed.alias, speed.float_value, speed.timestamp) == (
        "Pump/Speed",
        1,
        1450.0,
        T0,
    )
    assert (running.name, running.alias, running.boolean_value) == ("Pump/Running", 2, True)


def test_device_birth_has_no_node_session_metrics() -> None:
    payload = device_birth(5, T0, [(MetricSpec("Temp", 1, DataType.DOUBLE), 21.5)])
    parsed = parse(payload)
    assert parsed.seq == 5
    assert [metric.name for metric in parsed.metrics] == ["Temp"]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([(MetricSpec(BDSEQ_METRIC, 1, DataType.INT64), 1)], "reserved"),
        ([(MetricSpec(REBIRTH_METRIC, 1, DataType.BOOLEAN), True)], "reserved"),
        (
            [(MetricSpec("a", 1, DataType.INT32), 1), (MetricSpec("b", 1, DataType.INT32), 2)],
            "alias 1",
        ),
        (
            [(MetricSpec("a", 1, DataType.INT32), 1), (MetricSpec("a", 2, DataType.INT32), 2)],
            "used twice",
        ),
    ],
)
def test_node_birth_refuses_reserved_names_and_duplicates(
    metrics: list[tuple[MetricSpec, MetricValue]], message: str
) -> None:
    with pytest.raises(SparkplugError, match=message):
        node_birth(0, T0, metrics, bdseq=0)


def test_node_birth_refuses_a_seq_other_than_zero_and_a_bdseq_over_255() -> None:
    with pytest.raises(SparkplugError, match="seq 0"):
        node_birth(4, T0, [], bdseq=0)
    with pytest.raises(SparkplugError, match="bdSeq 256"):
        node_birth(0, T0, [], bdseq=256)
    with pytest.raises(SparkplugError, match="seq 256"):
        data_payload(256, T0, [])


def test_node_death_is_the_bdseq_of_the_last_birth_and_has_no_seq(tmp_path: Path) -> None:
    store = BdSeqStore(tmp_path / "bdseq")
    store.next_for_connect()  # an earlier session
    bdseq = store.next_for_connect()
    will = node_death_payload(bdseq)
    assert store.current == bdseq
    birth = node_birth(SeqCounter().birth(), T0, [], bdseq=bdseq)

    death = raw(will)
    assert not death.HasField("seq")
    assert not death.HasField("timestamp")
    assert [metric.name for metric in death.metrics] == [BDSEQ_METRIC]
    assert death.metrics[0].datatype == DataType.UINT64
    birth_bdseq = parse(birth).by_name()[BDSEQ_METRIC].value
    assert parse(will).by_name()[BDSEQ_METRIC].value == birth_bdseq == bdseq == 1

    on_purpose = raw(node_death_payload(bdseq, timestamp_ms=T0))
    assert on_purpose.timestamp == T0
    assert not on_purpose.HasField("seq")


# ---- rebirth --------------------------------------------------------------------------------


def test_a_rebirth_command_is_recognised() -> None:
    assert rebirth_requested(rebirth_command(T0))


def _ncmd(name: str, value: bool) -> bytes:
    message = Payload()
    message.timestamp = T0
    metric = message.metrics.add()
    metric.name = name
    metric.datatype = DataType.BOOLEAN
    metric.boolean_value = value
    return message.SerializeToString()


def test_other_commands_are_not_rebirth_requests() -> None:
    assert not rebirth_requested(_ncmd(REBIRTH_METRIC, False))
    assert not rebirth_requested(_ncmd("Node Control/Reboot", True))
    # the NBIRTH's own Rebirth metric is false
    assert not rebirth_requested(node_birth(0, T0, [], bdseq=0))


def test_garbage_is_not_sparkplug() -> None:
    with pytest.raises(SparkplugError):
        parse(b"\xff\xff\xff")
    with pytest.raises(SparkplugError):
        rebirth_requested(b"\x0a\x05abc")


# ---- seq and bdSeq --------------------------------------------------------------------------


def test_seq_starts_at_zero_on_birth_and_wraps_after_255() -> None:
    counter = SeqCounter()
    assert counter.birth() == 0
    seen = [counter.next() for _ in range(256)]
    assert seen[:3] == [1, 2, 3]
    assert seen[254] == 255
    assert seen[255] == 0
    assert counter.next() == 1
    assert counter.birth() == 0  # a rebirth restarts the count
    assert counter.next() == 1


def test_bdseq_survives_restarts_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bdseq"
    first = BdSeqStore(path)
    assert first.current is None
    assert [first.next_for_connect() for _ in range(3)] == [0, 1, 2]
    assert first.current == 2

    restarted = BdSeqStore(path)  # a new process on the same file
    assert restarted.next_for_connect() == 3
    assert path.read_text().strip() == "4"

    path.write_text("255\n")
    wrapping = BdSeqStore(path)
    assert [wrapping.next_for_connect() for _ in range(2)] == [255, 0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["bdseq"]  # no temp files left


@pytest.mark.parametrize("content", ["", "garbage", "-1", "256"])
def test_an_unreadable_bdseq_path_starts_again_at_zero(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bdseq"
    path.write_text(content)
    store = BdSeqStore(path)
    assert store.next_for_connect() == 0
    assert BdSeqStore(path).next_for_connect() == 1


# ---- topics and STATE -----------------------------------------------------------------------


def test_topics() -> None:
    assert topic("Plant1", MessageType.NBIRTH, "gw-1") == "spBv1.0/Plant1/NBIRTH/gw-1"
    assert topic("Plant1", "NDATA", "gw-1") == "spBv1.0/Plant1/NDATA/gw-1"
    assert topic("Plant1", "DDATA", "gw-1", "pump 7") == "spBv1.0/Plant1/DDATA/gw-1/pump 7"
    assert state_topic("scada-a") == "spBv1.0/STATE/scada-a"
    assert parse_topic("spBv1.0/Plant1/DBIRTH/gw-1/pump7") == SparkplugTopic(
        "Plant1", MessageType.DBIRTH, "gw-1", "pump7"
    )
    assert parse_topic("spBv1.0/G/NCMD/N") == SparkplugTopic("G", MessageType.NCMD, "N")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Plant/1", "NDATA", "gw"), "group_id"),
        (("Plant1", "NDATA", "gw+"), "edge_node_id"),
        (("Plant1", "DDATA", "gw", "dev#"), "device_id"),
        (("", "NDATA", "gw"), "empty"),
        (("Plant1", "NDATA", "gw", "dev"), "no device_id"),
        (("Plant1", "DBIRTH", "gw"), "needs a device_id"),
        (("Plant1", "STATE", "gw"), "state_topic"),
        (("Plant1", "NBORN", "gw"), "not a Sparkplug message type"),
    ],
)
def test_invalid_topics_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(SparkplugError, match=message):
        topic(*args)


def test_invalid_host_ids_and_foreign_topics_are_refused() -> None:
    with pytest.raises(SparkplugError, match="host_id"):
        state_topic("a/b")
    for name in ("spBv1.0/G/NDATA", "spAv1.0/G/NDATA/N", "spBv1.0/G/NDATA/N/D", "x/y/z/w/v/u"):
        with pytest.raises(SparkplugError):
            parse_topic(name)


def test_host_state_round_trips_and_bad_documents_are_refused() -> None:
    assert parse_state(state_payload(True, T0)) == HostState(True, T0)
    assert parse_state(b'{"online": false, "timestamp": 5}') == HostState(False, 5)
    for bad in (
        b"not json",
        b"[]",
        b'{"online": "yes", "timestamp": 5}',
        b'{"online": true, "timestamp": true}',
        b'{"online": true}',
    ):
        with pytest.raises(SparkplugError):
            parse_state(bad)
