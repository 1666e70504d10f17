"""Late RTU replies: RTU frames carry no transaction id, so a reply that arrives after its
request timed out must never be taken as the answer to the next request.

Real pymodbus server with the RTU framer (the PLC simulator) over TCP, behind the fault proxy
adding latency past the timeout. The two blocks read here have the same unit, function code and
register count but different values, so no check of the reply itself could catch the mix-up:
only draining the line after a timeout does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy, Mode
from pymodbus.exceptions import ModbusIOException
from support import LOOPBACK, free_port

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.connectors.modbus.link import Link
from bridge.connectors.modbus.plan import ReadBlock, plan_reads
from bridge.connectors.modbus.reply import block_values
from bridge.errors import ConnectorError
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, expected_values
from bridge.types import Quality, SourceTag

SIM_TIME = 77.0
TIMEOUT_S = 0.3
LATE_S = 0.25  # per direction: the reply comes 2 * 0.25 - 0.3 = 0.2 s after the timeout
# Two float32 blocks of unit 1, FC3, 2 registers each: identical in shape, different in value.
NAMES = ("HeaderPressure", "TankLevel")


def _tags() -> list[SourceTag]:
    by_name = {s.name: s for s in REGISTER_MAP}
    return [
        SourceTag(
            n,
            ModbusAddress(
                table=by_name[n].table,
                address=by_name[n].address,
                type=by_name[n].type,
                word_order=by_name[n].word_order,
            ),
        )
        for n in NAMES
    ]


def _settings(port: int, **kw: object) -> ModbusSourceSettings:
    return ModbusSourceSettings.model_validate(
        {
            "transport": "rtu-over-tcp",
            "host": LOOPBACK,
            "port": port,
            "timeout_s": TIMEOUT_S,
            "max_registers_per_read": 2,  # one block per tag
            **kw,
        }
    )


def _blocks() -> list[ReadBlock]:
    pairs = [(t.tag, t.address) for t in _tags()]
    blocks = plan_reads(pairs, max_gap=0, max_registers_per_read=2, default_unit=1)  # type: ignore[arg-type]
    assert [b.count for b in blocks] == [2, 2] and len({b.table for b in blocks}) == 1
    return list(blocks)


@pytest.fixture
async def line() -> AsyncIterator[FaultProxy]:
    """RTU-over-TCP PLC with frozen values behind a fault proxy (initially passing)."""
    sim = PlcSimulator(port=free_port(), update_interval_s=3600.0, framer="rtu")
    await sim.start()
    await sim.apply(SIM_TIME)
    proxy = FaultProxy(LOOPBACK, sim.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
        await sim.stop()


async def test_late_reply_is_not_taken_as_the_next_answer(line: FaultProxy) -> None:
    first, second = _blocks()
    expected = expected_values(SIM_TIME)
    assert expected[NAMES[0]] != expected[NAMES[1]]
    link = Link("late", _settings(line.port))
    assert await link.connect(2.0)
    try:
        line.set_mode(Mode.LATENCY, latency_s=LATE_S)
        with pytest.raises(ModbusIOException):
            await link.read(first)  # times out; its reply is still on the way
        line.set_mode(Mode.PASS)
        reply = await asyncio.wait_for(link.read(second), link.deadline_s + 1)
        # Without the drain this is the first block's late reply, accepted as the second's.
        ((tag, value),) = block_values(second, reply)
        assert tag == NAMES[1]
        assert value == pytest.approx(expected[NAMES[1]])
        assert link.drains == 1 and link.resets == 0
        # The line is clean again: no drain before the next request.
        ((_, value),) = block_values(first, await link.read(first))
        assert value == pytest.approx(expected[NAMES[0]])
        assert link.drains == 1
    finally:
        link.close()


async def test_latency_soak_never_marks_a_wrong_value_good(line: FaultProxy) -> None:
    """Latency switched on and off at random while the source polls (reconnecting like the
    runtime when it gives up on the link): every Good value is the right one."""
    expected = expected_values(SIM_TIME)
    source = ModbusSource(
        "late", _settings(line.port, poll_interval_ms=20, breaker_failures=1000), _tags()
    )
    rng = random.Random(5)
    stop = time.monotonic() + 8.0
    good = wrong = bad = reconnects = 0

    async def toggle() -> None:
        while time.monotonic() < stop:
            line.set_mode(Mode.LATENCY if rng.random() < 0.5 else Mode.PASS, latency_s=LATE_S)
            await asyncio.sleep(rng.uniform(0.05, 0.6))
        line.set_mode(Mode.PASS)

    toggler = asyncio.create_task(toggle())
    try:
        async with asyncio.timeout(30):
            while time.monotonic() < stop:
                try:
                    await source.connect()
                    async for batch in source.samples():
                        for sample in batch:
                            if sample.quality is not Quality.GOOD:
                                bad += 1
                            elif sample.value == pytest.approx(expected[sample.tag]):
                                good += 1
                            else:
                                wrong += 1
                        if time.monotonic() >= stop:
                            break
                except ConnectorError:
                    reconnects += 1
    finally:
        toggler.cancel()
        await asyncio.gather(toggler, return_exceptions=True)
        await source.close()
    drains = source.counters["drains"]
    print(f"good={good} bad={bad} wrong={wrong} drains={drains} reconnects={reconnects}")
    assert wrong == 0
    assert good > 0 and bad > 0  # both regimes happened
    assert drains > 0  # late replies were on the line
