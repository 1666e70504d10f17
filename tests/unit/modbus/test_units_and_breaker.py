"""Several units per source (planning, settings), the per-unit circuit breaker, transaction-id
checks and the wider types (bit fields, strings, 64-bit) inside read blocks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.connectors.modbus.breaker import Breaker
from bridge.connectors.modbus.codec import encode, encode_string
from bridge.connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from bridge.connectors.modbus.plan import plan_reads
from bridge.connectors.modbus.reply import BadReply, Reply, block_values


def addr(**kw: Any) -> ModbusAddress:
    return ModbusAddress.model_validate({"table": "holding", **kw})


def test_blocks_are_planned_per_unit_never_across_units() -> None:
    tags = [
        ("a", addr(address=0)),
        ("b", addr(address=1, unit=2)),
        ("c", addr(address=2)),
        ("d", addr(address=3, unit=2)),
        ("e", addr(address=4, unit=1)),  # unit 1 named explicitly = the default unit here
    ]
    blocks = plan_reads(tags, max_gap=10, max_registers_per_read=125, default_unit=1)
    assert [(b.unit, b.start, b.count, [p.tag for p in b.tags]) for b in blocks] == [
        (1, 0, 5, ["a", "c", "e"]),
        (2, 1, 3, ["b", "d"]),
    ]


def test_sixty_four_bit_strings_and_bit_fields_in_one_block() -> None:
    tags = [
        ("status_run", addr(address=0, bit=0)),
        ("status_mode", addr(address=0, bit=4, bits=3)),
        ("total", addr(address=1, type="uint64", word_order="CDAB")),
        ("energy", addr(address=5, type="float64", word_order="BADC")),
        ("serial", addr(address=9, type="string", length=5)),
    ]
    (block,) = plan_reads(tags, max_gap=0, max_registers_per_read=125)
    assert block.count == 12
    words = [
        0b0000_0000_0101_0001,
        *encode(2**40 + 3, "uint64", "CDAB"),
        *encode(-0.5, "float64", "BADC"),
        *encode_string("SN-42", 5),
    ]
    values = dict(block_values(block, Reply(3, 1, registers=words)))
    assert values == {
        "status_run": True,
        "status_mode": 5,
        "total": 2**40 + 3,
        "energy": -0.5,
        "serial": "SN-42",
    }


@pytest.mark.parametrize(("tid", "request_tid"), [(0, 17), (16, 17), (18, 17)])
def test_reply_with_another_transaction_id_is_rejected(tid: int, request_tid: int) -> None:
    (block,) = plan_reads([("a", addr(address=0))], max_gap=0, max_registers_per_read=125)
    reply = Reply(3, 1, registers=[7], transaction_id=tid, request_transaction_id=request_tid)
    with pytest.raises(BadReply, match="transaction id"):
        block_values(block, reply)
    ok = Reply(3, 1, registers=[7], transaction_id=request_tid, request_transaction_id=request_tid)
    assert block_values(block, ok) == [("a", 7)]


def test_reply_from_another_unit_than_the_blocks_is_rejected() -> None:
    (block,) = plan_reads([("a", addr(address=0, unit=5))], max_gap=0, max_registers_per_read=9)
    with pytest.raises(BadReply, match="unit 4, expected unit 5"):
        block_values(block, Reply(3, 4, registers=[7]))


def test_breaker_opens_after_failures_backs_off_doubling_and_closes_on_success() -> None:
    b = Breaker(failures=2, backoff_s=1.0, max_backoff_s=3.0)
    assert not b.failure(0.0) and not b.is_open(0.0)
    assert b.failure(0.0) and b.is_open(0.5) and not b.is_open(1.0)
    assert b.failure(1.0) and b.open_until == 3.0  # failed probe: twice as long
    assert b.failure(3.0) and b.open_until == 6.0  # capped at 3 s
    assert b.opened == 3
    b.success()
    assert not b.is_open(6.0) and b.failed_in_a_row == 0
    assert not b.failure(10.0)  # counting starts again
    assert b.failure(10.0) and b.open_until == 11.0  # and the backoff is back to 1 s


def test_device_rates_and_transport_settings() -> None:
    s = ModbusSourceSettings.model_validate(
        {"host": "gw", "poll_interval_ms": 500, "devices": [{"unit": 7, "poll_interval_ms": 50}]}
    )
    assert (s.interval_s(7), s.interval_s(1)) == (0.05, 0.5)
    rtu = ModbusSourceSettings.model_validate(
        {"transport": "rtu", "serial": {"port": "/dev/ttyUSB0"}}
    )
    assert rtu.serial is not None and (rtu.serial.baudrate, rtu.serial.parity) == (19200, "E")


@pytest.mark.parametrize(
    "data",
    [
        {"transport": "rtu", "host": "gw"},  # no serial line
        {"transport": "rtu-over-tcp"},  # no host
        {"host": "gw", "devices": [{"unit": 1, "poll_interval_ms": 50}] * 2},
        {"host": "gw", "devices": [{"unit": 1, "poll_interval_ms": 5}]},
        {"transport": "rtu", "serial": {"port": "/dev/x", "parity": "X"}},
    ],
)
def test_settings_reject(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModbusSourceSettings.model_validate(data)


def test_expect_shorthand_and_full_form() -> None:
    assert addr(address=0, expect=12).expect is not None
    a = addr(address=0, type="float32", expect={"value": 6.5, "tolerance": 0.01})
    assert a.expect is not None and (a.expect.value, a.expect.tolerance) == (6.5, 0.01)
