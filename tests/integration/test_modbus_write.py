"""Write-back through a Modbus source's settings against the PLC simulator (a pymodbus server)
on a free port: every type and word order written and read back, the registers checked against
an independent byte layout, coils, a refusal, a value the device changed after the write, and
a dead or silent peer (tests/faultproxy.py) followed by a call that reconnects."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest
from faultproxy import FaultProxy, Mode
from support import LOOPBACK, free_port

from bridge.config.actions import ModbusTarget
from bridge.connectors.modbus import ModbusSourceSettings
from bridge.connectors.modbus.write import ModbusWriter
from bridge.errors import (
    NotRepresentable,
    WriteError,
    WriteNotConnected,
    WriteRefused,
    WriteTimedOut,
)
from bridge.plugins import source_kinds
from bridge.simulators.plc import PlcSimulator
from bridge.simulators.plc.register_map import Signal

T = TypeVar("T")
FROZEN = 3600.0  # the simulator never refreshes its registers by itself during a test
TIMEOUT_S = 0.5
BOUND_S = 2 * TIMEOUT_S + 5  # a call connects and sends once: it must end well before this
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
SPOT = 120  # a register the "device" sets back to 7 on apply()

SIGNALS = (
    *(Signal(f"H{a}", "holding", a, "uint16", "ABCD", "", lambda t: 0.0) for a in range(100, 110)),
    Signal("Spot", "holding", SPOT, "uint16", "ABCD", "", lambda t: 7.0),
    Signal("C0", "coil", 0, "bool", "ABCD", "", lambda t: 0.0),
    Signal("C1", "coil", 1, "bool", "ABCD", "", lambda t: 0.0),
    # pymodbus's simulator wants every table to hold something.
    Signal("I0", "input", 0, "uint16", "ABCD", "", lambda t: 0.0),
    Signal("D0", "discrete", 0, "bool", "ABCD", "", lambda t: 0.0),
)

STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}
RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def wire_words(value: float, type_: str, order: str) -> list[int]:
    """The registers a device holds, built from struct and the order letters alone (not the
    connector's codec): A..H are the value's big-endian bytes, the order says where each goes."""
    data = struct.pack(STRUCT[type_], value)
    if len(data) == 2:
        return [int.from_bytes(data, "big")]
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def values_for(type_: str, rng: random.Random) -> list[float]:
    if type_ in RANGES:
        low, high = RANGES[type_]
        return [low, high, 0, rng.randint(low, high)]
    if type_ == "float32":
        raw = [1.5, -0.1, 3.4e38, rng.uniform(-1e6, 1e6)]
        return [struct.unpack(">f", struct.pack(">f", v))[0] for v in raw]
    return [1.5, -0.1, 1.7976931348623157e308, rng.uniform(-1e12, 1e12)]


@pytest.fixture
async def plc() -> AsyncIterator[PlcSimulator]:
    sim = PlcSimulator(port=free_port(), update_interval_s=FROZEN, signals=SIGNALS)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def settings(port: int, **more: object) -> ModbusSourceSettings:
    return ModbusSourceSettings.model_validate(
        {"host": LOOPBACK, "port": port, "unit": 1, "timeout_s": TIMEOUT_S, **more}
    )


def holding(address: int, type_: str = "uint16", order: str = "ABCD") -> ModbusTarget:
    return ModbusTarget.model_validate(
        {"source": "plc", "table": "holding", "address": address, "type": type_,
         "word_order": order}
    )  # fmt: skip


def coil(address: int) -> ModbusTarget:
    return ModbusTarget.model_validate({"source": "plc", "table": "coil", "address": address})


async def bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(BOUND_S):
        return await call


async def test_the_modbus_kind_makes_a_writer(plc: PlcSimulator) -> None:
    factory = source_kinds()["modbus"].writer
    assert factory is not None
    writer = factory("plc", settings(plc.port))
    try:
        await writer.write(holding(104), 4321)
        assert await writer.read(holding(104)) == 4321
    finally:
        await writer.aclose()


@pytest.mark.parametrize("type_", list(STRUCT))
async def test_every_type_and_word_order_is_written_and_read_back(
    plc: PlcSimulator, type_: str
) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    rng = random.Random(type_)
    try:
        for order in ORDERS:
            target = holding(100, type_, order)
            for value in values_for(type_, rng):
                await writer.write(target, value)
                back = await writer.read(target)
                assert back == value and type(back) is type(value), (order, value, back)
                # The registers themselves, one by one, as the device holds them.
                expected = wire_words(value, type_, order)
                held = [await writer.read(holding(100 + i)) for i in range(len(expected))]
                assert held == expected, (order, value)
    finally:
        await writer.aclose()
    functions = {r.function_code for r in plc.requests}
    assert functions == ({6, 3} if type_ in ("int16", "uint16") else {16, 3})


async def test_a_float32_that_does_not_fit_exactly_reads_back_as_float32_holds_it(
    plc: PlcSimulator,
) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    try:
        await writer.write(holding(102, "float32", "CDAB"), 0.1)
        back = await writer.read(holding(102, "float32", "CDAB"))
        assert back == struct.unpack(">f", struct.pack(">f", 0.1))[0] != 0.1
    finally:
        await writer.aclose()


async def test_coils_on_and_off(plc: PlcSimulator) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    try:
        for value in (True, False, True):
            await writer.write(coil(1), value)
            assert await writer.read(coil(1)) is value
            assert await writer.read(coil(0)) is False  # the neighbour is untouched
    finally:
        await writer.aclose()
    assert {r.function_code for r in plc.requests} == {5, 1}


async def test_an_address_outside_the_map_is_refused_with_the_exception_named(
    plc: PlcSimulator,
) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    try:
        for target, value in ((holding(500), 1), (holding(500, "float32"), 1.0), (coil(40), True)):
            with pytest.raises(WriteRefused) as refused:
                await writer.write(target, value)
            assert refused.value.status == "IllegalDataAddress"
            assert "modbus exception 2" in str(refused.value)
            assert refused.value.maybe_written is False
            with pytest.raises(WriteRefused) as refused:
                await writer.read(target)
            assert refused.value.status == "IllegalDataAddress"
        # A refusal says nothing against the connection: it is kept.
        await writer.write(holding(101), 5)
        assert await writer.read(holding(101)) == 5
        assert writer.connects == 1
    finally:
        await writer.aclose()


async def test_a_value_the_device_changed_after_the_write_is_read_back_as_it_is(
    plc: PlcSimulator,
) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    target = holding(SPOT)
    try:
        await writer.write(target, 1234)
        assert await writer.read(target) == 1234
        await plc.apply(0.0)  # the program puts its own value back
        assert await writer.read(target) == 7
    finally:
        await writer.aclose()


async def test_values_the_type_cannot_hold_are_refused_before_sending(plc: PlcSimulator) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    try:
        cases = [
            (holding(100, "int16"), 40000),
            (holding(100, "uint16"), -1),
            (holding(100, "int32"), 1.5),
            (holding(100, "float32"), 1e39),
            (holding(100, "float64"), float("nan")),
            (holding(100, "uint16"), True),
            (coil(0), 1),
        ]
        for target, value in cases:
            with pytest.raises(NotRepresentable):
                await writer.write(target, value)
    finally:
        await writer.aclose()
    assert plc.requests == []


async def test_a_silent_peer_times_out_within_the_bound_and_the_next_call_reconnects(
    plc: PlcSimulator,
) -> None:
    async with FaultProxy(LOOPBACK, plc.port) as proxy:
        writer = ModbusWriter("plc", settings(proxy.port))
        try:
            await bounded(writer.write(holding(103), 1))
            # Requests reach the device, replies are lost: the write took, nobody can tell.
            proxy.set_mode(Mode.DEAF)
            with pytest.raises(WriteTimedOut) as timed_out:
                await bounded(writer.write(holding(103), 2))
            assert timed_out.value.maybe_written is True
            assert "may have taken effect" in str(timed_out.value)
            with pytest.raises(WriteTimedOut) as timed_out:
                await bounded(writer.read(holding(103)))
            assert timed_out.value.maybe_written is False
            proxy.set_mode(Mode.BLACKHOLE)
            with pytest.raises(WriteTimedOut):
                await bounded(writer.write(holding(103), 3))
            proxy.set_mode(Mode.PASS)
            before = writer.connects
            assert await bounded(writer.read(holding(103))) == 2  # the lost-reply write took
            assert writer.connects == before + 1  # a new connection, one attempt
        finally:
            await writer.aclose()


async def test_a_dead_peer_is_not_connected_and_a_later_call_connects(
    plc: PlcSimulator,
) -> None:
    port = plc.port
    writer = ModbusWriter("plc", settings(port))
    try:
        await writer.write(holding(105), 11)
        await plc.stop()
        with pytest.raises((WriteNotConnected, WriteTimedOut)):
            await bounded(writer.write(holding(105), 12))
        with pytest.raises(WriteNotConnected) as refused:
            await bounded(writer.write(holding(105), 13))
        assert refused.value.maybe_written is False
        assert f"{LOOPBACK}:{port}" in str(refused.value)
        await plc.start()  # same port, registers as the map sets them
        await bounded(writer.write(holding(105), 14))
        assert await writer.read(holding(105)) == 14
    finally:
        await writer.aclose()


@pytest.mark.parametrize("transport", ["rtu-over-tcp", "rtu"])
def test_rtu_sources_are_not_written(transport: str) -> None:
    more: dict[str, object] = {"transport": transport}
    if transport == "rtu":
        more = {**more, "serial": {"port": "/dev/null"}, "host": None}
    with pytest.raises(WriteError, match="Modbus TCP only"):
        ModbusWriter("line", settings(502, **more))


async def test_overlapping_calls_run_one_at_a_time(plc: PlcSimulator) -> None:
    writer = ModbusWriter("plc", settings(plc.port))
    try:
        targets = [holding(a, "uint16") for a in range(100, 110)]
        await asyncio.gather(*(writer.write(t, 100 + i) for i, t in enumerate(targets)))
        back = await asyncio.gather(*(writer.read(t) for t in targets))
        assert back == [100 + i for i in range(10)]
    finally:
        await writer.aclose()
