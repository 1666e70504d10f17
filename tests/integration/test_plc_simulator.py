"""The PLC simulator, checked on the wire with hand-built Modbus TCP frames (no client library)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
from support import LOOPBACK, free_port, wait_until

from bridge.simulators.plc import (
    REGISTER_MAP,
    PlcSimulator,
    RequestRecord,
    engineering_values,
    expected_values,
    serve_forever,
)


class RawClient:
    """Minimal Modbus TCP client: one request at a time, frames built with struct."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.tid = reader, writer, 0

    @classmethod
    async def open(cls, port: int) -> RawClient:
        # A few tries: one loopback connect timed out after 5 s on a machine running two test
        # suites and a soak benchmark at once. The simulator's answers are what is tested.
        for attempt in range(3):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
            except TimeoutError:
                if attempt == 2:
                    raise
                continue
            return cls(reader, writer)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def request(self, fc: int, address: int, count: int, unit: int = 1) -> bytes:
        """The reply PDU (function code first)."""
        self.tid += 1
        self.writer.write(struct.pack(">HHHBBHH", self.tid, 0, 6, unit, fc, address, count))
        await self.writer.drain()
        header = await asyncio.wait_for(self.reader.readexactly(7), 5)
        tid, pid, length, reply_unit = struct.unpack(">HHHB", header)
        assert (tid, pid, reply_unit) == (self.tid, 0, unit)
        return await asyncio.wait_for(self.reader.readexactly(length - 1), 5)

    async def read(self, fc: int, address: int, count: int) -> bytes:
        """The data bytes of a successful read."""
        pdu = await self.request(fc, address, count)
        assert pdu[0] == fc, f"exception reply {pdu.hex()}"
        assert pdu[1] == len(pdu) - 2
        return pdu[2:]


def decode_independently(data: bytes, type_: str, order: str) -> int | float | bool:
    """Decode big-endian wire bytes without the connector's codec."""
    if type_ in ("int16", "uint16"):
        return struct.unpack(">h" if type_ == "int16" else ">H", data)[0]  # type: ignore[no-any-return]
    fmt = {"int32": "i", "uint32": "I", "float32": "f"}[type_]
    if order == "ABCD":
        return struct.unpack(">" + fmt, data)[0]  # type: ignore[no-any-return]
    if order == "DCBA":
        return struct.unpack("<" + fmt, data)[0]  # type: ignore[no-any-return]
    if order == "CDAB":
        return struct.unpack(">" + fmt, data[2:4] + data[0:2])[0]  # type: ignore[no-any-return]
    assert order == "BADC"
    return struct.unpack(">" + fmt, bytes([data[1], data[0], data[3], data[2]]))[0]  # type: ignore[no-any-return]


@pytest.fixture
async def sim() -> AsyncIterator[PlcSimulator]:
    simulator = PlcSimulator(port=free_port(), update_interval_s=3600)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def client(sim: PlcSimulator) -> AsyncIterator[RawClient]:
    raw = await RawClient.open(sim.port)
    try:
        yield raw
    finally:
        await raw.close()


@pytest.mark.parametrize("t", [0.0, 12.5, 41.0, 100_000.0])
async def test_wire_values_match_the_register_map(
    sim: PlcSimulator, client: RawClient, t: float
) -> None:
    await sim.apply(t)
    assert sim.time == t
    holding = await client.read(3, 0, 12)
    inputs = await client.read(4, 0, 5)
    coils = (await client.read(1, 0, 3))[0]
    discrete = (await client.read(2, 0, 2))[0]
    expected = expected_values(t)
    for s in REGISTER_MAP:
        if s.table in ("coil", "discrete"):
            byte = coils if s.table == "coil" else discrete
            value: int | float | bool = bool(byte >> s.address & 1)
        else:
            data = holding if s.table == "holding" else inputs
            size = 4 if s.type in ("int32", "uint32", "float32") else 2
            chunk = data[2 * s.address : 2 * s.address + size]
            value = decode_independently(chunk, s.type, s.word_order)
        assert value == expected[s.name], s.name


def test_expected_values_are_scaled_engineering_values() -> None:
    for t in (0.0, 7.0, 33.3):
        raw, eng = expected_values(t), engineering_values(t)
        assert set(raw) == set(eng) == {s.name for s in REGISTER_MAP}
        for s in REGISTER_MAP:
            if s.type == "float32":
                assert isinstance(raw[s.name], float)
                assert raw[s.name] == pytest.approx(eng[s.name], rel=1e-6)
            elif s.type == "bool":
                assert raw[s.name] is bool(eng[s.name])
            else:
                assert isinstance(raw[s.name], int)
                assert raw[s.name] / s.scale == pytest.approx(eng[s.name], abs=0.5 / s.scale)


def test_register_map_is_contiguous_and_has_no_overlaps() -> None:
    for table in ("holding", "input", "coil", "discrete"):
        used: list[int] = []
        for s in REGISTER_MAP:
            if s.table == table:
                width = 2 if s.type in ("int32", "uint32", "float32") else 1
                used.extend(range(s.address, s.address + width))
        assert sorted(used) == list(range(len(used))), table
    assert len({s.name for s in REGISTER_MAP}) == len(REGISTER_MAP)


@pytest.mark.parametrize(
    ("fc", "address", "count"),
    [(3, 12, 1), (3, 100, 1), (3, 0, 13), (3, 11, 2), (4, 5, 1), (1, 16, 1), (2, 16, 1)],
)
async def test_addresses_beyond_the_map_give_illegal_address(
    client: RawClient, fc: int, address: int, count: int
) -> None:
    assert await client.request(fc, address, count) == bytes([fc | 0x80, 2])


async def test_values_change_over_time() -> None:
    async with PlcSimulator(port=free_port(), update_interval_s=0.05) as live:
        raw = await RawClient.open(live.port)
        try:
            first = await raw.read(3, 0, 2)
            first_time = live.time

            async def changed() -> bool:
                return await raw.read(3, 0, 2) != first

            await wait_until(changed, timeout=5, what="HeaderPressure to change")
            assert live.time > first_time
        finally:
            await raw.close()


async def test_stop_is_idempotent_and_restart_uses_the_same_port(sim: PlcSimulator) -> None:
    port = sim.port
    await sim.stop()
    await sim.stop()
    assert not sim.running
    with pytest.raises(OSError):
        await RawClient.open(port)
    await sim.start()
    assert sim.port == port and sim.running
    raw = await RawClient.open(port)
    try:
        assert len(await raw.read(3, 0, 12)) == 24
    finally:
        await raw.close()


async def test_stop_drops_connected_clients(sim: PlcSimulator, client: RawClient) -> None:
    await client.read(3, 0, 1)
    await sim.stop()
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await client.request(3, 0, 1)


async def test_port_zero_reports_the_real_port() -> None:
    async with PlcSimulator(port=0, update_interval_s=3600) as sim:
        assert sim.port > 0
        raw = await RawClient.open(sim.port)
        await raw.close()


async def test_requests_are_recorded(sim: PlcSimulator, client: RawClient) -> None:
    sim.clear_requests()
    await client.read(3, 2, 4)
    await client.request(4, 300, 1)
    assert sim.requests == [RequestRecord(3, 2, 4, 1), RequestRecord(4, 300, 1, 1)]


async def test_apply_needs_a_running_simulator() -> None:
    with pytest.raises(RuntimeError):
        await PlcSimulator(port=free_port()).apply(1.0)


async def test_start_on_a_busy_port_raises() -> None:
    async with PlcSimulator(port=0, update_interval_s=3600) as first:
        with pytest.raises(OSError):
            await PlcSimulator(port=first.port).start()


async def test_serve_forever_runs_until_cancelled() -> None:
    port = free_port()
    task = asyncio.create_task(serve_forever(LOOPBACK, port, update_interval_s=3600))
    try:

        async def listening() -> bool:
            try:
                raw = await RawClient.open(port)
            except OSError:
                return False
            await raw.close()
            return True

        await wait_until(listening, timeout=5, what="simulator to listen")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    with pytest.raises(OSError):
        await RawClient.open(port)
