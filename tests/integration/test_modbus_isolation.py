"""Isolation between units sharing one connection: a dead unit backs off without delaying the
healthy ones, each unit polls at its own rate, and the line carries one request at a time."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from typing import Any

import pytest
from modbus_faults import ModbusFaultProxy
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, expected_values
from bridge.types import Quality, SourceTag, TagSample

FROZEN = 3600.0
T = 99.0


def tags_of(
    unit: int, tables: tuple[str, ...] = ("holding", "input", "coil", "discrete")
) -> list[SourceTag]:
    return [
        SourceTag(
            f"u{unit}.{s.name}",
            ModbusAddress(
                table=s.table, address=s.address, type=s.type, word_order=s.word_order, unit=unit
            ),
        )
        for s in REGISTER_MAP
        if s.table in tables
    ]


def settings(port: int, **changes: Any) -> ModbusSourceSettings:
    return ModbusSourceSettings.model_validate({"host": LOOPBACK, "port": port, **changes})


@pytest.mark.serial
async def test_dead_unit_backs_off_and_healthy_units_keep_their_rates() -> None:
    plc = PlcSimulator(
        port=free_port(), update_interval_s=FROZEN, more_units=(2,), silent_units=True
    )
    await plc.start()
    await plc.apply(T)
    s = settings(
        plc.port,
        timeout_s=0.2,
        devices=[
            {"unit": 1, "poll_interval_ms": 50},
            {"unit": 2, "poll_interval_ms": 200},
            {"unit": 3, "poll_interval_ms": 50},  # unit 3 does not exist: never answers
        ],
        breaker_failures=2,
        breaker_backoff_s=0.5,
        breaker_max_backoff_s=2.0,
    )
    source = ModbusSource(
        "line", s, tags_of(1) + tags_of(2, ("holding",)) + tags_of(3, ("holding",))
    )
    truth = expected_values(T)
    polls: Counter[int] = Counter()
    reasons3: set[str] = set()

    def check(batch: list[TagSample]) -> None:
        units = {int(x.tag[1]) for x in batch}
        assert len(units) == 1, "one batch is one poll of one unit"
        (unit,) = units
        polls[unit] += 1
        for x in batch:
            if unit == 3:
                assert x.quality is Quality.BAD and x.value is None
                reasons3.add(x.reason.split(" ")[0])
            else:
                assert x.quality is Quality.GOOD, (x.tag, x.reason)
                assert x.value == pytest.approx(truth[x.tag.split(".", 1)[1]])

    try:
        await source.connect()
        async with asyncio.timeout(30):
            async for batch in source.samples():
                check(batch)
                if polls[1] >= 40:
                    break
    finally:
        await source.close()
        await plc.stop()
    unit3_requests = sum(1 for r in plc.requests if r.unit == 3)
    assert source.counters["breaker_opened"] >= 1
    assert reasons3 == {"no", "unit"}  # "no valid reply ..." then "unit 3 skipped ..."
    # Backing off: 2 failures open the breaker, then one probe per 0.5, 1, 2, 2... s.
    assert 2 <= unit3_requests <= 8, unit3_requests
    # Each unit at its own rate (50 ms vs 200 ms): about 4 polls of unit 1 per poll of unit 2.
    assert polls[1] > 2 * polls[2] >= 2


async def test_one_request_in_flight_even_with_two_callers() -> None:
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN, more_units=(2,))
    await plc.start()
    await plc.apply(T)
    # No request ever times out here, so any request sent before the previous one was
    # answered is pipelining.
    proxy = ModbusFaultProxy(plc.port, lambda unit, fc: None, patience_s=60.0)
    await proxy.start()
    s = settings(proxy.port, timeout_s=5.0, poll_interval_ms=10)
    source = ModbusSource("line", s, tags_of(1) + tags_of(2))
    batches = 0

    async def stream() -> None:
        nonlocal batches
        async for _ in source.samples():
            batches += 1

    try:
        await source.connect()
        task = asyncio.create_task(stream())
        try:
            for _ in range(30):  # a second caller on the same source (e.g. `bridge verify`)
                for x in await source.poll():
                    assert x.quality is Quality.GOOD
            await wait_until(lambda: batches >= 30, timeout=20, what="30 streamed polls")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await source.close()
        await proxy.stop()
        await plc.stop()
    assert proxy.passed >= 30 * 8
    assert proxy.pipelined == 0


async def test_the_pipelining_check_sees_pipelining() -> None:
    """The counter above is not blind: two requests sent back to back are counted."""
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN)
    await plc.start()
    proxy = ModbusFaultProxy(plc.port, lambda unit, fc: None, patience_s=60.0)
    await proxy.start()
    request = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 2)
    try:
        with socket.create_connection((LOOPBACK, proxy.port), timeout=5) as sock:
            sock.sendall(request + request)
            await wait_until(lambda: proxy.passed >= 2, timeout=5, what="two replies")
    finally:
        await proxy.stop()
        await plc.stop()
    assert proxy.pipelined == 1
