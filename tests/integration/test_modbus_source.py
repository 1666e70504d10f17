"""ModbusSource against a real pymodbus server (the PLC simulator) and raw misbehaving servers."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.errors import ConnectorError, NotConnected
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, RequestRecord, expected_values
from bridge.types import Quality, Source, SourceTag, TagSample

FROZEN = 3600.0  # update interval long enough that values only change through apply()


@pytest.fixture
async def plc() -> AsyncIterator[PlcSimulator]:
    sim = PlcSimulator(port=free_port(), update_interval_s=FROZEN)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def mapped_tags() -> list[SourceTag]:
    return [
        SourceTag(
            s.name,
            ModbusAddress(table=s.table, address=s.address, type=s.type, word_order=s.word_order),
        )
        for s in REGISTER_MAP
    ]


def make_source(port: int, tags: Sequence[SourceTag], **settings: Any) -> ModbusSource:
    values: dict[str, Any] = {"host": LOOPBACK, "port": port, "timeout_s": 1.0}
    values.update(settings)
    return ModbusSource("plc", ModbusSourceSettings.model_validate(values), tags)


async def connected(source: ModbusSource) -> ModbusSource:
    await source.connect()
    return source


def by_tag(batch: Sequence[TagSample]) -> dict[str, TagSample]:
    return {s.tag: s for s in batch}


def assert_matches(batch: Sequence[TagSample], t: float) -> None:
    expected = expected_values(t)
    samples = by_tag(batch)
    assert set(samples) == set(expected)
    for name, value in expected.items():
        sample = samples[name]
        assert sample.quality is Quality.GOOD, (name, sample.reason)
        assert type(sample.value) is type(value), name
        if isinstance(value, float):
            assert sample.value == pytest.approx(value, rel=1e-6), name
        else:
            assert sample.value == value, name


@pytest.mark.parametrize("t", [12.5, 41.0, 3600.0 * 24 + 7.0])
async def test_every_mapped_tag_decodes_to_the_simulator_value(plc: PlcSimulator, t: float) -> None:
    await plc.apply(t)
    source = await connected(make_source(plc.port, mapped_tags()))
    try:
        before = time.time()
        batch = await source.poll()
        after = time.time()
    finally:
        await source.close()
    assert_matches(batch, t)
    for sample in batch:
        assert before <= sample.received_time <= after
        assert sample.source_time is None and sample.server_time is None


async def test_signs_and_wide_values_are_exercised(plc: PlcSimulator) -> None:
    # Guards the test above against a map that only ever yields easy values.
    t = 12.5
    values = expected_values(t)
    assert isinstance(values["GridPower"], int) and values["GridPower"] < -65536
    assert isinstance(values["Ambient"], int) and values["Ambient"] < 0
    assert isinstance(values["PumpStarts"], int) and values["PumpStarts"] > 65535
    assert expected_values(41.0)["GridPower"] > 65535


@pytest.mark.serial
async def test_samples_polls_on_the_interval_and_follows_changes(plc: PlcSimulator) -> None:
    await plc.apply(10.0)
    source = await connected(make_source(plc.port, mapped_tags(), poll_interval_ms=100))
    stamps: list[float] = []
    try:
        stream = source.samples()
        assert isinstance(stream, AsyncGenerator)
        first = await anext(stream)
        stamps.append(time.monotonic())
        assert_matches(first, 10.0)
        await plc.apply(20.0)
        for _ in range(3):
            batch = await anext(stream)
            stamps.append(time.monotonic())
        assert_matches(batch, 20.0)
        await stream.aclose()
    finally:
        await source.close()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(0.07 <= g <= 1.0 for g in gaps), gaps


async def test_unmapped_address_is_bad_while_other_blocks_stay_good(plc: PlcSimulator) -> None:
    await plc.apply(5.0)
    tags = [
        *mapped_tags(),
        SourceTag("Missing", ModbusAddress(table="holding", address=100)),
        SourceTag("MissingInput", ModbusAddress(table="input", address=200, type="float32")),
        SourceTag("MissingCoil", ModbusAddress(table="coil", address=40)),
    ]
    source = await connected(make_source(plc.port, tags))
    try:
        samples = by_tag(await source.poll())
        again = by_tag(await source.poll())  # a Bad block does not stop later cycles
    finally:
        await source.close()
    for name in ("Missing", "MissingInput", "MissingCoil"):
        for batch in (samples, again):
            assert batch[name].quality is Quality.BAD
            assert batch[name].value is None
            assert batch[name].reason == "modbus exception 2 (illegal data address)"
    assert_matches([s for s in samples.values() if not s.tag.startswith("Missing")], 5.0)


async def test_a_bad_address_inside_a_coalesced_block_makes_the_block_bad(
    plc: PlcSimulator,
) -> None:
    # Holding 12 is just past the map: with max_gap it joins the 0..11 block, which the
    # device then refuses as a whole. Documented behaviour; the fix is a smaller max_gap.
    tags = [*mapped_tags(), SourceTag("Past", ModbusAddress(table="holding", address=12))]
    source = await connected(make_source(plc.port, tags, max_gap=10))
    try:
        samples = by_tag(await source.poll())
    finally:
        await source.close()
    holding = {s.name for s in REGISTER_MAP if s.table == "holding"} | {"Past"}
    for name, sample in samples.items():
        expected = Quality.BAD if name in holding else Quality.GOOD
        assert sample.quality is expected, name


async def test_contiguous_tags_are_read_in_one_request_per_table(plc: PlcSimulator) -> None:
    source = await connected(make_source(plc.port, list(reversed(mapped_tags())), max_gap=0))
    try:
        plc.clear_requests()
        await source.poll()
        requests = plc.requests
    finally:
        await source.close()
    assert requests == [
        RequestRecord(3, 0, 12, 1),
        RequestRecord(4, 0, 5, 1),
        RequestRecord(1, 0, 3, 1),
        RequestRecord(2, 0, 2, 1),
    ]
    assert source.counters["requests"] == 4


async def test_request_size_limit_splits_reads(plc: PlcSimulator) -> None:
    await plc.apply(30.0)
    source = await connected(make_source(plc.port, mapped_tags(), max_registers_per_read=4))
    try:
        plc.clear_requests()
        batch = await source.poll()
        requests = plc.requests
    finally:
        await source.close()
    assert [(r.function_code, r.address, r.count) for r in requests if r.function_code == 3] == [
        (3, 0, 4),
        (3, 4, 4),
        (3, 8, 4),
    ]
    assert_matches(batch, 30.0)


async def test_wrong_unit_gives_bad_tags(plc: PlcSimulator) -> None:
    source = await connected(make_source(plc.port, mapped_tags()[:2], unit=9))
    try:
        batch = await source.poll()
    finally:
        await source.close()
    assert all(s.quality is Quality.BAD and s.reason.startswith("modbus exception") for s in batch)


async def test_stopped_simulator_makes_samples_raise_then_reconnect_works(
    plc: PlcSimulator,
) -> None:
    source = await connected(make_source(plc.port, mapped_tags(), poll_interval_ms=20))
    batches: list[Sequence[TagSample]] = []

    async def consume() -> None:
        async for batch in source.samples():
            batches.append(batch)

    task = asyncio.create_task(consume())
    try:
        await wait_until(lambda: len(batches) >= 2, timeout=5, what="two batches")
        await plc.stop()
        started = time.monotonic()
        with pytest.raises(ConnectorError):
            await asyncio.wait_for(task, timeout=5)
        assert time.monotonic() - started < 5
        # The runtime would now back off and reconnect; the device comes back on its port.
        await plc.start()
        await source.connect()
        assert_matches(await source.poll(), plc.time)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()
        await source.close()  # idempotent


async def test_connect_to_closed_port_raises_connector_error() -> None:
    source = make_source(free_port(), mapped_tags(), timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ConnectorError):
        await source.connect()
    assert time.monotonic() - started < 3
    await source.close()


async def test_poll_before_connect_raises_not_connected() -> None:
    source = make_source(free_port(), mapped_tags())
    assert isinstance(source, Source)
    with pytest.raises(NotConnected):
        await source.poll()
    with pytest.raises(NotConnected):
        await anext(source.samples())


# --- raw servers that misbehave on purpose -------------------------------------------------

Responder = Callable[[int, int, int, int], bytes | None]  # (unit, fc, address, count) -> PDU


async def _serve(responder: Responder, reader: asyncio.StreamReader, writer: Any) -> None:
    try:
        while True:
            header = await reader.readexactly(7)
            tid, _pid, length, unit = struct.unpack(">HHHB", header)
            pdu = await reader.readexactly(length - 1)
            fc, address, count = struct.unpack(">BHH", pdu[:5])
            reply = responder(unit, fc, address, count)
            if reply is not None:
                writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Responder], Any]]:
    servers: list[asyncio.Server] = []

    async def start(responder: Responder) -> int:
        server = await asyncio.start_server(lambda r, w: _serve(responder, r, w), LOOPBACK, 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            await asyncio.wait_for(server.wait_closed(), timeout=5)


def registers_pdu(fc: int, words: Sequence[int]) -> bytes:
    return struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words)


async def test_short_and_mismatched_replies_are_never_values(raw_server: Any) -> None:
    def respond(unit: int, fc: int, address: int, count: int) -> bytes:
        if address == 0:
            return registers_pdu(3, [7] * (count - 1))  # one register short
        if address == 50:
            return registers_pdu(4, [7] * count)  # FC4 answer to an FC3 request
        return registers_pdu(3, [1234 + i for i in range(count)])

    port = await raw_server(respond)
    tags = [
        SourceTag("a", ModbusAddress(table="holding", address=0)),
        SourceTag("b", ModbusAddress(table="holding", address=1)),
        SourceTag("wrong_fc", ModbusAddress(table="holding", address=50)),
        SourceTag("good", ModbusAddress(table="holding", address=100)),
    ]
    source = await connected(make_source(port, tags, max_gap=0))
    try:
        for _ in range(4):  # bad replies are replies: they never add up to a dead link
            samples = by_tag(await source.poll())
            assert samples["a"].quality is Quality.BAD and samples["a"].value is None
            assert samples["b"].quality is Quality.BAD
            assert "1 registers for 2 requested" in samples["a"].reason
            assert samples["wrong_fc"].quality is Quality.BAD
            assert "function code 4 does not match request 3" in samples["wrong_fc"].reason
            assert samples["good"].quality is Quality.GOOD and samples["good"].value == 1234
    finally:
        await source.close()


async def test_silent_server_times_out_then_raises(raw_server: Any) -> None:
    port = await raw_server(lambda unit, fc, address, count: None)  # accepts, never answers
    tags = [SourceTag("a", ModbusAddress(table="holding", address=0))]
    source = await connected(make_source(port, tags, timeout_s=0.2, poll_interval_ms=10))
    started = time.monotonic()
    batches: list[Sequence[TagSample]] = []
    try:
        with pytest.raises(ConnectorError, match="3 requests in a row"):
            async with asyncio.timeout(5):
                async for batch in source.samples():
                    batches.append(batch)
    finally:
        await source.close()
    assert len(batches) == 2
    for received in batches:
        (sample,) = received
        assert sample.quality is Quality.BAD
        assert sample.reason.startswith("no valid reply within 0.2s")
    assert time.monotonic() - started < 3


async def test_one_good_reply_resets_the_timeout_count(raw_server: Any) -> None:
    answered = {"n": 0}

    def respond(unit: int, fc: int, address: int, count: int) -> bytes | None:
        answered["n"] += 1
        # Two silent requests, one answer, two silent, one answer...
        return registers_pdu(3, [42] * count) if answered["n"] % 3 == 0 else None

    port = await raw_server(respond)
    tags = [SourceTag("a", ModbusAddress(table="holding", address=0))]
    source = await connected(make_source(port, tags, timeout_s=0.2))
    try:
        qualities = [(await source.poll())[0].quality for _ in range(6)]
    finally:
        await source.close()
    assert qualities == [Quality.BAD, Quality.BAD, Quality.GOOD] * 2
