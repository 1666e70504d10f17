"""The Modbus source over its three transports against the pymodbus-based PLC simulator:
Modbus TCP, RTU frames over TCP, and RTU on a serial line (a socat pty pair, no hardware)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, expected_values
from bridge.types import Quality, SourceTag, TagSample

FROZEN = 3600.0


def mapped_tags(unit: int | None = None) -> list[SourceTag]:
    prefix = "" if unit is None else f"u{unit}."
    return [
        SourceTag(
            prefix + s.name,
            ModbusAddress(
                table=s.table, address=s.address, type=s.type, word_order=s.word_order, unit=unit
            ),
        )
        for s in REGISTER_MAP
    ]


def assert_all_good(batch: list[TagSample], t: float, prefix: str = "") -> None:
    expected = {prefix + k: v for k, v in expected_values(t).items()}
    got = {s.tag: s for s in batch if s.tag in expected}
    assert set(got) == set(expected)
    for tag, value in expected.items():
        assert got[tag].quality is Quality.GOOD, (tag, got[tag].reason)
        assert got[tag].value == (pytest.approx(value) if isinstance(value, float) else value)


async def test_rtu_framing_over_tcp_reads_every_tag() -> None:
    sim = PlcSimulator(port=free_port(), update_interval_s=FROZEN, framer="rtu")
    await sim.start()
    settings = ModbusSourceSettings(
        transport="rtu-over-tcp", host=LOOPBACK, port=sim.port, timeout_s=1.0
    )
    source = ModbusSource("gw", settings, mapped_tags())
    try:
        await sim.apply(77.0)
        await source.connect()
        assert_all_good(await source.poll(), 77.0)
        assert source.counters["requests"] == len(source.blocks) == 4
    finally:
        await source.close()
        await sim.stop()


async def test_tcp_client_against_rtu_gateway_gets_no_values() -> None:
    """A transport mismatch (MBAP frames to an RTU gateway) must never yield Good values."""
    sim = PlcSimulator(port=free_port(), update_interval_s=FROZEN, framer="rtu")
    await sim.start()
    settings = ModbusSourceSettings(host=LOOPBACK, port=sim.port, timeout_s=0.2)
    source = ModbusSource("gw", settings, mapped_tags()[:2])
    try:
        await source.connect()
        try:
            batch = await source.poll()
        except Exception:
            batch = []
        assert all(s.quality is Quality.BAD for s in batch)
    finally:
        await source.close()
        await sim.stop()


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    a, b = tmp_path / "plc", tmp_path / "gateway"
    proc = await asyncio.create_subprocess_exec(
        socat,
        f"pty,raw,echo=0,link={a}",
        f"pty,raw,echo=0,link={b}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: a.exists() and b.exists(), timeout=5, what="socat ptys")
        yield str(a), str(b)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=5)


async def test_rtu_on_a_serial_line_reads_two_units(pty_pair: tuple[str, str]) -> None:
    plc_end, gateway_end = pty_pair
    sim = PlcSimulator(
        update_interval_s=FROZEN, serial_port=plc_end, more_units=(2,), silent_units=True
    )
    await sim.start()
    serial: dict[str, Any] = {"port": gateway_end, "baudrate": 115200, "parity": "N"}
    settings = ModbusSourceSettings(transport="rtu", serial=serial, timeout_s=1.0)
    source = ModbusSource("line", settings, mapped_tags(1) + mapped_tags(2))
    try:
        await sim.apply(5.0)
        await source.connect()
        batch = await source.poll()
        assert_all_good(batch, 5.0, "u1.")
        assert_all_good(batch, 5.0, "u2.")
        assert {r.unit for r in sim.requests} == {1, 2}
    finally:
        await source.close()
        await sim.stop()
