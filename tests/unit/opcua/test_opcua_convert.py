"""Pure OPC UA conversions: status -> quality, variants -> values, nsu parsing. No sockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asyncua import ua

from bridge.connectors.opcua.convert import (
    data_value_to_sample_parts,
    datetime_to_epoch,
    node_id_for,
    parse_nsu,
    quality_of,
    variant_to_value,
)
from bridge.types import Quality

S = ua.StatusCodes


@pytest.mark.parametrize(
    ("code", "quality", "reason"),
    [
        (S.Good, Quality.GOOD, ""),
        (S.GoodClamped, Quality.GOOD, ""),
        (S.UncertainLastUsableValue, Quality.UNCERTAIN, "UncertainLastUsableValue"),
        (S.UncertainSensorNotAccurate, Quality.UNCERTAIN, "UncertainSensorNotAccurate"),
        (S.BadNodeIdUnknown, Quality.BAD, "BadNodeIdUnknown"),
        (S.BadNoCommunication, Quality.BAD, "BadNoCommunication"),
        (S.BadSessionIdInvalid, Quality.BAD, "BadSessionIdInvalid"),
        # Info bits in the low word (here: overflow) do not change the name.
        (S.UncertainLastUsableValue | 0x0480, Quality.UNCERTAIN, "UncertainLastUsableValue"),
        # Severity 11 is reserved and must be treated as Bad.
        (0xC0000000, Quality.BAD, "Bad (0xC0000000)"),
        (0x80FF0000, Quality.BAD, "Bad (0x80FF0000)"),
        (0x40FF0000, Quality.UNCERTAIN, "Uncertain"),
    ],
)
def test_status_code_to_quality(code: int, quality: Quality, reason: str) -> None:
    assert quality_of(ua.StatusCode(code)) == (quality, reason)


def test_missing_status_is_good() -> None:
    assert quality_of(None) == (Quality.GOOD, "")


@pytest.mark.parametrize(
    ("text", "uri", "kind", "ident"),
    [
        (
            "nsu=urn:bridge:sim:plant;s=Pump01.Vibration",
            "urn:bridge:sim:plant",
            "s",
            "Pump01.Vibration",
        ),
        ("nsu=http://example.com/UA/;i=1001", "http://example.com/UA/", "i", "1001"),
        ("nsu=urn:x;s=a;b=c", "urn:x", "s", "a;b=c"),
        (
            "nsu=urn:x;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "urn:x",
            "g",
            "09087e75-8e5e-499b-954f-f2a9603db28a",
        ),
        ("nsu=urn:x;b=AQID", "urn:x", "b", "AQID"),
    ],
)
def test_parse_nsu(text: str, uri: str, kind: str, ident: str) -> None:
    ref = parse_nsu(text)
    assert (ref.uri, ref.kind, ref.identifier) == (uri, kind, ident)
    assert ref.identifier_part == f"{kind}={ident}"


def test_namespace_index_is_rejected_with_hint() -> None:
    with pytest.raises(ValueError, match="namespace URI") as info:
        parse_nsu("ns=2;s=Pump01.Vibration")
    assert "restart" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "s=Pump01",
        "nsu=;s=x",
        "nsu=urn:x;q=1",
        "nsu=urn:x;i=abc",
        "nsu=urn:x;g=nope",
        "nsu=urn:x;s=",
    ],
)
def test_malformed_node_ids_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nsu(text)


def test_node_id_uses_the_session_index() -> None:
    assert node_id_for(parse_nsu("nsu=urn:x;s=A.B"), 5) == ua.NodeId("A.B", 5)
    numeric = node_id_for(parse_nsu("nsu=urn:x;i=70000"), 7)
    assert numeric.Identifier == 70000 and numeric.NamespaceIndex == 7
    guid = node_id_for(parse_nsu("nsu=urn:x;g=09087e75-8e5e-499b-954f-f2a9603db28a"), 2)
    assert guid.Identifier == uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")
    assert node_id_for(parse_nsu("nsu=urn:x;b=AQID"), 2).Identifier == b"\x01\x02\x03"


V = ua.VariantType


@pytest.mark.parametrize(
    ("variant", "value", "quality"),
    [
        (ua.Variant(True, V.Boolean), True, Quality.GOOD),
        (ua.Variant(-5, V.Int16), -5, Quality.GOOD),
        (ua.Variant(2**40, V.UInt64), 2**40, Quality.GOOD),
        (ua.Variant(200, V.Byte), 200, Quality.GOOD),
        (ua.Variant(1.5, V.Float), 1.5, Quality.GOOD),
        (ua.Variant(2.25, V.Double), 2.25, Quality.GOOD),
        (ua.Variant("run", V.String), "run", Quality.GOOD),
        (ua.Variant(ua.LocalizedText("hi"), V.LocalizedText), "hi", Quality.GOOD),
        (ua.Variant(datetime(2024, 1, 1, tzinfo=UTC), V.DateTime), 1704067200.0, Quality.GOOD),
        (ua.Variant([1.0, 2.0], V.Double), None, Quality.BAD),
        (ua.Variant(b"\x00", V.ByteString), None, Quality.BAD),
        (ua.Variant(ua.NodeId(5, 1), V.NodeId), None, Quality.BAD),
        (ua.Variant(), None, Quality.BAD),
        (None, None, Quality.BAD),
    ],
)
def test_variant_conversion(variant: ua.Variant | None, value: object, quality: Quality) -> None:
    converted = variant_to_value(variant)
    assert converted.value == value
    assert type(converted.value) is type(value)
    assert converted.quality is quality
    assert (converted.reason == "") is (quality is Quality.GOOD)


def test_datetimes_become_epoch_seconds() -> None:
    assert datetime_to_epoch(datetime(1970, 1, 1, 0, 0, 10, tzinfo=UTC)) == 10.0
    assert datetime_to_epoch(datetime(1970, 1, 1, 0, 0, 10)) == 10.0  # naive = UTC
    plus_one = timezone(timedelta(hours=1))
    assert datetime_to_epoch(datetime(1970, 1, 1, 1, 0, 10, tzinfo=plus_one)) == 10.0
    assert datetime_to_epoch(datetime(1601, 1, 1)) is None  # OPC UA "no timestamp"
    assert datetime_to_epoch(None) is None


def test_data_value_keeps_both_timestamps_and_worst_quality() -> None:
    src = datetime(2024, 1, 1, tzinfo=UTC)
    srv = src + timedelta(seconds=1)
    dv = ua.DataValue(
        ua.Variant(3.5, V.Double),
        StatusCode=ua.StatusCode(S.UncertainLastUsableValue),
        SourceTimestamp=src,
        ServerTimestamp=srv,
    )
    assert data_value_to_sample_parts(dv) == (
        3.5,
        Quality.UNCERTAIN,
        "UncertainLastUsableValue",
        src.timestamp(),
        srv.timestamp(),
    )
    bad = ua.DataValue(ua.Variant(1.0, V.Double), StatusCode=ua.StatusCode(S.BadSensorFailure))
    assert data_value_to_sample_parts(bad)[:3] == (None, Quality.BAD, "BadSensorFailure")
    array = ua.DataValue(ua.Variant([1, 2], V.Int32))
    value, quality, reason, *_ = data_value_to_sample_parts(array)
    assert (value, quality) == (None, Quality.BAD) and "array" in reason
